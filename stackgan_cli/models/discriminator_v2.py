"""The StackGAN-v2 (StackGAN++) discriminators for 64, 128 and 256 px images (stackgan-v2-spec.md
section 3).

Submodule names and registration order are the official ones (``img_code_s16``, ...,
``logits``, ``jointConv``, ``uncond_logits``), so official state dicts load as they are. The
heads are methods rather than modules, because the conditional head is made of two official
top-level modules (``jointConv`` then ``logits``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from stackgan_cli.models.config import ModelConfig
from stackgan_cli.models.init import init_weights_v2
from stackgan_cli.models.layers import downsampling_layers
from stackgan_cli.models.layers_v2 import (
    leaky_block3x3,
    leaky_down_block,
    logit_conv,
    tile_condition,
)

DISCRIMINATOR_SIZES = (64, 128, 256)


class StackGANv2Discriminator(nn.Module):
    """(B, 3, size, size) image + condition (B, condition_dim) -> (cond, uncond), each (B,).

    ``size`` is 64, 128 or 256 (the official ``D_NET64``, ``D_NET128``, ``D_NET256``). By
    default both outputs are sigmoid probabilities, as the official network returns them;
    ``forward(image, condition, logits=True)`` returns the raw pre-sigmoid logits instead (for
    ``binary_cross_entropy_with_logits``, hinge or WGAN losses).

    The encoder / head split, for running the encoder once per image batch:

    * ``encode(image)`` -> (B, 8 * df_dim, 4, 4) image features;
    * ``get_cond_logits(features, condition, logits=False)`` -> (B,): the condition tiled to
      4x4 in front of the features, a 3x3 block, the 4x4 logit conv (sigmoid unless ``logits``);
    * ``get_uncond_logits(features, logits=False)`` -> (B,): the 4x4 logit conv on the features.

    ``forward(image, condition)`` equals ``(get_cond_logits(encode(image), condition),
    get_uncond_logits(encode(image)))``.
    """

    def __init__(self, cfg: ModelConfig, image_size: int) -> None:
        super().__init__()
        if image_size not in DISCRIMINATOR_SIZES:
            raise ValueError(f"image_size must be 64, 128 or 256, got {image_size!r}")
        self.cfg = cfg
        self.image_size = image_size
        ndf = cfg.df_dim
        self.img_code_s16 = nn.Sequential(*downsampling_layers(ndf, 4))  # size -> size / 16
        if image_size == 128:
            self.img_code_s32 = leaky_down_block(ndf * 8, ndf * 16)
            self.img_code_s32_1 = leaky_block3x3(ndf * 16, ndf * 8)
        elif image_size == 256:
            self.img_code_s32 = leaky_down_block(ndf * 8, ndf * 16)
            self.img_code_s64 = leaky_down_block(ndf * 16, ndf * 32)
            self.img_code_s64_1 = leaky_block3x3(ndf * 32, ndf * 16)
            self.img_code_s64_2 = leaky_block3x3(ndf * 16, ndf * 8)
        self.logits = logit_conv(ndf * 8)
        self.jointConv = leaky_block3x3(cfg.condition_dim + ndf * 8, ndf * 8)
        self.uncond_logits = logit_conv(ndf * 8)
        # Names, not modules: a later in-place swap of a child must not leave a stale copy here.
        self._encoder_names = tuple(
            name for name, _ in self.named_children() if name.startswith("img_code_")
        )
        init_weights_v2(self)

    def encode(self, image: Tensor) -> Tensor:
        """(B, 3, size, size) image -> (B, 8 * df_dim, 4, 4) features."""
        if image.dim() != 4 or image.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"this discriminator takes (B, 3, {self.image_size}, {self.image_size}) images, "
                f"got {tuple(image.shape)}"
            )
        features = image
        for name in self._encoder_names:
            features = getattr(self, name)(features)
        return features

    def get_cond_logits(self, features: Tensor, condition: Tensor, logits: bool = False) -> Tensor:
        """Conditional head: (B,) probabilities that the images are real and match the
        condition (the CA mean), or the raw logits when ``logits``."""
        c_map = tile_condition(condition, features.size(2), features.size(3))
        h_code = self.jointConv(torch.cat((c_map, features), 1))
        return self._output(self.logits, h_code, logits)

    def get_uncond_logits(self, features: Tensor, logits: bool = False) -> Tensor:
        """Unconditional head: (B,) probabilities that the images are real, or the raw logits
        when ``logits``."""
        return self._output(self.uncond_logits, features, logits)

    def forward(
        self, image: Tensor, condition: Tensor, logits: bool = False
    ) -> tuple[Tensor, Tensor]:
        features = self.encode(image)
        return (
            self.get_cond_logits(features, condition, logits),
            self.get_uncond_logits(features, logits),
        )

    @staticmethod
    def _output(head: nn.Sequential, h_code: Tensor, logits: bool) -> Tensor:
        conv, sigmoid = head
        raw = conv(h_code).view(-1)
        return raw if logits else sigmoid(raw)
