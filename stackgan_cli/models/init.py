"""The official weight initialisations: StackGAN-v1 (stackgan-pytorch-spec.md 3.9), StackGAN-v2
(stackgan-v2-spec.md 4) and AttnGAN (attngan-spec.md 8.2, the same as StackGAN-v2's)."""

from __future__ import annotations

import torch
from torch import nn


def _is_layout_only(module: nn.Module) -> bool:
    """Whether ``module`` was built on the meta device to receive loaded weights
    (official.empty_module): there is nothing to draw, and ``normal_`` on the meta device
    imports torch._dynamo (about 1.7 s per process)."""
    weight = getattr(module, "weight", None)
    return isinstance(weight, torch.Tensor) and weight.is_meta


@torch.no_grad()
def _init_module(module: nn.Module) -> None:
    if _is_layout_only(module):
        return
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


@torch.no_grad()
def _init_module_v2(module: nn.Module) -> None:
    if _is_layout_only(module):
        return
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.orthogonal_(module.weight, gain=1.0)
        # Conv biases (only the 4x4 logit convs have one) keep torch's default init.
        if isinstance(module, nn.Linear) and module.bias is not None:
            module.bias.zero_()
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        module.weight.normal_(1.0, 0.02)
        module.bias.zero_()


def init_weights_v2(module: nn.Module) -> nn.Module:
    """The StackGAN-v2 initialisation (stackgan-v2-spec.md 4): orthogonal conv and linear weights
    (gain 1),
    linear biases 0, BatchNorm weights N(1, 0.02) and biases 0. Returns ``module``.

    The orthogonalisation is a QR decomposition per weight: a birds-width 256x256 discriminator
    takes tens of seconds on a few CPU cores, so build large networks on the GPU (``with
    torch.device("cuda"):``) or on the meta device when weights will be loaded anyway."""
    return module.apply(_init_module_v2)


def init_weights_attngan(module: nn.Module) -> nn.Module:
    """The AttnGAN initialisation of the generator and discriminators (attngan-spec.md 8.2):
    its ``weights_init`` is StackGAN-v2's (orthogonal conv and linear weights with gain 1, the
    attention's 1x1 conv included; linear biases 0; BatchNorm weights N(1, 0.02) and biases 0;
    the 4x4 logit convs keep torch's default bias), so this is :func:`init_weights_v2` under
    the name the AttnGAN networks use. Returns ``module``."""
    return init_weights_v2(module)
