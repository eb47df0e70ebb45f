"""Building blocks shared by the four networks (stackgan-pytorch-spec.md 3.1, 3.2, 3.4).

Every ``nn.Sequential`` keeps the official positions, parameter-free modules included, because
the positions are part of the state-dict keys (``upsample1.1.weight``, ``outlogits.3.bias``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


def conv3x3(in_channels: int, out_channels: int) -> nn.Conv2d:
    """3x3 convolution, stride 1, padding 1, no bias."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1, bias=False)


def down_conv(in_channels: int, out_channels: int) -> nn.Conv2d:
    """4x4 convolution, stride 2, padding 1, no bias: halves the spatial size."""
    return nn.Conv2d(in_channels, out_channels, kernel_size=4, stride=2, padding=1, bias=False)


def up_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """Official ``upBlock``: nearest 2x upsampling, conv3x3, BatchNorm, ReLU (doubles H and W)."""
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="nearest"),
        conv3x3(in_channels, out_channels),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def downsampling_layers(df_dim: int, halvings: int) -> list[nn.Module]:
    """The discriminators' image encoder as a flat layer list: ``halvings`` 4x4 stride-2
    convolutions from 3 to ``df_dim * 2**(halvings-1)`` channels, each followed by BatchNorm
    (except the first) and LeakyReLU(0.2) - the official positions ``encode_img.0``, ``.2``...
    """
    layers: list[nn.Module] = [down_conv(3, df_dim), nn.LeakyReLU(0.2, inplace=True)]
    for level in range(1, halvings):
        channels = df_dim * 2**level
        layers += [
            down_conv(channels // 2, channels),
            nn.BatchNorm2d(channels),
            nn.LeakyReLU(0.2, inplace=True),
        ]
    return layers


class ResBlock(nn.Module):
    """Official ``ResBlock``: ``relu(block(x) + x)`` with block = conv, BN, ReLU, conv, BN."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.block = nn.Sequential(
            conv3x3(channels, channels),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            conv3x3(channels, channels),
            nn.BatchNorm2d(channels),
        )
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        out = self.block(x)
        out += x  # BatchNorm's backward needs its input, not its output: in place is safe
        return self.relu(out)


class ConditioningAugmentation(nn.Module):
    """Conditioning augmentation: text embedding -> (c, mu, logvar), each (B, condition_dim).

    StackGAN-v1's ``CA_NET``: ``x = relu(fc(text))`` with fc to ``2 * condition_dim``;
    StackGAN-v2's (``gated``): ``x = gate(fc(text))`` with fc to ``4 * condition_dim`` (the gate
    halves it). ``x`` is split into mu (first half) and logvar (second half), and
    ``c = mu + exp(logvar / 2) * eps`` with ``eps ~ N(0, 1)`` drawn on every call unless given,
    in eval mode too (as both official codes do).
    """

    def __init__(self, text_dim: int, condition_dim: int, *, gated: bool = False) -> None:
        super().__init__()
        self.condition_dim = condition_dim
        self.fc = nn.Linear(text_dim, condition_dim * (4 if gated else 2), bias=True)
        # Parameter-free, so the state-dict keys (fc.*) are those of both official networks.
        self.activation = nn.GLU(dim=1) if gated else nn.ReLU()

    def forward(self, text_embedding: Tensor, eps: Tensor | None = None) -> tuple[Tensor, ...]:
        x = self.activation(self.fc(text_embedding))
        mu = x[:, : self.condition_dim]
        logvar = x[:, self.condition_dim :]
        std = torch.exp(0.5 * logvar)
        if eps is None:
            eps = torch.randn_like(std)
        elif eps.shape != std.shape:
            raise ValueError(f"eps must have shape {tuple(std.shape)}, got {tuple(eps.shape)}")
        return torch.addcmul(mu, eps, std), mu, logvar


class DiscriminatorHead(nn.Module):
    """Official ``D_GET_LOGITS``: 4x4 image features (+ condition) -> probability per sample.

    Conditional: the condition (B, condition_dim) is tiled to 4x4 and concatenated after the
    image features, then conv3x3 + BN + LeakyReLU, a 4x4/4 conv with bias, Sigmoid.
    Unconditional: the 4x4/4 conv with bias and Sigmoid only. Returns (B,) probabilities.
    """

    def __init__(self, df_dim: int, condition_dim: int, conditional: bool) -> None:
        super().__init__()
        self.df_dim = df_dim
        self.condition_dim = condition_dim
        self.conditional = conditional
        channels = df_dim * 8
        if conditional:
            self.outlogits = nn.Sequential(
                conv3x3(channels + condition_dim, channels),
                nn.BatchNorm2d(channels),
                nn.LeakyReLU(0.2, inplace=True),
                nn.Conv2d(channels, 1, kernel_size=4, stride=4),
                nn.Sigmoid(),
            )
        else:
            self.outlogits = nn.Sequential(
                nn.Conv2d(channels, 1, kernel_size=4, stride=4),
                nn.Sigmoid(),
            )

    def forward(self, h_code: Tensor, c_code: Tensor | None = None, logits: bool = False) -> Tensor:
        """(B,) probabilities, or with ``logits`` the raw scores before the final Sigmoid
        (for the lsgan, hinge and WGAN losses); the parameters are the same either way."""
        if self.conditional and c_code is not None:
            b, _, height, width = h_code.shape
            c_code = c_code.view(b, self.condition_dim, 1, 1).expand(-1, -1, height, width)
            h_code = torch.cat((h_code, c_code), 1)
        if logits:
            for layer in self.outlogits[:-1]:  # every layer but the Sigmoid
                h_code = layer(h_code)
            return h_code.view(-1)
        return self.outlogits(h_code).view(-1)
