"""The ``--device`` choices and turning one into a ``torch.device``.

The choices are plain values so that the CLI can list them without importing torch.
"""

from __future__ import annotations

from enum import Enum
from typing import TYPE_CHECKING

from stackgan_cli.errors import StackGANError

if TYPE_CHECKING:
    import torch


class Device(str, Enum):
    """``auto`` picks CUDA when PyTorch sees a GPU, else the CPU."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


DEVICE_CHOICES = tuple(choice.value for choice in Device)


def pick_device(choice: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA when PyTorch sees a GPU, else the CPU; ``cuda`` without one is an error.

    ``local_rank`` selects the GPU of a ``torchrun`` worker (wrapping over the visible GPUs).
    """
    import torch

    if choice not in DEVICE_CHOICES:
        raise StackGANError(f"--device must be auto, cpu or cuda, got {choice!r}")
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise StackGANError("--device cuda: PyTorch sees no CUDA GPU here; use --device cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())
