"""A batch sampler that also draws each sample's "wrong" image (StackGAN-v2).

The official StackGAN-v2 loader pairs every training image with a random image of another
class (stackgan-v2-spec.md section 4): a random index, drawn once more if it has the image's
class (and kept then, whatever its class), with its own random crop and flip. Here those draws
are part of the epoch plan of :class:`~stackgan_cli.data.sampler.DeviceBatchSampler`: after
the base plan, the same CPU generator draws two candidate indices, a crop and a flip per
sample, so the plan still depends only on the generator state at the epoch's start and a
resumed run draws the same wrong images. The class comparison happens on the device when the
batch is gathered.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from stackgan_cli.data.batch import Batch
from stackgan_cli.data.sampler import DeviceBatchSampler


class WrongImageSampler(DeviceBatchSampler):
    """:class:`DeviceBatchSampler` whose batches carry ``wrong`` images too; ``class_ids``
    (N,) are the images' classes."""

    def __init__(self, images, embeddings, class_ids, **kwargs) -> None:
        super().__init__(images, embeddings, **kwargs)
        classes = torch.as_tensor(np.asarray(class_ids), dtype=torch.int64)
        if classes.shape != (self.num_images,):
            raise ValueError(f"class_ids must be ({self.num_images},), got {tuple(classes.shape)}")
        self.class_ids = classes.to(self.device)

    def _draw_plan(self) -> None:
        super()._draw_plan()
        assert self._plan is not None
        n, g = self.num_images, self._generator
        used = self.steps_per_epoch * self.global_batch
        first = torch.randint(0, n, (used,), generator=g)
        second = torch.randint(0, n, (used,), generator=g)
        crops = torch.randint(0, self.load_size - self.image_size + 1, (used, 2), generator=g)
        flips = torch.randint(0, 2, (used,), generator=g, dtype=torch.bool)
        draws = {
            "wrong_first": first,
            "wrong_second": second,
            "wrong_row": crops[:, 0],
            "wrong_col": crops[:, 1],
            "wrong_flip": flips,
        }
        shape = (self.steps_per_epoch, self.world_size, self.batch_size)
        for key, value in draws.items():
            self._plan[key] = value.view(shape)[:, self.rank].to(self.device)

    def next_batch(self) -> Batch:
        """The next batch with its wrong images; advances like the base sampler."""
        if self._plan is None:
            self._draw_plan()
        plan, s = self._plan, self.step
        assert plan is not None
        batch = super().next_batch()
        index, first = plan["index"][s], plan["wrong_first"][s]
        same_class = self.class_ids[first] == self.class_ids[index]
        wrong_index = torch.where(same_class, plan["wrong_second"][s], first)
        wrong = self._crop(
            wrong_index, plan["wrong_row"][s], plan["wrong_col"][s], plan["wrong_flip"][s]
        )
        return dataclasses.replace(batch, wrong=wrong)
