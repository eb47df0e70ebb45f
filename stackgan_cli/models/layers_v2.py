"""Building blocks of the StackGAN-v2 (StackGAN++) networks (stackgan-v2-spec.md sections 2 and 3).

The generator's only activation is the gate ``first_half * sigmoid(second_half)`` over the
channels, which is exactly ``nn.GLU(dim=1)``; every gated layer therefore produces twice the
channels it hands on. As in :mod:`stackgan_cli.models.layers`, each ``nn.Sequential`` keeps the
official positions, parameter-free modules included, because they are part of the state-dict keys.
"""

from __future__ import annotations

from torch import Tensor, nn

from stackgan_cli.models.layers import conv3x3, down_conv


def gate() -> nn.GLU:
    """The generator's activation: halves the channels (dim 1), ``a * sigmoid(b)``."""
    return nn.GLU(dim=1)


def gated_up_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Nearest 2x upsampling, conv3x3 to ``2 * out_channels``, BatchNorm, gate."""
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        conv3x3(in_channels, out_channels * 2),
        nn.BatchNorm2d(out_channels * 2),
        gate(),
    )


def gated_block3x3(in_channels: int, out_channels: int) -> nn.Sequential:
    """conv3x3 to ``2 * out_channels``, BatchNorm, gate: keeps the spatial size."""
    return nn.Sequential(
        conv3x3(in_channels, out_channels * 2),
        nn.BatchNorm2d(out_channels * 2),
        gate(),
    )


def leaky_block3x3(in_channels: int, out_channels: int) -> nn.Sequential:
    """The discriminators' conv3x3, BatchNorm, LeakyReLU(0.2): keeps the spatial size."""
    return nn.Sequential(
        conv3x3(in_channels, out_channels),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(0.2, inplace=True),
    )


def leaky_down_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """4x4 stride-2 conv, BatchNorm, LeakyReLU(0.2): halves the spatial size."""
    return nn.Sequential(
        down_conv(in_channels, out_channels),
        nn.BatchNorm2d(out_channels),
        nn.LeakyReLU(0.2, inplace=True),
    )


def logit_conv(channels: int) -> nn.Sequential:
    """A discriminator output: 4x4 stride-4 conv with bias (4x4 features -> 1 logit), Sigmoid.

    Index 0 gives the raw logit, the whole sequence the probability."""
    return nn.Sequential(nn.Conv2d(channels, 1, kernel_size=4, stride=4), nn.Sigmoid())


def tile_condition(condition: Tensor, height: int, width: int) -> Tensor:
    """(B, C) condition -> (B, C, height, width), the same vector at every position."""
    return condition[:, :, None, None].expand(-1, -1, height, width)


class GatedResBlock(nn.Module):
    """Residual block ``x + block(x)``, block = conv, BN, gate, conv, BN; no activation after the
    sum (unlike StackGAN-v1's ReLU)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            conv3x3(channels, channels * 2),
            nn.BatchNorm2d(channels * 2),
            gate(),
            conv3x3(channels, channels),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.block(x) + x
