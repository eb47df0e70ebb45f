"""DAMSM pre-training (``stackgan train --arch damsm``): AttnGAN's text and image encoders
trained together with the official recipe (attngan-spec.md 8.1), as a run like every other.

A :class:`DAMSMTrainer` is built and driven by training/run.py exactly as the GAN
:class:`~stackgan_cli.training.loop.Trainer` is (run directory, lock, ``config.json``, Ctrl-C,
``stackgan resume``); it reuses the run's files (RunFiles), the checkpoint helpers, the device
batch sampler, the progress display and TensorBoard, and keeps its own loop, which is short:

    per epoch: a fresh Adam(lr(epoch), betas (0.5, 0.999)) over the text encoder and the image
    encoder's two projections (the official re-creates it every epoch, resetting its moments)
    run start: the frozen trunk's outputs for K fixed views of every image (``--trunk-views``,
               default 4; training/trunk_cache.py), computed once
    per step:  a word batch (one view of each image, one caption, at most 18 words, sorted
               longest first); words loss0 + loss1 + sentence loss0 + loss1
               (gamma 4/5/10, same-class pairs masked); backward; the text encoder's gradient
               norm clipped to 0.25; step
    epoch end: the test split's losses and retrieval accuracy; last.pt (+ a snapshot every
               --snapshot-every epochs); RUN_DIR/damsm.pt, the DAMSM file that --damsm reads

lr(epoch) = 0.002 multiplied by 0.98 after every epoch while above 0.0002 (114 decays), a
function of the epoch alone, so a resumed run continues the schedule (the official resume
restarts it at 0.002).

Departures from the official recipe, each deliberate:
- Images: our prepared datasets store 76 and 304 px images only, so the crop is 256 of 304
  (the GAN's crop) and the encoder resizes it to 299, instead of 299 crops of 355 px images.
- The Inception trunk is truly frozen: eval mode, its BatchNorms on ImageNet's running
  statistics (the official trunk is in train mode: batch statistics, drifting statistics).
- Because it is, its outputs are computed once per image view and reused: each image has K
  fixed crops (half of them flipped) instead of a fresh crop per step. ``--trunk-views 0``
  restores the per-step crop and trunk pass (about 20x slower per epoch on a CPU; see
  benchmarks/RESULTS.md for the epoch times and the retrieval accuracy of both).
- The test evaluation runs over every full test batch, in eval mode, with the same crops and
  captions every epoch (a fixed seed), and averages them; the official sums at most 51 batches
  of random crops and divides by 50.
- The vocabulary is built from the dataset's train and test captions (the official rule) in
  order of first appearance (the official order came from Python 2's dict iteration).
- The word loss is computed for every caption and image at once
  (``damsm_word_loss_batched``: the same maths as the official loop over captions, agreeing to
  about 1e-6, about 8x faster at batch 48 on a CPU).
- Float32 always: ``--amp`` (and ``--channels-last``, ``--fast-layers``) do not apply.

Under torchrun the text encoder and the image encoder (whose trainable part is its two
projections) are wrapped in DDP: each process computes the losses of its own batch of
``--batch-size`` (the matching losses compare the captions and images of one batch), and the
gradients are averaged.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from stackgan_cli.console import info
from stackgan_cli.damsm_file import save_damsm_file
from stackgan_cli.data.batch import Batch
from stackgan_cli.data.sampler import DeviceBatchSampler
from stackgan_cli.errors import StackGANError, UsageError
from stackgan_cli.families.registry import FAMILIES
from stackgan_cli.fsutil import copy_file
from stackgan_cli.models import DAMSMImageEncoder, DAMSMTextEncoder, ModelConfig
from stackgan_cli.models.config import PRESETS
from stackgan_cli.models.losses_attngan import (
    cosine_similarity,
    damsm_sentence_loss,
    damsm_word_loss_batched,
)
from stackgan_cli.text.damsm_text import DAMSMText
from stackgan_cli.text.words import WORDS_NUM, WordVocabulary, caption_id_arrays
from stackgan_cli.training import checkpoint as ckpt
from stackgan_cli.training import distributed as dist_utils
from stackgan_cli.training.assembly import restore_progress, seed_everything
from stackgan_cli.training.config import TrainConfig
from stackgan_cli.training.damsm_weights import (
    Backbone,
    fetch_weights,
    fill_trunk,
    load_backbone_weights,
)
from stackgan_cli.training.loop import TrainingInterrupted, TrainResult
from stackgan_cli.training.progress import TrainProgress
from stackgan_cli.training.regimes import TensorBoardLog
from stackgan_cli.training.run_files import RunFiles
from stackgan_cli.training.signals import StopRequest
from stackgan_cli.training.trunk_cache import (
    CACHE_DIR,
    CachedProjections,
    TrunkFeatures,
    cache_bytes,
    open_or_build,
    remove_cache,
    view_plan,
)

GAMMAS = (4.0, 5.0, 10.0)  # gamma1, gamma2, gamma3 (DAMSM/bird.yml)
GRAD_CLIP = 0.25  # TRAIN.RNN_GRAD_CLIP: the text encoder's gradient norm
BETAS = (0.5, 0.999)
LR_DECAY = 0.98  # after every epoch while lr > ENCODER_LR / 10
LOAD_SIZE, CROP_SIZE = 304, 256  # the stored images and the crop (see the module docstring)
LOSS_NAMES = ("w_loss0", "w_loss1", "s_loss0", "s_loss1")
DAMSM_FILE = "damsm.pt"
_PROJECTIONS = ("emb_features.", "emb_cnn_code.")
CHECKPOINT_KEYS = (*ckpt.COMMON_KEYS, "text_encoder", "image_projections", "vocabulary")
CHECKPOINT_KEYS += ("inception_sha256",)
# TrainConfig fields a DAMSM run reads (or, for the execution switches, deliberately ignores);
# any other given with a value other than the recipe's is a usage error.
_USED = {"arch", "stage", "dataset", "run_dir", "out", "epochs", "batch_size", "lr_encoder"}
_USED |= {"inception_weights", "snapshot_every", "sample_every", "log_every", "seed", "device"}
_USED |= {"tensorboard", "amp", "channels_last", "fast_layers", "trunk_views"}
TEST_VIEWS = 1  # the test split's fixed crop per image (the same plan every epoch)


def encoder_lr(base_lr: float, epoch: int) -> float:
    """The learning rate during 0-based ``epoch``: the official in-place decay (x0.98 after
    each epoch while above ``base_lr / 10``) replayed, so the values are the official ones."""
    lr = base_lr
    for _ in range(epoch):
        if lr > base_lr / 10.0:
            lr *= LR_DECAY
    return lr


def build_vocabulary(dataset: Any) -> WordVocabulary:
    """The official vocabulary rule: every word of the train and test captions."""
    splits = [dataset.split(name) for name in dataset.split_names]
    return WordVocabulary.build(
        caption for split in splits for captions in split.captions for caption in captions
    )


@dataclass
class DAMSMResult(TrainResult):
    """Where a finished DAMSM run left its results (``generator_path``: its DAMSM file)."""

    file_label: ClassVar[str] = "DAMSM file"


class DAMSMProgress(TrainProgress):
    """The training display, with the DAMSM losses in place of a GAN's."""

    def update(self, record: Mapping[str, Any], *, epoch_end: bool) -> None:
        if not self.enabled:
            return
        stats = (
            f"words {record['w_loss0'] + record['w_loss1']:.3f} sentence "
            f"{record['s_loss0'] + record['s_loss1']:.3f} lr {record['lr']:.2e} "
            f"{record['images_per_s']:.1f} img/s"
        )
        if self._progress is not None:
            self._progress.update(self._task, stats=stats, epoch=record["epoch"])
        elif epoch_end or time.monotonic() - self._last_plain >= 30.0:
            self._last_plain = time.monotonic()
            self.message(f"{self.title} epoch {record['epoch']}/{self.epochs} step "
                         f"{record['step']} | {stats}")  # fmt: skip


class DAMSMTrainer:
    """One DAMSM run on one process: the encoders, the sampler, the optimizer of the current
    epoch, the run's files and what a checkpoint carries."""

    spec = FAMILIES["damsm"]
    title = "DAMSM"
    channels_last = False
    amp = False

    # --- what a run is made of (classmethods: before the run directory exists) -------------
    @classmethod
    def check_train_options(cls, cfg: TrainConfig) -> None:
        """UsageError naming the first option given that a DAMSM run does not use."""
        recipe = TrainConfig.for_arch(cfg.arch)
        for field in dataclasses.fields(TrainConfig):
            if field.name not in _USED and getattr(cfg, field.name) != getattr(recipe, field.name):
                raise UsageError(
                    f"--{field.name.replace('_', '-')}: --arch damsm trains the DAMSM text and "
                    "image encoders, which do not use it"
                )
        if not cfg.lr_encoder > 0:
            raise UsageError(f"--lr-encoder: must be positive, got {cfg.lr_encoder}")
        if cfg.inception_weights is not None and not Path(cfg.inception_weights).is_file():
            raise UsageError(f"--inception-weights {cfg.inception_weights}: no such file")
        if cfg.trunk_views < 0:
            raise UsageError(f"--trunk-views: must be 0 or more, got {cfg.trunk_views}")

    @classmethod
    def prefetch(cls, cfg: TrainConfig) -> None:
        """Download the trunk's weights into the cache now, unless --inception-weights."""
        if cfg.inception_weights is None:
            fetch_weights()

    @classmethod
    def model_config(cls, preset: str | None, overrides: Mapping[str, int | None]) -> ModelConfig:
        """The encoders' widths: the preset's (default birds-attngan: text 256, words 300)
        with --text-dim/--word-dim; UsageError for the GAN width options."""
        for name, value in overrides.items():
            if value is not None and name not in ("text_dim", "word_dim"):
                raise UsageError(
                    f"--{name.replace('_', '-')}: --arch damsm trains encoders; --text-dim and "
                    "--word-dim set their widths"
                )
        base = PRESETS[preset or cls.spec.default_preset]
        widths = {k: int(v) for k, v in overrides.items() if v is not None}
        cfg = dataclasses.replace(base, **widths)
        if cfg.text_dim % 2:
            raise UsageError(f"--text-dim: must be even (two LSTM directions), got {cfg.text_dim}")
        return cfg

    @classmethod
    def for_checkpoint(
        cls,
        state: Mapping[str, Any],
        cfg: TrainConfig,
        model_cfg: ModelConfig,
        dataset: Any,
        ctx: dist_utils.DistContext,
        run_dir: Path,
    ) -> DAMSMTrainer:
        """The trainer of a run resumed from ``state`` (its vocabulary and trunk weights)."""
        words = state.get("vocabulary")
        if not isinstance(words, (list, tuple)):
            raise StackGANError(f"{run_dir}: the checkpoint holds no DAMSM vocabulary")
        return cls(
            cfg,
            model_cfg,
            dataset,
            ctx,
            run_dir,
            vocabulary=WordVocabulary(tuple(words)),
            inception_sha256=str(state.get("inception_sha256")),
        )

    def __init__(
        self,
        cfg: TrainConfig,
        model_cfg: ModelConfig,
        dataset: Any,
        ctx: dist_utils.DistContext,
        run_dir: Path,
        *,
        vocabulary: WordVocabulary | None = None,
        inception_sha256: str | None = None,
    ) -> None:
        self.cfg, self.model_cfg, self.dataset, self.ctx = cfg, model_cfg, dataset, ctx
        self.device = ctx.device
        self.run_dir = Path(run_dir)
        backbone = load_backbone_weights(cfg.inception_weights)
        if inception_sha256 is not None and backbone.sha256 != inception_sha256:
            raise StackGANError(
                f"{backbone.path} (sha256 {backbone.sha256[:12]}...) is not the Inception-v3 "
                f"weights file this run started with (sha256 {inception_sha256[:12]}...)"
            )
        self.backbone_sha256 = backbone.sha256
        self.vocabulary = vocabulary or build_vocabulary(dataset)
        seed_everything(cfg.seed + ctx.rank)
        self.text_encoder = DAMSMTextEncoder(model_cfg, len(self.vocabulary)).to(self.device)
        self.image_encoder = self._image_encoder(backbone).to(self.device)
        # With cached trunk outputs a step only runs the encoder's projections.
        self.views = cfg.trunk_views
        image_step = CachedProjections(self.image_encoder) if self.views else self.image_encoder
        self.image_step = image_step
        self.features: dict[str, TrunkFeatures] = {}
        self._report = info  # where cache-building lines go (the progress display in fit)
        # Under torchrun: DDP wrappers for the forward passes (None in a single process).
        self.text_net = dist_utils.wrap_ddp(self.text_encoder, ctx) or self.text_encoder
        self.image_net = dist_utils.wrap_ddp(image_step, ctx) or image_step
        train = dataset.split("train")
        if len(train) < cfg.batch_size * ctx.world_size:
            raise StackGANError(
                f"--batch-size {cfg.batch_size} x {ctx.world_size} process(es) is more than the "
                f"{len(train)} training images of {dataset.name!r}"
            )
        self.sampler = self._sampler(
            train, cfg.batch_size, cfg.seed, ctx.rank, ctx.world_size, views=self.views
        )
        self.optimizer: torch.optim.Optimizer | None = None
        self._optimizer_epoch: int | None = None  # the epoch self.optimizer belongs to
        self.files = RunFiles(self.run_dir, ctx)
        self.global_step = 0
        self.elapsed = 0.0
        self.tensorboard = TensorBoardLog(self.run_dir) if cfg.tensorboard and ctx.is_main else None

    def _image_encoder(self, backbone: Backbone) -> DAMSMImageEncoder:
        encoder = DAMSMImageEncoder(self.model_cfg)
        fill_trunk(encoder, backbone, str(backbone.path))
        return encoder

    def _sampler(
        self,
        split: Any,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        *,
        views: int = 0,
    ) -> DeviceBatchSampler:
        return DeviceBatchSampler(
            None if views else split.images(LOAD_SIZE),
            split.embeddings,
            image_size=CROP_SIZE,
            batch_size=batch_size,
            device=self.device,
            seed=seed,
            rank=rank,
            world_size=world_size,
            words=caption_id_arrays(split.captions, self.vocabulary),
            class_ids=split.class_ids,
            words_num=WORDS_NUM,
            views=views,
        )

    # --- the trunk's cached outputs ------------------------------------------------------------
    def _cached_splits(self) -> dict[str, tuple[Any, int, int]]:
        """Split name -> (split, views, view seed) of the caches this run uses."""
        splits = {"train": (self.dataset.split("train"), self.views, self.cfg.seed)}
        if self._test_sampler() is not None:
            splits["test"] = (self.dataset.split("test"), TEST_VIEWS, self.cfg.seed + 1)
        return splits

    def prepare_features(self, report: Any) -> None:
        """Open (or compute, once) the trunk outputs of every view the run reads; a no-op
        with ``--trunk-views 0``. Collective: every rank calls."""
        if not self.views or self.features:
            return
        directory = self.run_dir / CACHE_DIR
        splits = self._cached_splits()
        size = sum(cache_bytes(len(split), views) for split, views, _ in splits.values())
        for name, (split, views, seed) in splits.items():
            key = {
                "format": 1,
                "split": name,
                "images": len(split),
                "views": views,
                "seed": seed,
                "load_size": LOAD_SIZE,
                "crop_size": CROP_SIZE,
                "inception_sha256": self.backbone_sha256,
                "align_corners": self.image_encoder.align_corners,
                "dataset_fingerprint": self.dataset.fingerprint,
            }
            if name == "train":
                report(
                    f"{self.title}: the frozen Inception trunk's outputs for {len(split)} images "
                    f"x {views} views (+ the test split's), computed once: {size / 2**30:.2f} GiB "
                    f"in {directory}, removed when the run ends"
                )
            with self.files.writing("the trunk feature cache"):
                self.features[name] = open_or_build(
                    directory,
                    name,
                    key,
                    encoder=self.image_encoder,
                    images=split.images(LOAD_SIZE),
                    plan=view_plan(len(split), views, LOAD_SIZE, CROP_SIZE, seed),
                    crop=CROP_SIZE,
                    ctx=self.ctx,
                    device=self.device,
                    report=report,
                )

    @property
    def trained_parameters(self) -> list[nn.Parameter]:
        """The text encoder's parameters, then the image encoder's trainable ones (the
        official order of the optimizer's list)."""
        image = [p for p in self.image_encoder.parameters() if p.requires_grad]
        return [*self.text_encoder.parameters(), *image]

    @property
    def damsm_path(self) -> Path:
        return self.run_dir / DAMSM_FILE

    # --- state -----------------------------------------------------------------------------
    def dataset_info(self) -> dict[str, str]:
        """Name, source (as given to --dataset) and fingerprint of the training data."""
        return {
            "name": self.dataset.name,
            "source": self.cfg.dataset,
            "fingerprint": self.dataset.fingerprint,
        }

    def checkpoint(self, rng: list[dict[str, Any]]) -> dict[str, Any]:
        """The run's state: the checkpoint format's common entries (training/checkpoint.py)
        with the encoders (the image encoder's projections: its trunk is the weights file,
        named by its sha256), the current epoch's optimizer (None at an epoch's end, where
        the next epoch starts a fresh one) and the vocabulary."""
        image = self.image_encoder.state_dict()
        mid_epoch = self.sampler.step > 0 and self.optimizer is not None
        return {
            "format": ckpt.FORMAT,
            "format_version": ckpt.FORMAT_VERSION,
            "family": self.spec.key,
            "stage": None,
            "text_encoder": self.text_encoder.state_dict(),
            "image_projections": {k: v for k, v in image.items() if k.startswith(_PROJECTIONS)},
            "optimizer": self.optimizer.state_dict() if mid_epoch else None,
            "vocabulary": list(self.vocabulary.words),
            "inception_sha256": self.backbone_sha256,
            "epoch": self.sampler.epoch,
            "step": self.sampler.step,
            "global_step": self.global_step,
            "sampler": self.sampler.state_dict(),
            "rng": rng,
            "train_config": self.cfg.to_dict(),
            "model_config": self.model_cfg.to_dict(),
            "dataset": self.dataset_info(),
            "world_size": self.ctx.world_size,
            "metrics_bytes": self.files.metrics_bytes,
            "elapsed": self.elapsed,
        }

    def load_state(self, state: Mapping[str, Any], source: Path) -> None:
        """Restore the encoders, the sampler's position, the optimizer of an epoch in progress,
        the counters and the random states."""
        try:
            ckpt.check_keys(state, source, required=CHECKPOINT_KEYS)
            self.text_encoder.load_state_dict(state["text_encoder"])
            missing, unexpected = self.image_encoder.load_state_dict(
                state["image_projections"], strict=False
            )
            if unexpected or any(key.startswith(_PROJECTIONS) for key in missing):
                raise ValueError("its image projections do not match")
            self.sampler.load_state_dict(state["sampler"])
            if self.sampler.step > 0:
                if state.get("optimizer") is None:
                    raise ValueError("it stopped mid-epoch but holds no optimizer state")
                self._new_optimizer()
                self.optimizer.load_state_dict(state["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise StackGANError(f"{source} does not fit this DAMSM run: {exc}") from None
        self.global_step, self.elapsed = restore_progress(
            state,
            source,
            files=self.files,
            ctx=self.ctx,
            device=self.device,
            seed=self.cfg.seed,
            sampler=self.sampler,
        )

    def truncate_metrics(self) -> None:
        """Drop metrics lines written after the checkpoint being resumed from."""
        if self.ctx.is_main:
            self.files.truncate_metrics()

    # --- the step ----------------------------------------------------------------------------
    def _new_optimizer(self) -> None:
        """The official fresh Adam of the sampler's epoch (moments reset, the epoch's lr)."""
        lr = encoder_lr(self.cfg.lr_encoder, self.sampler.epoch)
        self.optimizer = torch.optim.Adam(self.trained_parameters, lr=lr, betas=BETAS)
        self._optimizer_epoch = self.sampler.epoch

    def _train_mode(self) -> None:
        # Text dropout on; the image encoder's trunk stays in eval mode (DAMSMImageEncoder).
        self.text_encoder.train()
        self.image_encoder.train()

    def _losses(self, batch: Batch, text_net: nn.Module, image_net: nn.Module, split: str):
        """(w_loss0, w_loss1, s_loss0, s_loss1), the image codes and the sentence features."""
        lengths = (~batch.token_mask).sum(dim=1)
        if batch.view_rows is not None:
            regions, code = image_net(*self.features[split].gather(batch.view_rows, self.device))
        else:
            regions, code = image_net(batch.images)
        words, sentence = text_net(batch.tokens, lengths.cpu())
        w0, w1 = damsm_word_loss_batched(regions, words, lengths, batch.class_ids, *GAMMAS)
        s0, s1 = damsm_sentence_loss(code, sentence, batch.class_ids, gamma3=GAMMAS[2])
        return (w0, w1, s0, s1), code, sentence

    def train_step(self, batch: Batch) -> Tensor:
        """One official step; the four losses (detached, on the device)."""
        self._train_mode()
        self.optimizer.zero_grad(set_to_none=True)
        losses, _, _ = self._losses(batch, self.text_net, self.image_net, "train")
        loss = losses[0] + losses[1] + losses[2] + losses[3]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.text_encoder.parameters(), GRAD_CLIP)
        self.optimizer.step()
        return torch.stack(losses).detach()

    @torch.no_grad()
    def evaluate(self) -> dict[str, float] | None:
        """The test split's mean losses and top-1 retrieval accuracy within its batches (by
        the sentence-image cosine: caption -> image and image -> caption), in eval mode, over
        every full batch of a fixed plan; None when the split has fewer than 2 images."""
        sampler = self._test_sampler()
        if sampler is None:
            return None
        sampler.load_state_dict(self._test_start)  # the same plan every epoch
        self.prepare_features(self._report)
        self.text_encoder.eval()
        self.image_encoder.eval()
        totals = torch.zeros(len(LOSS_NAMES) + 2, dtype=torch.float64)
        for _ in range(sampler.steps_per_epoch):
            batch = sampler.next_batch()
            losses, code, sentence = self._losses(batch, self.text_encoder, self.image_step, "test")
            scores = cosine_similarity(code[:, None, :], sentence[None, :, :], dim=2)  # (I, C)
            truth = torch.arange(len(batch), device=scores.device)
            c2i = (scores.argmax(dim=0) == truth).double().mean()
            i2c = (scores.argmax(dim=1) == truth).double().mean()
            totals += torch.stack([*losses, c2i, i2c]).double().cpu()
        means = (totals / sampler.steps_per_epoch).tolist()
        record = dict(zip(LOSS_NAMES, means[: len(LOSS_NAMES)], strict=True))
        record["caption_to_image_top1"] = means[-2]
        record["image_to_caption_top1"] = means[-1]
        record["batches"] = sampler.steps_per_epoch
        record["batch_size"] = sampler.batch_size
        return record

    def _test_sampler(self) -> DeviceBatchSampler | None:
        """The test split's sampler, made on first use (None: fewer than 2 test images)."""
        if not hasattr(self, "_test"):
            test = self.dataset.split("test") if "test" in self.dataset.split_names else None
            self._test = None
            if test is not None and len(test) >= 2:
                batch = min(self.cfg.batch_size, len(test))
                views = TEST_VIEWS if self.views else 0
                self._test = self._sampler(test, batch, self.cfg.seed, views=views)
                self._test_start = self._test.state_dict()
        return self._test

    # --- files -----------------------------------------------------------------------------
    def write_damsm_file(self, path: Path) -> None:
        """The DAMSM file (damsm_file.py) of the current encoders: what --damsm reads."""
        text = DAMSMText(self.text_encoder, self.vocabulary, self.model_cfg)  # sets eval mode
        save_damsm_file(
            path, text, self.image_encoder, dataset=self.dataset.name, epoch=self.sampler.epoch
        )

    def save(self, progress: TrainProgress, *, epoch_end: bool) -> None:
        """last.pt (+ the snapshot and damsm.pt at epoch ends). Collective: every rank calls."""
        rng = dist_utils.gather_objects(self.ctx, ckpt.capture_rng(self.device))
        done = self.sampler.epoch
        state = self.checkpoint(rng) if self.ctx.is_main else None
        with self.files.writing("the checkpoint"):
            if self.ctx.is_main:
                self.files.write_checkpoint(state)
        self.files.last_saved = (self.sampler.epoch, self.sampler.step)
        if not epoch_end:
            return
        if done % self.cfg.snapshot_every == 0:
            path = self.files.snapshot_path(done)
            with self.files.writing(f"the snapshot {path.name}"):
                if self.ctx.is_main:
                    self.files.write_checkpoint(state, path)
                    progress.message(f"snapshot: {path}")
        with self.files.writing(f"the DAMSM file {DAMSM_FILE}"):
            if self.ctx.is_main:
                self.write_damsm_file(self.damsm_path)

    def _record(self, record: dict[str, Any]) -> None:
        with self.files.writing("metrics.jsonl"):
            if self.ctx.is_main:
                self.files.append_metrics(record)
        if self.tensorboard is not None:
            scalars = {k: v for k, v in record.items() if isinstance(v, float)}
            prefix = "test_" if record.get("split") == "test" else ""
            self.tensorboard.scalars({prefix + k: v for k, v in scalars.items()}, self.global_step)

    def _flush_window(self, progress: TrainProgress, *, epoch_end: bool) -> None:
        """One metrics record of the steps since the last one (one host sync); a non-finite
        loss stops the run before anything is saved."""
        count = self._window_len
        if count == 0:
            return
        window = dist_utils.all_reduce_sum_(self.ctx, self._window[:count].clone())
        values = window.cpu().double()
        now = time.perf_counter()
        seconds, self._window_start, self._window_len = now - self._window_start, now, 0
        self.elapsed += seconds
        epoch = self.sampler.epoch - 1 if epoch_end else self.sampler.epoch
        if not torch.isfinite(values).all():
            raise StackGANError(
                f"training stopped: a DAMSM loss became non-finite in epoch {epoch + 1}; "
                f"{self.files.last_good('is left untouched')}. Lower --lr-encoder or check the "
                "data, then start a new run"
            )
        means = values.sum(dim=0) / (count * self.ctx.world_size)
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": self.global_step,
            "epoch_step": self.sampler.step or self.sampler.steps_per_epoch,
        }
        record.update({name: float(means[k]) for k, name in enumerate(LOSS_NAMES)})
        record["lr"] = self.optimizer.param_groups[0]["lr"]
        record["images_per_s"] = count * self.sampler.global_batch / seconds if seconds else 0.0
        record["time"] = round(self.elapsed, 3)
        self._record(record)
        progress.update(record, epoch_end=epoch_end)

    def _end_epoch(self, progress: TrainProgress) -> None:
        """The test split's record, then the checkpoint and the DAMSM file."""
        done = self.sampler.epoch
        result = self.evaluate()
        if result is not None:
            record = {"epoch": done, "step": self.global_step, "split": "test", **result}
            record["time"] = round(self.elapsed, 3)
            self._record(record)
            progress.message(
                f"{self.title} epoch {done} test: words {result['w_loss0'] + result['w_loss1']:.3f}"
                f" sentence {result['s_loss0'] + result['s_loss1']:.3f}, top-1 caption->image "
                f"{result['caption_to_image_top1']:.3f}, image->caption "
                f"{result['image_to_caption_top1']:.3f}"
            )
        self.save(progress, epoch_end=True)
        if self.tensorboard is not None:
            self.tensorboard.flush()
        self._window_start = time.perf_counter()

    # --- the loop ------------------------------------------------------------------------
    def progress_display(self) -> TrainProgress:
        """The display :meth:`fit` reports to (rank 0 only shows anything)."""
        sampler = self.sampler
        spe = sampler.steps_per_epoch
        return DAMSMProgress(
            title=self.title,
            epochs=self.cfg.epochs,
            start_epoch=sampler.epoch + 1,
            total_steps=self.cfg.epochs * spe,
            done_steps=sampler.epoch * spe + sampler.step,
            global_batch=sampler.global_batch,
            enabled=self.ctx.is_main,
        )

    def fit(self, progress: TrainProgress, stop: StopRequest) -> TrainResult:
        """Train from the current position up to ``cfg.epochs`` completed epochs; a stop
        request saves ``last.pt`` and raises :class:`TrainingInterrupted`."""
        cfg, ctx, sampler = self.cfg, self.ctx, self.sampler
        self._window = torch.zeros(cfg.log_every, len(LOSS_NAMES), device=self.device)
        self._window_len = 0
        stop_every = 1 if not ctx.enabled or self.device.type == "cpu" else cfg.log_every
        processes = f" x {ctx.world_size} processes" if ctx.enabled else ""
        progress.message(
            f"{self.title} on {self.dataset.name} ({sampler.num_images} images, "
            f"{len(self.vocabulary) - 1} words): {sampler.steps_per_epoch} steps of "
            f"{cfg.batch_size}{processes} per epoch, epochs {sampler.epoch + 1}-{cfg.epochs}, "
            f"{self.device}; run directory {self.run_dir}"
        )
        self._report = progress.message
        if sampler.epoch < cfg.epochs:
            self.prepare_features(progress.message)
        if self.tensorboard is not None:
            self.tensorboard.start(self.global_step)
        self._window_start = time.perf_counter()
        while sampler.epoch < cfg.epochs:
            if self._optimizer_epoch != sampler.epoch:
                self._new_optimizer()
            self._window[self._window_len].copy_(self.train_step(sampler.next_batch()))
            self._window_len += 1
            self.global_step += 1
            epoch_end = sampler.step == 0
            progress.advance(sampler.epoch if epoch_end else sampler.epoch + 1)
            if epoch_end or self.global_step % cfg.log_every == 0:
                self._flush_window(progress, epoch_end=epoch_end)
            if epoch_end:
                self._end_epoch(progress)
            if (epoch_end or self.global_step % stop_every == 0) and dist_utils.any_rank(
                ctx, stop.requested
            ):
                if sampler.epoch < cfg.epochs:
                    if not epoch_end:
                        self._flush_window(progress, epoch_end=False)
                        self.save(progress, epoch_end=False)
                    raise TrainingInterrupted(
                        self.run_dir, sampler.epoch, sampler.step, stop.signal_name, ctx.is_main
                    )
        return self.finish(already_complete=False)

    def finish(self, *, already_complete: bool) -> DAMSMResult:
        """The final files (damsm.pt if missing, its --out copy) and the result; the trunk
        feature cache is removed."""
        out = Path(self.cfg.out) if self.cfg.out else None
        self.features.clear()
        dist_utils.barrier(self.ctx)
        with self.files.writing("the final files"):
            if self.ctx.is_main:
                remove_cache(self.run_dir)
                if not self.damsm_path.exists():
                    self.write_damsm_file(self.damsm_path)
                if out is not None:
                    copy_file(self.damsm_path, out)
                if self.tensorboard is not None:
                    self.tensorboard.close()
        return DAMSMResult(
            run_dir=self.run_dir,
            generator_path=self.damsm_path,
            epochs=self.sampler.epoch,
            global_step=self.global_step,
            out=out,
            already_complete=already_complete,
            main_process=self.ctx.is_main,
        )
