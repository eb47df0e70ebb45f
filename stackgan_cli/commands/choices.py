"""Option value sets shared by several commands (kept free of torch so ``--help`` is fast)."""

from __future__ import annotations

from enum import Enum


class Device(str, Enum):
    """``--device``: ``auto`` picks CUDA when PyTorch sees a GPU, else the CPU."""

    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"
