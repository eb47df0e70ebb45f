"""The training loop of one run: steps, then once per logging point and per epoch the upkeep.

A :class:`Trainer` is built from a TrainConfig, a ModelConfig and a prepared dataset (see
``training/run.py`` for starting and resuming): its parts come from training/assembly.py, its
files are written by training/run_files.py and its health checks are training/health.py's. It
optionally loads a checkpoint's state, and :meth:`Trainer.fit` trains up to ``cfg.epochs``.
Rank 0 alone writes files and shows progress.

Losses stay on the device; they are read back only at logging points (every ``log_every``
steps and at each epoch end), where non-finite values stop the run before anything is saved.
"""

from __future__ import annotations

import math
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from stackgan_cli.errors import StackGANError
from stackgan_cli.families import family_for_training
from stackgan_cli.models import ModelConfig
from stackgan_cli.training import checkpoint as ckpt
from stackgan_cli.training import distributed as dist_utils
from stackgan_cli.training.assembly import (
    Execution,
    build_sampler,
    build_training_parts,
    restore_progress,
    seed_everything,
)
from stackgan_cli.training.config import SAMPLE_CAPTIONS, SAMPLE_NOISES, TrainConfig, lr_at
from stackgan_cli.training.health import ConditioningWatch, short_run_warnings
from stackgan_cli.training.progress import TrainProgress
from stackgan_cli.training.regimes import TensorBoardLog, describe_regime
from stackgan_cli.training.run_files import RunFiles
from stackgan_cli.training.samples import make_sample_sheet, write_sample_grid
from stackgan_cli.training.signals import StopRequest


class TrainingInterrupted(Exception):
    """Raised after a stop request once ``last.pt`` holds the state to continue from:
    ``epoch`` epochs completed and ``step`` steps of the next one."""

    def __init__(
        self,
        run_dir: Path,
        epoch: int,
        step: int,
        signal_name: str | None,
        main_process: bool = True,
    ) -> None:
        super().__init__(self.where(epoch, step))
        self.run_dir = run_dir
        self.epoch = epoch
        self.step = step
        self.signal_name = signal_name
        self.main_process = main_process  # rank 0 (or no torchrun): the one that reports

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
    main_process: bool = True  # rank 0 (or no torchrun): the one that reports
    file_label: ClassVar[str] = "generator file"  # what generator_path holds, for messages


class Trainer:
    """One run on one process: its parts (networks, optimizers, step, sampler), its files, and
    the bookkeeping that a checkpoint carries."""

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
        self.family = family_for_training(cfg, model_cfg)
        # Seeded per rank: the noise and CA draws differ across ranks; DDP broadcasts rank 0's
        # initial weights, so the networks start equal everywhere.
        seed_everything(cfg.seed + ctx.rank)
        self.execution = Execution.for_config(cfg, self.device)
        self.parts = build_training_parts(
            cfg, self.family, self.device, self.execution, ctx=ctx, stage1_state=stage1_state
        )
        self.netG, self.netDs = self.parts.netG, self.parts.netDs
        self.loss_names = self.parts.loss_names
        train = dataset.split("train")
        self.sampler = build_sampler(
            self.family,
            train,
            batch_size=cfg.batch_size,
            device=self.device,
            seed=cfg.seed,
            channels_last=self.execution.channels_last,
            rank=ctx.rank,
            world_size=ctx.world_size,
            name=repr(dataset.name),
        )
        # one's own folder prepared with --test-fraction 0 has a train split alone
        test = dataset.split("test") if "test" in dataset.split_names else train
        sheet_split = test if len(test) > 0 else train
        self.sheet = make_sample_sheet(
            sheet_split.captions,
            sheet_split.embeddings,
            family=self.family,
            seed=cfg.seed,
            rows=SAMPLE_CAPTIONS,
            cols=SAMPLE_NOISES,
        )
        self.files = RunFiles(self.run_dir, ctx)
        self.conditioning = ConditioningWatch(cfg.kl_coeff)
        self.global_step = 0
        self.elapsed = 0.0  # training seconds over all sessions of this run
        # --tensorboard: event files beside the metrics (rank 0 writes them).
        self.tensorboard = TensorBoardLog(self.run_dir) if cfg.tensorboard and ctx.is_main else None

    @property
    def channels_last(self) -> bool:
        return self.execution.channels_last

    @property
    def amp(self) -> bool:
        return self.execution.amp

    # --- state ---------------------------------------------------------------------------
    def dataset_info(self) -> dict[str, str]:
        """Name, source (as given to --dataset) and fingerprint of the training data."""
        return {
            "name": self.dataset.name,
            "source": self.cfg.dataset,
            "fingerprint": self.dataset.fingerprint,
        }

    def checkpoint(self, rng: list[dict[str, Any]]) -> dict[str, Any]:
        """Everything :meth:`load_state` needs to continue exactly from here."""
        parts = self.parts
        return ckpt.make_checkpoint(
            stage=self.cfg.stage,
            family=self.family.key,
            generator=parts.netG.state_dict(),
            discriminators=[netD.state_dict() for netD in parts.netDs],
            optimizer_g=parts.opt_g.state_dict(),
            optimizers_d=[opt.state_dict() for opt in parts.opt_ds],
            epoch=self.sampler.epoch,
            step=self.sampler.step,
            global_step=self.global_step,
            sampler=self.sampler.state_dict(),
            rng=rng,
            amp=self.amp,
            generator_average=parts.average.state_dict() if parts.average is not None else None,
            train_config=self.cfg.to_dict(),
            model_config=self.model_cfg.to_dict(),
            dataset=self.dataset_info(),
            world_size=self.ctx.world_size,
            metrics_bytes=self.files.metrics_bytes,
            elapsed=self.elapsed,
        )

    def load_state(self, state: dict[str, Any], source: Path) -> None:
        """Restore networks, optimizers, sampler position, counters and random states."""
        parts = self.parts
        try:
            if len(state["discriminators"]) != len(parts.netDs):
                raise ValueError(
                    f"{len(state['discriminators'])} discriminators, the run has {len(parts.netDs)}"
                )
            parts.netG.load_state_dict(state["generator"])
            parts.opt_g.load_state_dict(state["optimizer_g"])
            for netD, opt, saved_d, saved_opt in zip(
                parts.netDs, parts.opt_ds, state["discriminators"], state["optimizers_d"],
                strict=True,
            ):  # fmt: skip
                netD.load_state_dict(saved_d)
                opt.load_state_dict(saved_opt)
            self.sampler.load_state_dict(state["sampler"])
            if parts.average is not None:
                saved_average = state.get("generator_average")
                if saved_average is None:
                    raise ValueError("it holds no average of the generator's parameters")
                parts.average.load_state_dict(saved_average)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise StackGANError(
                f"{source} does not fit this run's networks or data: {exc}"
            ) from None
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

    # --- files ---------------------------------------------------------------------------
    def save(self, progress: TrainProgress, *, epoch_end: bool) -> None:
        """last.pt (+ snapshot and generator.pt at epoch ends). Collective: every rank calls."""
        rng = dist_utils.gather_objects(self.ctx, ckpt.capture_rng(self.device))
        done = self.sampler.epoch
        snapshot = done if epoch_end and done % self.cfg.snapshot_every == 0 else None
        state = self.checkpoint(rng) if self.ctx.is_main else None
        with self.files.writing("the checkpoint"):
            if self.ctx.is_main:
                self.files.write_checkpoint(state)
        self.files.last_saved = (self.sampler.epoch, self.sampler.step)
        if snapshot is not None:
            path = self.files.snapshot_path(snapshot)
            with self.files.writing(f"the snapshot {path.name}"):
                if self.ctx.is_main:
                    self.files.write_checkpoint(state, path)
                    progress.message(f"snapshot: {path}")
        with self.files.writing(f"the generator file {self.files.generator_path.name}"):
            if self.ctx.is_main:
                self.write_generator_file()

    def _averaged(self) -> AbstractContextManager:
        """The generator's averaged parameters in place for the duration (when it keeps one)."""
        average = self.parts.average
        return average.applied() if average is not None else nullcontext()

    def write_generator_file(self) -> None:
        """generator.pt: the current generator (its parameter average, if kept) with the
        dataset's text encoder."""
        with self._averaged():
            self.files.write_generator(
                self.netG,
                self.family,
                text_encoder=self.family.text_encoder_entry(self.dataset),
                dataset=self.dataset.name,
                epoch=self.sampler.epoch,
                g_norm=self.cfg.g_norm,
            )

    def write_samples(self, progress: TrainProgress) -> None:
        """samples/epoch_NNNN.png: the fixed captions and noise through the current generator."""
        path = self.files.sample_path(self.sampler.epoch)
        with self._averaged():
            write_sample_grid(
                path,
                self.netG,
                self.sheet,
                family=self.family,
                device=self.device,
                autocast=self.parts.step.autocast,
            )
        if self.tensorboard is not None:
            self.tensorboard.image(path, self.global_step)
        progress.message(f"samples: {path}")

    # --- logging -------------------------------------------------------------------------
    def _flush_window(self, progress: TrainProgress, *, epoch_end: bool) -> None:
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
        # The epoch these steps belong to (the sampler has already moved past an epoch's end).
        epoch = self.sampler.epoch - 1 if epoch_end else self.sampler.epoch
        bad = (~torch.isfinite(values)).any(dim=1).nonzero()
        if len(bad) > 0:
            first = int(bad[0])
            step = self.global_step - count + first + 1
            names = ", ".join(
                f"{name}={values[first, k].item():g}"
                for k, name in enumerate(self.loss_names)
                if not math.isfinite(values[first, k].item())
            )
            raise StackGANError(
                f"training stopped: a loss became non-finite ({names}) at step {step} "
                f"(epoch {epoch + 1}) under {describe_regime(self.cfg)}; "
                f"{self.files.last_good('is left untouched')}. Lower --lr-g/--lr-d, try other "
                "settings (e.g. the official --loss bce, --optimizer adam) or check the data, "
                "then start a new run"
            )
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
                "lr_g": self.parts.opt_g.param_groups[0]["lr"],
                "lr_d": self.parts.opt_ds[0].param_groups[0]["lr"],
                "images_per_s": images / seconds if seconds > 0 else 0.0,
                "time": round(self.elapsed, 3),
            }
        )
        with self.files.writing("metrics.jsonl"):
            if self.ctx.is_main:
                self.files.append_metrics(record)
        if self.ctx.is_main:
            if self.tensorboard is not None:
                self.tensorboard.scalars(record, self.global_step)
            self.conditioning.check(record["kl"], self.global_step)
        progress.update(record, epoch_end=epoch_end)

    def _set_learning_rates(self) -> None:
        """The learning rates of the epoch the sampler is in (halved every lr_decay_every)."""
        epoch, cfg = self.sampler.epoch, self.cfg
        for group in self.parts.opt_g.param_groups:
            group["lr"] = lr_at(cfg.lr_g, epoch, cfg.lr_decay_every)
        for opt in self.parts.opt_ds:
            for group in opt.param_groups:
                group["lr"] = lr_at(cfg.lr_d, epoch, cfg.lr_decay_every)

    # --- the loop ------------------------------------------------------------------------
    def progress_display(self) -> TrainProgress:
        """The display :meth:`fit` reports to (rank 0 only shows anything)."""
        sampler = self.sampler
        spe = sampler.steps_per_epoch
        return TrainProgress(
            title=self.family.title,
            epochs=self.cfg.epochs,
            start_epoch=sampler.epoch + 1,
            total_steps=self.cfg.epochs * spe,
            done_steps=sampler.epoch * spe + sampler.step,
            global_batch=sampler.global_batch,
            enabled=self.ctx.is_main,
        )

    def fit(self, progress: TrainProgress, stop: StopRequest) -> TrainResult:
        """Train from the current position up to ``cfg.epochs`` completed epochs.

        ``progress`` shows what happens; ``stop.requested`` (Ctrl-C, SIGTERM) ends the run
        with a saved ``last.pt`` and :class:`TrainingInterrupted`.
        """
        cfg, ctx, sampler, parts = self.cfg, self.ctx, self.sampler, self.parts
        self._window = torch.zeros(cfg.log_every, len(self.loss_names), device=self.device)
        self._window_len = 0
        # The stop flag is local to each process; under DDP the ranks agree on it at logging
        # points (and after every step on the CPU, where that collective is cheap).
        stop_every = 1 if not ctx.enabled or self.device.type == "cpu" else cfg.log_every
        processes = f" x {ctx.world_size} processes" if ctx.enabled else ""
        progress.message(
            f"{self.family.title} on {self.dataset.name} ({sampler.num_images} images): "
            f"{sampler.steps_per_epoch} steps of {cfg.batch_size}{processes} per epoch, epochs "
            f"{sampler.epoch + 1}-{cfg.epochs}, {self.device}; run directory {self.run_dir}"
        )
        self._set_learning_rates()
        if self.tensorboard is not None:
            self.tensorboard.start(self.global_step)
        self._window_start = time.perf_counter()
        while sampler.epoch < cfg.epochs:
            losses = parts.step(sampler.next_batch())
            if parts.average is not None:
                parts.average.update()
            self._window[self._window_len].copy_(losses)
            self._window_len += 1
            self.global_step += 1
            epoch_end = sampler.step == 0
            progress.advance(sampler.epoch if epoch_end else sampler.epoch + 1)

            # Upkeep: metrics, then at an epoch's end the checkpoint and samples, then stopping.
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

    def _end_epoch(self, progress: TrainProgress) -> None:
        """Checkpoint, samples every ``sample_every`` epochs, the next epoch's learning rates."""
        done = self.sampler.epoch
        self.save(progress, epoch_end=True)
        if done % self.cfg.sample_every == 0 or done == self.cfg.epochs:
            with self.files.writing("the sample grid"):
                if self.ctx.is_main:
                    self.write_samples(progress)
        self._set_learning_rates()
        if self.tensorboard is not None:
            self.tensorboard.flush()
        self._window_start = time.perf_counter()

    def finish(self, *, already_complete: bool) -> TrainResult:
        """The final files (generator file, loss plot, the --out copy) and the result. Used at
        the end of training and by a resume that finds nothing left to train."""
        out = Path(self.cfg.out) if self.cfg.out else None
        with self.files.writing("the final files"):
            if self.ctx.is_main:
                if not self.files.generator_path.exists():
                    self.write_generator_file()
                self.files.write_final(f"{self.family.title} on {self.dataset.name}", out)
                if self.tensorboard is not None:
                    self.tensorboard.close()
        if self.ctx.is_main and not already_complete:
            short_run_warnings(self.netG, self.global_step, self.cfg.ema)
        # Ranks leave together (the collective in writing): one that tears down its process
        # group while rank 0 still writes the final files has been seen to abort in gloo.
        return TrainResult(
            run_dir=self.run_dir,
            generator_path=self.files.generator_path,
            epochs=self.sampler.epoch,
            global_step=self.global_step,
            out=out,
            already_complete=already_complete,
            main_process=self.ctx.is_main,
        )
