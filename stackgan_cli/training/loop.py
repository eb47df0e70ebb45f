"""The training loop of one run: steps, then once per logging point and per epoch the upkeep.

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
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stackgan_cli.console import warn
from stackgan_cli.data.sampler import DeviceBatchSampler
from stackgan_cli.data.wrong_sampler import WrongImageSampler
from stackgan_cli.errors import StackGANError
from stackgan_cli.fsutil import copy_file
from stackgan_cli.generator_file import save_generator_file
from stackgan_cli.models import ModelConfig
from stackgan_cli.models.losses import adversarial_loss
from stackgan_cli.training import checkpoint as ckpt
from stackgan_cli.training import distributed as dist_utils
from stackgan_cli.training.config import SAMPLE_CAPTIONS, SAMPLE_NOISES, TrainConfig, lr_at
from stackgan_cli.training.diffaugment import DiffAugment
from stackgan_cli.training.ema import ParameterAverage
from stackgan_cli.training.family import family_for
from stackgan_cli.training.network_options import apply_network_options
from stackgan_cli.training.plot import plot_losses
from stackgan_cli.training.progress import TrainProgress
from stackgan_cli.training.regimes import TensorBoardLog, apply_init, describe_regime
from stackgan_cli.training.samples import make_sample_sheet, write_sample_grid
from stackgan_cli.training.signals import StopRequest
from stackgan_cli.training.step import GANStep, loss_names, make_optimizers, prepare_modules


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


def resolve_channels_last(cfg: TrainConfig, device: torch.device) -> bool:
    """The configured memory format; ``None`` means channels_last on CUDA only."""
    if cfg.channels_last is None:
        return device.type == "cuda"
    return bool(cfg.channels_last)


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global random streams."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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
        self.family = family_for(cfg)
        self.amp = cfg.amp and self.device.type == "cuda"  # the CPU always trains in float32
        # Seeded per rank: the noise and CA draws differ across ranks; DDP broadcasts rank 0's
        # initial weights, so the networks start equal everywhere.
        seed_everything(cfg.seed + ctx.rank)
        self._build_networks(stage1_state)
        self._build_data()
        self.global_step = 0
        self.elapsed = 0.0  # training seconds over all sessions of this run
        self.metrics_bytes = 0
        self.last_saved: tuple[int, int] | None = None  # (epoch, step) of last.pt
        # --tensorboard: event files beside the metrics (rank 0 writes them).
        self.tensorboard = TensorBoardLog(self.run_dir) if cfg.tensorboard and ctx.is_main else None

    def _build_networks(self, stage1_state: dict[str, torch.Tensor] | None) -> None:
        """Generator, discriminators, their fast paths, DDP wrappers, optimizers, the step."""
        cfg, cuda = self.cfg, self.device.type == "cuda"
        if cuda:
            torch.backends.cudnn.benchmark = True
        self.netG, self.netDs = self.family.build(self.model_cfg, stage1_state)
        # --init other than official; the frozen Stage-I generator of Stage II keeps its weights.
        apply_init(cfg.init, self.netG, *self.netDs, skip=(getattr(self.netG, "STAGE1_G", None),))
        # --g-norm / --d-norm / --d-dropout (nothing happens with the official defaults).
        apply_network_options(cfg, self.netG, self.netDs)
        for module in (self.netG, *self.netDs):
            module.to(self.device).train()
        self.channels_last = resolve_channels_last(cfg, self.device)
        prepare_modules(
            self.netG,
            self.netDs,
            channels_last=self.channels_last,
            compile=cfg.compile,
            fused_upsample=cfg.fast_layers,
            gemm_convs=cfg.fast_layers and not cuda,
            gemm_options=self.family.cpu_gemm,
        )
        self.opt_g, self.opt_ds = make_optimizers(
            self.netG,
            self.netDs,
            lr_g=cfg.lr_g,
            lr_d=cfg.lr_d,
            device=self.device,
            optimizer=cfg.optimizer,
            betas=(cfg.beta1, cfg.beta2),
        )
        self.average = ParameterAverage(self.netG, cfg.ema) if cfg.ema > 0 else None
        self.step_fn = GANStep(
            self.family,
            self.netG,
            self.netDs,
            self.opt_g,
            self.opt_ds,
            loss=adversarial_loss(cfg.loss),
            kl_coeff=cfg.kl_coeff,
            gp_weight=cfg.gp_weight,
            n_critic=cfg.n_critic,
            augment=DiffAugment(cfg.diffaugment) if cfg.diffaugment else None,
            r1=cfg.r1,
            z_dim=self.model_cfg.z_dim,
            device=self.device,
            amp=self.amp,
            ddp_g=dist_utils.wrap_ddp(self.netG, self.ctx),
            ddp_ds=[
                dist_utils.wrap_ddp(self.family.encoder(netD), self.ctx) for netD in self.netDs
            ],
        )
        self.loss_names = loss_names(
            self.family,
            len(self.netDs),
            gradient_penalty=self.step_fn.loss.gradient_penalty,
            r1=cfg.r1 > 0,
        )

    def _build_data(self) -> None:
        """The device-resident batch sampler and the fixed inputs of the sample grids."""
        cfg, ctx, dataset = self.cfg, self.ctx, self.dataset
        train = dataset.split("train")
        if len(train) < cfg.batch_size * ctx.world_size:
            raise StackGANError(
                f"--batch-size {cfg.batch_size} x {ctx.world_size} process(es) is more than the "
                f"{len(train)} training images of {dataset.name!r}"
            )
        # v2 draws a wrong image of another class per sample (data/wrong_sampler.py).
        sampler_class, sampler_args = DeviceBatchSampler, ()
        if self.family.wrong_images:
            sampler_class, sampler_args = WrongImageSampler, (train.class_ids,)
        self.sampler = sampler_class(
            train.images(self.family.load_size),
            train.embeddings,
            *sampler_args,
            image_size=self.family.image_size,
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
            z_dim=self.model_cfg.z_dim,
            condition_dim=self.model_cfg.condition_dim,
            seed=cfg.seed,
            rows=SAMPLE_CAPTIONS,
            cols=SAMPLE_NOISES,
        )

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

    def checkpoint(self, rng: list[dict[str, Any]]) -> dict[str, Any]:
        """Everything :meth:`load_state` needs to continue exactly from here."""
        return ckpt.make_checkpoint(
            stage=self.cfg.stage,
            generator=self.netG.state_dict(),
            discriminators=[netD.state_dict() for netD in self.netDs],
            optimizer_g=self.opt_g.state_dict(),
            optimizers_d=[opt.state_dict() for opt in self.opt_ds],
            epoch=self.sampler.epoch,
            step=self.sampler.step,
            global_step=self.global_step,
            sampler=self.sampler.state_dict(),
            rng=rng,
            amp=self.amp,
            generator_average=self.average.state_dict() if self.average is not None else None,
            train_config=self.cfg.to_dict(),
            model_config=self.model_cfg.to_dict(),
            dataset=self.dataset_info(),
            world_size=self.ctx.world_size,
            metrics_bytes=self.metrics_bytes,
            elapsed=self.elapsed,
        )

    def load_state(self, state: dict[str, Any], source: Path) -> None:
        """Restore networks, optimizers, sampler position, counters and random states."""
        try:
            if len(state["discriminators"]) != len(self.netDs):
                raise ValueError(
                    f"{len(state['discriminators'])} discriminators, the run has {len(self.netDs)}"
                )
            self.netG.load_state_dict(state["generator"])
            self.opt_g.load_state_dict(state["optimizer_g"])
            for netD, opt, saved_d, saved_opt in zip(
                self.netDs, self.opt_ds, state["discriminators"], state["optimizers_d"], strict=True
            ):
                netD.load_state_dict(saved_d)
                opt.load_state_dict(saved_opt)
            self.sampler.load_state_dict(state["sampler"])
            if self.average is not None:
                saved_average = state.get("generator_average")
                if saved_average is None:
                    raise ValueError("it holds no average of the generator's parameters")
                self.average.load_state_dict(saved_average)
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
            seed_everything(self.cfg.seed + self.ctx.rank + 1_000_003 * self.global_step)
        self.last_saved = (self.sampler.epoch, self.sampler.step)

    # --- files ---------------------------------------------------------------------------
    @contextmanager
    def _writing(self, what: str) -> Iterator[None]:
        """Turn a failed write (disk full, permissions...) into one line that says what failed
        and where the run can continue from. Collective: every rank learns of rank 0's failure."""
        failure: OSError | None = None
        try:
            yield
        except OSError as exc:
            failure = exc
        if dist_utils.any_rank(self.ctx, failure is not None):
            reason = f" ({failure.strerror or failure})" if failure is not None else ""
            where = self._last_good("is intact")
            if self.last_saved is not None:
                where += f" and `stackgan resume {self.run_dir}` continues from it once the "
                where += "problem is fixed (e.g. there is space again)"
            raise StackGANError(
                f"training stopped: writing {what} failed{reason}; {where}"
            ) from None

    def _last_good(self, state: str) -> str:
        """The last good checkpoint and its position, then ``state``, for messages."""
        if self.last_saved is None:
            return "no checkpoint was written yet (the first epoch did not finish)"
        epoch, step = self.last_saved
        position = f"after epoch {epoch}" + (f", step {step}" if step else "")
        return f"the last good checkpoint, {self.checkpoints / ckpt.LAST} ({position}), {state}"

    def save(self, progress: TrainProgress, *, epoch_end: bool) -> None:
        """last.pt (+ snapshot and generator.pt at epoch ends). Collective: every rank calls."""
        rng = dist_utils.gather_objects(self.ctx, ckpt.capture_rng(self.device))
        with self._writing("the checkpoint"):
            if self.ctx.is_main:
                state = self.checkpoint(rng)
                ckpt.save_checkpoint(state, self.checkpoints / ckpt.LAST)
                epochs_done = self.sampler.epoch
                if epoch_end and epochs_done % self.cfg.snapshot_every == 0:
                    path = self.checkpoints / ckpt.snapshot_name(epochs_done)
                    ckpt.save_checkpoint(state, path)
                    progress.message(f"snapshot: {path}")
                self.write_generator_file()
        self.last_saved = (self.sampler.epoch, self.sampler.step)

    def _averaged(self) -> AbstractContextManager:
        """The generator's averaged parameters in place for the duration (when it keeps one)."""
        return self.average.applied() if self.average is not None else nullcontext()

    def write_generator_file(self) -> None:
        """generator.pt: the current generator (its parameter average, if kept) with the
        dataset's text encoder."""
        with self._averaged():
            save_generator_file(
                self.generator_path,
                self.netG,
                self.model_cfg,
                stage=self.cfg.stage if self.cfg.arch == "v1" else None,
                text_encoder=self.dataset.text_encoder_dict(),
                dataset=self.dataset.name,
                epoch=self.sampler.epoch,
                g_norm=self.cfg.g_norm,
            )

    def write_samples(self, progress: TrainProgress) -> None:
        """samples/epoch_NNNN.png: the fixed captions and noise through the current generator."""
        path = self.run_dir / "samples" / f"epoch_{self.sampler.epoch:04d}.png"
        with self._averaged():
            write_sample_grid(
                path,
                self.netG,
                self.sheet,
                family=self.family,
                device=self.device,
                autocast=self.step_fn.autocast,
            )
        if self.tensorboard is not None:
            self.tensorboard.image(path, self.global_step)
        progress.message(f"samples: {path}")

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
                f"{self._last_good('is left untouched')}. Lower --lr-g/--lr-d, try other "
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
                "lr_g": self.opt_g.param_groups[0]["lr"],
                "lr_d": self.opt_ds[0].param_groups[0]["lr"],
                "images_per_s": images / seconds if seconds > 0 else 0.0,
                "time": round(self.elapsed, 3),
            }
        )
        if self.ctx.is_main:
            self._append_metrics(record)
            if self.tensorboard is not None:
                self.tensorboard.scalars(record, self.global_step)
            self._check_conditioning(record["kl"])
        progress.update(record, epoch_end=epoch_end)

    def _check_conditioning(self, kl: float) -> None:
        """Warn once per session when the conditioning has collapsed onto its prior."""
        if self._collapse_warned or not conditioning_collapsed(
            kl, self.global_step, self.cfg.kl_coeff
        ):
            return
        self._collapse_warned = True
        warn(
            f"at step {self.global_step} the KL term is {kl:.1e}: conditioning augmentation "
            "has collapsed onto its prior, so the generator no longer sees the text (every "
            "prompt gives the same images) and it will not recover. The discriminator learned "
            "to tell matching from mismatched captions too slowly to hold off the KL term "
            f"(--kl-coeff {self.cfg.kl_coeff:g}), as happens with --d-norm none or spectral. "
            "Stop, and start a new run with the official --d-norm batch or a smaller "
            "--kl-coeff (e.g. 0.1)"
        )

    def _set_learning_rates(self) -> None:
        """The learning rates of the epoch the sampler is in (halved every lr_decay_every)."""
        epoch, cfg = self.sampler.epoch, self.cfg
        for group in self.opt_g.param_groups:
            group["lr"] = lr_at(cfg.lr_g, epoch, cfg.lr_decay_every)
        for opt in self.opt_ds:
            for group in opt.param_groups:
                group["lr"] = lr_at(cfg.lr_d, epoch, cfg.lr_decay_every)

    # --- the loop ------------------------------------------------------------------------
    def progress_display(self) -> TrainProgress:
        """The display :meth:`fit` reports to (rank 0 only shows anything)."""
        sampler = self.sampler
        spe = sampler.steps_per_epoch
        return TrainProgress(
            title=self.family.name,
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
        cfg, ctx, sampler = self.cfg, self.ctx, self.sampler
        self._window = torch.zeros(cfg.log_every, len(self.loss_names), device=self.device)
        self._window_len = 0
        self._collapse_warned = False
        # The stop flag is local to each process; under DDP the ranks agree on it at logging
        # points (and after every step on the CPU, where that collective is cheap).
        stop_every = 1 if not ctx.enabled or self.device.type == "cpu" else cfg.log_every
        processes = f" x {ctx.world_size} processes" if ctx.enabled else ""
        progress.message(
            f"{self.family.name} on {self.dataset.name} ({sampler.num_images} images): "
            f"{sampler.steps_per_epoch} steps of {cfg.batch_size}{processes} per epoch, epochs "
            f"{sampler.epoch + 1}-{cfg.epochs}, {self.device}; run directory {self.run_dir}"
        )
        self._set_learning_rates()
        if self.tensorboard is not None:
            self.tensorboard.start(self.global_step)
        self._window_start = time.perf_counter()
        while sampler.epoch < cfg.epochs:
            batch = sampler.next_batch()  # (real, text), or (real, text, wrong) for v2
            losses = self.step_fn(*batch)
            if self.average is not None:
                self.average.update()
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
            with self._writing("the sample grid"):
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
        with self._writing("the final files"):
            if self.ctx.is_main:
                if not self.generator_path.exists():
                    self.write_generator_file()
                plot_losses(
                    self.metrics_path,
                    self.run_dir / "losses.png",
                    title=f"{self.family.name} on {self.dataset.name}",
                )
                if out is not None:
                    copy_file(self.generator_path, out)
                if self.tensorboard is not None:
                    self.tensorboard.close()
        if self.ctx.is_main:
            stale = initial_batchnorm_share(self.netG, self.global_step)
            if stale > STALE_BATCHNORM_SHARE and not already_complete:
                warn(
                    f"only {self.global_step} training steps: the generator's BatchNorm running "
                    f"statistics are still {stale:.0%} their initial values, so sample grids and "
                    "`stackgan generate` (eval mode) may look flat and grey; train for more steps"
                )
            initial = self.cfg.ema**self.global_step if self.average is not None else 0.0
            if initial > STALE_BATCHNORM_SHARE and not already_complete:
                warn(
                    f"only {self.global_step} training steps: the generator's moving average "
                    f"(--ema {self.cfg.ema:g}) still holds {initial:.0%} of its initial random "
                    "weights, and samples and generator.pt use it; train for more steps or pass "
                    "a smaller --ema (0: none)"
                )
        # Ranks leave together (the collective in _writing): one that tears down its process
        # group while rank 0 still writes the final files has been seen to abort in gloo.
        return TrainResult(
            run_dir=self.run_dir,
            generator_path=self.generator_path,
            epochs=self.sampler.epoch,
            global_step=self.global_step,
            out=out,
            already_complete=already_complete,
            main_process=self.ctx.is_main,
        )


STALE_BATCHNORM_SHARE = 0.01

# Conditioning collapse: the KL term of conditioning augmentation (mean over the batch and
# the condition's dimensions) below COLLAPSED_KL after COLLAPSE_MIN_STEPS steps. Healthy
# Stage-I shapes runs start near 3e-3 and grow; runs whose discriminator never learned the text
# match fall below 1e-4 within about 40 steps and stay there. It is permanent: once every
# pre-activation of the layer's ReLU is negative, mu = logvar = 0 for every caption and no
# gradient reaches the layer (benchmarks/REGIMES.md).
COLLAPSED_KL = 1e-4
COLLAPSE_MIN_STEPS = 100


def conditioning_collapsed(kl: float, step: int, kl_coeff: float) -> bool:
    """Whether a logged KL term ``kl`` at ``step`` means that mu and sigma of conditioning
    augmentation sit on the N(0, I) prior for every caption, so the condition c carries no
    text. Only meaningful when the KL term is trained (``kl_coeff`` > 0)."""
    return kl_coeff > 0 and step >= COLLAPSE_MIN_STEPS and kl < COLLAPSED_KL


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
