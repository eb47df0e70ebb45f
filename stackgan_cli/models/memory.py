"""The memory format of image batches, so that a tensor made from another keeps its layout."""

from __future__ import annotations

import torch
from torch import Tensor


def memory_format_of(images: Tensor) -> torch.memory_format:
    """``channels_last`` for an NCHW tensor stored channels-last (and not also plainly
    contiguous, as a 1x1 image is), else ``contiguous_format``."""
    if images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format
