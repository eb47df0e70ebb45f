"""A moving average of a generator's parameters (StackGAN-v2: decay 0.999 after every G step).

The average lives beside the trained weights: training always continues from the trained
parameters (the official StackGAN-v2 loop, after writing a snapshot, goes on training from the
averaged ones; we deliberately do not). Sample grids and generator files are drawn with the
averaged parameters swapped in for the moment (:meth:`ParameterAverage.applied`); buffers
(BatchNorm running statistics) are the trained network's, as in the official code.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import Tensor, nn


class ParameterAverage:
    """``avg <- decay * avg + (1 - decay) * p`` over ``module``'s trainable parameters."""

    def __init__(self, module: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"the average's decay must be in (0, 1), got {decay!r}")
        self.decay = float(decay)
        self._params = {name: p for name, p in module.named_parameters() if p.requires_grad}
        self.average = {name: p.detach().clone() for name, p in self._params.items()}

    @torch.no_grad()
    def update(self) -> None:
        """One averaging step (after an optimizer step of the module)."""
        averages = list(self.average.values())
        torch._foreach_mul_(averages, self.decay)
        torch._foreach_add_(averages, list(self._params.values()), alpha=1.0 - self.decay)

    def state_dict(self) -> dict[str, Tensor]:
        """The averaged parameters by name (what a checkpoint stores)."""
        return dict(self.average)

    @torch.no_grad()
    def load_state_dict(self, state: Mapping[str, Tensor]) -> None:
        """Restore :meth:`state_dict`; the names must be this module's."""
        if set(state) != set(self.average):
            raise ValueError("the parameter average does not match the generator's parameters")
        for name, value in state.items():
            self.average[name].copy_(value)

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The averaged parameters in the module for the duration; the trained ones (exact
        copies) afterwards."""
        with torch.no_grad():
            trained = {name: p.detach().clone() for name, p in self._params.items()}
            for name, p in self._params.items():
                p.copy_(self.average[name])
        try:
            yield
        finally:
            with torch.no_grad():
                for name, p in self._params.items():
                    p.copy_(trained[name])
