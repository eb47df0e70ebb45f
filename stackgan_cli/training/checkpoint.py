"""The training checkpoint: one way to write it (atomically), one way to read it.

``checkpoints/last.pt`` and the ``epoch_NNNN.pt`` snapshots are the same plain dict, loadable
with ``torch.load(..., weights_only=True)`` (tensors, numbers, strings, lists and dicts only)::

    {"format": "stackgan-checkpoint", "format_version": 1, "stage": 1 | 2,
     "generator", "discriminator": state dicts of the bare modules,
     "optimizer_g", "optimizer_d": optimizer state dicts (their param_groups hold the lrs),
     "epoch": epochs completed, "step": steps done in the current epoch, "global_step": int,
     "sampler": DeviceBatchSampler.state_dict(),
     "rng": [per rank: {"python", "numpy", "torch", "cuda"}],
     "amp": {"enabled": bool, "dtype": "bfloat16"} (bf16 needs no loss scaler),
     "train_config": TrainConfig.to_dict(), "model_config": ModelConfig.to_dict(),
     "dataset": {"name", "path", "fingerprint"}, "metrics_bytes": int, "elapsed": seconds}
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stackgan_cli.errors import StackGANError
from stackgan_cli.fsutil import atomic_torch_save

FORMAT = "stackgan-checkpoint"
FORMAT_VERSION = 1
LAST = "last.pt"
_REQUIRED = (
    "stage",
    "generator",
    "discriminator",
    "optimizer_g",
    "optimizer_d",
    "epoch",
    "step",
    "global_step",
    "sampler",
    "rng",
    "train_config",
    "model_config",
    "dataset",
)


def checkpoints_dir(run_dir: Path) -> Path:
    """``RUN_DIR/checkpoints``."""
    return Path(run_dir) / "checkpoints"


def snapshot_name(epoch: int) -> str:
    """``epoch_NNNN.pt`` after ``epoch`` completed epochs."""
    return f"epoch_{epoch:04d}.pt"


def list_snapshots(run_dir: Path) -> list[Path]:
    """The run's ``epoch_NNNN.pt`` snapshots, oldest first."""
    return sorted(checkpoints_dir(run_dir).glob("epoch_[0-9]*.pt"))


def save_checkpoint(state: Mapping[str, Any], path: Path) -> None:
    """Write ``state`` (see the module docstring) atomically: a crash or SIGKILL during the
    write leaves the previous file at ``path`` untouched."""
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **state}
    atomic_torch_save(payload, Path(path))


def load_checkpoint(path: Path, run_dir: Path | None = None) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` onto the CPU.

    A missing, truncated or foreign file raises StackGANError naming it and, when ``run_dir``
    is given, the snapshots that ``stackgan resume RUN_DIR --from FILE`` can continue from.
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
    if not isinstance(data, Mapping) or data.get("format") != FORMAT:
        raise StackGANError(
            f"{path} is not a stackgan training checkpoint{_snapshot_hint(run_dir)}"
        )
    if data.get("format_version") != FORMAT_VERSION:
        raise StackGANError(
            f"{path} has checkpoint format version {data.get('format_version')!r}; this "
            f"stackgan reads version {FORMAT_VERSION}"
        )
    missing = [key for key in _REQUIRED if key not in data]
    if missing:
        raise StackGANError(f"{path} lacks {', '.join(missing)}{_snapshot_hint(run_dir)}")
    return dict(data)


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
