"""The StackGAN-v2 (StackGAN++) generator: one tree of stages, one image per branch
(stackgan-v2-spec.md section 2). Submodule names and positions are the official ones (``ca_net``,
``h_net1``, ``img_net1``, ...), so official state dicts load as they are."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from stackgan_cli.models.config import ModelConfig
from stackgan_cli.models.init import init_weights_v2
from stackgan_cli.models.layers import ConditioningAugmentation, conv3x3
from stackgan_cli.models.layers_v2 import (
    GatedResBlock,
    gate,
    gated_block3x3,
    gated_up_block,
    tile_condition,
)

BASE_IMAGE_SIZE = 64
MAX_BRANCHES = 3


def branch_image_sizes(branch_num: int) -> tuple[int, ...]:
    """Side lengths of the images of a ``branch_num``-branch generator: 64, 128, 256."""
    if isinstance(branch_num, bool) or branch_num not in range(1, MAX_BRANCHES + 1):
        raise ValueError(f"branch_num must be 1, 2 or 3, got {branch_num!r}")
    return tuple(BASE_IMAGE_SIZE * 2**branch for branch in range(branch_num))


class InitialStage(nn.Module):
    """First stage (``h_net1``): cat(c, z) -> (B, gf_dim, 64, 64) features.

    A bias-free linear layer to ``channels * 4 * 4 * 2`` values, BatchNorm1d and the gate make
    a (B, channels, 4, 4) map (channels = 16 * gf_dim), then four gated up-blocks halve the
    channels while doubling the side.
    """

    def __init__(self, channels: int, condition_dim: int, z_dim: int) -> None:
        super().__init__()
        self.channels = channels
        self.fc = nn.Sequential(
            nn.Linear(condition_dim + z_dim, channels * 4 * 4 * 2, bias=False),
            nn.BatchNorm1d(channels * 4 * 4 * 2),
            gate(),
        )
        self.upsample1 = gated_up_block(channels, channels // 2)
        self.upsample2 = gated_up_block(channels // 2, channels // 4)
        self.upsample3 = gated_up_block(channels // 4, channels // 8)
        self.upsample4 = gated_up_block(channels // 8, channels // 16)

    def forward(self, c_code: Tensor, noise: Tensor) -> Tensor:
        h_code = self.fc(torch.cat((c_code, noise), 1)).view(-1, self.channels, 4, 4)
        h_code = self.upsample1(h_code)
        h_code = self.upsample2(h_code)
        h_code = self.upsample3(h_code)
        return self.upsample4(h_code)


class NextStage(nn.Module):
    """A later stage (``h_net2``, ``h_net3``): (B, channels, s, s) features and the condition ->
    (B, channels // 2, 2s, 2s) features.

    The condition is tiled over the map and put in front of the features, then a gated 3x3
    joint block, ``r_num`` gated residual blocks and a gated up-block.
    """

    def __init__(self, channels: int, condition_dim: int, r_num: int) -> None:
        super().__init__()
        self.jointConv = gated_block3x3(condition_dim + channels, channels)
        self.residual = nn.Sequential(*(GatedResBlock(channels) for _ in range(r_num)))
        self.upsample = gated_up_block(channels, channels // 2)

    def forward(self, h_code: Tensor, c_code: Tensor) -> Tensor:
        c_map = tile_condition(c_code, h_code.size(2), h_code.size(3))
        h_code = self.jointConv(torch.cat((c_map, h_code), 1))
        h_code = self.residual(h_code)
        return self.upsample(h_code)


class ImageOutput(nn.Module):
    """A branch's image (``img_net{i}``): conv3x3 to 3 channels, tanh -> [-1, 1]."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.img = nn.Sequential(conv3x3(channels, 3), nn.Tanh())

    def forward(self, h_code: Tensor) -> Tensor:
        return self.img(h_code)


class StackGANv2Generator(nn.Module):
    """Text embedding (B, text_dim) + noise (B, z_dim) -> one image per branch.

    ``forward(text_embedding, noise, eps=None)`` returns ``(images, mu, logvar)``: ``images`` is
    a list of ``cfg.branch_num`` tensors (B, 3, 64 * 2**i, 64 * 2**i) in [-1, 1], smallest
    first; mu/logvar (B, condition_dim) come from the conditioning augmentation. ``eps``
    (B, condition_dim) fixes its noise; otherwise it is drawn on every call, in eval mode too.
    The argument order is (text, noise) like the StackGAN-v1 networks of this package; the
    official network is called (noise, text).

    Widths: the first stage runs at ``16 * gf_dim`` channels down to ``gf_dim`` at 64x64; the
    second stage ends at ``gf_dim // 2`` channels, the third at ``gf_dim // 4``. ``df_dim`` is
    not used. Weights get the StackGAN-v2 initialisation (:func:`init_weights_v2`).
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.image_sizes = branch_image_sizes(cfg.branch_num)
        ngf = cfg.gf_dim
        self.ca_net = ConditioningAugmentation(cfg.text_dim, cfg.condition_dim, gated=True)
        self.h_net1 = InitialStage(ngf * 16, cfg.condition_dim, cfg.z_dim)
        self.img_net1 = ImageOutput(ngf)
        if cfg.branch_num > 1:
            self.h_net2 = NextStage(ngf, cfg.condition_dim, cfg.r_num)
            self.img_net2 = ImageOutput(ngf // 2)
        if cfg.branch_num > 2:
            self.h_net3 = NextStage(ngf // 2, cfg.condition_dim, cfg.r_num)
            self.img_net3 = ImageOutput(ngf // 4)
        init_weights_v2(self)

    def forward(
        self, text_embedding: Tensor, noise: Tensor, eps: Tensor | None = None
    ) -> tuple[list[Tensor], Tensor, Tensor]:
        c_code, mu, logvar = self.ca_net(text_embedding, eps)
        h_code = self.h_net1(c_code, noise)
        images = [self.img_net1(h_code)]
        for branch in range(2, self.cfg.branch_num + 1):
            h_code = getattr(self, f"h_net{branch}")(h_code, c_code)
            images.append(getattr(self, f"img_net{branch}")(h_code))
        return images, mu, logvar
