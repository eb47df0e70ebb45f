"""The official StackGAN losses (spec 4) as plain functions.

The discriminators output probabilities (their heads end in Sigmoid), so the losses are binary
cross-entropy on probabilities, as the official ``nn.BCELoss``. The BCE itself always runs in
float32 outside autocast: ``binary_cross_entropy`` is refused under CUDA autocast.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _bce(probs: Tensor, target: float) -> Tensor:
    probs = probs.float()
    with torch.autocast(device_type=probs.device.type, enabled=False):
        return F.binary_cross_entropy(probs, torch.full_like(probs, target))


def _check_stage(netD: nn.Module, stage: int) -> None:
    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 or 2, got {stage!r}")
    if stage == 2 and getattr(netD, "get_uncond_logits", None) is None:
        raise ValueError("stage 2 losses need a discriminator with an unconditional head")


def discriminator_loss(
    netD: nn.Module, real_images: Tensor, fake_images: Tensor, conditions: Tensor, *, stage: int
) -> tuple[Tensor, dict[str, Tensor]]:
    """Official discriminator loss; returns ``(errD, parts)``.

    ``conditions`` is the generator's CA mean (``mu.detach()``), ``fake_images`` the detached
    generator output. Real and fake batches go through ``netD`` separately (separate BatchNorm
    statistics in train mode). Terms: real (real image, own condition -> 1), wrong (features
    of samples 0..B-2 with conditions 1..B-1 -> 0), fake (fake image, condition -> 0); Stage II
    adds uncond_real (-> 1) and uncond_fake (-> 0).
    Stage I: ``errD = real + 0.5 * (fake + wrong)``;
    Stage II: ``errD = (real + uncond_real) / 2 + (fake + wrong + uncond_fake) / 3``.
    ``parts`` maps those term names to detached scalar tensors.
    """
    _check_stage(netD, stage)
    batch = real_images.size(0)
    if batch < 2:
        raise ValueError("the discriminator loss needs a batch of at least 2 (wrong pairs)")
    conditions = conditions.detach()
    real_features = netD(real_images)
    fake_features = netD(fake_images.detach())

    # Same head-call order as the official code, which fixes the BatchNorm running statistics.
    err_real = _bce(netD.get_cond_logits(real_features, conditions), 1.0)
    err_wrong = _bce(netD.get_cond_logits(real_features[: batch - 1], conditions[1:]), 0.0)
    err_fake = _bce(netD.get_cond_logits(fake_features, conditions), 0.0)
    parts = {"real": err_real, "wrong": err_wrong, "fake": err_fake}
    if stage == 1:
        err_d = err_real + 0.5 * (err_fake + err_wrong)
    else:
        uncond_real = _bce(netD.get_uncond_logits(real_features), 1.0)
        uncond_fake = _bce(netD.get_uncond_logits(fake_features), 0.0)
        parts["uncond_real"] = uncond_real
        parts["uncond_fake"] = uncond_fake
        err_d = (err_real + uncond_real) / 2.0 + (err_fake + err_wrong + uncond_fake) / 3.0
    return err_d, {name: value.detach() for name, value in parts.items()}


def generator_loss(
    netD: nn.Module, fake_images: Tensor, conditions: Tensor, *, stage: int
) -> Tensor:
    """Official adversarial generator loss (without KL): BCE of the conditional head on the
    non-detached fake images against 1, plus the unconditional head's BCE in Stage II."""
    _check_stage(netD, stage)
    conditions = conditions.detach()
    fake_features = netD(fake_images)
    err_g = _bce(netD.get_cond_logits(fake_features, conditions), 1.0)
    if stage == 2:
        err_g = err_g + _bce(netD.get_uncond_logits(fake_features), 1.0)
    return err_g


def kl_loss(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) averaged over batch and dimensions (not summed):
    ``-0.5 * mean(1 + logvar - mu^2 - exp(logvar))``."""
    mu = mu.float()
    logvar = logvar.float()
    return -0.5 * torch.mean(1.0 + logvar - mu.pow(2) - logvar.exp())
