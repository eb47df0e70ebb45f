"""The StackGAN-v2 (StackGAN++) family: one tree generator, one discriminator per branch.

The official birds recipe (stackgan-v2-spec.md section 4) on the shared training step: one G
forward gives every branch's images, each discriminator D_i judges branch i's images against
the real batch resized to its size, and G is stepped once against all of them.

Real images: the sampler crops 256 px squares from the stored 304 px images (64 from 76 for a
one-branch tree) and :meth:`StackGANv2.real_views` resizes that same crop down to each branch's
size with bilinear, antialiased ``F.interpolate`` on the float images. The official loader
resizes the uint8 PIL crop with PIL's bilinear filter (also antialiased when shrinking), so
the only difference is that our smaller views are not rounded to 8 bits. A two-branch tree
(official: 128 px crops of 152 px images, which are not stored) uses 256 px crops of the
304 px images shrunk to 128 and 64: the same relative crop.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stackgan_cli.models.config import ModelConfig, load_size
from stackgan_cli.models.discriminator_v2 import StackGANv2Discriminator
from stackgan_cli.models.generator_v2 import StackGANv2Generator, branch_image_sizes
from stackgan_cli.models.losses import AdversarialLoss

V2_PARTS = ("real", "wrong", "fake", "uncond_real", "uncond_wrong", "uncond_fake")


class DiscriminatorEncoder(nn.Module):
    """A v2 discriminator's image encoder as a module whose ``forward`` is ``netD.encode``:
    what the training step (and a DDP wrapper) calls to get the features. It owns no
    parameters of its own, so its state dict is the discriminator's under ``netD.``."""

    def __init__(self, netD: StackGANv2Discriminator) -> None:
        super().__init__()
        self.netD = netD

    def forward(self, images: Tensor) -> Tensor:
        return self.netD.encode(images)


class StackGANv2:
    """StackGAN-v2 with ``branches`` branches (images of 64, 128, 256 px, smallest first).

    ``uncond_coeff`` weights the unconditional terms and ``color_coeff`` the colour-consistency
    term between adjacent branches (0 = off, the birds recipe).
    """

    # The G loss conditions the discriminators on mu itself, not mu.detach() (spec section 4).
    generator_condition_grad = True

    def __init__(self, branches: int = 3, *, uncond_coeff: float = 1.0, color_coeff: float = 0.0):
        self.branches = int(branches)
        self.sizes = branch_image_sizes(self.branches)
        self.uncond_coeff = float(uncond_coeff)
        self.color_coeff = float(color_coeff)
        self.stage = None
        self.name = f"StackGAN-v2 ({self.branches} branch{'es' if self.branches > 1 else ''})"
        # One branch crops 64 from 76 as the official; more branches crop 256 from 304.
        self.image_size = 64 if self.branches == 1 else 256
        self.load_size = load_size(self.image_size)
        self.loss_parts = V2_PARTS
        self.cpu_gemm: dict[str, Any] = {}  # fast_layers.py's defaults, measured on v2
        self.wrong_images = True  # the sampler draws a wrong (other-class) batch too

    def build(
        self, cfg: ModelConfig, stage1_state: Mapping[str, Tensor] | None = None
    ) -> tuple[nn.Module, list[nn.Module]]:
        """A freshly initialised (orthogonal) tree generator and one discriminator per branch."""
        if stage1_state is not None:
            raise ValueError("StackGAN-v2 does not nest a Stage-I generator")
        if cfg.branch_num != self.branches:
            raise ValueError(f"the model has {cfg.branch_num} branches, the family {self.branches}")
        netG = StackGANv2Generator(cfg)
        return netG, [StackGANv2Discriminator(cfg, size) for size in self.sizes]

    def encoder(self, netD: nn.Module) -> nn.Module:
        """The module whose call gives ``netD``'s image features."""
        return DiscriminatorEncoder(netD)

    def generate(
        self, netG: Callable, text: Tensor, noise: Tensor
    ) -> tuple[list[Tensor], Tensor, Tensor]:
        """Every branch's images (smallest first), and the conditioning mean and log-variance."""
        images, mu, logvar = netG(text, noise)
        return list(images), mu, logvar

    def real_views(self, real: Tensor, wrong: Tensor) -> list[tuple[Tensor, Tensor]]:
        """(real, wrong) pairs at each branch's size, each shrunk from the same crop."""
        return [(_resize(real, size), _resize(wrong, size)) for size in self.sizes]

    def discriminator_loss(
        self,
        netD: Any,
        real_view: tuple[Tensor, Tensor],
        fake: Tensor,
        conditions: Tensor,
        loss: AdversarialLoss,
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """D_i's loss: cond real -> 1, wrong -> 0, fake -> 0, plus ``uncond_coeff`` x
        [uncond real -> 1, wrong -> 1 (a wrong image is still real), fake -> 0]; with
        ``uncond_coeff`` 0 the official ``real + 0.5 (wrong + fake)``."""
        real, wrong = real_view
        conditions = conditions.detach()
        # Three separate encoder passes (separate BatchNorm statistics), in the official order.
        features = [netD(real), netD(wrong), netD(fake.detach())]
        cond = [netD.get_cond_logits(f, conditions) for f in features]
        parts = {
            "real": loss.real(cond[0]),
            "wrong": loss.fake(cond[1]),
            "fake": loss.fake(cond[2]),
        }
        coeff = self.uncond_coeff
        with torch.set_grad_enabled(coeff > 0 and torch.is_grad_enabled()):
            uncond = [netD.get_uncond_logits(f) for f in features]
            parts["uncond_real"] = loss.real(uncond[0])
            parts["uncond_wrong"] = loss.real(uncond[1])
            parts["uncond_fake"] = loss.fake(uncond[2])
        if coeff > 0:
            err_d = (
                (parts["real"] + coeff * parts["uncond_real"])
                + (parts["wrong"] + coeff * parts["uncond_wrong"])
                + (parts["fake"] + coeff * parts["uncond_fake"])
            )
        else:
            err_d = parts["real"] + 0.5 * (parts["wrong"] + parts["fake"])
        return err_d, {name: value.detach() for name, value in parts.items()}

    def generator_loss(
        self, netD: Any, fake: Tensor, conditions: Tensor, loss: AdversarialLoss
    ) -> Tensor:
        """G's loss against D_i: cond(fake) -> 1 plus ``uncond_coeff`` x uncond(fake) -> 1."""
        features = netD(fake)
        err_g = loss.generator(netD.get_cond_logits(features, conditions))
        if self.uncond_coeff > 0:
            err_g = err_g + self.uncond_coeff * loss.generator(netD.get_uncond_logits(features))
        return err_g

    def generator_extra_loss(self, fakes: Sequence[Tensor]) -> Tensor | None:
        """Colour consistency between adjacent branches (the smaller one detached), largest
        pair first as the official: ``color (MSE(means) + 5 MSE(covariances))``; None when
        ``color_coeff`` is 0."""
        if self.color_coeff <= 0 or len(fakes) < 2:
            return None
        total = None
        for k in range(len(fakes) - 1, 0, -1):
            mu1, cov1 = _mean_covariance(fakes[k].float())
            mu2, cov2 = _mean_covariance(fakes[k - 1].detach().float())
            term = self.color_coeff * (F.mse_loss(mu1, mu2) + 5.0 * F.mse_loss(cov1, cov2))
            total = term if total is None else total + term
        return total

    @torch.no_grad()
    def sample(
        self, netG: nn.Module, text: Tensor, noise: Tensor, eps: Sequence[Tensor]
    ) -> list[Tensor]:
        """Every branch's images for a sample grid (shown side by side), CA noise ``eps[0]``."""
        images, _, _ = netG.forward(text, noise, eps[0])
        return list(images)


def _resize(images: Tensor, size: int) -> Tensor:
    if images.shape[-1] == size:
        return images
    resized = F.interpolate(
        images, size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )
    return resized.contiguous(memory_format=_memory_format(images))


def _memory_format(images: Tensor) -> torch.memory_format:
    if images.is_contiguous(memory_format=torch.channels_last) and not images.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def _mean_covariance(images: Tensor) -> tuple[Tensor, Tensor]:
    """Per image: the channel means (B, 3) and the 3x3 pixel covariance (B, 3, 3)."""
    batch, channels, height, width = images.shape
    pixels = height * width
    mu = images.mean(dim=(2, 3), keepdim=True)
    centred = (images - mu).reshape(batch, channels, pixels)
    covariance = torch.bmm(centred, centred.transpose(1, 2)) / pixels
    return mu.reshape(batch, channels), covariance
