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

import re
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stackgan_cli.data.batch import Batch
from stackgan_cli.errors import StackGANError, UsageError
from stackgan_cli.families.base import Family, GeneratorOutput, RealView, SampleNoise
from stackgan_cli.families.registry import FAMILIES
from stackgan_cli.models.config import ModelConfig
from stackgan_cli.models.discriminator_v2 import StackGANv2Discriminator
from stackgan_cli.models.generator_v2 import MAX_BRANCHES, StackGANv2Generator, branch_image_sizes
from stackgan_cli.models.losses import AdversarialLoss
from stackgan_cli.models.memory import memory_format_of
from stackgan_cli.models.official_v2 import v2_generator_from_state_dict


class DiscriminatorEncoder(nn.Module):
    """A v2 discriminator's image encoder as a module whose ``forward`` is ``netD.encode``:
    what the training step (and a DDP wrapper) calls to get the features. It owns no
    parameters of its own, so its state dict is the discriminator's under ``netD.``."""

    def __init__(self, netD: StackGANv2Discriminator) -> None:
        super().__init__()
        self.netD = netD

    def forward(self, images: Tensor) -> Tensor:
        return self.netD.encode(images)


class StackGANv2(Family):
    """StackGAN-v2 with ``cfg.branch_num`` branches (images of 64, 128, 256 px, smallest first).

    ``uncond_coeff`` weights the unconditional terms and ``color_coeff`` the colour-consistency
    term between adjacent branches (0 = off, the birds recipe).
    """

    spec = FAMILIES["v2"]
    generator_class = StackGANv2Generator
    file_version = 2  # older readers accept version-1 files only, and refuse these cleanly
    official_name = re.compile(r"netG_(\d+)\.pth$")  # the official trainer counts iterations
    official_count = "iteration"
    sheet_shows_every_output = True
    loss_parts = ("real", "wrong", "fake", "uncond_real", "uncond_wrong", "uncond_fake")
    # The G loss conditions the discriminators on mu itself, not mu.detach() (spec section 4).
    generator_condition_grad = True
    wrong_images = True  # the sampler draws a wrong (other-class) batch too
    cpu_gemm: Mapping[str, Any] = {}  # fast_layers.py's defaults, measured on v2

    def __init__(
        self, cfg: ModelConfig, *, uncond_coeff: float = 1.0, color_coeff: float = 0.0
    ) -> None:
        super().__init__(cfg)
        self.sizes = branch_image_sizes(cfg.branch_num)
        self.uncond_coeff = float(uncond_coeff)
        self.color_coeff = float(color_coeff)

    @property
    def title(self) -> str:
        branches = self.cfg.branch_num
        return f"StackGAN-v2 ({branches} branch{'es' if branches > 1 else ''})"

    def output_sizes(self) -> tuple[int, ...]:
        return self.sizes

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "branches": self.cfg.branch_num}

    def generation_batch(self, output: int) -> int:
        return 16  # every pass makes every branch, up to 256 px

    def file_entries(self) -> dict[str, Any]:
        # "arch" and "stage" as the files of earlier versions, which read no "family"
        return {**super().file_entries(), "arch": "v2", "stage": None}

    def sample(
        self, generator: nn.Module, text: Tensor, noise: SampleNoise, upto: int | None = None
    ) -> list[Tensor]:
        images, _, _ = generator.forward(text, noise.z, noise.eps[0])
        return list(images)[:upto]

    @classmethod
    def recognises_official(cls, state: Mapping[str, Tensor]) -> bool:
        # AttnGAN's generator has the same first stage; its later stages attend (".att.").
        return any(key.startswith("h_net1.") for key in state) and not any(
            ".att." in key for key in state
        )

    @classmethod
    def from_official(cls, state: Mapping[str, Tensor], name: str) -> tuple[Family, nn.Module]:
        cfg, generator = v2_generator_from_state_dict(state, name=name)
        return cls(cfg), generator

    # --- training --------------------------------------------------------------------------
    @classmethod
    def check_train_options(cls, cfg: Any) -> None:
        if cfg.branches not in range(1, MAX_BRANCHES + 1):
            raise UsageError(f"--branches: must be 1, 2 or 3, got {cfg.branches}")
        if cfg.stage1_ckpt:
            raise UsageError("--stage1-ckpt: only --arch v1 Stage 2 uses a Stage-I generator")
        if cfg.uncond_coeff < 0 or cfg.color_coeff < 0:
            raise UsageError("--uncond-coeff/--color-coeff: weights must not be negative")

    @classmethod
    def model_fields(cls, cfg: Any) -> dict[str, int]:
        return {"branch_num": int(cfg.branches)}

    @classmethod
    def for_training(cls, train_cfg: Any, cfg: ModelConfig) -> Family:
        return cls(cfg, uncond_coeff=train_cfg.uncond_coeff, color_coeff=train_cfg.color_coeff)

    @property
    def image_size(self) -> int:
        # One branch crops 64 from 76 as the official; more branches crop 256 from 304.
        return 64 if self.cfg.branch_num == 1 else 256

    def build_networks(
        self, stage1_state: Mapping[str, Tensor] | None = None
    ) -> tuple[nn.Module, list[nn.Module]]:
        """A freshly initialised (orthogonal) tree generator and one discriminator per branch."""
        if stage1_state is not None:
            raise StackGANError("StackGAN-v2 does not nest a Stage-I generator")
        netG = StackGANv2Generator(self.cfg)
        return netG, [StackGANv2Discriminator(self.cfg, size) for size in self.sizes]

    def encoder(self, netD: nn.Module) -> nn.Module:
        return DiscriminatorEncoder(netD)

    def generate(self, netG: Callable, text: Tensor, noise: Tensor) -> GeneratorOutput:
        images, mu, logvar = netG(text, noise)
        return GeneratorOutput(images=list(images), mu=mu, logvar=logvar)

    def real_views(self, batch: Batch) -> list[RealView]:
        """(real, wrong) at each branch's size, each shrunk from the same crop."""
        if batch.wrong is None:
            raise ValueError("StackGAN-v2 batches carry wrong images (WrongImageSampler)")
        return [
            RealView(resize_images(batch.images, size), resize_images(batch.wrong, size))
            for size in self.sizes
        ]

    @property
    def gp_uncond(self) -> bool:
        return self.uncond_coeff > 0

    def discriminator_loss(
        self, netD: Any, real: RealView, fake: Tensor, conditions: Tensor, loss: AdversarialLoss
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """D_i's loss: cond real -> 1, wrong -> 0, fake -> 0, plus ``uncond_coeff`` x
        [uncond real -> 1, wrong -> 1 (a wrong image is still real), fake -> 0]; with
        ``uncond_coeff`` 0 the official ``real + 0.5 (wrong + fake)``."""
        conditions = conditions.detach()
        # Three separate encoder passes (separate BatchNorm statistics), in the official order.
        features = [netD(real.images), netD(real.wrong), netD(fake.detach())]
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

    @property
    def generator_term_names(self) -> tuple[str, ...]:
        return ("color",) if self.color_coeff > 0 and self.cfg.branch_num > 1 else ()

    def generator_terms(self, output: GeneratorOutput) -> dict[str, Tensor]:
        """``color``: colour consistency between adjacent branches (the smaller one detached),
        largest pair first as the official: ``color_coeff (MSE(means) + 5 MSE(covariances))``;
        none when ``color_coeff`` is 0."""
        if not self.generator_term_names:
            return {}
        fakes, total = output.images, None
        for k in range(len(fakes) - 1, 0, -1):
            mu1, cov1 = _mean_covariance(fakes[k].float())
            mu2, cov2 = _mean_covariance(fakes[k - 1].detach().float())
            term = self.color_coeff * (F.mse_loss(mu1, mu2) + 5.0 * F.mse_loss(cov1, cov2))
            total = term if total is None else total + term
        return {"color": total}


def resize_images(images: Tensor, size: int) -> Tensor:
    """``images`` at ``size`` px: bilinear, antialiased when shrinking, same memory format."""
    if images.shape[-1] == size:
        return images
    resized = F.interpolate(
        images, size=(size, size), mode="bilinear", align_corners=False, antialias=True
    )
    return resized.contiguous(memory_format=memory_format_of(images))


def _mean_covariance(images: Tensor) -> tuple[Tensor, Tensor]:
    """Per image: the channel means (B, 3) and the 3x3 pixel covariance (B, 3, 3)."""
    batch, channels, height, width = images.shape
    pixels = height * width
    mu = images.mean(dim=(2, 3), keepdim=True)
    centred = (images - mu).reshape(batch, channels, pixels)
    covariance = torch.bmm(centred, centred.transpose(1, 2)) / pixels
    return mu.reshape(batch, channels), covariance
