"""The training checkpoint: what it holds, one way to write it (atomically), one to read it.

``checkpoints/last.pt`` and the ``epoch_NNNN.pt`` snapshots are the same plain dict, built by
:func:`make_checkpoint` alone and loadable with ``torch.load(..., weights_only=True)`` (tensors,
numbers, strings, lists and dicts only)::

    {"format": "stackgan-checkpoint", "format_version": 2, "stage": 1 | 2 | None,
     "family": the model family's registry key (absent in files written before it existed),
     "generator": state dict of the bare generator,
     "discriminators": [state dict of each bare discriminator],
     "optimizer_g": optimizer state dict (its param_groups hold the lr),
     "optimizers_d": [optimizer state dict of each discriminator],
     "epoch": epochs completed, "step": steps done in the current epoch, "global_step": int,
     "sampler": DeviceBatchSampler.state_dict(),
     "rng": [per rank: {"python", "numpy", "torch", "cuda"}],
     "amp": {"enabled": bool, "dtype": "bfloat16", "scaler": None} (bf16 needs no scaler),
     "generator_average": {name: averaged parameter} or None (training/ema.py; absent in
     files written before it existed),
     "train_config": TrainConfig.to_dict(), "model_config": ModelConfig.to_dict(),
     "dataset": {"name", "source" (as given to --dataset), "fingerprint"},
     "world_size": processes that wrote it, "metrics_bytes": length of metrics.jsonl then,
     "elapsed": training seconds so far}

Version 1 (one discriminator under "discriminator" / "optimizer_d") is read and upgraded.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stackgan_cli.errors import StackGANError
from stackgan_cli.formats import CHECKPOINT_FORMAT, check_format
from stackgan_cli.fsutil import atomic_torch_save

FORMAT = CHECKPOINT_FORMAT
FORMAT_VERSION = 2
LAST = "last.pt"
_REQUIRED = (
    "stage",
    "generator",
    "discriminators",
    "optimizer_g",
    "optimizers_d",
    "epoch",
    "step",
    "global_step",
    "sampler",
    "rng",
    "train_config",
    "model_config",
    "dataset",
)
COMMON_KEYS = ("epoch", "step", "global_step", "sampler", "rng", "train_config", "model_config")
COMMON_KEYS += ("dataset",)
"""What every run's checkpoint holds, whatever it trains (a DAMSM run's holds no GAN networks:
training/damsm_loop.py)."""


def make_checkpoint(
    *,
    stage: int | None,
    family: str,
    generator: Mapping[str, Any],
    discriminators: Sequence[Mapping[str, Any]],
    optimizer_g: Mapping[str, Any],
    optimizers_d: Sequence[Mapping[str, Any]],
    epoch: int,
    step: int,
    global_step: int,
    sampler: Mapping[str, Any],
    rng: list[dict[str, Any]],
    amp: bool,
    generator_average: Mapping[str, Any] | None = None,
    train_config: Mapping[str, Any],
    model_config: Mapping[str, Any],
    dataset: Mapping[str, str],
    world_size: int,
    metrics_bytes: int,
    elapsed: float,
) -> dict[str, Any]:
    """The checkpoint dict described in the module docstring."""
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "stage": stage,
        "family": family,
        "generator": generator,
        "discriminators": list(discriminators),
        "optimizer_g": optimizer_g,
        "optimizers_d": list(optimizers_d),
        "epoch": epoch,
        "step": step,
        "global_step": global_step,
        "sampler": sampler,
        "rng": rng,
        "amp": {"enabled": amp, "dtype": "bfloat16", "scaler": None},
        "generator_average": dict(generator_average) if generator_average is not None else None,
        "train_config": dict(train_config),
        "model_config": dict(model_config),
        "dataset": dict(dataset),
        "world_size": world_size,
        "metrics_bytes": metrics_bytes,
        "elapsed": elapsed,
    }


def checkpoints_dir(run_dir: Path) -> Path:
    """``RUN_DIR/checkpoints``."""
    return Path(run_dir) / "checkpoints"


def snapshot_name(epoch: int) -> str:
    """``epoch_NNNN.pt`` after ``epoch`` completed epochs."""
    return f"epoch_{epoch:04d}.pt"


def list_snapshots(run_dir: Path) -> list[Path]:
    """The run's ``epoch_NNNN.pt`` snapshots, oldest first."""
    return sorted(checkpoints_dir(run_dir).glob("epoch_[0-9]*.pt"))


def save_checkpoint(checkpoint: Mapping[str, Any], path: Path) -> None:
    """Write a :func:`make_checkpoint` dict atomically: a crash, SIGKILL or full disk during
    the write leaves the previous file at ``path`` untouched (the OSError propagates)."""
    atomic_torch_save(dict(checkpoint), Path(path))


def load_checkpoint(
    path: Path, run_dir: Path | None = None, *, required: Sequence[str] = _REQUIRED
) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` onto the CPU.

    A missing, truncated or foreign file, or one without the ``required`` entries (default:
    a GAN run's), raises StackGANError naming it and, when ``run_dir`` is given, the snapshots
    that ``stackgan resume RUN_DIR --from FILE`` can continue from.
    """
    path = Path(path)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise StackGANError(f"{path} does not exist{_snapshot_hint(run_dir)}") from None
    except Exception as exc:
        raise StackGANError(
            f"{path} is unreadable (truncated or corrupt: {type(exc).__name__})"
            f"{_snapshot_hint(run_dir)}"
        ) from None
    version = check_format(
        data,
        tag=FORMAT,
        versions=(1, FORMAT_VERSION),
        where=str(path),
        what="stackgan training checkpoint",
        remedy=_snapshot_hint(run_dir).removeprefix("; "),
    )
    data = dict(data)
    if version == 1:
        data["discriminators"] = [data.pop("discriminator", None)]
        data["optimizers_d"] = [data.pop("optimizer_d", None)]
        data["format_version"] = FORMAT_VERSION
    check_keys(data, path, run_dir, required)
    return data


def check_keys(
    data: Mapping[str, Any],
    path: Path,
    run_dir: Path | None = None,
    required: Sequence[str] = _REQUIRED,
) -> None:
    """StackGANError naming ``path`` when the checkpoint ``data`` lacks a ``required`` entry."""
    missing = [key for key in required if key not in data]
    missing += [
        key
        for key in ("discriminators", "optimizers_d")
        if key in required and None in data.get(key, ())
    ]
    if missing:
        raise StackGANError(f"{path} lacks {', '.join(missing)}{_snapshot_hint(run_dir)}")


def _snapshot_hint(run_dir: Path | None) -> str:
    if run_dir is None:
        return ""
    snapshots = list_snapshots(run_dir)
    if not snapshots:
        return "; the run has no epoch snapshots to fall back on"
    names = ", ".join(p.name for p in snapshots)
    return (
        f"; snapshots you can continue from: {names} "
        f"(stackgan resume {run_dir} --from {snapshots[-1]})"
    )


def capture_rng(device: torch.device) -> dict[str, Any]:
    """This process's random states (python, numpy, torch CPU, CUDA) as plain values."""
    version, mt_state, gauss = random.getstate()
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "python": [version, list(mt_state), gauss],
        "numpy": [
            np_name,
            torch.from_numpy(np_keys.astype(np.int64)),
            np_pos,
            np_has_gauss,
            np_gauss,
        ],
        "torch": torch.get_rng_state(),
        "cuda": None,
    }
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: Mapping[str, Any], device: torch.device) -> None:
    """Inverse of :func:`capture_rng`."""
    version, mt_state, gauss = state["python"]
    random.setstate((version, tuple(mt_state), gauss))
    np_name, np_keys, np_pos, np_has_gauss, np_gauss = state["numpy"]
    np.random.set_state(
        (
            np_name,
            np_keys.numpy().astype(np.uint32),
            int(np_pos),
            int(np_has_gauss),
            float(np_gauss),
        )
    )
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and state.get("cuda") is not None:
        torch.cuda.set_rng_state(state["cuda"], device)
