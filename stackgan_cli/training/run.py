"""Starting a run and resuming one: checks, the run directory and its owner, then the loop.

``start_training`` validates what the user asked for (options that fit together, dataset
prepared, Stage-I generator for Stage II, matching widths), creates the run directory with
``config.json`` and trains: a GAN :class:`Trainer`, or the trainer of a family that trains
encoders (``--arch damsm``: training/damsm_loop.py), chosen by the family's ``kind``.
``resume_training`` rebuilds the run from ``checkpoints/last.pt`` (architecture and settings
from the checkpoint, never from the command line) and continues exactly where it stopped.
Either holds the run directory's lock for the whole run, so that a second process on the same
run gets a one-line error instead of interleaving with the first.

A run folder holds one run. A new run goes into a folder that does not exist yet, an empty one,
or one whose run stopped before its first checkpoint, never into a folder of other files; a
resume continues from a checkpoint of the run its folder holds (same family, widths and
dataset as its ``config.json``), and writes ``--out`` only from the folder that started the
run: a copy of the folder (``cp -a``) trains on in its own folder and leaves the original's
``--out`` file alone. The lock is taken only in a run's folder or one being made into a run.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from stackgan_cli import families, paths
from stackgan_cli.console import warn
from stackgan_cli.damsm_file import check_same_damsm, load_damsm_once
from stackgan_cli.data.damsm_conditioned import condition_on_damsm
from stackgan_cli.data.prepared import PreparedDataset, load_prepared
from stackgan_cli.errors import StackGANError, UsageError
from stackgan_cli.families import FamilySpec, train_spec
from stackgan_cli.families.registry import FAMILY_OPTIONS, users_of
from stackgan_cli.fsutil import atomic_write_text, exclusive_lock, write_problem
from stackgan_cli.generator_file import load_generator_file
from stackgan_cli.models import ModelConfig
from stackgan_cli.text.damsm_sentences import DAMSMSentenceEncoder
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


def non_finite_option(cfg: TrainConfig) -> tuple[str, float] | None:
    """The first number of ``cfg`` that is infinite or NaN, as (its option, its value)."""
    for field in dataclasses.fields(cfg):
        value = getattr(cfg, field.name)
        if isinstance(value, float) and not math.isfinite(value):
            return f"--{field.name.replace('_', '-')}", value
    return None


def check_options(cfg: TrainConfig) -> None:
    """UsageError (exit 2) for options that do not fit together: a number that is not finite,
    then the family that --arch and --stage name checks its own, then the options that only
    other families read, then the regime's."""
    non_finite = non_finite_option(cfg)
    if non_finite is not None:
        option, value = non_finite
        raise UsageError(f"{option} {value}: must be a finite number")
    spec = train_spec(cfg)
    spec.load().check_train_options(cfg)
    recipe = TrainConfig.for_arch(cfg.arch)
    for name, option in FAMILY_OPTIONS.items():
        if name not in spec.options and getattr(cfg, name) != getattr(recipe, name):
            users = " or ".join(dict.fromkeys(f"--arch {user.arch}" for user in users_of(name)))
            raise UsageError(f"{option}: only {users} uses it, not {spec.title}")
    if not 0.0 <= cfg.ema < 1.0:
        raise UsageError(f"--ema: the average's decay must be in [0, 1), got {cfg.ema}")
    if cfg.lr_g <= 0 or cfg.lr_d <= 0:
        raise UsageError("--lr-g/--lr-d: learning rates must be positive")
    check_regime_options(cfg)


def check_widths(spec: FamilySpec, overrides: dict[str, int | None]) -> None:
    """UsageError naming the first width option (``overrides``: gf_dim, df_dim...; None = not
    given) below what the networks of the family ``spec`` take."""
    for name, value in overrides.items():
        least = spec.min_widths.get(name, 1)
        if value is not None and value < least:
            raise UsageError(
                f"--{name.replace('_', '-')} {value}: {spec.title} networks take at least {least}"
            )


def run_config(folder: Path) -> dict[str, Any] | None:
    """``folder/config.json`` when it is a run's (a JSON object with its "train" and "model"
    settings), else None."""
    try:
        data = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and all(isinstance(data.get(k), dict) for k in ("train", "model")):
        return data
    return None


def _has_checkpoint(folder: Path) -> bool:
    return (ckpt.checkpoints_dir(folder) / ckpt.LAST).exists() or bool(ckpt.list_snapshots(folder))


def is_run(folder: Path) -> bool:
    """Whether ``folder`` holds a run: its config.json (written before the first step) or a
    checkpoint."""
    return run_config(folder) is not None or _has_checkpoint(folder)


def _first_entry(folder: Path, *, top: bool = True) -> Path | None:
    """The first thing in ``folder`` or its sub-folders that is not a folder (a file, a
    link...), the lock file at its top aside; None when it holds folders at most."""
    with os.scandir(folder) as scan:
        entries = sorted(scan, key=lambda entry: entry.name)
    for entry in entries:
        if top and entry.name == LOCK_FILE and entry.is_file(follow_symlinks=False):
            continue  # left by an earlier start of a run here, or held by one (the lock says)
        if not entry.is_dir(follow_symlinks=False):
            return Path(entry.path)
        found = _first_entry(Path(entry.path), top=False)
        if found is not None:
            return found
    return None


def check_new_run_dir(run_dir: Path) -> None:
    """StackGANError unless a new run can go into ``run_dir``: a folder that does not exist
    yet, an empty one (empty sub-folders and a lock file aside), or a run that stopped before
    its first checkpoint; UsageError (exit 2) for a folder of other files, which training
    would overwrite (generator.pt, samples/, metrics.jsonl...)."""
    if _has_checkpoint(run_dir):
        raise StackGANError(
            f"{run_dir} already holds a run: continue it with `stackgan resume {run_dir}` "
            "or pick another --run-dir"
        )
    if not os.path.lexists(run_dir) or run_config(run_dir) is not None:
        return
    if not run_dir.is_dir():
        raise StackGANError(f"--run-dir {run_dir} is not a folder")
    try:
        found = _first_entry(run_dir)
    except OSError as exc:
        raise StackGANError(f"--run-dir {run_dir} cannot be read ({exc.strerror or exc})") from None
    if found is not None:
        raise UsageError(
            f"--run-dir {run_dir} is not empty and holds no run (no config.json; it holds "
            f"{found.relative_to(run_dir)}): a new run would overwrite what is there; give a new "
            "or an empty folder"
        )


def check_writable(path: Path, what: str) -> None:
    """StackGANError naming ``what`` (e.g. "--out FILE") unless the file or folder ``path``
    can be written (its folder, or the nearest one above that exists, takes files)."""
    problem = write_problem(path)
    if problem is not None:
        raise StackGANError(f"{what} cannot be written: {problem}")


def _checked_out(out: str) -> str:
    """``--out``, absolute, once it is known to be writable: a full training run must not
    end in a path that cannot take its file."""
    path = Path(out).expanduser().resolve()
    if path.is_dir():
        raise StackGANError(f"--out {path} is a folder: give the file name to write")
    check_writable(path, f"--out {path}")
    return str(path)


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


def _with_damsm_identity(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with its --damsm (and --vocabulary) made absolute and the DAMSM's fingerprint
    recorded, so that the run resumes from anywhere and refuses a replaced file."""
    if not cfg.damsm:
        if cfg.vocabulary:
            raise UsageError("--vocabulary goes with --damsm (an official DAMSMencoders folder)")
        return cfg
    damsm = str(Path(cfg.damsm).expanduser().resolve())
    vocabulary = str(Path(cfg.vocabulary).expanduser().resolve()) if cfg.vocabulary else None
    bundle = load_damsm_once(damsm, vocabulary)
    return replace(cfg, damsm=damsm, vocabulary=vocabulary, damsm_fingerprint=bundle.fingerprint)


def training_dataset(dataset: PreparedDataset, cfg: TrainConfig, spec: FamilySpec) -> Any:
    """The data a run trains on: the prepared dataset, or, for a family that reads one
    embedding per caption (StackGAN-v1, v2) given ``--damsm``, the dataset with the DAMSM's
    sentence features as its embeddings (data/damsm_conditioned.py). A dataset without
    embeddings (one's own folder) needs that DAMSM: UsageError otherwise."""
    if not spec.trains_generator or spec.load().reads_words:
        return dataset  # DAMSM pre-training reads the words; AttnGAN reads --damsm itself
    if cfg.damsm:
        bundle = load_damsm_once(cfg.damsm, cfg.vocabulary)
        check_same_damsm(bundle, cfg.damsm_fingerprint)
        return condition_on_damsm(dataset, DAMSMSentenceEncoder(bundle.text))
    if _text_dim(dataset) == 0:
        raise UsageError(
            f"dataset {dataset.name!r} has no text embeddings (it was prepared from a folder of "
            f"images and captions): train a DAMSM on it (`stackgan train --arch damsm --dataset "
            f"{dataset.name} --out damsm.pt`) and pass --damsm damsm.pt; its sentence features "
            "are the embeddings"
        )
    return dataset


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
    """Make sure ``run_dir`` (whose lock is held) can take a new run (:func:`check_new_run_dir`,
    again: another process may have written there since the check before the lock) and create
    its folders. A run that stopped before its first checkpoint (a full disk, kill -9) has
    nothing to resume from, so a new run takes its place."""
    check_new_run_dir(run_dir)
    if run_config(run_dir) is not None:
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
    # allow_nan=False: config.json stays JSON (no Infinity or NaN) for every tool that reads it
    text = json.dumps(record, indent=2, allow_nan=False)
    atomic_write_text(run_dir / "config.json", text + "\n")


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
    spec = train_spec(cfg)
    check_widths(spec, overrides)
    if cfg.tensorboard:
        require_tensorboard()  # before the run directory exists
    # The paths, before anything is loaded or trained: a run that cannot write its folder or
    # its --out file would only find out at its first checkpoint or at its very end.
    if cfg.run_dir:
        run_path = Path(cfg.run_dir).expanduser().resolve()
        check_new_run_dir(run_path)
        check_writable(run_path / LOCK_FILE, f"--run-dir {run_path}")
    else:
        check_writable(paths.runs_dir() / LOCK_FILE, f"the runs folder {paths.runs_dir()}")
    if cfg.out:
        cfg = replace(cfg, out=_checked_out(cfg.out))
    overrides = dict(overrides)
    widths = {name: overrides.pop(name, None) for name in ENCODER_WIDTHS}
    encoders_cfg = None
    if spec.trains_generator:
        given = [name for name, value in widths.items() if value is not None]
        defaults = TrainConfig()
        encoder_only = {
            "--inception-weights": cfg.inception_weights is not None,
            "--lr-encoder": cfg.lr_encoder != defaults.lr_encoder,
            "--trunk-views": cfg.trunk_views != defaults.trunk_views,
        }
        for option, given_here in encoder_only.items():
            if given_here:
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
    cfg = _with_damsm_identity(cfg)
    dataset_name = cfg.dataset or default_dataset()
    ctx = dist_utils.init_distributed(cfg.device)
    trainer = None
    try:
        dataset = training_dataset(load_prepared(dataset_name), cfg, spec)
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
        run_dir = _new_run_dir(cfg, dataset) if ctx.is_main else None
        run_dir = dist_utils.broadcast_object(ctx, run_dir)
        # The --out file belongs to this folder: a copy of it resumed elsewhere leaves it alone.
        cfg = replace(cfg, run_dir=str(run_dir), out_owner=str(run_dir) if cfg.out else None)
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
    if not is_run(run_dir):  # checked before the lock: no .lock file in a folder of other things
        raise StackGANError(
            f"{run_dir} is not a run directory: it holds no config.json or checkpoints/last.pt "
            "of a stackgan run"
        )
    with owned(run_dir, dist_utils.launched_rank() == 0):
        return _resume_owned(run_dir, epochs=epochs, from_file=from_file, device=device)


def check_same_run(
    run_dir: Path, source: Path, state: dict[str, Any], spec: FamilySpec, model_cfg: ModelConfig
) -> None:
    """StackGANError naming both files unless the checkpoint ``source`` (its ``state``, the
    family ``spec`` and widths ``model_cfg`` it trains) belongs to the run that
    ``run_dir/config.json`` records: the same family (architecture and stage), widths and
    dataset. Resuming another run's checkpoint in this folder would turn it into that run."""
    config = run_config(run_dir)
    if config is None:  # a run folder without its config.json: nothing to compare with
        return
    where = run_dir / "config.json"
    recorded = TrainConfig.from_dict(config["train"])
    try:
        recorded_spec = train_spec(recorded)
    except UsageError:
        recorded_spec = None
    if recorded_spec is None or recorded_spec.key != spec.key:
        run_title = recorded_spec.title if recorded_spec is not None else f"{recorded.arch!r}"
        raise StackGANError(
            f"{source} is a checkpoint of a {spec.title} run but {where} records a {run_title} "
            "run: a checkpoint continues only the run it was written by"
        )
    try:
        recorded_widths = ModelConfig.from_dict(config["model"]).to_dict()
    except StackGANError:
        recorded_widths = dict(config["model"])
    widths = model_cfg.to_dict()
    differ = [
        k
        for k in dict.fromkeys([*widths, *recorded_widths])
        if widths.get(k) != recorded_widths.get(k)
    ]
    if differ:
        ours = ", ".join(f"{k} {widths.get(k)}" for k in differ)
        theirs = ", ".join(f"{k} {recorded_widths.get(k)}" for k in differ)
        raise StackGANError(
            f"{source} has the widths {ours} but {where} records {theirs}: a checkpoint "
            "continues only the run it was written by"
        )
    trained_on = state["dataset"] if isinstance(state.get("dataset"), dict) else {}
    recorded_data = config["dataset"] if isinstance(config.get("dataset"), dict) else {}
    for key in ("source", "fingerprint"):
        if key in trained_on and key in recorded_data and trained_on[key] != recorded_data[key]:
            raise StackGANError(
                f"{source} was trained on the dataset {trained_on.get('source')!r} "
                f"(fingerprint {str(trained_on.get('fingerprint'))[:12]}) but {where} records "
                f"{recorded_data.get('source')!r} (fingerprint "
                f"{str(recorded_data.get('fingerprint'))[:12]}): a checkpoint continues only "
                "the run it was written by"
            )


def _without_foreign_out(cfg: TrainConfig, run_dir: Path, state: dict[str, Any]) -> TrainConfig:
    """``cfg`` without its --out, after a warning, when ``run_dir`` is not the folder that owns
    it: a copy of the run's folder, or a checkpoint of another run (--from). The owner is the
    folder recorded when the run started (older runs: the folder the checkpoint was written
    in)."""
    if not cfg.out:
        return cfg
    owner = cfg.out_owner or state["train_config"].get("run_dir") or ""
    if owner and Path(owner).expanduser().resolve() == run_dir:
        return cfg
    if dist_utils.launched_rank() == 0:  # one warning, not one per torchrun process
        warn(
            f"--out {cfg.out} belongs to the run in {owner or 'another folder'}, not to "
            f"{run_dir}: this resume does not write it (this run's files stay in {run_dir})"
        )
    return replace(cfg, out=None, out_owner=None)


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
    check_same_run(run_dir, source, state, spec, model_cfg)
    non_finite = non_finite_option(cfg)
    if non_finite is not None:
        option, value = non_finite
        raise StackGANError(
            f"{source} was trained with {option} {value}, which cannot continue: start a new run"
        )
    cfg = _without_foreign_out(cfg, run_dir, state)
    if cfg.out:
        check_writable(Path(cfg.out), f"this run's --out {cfg.out}")
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
        dataset = training_dataset(load_prepared(cfg.dataset), cfg, spec)
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
