"""Model families: what one kind of StackGAN brings to the shared training step and loop.

A family builds its generator and discriminators, says which images each discriminator sees,
weights the adversarial terms as its official recipe does, and draws the images of a sample
grid. :class:`~stackgan_cli.training.step.GANStep` and the loop do the rest, whatever the
family: the two StackGAN-v1 stages here, the StackGAN-v2 tree (one generator, a discriminator
per branch) in training/family_v2.py.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from stackgan_cli.models import ModelConfig, build_discriminator, build_generator
from stackgan_cli.models.config import IMAGE_SIZE, load_size
from stackgan_cli.models.losses import AdversarialLoss, discriminator_loss, generator_loss
from stackgan_cli.training.fast_layers import V1_GEMM

_V1_PARTS = {
    1: ("real", "wrong", "fake"),
    2: ("real", "wrong", "fake", "uncond_real", "uncond_fake"),
}


class StackGANv1:
    """One stage of StackGAN-v1: a generator and one discriminator at ``image_size``.

    Stage I maps (text, noise) to 64x64 images; Stage II refines the 64x64 image of a frozen,
    nested Stage-I generator (loaded from ``stage1_state``) into a 256x256 one.
    """

    generator_condition_grad = False  # the G loss sees mu.detach(), as the official v1 code
    wrong_images = False  # wrong pairs come from the real batch itself (in-batch shift)

    def __init__(self, stage: int) -> None:
        if stage not in IMAGE_SIZE:
            raise ValueError(f"stage must be 1 or 2, got {stage!r}")
        self.stage = stage
        self.name = f"stage {stage}"
        self.image_size = IMAGE_SIZE[stage]
        self.load_size = load_size(self.image_size)
        self.loss_parts = _V1_PARTS[stage]
        # Which convolutions run as matrix products on the CPU (fast_layers.py).
        self.cpu_gemm = V1_GEMM

    def build(
        self, cfg: ModelConfig, stage1_state: Mapping[str, Tensor] | None = None
    ) -> tuple[nn.Module, list[nn.Module]]:
        """A freshly initialised generator and its discriminators (one here)."""
        netG = build_generator(self.stage, cfg)
        if stage1_state is not None:
            # A Stage-I generator trained with --g-norm none has no BatchNorm entries.
            from stackgan_cli.training.network_options import strip_missing_batchnorm

            strip_missing_batchnorm(netG.STAGE1_G, stage1_state)
            netG.STAGE1_G.load_state_dict(stage1_state)
        return netG, [build_discriminator(self.stage, cfg)]

    def encoder(self, netD: nn.Module) -> nn.Module:
        """The module whose call gives ``netD``'s image features (here ``netD`` itself)."""
        return netD

    def generate(
        self, netG: Callable, text: Tensor, noise: Tensor
    ) -> tuple[list[Tensor], Tensor, Tensor]:
        """The images each discriminator judges, and the conditioning mean and log-variance."""
        _, fake, mu, logvar = netG(text, noise)
        return [fake], mu, logvar

    def real_views(self, real: Tensor) -> list[Tensor]:
        """The real batch as each discriminator sees it."""
        return [real]

    def discriminator_loss(
        self, netD: Any, real: Tensor, fake: Tensor, conditions: Tensor, loss: AdversarialLoss
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """One discriminator's loss and its named parts, weighted as the official stage."""
        return discriminator_loss(netD, real, fake, conditions, stage=self.stage, loss=loss)

    def generator_loss(
        self, netD: Any, fake: Tensor, conditions: Tensor, loss: AdversarialLoss
    ) -> Tensor:
        """The generator's adversarial loss against one discriminator."""
        return generator_loss(netD, fake, conditions, stage=self.stage, loss=loss)

    def generator_extra_loss(self, fakes: Sequence[Tensor]) -> Tensor | None:
        """A further generator term over all outputs: none in StackGAN-v1."""
        return None

    @torch.no_grad()
    def sample(
        self, netG: nn.Module, text: Tensor, noise: Tensor, eps: Sequence[Tensor]
    ) -> list[Tensor]:
        """Images for a sample grid, one tensor per output shown (here the stage's images).

        ``eps`` holds fixed conditioning noise: ``eps[0]`` for the generator's own
        conditioning augmentation, ``eps[1]`` for the nested Stage-I generator of Stage II.
        """
        fixed = eps[0] if self.stage == 1 else (eps[1], eps[0])
        _, images, _, _ = netG.forward(text, noise, fixed)
        return [images]


def family_for(cfg: Any) -> Any:
    """The family a TrainConfig trains: StackGAN-v2 for ``arch`` "v2", else the StackGAN-v1
    stage ``cfg.stage``. A plain stage number (1 or 2) is accepted too."""
    if isinstance(cfg, int):
        return StackGANv1(cfg)
    if getattr(cfg, "arch", "v1") == "v2":
        from stackgan_cli.training.family_v2 import StackGANv2

        return StackGANv2(
            cfg.branches or 3, uncond_coeff=cfg.uncond_coeff, color_coeff=cfg.color_coeff
        )
    return StackGANv1(cfg.stage)
