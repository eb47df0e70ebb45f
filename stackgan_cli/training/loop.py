"""The epoch loop of one run: steps, logging, checkpoints, samples, stopping.

A :class:`Trainer` is built from a TrainConfig, a ModelConfig and a prepared dataset (see
``training/run.py`` for starting and resuming), optionally loads a checkpoint's state, and
:meth:`Trainer.fit` trains up to ``cfg.epochs``. Rank 0 alone writes files and shows progress.

Losses stay on the device; they are read back only at logging points (every ``log_every``
steps and at each epoch end), where non-finite values stop the run before anything is saved.
"""

from __future__ import annotations

import json
import math
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stackgan_cli.console import warn
from stackgan_cli.data.sampler import DeviceBatchSampler
from stackgan_cli.errors import StackGANError
from stackgan_cli.fsutil import atomic_file
from stackgan_cli.generator_file import save_generator_file
from stackgan_cli.models import ModelConfig, build_discriminator, build_generator
from stackgan_cli.training import checkpoint as ckpt
from stackgan_cli.training import distributed as dist_utils
from stackgan_cli.training.config import SAMPLE_CAPTIONS, SAMPLE_NOISES, TrainConfig, lr_at
from stackgan_cli.training.plot import plot_losses
from stackgan_cli.training.progress import TrainProgress
from stackgan_cli.training.samples import make_sample_sheet, write_sample_grid
from stackgan_cli.training.signals import StopRequest
from stackgan_cli.training.step import GANStep, loss_names, make_optimizers, prepare_modules


class TrainingInterrupted(Exception):
    """Raised after a stop request once ``last.pt`` holds the state to continue from:
    ``epoch`` epochs completed and ``step`` steps of the next one."""

    def __init__(self, run_dir: Path, epoch: int, step: int, signal_name: str | None) -> None:
        super().__init__(self.where(epoch, step))
        self.run_dir = run_dir
        self.epoch = epoch
        self.step = step
        self.signal_name = signal_name

    @staticmethod
    def where(epoch: int, step: int) -> str:
        """ "after epoch 3" or "in epoch 4 after step 17"."""
        return f"after epoch {epoch}" if step == 0 else f"in epoch {epoch + 1} after step {step}"


@dataclass
class TrainResult:
    """Where a finished run left its results."""

    run_dir: Path
    generator_path: Path
    epochs: int
    global_step: int
    out: Path | None
    already_complete: bool = False  # resume found nothing left to train


def resolve_channels_last(cfg: TrainConfig, device: torch.device) -> bool:
    """The configured memory format; ``None`` means channels_last on CUDA only."""
    if cfg.channels_last is None:
        return device.type == "cuda"
    return bool(cfg.channels_last)


class Trainer:
    """Networks, optimizers, sampler and bookkeeping of one run on one process."""

    def __init__(
        self,
        cfg: TrainConfig,
        model_cfg: ModelConfig,
        dataset: Any,
        ctx: dist_utils.DistContext,
        run_dir: Path,
        *,
        stage1_state: dict[str, torch.Tensor] | None = None,
    ) -> None:
        self.cfg = cfg
        self.model_cfg = model_cfg
        self.dataset = dataset
        self.ctx = ctx
        self.device = ctx.device
        self.run_dir = Path(run_dir)
        self.stage = cfg.stage
        cuda = self.device.type == "cuda"
        self.amp = cfg.amp and cuda  # bf16 autocast; the CPU always trains in float32
        if cuda:
            torch.backends.cudnn.benchmark = True

        # Seeded per rank: the noise and CA draws differ across ranks; DDP broadcasts rank 0's
        # initial weights, so the networks start equal everywhere.
        random.seed(cfg.seed + ctx.rank)
        np.random.seed(cfg.seed + ctx.rank)
        torch.manual_seed(cfg.seed + ctx.rank)

        self.netG = build_generator(self.stage, model_cfg)
        self.netD = build_discriminator(self.stage, model_cfg)
        if stage1_state is not None:
            self.netG.STAGE1_G.load_state_dict(stage1_state)
        self.netG.to(self.device).train()
        self.netD.to(self.device).train()
        self.channels_last = resolve_channels_last(cfg, self.device)
        prepare_modules(
            self.netG,
            self.netD,
            channels_last=self.channels_last,
            compile=cfg.compile,
            fused_upsample=cfg.fast_layers,
            gemm_convs=cfg.fast_layers and not cuda,
        )
        ddp_g = dist_utils.wrap_ddp(self.netG, ctx)
        ddp_d = dist_utils.wrap_ddp(self.netD, ctx)
        self.opt_g, self.opt_d = make_optimizers(
            self.netG, self.netD, lr_g=cfg.lr_g, lr_d=cfg.lr_d, device=self.device
        )
        self.step_fn = GANStep(
            self.netG,
            self.netD,
            self.opt_g,
            self.opt_d,
            stage=self.stage,
            kl_coeff=cfg.kl_coeff,
            z_dim=model_cfg.z_dim,
            device=self.device,
            amp=self.amp,
            ddp_g=ddp_g,
            ddp_d=ddp_d,
        )
        self.loss_names = loss_names(self.stage)

        train = dataset.split("train")
        if len(train) < cfg.batch_size * ctx.world_size:
            raise StackGANError(
                f"--batch-size {cfg.batch_size} x {ctx.world_size} process(es) is more than the "
                f"{len(train)} training images of {dataset.name!r}"
            )
        self.sampler = DeviceBatchSampler(
            train.images(cfg.load_size()),
            train.embeddings,
            image_size=cfg.image_size(),
            batch_size=cfg.batch_size,
            device=self.device,
            seed=cfg.seed,
            rank=ctx.rank,
            world_size=ctx.world_size,
            channels_last=self.channels_last,
        )
        test = dataset.split("test")
        sheet_split = test if len(test) > 0 else train
        self.sheet = make_sample_sheet(
            sheet_split.captions,
            sheet_split.embeddings,
            z_dim=model_cfg.z_dim,
            condition_dim=model_cfg.condition_dim,
            seed=cfg.seed,
            rows=SAMPLE_CAPTIONS,
            cols=SAMPLE_NOISES,
        )
        self.global_step = 0
        self.elapsed = 0.0  # training seconds over all sessions of this run
        self.metrics_bytes = 0
        self.last_saved: tuple[int, int] | None = None  # (epoch, step) of last.pt

    # --- paths ---------------------------------------------------------------------------
    @property
    def checkpoints(self) -> Path:
        return ckpt.checkpoints_dir(self.run_dir)

    @property
    def generator_path(self) -> Path:
        return self.run_dir / "generator.pt"

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / "metrics.jsonl"

    # --- state ---------------------------------------------------------------------------
    def dataset_info(self) -> dict[str, str]:
        """Name, source (as given to --dataset) and fingerprint of the training data."""
        return {
            "name": self.dataset.name,
            "source": self.cfg.dataset,
            "fingerprint": self.dataset.fingerprint,
        }

    def checkpoint_state(self, rng: list[dict[str, Any]]) -> dict[str, Any]:
        """Everything :meth:`load_state` needs to continue exactly from here."""
        return {
            "stage": self.stage,
            "generator": self.netG.state_dict(),
            "discriminator": self.netD.state_dict(),
            "optimizer_g": self.opt_g.state_dict(),
            "optimizer_d": self.opt_d.state_dict(),
            "epoch": self.sampler.epoch,
            "step": self.sampler.step,
            "global_step": self.global_step,
            "sampler": self.sampler.state_dict(),
            "rng": rng,
            "amp": {"enabled": self.amp, "dtype": "bfloat16", "scaler": None},
            "train_config": self.cfg.to_dict(),
            "model_config": self.model_cfg.to_dict(),
            "dataset": self.dataset_info(),
            "world_size": self.ctx.world_size,
            "metrics_bytes": self.metrics_bytes,
            "elapsed": self.elapsed,
        }

    def load_state(self, state: dict[str, Any], source: Path) -> None:
        """Restore networks, optimizers, sampler position, counters and random states."""
        try:
            self.netG.load_state_dict(state["generator"])
            self.netD.load_state_dict(state["discriminator"])
            self.opt_g.load_state_dict(state["optimizer_g"])
            self.opt_d.load_state_dict(state["optimizer_d"])
            self.sampler.load_state_dict(state["sampler"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise StackGANError(
                f"{source} does not fit this run's networks or data: {exc}"
            ) from None
        self.global_step = int(state["global_step"])
        self.elapsed = float(state.get("elapsed", 0.0))
        self.metrics_bytes = int(state.get("metrics_bytes", 0))
        rng = state["rng"]
        if len(rng) == self.ctx.world_size:
            ckpt.restore_rng(rng[self.ctx.rank], self.device)
        else:
            # Another number of processes than the run had: no exact continuation is possible,
            # so give every rank fresh, distinct random streams.
            if self.ctx.is_main:
                warn(
                    f"{source} was written by {len(rng)} processes and training continues "
                    f"with {self.ctx.world_size}: the continuation is not bit-identical"
                )
            seed = self.cfg.seed + self.ctx.rank + 1_000_003 * self.global_step
            random.seed(seed)
            np.random.seed(seed % 2**32)
            torch.manual_seed(seed)
        self.last_saved = (self.sampler.epoch, self.sampler.step)

    # --- files ---------------------------------------------------------------------------
    def _save(self, *, epoch_end: bool) -> None:
        """last.pt (+ snapshot and generator.pt at epoch ends). Collective: every rank calls."""
        rng = dist_utils.gather_objects(self.ctx, ckpt.capture_rng(self.device))
        if self.ctx.is_main:
            state = self.checkpoint_state(rng)
            ckpt.save_checkpoint(state, self.checkpoints / ckpt.LAST)
            epochs_done = self.sampler.epoch
            if epoch_end and epochs_done % self.cfg.snapshot_every == 0:
                path = self.checkpoints / ckpt.snapshot_name(epochs_done)
                ckpt.save_checkpoint(state, path)
                self.progress.message(f"snapshot: {path}")
            self.write_generator_file()
        self.last_saved = (self.sampler.epoch, self.sampler.step)
        dist_utils.barrier(self.ctx)

    def write_generator_file(self) -> None:
        """generator.pt: the current generator with the dataset's text encoder."""
        save_generator_file(
            self.generator_path,
            self.netG,
            self.model_cfg,
            stage=self.stage,
            text_encoder=self.dataset.text_encoder_dict(),
            dataset=self.dataset.name,
            epoch=self.sampler.epoch,
        )

    def _write_samples(self) -> None:
        path = self.run_dir / "samples" / f"epoch_{self.sampler.epoch:04d}.png"
        write_sample_grid(
            path,
            self.netG,
            self.sheet,
            stage=self.stage,
            device=self.device,
            autocast=self.step_fn.autocast,
        )
        self.progress.message(f"samples: {path}")

    def _append_metrics(self, record: dict[str, Any]) -> None:
        with open(self.metrics_path, "a", encoding="utf-8") as handle:
            handle.write(json.dumps(record) + "\n")
            handle.flush()
            self.metrics_bytes = handle.tell()

    def truncate_metrics(self) -> None:
        """Drop metrics lines written after the checkpoint being resumed from."""
        if self.ctx.is_main and self.metrics_path.exists():
            with open(self.metrics_path, "r+b") as handle:
                handle.truncate(self.metrics_bytes)

    # --- logging -------------------------------------------------------------------------
    def _flush_window(self, epoch: int, *, epoch_end: bool) -> None:
        """Read the losses of the steps since the last logging point (one host sync), stop on
        a non-finite one, write a metrics record and update the display."""
        count = self._window_len
        if count == 0:
            return
        window = dist_utils.all_reduce_sum_(self.ctx, self._window[:count].clone())
        values = window.cpu().double()
        now = time.perf_counter()
        seconds = now - self._window_start
        self.elapsed += seconds
        self._window_start = now
        self._window_len = 0
        bad = (~torch.isfinite(values)).any(dim=1).nonzero()
        if len(bad) > 0:
            first = int(bad[0])
            step = self.global_step - count + first + 1
            names = ", ".join(
                f"{name}={values[first, k].item():g}"
                for k, name in enumerate(self.loss_names)
                if not math.isfinite(values[first, k].item())
            )
            raise StackGANError(self._non_finite_message(step, epoch, names))
        means = values.sum(dim=0) / (count * self.ctx.world_size)
        images = count * self.sampler.global_batch
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "step": self.global_step,
            "epoch_step": self.sampler.step or self.sampler.steps_per_epoch,
        }
        record.update({name: float(means[k]) for k, name in enumerate(self.loss_names)})
        record.update(
            {
                "lr_g": self.opt_g.param_groups[0]["lr"],
                "lr_d": self.opt_d.param_groups[0]["lr"],
                "images_per_s": images / seconds if seconds > 0 else 0.0,
                "time": round(self.elapsed, 3),
            }
        )
        if self.ctx.is_main:
            self._append_metrics(record)
        self.progress.update(record, epoch_end=epoch_end)

    def _non_finite_message(self, step: int, epoch: int, names: str) -> str:
        last = self.checkpoints / ckpt.LAST
        if self.last_saved is None:
            where = "no checkpoint was written yet (the first epoch did not finish)"
        else:
            saved_epoch, saved_step = self.last_saved
            position = f"after epoch {saved_epoch}" + (f", step {saved_step}" if saved_step else "")
            where = f"the last good checkpoint is {last} ({position}), left untouched"
        return (
            f"training stopped: a loss became non-finite ({names}) at step {step} "
            f"(epoch {epoch + 1}); {where}. Lower --lr-g/--lr-d or check the data, then "
            f"start a new run"
        )

    # --- the loop ------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Train from the current position up to ``cfg.epochs`` completed epochs."""
        cfg, sampler = self.cfg, self.sampler
        spe = sampler.steps_per_epoch
        self._window = torch.zeros(cfg.log_every, len(self.loss_names), device=self.device)
        self._window_len = 0
        # The stop flag is local to each process; under DDP the ranks agree on it at logging
        # points (and after every step on the CPU, where that collective is cheap).
        stop_every = 1 if not self.ctx.enabled or self.device.type == "cpu" else cfg.log_every
        self.progress = TrainProgress(
            stage=self.stage,
            epochs=cfg.epochs,
            start_epoch=sampler.epoch + 1,
            total_steps=cfg.epochs * spe,
            done_steps=sampler.epoch * spe + sampler.step,
            global_batch=sampler.global_batch,
            enabled=self.ctx.is_main,
        )
        with StopRequest(notify=self.ctx.is_main) as stop, self.progress:
            processes = f" x {self.ctx.world_size} processes" if self.ctx.enabled else ""
            self.progress.message(
                f"stage {self.stage} on {self.dataset.name} ({sampler.num_images} images): "
                f"{spe} steps of {cfg.batch_size}{processes} per epoch, epochs "
                f"{sampler.epoch + 1}-{cfg.epochs}, {self.device}; run directory {self.run_dir}"
            )
            self._window_start = time.perf_counter()
            while sampler.epoch < cfg.epochs:
                epoch = sampler.epoch
                for group in self.opt_g.param_groups:
                    group["lr"] = lr_at(cfg.lr_g, epoch, cfg.lr_decay_every)
                for group in self.opt_d.param_groups:
                    group["lr"] = lr_at(cfg.lr_d, epoch, cfg.lr_decay_every)
                while True:
                    real, text = sampler.next_batch()
                    losses = self.step_fn(real, text)
                    self._window[self._window_len].copy_(losses)
                    self._window_len += 1
                    self.global_step += 1
                    self.progress.advance(epoch + 1)
                    epoch_end = sampler.step == 0
                    if epoch_end or self.global_step % cfg.log_every == 0:
                        self._flush_window(epoch, epoch_end=epoch_end)
                    if epoch_end:
                        break
                    if self.global_step % stop_every == 0 and dist_utils.any_rank(
                        self.ctx, stop.requested
                    ):
                        self._flush_window(epoch, epoch_end=False)
                        self._save(epoch_end=False)
                        raise TrainingInterrupted(
                            self.run_dir, epoch, sampler.step, stop.signal_name
                        )
                self._end_epoch()
                self._window_start = time.perf_counter()
                if dist_utils.any_rank(self.ctx, stop.requested) and sampler.epoch < cfg.epochs:
                    raise TrainingInterrupted(self.run_dir, sampler.epoch, 0, stop.signal_name)
        return self._finish()

    def _end_epoch(self) -> None:
        done = self.sampler.epoch
        self._save(epoch_end=True)
        if self.ctx.is_main and (done % self.cfg.sample_every == 0 or done == self.cfg.epochs):
            self._write_samples()

    def _finish(self) -> TrainResult:
        out = Path(self.cfg.out) if self.cfg.out else None
        if self.ctx.is_main:
            if not self.generator_path.exists():
                self.write_generator_file()
            plot_losses(
                self.metrics_path,
                self.run_dir / "losses.png",
                title=f"stage {self.stage} on {self.dataset.name}",
            )
            if out is not None:
                copy_file(self.generator_path, out)
            stale = initial_batchnorm_share(self.netG, self.global_step)
            if stale > STALE_BATCHNORM_SHARE:
                warn(
                    f"only {self.global_step} training steps: the generator's BatchNorm running "
                    f"statistics are still {stale:.0%} their initial values, so sample grids and "
                    "`stackgan generate` (eval mode) may look flat and grey; train for more steps"
                )
        # Ranks leave together: one that tears down its process group while rank 0 still
        # writes the final files has been seen to abort in gloo.
        dist_utils.barrier(self.ctx)
        return TrainResult(
            run_dir=self.run_dir,
            generator_path=self.generator_path,
            epochs=self.sampler.epoch,
            global_step=self.global_step,
            out=out,
        )


STALE_BATCHNORM_SHARE = 0.01


def initial_batchnorm_share(module: torch.nn.Module, steps: int) -> float:
    """The largest weight that the initial running statistics (mean 0, variance 1) of
    ``module``'s BatchNorm layers still carry after ``steps`` training steps:
    ``(1 - momentum) ** steps``. Eval-mode images are only meaningful once it is small."""
    momenta = [
        layer.momentum
        for layer in module.modules()
        if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm) and layer.momentum
    ]
    return max(((1.0 - momentum) ** steps for momentum in momenta), default=0.0)


def copy_file(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` atomically (a half-copied generator file never exists)."""
    with open(source, "rb") as src, atomic_file(Path(target), "wb") as dst:
        shutil.copyfileobj(src, dst, length=1 << 20)
