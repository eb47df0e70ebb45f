"""Starting a run and resuming one: checks, the run directory and its owner, then the loop.

``start_training`` validates what the user asked for (options that fit together, dataset
prepared, Stage-I generator for Stage II, matching widths), creates the run directory with
``config.json`` and trains: a GAN :class:`Trainer`, or the trainer of a family that trains
encoders (``--arch damsm``: training/damsm_loop.py), chosen by the family's ``kind``.
``resume_training`` rebuilds the run from ``checkpoints/last.pt`` (architecture and settings
from the checkpoint, never from the command line) and continues exactly where it stopped.
Either holds the run directory's lock for the whole run, so that a second process on the same
run gets a one-line error instead of interleaving with the first.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from stackgan_cli import families, paths
from stackgan_cli.console import warn
from stackgan_cli.data.prepared import PreparedDataset, load_prepared
from stackgan_cli.errors import StackGANError, UsageError
from stackgan_cli.families import train_spec
from stackgan_cli.fsutil import atomic_write_text, exclusive_lock
from stackgan_cli.generator_file import load_generator_file
from stackgan_cli.models import ModelConfig
from stackgan_cli.training import checkpoint as ckpt
from stackgan_cli.training import distributed as dist_utils
from stackgan_cli.training.config import TrainConfig, default_run_name, resolve_model_dims
from stackgan_cli.training.loop import Trainer, TrainingInterrupted, TrainResult
from stackgan_cli.training.regimes import check_regime_options, require_tensorboard
from stackgan_cli.training.signals import StopRequest

DEFAULT_DATASET = "cub"
LOCK_FILE = ".lock"
ENCODER_WIDTHS = ("text_dim", "word_dim")  # widths only a run that trains encoders takes


def dataset_source(name_or_path: str) -> str:
    """What to store for ``--dataset``: a dataset name as is, a path made absolute (the same
    rule as ``load_prepared``: a name has no path separator)."""
    if name_or_path not in (".", "..") and "/" not in name_or_path and os.sep not in name_or_path:
        return name_or_path
    return str(Path(name_or_path).expanduser().resolve())


def default_dataset() -> str:
    """The dataset a run trains on when ``--dataset`` is not given: cub, once prepared."""
    if not (paths.prepared_dir(DEFAULT_DATASET) / "metadata.json").exists():
        raise StackGANError(
            f"no --dataset given and the default dataset {DEFAULT_DATASET} is not prepared: run "
            f"`stackgan prepare {DEFAULT_DATASET}`, or `stackgan prepare shapes` and pass "
            "--dataset shapes for the offline demo"
        )
    return DEFAULT_DATASET


def check_options(cfg: TrainConfig) -> None:
    """UsageError (exit 2) for options that do not fit together: the family that --arch and
    --stage name checks its own, then the regime's."""
    train_spec(cfg).load().check_train_options(cfg)
    if not 0.0 <= cfg.ema < 1.0:
        raise UsageError(f"--ema: the average's decay must be in [0, 1), got {cfg.ema}")
    if cfg.lr_g <= 0 or cfg.lr_d <= 0:
        raise UsageError("--lr-g/--lr-d: learning rates must be positive")
    check_regime_options(cfg)


@contextmanager
def owned(run_dir: Path, is_main: bool) -> Iterator[None]:
    """Hold ``run_dir``'s lock; ``is_main`` False (ranks > 0 of a torchrun job, whose rank 0
    holds it for them) skips it."""
    if not is_main:
        yield
        return
    busy = f"{run_dir} is in use by another stackgan train or resume"
    with exclusive_lock(run_dir / LOCK_FILE, busy):
        yield


def _text_dim(dataset: PreparedDataset) -> int:
    return int(dataset.split("train").embeddings.shape[2])


def _load_stage1(path: str, dataset: PreparedDataset, needed: str) -> Any:
    """The generator file of --stage1-ckpt, which must hold the family ``needed`` (a key)."""
    bundle = load_generator_file(path, device="cpu")
    if bundle.family.key != needed:
        raise StackGANError(
            f"{path} is a {bundle.family.label}; --stage1-ckpt needs a "
            f"{families.spec_named(needed).title} one "
            "(the --out file or RUN_DIR/generator.pt of `stackgan train --stage 1`)"
        )
    if bundle.dataset is not None and bundle.dataset != dataset.name:
        warn(f"{path} was trained on {bundle.dataset!r}; Stage II trains on {dataset.name!r}")
    return bundle


def _new_run_dir(cfg: TrainConfig, dataset: PreparedDataset) -> Path:
    """The run directory of a new run: ``--run-dir``, else a fresh name under runs/."""
    if cfg.run_dir:
        return Path(cfg.run_dir).expanduser().resolve()
    base = paths.runs_dir() / default_run_name(train_spec(cfg).run_prefix, dataset.name)
    run_dir, n = base, 1
    while run_dir.exists():
        n += 1
        run_dir = base.with_name(f"{base.name}-{n}")
    return run_dir


def _claim_new(run_dir: Path) -> None:
    """Make sure ``run_dir`` (whose lock is held) holds no run that can be continued and create
    its folders. A run that stopped before its first checkpoint (a full disk, kill -9) has
    nothing to resume from, so a new run takes its place."""
    if (ckpt.checkpoints_dir(run_dir) / ckpt.LAST).exists() or ckpt.list_snapshots(run_dir):
        raise StackGANError(
            f"{run_dir} already holds a run: continue it with `stackgan resume {run_dir}` "
            "or pick another --run-dir"
        )
    if (run_dir / "config.json").exists():
        warn(f"{run_dir} holds a run that stopped before its first checkpoint: starting afresh")
    ckpt.checkpoints_dir(run_dir).mkdir(parents=True, exist_ok=True)


def write_config_json(run_dir: Path, cfg: TrainConfig, model_cfg: ModelConfig, trainer: Trainer):
    """``RUN_DIR/config.json``: the resolved settings, for people and tools to read."""
    record = {
        "train": cfg.to_dict(),
        "model": model_cfg.to_dict(),
        "dataset": trainer.dataset_info(),
        "world_size": trainer.ctx.world_size,
        "device": str(trainer.device),
        "channels_last": trainer.channels_last,
        "amp": trainer.amp,
        "torch": torch.__version__,
        "written": _dt.datetime.now().isoformat(timespec="seconds"),
    }
    atomic_write_text(run_dir / "config.json", json.dumps(record, indent=2) + "\n")


def train(trainer: Trainer) -> TrainResult:
    """Run :meth:`Trainer.fit` with Ctrl-C/SIGTERM handling and the progress display."""
    with StopRequest(notify=trainer.ctx.is_main) as stop, trainer.progress_display() as progress:
        return trainer.fit(progress, stop)


def start_training(
    cfg: TrainConfig, *, preset: str | None, overrides: dict[str, int | None]
) -> TrainResult:
    """Train a new run described by ``cfg`` (run_dir empty = a fresh name under runs/;
    dataset None = :func:`default_dataset`).

    ``preset`` (None = birds, or for Stage II the Stage-I file's widths) and ``overrides``
    (gf_dim, df_dim, z_dim, condition_dim, r_num; None = not given) fix the ModelConfig.
    """
    check_options(cfg)
    if cfg.tensorboard:
        require_tensorboard()  # before the run directory exists
    spec = train_spec(cfg)
    overrides = dict(overrides)
    widths = {name: overrides.pop(name, None) for name in ENCODER_WIDTHS}
    encoders_cfg = None
    if spec.trains_generator:
        given = [name for name, value in widths.items() if value is not None]
        defaults = TrainConfig()
        if cfg.inception_weights or cfg.lr_encoder != defaults.lr_encoder:
            option = "--inception-weights" if cfg.inception_weights else "--lr-encoder"
            raise UsageError(f"{option}: only --arch damsm trains the DAMSM encoders")
        if given:
            raise UsageError(
                f"--{given[0].replace('_', '-')}: only --arch damsm trains a text encoder "
                "(the other architectures take their text widths from the dataset or --damsm)"
            )
    else:
        encoders_cfg = spec.load().model_config(preset, {**overrides, **widths})
    if cfg.inception_weights:
        weights = Path(cfg.inception_weights).expanduser().resolve()
        cfg = replace(cfg, inception_weights=str(weights))
    dataset_name = cfg.dataset or default_dataset()
    ctx = dist_utils.init_distributed(cfg.device)
    trainer = None
    try:
        dataset = load_prepared(dataset_name)
        cfg = replace(cfg, dataset=dataset_source(dataset_name))
        family_class = spec.load()
        stage1 = None
        if not spec.trains_generator:
            model_cfg = encoders_cfg
            if ctx.is_main:
                family_class.prefetch(cfg)  # downloads before the run directory exists
            dist_utils.barrier(ctx)
        elif family_class.nested_family is not None:
            stage1 = _load_stage1(cfg.stage1_ckpt, dataset, family_class.nested_family)
            cfg = replace(cfg, stage1_ckpt=str(Path(cfg.stage1_ckpt).expanduser().resolve()))
        if spec.trains_generator:
            dims = resolve_model_dims(
                preset=preset,
                overrides=overrides,
                text_dim=_text_dim(dataset),
                stage1=stage1.cfg.to_dict() if stage1 is not None else None,
                stage1_name=f"the Stage-I generator {cfg.stage1_ckpt}",
                default_preset=spec.default_preset,
            )
            model_cfg = ModelConfig(**{**dims, **family_class.model_fields(cfg)})
        if cfg.out:
            cfg = replace(cfg, out=str(Path(cfg.out).expanduser().resolve()))
        run_dir = _new_run_dir(cfg, dataset) if ctx.is_main else None
        run_dir = dist_utils.broadcast_object(ctx, run_dir)
        cfg = replace(cfg, run_dir=str(run_dir))
        with owned(run_dir, ctx.is_main):
            if ctx.is_main:
                _claim_new(run_dir)
            dist_utils.barrier(ctx)
            if spec.trains_generator:
                trainer = Trainer(
                    cfg,
                    model_cfg,
                    dataset,
                    ctx,
                    run_dir,
                    stage1_state=stage1.generator.state_dict() if stage1 is not None else None,
                )
            else:
                trainer = family_class(cfg, model_cfg, dataset, ctx, run_dir)
            if ctx.is_main:
                write_config_json(run_dir, cfg, model_cfg, trainer)
                (run_dir / "metrics.jsonl").write_bytes(b"")
            return train(trainer)
    finally:
        trainer = None  # its DDP wrappers must be gone before their process group
        dist_utils.shutdown(ctx)


def resume_training(
    run_dir: Path,
    *,
    epochs: int | None = None,
    from_file: Path | None = None,
    device: str | None = None,
) -> TrainResult:
    """Continue the run in ``run_dir`` from ``checkpoints/last.pt`` (or ``from_file``, e.g. an
    ``epoch_NNNN.pt`` snapshot) up to ``epochs`` completed epochs (default: the run's own
    total). Settings and architecture come from the checkpoint; ``device`` may move the run.
    """
    run_dir = Path(run_dir).expanduser().resolve()
    if not run_dir.is_dir():
        raise StackGANError(f"{run_dir} is not a run directory")
    with owned(run_dir, dist_utils.launched_rank() == 0):
        return _resume_owned(run_dir, epochs=epochs, from_file=from_file, device=device)


def _resume_owned(
    run_dir: Path, *, epochs: int | None, from_file: Path | None, device: str | None
) -> TrainResult:
    source = Path(from_file) if from_file else ckpt.checkpoints_dir(run_dir) / ckpt.LAST
    state = ckpt.load_checkpoint(source, run_dir, required=ckpt.COMMON_KEYS)
    cfg = TrainConfig.from_dict(state["train_config"])
    spec = train_spec(cfg)
    if spec.trains_generator:
        ckpt.check_keys(state, source, run_dir)
    model_cfg = ModelConfig.from_dict(state["model_config"])
    done = int(state["epoch"])
    if epochs is not None:
        if epochs < done or (epochs == done and state["step"]):
            where = TrainingInterrupted.where(done, int(state["step"]))
            raise StackGANError(
                f"--epochs {epochs} ends before the point {source} reached ({where}); "
                "pass a larger total"
            )
        cfg = replace(cfg, epochs=epochs)
    cfg = replace(cfg, run_dir=str(run_dir), device=device or cfg.device)

    ctx = dist_utils.init_distributed(cfg.device)
    trainer = None
    try:
        dataset = load_prepared(cfg.dataset)
        saved = state["dataset"]
        if dataset.fingerprint != saved["fingerprint"]:
            raise StackGANError(
                f"the dataset {cfg.dataset!r} changed since this run started (fingerprint "
                f"{saved['fingerprint'][:12]} then, {dataset.fingerprint[:12]} now); "
                "resuming would mix two datasets: start a new run instead"
            )
        if spec.trains_generator:
            trainer = Trainer(cfg, model_cfg, dataset, ctx, run_dir)
        else:
            family_class = spec.load()
            if ctx.is_main:
                family_class.prefetch(cfg)
            dist_utils.barrier(ctx)
            trainer = family_class.for_checkpoint(state, cfg, model_cfg, dataset, ctx, run_dir)
        trainer.load_state(state, source)
        if ctx.is_main:
            trainer.truncate_metrics()
            write_config_json(run_dir, cfg, model_cfg, trainer)
        if done >= cfg.epochs and not state["step"]:
            return trainer.finish(already_complete=True)
        return train(trainer)
    finally:
        trainer = None  # its DDP wrappers must be gone before their process group
        dist_utils.shutdown(ctx)
