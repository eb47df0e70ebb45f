"""Stage-II networks at 256x256: the official ``STAGE2_G`` and ``STAGE2_D``
(stackgan-pytorch-spec.md 3.6, 3.7)."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from stackgan_cli.models.config import ModelConfig
from stackgan_cli.models.init import init_weights
from stackgan_cli.models.layers import (
    ConditioningAugmentation,
    DiscriminatorHead,
    ResBlock,
    conv3x3,
    down_conv,
    downsampling_layers,
    up_block,
)
from stackgan_cli.models.stage1 import Stage1Generator


class Stage2Generator(nn.Module):
    """Refines the nested, frozen Stage-I generator's 64x64 image into a 256x256 one.

    ``forward(text_embedding, noise, eps=None)`` returns ``(stage1_image, image, mu, logvar)``
    with mu/logvar of the Stage-II conditioning augmentation. ``eps=(eps1, eps2)`` fixes the
    noise of the nested Stage-I CA (eps1) and of the Stage-II CA (eps2); either may be None.
    ``STAGE1_G`` has ``requires_grad=False`` and follows this module's train/eval mode (the
    official trainer keeps it in train mode); optimise only parameters with requires_grad.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ngf = cfg.gf_dim
        self.condition_dim = cfg.condition_dim
        self.STAGE1_G = Stage1Generator(cfg)
        self.STAGE1_G.requires_grad_(False)
        self.ca_net = ConditioningAugmentation(cfg.text_dim, cfg.condition_dim)
        self.encoder = nn.Sequential(
            conv3x3(3, ngf),
            nn.ReLU(inplace=True),
            down_conv(ngf, ngf * 2),
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(inplace=True),
            down_conv(ngf * 2, ngf * 4),
            nn.BatchNorm2d(ngf * 4),
            nn.ReLU(inplace=True),
        )
        self.hr_joint = nn.Sequential(
            conv3x3(ngf * 4 + cfg.condition_dim, ngf * 4),
            nn.BatchNorm2d(ngf * 4),
            nn.ReLU(inplace=True),
        )
        self.residual = nn.Sequential(*(ResBlock(ngf * 4) for _ in range(cfg.r_num)))
        self.upsample1 = up_block(ngf * 4, ngf * 2)
        self.upsample2 = up_block(ngf * 2, ngf)
        self.upsample3 = up_block(ngf, ngf // 2)
        self.upsample4 = up_block(ngf // 2, ngf // 4)
        self.img = nn.Sequential(conv3x3(ngf // 4, 3), nn.Tanh())
        init_weights(self)

    def forward(
        self,
        text_embedding: Tensor,
        noise: Tensor,
        eps: tuple[Tensor | None, Tensor | None] | None = None,
    ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        eps1, eps2 = (None, None) if eps is None else eps
        # The official code detaches the Stage-I image, so no gradient can ever reach STAGE1_G:
        # skipping its autograd graph changes nothing but memory and time.
        with torch.no_grad():
            _, stage1_img, _, _ = self.STAGE1_G(text_embedding, noise, eps1)
        encoded_img = self.encoder(stage1_img)

        c_code, mu, logvar = self.ca_net(text_embedding, eps2)
        b, _, height, width = encoded_img.shape
        c_code = c_code.view(b, self.condition_dim, 1, 1).expand(-1, -1, height, width)
        h_code = self.hr_joint(torch.cat((encoded_img, c_code), 1))
        h_code = self.residual(h_code)
        h_code = self.upsample1(h_code)
        h_code = self.upsample2(h_code)
        h_code = self.upsample3(h_code)
        h_code = self.upsample4(h_code)
        return stage1_img, self.img(h_code), mu, logvar


class Stage2Discriminator(nn.Module):
    """256x256 image -> (B, 8*df_dim, 4, 4) features, with a conditional head
    ``get_cond_logits(features, condition)`` and an unconditional one
    ``get_uncond_logits(features)``, both giving probabilities (B,)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        ndf = cfg.df_dim
        self.encode_img = nn.Sequential(
            *downsampling_layers(ndf, 6),  # 256 -> 4
            conv3x3(ndf * 32, ndf * 16),
            nn.BatchNorm2d(ndf * 16),
            nn.LeakyReLU(0.2, inplace=True),
            conv3x3(ndf * 16, ndf * 8),
            nn.BatchNorm2d(ndf * 8),
            nn.LeakyReLU(0.2, inplace=True),
        )
        self.get_cond_logits = DiscriminatorHead(ndf, cfg.condition_dim, conditional=True)
        self.get_uncond_logits = DiscriminatorHead(ndf, cfg.condition_dim, conditional=False)
        init_weights(self)

    def forward(self, image: Tensor) -> Tensor:
        return self.encode_img(image)
