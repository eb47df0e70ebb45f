"""A temporary limit on torch's CPU threads.

The text encoder's work comes in small pieces (one sentence; batches of at most 256 short
captions): extra threads gain little on them, and where the cores are shared with other
processes, OpenMP threads waiting for each other made it 3-5x slower in our measurements.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Use ``count`` torch CPU threads inside the block, then restore the previous number."""
    previous = torch.get_num_threads()
    if count == previous:
        yield
        return
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
