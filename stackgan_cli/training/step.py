"""One official StackGAN training iteration (spec 5), executed fast.

G forward on (text, noise) -> D step on real / wrong / fake -> G step with 2 x KL. The maths is
the official recipe through ``stackgan_cli.models.losses``; what differs is only how it runs:

* the G step needs gradients w.r.t. the fake images, not w.r.t. D's weights (the official code
  computes those too, then the next ``netD.zero_grad()`` throws them away), so D's parameters
  are frozen for that backward;
* on CUDA, G and the discriminator's encoder run under bf16 autocast while the discriminator
  heads (sigmoid outputs fed to BCE) and the KL term run in float32;
* under DDP, the D-step forwards go through D's DistributedDataParallel wrapper (its gradients
  are all-reduced once by that backward) and the G step calls the bare D, whose parameters
  then need no gradient at all; G's single forward goes through G's wrapper.

The losses of an iteration come back as one detached device tensor: no host synchronisation.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch
from torch import Tensor, nn

from stackgan_cli.models.losses import discriminator_loss, generator_loss, kl_loss
from stackgan_cli.training.fast_layers import fuse_nearest_upsampling, gemm_large_convolutions

LOSS_NAMES = ("errD", "errG", "kl")  # followed by the discriminator's parts (see loss_names)
_PARTS = {1: ("real", "wrong", "fake"), 2: ("real", "wrong", "fake", "uncond_real", "uncond_fake")}


def loss_names(stage: int) -> tuple[str, ...]:
    """Names of the entries of the tensor a :class:`GANStep` returns, in order."""
    return LOSS_NAMES + tuple(f"D_{part}" for part in _PARTS[stage])


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

    def __init__(self, bare: nn.Module, route: nn.Module, autocast: Callable) -> None:
        self._route = route
        self._autocast = autocast
        self.get_cond_logits = bare.get_cond_logits
        self.get_uncond_logits = bare.get_uncond_logits

    def __call__(self, images: Tensor) -> Tensor:
        with self._autocast():
            features = self._route(images)
        return features.float()


class GANStep:
    """Callable doing one training iteration: ``step(real_images, text_embeddings)`` returns
    the detached losses (errD, errG, kl, D parts...) as one float32 device tensor.

    ``netG``/``netD`` are the bare modules (possibly compiled in place); ``ddp_g``/``ddp_d``
    their DistributedDataParallel wrappers under torchrun, else None.
    """

    def __init__(
        self,
        netG: nn.Module,
        netD: nn.Module,
        opt_g: torch.optim.Optimizer,
        opt_d: torch.optim.Optimizer,
        *,
        stage: int,
        kl_coeff: float,
        z_dim: int,
        device: torch.device,
        amp: bool = False,
        ddp_g: nn.Module | None = None,
        ddp_d: nn.Module | None = None,
        freeze_d_for_g_step: bool = True,
    ) -> None:
        self.netG, self.netD = netG, netD
        self.opt_g, self.opt_d = opt_g, opt_d
        self.stage = stage
        self.kl_coeff = kl_coeff
        self.z_dim = z_dim
        self.device = device
        self.autocast = autocast_context(device, amp)
        self._g_route = ddp_g if ddp_g is not None else netG
        self._d_for_d_step = DiscriminatorView(netD, ddp_d or netD, self.autocast)
        self._d_for_g_step = DiscriminatorView(netD, netD, self.autocast)
        # Off only to measure what the freezing saves (benchmarks/train_throughput.py).
        self._d_params = [p for p in netD.parameters() if p.requires_grad and freeze_d_for_g_step]

    def __call__(self, real: Tensor, text: Tensor) -> Tensor:
        noise = torch.randn(real.size(0), self.z_dim, device=self.device)
        with self.autocast():
            _, fake, mu, logvar = self._g_route(text, noise)
        conditions = mu.detach().float()

        self.opt_d.zero_grad(set_to_none=True)
        err_d, parts = discriminator_loss(
            self._d_for_d_step, real, fake.detach(), conditions, stage=self.stage
        )
        err_d.backward()
        self.opt_d.step()

        self.opt_g.zero_grad(set_to_none=True)
        for p in self._d_params:
            p.requires_grad_(False)
        try:
            err_g = generator_loss(self._d_for_g_step, fake, conditions, stage=self.stage)
            kl = kl_loss(mu, logvar)
            (err_g + self.kl_coeff * kl).backward()
        finally:
            for p in self._d_params:
                p.requires_grad_(True)
        self.opt_g.step()
        values = [err_d, err_g, kl, *(parts[name] for name in _PARTS[self.stage])]
        return torch.stack([v.detach().float() for v in values])


def make_optimizers(
    netG: nn.Module,
    netD: nn.Module,
    *,
    lr_g: float,
    lr_d: float,
    device: torch.device,
    fused: bool | None = None,
) -> tuple[torch.optim.Adam, torch.optim.Adam]:
    """Official Adam(0.5, 0.999) for G's trainable parameters (Stage II: not the frozen
    Stage-I G) and all of D's; ``fused`` None = the fused kernels on CUDA and the CPU."""
    if fused is None:
        fused = device.type in ("cuda", "cpu")
    fused = fused or None  # None lets torch pick its default (foreach or for-loop) implementation
    opt_g = _adam([p for p in netG.parameters() if p.requires_grad], lr_g, fused)
    opt_d = _adam(list(netD.parameters()), lr_d, fused)
    return opt_g, opt_d


def _adam(params: list[nn.Parameter], lr: float, fused: bool | None) -> torch.optim.Adam:
    try:
        return torch.optim.Adam(params, lr=lr, betas=(0.5, 0.999), fused=fused)
    except RuntimeError:  # torch < 2.4 has no fused Adam for CPU tensors
        return torch.optim.Adam(params, lr=lr, betas=(0.5, 0.999))


def prepare_modules(
    netG: nn.Module,
    netD: nn.Module,
    *,
    channels_last: bool,
    compile: bool,
    compile_mode: str | None = None,
    fused_upsample: bool = True,
    gemm_convs: bool = False,
) -> None:
    """In place: G's upsampling convolutions fused and (``gemm_convs``, for the CPU) the widest
    convolutions as matrix products (training/fast_layers.py), channels_last weights, and
    ``torch.compile`` of G, D's encoder and D's heads.

    ``nn.Module.compile`` compiles the call without wrapping, so state dicts keep their keys.
    """
    if fused_upsample:
        fuse_nearest_upsampling(netG)
    if gemm_convs:
        gemm_large_convolutions(netG)
        gemm_large_convolutions(netD)
    if channels_last:
        netG.to(memory_format=torch.channels_last)
        netD.to(memory_format=torch.channels_last)
    if compile:
        netG.compile(mode=compile_mode)
        netD.compile(mode=compile_mode)
        for head in (netD.get_cond_logits, netD.get_uncond_logits):
            if head is not None:
                head.compile(mode=compile_mode)
