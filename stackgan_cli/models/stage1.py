"""Stage-I networks at 64x64: the official ``STAGE1_G`` and ``STAGE1_D`` (stackgan-pytorch-spec.md
3.3, 3.5)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from stackgan_cli.models.config import ModelConfig
from stackgan_cli.models.init import init_weights
from stackgan_cli.models.layers import (
    ConditioningAugmentation,
    DiscriminatorHead,
    conv3x3,
    downsampling_layers,
    up_block,
)


class Stage1Generator(nn.Module):
    """Text embedding (B, text_dim) + noise (B, z_dim) -> 64x64 image in [-1, 1].

    ``forward(text_embedding, noise, eps=None)`` returns ``(None, image, mu, logvar)`` like the
    official network; ``eps`` (B, condition_dim) fixes the conditioning-augmentation noise.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ngf = cfg.gf_dim * 8
        self.ngf = ngf
        self.ca_net = ConditioningAugmentation(cfg.text_dim, cfg.condition_dim)
        self.fc = nn.Sequential(
            nn.Linear(cfg.z_dim + cfg.condition_dim, ngf * 4 * 4, bias=False),
            nn.BatchNorm1d(ngf * 4 * 4),
            nn.ReLU(inplace=True),
        )
        self.upsample1 = up_block(ngf, ngf // 2)
        self.upsample2 = up_block(ngf // 2, ngf // 4)
        self.upsample3 = up_block(ngf // 4, ngf // 8)
        self.upsample4 = up_block(ngf // 8, ngf // 16)
        self.img = nn.Sequential(conv3x3(ngf // 16, 3), nn.Tanh())
        init_weights(self)

    def forward(
        self, text_embedding: Tensor, noise: Tensor, eps: Tensor | None = None
    ) -> tuple[None, Tensor, Tensor, Tensor]:
        c_code, mu, logvar = self.ca_net(text_embedding, eps)
        h_code = self.fc(torch.cat((noise, c_code), 1)).view(-1, self.ngf, 4, 4)
        h_code = self.upsample1(h_code)
        h_code = self.upsample2(h_code)
        h_code = self.upsample3(h_code)
        h_code = self.upsample4(h_code)
        return None, self.img(h_code), mu, logvar


class Stage1Discriminator(nn.Module):
    """64x64 image -> (B, 8*df_dim, 4, 4) features; ``get_cond_logits(features, condition)``
    gives probabilities (B,). There is no unconditional head (``get_uncond_logits`` is None)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ndf = cfg.df_dim
        self.encode_img = nn.Sequential(*downsampling_layers(ndf, 4))  # 64 -> 4
        self.get_cond_logits = DiscriminatorHead(ndf, cfg.condition_dim, conditional=True)
        self.get_uncond_logits = None
        init_weights(self)

    def forward(self, image: Tensor) -> Tensor:
        return self.encode_img(image)
