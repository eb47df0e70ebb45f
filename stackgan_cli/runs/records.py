"""One record per training run: what a run directory says about itself, read without torch.

A record is a plain dict with the same keys for every run (``None`` where a file does not say),
so ``stackgan runs --json`` and ``GET /api/runs`` give scripts a stable shape:

- ``name``, ``path``: the run folder; ``updated``: its latest file change (ISO time, local).
- ``family`` ("v1" or "v2"), ``stage`` (v1), ``branches`` (v2) and ``model``, a label such as
  "v1 stage 1" or "v2 3 branches"; ``model_config``: config.json's network widths as written.
- ``dataset``: the dataset name.
- ``regime``: the training options that differ from the defaults of the run's architecture
  (``TrainConfig.for_arch``), except the bookkeeping ones (see :data:`BOOKKEEPING`), as
  ``{option: value}``.
- ``epochs_done`` (the epoch of the last metrics record; the one in progress if the run stopped
  mid-epoch), ``epochs_planned``, ``steps``, ``time_s`` (training seconds), ``d_loss``,
  ``g_loss`` and ``kl`` of the last metrics record.
- ``evaluation``: the newest ``stackgan evaluate`` report of the run's generator
  (``{"path", "checkpoint", "finished_at", "size", "metrics": {name: value}}``, e.g.
  ``inception_score``, ``fid``, ``diversity``, ``r_precision`` (its mean), for those the report
  has) or None.
- ``generator``, ``sample`` (newest ``samples/epoch_NNNN.png``), ``losses_plot``: paths or None.
- ``problems``: what is missing, unreadable or malformed; a damaged run is listed, never fatal.

Reading a run never blocks and is bounded: only regular files are read (a named pipe or a
device in its place is a problem), config.json and evaluation reports up to
:data:`MAX_JSON_BYTES`, and metrics.jsonl only from its end. A value of the wrong JSON type
(a list for ``arch``) or a non-finite number (older versions wrote ``"lr_g": Infinity``) is
a problem and null, so every record is strict JSON.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import functools
import json
import math
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from stackgan_cli import paths
from stackgan_cli.errors import StackGANError
from stackgan_cli.evaluation.report import checkpoint_reports
from stackgan_cli.families.registry import ARCHS, spec_for_run
from stackgan_cli.training.config import TrainConfig
from stackgan_cli.training.metrics_file import (
    FileTooLarge,
    NotRegularFile,
    last_record,
    read_limited,
)

BOOKKEEPING = frozenset(
    {
        # where and what: shown in their own columns, or paths
        "arch",
        "stage",
        "branches",
        "dataset",
        "run_dir",
        "out",
        "stage1_ckpt",
        "epochs",
        # how often files and logs are written
        "snapshot_every",
        "sample_every",
        "log_every",
        "tensorboard",
        # the seed and the execution: same recipe, other hardware or another draw
        "seed",
        "device",
        "amp",
        "compile",
        "channels_last",
        "fast_layers",
    }
)
"""Training options that are not part of a run's regime: they say where a run's files go, how
long it runs, how often it writes, or how it executes, not what it optimises. Options that
today's ``TrainConfig`` does not know (written by a newer version) are left out too, since
their defaults are unknown."""

KEYS = (
    "name",
    "path",
    "updated",
    "family",
    "stage",
    "branches",
    "model",
    "model_config",
    "dataset",
    "regime",
    "epochs_done",
    "epochs_planned",
    "steps",
    "time_s",
    "d_loss",
    "g_loss",
    "kl",
    "evaluation",
    "generator",
    "sample",
    "losses_plot",
    "problems",
)
"""Every record's keys, in this order."""

_ACTIVITY_FILES = ("config.json", "metrics.jsonl", "generator.pt", "checkpoints/last.pt")

MAX_JSON_BYTES = 2**20
"""The largest config.json or evaluation report read (ours are a few kilobytes); a larger
one is damaged."""


def collect_runs(runs_dir: Path | None = None) -> list[dict[str, Any]]:
    """One record per sub-folder of ``runs_dir`` (default: the cache's runs/), newest first
    (by ``updated``, then name). Raises StackGANError if ``runs_dir`` is not a folder."""
    runs_dir = paths.runs_dir() if runs_dir is None else Path(runs_dir)
    if not runs_dir.is_dir():
        hint = "" if runs_dir.exists() else ": train one with `stackgan train` first"
        what = "is not a folder" if runs_dir.exists() else "does not exist"
        raise StackGANError(f"the runs folder {runs_dir} {what}{hint}")
    try:
        folders = [p for p in runs_dir.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError as exc:
        raise StackGANError(f"cannot list the runs folder {runs_dir} ({exc})") from None
    stamped = [(_updated(folder), folder) for folder in folders]
    stamped.sort(key=lambda item: (-item[0], item[1].name))
    return [read_run(folder, updated=stamp) for stamp, folder in stamped]


def read_run(run_dir: Path, *, updated: float | None = None) -> dict[str, Any]:
    """The record of one run directory (see the module docstring)."""
    run_dir = Path(run_dir)
    record: dict[str, Any] = dict.fromkeys(KEYS)
    record.update(name=run_dir.name, path=str(run_dir), problems=[], regime={})
    stamp = _updated(run_dir) if updated is None else updated
    record["updated"] = _dt.datetime.fromtimestamp(stamp).isoformat(timespec="seconds")
    problems: list[str] = record["problems"]

    config = _read_json(run_dir / "config.json", problems)
    train = config.get("train") if isinstance(config, dict) else None
    if config is not None and not isinstance(train, dict):
        problems.append("config.json has no training settings")
        train = None
    if train is not None:
        train = checked_train(train, problems)
        record.update(_family(train))
        record["regime"] = regime(train)
        record["epochs_planned"] = _int_or_none(train.get("epochs"))
    if isinstance(config, dict) and "model" in config:
        record["model_config"] = _model_config(config["model"], problems)
    record["dataset"] = _dataset_name(config, train, problems)

    last = last_record(run_dir / "metrics.jsonl", problems)
    if last is not None:
        record["epochs_done"] = _int_or_none(last.get("epoch"))
        record["steps"] = _int_or_none(last.get("step"))
        record["time_s"] = _float_or_none(last.get("time"))
        record["d_loss"] = _float_or_none(last.get("errD"))
        record["g_loss"] = _float_or_none(last.get("errG"))
        record["kl"] = _float_or_none(last.get("kl"))

    out = train.get("out") if train is not None else None
    record["evaluation"] = latest_evaluation(run_dir, out if isinstance(out, str) else None)
    record["generator"] = _existing(run_dir / "generator.pt")
    record["sample"] = latest_sample(run_dir)
    record["losses_plot"] = _existing(run_dir / "losses.png")
    return record


def checked_train(train: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    """A config.json ``train`` dict with None for each value whose JSON type does not fit its
    TrainConfig option (a list for ``arch``, text for ``epochs``...) and for each non-finite
    number, each noted in ``problems``. Options that TrainConfig does not know (a newer
    version's) are kept as they are."""
    kinds = _option_kinds()
    checked = {}
    for name, value in train.items():
        expected = kinds.get(name)
        wrong = expected is not None and not _fits(value, expected)
        if wrong or (isinstance(value, float) and not math.isfinite(value)):
            problems.append(f"config.json: train.{name} is {_describe(value)}")
            value = None
        checked[name] = value
    return checked


def regime(train: dict[str, Any]) -> dict[str, Any]:
    """The options of a config.json ``train`` dict that differ from the defaults of its
    architecture's recipe (``TrainConfig.for_arch``: v1's are the field defaults, v2's its
    batch 24 and parameter average), bookkeeping options left out, in TrainConfig's order."""
    arch = train.get("arch", "v1")
    defaults = TrainConfig.for_arch(arch if arch in ARCHS else "v1")
    changed = {}
    for field in dataclasses.fields(TrainConfig):
        name = field.name
        if name in BOOKKEEPING or name not in train:
            continue
        value, default = train[name], getattr(defaults, name)
        if not _same(value, default):
            changed[name] = value
    return changed


def latest_sample(run_dir: Path) -> str | None:
    """The newest sample grid, ``samples/epoch_NNNN.png`` with the largest epoch."""
    try:
        grids = sorted((Path(run_dir) / "samples").glob("epoch_*.png"))
    except OSError:
        return None
    grids = [grid for grid in grids if grid.is_file()]
    return str(max(grids, key=lambda p: (_epoch_number(p), p.name))) if grids else None


def latest_evaluation(run_dir: Path, out: str | None = None) -> dict[str, Any] | None:
    """The newest ``evaluate`` report of this run's generator: ``generator.eval.json`` in the
    run directory, or any ``*.eval.json`` in it (or one folder down), or beside the run's
    ``--out`` copy, whose checkpoint path points into the run (or at that copy)."""
    run_dir = Path(run_dir)
    inside = run_dir.resolve()
    out_path = _resolved(out) if out else None
    candidates = [*run_dir.glob("*.eval.json"), *run_dir.glob("*/*.eval.json")]
    if out_path is not None:
        candidates += checkpoint_reports(out_path)
    best: tuple[float, dict[str, Any]] | None = None
    for candidate in dict.fromkeys(candidates):
        report = _read_json(candidate, None)
        if not isinstance(report, dict) or report.get("mode") != "generated":
            continue
        checkpoint = report.get("checkpoint")
        ckpt = checkpoint.get("path") if isinstance(checkpoint, dict) else None
        ckpt_path = _resolved(ckpt) if isinstance(ckpt, str) else None
        if ckpt_path is None:
            continue
        ours = (
            candidate == run_dir / "generator.eval.json"
            or ckpt_path.is_relative_to(inside)
            or ckpt_path == out_path
        )
        if not ours:
            continue
        try:
            stamp = candidate.stat().st_mtime
        except OSError:
            continue
        if best is None or stamp > best[0]:
            best = (stamp, _evaluation_summary(candidate, ckpt, report))
    return best[1] if best else None


def _evaluation_summary(path: Path, ckpt: str, report: dict[str, Any]) -> dict[str, Any]:
    metrics = report.get("metrics")
    values = {}
    if isinstance(metrics, dict):
        for name, metric in metrics.items():
            if isinstance(metric, dict) and "value" in metric:
                values[str(name)] = _float_or_none(metric["value"])
            elif isinstance(metric, dict) and "mean" in metric:  # a {mean, std} entry
                values[str(name)] = _float_or_none(metric["mean"])
    times = report.get("times")
    finished = times.get("finished_at") if isinstance(times, dict) else None
    protocol = report.get("protocol")
    size = _int_or_none(protocol.get("resolution")) if isinstance(protocol, dict) else None
    return {
        "path": str(path),
        "checkpoint": ckpt,
        "finished_at": finished if isinstance(finished, str) else None,
        "size": size,
        "metrics": values,
    }


def _family(train: dict[str, Any]) -> dict[str, Any]:
    """family (the --arch), stage, branches and the model label from a ``train`` dict, as
    its family in the registry describes a run of it (all None if ``arch`` is not text)."""
    arch, stage = train.get("arch", "v1"), _int_or_none(train.get("stage"))
    if not isinstance(arch, str):
        return {"family": None, "stage": stage, "branches": None, "model": None}
    spec = spec_for_run(arch, stage)
    if spec is None:
        label = f"{arch} stage {stage}" if isinstance(stage, int) else str(arch)
        return {"family": str(arch), "stage": stage, "branches": None, "model": label}
    return {
        "family": spec.arch,
        "stage": spec.stage,
        "branches": _int_or_none(train.get("branches")),
        "model": spec.run_label(spec, train),
    }


def _model_config(model: Any, problems: list[str]) -> dict[str, Any] | None:
    """config.json's ``model`` dict: its widths and switches, non-finite numbers as None;
    entries that are not numbers, text, booleans or null are noted and left out."""
    if not isinstance(model, dict):
        problems.append(f"config.json: model is {_describe(model)}")
        return None
    widths = {}
    for name, value in model.items():
        if isinstance(value, (list, dict)):
            problems.append(f"config.json: model.{name} is {_describe(value)}")
            continue
        if isinstance(value, float) and not math.isfinite(value):
            problems.append(f"config.json: model.{name} is {_describe(value)}")
            value = None
        widths[name] = value
    return widths


def _dataset_name(config: Any, train: dict[str, Any] | None, problems: list[str]) -> str | None:
    dataset = config.get("dataset") if isinstance(config, dict) else None
    if isinstance(dataset, dict) and isinstance(dataset.get("name"), str):
        return dataset["name"]
    if isinstance(dataset, dict) and "name" in dataset:
        problems.append(f"config.json: dataset.name is {_describe(dataset['name'])}")
    elif dataset is not None and not isinstance(dataset, dict):
        problems.append(f"config.json: dataset is {_describe(dataset)}")
    source = train.get("dataset") if train is not None else None
    return Path(source).name if isinstance(source, str) and source else None


def _read_json(path: Path, problems: list[str] | None) -> Any:
    """The parsed file, or None (with a note in ``problems``) if missing, not a regular file,
    larger than :data:`MAX_JSON_BYTES` or broken."""
    try:
        return json.loads(read_limited(path, MAX_JSON_BYTES))
    except FileNotFoundError:
        note = f"{path.name} is missing"
    except (NotRegularFile, FileTooLarge) as exc:
        note = f"{path.name} is {exc}"
    except RecursionError:
        note = f"{path.name} is unreadable (nested too deeply)"
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        note = f"{path.name} is unreadable ({type(exc).__name__})"
    if problems is not None:
        problems.append(note)
    return None


def _resolved(name: str) -> Path | None:
    """``name`` as an absolute path (``~`` expanded), or None if it cannot be one (an unknown
    ``~user``, a NUL character)."""
    try:
        return Path(name).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):
        return None


@functools.cache
def _option_kinds() -> dict[str, tuple[type, ...]]:
    """The JSON types each TrainConfig option takes, from its annotation (``int | None``:
    int and NoneType), for the options whose values are plain JSON scalars."""
    hints = typing.get_type_hints(TrainConfig)
    kinds = {}
    for field in dataclasses.fields(TrainConfig):
        hint = hints[field.name]
        union = isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union
        options = typing.get_args(hint) if union else (hint,)
        if all(option in (str, int, float, bool, type(None)) for option in options):
            kinds[field.name] = options
    return kinds


def _fits(value: Any, kinds: tuple[type, ...]) -> bool:
    """Whether a JSON value fits an option taking ``kinds`` (an int fits a float option, an
    integral float an int option)."""
    if value is None or isinstance(value, (bool, str)):
        return type(value) in kinds
    if isinstance(value, int):
        return int in kinds or float in kinds
    if isinstance(value, float):
        return float in kinds or (int in kinds and value.is_integer())
    return False


def _describe(value: Any) -> str:
    """A JSON value in a problem note: its kind, or the number it is."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return "text"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    if isinstance(value, int):
        return str(value) if abs(value) < 10**12 else "a large integer"
    if not math.isfinite(value):
        return f"not a finite number ({value})"
    return f"{value:g}"


def _updated(run_dir: Path) -> float:
    """The latest modification time of the run folder and its main files."""
    stamps = []
    for path in (run_dir, *(run_dir / name for name in _ACTIVITY_FILES)):
        try:
            stamps.append(path.stat().st_mtime)
        except OSError:
            continue
    return max(stamps, default=0.0)


def _same(value: Any, default: Any) -> bool:
    if isinstance(default, bool) or default is None or isinstance(value, bool):
        return value == default and type(value) is type(default)
    if isinstance(default, (int, float)) and isinstance(value, (int, float)):
        try:
            return math.isclose(value, default, rel_tol=1e-12, abs_tol=0.0)
        except OverflowError:  # an integer beyond the float range: no default is that large
            return False
    return value == default


def _epoch_number(path: Path) -> int:
    digits = path.stem.removeprefix("epoch_")
    return int(digits) if digits.isdigit() else -1


def _existing(path: Path) -> str | None:
    return str(path) if path.is_file() else None


def _int_or_none(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _float_or_none(value: Any) -> float | None:
    """A finite number as float, else None (JSON has no NaN; an integer beyond the float
    range is None too)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        value = float(value)
    except OverflowError:
        return None
    return value if math.isfinite(value) else None


def runs_json(records: Sequence[dict[str, Any]]) -> str:
    """The records as an indented JSON list (strict JSON: no NaN)."""
    return json.dumps(list(records), indent=2, allow_nan=False)
