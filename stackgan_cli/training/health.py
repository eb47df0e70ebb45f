"""Health checks of a training run: the warnings a user needs before trusting its samples.

During training, :class:`ConditioningWatch` warns once when conditioning augmentation has
collapsed onto its prior; at the end, :func:`short_run_warnings` says when eval-mode samples
cannot be meaningful yet (BatchNorm running statistics, or the parameter average, still near
their initial values).
"""

from __future__ import annotations

import torch

from stackgan_cli.console import warn

STALE_BATCHNORM_SHARE = 0.01

# Conditioning collapse: the KL term of conditioning augmentation (mean over the batch and
# the condition's dimensions) below COLLAPSED_KL after COLLAPSE_MIN_STEPS steps. Healthy
# Stage-I shapes runs start near 3e-3 and grow; runs whose discriminator never learned the text
# match fall below 1e-4 within about 40 steps and stay there. It is permanent: once every
# pre-activation of the layer's ReLU is negative, mu = logvar = 0 for every caption and no
# gradient reaches the layer (benchmarks/REGIMES.md).
COLLAPSED_KL = 1e-4
COLLAPSE_MIN_STEPS = 100


def conditioning_collapsed(kl: float, step: int, kl_coeff: float) -> bool:
    """Whether a logged KL term ``kl`` at ``step`` means that mu and sigma of conditioning
    augmentation sit on the N(0, I) prior for every caption, so the condition c carries no
    text. Only meaningful when the KL term is trained (``kl_coeff`` > 0)."""
    return kl_coeff > 0 and step >= COLLAPSE_MIN_STEPS and kl < COLLAPSED_KL


class ConditioningWatch:
    """Warns once per session when a logged KL term says the conditioning has collapsed."""

    def __init__(self, kl_coeff: float) -> None:
        self.kl_coeff = kl_coeff
        self.warned = False

    def check(self, kl: float, step: int) -> None:
        if self.warned or not conditioning_collapsed(kl, step, self.kl_coeff):
            return
        self.warned = True
        warn(
            f"at step {step} the KL term is {kl:.1e}: conditioning augmentation "
            "has collapsed onto its prior, so the generator no longer sees the text (every "
            "prompt gives the same images) and it will not recover. The discriminator learned "
            "to tell matching from mismatched captions too slowly to hold off the KL term "
            f"(--kl-coeff {self.kl_coeff:g}), as happens with --d-norm none or spectral. "
            "Stop, and start a new run with the official --d-norm batch or a smaller "
            "--kl-coeff (e.g. 0.1)"
        )


def initial_batchnorm_share(module: torch.nn.Module, steps: int) -> float:
    """The largest weight that the initial running statistics (mean 0, variance 1) of
    ``module``'s BatchNorm layers still carry after ``steps`` training steps:
    ``(1 - momentum) ** steps``. Eval-mode images are only meaningful once it is small."""
    momenta = [
        layer.momentum
        for layer in module.modules()
        if isinstance(layer, torch.nn.modules.batchnorm._BatchNorm) and layer.momentum
    ]
    return max(((1.0 - momentum) ** steps for momentum in momenta), default=0.0)


def short_run_warnings(netG: torch.nn.Module, steps: int, ema: float) -> None:
    """Warn when a run ended too early for eval-mode samples: the generator's BatchNorm
    statistics, or (``ema`` > 0) its parameter average, still mostly initial."""
    stale = initial_batchnorm_share(netG, steps)
    if stale > STALE_BATCHNORM_SHARE:
        warn(
            f"only {steps} training steps: the generator's BatchNorm running "
            f"statistics are still {stale:.0%} their initial values, so sample grids and "
            "`stackgan generate` (eval mode) may look flat and grey; train for more steps"
        )
    initial = ema**steps if ema > 0 else 0.0
    if initial > STALE_BATCHNORM_SHARE:
        warn(
            f"only {steps} training steps: the generator's moving average "
            f"(--ema {ema:g}) still holds {initial:.0%} of its initial random "
            "weights, and samples and generator.pt use it; train for more steps or pass "
            "a smaller --ema (0: none)"
        )
