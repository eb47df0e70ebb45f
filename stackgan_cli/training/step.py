"""One training iteration for any model family, executed fast.

G forward on (text, noise) -> a step of each discriminator on real / wrong / fake -> one G step
with the KL term. The family (training/family.py) says which images each discriminator judges
and how its terms are weighted; the adversarial loss (models/losses.py) what each term
measures. The official StackGAN-v1 recipe (stackgan-pytorch-spec.md section 4) comes out
unchanged; what differs from the official code is only how it runs:

* the G step needs gradients w.r.t. the fake images, not w.r.t. D's weights (the official code
  computes those too, then the next ``netD.zero_grad()`` throws them away), so the
  discriminators' parameters are frozen for that backward;
* on CUDA, G and the discriminators' encoders run under bf16 autocast while the discriminator
  heads (sigmoid outputs fed to BCE) and the KL term run in float32;
* under DDP, the D-step forwards go through each D's DistributedDataParallel wrapper (its
  gradients are all-reduced once by that backward) and the G step calls the bare Ds, whose
  parameters then need no gradient at all; G's single forward goes through G's wrapper.

The step takes a :class:`~stackgan_cli.data.batch.Batch` and returns the losses of the iteration
as one detached device tensor (no host synchronisation), in the order of :func:`loss_names`.
A family's further generator terms (StackGAN-v2's colour consistency) come back by name beside
the adversarial ``errG``, which holds the adversarial terms alone.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from stackgan_cli.data.batch import Batch
from stackgan_cli.families.base import Family
from stackgan_cli.models.losses import AdversarialLoss, gradient_penalty, kl_loss
from stackgan_cli.training.fast_layers import fuse_nearest_upsampling, gemm_large_convolutions

LOSS_NAMES = ("errD", "errG", "kl")  # then the generator terms and the discriminators' parts


def loss_names(
    family: Family,
    discriminators: int = 1,
    *,
    gradient_penalty: bool = False,
    r1: bool = False,
) -> tuple[str, ...]:
    """Names of the entries of the tensor a :class:`GANStep` returns, in order: errD, errG
    (adversarial), kl, ``G_<term>`` for each further generator term of the family (weighted),
    then each discriminator's parts, ``D_<part>`` with one discriminator, ``D<i>_<part>`` with
    several; with ``gradient_penalty`` (WGAN-GP) each discriminator's parts end with ``gp``
    (unweighted), with ``r1`` (--r1) with ``r1`` (unweighted)."""
    prefixes = ["D"] if discriminators == 1 else [f"D{i}" for i in range(discriminators)]
    parts = family.loss_parts + (("gp",) if gradient_penalty else ()) + (("r1",) if r1 else ())
    terms = tuple(f"G_{name}" for name in family.generator_term_names)
    return LOSS_NAMES + terms + tuple(f"{prefix}_{part}" for prefix in prefixes for part in parts)


def autocast_context(
    device: torch.device, enabled: bool
) -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of bf16 autocast contexts on CUDA when ``enabled``; no-op contexts otherwise."""
    if enabled and device.type == "cuda":
        return lambda: torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext


class DiscriminatorView:
    """What the loss functions receive as ``netD``.

    Calling it runs the image encoder (through ``route`` - the DDP wrapper or the bare module -
    under autocast when enabled, features returned in float32); the heads are the bare module's,
    run in float32 so the sigmoid probabilities that BCE takes are not rounded to bf16.
    """

    def __init__(
        self,
        bare: nn.Module,
        route: nn.Module,
        autocast: Callable,
        logits: bool = False,
        augment: Callable[[Tensor], Tensor] | None = None,
    ) -> None:
        self._route = route
        self._autocast = autocast
        self._augment = augment  # --diffaugment: applied to every image D sees
        # The heads' raw logits whatever the loss (the R1 penalty of --r1 measures them).
        self.cond_logits = functools.partial(bare.get_cond_logits, logits=True)
        self.uncond_logits = (
            functools.partial(bare.get_uncond_logits, logits=True)
            if bare.get_uncond_logits is not None
            else None
        )
        self.get_cond_logits = bare.get_cond_logits
        self.get_uncond_logits = bare.get_uncond_logits
        if logits:  # the loss takes the heads' raw logits (AdversarialLoss.uses_logits)
            self.get_cond_logits = functools.partial(self.get_cond_logits, logits=True)
            if self.get_uncond_logits is not None:
                self.get_uncond_logits = functools.partial(self.get_uncond_logits, logits=True)

    def __call__(self, images: Tensor) -> Tensor:
        if self._augment is not None:
            images = self._augment(images)
        with self._autocast():
            features = self._route(images)
        return features.float()


class GANStep:
    """Callable doing one training iteration: ``step(batch)`` returns the detached losses
    (errD summed over the discriminators, errG, kl, the family's generator terms, then each
    discriminator's parts; see :func:`loss_names`) as one float32 device tensor.

    ``netG`` and ``netDs`` are the bare modules (possibly compiled in place), ``opt_ds`` one
    optimizer per discriminator; ``ddp_g``/``ddp_ds`` their DistributedDataParallel wrappers
    under torchrun, else None.
    """

    def __init__(
        self,
        family: Family,
        netG: nn.Module,
        netDs: Sequence[nn.Module],
        opt_g: torch.optim.Optimizer,
        opt_ds: Sequence[torch.optim.Optimizer],
        *,
        loss: AdversarialLoss,
        kl_coeff: float,
        z_dim: int,
        device: torch.device,
        amp: bool = False,
        ddp_g: nn.Module | None = None,
        ddp_ds: Sequence[nn.Module | None] | None = None,
        freeze_d_for_g_step: bool = True,
        gp_weight: float = 10.0,
        n_critic: int = 1,
        augment: Callable[[Tensor], Tensor] | None = None,
        r1: float = 0.0,
    ) -> None:
        if len(netDs) != len(opt_ds):
            raise ValueError(f"{len(netDs)} discriminators but {len(opt_ds)} optimizers")
        self.family = family
        self.netG, self.netDs = netG, list(netDs)
        self.opt_g, self.opt_ds = opt_g, list(opt_ds)
        self.loss = loss
        self.kl_coeff = kl_coeff
        # WGAN-GP: the gradient penalty's weight (unused by the other losses).
        self.gp_weight = float(gp_weight) if loss.gradient_penalty else 0.0
        # Discriminator updates per generator update, all on this step's real batch and fakes.
        self.n_critic = int(n_critic)
        # --r1: weight gamma of the R1 penalty gamma/2 E||grad_x D(x_real, c)||^2 (0 = none).
        self.r1 = float(r1)
        self._parts = (
            family.loss_parts
            + (("gp",) if loss.gradient_penalty else ())
            + (("r1",) if self.r1 > 0 else ())
        )
        # Where the discriminators have unconditional heads that count, the penalty covers them.
        self._gp_uncond = family.gp_uncond
        self.z_dim = z_dim
        self.device = device
        self.autocast = autocast_context(device, amp)
        self._g_route = ddp_g if ddp_g is not None else netG
        routes = list(ddp_ds) if ddp_ds is not None else [None] * len(self.netDs)
        # The module whose call gives a discriminator's features (Family.encoder).
        encoders = [family.encoder(d) for d in self.netDs]
        logits = loss.uses_logits
        self._d_for_d_step = [
            DiscriminatorView(d, route or encoder, self.autocast, logits, augment)
            for d, encoder, route in zip(self.netDs, encoders, routes, strict=True)
        ]
        self._d_for_g_step = [
            DiscriminatorView(d, encoder, self.autocast, logits, augment)
            for d, encoder in zip(self.netDs, encoders, strict=True)
        ]
        # Off only to measure what the freezing saves (benchmarks/train_throughput.py).
        self._d_params = [
            p for d in self.netDs for p in d.parameters() if p.requires_grad and freeze_d_for_g_step
        ]

    def __call__(self, batch: Batch) -> Tensor:
        family, loss = self.family, self.loss
        noise = torch.randn(len(batch), self.z_dim, device=self.device)
        text = family.condition_of(batch)
        with self.autocast():
            output = family.generate(self._g_route, text, noise)
        fakes, mu, logvar = output.images, output.mu, output.logvar
        conditions = family.discriminator_condition(output)

        errors_d, parts = [], []
        real_views = family.real_views(batch)
        views = zip(self._d_for_d_step, self.opt_ds, real_views, fakes, strict=True)
        for netD, opt_d, real_view, fake in views:
            for _ in range(self.n_critic):
                opt_d.zero_grad(set_to_none=True)
                err_d, named = family.discriminator_loss(
                    netD, real_view, fake.detach(), conditions, loss
                )
                if loss.gradient_penalty:
                    penalty = gradient_penalty(
                        netD, real_view.images, fake, conditions, uncond=self._gp_uncond
                    )
                    err_d = err_d + self.gp_weight * penalty
                    named = {**named, "gp": penalty.detach()}
                if self.r1 > 0:
                    penalty = r1_penalty(netD, real_view.images, conditions, uncond=self._gp_uncond)
                    err_d = err_d + 0.5 * self.r1 * penalty
                    named = {**named, "r1": penalty.detach()}
                err_d.backward()
                opt_d.step()
            errors_d.append(err_d.detach())
            parts.extend(named[name] for name in self._parts)

        self.opt_g.zero_grad(set_to_none=True)
        for p in self._d_params:
            p.requires_grad_(False)
        try:
            err_g = None
            g_conditions = mu.float() if family.generator_condition_grad else conditions
            for netD, fake in zip(self._d_for_g_step, fakes, strict=True):
                term = family.generator_loss(netD, fake, g_conditions, loss)
                err_g = term if err_g is None else err_g + term
            terms = family.generator_terms(output)
            total = err_g
            for value in terms.values():
                total = total + value
            kl = kl_loss(mu, logvar)
            (total + self.kl_coeff * kl).backward()
        finally:
            for p in self._d_params:
                p.requires_grad_(True)
        self.opt_g.step()
        err_d_total = errors_d[0] if len(errors_d) == 1 else torch.stack(errors_d).sum()
        values = [err_d_total, err_g, kl, *(terms[name] for name in family.generator_term_names)]
        return torch.stack([v.detach().float() for v in [*values, *parts]])


def r1_penalty(
    netD: DiscriminatorView, real: Tensor, conditions: Tensor, *, uncond: bool
) -> Tensor:
    """R1 (Mescheder et al. 2018): ``E[||grad_x D(x, c)||^2]`` of the conditional head's logits
    at the real images ``x`` with their own conditions ``c``; with ``uncond`` the unconditional
    head's is added. The step weights it by gamma / 2 (--r1)."""
    batch = real.size(0)
    images = real.detach().requires_grad_(True)
    features = netD(images)
    scores = [netD.cond_logits(features, conditions.detach())]
    if uncond and netD.uncond_logits is not None:
        scores.append(netD.uncond_logits(features))
    penalty = None
    for score in scores:
        (grad,) = torch.autograd.grad(score.float().sum(), images, create_graph=True)
        term = grad.float().reshape(batch, -1).pow(2).sum(dim=1).mean()
        penalty = term if penalty is None else penalty + term
    return penalty


def make_optimizers(
    netG: nn.Module,
    netDs: Sequence[nn.Module],
    *,
    lr_g: float,
    lr_d: float,
    device: torch.device,
    fused: bool | None = None,
    optimizer: str = "adam",
    betas: tuple[float, float] = (0.5, 0.999),
) -> tuple[torch.optim.Optimizer, list[torch.optim.Optimizer]]:
    """Official Adam(0.5, 0.999) (``betas``) for G's trainable parameters (Stage II: not the
    frozen Stage-I G) and one for each discriminator; ``fused`` None = the fused kernels on
    CUDA and the CPU. ``optimizer`` (choices.Optimizer) "rmsprop": torch's RMSprop defaults
    (no betas) instead."""
    if fused is None:
        fused = device.type in ("cuda", "cpu")
    fused = fused or None  # None lets torch pick its default (foreach or for-loop) implementation

    def make(params: list[nn.Parameter], lr: float) -> torch.optim.Optimizer:
        if optimizer == "rmsprop":
            return torch.optim.RMSprop(params, lr=lr)
        return _adam(params, lr, fused, betas)

    opt_g = make([p for p in netG.parameters() if p.requires_grad], lr_g)
    return opt_g, [make(list(netD.parameters()), lr_d) for netD in netDs]


def _adam(
    params: list[nn.Parameter],
    lr: float,
    fused: bool | None,
    betas: tuple[float, float] = (0.5, 0.999),
) -> torch.optim.Adam:
    try:
        return torch.optim.Adam(params, lr=lr, betas=betas, fused=fused)
    except RuntimeError:  # torch < 2.4 has no fused Adam for CPU tensors
        return torch.optim.Adam(params, lr=lr, betas=betas)


def prepare_modules(
    netG: nn.Module,
    netDs: Sequence[nn.Module],
    *,
    channels_last: bool,
    compile: bool,
    compile_mode: str | None = None,
    fused_upsample: bool = True,
    gemm_convs: bool = False,
    gemm_options: Mapping[str, Any] | None = None,
) -> None:
    """In place: G's upsampling convolutions fused and (``gemm_convs``, for the CPU) the widest
    convolutions as matrix products (training/fast_layers.py, ``gemm_options`` for
    ``gemm_large_convolutions``: the family's ``cpu_gemm``), channels_last weights, and
    ``torch.compile`` of G, the discriminators' encoders and their heads (for StackGAN-v2,
    whose encoder and heads are methods, each of the discriminator's blocks).

    ``nn.Module.compile`` compiles the call without wrapping, so state dicts keep their keys.
    """
    if fused_upsample:
        fuse_nearest_upsampling(netG)
    if gemm_convs:
        gemm_large_convolutions(netG, **(gemm_options or {}))
        for netD in netDs:
            gemm_large_convolutions(netD, **(gemm_options or {}))
    if channels_last:
        for module in (netG, *netDs):
            module.to(memory_format=torch.channels_last)
    if compile:
        netG.compile(mode=compile_mode)
        for netD in netDs:
            if isinstance(netD.get_cond_logits, nn.Module):  # v1: call = encoder, heads
                netD.compile(mode=compile_mode)
                netD.get_cond_logits.compile(mode=compile_mode)
                if isinstance(netD.get_uncond_logits, nn.Module):
                    netD.get_uncond_logits.compile(mode=compile_mode)
            else:  # v2: encode() and the heads are methods over its blocks
                for block in netD.children():
                    block.compile(mode=compile_mode)
