"""The training batch sampler: the whole prepared split lives on the training device.

Images stay uint8 (N, L, L, 3) on the device (L = 76 for Stage I, 304 for Stage II) next to the
float32 caption embeddings (N, 10, D). Once per epoch a CPU ``torch.Generator`` draws the whole
epoch plan at once, as the official loader would over the epoch (stackgan-pytorch-spec.md 2.2-2.5):
a permutation
(the incomplete last batch dropped), a random-crop offset pair in 0..L-S, a horizontal-flip flag
(p = 0.5) and one caption index in 0..9 per sample. A batch is then one advanced-indexing gather
on the device (the flip folded into the column indices), a cast and ``x / 127.5 - 1``: no
Python loop over samples, no DataLoader worker, no host-device synchronisation.

For families that read a caption's words (AttnGAN), the sampler also holds every caption's word
ids (N, 10, L) and lengths (N, 10): a batch then carries the chosen captions' ids, cut down to
``words_num`` words the official way (a random subset of the positions of a longer caption, in
their order; attngan-spec.md 9), their padding mask and the images' class ids, and its rows are
sorted by caption length, longest first (stable), as the official ``prepare_data`` sorts them.
The word choice is drawn with the rest of the plan, after it, so plans without words are as
before.

With ``views=K`` (DAMSM pre-training over cached trunk outputs, training/trunk_cache.py) a
sample draws one of its image's K fixed views instead of a crop and a flip: the batch carries
the views' rows (``image * K + view``) in place of images, and no image is held.

Because the plan depends only on the generator's state at the start of the epoch, the sampler's
state is that generator state plus the position (epoch, step); resuming mid-epoch redraws the
same plan and continues at the same batch. Under DDP every rank draws the same plan and takes
its own shard of each global batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from stackgan_cli.data.batch import Batch

CAPTIONS_PER_IMAGE = 10


class DeviceBatchSampler:
    """Random-crop, flip and caption sampling of a device-resident split.

    ``images``: uint8 (N, L, L, 3) (None with ``views``); ``embeddings``: float32 (N, 10, D);
    ``image_size``: the crop size S (64 or 256). Each call of :meth:`next_batch` returns a
    :class:`Batch` of float32 images (batch_size, 3, S, S) in [-1, 1] (memory layout
    channels_last when asked for, else contiguous NCHW) and float32 embeddings (batch_size, D);
    with ``views`` > 0, the rows of the chosen views in place of the images.
    """

    def __init__(
        self,
        images: np.ndarray | Tensor,
        embeddings: np.ndarray | Tensor,
        *,
        image_size: int,
        batch_size: int,
        device: torch.device | str,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
        words: tuple[np.ndarray | Tensor, np.ndarray | Tensor] | None = None,
        class_ids: np.ndarray | Tensor | None = None,
        words_num: int = 18,
        views: int = 0,
    ) -> None:
        self.views = int(views)
        if images is not None and (
            images.ndim != 4 or images.shape[3] != 3 or images.shape[1] != images.shape[2]
        ):
            raise ValueError(f"images must be (N, L, L, 3), got {tuple(images.shape)}")
        if images is None and self.views <= 0:
            raise ValueError("images are needed unless the batches carry views")
        num_images = embeddings.shape[0] if images is None else images.shape[0]
        if embeddings.ndim != 3 or embeddings.shape[0] != num_images:
            raise ValueError(
                f"embeddings must be (N, captions, D) with N = {num_images}, "
                f"got {tuple(embeddings.shape)}"
            )
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside a world of {world_size}")
        self.device = torch.device(device)
        self.num_images = int(num_images)
        self.load_size = int(images.shape[1]) if images is not None else int(image_size)
        self.image_size = int(image_size)
        if self.image_size > self.load_size:
            raise ValueError(f"cannot crop {image_size}x{image_size} from {self.load_size}")
        self.num_captions = int(embeddings.shape[1])
        self.batch_size = int(batch_size)
        self.rank = rank
        self.world_size = world_size
        self.channels_last = channels_last
        self.global_batch = self.batch_size * world_size
        self.steps_per_epoch = self.num_images // self.global_batch
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"the split has {self.num_images} images, fewer than one batch of "
                f"{self.global_batch} ({self.batch_size} x {world_size} processes)"
            )
        self.images = None if images is None else _to_device(images, torch.uint8, self.device)
        self.embeddings = _to_device(embeddings, torch.float32, self.device)
        self.words_num = int(words_num)
        self.tokens = self.token_lengths = self.class_ids = None
        if words is not None:
            tokens, lengths = words
            if tokens.shape[:2] != embeddings.shape[:2] or lengths.shape != tokens.shape[:2]:
                raise ValueError(
                    f"word ids {tuple(tokens.shape)} and lengths {tuple(lengths.shape)} must "
                    f"be (N, captions, L) and (N, captions) with N, captions = "
                    f"{tuple(embeddings.shape[:2])}"
                )
            self.tokens = _to_device(tokens, torch.int64, self.device)
            self.token_lengths = _to_device(lengths, torch.int64, self.device)
            self._positions = torch.arange(self.tokens.shape[2], device=self.device)
        if class_ids is not None:
            self.class_ids = _to_device(class_ids, torch.int64, self.device)
        self._offsets = torch.arange(self.image_size, device=self.device)
        self._generator = torch.Generator(device="cpu")
        self._generator.manual_seed(seed)
        self.epoch = 0
        self.step = 0
        self._epoch_start_state: Tensor | None = None
        self._plan: dict[str, Tensor] | None = None

    def _draw_plan(self) -> None:
        """Draw the current epoch's plan from the generator and move it to the device."""
        self._epoch_start_state = self._generator.get_state()
        n, g = self.num_images, self._generator
        used = self.steps_per_epoch * self.global_batch
        order = torch.randperm(n, generator=g)[:used]
        if self.views:
            looks = {"view": torch.randint(0, self.views, (used,), generator=g)}
        else:
            crops = torch.randint(0, self.load_size - self.image_size + 1, (used, 2), generator=g)
            flips = torch.randint(0, 2, (used,), generator=g, dtype=torch.bool)
            looks = {"row": crops[:, 0], "col": crops[:, 1], "flip": flips}
        captions = torch.randint(0, self.num_captions, (used,), generator=g)
        extra = {}
        if self.tokens is not None:
            # A random key per word position; a long caption keeps its words_num lowest keys.
            extra["word_keys"] = torch.rand(used, self.tokens.shape[2], generator=g)
        # (steps, world, batch): rank r takes column r of every global batch.
        shape = (self.steps_per_epoch, self.world_size, self.batch_size)
        plan = {
            "index": order.view(shape),
            **{key: value.view(shape) for key, value in looks.items()},
            "caption": captions.view(shape),
            **{key: value.view(*shape, -1) for key, value in extra.items()},
        }
        pin = self.device.type == "cuda"
        self._plan = {
            key: (value[:, self.rank].pin_memory() if pin else value[:, self.rank]).to(
                self.device, non_blocking=True
            )
            for key, value in plan.items()
        }

    def next_batch(self) -> Batch:
        """The next batch of the plan (images and text); advances (epoch, step), starting a new
        epoch as needed."""
        if self._plan is None:
            self._draw_plan()
        assert self._plan is not None
        plan, s = self._plan, self.step
        index = plan["index"][s]
        text = self.embeddings[index, plan["caption"][s]]
        if self.views:
            batch = Batch(images=None, text=text, view_rows=index * self.views + plan["view"][s])
        else:
            images = self._crop(index, plan["row"][s], plan["col"][s], plan["flip"][s])
            batch = Batch(images=images, text=text)
        if self.tokens is not None:
            batch = self._with_words(batch, index, plan["caption"][s], plan["word_keys"][s])
        self.step += 1
        if self.step == self.steps_per_epoch:
            self.epoch += 1
            self.step = 0
            self._plan = None
        return batch

    def _with_words(self, batch: Batch, index: Tensor, caption: Tensor, keys: Tensor) -> Batch:
        """``batch`` with its captions' word ids (at most ``words_num`` each), mask and class
        ids, rows sorted by caption length (longest first)."""
        tokens = self.tokens[index, caption]  # (B, L)
        lengths = self.token_lengths[index, caption]
        valid = self._positions[None, :] < lengths[:, None]
        kept = min(self.words_num, tokens.shape[1])
        # The kept positions: a caption's own words (keys of padding are pushed past them),
        # the lowest keys of a longer one; back in reading order.
        picked = torch.where(valid, keys, keys + 2.0).topk(kept, dim=1, largest=False).indices
        picked = picked.sort(dim=1).values
        lengths = lengths.clamp(max=kept)
        words = tokens.gather(1, picked)
        order = torch.sort(lengths, descending=True, stable=True).indices
        words, lengths = words[order], lengths[order]
        longest = int(lengths[0]) if len(lengths) else 0
        mask = self._positions[None, :longest] >= lengths[:, None]
        words = words[:, :longest].masked_fill(mask, 0)
        return Batch(
            images=batch.images[order] if batch.images is not None else None,
            text=batch.text[order],
            wrong=batch.wrong[order] if batch.wrong is not None else None,
            view_rows=batch.view_rows[order] if batch.view_rows is not None else None,
            tokens=words,
            token_mask=mask,
            class_ids=self.class_ids[index][order] if self.class_ids is not None else None,
        )

    def _crop(self, index: Tensor, row: Tensor, col: Tensor, flip: Tensor) -> Tensor:
        """Images ``index`` cropped at (``row``, ``col``), flipped where ``flip``, in [-1, 1]."""
        rows = row[:, None] + self._offsets  # (B, S)
        cols = col[:, None] + self._offsets
        # A horizontal flip reads column (S - 1 - x) of the crop instead of x.
        cols = torch.where(flip[:, None], cols.flip(1), cols)
        # (B, S, S, 3) uint8: one gather for crop and flip together.
        pixels = self.images[index[:, None, None], rows[:, :, None], cols[:, None, :]]
        # permute gives an NCHW view whose memory is channels_last.
        images = pixels.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)
        if not self.channels_last:
            images = images.contiguous()
        return images

    def state_dict(self) -> dict[str, Any]:
        """The generator state at the start of the current epoch and the position in it."""
        state = self._epoch_start_state if self._plan is not None else None
        if state is None:
            state = self._generator.get_state()
        return {
            "generator_state": state.clone(),
            "epoch": self.epoch,
            "step": self.step,
            "global_batch": self.global_batch,
            "num_images": self.num_images,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue exactly where :meth:`state_dict` was taken.

        With a different global batch (another number of processes) the position is mapped
        to the same number of samples into the same epoch plan, rounded down.
        """
        if int(state["num_images"]) != self.num_images:
            raise ValueError(
                f"the sampler state is for {state['num_images']} images, this split has "
                f"{self.num_images}"
            )
        self._generator.set_state(state["generator_state"].clone())
        self.epoch = int(state["epoch"])
        step = int(state["step"])
        if int(state["global_batch"]) != self.global_batch:
            step = step * int(state["global_batch"]) // self.global_batch
        self._plan = None
        self._epoch_start_state = None
        if step >= self.steps_per_epoch:
            # The mapped position is past this epoch's last full batch: start the next epoch
            # with the generator state that follows this epoch's plan.
            self._draw_plan()
            self._plan = None
            self.epoch += 1
            step = 0
        elif step > 0:
            self._draw_plan()
        self.step = step


def _to_device(array: np.ndarray | Tensor, dtype: torch.dtype, device: torch.device) -> Tensor:
    if isinstance(array, Tensor):
        return array.to(device=device, dtype=dtype).contiguous()
    # One read of the (memory-mapped, read-only) array into a private host copy: the training
    # copy itself on the CPU, the staging buffer for the device otherwise.
    host = torch.from_numpy(np.array(array, order="C", copy=True))
    return host.to(device=device, dtype=dtype)
