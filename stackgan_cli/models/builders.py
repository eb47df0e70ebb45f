"""Freshly initialised StackGAN-v1 networks by stage."""

from __future__ import annotations

from torch import nn

from stackgan_cli.models.config import ModelConfig
from stackgan_cli.models.stage1 import Stage1Discriminator, Stage1Generator
from stackgan_cli.models.stage2 import Stage2Discriminator, Stage2Generator


def build_generator(stage: int, cfg: ModelConfig) -> nn.Module:
    """A freshly initialised Stage-1 or Stage-2 generator."""
    if stage == 1:
        return Stage1Generator(cfg)
    if stage == 2:
        return Stage2Generator(cfg)
    raise ValueError(f"stage must be 1 or 2, got {stage!r}")


def build_discriminator(stage: int, cfg: ModelConfig) -> nn.Module:
    """A freshly initialised Stage-1 or Stage-2 discriminator."""
    if stage == 1:
        return Stage1Discriminator(cfg)
    if stage == 2:
        return Stage2Discriminator(cfg)
    raise ValueError(f"stage must be 1 or 2, got {stage!r}")
