"""The StackGAN networks (official StackGAN-Pytorch, StackGAN-v2 and AttnGAN layouts, with the
DAMSM encoders), their configuration and builders.

Losses live in :mod:`stackgan_cli.models.losses`, the official checkpoint import in
:mod:`stackgan_cli.models.official` and :mod:`stackgan_cli.models.official_v2`.

The names below are imported on first use, so that torch-free code (the command line's
``--help``, the image sizes in :mod:`stackgan_cli.models.config`) can import this package
without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "IMAGE_SIZE": "config",
    "PRESETS": "config",
    "ModelConfig": "config",
    "image_size": "config",
    "AttnGANDiscriminator": "attngan",
    "AttnGANGenerator": "attngan",
    "WordAttention": "attngan",
    "DAMSMImageEncoder": "damsm",
    "DAMSMTextEncoder": "damsm",
    "ConditioningAugmentation": "layers",
    "DiscriminatorHead": "layers",
    "ResBlock": "layers",
    "Stage1Discriminator": "stage1",
    "Stage1Generator": "stage1",
    "Stage2Discriminator": "stage2",
    "Stage2Generator": "stage2",
    "StackGANv2Discriminator": "discriminator_v2",
    "StackGANv2Generator": "generator_v2",
    "build_discriminator": "builders",
    "build_generator": "builders",
    "init_weights": "init",
    "init_weights_v2": "init",
    "init_weights_attngan": "init",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_HOMES])
