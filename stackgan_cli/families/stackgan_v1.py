"""StackGAN-v1: Stage I (text -> 64x64) and Stage II (a frozen Stage I's 64x64 -> 256x256).

Each stage trains on its own with one discriminator (stackgan-pytorch-spec.md section 4): the
mismatched pairs come from the real batch itself (an in-batch shift inside the loss), and the
G loss sees ``mu.detach()``. A Stage-II generator nests its Stage-I generator (``STAGE1_G``),
whose conditioning-augmentation noise is ``eps[0]`` of a sample; its own is ``eps[1]``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from torch import Tensor, nn

from stackgan_cli.errors import StackGANError, UsageError
from stackgan_cli.families.base import Family, GeneratorOutput, RealView, SampleNoise
from stackgan_cli.families.registry import FAMILIES
from stackgan_cli.models.config import IMAGE_SIZE
from stackgan_cli.models.losses import AdversarialLoss, discriminator_loss, generator_loss
from stackgan_cli.models.official import generator_from_state_dict
from stackgan_cli.models.stage1 import Stage1Discriminator, Stage1Generator
from stackgan_cli.models.stage2 import Stage2Discriminator, Stage2Generator

# What StackGAN-v1 trains with on the CPU (training/fast_layers.py): its own measured threshold,
# no upsampling convolutions as products and one batched product for frozen weights, so that the
# v1 defaults train bit-identically to earlier releases (the rewrites change float rounding).
V1_GEMM = {"min_weights": 1 << 24, "upsampling": False, "frozen_product": False}


class _StackGANv1(Family):
    """What both stages share; ``stage`` and the network classes differ."""

    stage: int
    discriminator_class: type[nn.Module]
    ca_draws = 2  # a sample's CA noise for Stage I (eps[0]) and Stage II (eps[1])
    official_name = re.compile(r"netG_epoch_(\d+)\.pth$")  # StackGAN-Pytorch counts epochs
    cpu_gemm = V1_GEMM

    @property
    def label(self) -> str:
        return f"Stage-{'I' * self.stage} generator"

    def describe(self) -> str:
        return self.label

    @property
    def title(self) -> str:
        return f"stage {self.stage}"

    def output_sizes(self) -> tuple[int, ...]:
        return tuple(IMAGE_SIZE[stage] for stage in range(1, self.stage + 1))

    def output_suffix(self, output: int) -> str:
        return f"_stage{output}"

    def file_entries(self) -> dict[str, Any]:
        return {**super().file_entries(), "stage": self.stage}

    @classmethod
    def from_official(cls, state: Mapping[str, Tensor], name: str) -> tuple[Family, nn.Module]:
        stage, cfg, generator = generator_from_state_dict(state, name=name)
        family = StageOne if stage == 1 else StageTwo
        return family(cfg), generator

    @classmethod
    def check_train_options(cls, cfg: Any) -> None:
        if cfg.branches is not None:
            raise UsageError("--branches: only --arch v2 has branches (v1 trains one --stage)")

    def build_networks(
        self, stage1_state: Mapping[str, Tensor] | None = None
    ) -> tuple[nn.Module, list[nn.Module]]:
        return self.generator_class(self.cfg), [self.discriminator_class(self.cfg)]

    def generate(self, netG: Callable, text: Tensor, noise: Tensor) -> GeneratorOutput:
        _, fake, mu, logvar = netG(text, noise)
        return GeneratorOutput(images=[fake], mu=mu, logvar=logvar)

    def discriminator_loss(
        self, netD: Any, real: RealView, fake: Tensor, conditions: Tensor, loss: AdversarialLoss
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """Weighted as the official stage (wrong pairs shifted within the real batch)."""
        return discriminator_loss(netD, real.images, fake, conditions, stage=self.stage, loss=loss)

    def generator_loss(
        self, netD: Any, fake: Tensor, conditions: Tensor, loss: AdversarialLoss
    ) -> Tensor:
        return generator_loss(netD, fake, conditions, stage=self.stage, loss=loss)


class StageOne(_StackGANv1):
    """StackGAN-v1 Stage I: 64x64 images from (text, noise)."""

    spec = FAMILIES["v1-stage1"]
    stage = 1
    generator_class = Stage1Generator
    discriminator_class = Stage1Discriminator

    @classmethod
    def recognises_official(cls, state: Mapping[str, Tensor]) -> bool:
        return any(key.startswith("ca_net.") for key in state) and not any(
            key.startswith(("STAGE1_G.", "h_net1.")) for key in state
        )

    @classmethod
    def check_train_options(cls, cfg: Any) -> None:
        super().check_train_options(cfg)
        if cfg.stage1_ckpt:
            raise UsageError("--stage1-ckpt: only Stage 2 uses a Stage-I generator")

    def sample(
        self, generator: nn.Module, text: Tensor, noise: SampleNoise, upto: int | None = None
    ) -> list[Tensor]:
        _, images, _, _ = generator.forward(text, noise.z, noise.eps[0])
        return [images]


class StageTwo(_StackGANv1):
    """StackGAN-v1 Stage II: 256x256 images refining a frozen, nested Stage-I generator's."""

    spec = FAMILIES["v1-stage2"]
    stage = 2
    generator_class = Stage2Generator
    discriminator_class = Stage2Discriminator
    loss_parts = ("real", "wrong", "fake", "uncond_real", "uncond_fake")
    nested_family = "v1-stage1"  # training refines the --stage1-ckpt generator

    @classmethod
    def recognises_official(cls, state: Mapping[str, Tensor]) -> bool:
        return any(key.startswith("STAGE1_G.") for key in state)

    @classmethod
    def check_train_options(cls, cfg: Any) -> None:
        super().check_train_options(cfg)
        if not cfg.stage1_ckpt:
            raise UsageError(
                "--stage1-ckpt: Stage 2 refines a Stage-I generator: pass the --out file (or "
                "RUN_DIR/generator.pt) of `stackgan train --stage 1`"
            )

    def build_networks(
        self, stage1_state: Mapping[str, Tensor] | None = None
    ) -> tuple[nn.Module, list[nn.Module]]:
        """Stage II with its nested Stage-I generator loaded from ``stage1_state``."""
        netG, netDs = super().build_networks()
        if stage1_state is None:
            raise StackGANError("Stage II needs the weights of the Stage-I generator it refines")
        # A Stage-I generator trained with --g-norm none has no BatchNorm entries.
        from stackgan_cli.models.network_options import strip_missing_batchnorm

        strip_missing_batchnorm(netG.STAGE1_G, stage1_state)
        netG.STAGE1_G.load_state_dict(stage1_state)
        return netG, netDs

    def frozen_modules(self, netG: nn.Module) -> tuple[nn.Module, ...]:
        return (netG.STAGE1_G,)

    def sample(
        self, generator: nn.Module, text: Tensor, noise: SampleNoise, upto: int | None = None
    ) -> list[Tensor]:
        if upto == 1:
            _, sketch, _, _ = generator.STAGE1_G.forward(text, noise.z, noise.eps[0])
            return [sketch]
        sketch, images, _, _ = generator.forward(text, noise.z, (noise.eps[0], noise.eps[1]))
        return [sketch, images]
