"""The StackGAN losses (stackgan-pytorch-spec.md section 4) as plain functions.

How the terms are weighted (real against wrong and fake pairs, the unconditional head) is the
official recipe of each stage; what each term measures is an :class:`AdversarialLoss`, chosen
by name (``LOSSES``). The official one, ``bce``, is binary cross-entropy on the probabilities
the discriminator heads output (they end in Sigmoid), as the official ``nn.BCELoss``. The BCE
always runs in float32 outside autocast: ``binary_cross_entropy`` is refused under CUDA
autocast. Non-finite probabilities give a NaN loss, never an error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stackgan_cli.models.memory import memory_format_of


def _bce(probs: Tensor, target: float) -> Tensor:
    """Mean binary cross-entropy of ``probs`` against ``target``, in float32; NaN when a
    probability is not finite (a diverged discriminator), so that the training loop's
    non-finite guard stops the run."""
    probs = probs.float()
    with torch.autocast(device_type=probs.device.type, enabled=False):
        # binary_cross_entropy refuses NaN (an error on the CPU, a device-side assert that
        # poisons the CUDA context): it sees a stand-in, and the result says NaN instead.
        finite = torch.isfinite(probs)
        loss = F.binary_cross_entropy(
            torch.where(finite, probs, 0.5), torch.full_like(probs, target)
        )
        return torch.where(finite.all(), loss, torch.nan)


@dataclass(frozen=True)
class AdversarialLoss:
    """What one term of the GAN objective measures, given the discriminator's scores.

    ``real(scores)``: the discriminator's loss on pairs it should call real; ``fake(scores)``:
    on pairs it should call fake (fakes and mismatched "wrong" pairs); ``generator(scores)``:
    the generator's loss on the discriminator's scores of its images.
    """

    name: str
    real: Callable[[Tensor], Tensor]
    fake: Callable[[Tensor], Tensor]
    generator: Callable[[Tensor], Tensor]
    # True: the scores are the heads' raw logits (no final Sigmoid); False: probabilities.
    uses_logits: bool = False
    # True: the training step adds a gradient penalty (WGAN-GP) to each discriminator's loss.
    gradient_penalty: bool = False


BCE = AdversarialLoss(
    name="bce",
    real=lambda probs: _bce(probs, 1.0),
    fake=lambda probs: _bce(probs, 0.0),
    generator=lambda probs: _bce(probs, 1.0),
)
"""The official loss: binary cross-entropy on probabilities."""


def _mean(scores: Tensor) -> Tensor:
    return scores.float().mean()


LSGAN = AdversarialLoss(
    name="lsgan",
    real=lambda s: _mean((s.float() - 1.0).pow(2)),
    fake=lambda s: _mean(s.float().pow(2)),
    generator=lambda s: _mean((s.float() - 1.0).pow(2)),
    uses_logits=True,
)
"""Least squares on the logits (LSGAN): real -> 1, fake -> 0; G: fake -> 1."""

HINGE = AdversarialLoss(
    name="hinge",
    real=lambda s: _mean(F.relu(1.0 - s.float())),
    fake=lambda s: _mean(F.relu(1.0 + s.float())),
    generator=lambda s: -_mean(s),
    uses_logits=True,
)
"""Hinge loss on the logits: D ``relu(1 - real) + relu(1 + fake)``; G ``-fake``."""

WGAN_GP = AdversarialLoss(
    name="wgan-gp",
    real=lambda s: -_mean(s),
    fake=lambda s: _mean(s),
    generator=lambda s: -_mean(s),
    uses_logits=True,
    gradient_penalty=True,
)
"""Wasserstein loss on the logits (D ``fake - real``, G ``-fake``); the training step adds
the gradient penalty (:func:`gradient_penalty`) weighted by ``--gp-weight``."""

LOSSES: dict[str, AdversarialLoss] = {loss.name: loss for loss in (BCE, LSGAN, HINGE, WGAN_GP)}
"""Adversarial losses by the name ``train --loss`` takes."""


def gradient_penalty(
    netD: Any, real: Tensor, fake: Tensor, conditions: Tensor, *, uncond: bool
) -> Tensor:
    """WGAN-GP's ``mean((||grad_x D(x, c)||_2 - 1)^2)`` at ``x`` drawn uniformly on the lines
    between real and (detached) fake images, ``c`` the real pair's condition; with ``uncond``
    the unconditional head's penalty is added. ``netD`` is called on the images (features)
    and its heads must return logits."""
    batch = real.size(0)
    alpha = torch.rand(batch, 1, 1, 1, device=real.device, dtype=torch.float32)
    mixed = (alpha * real.float() + (1.0 - alpha) * fake.detach().float()).to(real.dtype)
    mixed = mixed.contiguous(memory_format=memory_format_of(real)).requires_grad_(True)
    features = netD(mixed)
    scores = [netD.get_cond_logits(features, conditions.detach())]
    if uncond:
        scores.append(netD.get_uncond_logits(features))
    penalty = None
    for score in scores:
        (grad,) = torch.autograd.grad(score.float().sum(), mixed, create_graph=True)
        term = (grad.float().reshape(batch, -1).norm(2, dim=1) - 1.0).pow(2).mean()
        penalty = term if penalty is None else penalty + term
    return penalty


def adversarial_loss(name: str) -> AdversarialLoss:
    """The loss called ``name``; ValueError naming the known ones otherwise."""
    try:
        return LOSSES[name]
    except KeyError:
        known = ", ".join(sorted(LOSSES))
        raise ValueError(f"unknown loss {name!r} (known: {known})") from None


def _check_stage(netD: nn.Module, stage: int) -> None:
    if stage not in (1, 2):
        raise ValueError(f"stage must be 1 or 2, got {stage!r}")
    if stage == 2 and getattr(netD, "get_uncond_logits", None) is None:
        raise ValueError("stage 2 losses need a discriminator with an unconditional head")


def discriminator_loss(
    netD: nn.Module,
    real_images: Tensor,
    fake_images: Tensor,
    conditions: Tensor,
    *,
    stage: int,
    loss: AdversarialLoss = BCE,
) -> tuple[Tensor, dict[str, Tensor]]:
    """Official discriminator loss, each term measured by ``loss``; returns ``(errD, parts)``.

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
    err_real = loss.real(netD.get_cond_logits(real_features, conditions))
    err_wrong = loss.fake(netD.get_cond_logits(real_features[: batch - 1], conditions[1:]))
    err_fake = loss.fake(netD.get_cond_logits(fake_features, conditions))
    parts = {"real": err_real, "wrong": err_wrong, "fake": err_fake}
    if stage == 1:
        err_d = err_real + 0.5 * (err_fake + err_wrong)
    else:
        uncond_real = loss.real(netD.get_uncond_logits(real_features))
        uncond_fake = loss.fake(netD.get_uncond_logits(fake_features))
        parts["uncond_real"] = uncond_real
        parts["uncond_fake"] = uncond_fake
        err_d = (err_real + uncond_real) / 2.0 + (err_fake + err_wrong + uncond_fake) / 3.0
    return err_d, {name: value.detach() for name, value in parts.items()}


def generator_loss(
    netD: nn.Module,
    fake_images: Tensor,
    conditions: Tensor,
    *,
    stage: int,
    loss: AdversarialLoss = BCE,
) -> Tensor:
    """Official adversarial generator loss (without KL): ``loss.generator`` of the conditional
    head's scores of the non-detached fake images, plus the unconditional head's in Stage II."""
    _check_stage(netD, stage)
    conditions = conditions.detach()
    fake_features = netD(fake_images)
    err_g = loss.generator(netD.get_cond_logits(fake_features, conditions))
    if stage == 2:
        err_g = err_g + loss.generator(netD.get_uncond_logits(fake_features))
    return err_g


def kl_loss(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) averaged over batch and dimensions (not summed):
    ``-0.5 * mean(1 + logvar - mu^2 - exp(logvar))``."""
    mu = mu.float()
    logvar = logvar.float()
    return -0.5 * torch.mean(1.0 + logvar - mu.pow(2) - logvar.exp())


# The AttnGAN and DAMSM losses live in their own module; re-exported here with the others.
from stackgan_cli.models.losses_attngan import (  # noqa: E402, F401
    attngan_discriminator_loss,
    attngan_generator_loss,
    damsm_sentence_loss,
    damsm_word_loss,
    damsm_word_loss_batched,
)
