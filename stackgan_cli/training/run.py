"""Starting a run and resuming one: checks, run directory, then :class:`Trainer.fit`.

``start_training`` validates what the user asked for (dataset prepared, Stage-I generator for
Stage II, matching widths), creates the run directory with ``config.json`` and trains;
``resume_training`` rebuilds the run from ``checkpoints/last.pt`` (architecture and settings
from the checkpoint, never from the command line) and continues exactly where it stopped.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from stackgan_cli import paths
from stackgan_cli.console import warn
from stackgan_cli.data.prepared import PreparedDataset, load_prepared
from stackgan_cli.errors import StackGANError
from stackgan_cli.fsutil import atomic_write_text
from stackgan_cli.generator_file import load_generator_file
from stackgan_cli.models import ModelConfig
from stackgan_cli.training import checkpoint as ckpt
from stackgan_cli.training import distributed as dist_utils
from stackgan_cli.training.config import TrainConfig, default_run_name, resolve_model_dims
from stackgan_cli.training.loop import Trainer, TrainingInterrupted, TrainResult, copy_file
from stackgan_cli.training.plot import plot_losses


def dataset_source(name_or_path: str) -> str:
    """What to store for ``--dataset``: a dataset name as is, a path made absolute (the same
    rule as ``load_prepared``: a name has no path separator)."""
    if name_or_path not in (".", "..") and "/" not in name_or_path and os.sep not in name_or_path:
        return name_or_path
    return str(Path(name_or_path).expanduser().resolve())


def _text_dim(dataset: PreparedDataset) -> int:
    return int(dataset.split("train").embeddings.shape[2])


def _load_stage1(path: str, dataset: PreparedDataset) -> Any:
    bundle = load_generator_file(path, device="cpu")
    if bundle.stage != 1:
        raise StackGANError(
            f"{path} is a Stage-II generator; --stage1-ckpt needs a Stage-I one "
            "(the --out file or RUN_DIR/generator.pt of `stackgan train --stage 1`)"
        )
    if bundle.dataset is not None and bundle.dataset != dataset.name:
        warn(f"{path} was trained on {bundle.dataset!r}; Stage II trains on {dataset.name!r}")
    return bundle


def _new_run_dir(cfg: TrainConfig, dataset: PreparedDataset) -> Path:
    if cfg.run_dir:
        run_dir = Path(cfg.run_dir).expanduser().resolve()
    else:
        base = paths.runs_dir() / default_run_name(cfg.stage, dataset.name)
        run_dir, n = base, 1
        while run_dir.exists():
            n += 1
            run_dir = base.with_name(f"{base.name}-{n}")
    if (ckpt.checkpoints_dir(run_dir) / ckpt.LAST).exists() or (run_dir / "config.json").exists():
        raise StackGANError(
            f"{run_dir} already holds a run: continue it with `stackgan resume {run_dir}` "
            "or pick another --run-dir"
        )
    ckpt.checkpoints_dir(run_dir).mkdir(parents=True, exist_ok=True)
    return run_dir


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


def start_training(
    cfg: TrainConfig, *, preset: str | None, overrides: dict[str, int | None]
) -> TrainResult:
    """Train a new run described by ``cfg`` (run_dir empty = a fresh name under runs/).

    ``preset`` (None = birds, or for Stage II the Stage-I file's widths) and ``overrides``
    (gf_dim, df_dim, z_dim, condition_dim, r_num; None = not given) fix the ModelConfig.
    """
    ctx = dist_utils.init_distributed(cfg.device)
    trainer = None
    try:
        dataset = load_prepared(cfg.dataset)
        cfg = replace(cfg, dataset=dataset_source(cfg.dataset))
        stage1 = None
        if cfg.stage == 2:
            if not cfg.stage1_ckpt:
                raise StackGANError(
                    "Stage 2 refines a Stage-I generator: pass --stage1-ckpt FILE (the --out "
                    "file or RUN_DIR/generator.pt of `stackgan train --stage 1`)"
                )
            stage1 = _load_stage1(cfg.stage1_ckpt, dataset)
            cfg = replace(cfg, stage1_ckpt=str(Path(cfg.stage1_ckpt).expanduser().resolve()))
        dims = resolve_model_dims(
            preset=preset,
            overrides=overrides,
            text_dim=_text_dim(dataset),
            stage1=stage1.cfg.to_dict() if stage1 is not None else None,
            stage1_name=f"the Stage-I generator {cfg.stage1_ckpt}",
        )
        model_cfg = ModelConfig(**dims)
        if cfg.out:
            cfg = replace(cfg, out=str(Path(cfg.out).expanduser().resolve()))
        run_dir = _new_run_dir(cfg, dataset) if ctx.is_main else None
        run_dir = dist_utils.broadcast_object(ctx, run_dir)
        cfg = replace(cfg, run_dir=str(run_dir))
        trainer = Trainer(
            cfg,
            model_cfg,
            dataset,
            ctx,
            run_dir,
            stage1_state=stage1.generator.state_dict() if stage1 is not None else None,
        )
        if ctx.is_main:
            write_config_json(run_dir, cfg, model_cfg, trainer)
            (run_dir / "metrics.jsonl").touch()
        return trainer.fit()
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
    source = Path(from_file) if from_file else ckpt.checkpoints_dir(run_dir) / ckpt.LAST
    state = ckpt.load_checkpoint(source, run_dir)
    cfg = TrainConfig.from_dict(state["train_config"])
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
        trainer = Trainer(cfg, model_cfg, dataset, ctx, run_dir)
        trainer.load_state(state, source)
        if ctx.is_main:
            trainer.truncate_metrics()
            write_config_json(run_dir, cfg, model_cfg, trainer)
        if done >= cfg.epochs and not state["step"]:
            return _already_done(trainer)
        return trainer.fit()
    finally:
        trainer = None  # its DDP wrappers must be gone before their process group
        dist_utils.shutdown(ctx)


def _already_done(trainer: Trainer) -> TrainResult:
    """Nothing left to train: make sure the final files exist and report them."""
    out = Path(trainer.cfg.out) if trainer.cfg.out else None
    if trainer.ctx.is_main:
        if not trainer.generator_path.exists():
            trainer.write_generator_file()
        if out is not None and not out.exists():
            copy_file(trainer.generator_path, out)
        if not (trainer.run_dir / "losses.png").exists():
            plot_losses(trainer.metrics_path, trainer.run_dir / "losses.png")
    dist_utils.barrier(trainer.ctx)
    return TrainResult(
        run_dir=trainer.run_dir,
        generator_path=trainer.generator_path,
        epochs=trainer.sampler.epoch,
        global_step=trainer.global_step,
        out=out,
        already_complete=True,
    )
