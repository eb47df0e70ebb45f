"""The DAMSM encoders (attngan-spec.md sections 2 and 3): a bidirectional LSTM over the caption's
words and an Inception-v3 image encoder, trained together so that words match image regions and
sentences match images. AttnGAN's generator reads the text encoder's features; its loss scores
the generated images with both encoders.

Submodule names are the official ones (``encoder``, ``rnn``; torchvision's Inception names,
``emb_features``, ``emb_cnn_code``), so official state dicts load as they are.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from stackgan_cli.models.config import ModelConfig
from stackgan_cli.models.init import _is_layout_only

INCEPTION_SIZE = 299
"""The side the image encoder resizes every image to."""

TRUNK_MODULES = (
    "Conv2d_1a_3x3",
    "Conv2d_2a_3x3",
    "Conv2d_2b_3x3",
    "Conv2d_3b_1x1",
    "Conv2d_4a_3x3",
    "Mixed_5b",
    "Mixed_5c",
    "Mixed_5d",
    "Mixed_6a",
    "Mixed_6b",
    "Mixed_6c",
    "Mixed_6d",
    "Mixed_6e",
    "Mixed_7a",
    "Mixed_7b",
    "Mixed_7c",
)
"""The Inception-v3 modules the image encoder keeps, in order (torchvision's names)."""

_IGNORED_BACKBONE_MODULES = ("AuxLogits", "fc")
"""Modules of torchvision's Inception-v3 state dict that the image encoder does not keep."""

_MIXED_6E = TRUNK_MODULES.index("Mixed_6e")


class DAMSMTextEncoder(nn.Module):
    """Captions (B, L) of word ids (0 = padding) -> (words_emb, sent_emb).

    ``encoder``: the word-embedding table (vocab_size x ``cfg.word_dim``, row 0 an ordinary
    row: padding is skipped by packing); ``drop``: dropout 0.5 on the embedded words (train mode
    only); ``rnn``: a one-layer bidirectional LSTM with ``cfg.text_dim // 2`` units each way.

    ``forward(captions, cap_lens, hidden=None)``: ``cap_lens`` (B,) are the caption lengths
    (each at least 1; the official code needs them in decreasing order, here any order works
    and sorted batches compute exactly as there). ``hidden`` is the initial (h0, c0), each
    (2, B, text_dim // 2); None means zeros (:meth:`init_hidden`). Returns ``words_emb``
    (B, text_dim, T) with T = max(cap_lens), features 0..text_dim/2-1 the forward direction at
    each word and the rest the backward one, exactly zero past each caption's length; and
    ``sent_emb`` (B, text_dim) = [forward state after the last word, backward state after the
    first word].

    Init: embedding uniform in [-0.1, 0.1], LSTM torch's default.
    """

    def __init__(self, cfg: ModelConfig, vocab_size: int, *, dropout: float = 0.5) -> None:
        super().__init__()
        if cfg.text_dim % 2:
            raise ValueError(f"text_dim must be even (two LSTM directions), got {cfg.text_dim}")
        self.cfg = cfg
        self.hidden_size = cfg.text_dim // 2
        self.encoder = nn.Embedding(vocab_size, cfg.word_dim)
        self.drop = nn.Dropout(dropout)
        # The official LSTM also passes dropout=0.5, which a one-layer LSTM ignores (with a
        # warning); the weights are the same.
        self.rnn = nn.LSTM(cfg.word_dim, self.hidden_size, 1, batch_first=True, bidirectional=True)
        if not _is_layout_only(self.encoder):
            with torch.no_grad():
                self.encoder.weight.uniform_(-0.1, 0.1)

    def init_hidden(self, batch: int) -> tuple[Tensor, Tensor]:
        """Zero (h0, c0), each (2, batch, text_dim // 2)."""
        weight = self.encoder.weight
        zeros = weight.new_zeros(2, batch, self.hidden_size)
        return zeros, zeros.clone()

    def forward(
        self,
        captions: Tensor,
        cap_lens: Tensor | list[int],
        hidden: tuple[Tensor, Tensor] | None = None,
    ) -> tuple[Tensor, Tensor]:
        lengths = torch.as_tensor(cap_lens, dtype=torch.long).cpu()
        if lengths.shape != (captions.size(0),):
            raise ValueError(
                f"cap_lens must hold one length per caption ({captions.size(0)}), "
                f"got shape {tuple(lengths.shape)}"
            )
        if hidden is None:
            hidden = self.init_hidden(captions.size(0))
        embedded = self.drop(self.encoder(captions))
        # Sorted batches take the official path unchanged; others are sorted inside and back.
        in_order = bool((lengths[1:] <= lengths[:-1]).all())
        packed = pack_padded_sequence(embedded, lengths, batch_first=True, enforce_sorted=in_order)
        output, (h_n, _) = self.rnn(packed, hidden)
        output = pad_packed_sequence(output, batch_first=True)[0]  # (B, max(cap_lens), D)
        words_emb = output.transpose(1, 2)
        sent_emb = h_n.transpose(0, 1).contiguous().view(-1, self.hidden_size * 2)
        return words_emb, sent_emb


class DAMSMImageEncoder(nn.Module):
    """Images (B, 3, H, W) in [-1, 1], any size -> (features (B, text_dim, 17, 17), cnn_code
    (B, text_dim)).

    The frozen Inception-v3 trunk (``Conv2d_1a_3x3`` ... ``Mixed_7c``, torchvision's modules and
    key names, ``requires_grad`` False) gives the Mixed_6e map (B, 768, 17, 17), 289 regions,
    and the 8x8-average-pooled Mixed_7c output (B, 2048); the trainable ``emb_features`` (1x1
    conv, no bias) and ``emb_cnn_code`` (Linear with bias) project them to text_dim. Images are
    resized to 299x299 bilinearly first (``align_corners=False``, as the unmodified official
    code on modern torch; True gives the torch-0.3 resize the released encoders were trained
    with), with no ImageNet normalisation: the Google Inception weights take [-1, 1].

    The constructor downloads nothing: the trunk holds torchvision's default initialisation
    until :meth:`load_backbone` (ImageNet weights) or ``load_state_dict`` (a DAMSM encoder)
    fills it. Init of the projections: weights uniform in [-0.1, 0.1], Linear bias torch's
    default.

    Train mode: by default the trunk stays in eval mode (a truly frozen trunk: running
    statistics, not batch statistics); ``trunk_batchnorm_trains=True`` lets its BatchNorms use
    and update batch statistics in train mode, as the official encoder does during DAMSM
    pre-training.

    ``trunk(images)`` -> (mixed_6e, pooled) and ``project(mixed_6e, pooled)`` -> (features,
    cnn_code) split the forward so that training can cache the trunk's outputs.
    """

    def __init__(
        self,
        cfg: ModelConfig,
        *,
        trunk_batchnorm_trains: bool = False,
        align_corners: bool = False,
    ) -> None:
        super().__init__()
        from torchvision.models import inception_v3

        self.cfg = cfg
        self.trunk_batchnorm_trains = trunk_batchnorm_trains
        self.align_corners = align_corners
        # No auxiliary head and a one-class fc: the least to build for the modules kept.
        inception = inception_v3(weights=None, aux_logits=False, init_weights=False, num_classes=1)
        for name in TRUNK_MODULES:
            module = getattr(inception, name)
            module.requires_grad_(False)
            self.add_module(name, module)
        self.emb_features = nn.Conv2d(768, cfg.text_dim, kernel_size=1, bias=False)
        self.emb_cnn_code = nn.Linear(2048, cfg.text_dim)
        for layer in (self.emb_features, self.emb_cnn_code):
            if not _is_layout_only(layer):
                with torch.no_grad():
                    layer.weight.uniform_(-0.1, 0.1)
        self.train(self.training)

    def train(self, mode: bool = True) -> DAMSMImageEncoder:
        super().train(mode)
        if mode and not self.trunk_batchnorm_trains:
            for name in TRUNK_MODULES:
                getattr(self, name).train(False)
        return self

    def resize(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, 3, 299, 299), bilinear; the identity at 299."""
        if images.shape[-2:] == (INCEPTION_SIZE, INCEPTION_SIZE):
            return images
        return F.interpolate(
            images,
            size=(INCEPTION_SIZE, INCEPTION_SIZE),
            mode="bilinear",
            align_corners=self.align_corners,
        )

    def trunk(self, images: Tensor) -> tuple[Tensor, Tensor]:
        """Images (any size, resized to 299) -> (Mixed_6e map (B, 768, 17, 17), pooled Mixed_7c
        (B, 2048))."""
        x = self.resize(images)
        mixed_6e = None
        for index, name in enumerate(TRUNK_MODULES):
            x = getattr(self, name)(x)
            if name in ("Conv2d_2b_3x3", "Conv2d_4a_3x3"):
                x = F.max_pool2d(x, kernel_size=3, stride=2)
            if index == _MIXED_6E:
                mixed_6e = x
        pooled = F.avg_pool2d(x, kernel_size=8).view(x.size(0), -1)
        return mixed_6e, pooled

    def project(self, mixed_6e: Tensor, pooled: Tensor) -> tuple[Tensor, Tensor]:
        """Trunk outputs -> (features (B, text_dim, 17, 17), cnn_code (B, text_dim))."""
        return self.emb_features(mixed_6e), self.emb_cnn_code(pooled)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        return self.project(*self.trunk(images))

    def load_backbone(self, state_dict: Mapping[str, Tensor]) -> DAMSMImageEncoder:
        """Fill the trunk from torchvision's Inception-v3 state dict (the published
        ``inception_v3_google-*.pth``: ``Conv2d_1a_3x3.conv.weight``, ...). Its ``AuxLogits``
        and ``fc`` entries are ignored and missing BatchNorm ``num_batches_tracked`` entries
        are filled; any other missing or unknown key raises ValueError. The projections are
        left as they are. Returns ``self``."""
        trunk_state, unknown = {}, []
        for key, value in state_dict.items():
            module = key.split(".", 1)[0]
            if module in TRUNK_MODULES:
                trunk_state[key] = value
            elif module not in _IGNORED_BACKBONE_MODULES:
                unknown.append(key)
        # A fresh dict carries no version metadata, so BatchNorm fills num_batches_tracked.
        missing, _ = self.load_state_dict(trunk_state, strict=False)
        missing = [key for key in missing if key.split(".", 1)[0] in TRUNK_MODULES]
        if missing or unknown:
            problems = []
            if missing:
                problems.append(f"missing {', '.join(missing[:5])}")
            if unknown:
                problems.append(f"unknown {', '.join(unknown[:5])}")
            raise ValueError("not a torchvision Inception-v3 state dict: " + "; ".join(problems))
        return self
