"""The official weight initialisation (spec 3.9)."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def _init_module(module: nn.Module) -> None:
    if isinstance(module, nn.Conv2d):
        # Only the weight: the two 4x4 logit convs keep torch's default bias init.
        module.weight.normal_(0.0, 0.02)
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        module.weight.normal_(1.0, 0.02)
        module.bias.zero_()
    elif isinstance(module, nn.Linear):
        module.weight.normal_(0.0, 0.02)
        if module.bias is not None:
            module.bias.zero_()


def init_weights(module: nn.Module) -> nn.Module:
    """Apply the official ``weights_init`` to every submodule: conv weights N(0, 0.02),
    BatchNorm weights N(1, 0.02) and biases 0, Linear weights N(0, 0.02) and biases 0.
    Returns ``module``."""
    return module.apply(_init_module)
