"""StackGAN-v2 iterations for ``train_throughput.py --arch v2`` (birds widths, 3 branches).

Two iterations around the same networks (``ModelConfig.preset("birds-v2")``):

* :func:`official_iteration_v2`: the official StackGAN-v2 trainer's iteration
  (``condGANTrainer.train``, stackgan-v2-spec.md section 4) restated around our networks: one G
  forward giving every branch's images, then each D_i stepped in turn with its own Adam
  (``netD.zero_grad()``, D on real / wrong / fake.detach() with ``mu.detach()``, ``BCELoss`` on
  the conditional and (UNCOND_LOSS 1) unconditional probabilities), then ``netG.zero_grad()``
  and one G step on the sum over branches plus ``COEFF.KL`` x KL, with the discriminators'
  parameters left trainable (their weight gradients are computed in the G step too and thrown
  away by the next ``zero_grad``), the default (for-loop) Adam, NCHW float32, data as ready-made
  tensors at every branch's size, then the moving average of G's parameters
  (``avg.mul_(0.999).add_(0.001 * p)``, one parameter at a time).
* :class:`BenchV2` otherwise: :class:`~stackgan_cli.training.step.GANStep` with the StackGAN-v2
  family, prepared as ``stackgan train --arch v2`` prepares it (``prepare_modules``,
  ``make_optimizers``, the ``WrongImageSampler`` on device-resident uint8 304 px images, the
  trainer's ``ParameterAverage`` update after each step).

The orthogonal initialisation at birds widths takes tens of seconds on a 2-core CPU (the D256
alone most of it), so the networks are built once (``torch.manual_seed(0)``) and their state is
saved (:func:`save_init_state`); every measured configuration then builds its modules without
the initialisation (:func:`skipped_v2_init`) and loads that state: the same weights for all.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import replace

import numpy as np
import torch
from torch import Tensor, nn

from stackgan_cli.data.wrong_sampler import WrongImageSampler
from stackgan_cli.models import ModelConfig
from stackgan_cli.models.losses import BCE, kl_loss
from stackgan_cli.training.ema import ParameterAverage
from stackgan_cli.training.family_v2 import StackGANv2
from stackgan_cli.training.step import GANStep, make_optimizers, prepare_modules

KL_COEFF = 2.0  # birds_3stages.yml COEFF.KL (stackgan-v2-spec.md section 1)
UNCOND_COEFF = 1.0  # UNCOND_LOSS
EMA_DECAY = 0.999  # the official moving average of G's parameters (the trainer's v2 default)
LR = 2e-4


def model_config(branches: int) -> ModelConfig:
    """The birds StackGAN-v2 widths with ``branches`` branches."""
    return replace(ModelConfig.preset("birds-v2"), branch_num=branches)


@contextlib.contextmanager
def skipped_v2_init() -> Iterator[None]:
    """Build v2 networks without the orthogonal initialisation (their state is loaded after)."""
    import stackgan_cli.models.discriminator_v2 as d_module
    import stackgan_cli.models.generator_v2 as g_module

    saved = g_module.init_weights_v2, d_module.init_weights_v2
    g_module.init_weights_v2 = d_module.init_weights_v2 = lambda module: None
    try:
        yield
    finally:
        g_module.init_weights_v2, d_module.init_weights_v2 = saved


def build(branches: int, init_state: str | None) -> tuple[StackGANv2, nn.Module, list[nn.Module]]:
    """The family and fresh (CPU) networks: initialised with seed 0, or loaded from
    ``init_state`` (a :func:`save_init_state` file)."""
    family = StackGANv2(branches, uncond_coeff=UNCOND_COEFF, color_coeff=0.0)
    cfg = model_config(branches)
    torch.manual_seed(0)
    if init_state is None:
        return (family, *family.build(cfg))
    with skipped_v2_init():
        netG, netDs = family.build(cfg)
    state = torch.load(init_state, map_location="cpu", weights_only=True)
    netG.load_state_dict(state["G"])
    for netD, d_state in zip(netDs, state["Ds"], strict=True):
        netD.load_state_dict(d_state)
    return family, netG, netDs


def save_init_state(branches: int, path: str) -> None:
    """Initialise the networks once (seed 0) and save their state for every configuration."""
    _, netG, netDs = build(branches, None)
    torch.save({"G": netG.state_dict(), "Ds": [d.state_dict() for d in netDs]}, path)


def official_iteration_v2(
    netG, netDs, opt_g, opt_ds, reals, wrongs, text, noise, averages, criterion
) -> None:
    """One iteration of the official StackGAN-v2 trainer (trainer.py ``condGANTrainer``:
    ``train``, ``train_Dnet``, ``train_Gnet``), around our networks."""
    batch = text.size(0)
    real_labels = torch.ones(batch, device=text.device)
    fake_labels = torch.zeros(batch, device=text.device)
    noise.normal_(0, 1)
    fake_imgs, mu, logvar = netG(text, noise)  # our G takes (text, noise)
    for i, (netD, opt_d) in enumerate(zip(netDs, opt_ds, strict=True)):  # train_Dnet(i)
        netD.zero_grad()
        real_logits = netD(reals[i], mu.detach())
        wrong_logits = netD(wrongs[i], mu.detach())
        fake_logits = netD(fake_imgs[i].detach(), mu.detach())
        err_real = criterion(real_logits[0], real_labels)
        err_wrong = criterion(wrong_logits[0], fake_labels)
        err_fake = criterion(fake_logits[0], fake_labels)
        if UNCOND_COEFF > 0:
            err_real = err_real + UNCOND_COEFF * criterion(real_logits[1], real_labels)
            err_wrong = err_wrong + UNCOND_COEFF * criterion(wrong_logits[1], real_labels)
            err_fake = err_fake + UNCOND_COEFF * criterion(fake_logits[1], fake_labels)
            err_d = err_real + err_wrong + err_fake
        else:
            err_d = err_real + 0.5 * (err_wrong + err_fake)
        err_d.backward()
        opt_d.step()
    netG.zero_grad()  # train_Gnet: the Ds' parameters stay trainable
    err_g_total = 0
    for i, netD in enumerate(netDs):
        outputs = netD(fake_imgs[i], mu)
        err_g = criterion(outputs[0], real_labels)
        if UNCOND_COEFF > 0:
            err_g = err_g + UNCOND_COEFF * criterion(outputs[1], real_labels)
        err_g_total = err_g_total + err_g
    err_g_total = err_g_total + kl_loss(mu, logvar) * KL_COEFF
    err_g_total.backward()
    opt_g.step()
    for p, avg_p in zip(netG.parameters(), averages, strict=True):
        avg_p.mul_(EMA_DECAY).add_(p.data, alpha=1 - EMA_DECAY)


class BenchV2:
    """Networks, optimizers, data and one callable iteration for a configuration (``means``:
    train_throughput.Means)."""

    def __init__(
        self, branches: int, batch: int, device: torch.device, means, init_state: str | None
    ) -> None:
        self.batch, self.device, self.means = batch, device, means
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = means.cudnn_benchmark
        family, netG, netDs = build(branches, init_state)
        self.cfg = cfg = model_config(branches)
        self.netG = netG.to(device).train()
        self.netDs = [d.to(device).train() for d in netDs]
        size, sizes = family.image_size, family.sizes
        torch.manual_seed(1)
        if means.official:
            self.opt_g, self.opt_ds = make_optimizers(
                self.netG, self.netDs, lr_g=LR, lr_d=LR, device=device, fused=False
            )
            real = torch.rand(batch, 3, size, size, device=device) * 2 - 1
            wrong = torch.rand(batch, 3, size, size, device=device) * 2 - 1
            # The official loader hands every branch's images over ready-made.
            reals = [v[0] for v in family.real_views(real, wrong)]
            wrongs = [v[1] for v in family.real_views(real, wrong)]
            assert [r.shape[-1] for r in reals] == list(sizes)
            text = torch.randn(batch, cfg.text_dim, device=device)
            noise = torch.empty(batch, cfg.z_dim, device=device)
            averages = [p.detach().clone() for p in self.netG.parameters()]
            criterion = nn.BCELoss()
            self.iteration = lambda: official_iteration_v2(
                self.netG, self.netDs, self.opt_g, self.opt_ds, reals, wrongs, text, noise,
                averages, criterion,
            )  # fmt: skip
            return
        prepare_modules(
            self.netG,
            self.netDs,
            channels_last=means.channels_last,
            compile=means.compile,
            compile_mode=means.compile_mode,
            fused_upsample=means.fused_upsample,
            gemm_convs=means.gemm_convs,
        )
        self.opt_g, self.opt_ds = make_optimizers(
            self.netG, self.netDs, lr_g=LR, lr_d=LR, device=device, fused=means.fused_adam
        )
        step = GANStep(
            family,
            self.netG,
            self.netDs,
            self.opt_g,
            self.opt_ds,
            loss=BCE,
            kl_coeff=KL_COEFF,
            z_dim=cfg.z_dim,
            device=device,
            amp=means.amp,
            freeze_d_for_g_step=means.freeze_d,
        )
        average = ParameterAverage(self.netG, EMA_DECAY)
        if means.sampler:
            rng = np.random.default_rng(0)
            count = 4 * batch
            sampler = WrongImageSampler(
                rng.integers(0, 256, (count, family.load_size, family.load_size, 3), np.uint8),
                rng.standard_normal((count, 10, cfg.text_dim)).astype(np.float32),
                rng.integers(0, 4, count),
                image_size=size,
                batch_size=batch,
                device=device,
                seed=0,
                channels_last=means.channels_last,
            )
            batch_fn = sampler.next_batch
        else:
            fmt = torch.channels_last if means.channels_last else torch.contiguous_format
            real = (torch.rand(batch, 3, size, size, device=device) * 2 - 1).contiguous(
                memory_format=fmt
            )
            wrong = (torch.rand(batch, 3, size, size, device=device) * 2 - 1).contiguous(
                memory_format=fmt
            )
            text = torch.randn(batch, cfg.text_dim, device=device)
            batch_fn = lambda: (real, text, wrong)  # noqa: E731

        def iteration() -> Tensor:
            losses = step(*batch_fn())
            average.update()
            return losses

        self.iteration = iteration


def count_flops_v2(branches: int, batch: int, device: torch.device) -> float:
    """Model FLOPs of one iteration (as ``train_throughput.count_flops``: unfused layers,
    D frozen in the G step), counted at batch 2 on the CPU and scaled."""
    from torch.utils.flop_counter import FlopCounterMode

    counted = batch if device.type == "cuda" else 2
    family = StackGANv2(branches, uncond_coeff=UNCOND_COEFF)
    cfg = model_config(branches)
    with skipped_v2_init():  # the weights do not change the count
        netG, netDs = family.build(cfg)
    netG = netG.to(device).train()
    netDs = [d.to(device).train() for d in netDs]
    opt_g, opt_ds = make_optimizers(netG, netDs, lr_g=LR, lr_d=LR, device=device)
    step = GANStep(family, netG, netDs, opt_g, opt_ds, loss=BCE, kl_coeff=KL_COEFF,
                   z_dim=cfg.z_dim, device=device)  # fmt: skip
    size = family.image_size
    real = torch.rand(counted, 3, size, size, device=device) * 2 - 1
    wrong = torch.rand(counted, 3, size, size, device=device) * 2 - 1
    text = torch.randn(counted, cfg.text_dim, device=device)
    with FlopCounterMode(display=False) as counter:
        step(real, text, wrong)
    return float(counter.get_total_flops()) * batch / counted
