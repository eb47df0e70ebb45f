"""The AttnGAN generator and discriminators (attngan-spec.md sections 4 to 6).

AttnGAN is StackGAN-v2's tree with two changes in the generator: the conditioning augmentation
reads the DAMSM sentence feature, and every stage after the first attends to the caption's word
features (:class:`WordAttention`) instead of reading the sentence code again; every stage keeps
``gf_dim`` channels. The discriminators are StackGAN-v2's image encoders with heads named and
ordered as the official ``D_GET_LOGITS`` modules (``UNCOND_DNET``, ``COND_DNET``), judging
images against the DAMSM sentence feature. Submodule names and positions are the official ones,
so official state dicts load as they are.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from stackgan_cli.models.config import ModelConfig
from stackgan_cli.models.generator_v2 import ImageOutput, InitialStage, branch_image_sizes
from stackgan_cli.models.init import init_weights_attngan
from stackgan_cli.models.layers import ConditioningAugmentation, downsampling_layers
from stackgan_cli.models.layers_v2 import (
    GatedResBlock,
    gated_up_block,
    leaky_block3x3,
    leaky_down_block,
    logit_conv,
    tile_condition,
)

DISCRIMINATOR_SIZES = (64, 128, 256)


class AttnGANConditioning(ConditioningAugmentation):
    """The official ``CA_NET`` (StackGAN-v2's gated conditioning augmentation, keys ``fc.*``)
    with its rounding: ``c = eps * std + mu`` as a product then a sum, not a fused
    multiply-add, so that the generator's outputs equal the official ones bit for bit."""

    def forward(self, text_embedding: Tensor, eps: Tensor | None = None) -> tuple[Tensor, ...]:
        x = self.activation(self.fc(text_embedding))
        mu = x[:, : self.condition_dim]
        logvar = x[:, self.condition_dim :]
        std = torch.exp(0.5 * logvar)
        if eps is None:
            eps = torch.randn_like(std)
        elif eps.shape != std.shape:
            raise ValueError(f"eps must have shape {tuple(std.shape)}, got {tuple(eps.shape)}")
        return eps * std + mu, mu, logvar


class WordAttention(nn.Module):
    """Attention of image features over the words of a caption (official ``att``).

    ``conv_context`` (a bias-free 1x1 conv, word_dim -> channels) projects each word e_t to U e_t;
    every pixel q of the (B, channels, H, W) features scores the words by ``h_q . U e_t`` (no
    scaling), a softmax over the words gives beta(q, t), and the pixel's context is
    ``sum_t beta(q, t) U e_t``. ``forward(features, words, mask)`` returns the context
    (B, channels, H, W) and beta laid out word-major, (B, T, H, W).

    ``mask`` (B, T) is True at padding words; masked scores are -inf before the softmax.
    By default the mask is applied as the official code does (``per_sample_mask=False``): the
    (B*Q, T) score rows, row b*Q + q for pixel q of sample b, get the (B, T) mask tiled Q times,
    so pixel q of sample b uses the mask of sample (b*Q + q) mod B. With ``per_sample_mask``
    every pixel of sample b uses sample b's own mask (the evident intent).
    """

    def __init__(self, channels: int, word_dim: int, *, per_sample_mask: bool = False) -> None:
        super().__init__()
        self.per_sample_mask = per_sample_mask
        self.conv_context = nn.Conv2d(word_dim, channels, kernel_size=1, bias=False)

    def forward(
        self, features: Tensor, words: Tensor, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        batch, channels, height, width = features.shape
        queries = height * width
        num_words = words.size(2)
        query = features.reshape(batch, channels, queries).transpose(1, 2)  # (B, Q, C)
        source = self.conv_context(words.unsqueeze(3)).squeeze(3)  # (B, C, T)
        scores = torch.bmm(query, source)  # (B, Q, T)
        if mask is not None:
            mask = _check_mask(mask, batch, num_words).to(scores.device)
            if self.per_sample_mask:
                rows = mask[:, None, :]
            else:
                # The official tiling: row r of the flattened (B*Q, T) scores gets mask[r % B].
                rows = mask.repeat(queries, 1).view(batch, queries, num_words)
            scores = scores.masked_fill(rows, float("-inf"))
        attn = torch.softmax(scores, dim=2).transpose(1, 2).contiguous()  # (B, T, Q)
        context = torch.bmm(source, attn).view(batch, channels, height, width)
        return context, attn.view(batch, num_words, height, width)


def _check_mask(mask: Tensor, batch: int, num_words: int) -> Tensor:
    if mask.shape != (batch, num_words):
        raise ValueError(
            f"mask must have shape ({batch}, {num_words}) (batch, words), got {tuple(mask.shape)}"
        )
    return mask.bool()


class AttentionStage(nn.Module):
    """A later generator stage (``h_net2``, ``h_net3``): (B, channels, s, s) features and the
    word features -> ((B, channels, 2s, 2s) features, (B, T, s, s) attention).

    The word context of every pixel (:class:`WordAttention`) is put after the features, then
    ``r_num`` gated residual blocks on the 2 * channels and a gated up-block back to channels.
    """

    def __init__(
        self, channels: int, word_dim: int, r_num: int, *, per_sample_mask: bool = False
    ) -> None:
        super().__init__()
        self.att = WordAttention(channels, word_dim, per_sample_mask=per_sample_mask)
        self.residual = nn.Sequential(*(GatedResBlock(channels * 2) for _ in range(r_num)))
        self.upsample = gated_up_block(channels * 2, channels)

    def forward(
        self, h_code: Tensor, words: Tensor, mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        context, attn = self.att(h_code, words, mask)
        h_code = self.residual(torch.cat((h_code, context), 1))
        return self.upsample(h_code), attn


class AttnGANGenerator(nn.Module):
    """DAMSM sentence (B, text_dim) and word (B, text_dim, T) features + noise -> one image per
    branch and the attention maps of the attending stages.

    ``forward(sent_emb, words_emb, noise, mask=None, eps=None)`` returns
    ``(images, attention_maps, mu, logvar)``: ``images`` is a list of ``cfg.branch_num``
    tensors (B, 3, 64 * 2**i, 64 * 2**i) in [-1, 1], smallest first; ``attention_maps`` a list
    of ``branch_num - 1`` tensors (B, T, 64 * 2**i, 64 * 2**i), each stage's attention at the
    size of its input features; mu/logvar (B, condition_dim) from the conditioning augmentation.
    ``mask`` (B, T) is True at padding words (None: no masking; see :class:`WordAttention` for
    how it is applied, and ``per_sample_mask``). ``eps`` (B, condition_dim) fixes the CA noise;
    otherwise it is drawn on every call, in eval mode too, as the official ``CA_NET``. The
    official network is called (noise, sentence, words, mask).

    Widths: the first stage runs at ``16 * gf_dim`` channels down to ``gf_dim`` at 64x64 (input
    cat(c, z), c first); every later stage keeps ``gf_dim`` channels. The sentence code c is not
    read after the first stage. ``df_dim`` is not used. Weights get the official initialisation
    (:func:`init_weights_attngan`).
    """

    def __init__(self, cfg: ModelConfig, *, per_sample_mask: bool = False) -> None:
        super().__init__()
        self.cfg = cfg
        self.per_sample_mask = per_sample_mask
        self.image_sizes = branch_image_sizes(cfg.branch_num)
        ngf = cfg.gf_dim
        self.ca_net = AttnGANConditioning(cfg.text_dim, cfg.condition_dim, gated=True)
        for branch in range(1, cfg.branch_num + 1):
            if branch == 1:
                stage = InitialStage(ngf * 16, cfg.condition_dim, cfg.z_dim)
            else:
                stage = AttentionStage(
                    ngf, cfg.text_dim, cfg.r_num, per_sample_mask=per_sample_mask
                )
            self.add_module(f"h_net{branch}", stage)
            self.add_module(f"img_net{branch}", ImageOutput(ngf))
        init_weights_attngan(self)

    def forward(
        self,
        sent_emb: Tensor,
        words_emb: Tensor,
        noise: Tensor,
        mask: Tensor | None = None,
        eps: Tensor | None = None,
    ) -> tuple[list[Tensor], list[Tensor], Tensor, Tensor]:
        c_code, mu, logvar = self.ca_net(sent_emb, eps)
        h_code = self.h_net1(c_code, noise)
        images = [self.img_net1(h_code)]
        attention_maps = []
        for branch in range(2, self.cfg.branch_num + 1):
            h_code, attn = getattr(self, f"h_net{branch}")(h_code, words_emb, mask)
            images.append(getattr(self, f"img_net{branch}")(h_code))
            attention_maps.append(attn)
        return images, attention_maps, mu, logvar


class AttnGANLogits(nn.Module):
    """A discriminator head (official ``D_GET_LOGITS``): (B, 8 * df_dim, 4, 4) features -> (B,)
    probabilities.

    Conditional (``condition_dim`` given): the condition (B, condition_dim) is tiled to 4x4 and
    put after the features, then ``jointConv`` (3x3 conv, BN, LeakyReLU back to 8 * df_dim)
    and ``outlogits`` (4x4 stride-4 conv with bias, Sigmoid). Unconditional: ``outlogits``
    alone. ``logits=True`` returns the raw scores before the Sigmoid.
    """

    def __init__(self, df_dim: int, condition_dim: int | None = None) -> None:
        super().__init__()
        self.condition_dim = condition_dim
        channels = df_dim * 8
        if condition_dim is not None:
            self.jointConv = leaky_block3x3(channels + condition_dim, channels)
        self.outlogits = logit_conv(channels)

    def forward(
        self, features: Tensor, condition: Tensor | None = None, logits: bool = False
    ) -> Tensor:
        if self.condition_dim is not None:
            if condition is None:
                raise ValueError("the conditional head needs a condition")
            c_map = tile_condition(condition, features.size(2), features.size(3))
            features = self.jointConv(torch.cat((features, c_map), 1))
        conv, sigmoid = self.outlogits
        raw = conv(features).view(-1)
        return raw if logits else sigmoid(raw)


class AttnGANDiscriminator(nn.Module):
    """(B, 3, size, size) image + DAMSM sentence feature (B, text_dim) -> (cond, uncond), each
    (B,) probabilities (raw logits with ``logits=True``).

    ``size`` is 64, 128 or 256 (the official ``D_NET64``, ``D_NET128``, ``D_NET256``). The
    official network's forward returns only the features and the losses call its heads; here:

    * ``encode(image)`` -> (B, 8 * df_dim, 4, 4) features (the official forward);
    * ``COND_DNET(features, sent_emb)`` and ``UNCOND_DNET(features)``: the official heads
      (:class:`AttnGANLogits`); ``get_cond_logits`` / ``get_uncond_logits`` the same as methods
      with StackGAN-v2's names.

    ``forward(image, sent_emb)`` equals ``(COND_DNET(encode(image), sent_emb),
    UNCOND_DNET(encode(image)))`` with one encoder pass.
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
        self.UNCOND_DNET = AttnGANLogits(ndf)
        self.COND_DNET = AttnGANLogits(ndf, cfg.text_dim)
        self._encoder_names = tuple(
            name for name, _ in self.named_children() if name.startswith("img_code_")
        )
        init_weights_attngan(self)

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

    def get_cond_logits(self, features: Tensor, sent_emb: Tensor, logits: bool = False) -> Tensor:
        """(B,) probabilities that the images are real and match the sentences."""
        return self.COND_DNET(features, sent_emb, logits)

    def get_uncond_logits(self, features: Tensor, logits: bool = False) -> Tensor:
        """(B,) probabilities that the images are real."""
        return self.UNCOND_DNET(features, None, logits)

    def forward(
        self, image: Tensor, sent_emb: Tensor, logits: bool = False
    ) -> tuple[Tensor, Tensor]:
        features = self.encode(image)
        return self.COND_DNET(features, sent_emb, logits), self.UNCOND_DNET(features, None, logits)
