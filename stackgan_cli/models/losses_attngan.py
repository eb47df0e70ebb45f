"""The AttnGAN and DAMSM losses (attngan-spec.md section 7) as plain functions.

The DAMSM losses score how well images match captions in both directions (image -> caption and
caption -> image), by word-region attention (:func:`damsm_word_loss`) and by the global vectors
(:func:`damsm_sentence_loss`); in a batch, pair i is the match and every other caption (or
image) a negative, except those of the same class when class ids are given. The adversarial
losses are the official recipe: binary cross-entropy on the probabilities the discriminator
heads output, real and fake images through the discriminator separately. The KL term of the
conditioning augmentation is :func:`stackgan_cli.models.losses.kl_loss`, added apart.

The official quirks are kept: the word similarity has no 1/gamma2 (its log-sum is gamma2 times
the paper's), masked negatives are -inf logits, wrong pairs are image i with sentence i + 1,
and the DAMSM terms of the generator loss score only the last (largest) image.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

ClassIds = Tensor | np.ndarray | Sequence[int] | None
"""Class id per sample (any int sequence), or None for no class masking."""


def _bce(probs: Tensor, target: float) -> Tensor:
    """Mean binary cross-entropy in float32, NaN (never an error) when a probability is not
    finite, as ``stackgan_cli.models.losses`` computes it: the training loop's non-finite
    guard then stops a diverged run."""
    probs = probs.float()
    with torch.autocast(device_type=probs.device.type, enabled=False):
        finite = torch.isfinite(probs)
        loss = F.binary_cross_entropy(
            torch.where(finite, probs, 0.5), torch.full_like(probs, target)
        )
        return torch.where(finite.all(), loss, torch.nan)


def _lengths(cap_lens: Tensor | Sequence[int]) -> list[int]:
    if isinstance(cap_lens, Tensor):
        return [int(n) for n in cap_lens.tolist()]
    return [int(n) for n in cap_lens]


def same_class_mask(class_ids: ClassIds, batch: int, device: torch.device) -> Tensor | None:
    """(B, B) bool, True at [i, j] when j != i and sample j has sample i's class: the negatives
    the DAMSM losses leave out. None when ``class_ids`` is None."""
    if class_ids is None:
        return None
    if isinstance(class_ids, Tensor):
        class_ids = class_ids.detach().cpu()
    ids = torch.as_tensor(np.asarray(class_ids)).reshape(-1).to(device)
    if ids.numel() != batch:
        raise ValueError(f"class_ids must hold {batch} ids, got {ids.numel()}")
    mask = ids[:, None] == ids[None, :]
    mask.fill_diagonal_(False)
    return mask


def cosine_similarity(x1: Tensor, x2: Tensor, dim: int = 1, eps: float = 1e-8) -> Tensor:
    """Cosine of ``x1`` and ``x2`` along ``dim``, the norms' product clamped to at least
    ``eps``."""
    dot = torch.sum(x1 * x2, dim)
    norms = torch.norm(x1, 2, dim) * torch.norm(x2, 2, dim)
    return dot / norms.clamp(min=eps)


def region_attention(words: Tensor, regions: Tensor, gamma1: float) -> tuple[Tensor, Tensor]:
    """Attention of words over image regions (the DAMSM's ``func_attention``).

    ``words`` (B, D, n) (one caption per image, or one caption expanded over the batch),
    ``regions`` (B, D, H, W). The region-word scores v_r . e_t are normalised over the words
    for each region, scaled by ``gamma1`` and normalised over the regions for each word:
    alpha(t, r). Returns the region context of every word, sum_r alpha(t, r) v_r, (B, D, n),
    and alpha as (B, n, H, W).
    """
    batch, dim, height, width = regions.shape
    num_words = words.size(2)
    context = regions.reshape(batch, dim, height * width)
    # Contiguous operands as the official code has them: bmm rounds differently otherwise.
    scores = torch.bmm(context.transpose(1, 2).contiguous(), words)  # (B, R, n)
    attn = torch.softmax(scores, dim=2).transpose(1, 2).contiguous()  # over words -> (B, n, R)
    attn = torch.softmax(attn * gamma1, dim=2)  # over regions
    weighted = torch.bmm(context, attn.transpose(1, 2).contiguous())  # (B, D, n)
    return weighted, attn.reshape(batch, num_words, height, width)


def _match_losses(scores: Tensor, class_ids: ClassIds) -> tuple[Tensor, Tensor]:
    """Cross-entropy of the rows of ``scores`` (B, B) and of its transpose, target i for row
    i, same-class negatives masked with -inf."""
    batch = scores.size(0)
    mask = same_class_mask(class_ids, batch, scores.device)
    if mask is not None:
        scores = scores.masked_fill(mask, float("-inf"))
    labels = torch.arange(batch, device=scores.device)
    return F.cross_entropy(scores, labels), F.cross_entropy(scores.t(), labels)


def damsm_word_loss(
    features: Tensor,
    words_emb: Tensor,
    cap_lens: Tensor | Sequence[int],
    class_ids: ClassIds = None,
    gamma1: float = 4.0,
    gamma2: float = 5.0,
    gamma3: float = 10.0,
) -> tuple[Tensor, Tensor, list[Tensor]]:
    """DAMSM word loss of image regions ``features`` (B, D, 17, 17) and caption words
    ``words_emb`` (B, D, T): ``(loss0, loss1, att_maps)``.

    For caption i with n_i words and every image j, each word's region context c_t comes from
    :func:`region_attention` (``gamma1``) and ``R(j, i) = log sum_t exp(gamma2 *
    cos(e_t, c_t))``; the scores ``S[j, i] = gamma3 * R(j, i)`` (rows images, columns captions)
    give loss0 = cross-entropy image -> caption (rows) and loss1 = caption -> image (columns).
    ``att_maps[i]`` (1, n_i, 17, 17) is caption i's attention on its own image.
    """
    batch = features.size(0)
    lengths = _lengths(cap_lens)
    if len(lengths) != batch or words_emb.size(0) != batch:
        raise ValueError(
            f"{batch} images but {words_emb.size(0)} captions and {len(lengths)} lengths"
        )
    similarities, att_maps = [], []
    for i, num_words in enumerate(lengths):
        # Copies, not expanded views, throughout: the reductions then round as the official.
        words = words_emb[i : i + 1, :, :num_words].repeat(batch, 1, 1)  # (B, D, n)
        context, attn = region_attention(words, features, gamma1)
        att_maps.append(attn[i : i + 1])
        # (B, D, n) -> (B * n, D): one row per (image, word)
        flat_words = words.transpose(1, 2).contiguous().view(batch * num_words, -1)
        flat_context = context.transpose(1, 2).contiguous().view(batch * num_words, -1)
        cosines = cosine_similarity(flat_words, flat_context).view(batch, num_words)
        # A plain exp-sum-log, as the official code (bounded: |cos| <= 1).
        similarities.append(torch.log(torch.exp(cosines * gamma2).sum(dim=1, keepdim=True)))
    scores = torch.cat(similarities, 1) * gamma3  # (B images, B captions)
    loss0, loss1 = _match_losses(scores, class_ids)
    return loss0, loss1, att_maps


def damsm_word_loss_batched(
    features: Tensor,
    words_emb: Tensor,
    cap_lens: Tensor | Sequence[int],
    class_ids: ClassIds = None,
    gamma1: float = 4.0,
    gamma2: float = 5.0,
    gamma3: float = 10.0,
) -> tuple[Tensor, Tensor]:
    """:func:`damsm_word_loss`'s ``(loss0, loss1)`` computed for every caption and image at
    once: the same maths (each caption's padding masked out of both softmaxes' inputs and of the
    sum over its words), with no loop over captions, so it rounds differently (agreement to
    about 1e-6; tests/test_attngan_networks.py) and runs several times faster on a CPU. What
    DAMSM pre-training steps with; the official loop stays the reference everywhere else."""
    batch, dim, height, width = features.shape
    lengths = torch.as_tensor(_lengths(cap_lens), device=features.device)
    if len(lengths) != batch or words_emb.size(0) != batch:
        raise ValueError(
            f"{batch} images but {words_emb.size(0)} captions and {len(lengths)} lengths"
        )
    longest = int(lengths.max())
    words = words_emb[:, :, :longest]  # (B captions, D, T)
    padding = torch.arange(longest, device=features.device)[None, :] >= lengths[:, None]  # (B, T)
    regions = features.reshape(batch, dim, height * width)  # (B images, D, R)
    # scores[i, j, r, t] = v_r(image j) . e_t(caption i)
    scores = torch.einsum("jdr,idt->ijrt", regions, words)
    scores = scores.masked_fill(padding[:, None, None, :], float("-inf"))
    attn = torch.softmax(scores, dim=3)  # over the caption's words
    attn = torch.softmax(attn.transpose(2, 3) * gamma1, dim=3)  # (i, j, t, r): over regions
    context = torch.einsum("jdr,ijtr->ijdt", regions, attn)  # (i, j, D, T)
    dot = (words[:, None] * context).sum(dim=2)  # (i, j, T)
    norms = torch.norm(words, 2, dim=1)[:, None] * torch.norm(context, 2, dim=2)
    cosines = dot / norms.clamp(min=1e-8)
    weights = torch.exp(cosines * gamma2).masked_fill(padding[:, None, :], 0.0)
    scores_ij = torch.log(weights.sum(dim=2))  # (captions i, images j)
    return _match_losses(scores_ij.t() * gamma3, class_ids)


def damsm_sentence_loss(
    cnn_code: Tensor,
    sent_emb: Tensor,
    class_ids: ClassIds = None,
    gamma3: float = 10.0,
    eps: float = 1e-8,
) -> tuple[Tensor, Tensor]:
    """DAMSM sentence loss of image codes (B, D) and sentence features (B, D):
    ``S[i, j] = gamma3 * cos(cnn_code_i, sent_emb_j)`` (norm product clamped at ``eps``);
    ``(loss0, loss1)`` = cross-entropy image -> sentence (rows), sentence -> image (columns)."""
    # Batched (1, B, D) products as the official code: mm rounds differently.
    images, sentences = cnn_code.unsqueeze(0), sent_emb.unsqueeze(0)
    dots = torch.bmm(images, sentences.transpose(1, 2))
    norms = torch.bmm(
        torch.norm(images, 2, dim=2, keepdim=True),
        torch.norm(sentences, 2, dim=2, keepdim=True).transpose(1, 2),
    )
    scores = (dots / norms.clamp(min=eps) * gamma3).squeeze(0)
    return _match_losses(scores, class_ids)


def attngan_discriminator_loss(
    netD: nn.Module,
    real_images: Tensor,
    fake_images: Tensor,
    sent_emb: Tensor,
    *,
    return_parts: bool = False,
) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
    """The official AttnGAN discriminator loss of one discriminator (an
    :class:`~stackgan_cli.models.attngan.AttnGANDiscriminator`).

    Real and (detached) fake images go through ``netD.encode`` separately (separate BatchNorm
    statistics in train mode); ``sent_emb`` is detached. Terms (BCE on probabilities):
    D_cond_real (real image, its sentence -> 1), D_cond_fake (fake, sentence -> 0),
    D_cond_wrong (real images 0..B-2 with sentences 1..B-1 -> 0), D_uncond_real (-> 1) and
    D_uncond_fake (-> 0):
    ``errD = (D_uncond_real + D_cond_real) / 2 + (D_uncond_fake + D_cond_fake + D_cond_wrong) / 3``
    (without an unconditional head ``D_cond_real + (D_cond_fake + D_cond_wrong) / 2``).
    Returns errD, or ``(errD, parts)`` with ``return_parts``: the terms by those names,
    detached.
    """
    batch = real_images.size(0)
    if batch < 2:
        raise ValueError("the discriminator loss needs a batch of at least 2 (wrong pairs)")
    sent_emb = sent_emb.detach()
    real_features = netD.encode(real_images)
    fake_features = netD.encode(fake_images.detach())
    # The official head-call order, which fixes the heads' BatchNorm running statistics.
    parts = {
        "D_cond_real": _bce(netD.COND_DNET(real_features, sent_emb), 1.0),
        "D_cond_fake": _bce(netD.COND_DNET(fake_features, sent_emb), 0.0),
        "D_cond_wrong": _bce(netD.COND_DNET(real_features[: batch - 1], sent_emb[1:]), 0.0),
    }
    if getattr(netD, "UNCOND_DNET", None) is not None:
        parts["D_uncond_real"] = _bce(netD.UNCOND_DNET(real_features), 1.0)
        parts["D_uncond_fake"] = _bce(netD.UNCOND_DNET(fake_features), 0.0)
        err_d = (parts["D_uncond_real"] + parts["D_cond_real"]) / 2.0 + (
            parts["D_uncond_fake"] + parts["D_cond_fake"] + parts["D_cond_wrong"]
        ) / 3.0
    else:
        err_d = parts["D_cond_real"] + (parts["D_cond_fake"] + parts["D_cond_wrong"]) / 2.0
    if return_parts:
        return err_d, {name: value.detach() for name, value in parts.items()}
    return err_d


def attngan_generator_loss(
    netsD: Sequence[nn.Module],
    image_encoder: Any,
    fake_images: Sequence[Tensor],
    words_emb: Tensor,
    sent_emb: Tensor,
    cap_lens: Tensor | Sequence[int],
    class_ids: ClassIds = None,
    gamma1: float = 4.0,
    gamma2: float = 5.0,
    gamma3: float = 10.0,
    damsm_weight: float = 5.0,
    *,
    return_parts: bool = False,
) -> Tensor | tuple[Tensor, dict[str, Tensor]]:
    """The official AttnGAN generator loss, without the KL term.

    For every discriminator i, the (not detached) ``fake_images[i]``: BCE(COND_DNET(features,
    sent_emb), 1) + BCE(UNCOND_DNET(features), 1), summed over i (G_adv). The DAMSM image
    encoder on the last judged image (``fake_images[len(netsD) - 1]``, the 256 px one) gives
    regions and a code, whose word and sentence losses (both directions, with ``class_ids``)
    are weighted by ``damsm_weight``: G_damsm_words, G_damsm_sentence. errG = the sum of the
    three. The text features are used as given (the official trainer passes them detached);
    gradients flow through the frozen image encoder into the images. Returns errG, or
    ``(errG, parts)`` with ``return_parts``: the three terms by those names, detached.
    """
    if not netsD:
        raise ValueError("the generator loss needs at least one discriminator")
    err_adv = None
    for netD, fake in zip(netsD, fake_images, strict=False):
        features = netD.encode(fake)
        term = _bce(netD.COND_DNET(features, sent_emb), 1.0)
        if getattr(netD, "UNCOND_DNET", None) is not None:
            term = _bce(netD.UNCOND_DNET(features), 1.0) + term
        err_adv = term if err_adv is None else err_adv + term
    regions, cnn_code = image_encoder(fake_images[len(netsD) - 1])
    w_loss0, w_loss1, _ = damsm_word_loss(
        regions, words_emb, cap_lens, class_ids, gamma1=gamma1, gamma2=gamma2, gamma3=gamma3
    )
    s_loss0, s_loss1 = damsm_sentence_loss(cnn_code, sent_emb, class_ids, gamma3=gamma3)
    w_loss = (w_loss0 + w_loss1) * damsm_weight
    s_loss = (s_loss0 + s_loss1) * damsm_weight
    err_g = err_adv + (w_loss + s_loss)  # the official summation order
    if return_parts:
        parts = {"G_adv": err_adv, "G_damsm_words": w_loss, "G_damsm_sentence": s_loss}
        return err_g, {name: value.detach() for name, value in parts.items()}
    return err_g
