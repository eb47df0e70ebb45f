"""Turning a ``--device`` choice (``auto``, ``cpu`` or ``cuda``) into a ``torch.device``."""

from __future__ import annotations

import torch

from stackgan_cli.commands.choices import Device
from stackgan_cli.errors import StackGANError

DEVICE_CHOICES = tuple(choice.value for choice in Device)


def pick_device(choice: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA when PyTorch sees a GPU, else the CPU; ``cuda`` without one is an error.

    ``local_rank`` selects the GPU of a ``torchrun`` worker (wrapping over the visible GPUs).
    """
    if choice not in DEVICE_CHOICES:
        raise StackGANError(f"--device must be auto, cpu or cuda, got {choice!r}")
    if choice == "cpu" or (choice == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise StackGANError("--device cuda: PyTorch sees no CUDA GPU here; use --device cpu")
    return torch.device("cuda", local_rank % torch.cuda.device_count())
