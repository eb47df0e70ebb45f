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
* :class:`BenchV2` otherwise: the parts ``stackgan train --arch v2`` trains with, built by
  :func:`~stackgan_cli.training.assembly.build_training_parts` (the StackGAN-v2 recipe of
  ``TrainConfig.for_arch("v2")``, the means mapped onto an
  :class:`~stackgan_cli.training.assembly.Execution`) and
  :func:`~stackgan_cli.training.assembly.build_sampler` (the ``WrongImageSampler`` on
  device-resident uint8 304 px images of a :class:`SyntheticSplit`), with the trainer's
  ``ParameterAverage`` update after each step.

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

from stackgan_cli.data.batch import Batch
from stackgan_cli.families import family_for_training
from stackgan_cli.families.stackgan_v2 import StackGANv2
from stackgan_cli.models import ModelConfig
from stackgan_cli.models.losses import kl_loss
from stackgan_cli.training.assembly import (
    Execution,
    TrainingParts,
    build_sampler,
    build_training_parts,
)
from stackgan_cli.training.config import TrainConfig
from stackgan_cli.training.step import make_optimizers

KL_COEFF = 2.0  # birds_3stages.yml COEFF.KL (stackgan-v2-spec.md section 1)
UNCOND_COEFF = 1.0  # UNCOND_LOSS
EMA_DECAY = 0.999  # the official moving average of G's parameters (the trainer's v2 default)
LR = 2e-4


def model_config(branches: int) -> ModelConfig:
    """The birds StackGAN-v2 widths with ``branches`` branches."""
    return replace(ModelConfig.preset("birds-v2"), branch_num=branches)


def train_config(branches: int, batch: int) -> TrainConfig:
    """The StackGAN-v2 birds recipe (``stackgan train --arch v2``), checked against the
    official constants the iteration above restates."""
    cfg = TrainConfig.for_arch("v2", branches=branches, batch_size=batch)
    recipe = (cfg.kl_coeff, cfg.uncond_coeff, cfg.color_coeff, cfg.ema, cfg.lr_g, cfg.lr_d)
    assert recipe == (KL_COEFF, UNCOND_COEFF, 0.0, EMA_DECAY, LR, LR), recipe
    assert cfg.loss == "bce" and cfg.optimizer == "adam", (cfg.loss, cfg.optimizer)
    return cfg


def execution(means) -> Execution:
    """The :class:`Execution` of a ``train_throughput.Means`` (all but ``official``,
    ``sampler`` and ``cudnn_benchmark``, which the benches handle themselves)."""
    return Execution(
        channels_last=means.channels_last,
        amp=means.amp,
        compile=means.compile,
        compile_mode=means.compile_mode,
        fused_upsample=means.fused_upsample,
        gemm_convs=means.gemm_convs,
        fused_adam=means.fused_adam,
        freeze_d_for_g_step=means.freeze_d,
    )


class SyntheticSplit:
    """A prepared split's interface for :func:`build_sampler` over random data: ``count``
    uint8 images of ``load_size`` px, 10 caption embeddings each, classes 0..3 (drawn in that
    order from ``numpy.random.default_rng(seed)``)."""

    def __init__(self, count: int, load_size: int, text_dim: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.load_size = load_size
        self._images = rng.integers(0, 256, (count, load_size, load_size, 3), dtype=np.uint8)
        self.embeddings = rng.standard_normal((count, 10, text_dim)).astype(np.float32)
        self.class_ids = rng.integers(0, 4, count)

    def __len__(self) -> int:
        return len(self._images)

    def images(self, size: int) -> np.ndarray:
        if size != self.load_size:
            raise ValueError(f"synthetic images are {self.load_size} px, not {size}")
        return self._images


def synthetic_sampler(family, batch: int, device: torch.device, channels_last: bool):
    """The training sampler (:func:`build_sampler`) over ``4 x batch`` random images."""
    split = SyntheticSplit(4 * batch, family.load_size, family.cfg.text_dim)
    return build_sampler(
        family,
        split,
        batch_size=batch,
        device=device,
        seed=0,
        channels_last=channels_last,
        name="the synthetic data",
    )


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


def load_init_state(netG: nn.Module, netDs: list[nn.Module], init_state: str) -> None:
    """Load a :func:`save_init_state` file into the networks (in place)."""
    state = torch.load(init_state, map_location="cpu", weights_only=True)
    netG.load_state_dict(state["G"])
    for netD, d_state in zip(netDs, state["Ds"], strict=True):
        netD.load_state_dict(d_state)


def build(branches: int, init_state: str | None) -> tuple[StackGANv2, nn.Module, list[nn.Module]]:
    """The family and fresh (CPU) networks for the official iteration: initialised with seed
    0, or loaded from ``init_state`` (a :func:`save_init_state` file)."""
    family = StackGANv2(model_config(branches), uncond_coeff=UNCOND_COEFF, color_coeff=0.0)
    torch.manual_seed(0)
    if init_state is None:
        return (family, *family.build_networks())
    with skipped_v2_init():
        netG, netDs = family.build_networks()
    load_init_state(netG, netDs, init_state)
    return family, netG, netDs


def build_parts(
    branches: int, batch: int, device: torch.device, means, init_state: str | None
) -> TrainingParts:
    """What ``stackgan train --arch v2`` trains, built by :func:`build_training_parts`: the
    networks initialised with seed 0 (as :func:`build`), or built without the initialisation
    and loaded from ``init_state``, the parameter average then restarted from those weights."""
    cfg = train_config(branches, batch)
    family = family_for_training(cfg, model_config(branches))
    torch.manual_seed(0)
    if init_state is None:
        return build_training_parts(cfg, family, device, execution(means))
    with skipped_v2_init():
        parts = build_training_parts(cfg, family, device, execution(means))
    load_init_state(parts.netG, parts.netDs, init_state)
    if parts.average is not None:
        params = parts.netG.named_parameters()
        parts.average.load_state_dict({n: p.detach() for n, p in params if p.requires_grad})
    return parts


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
        self.cfg = cfg = model_config(branches)
        if means.official:
            if device.type == "cuda":
                torch.backends.cudnn.benchmark = means.cudnn_benchmark
            family, netG, netDs = build(branches, init_state)
            self.netG = netG.to(device).train()
            self.netDs = [d.to(device).train() for d in netDs]
            size, sizes = family.image_size, family.output_sizes()
            torch.manual_seed(1)
            self.opt_g, self.opt_ds = make_optimizers(
                self.netG, self.netDs, lr_g=LR, lr_d=LR, device=device, fused=False
            )
            real = torch.rand(batch, 3, size, size, device=device) * 2 - 1
            wrong = torch.rand(batch, 3, size, size, device=device) * 2 - 1
            text = torch.randn(batch, cfg.text_dim, device=device)
            # The official loader hands every branch's images over ready-made.
            views = family.real_views(Batch(images=real, text=text, wrong=wrong))
            reals = [view.images for view in views]
            wrongs = [view.wrong for view in views]
            assert [r.shape[-1] for r in reals] == list(sizes)
            noise = torch.empty(batch, cfg.z_dim, device=device)
            averages = [p.detach().clone() for p in self.netG.parameters()]
            criterion = nn.BCELoss()
            self.iteration = lambda: official_iteration_v2(
                self.netG, self.netDs, self.opt_g, self.opt_ds, reals, wrongs, text, noise,
                averages, criterion,
            )  # fmt: skip
            return
        parts = build_parts(branches, batch, device, means, init_state)
        if device.type == "cuda":  # build_training_parts turns it on; the means may not
            torch.backends.cudnn.benchmark = means.cudnn_benchmark
        self.parts = parts
        self.netG, self.netDs = parts.netG, parts.netDs
        self.opt_g, self.opt_ds = parts.opt_g, parts.opt_ds
        step, average, size = parts.step, parts.average, parts.family.image_size
        torch.manual_seed(1)
        if means.sampler:
            sampler = synthetic_sampler(parts.family, batch, device, means.channels_last)
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
            ready = Batch(images=real, text=text, wrong=wrong)
            batch_fn = lambda: ready  # noqa: E731

        def iteration() -> Tensor:
            losses = step(batch_fn())
            average.update()
            return losses

        self.iteration = iteration


def count_flops_v2(branches: int, batch: int, device: torch.device) -> float:
    """Model FLOPs of one iteration (as ``train_throughput.count_flops``: unfused layers,
    D frozen in the G step), counted at batch 2 on the CPU and scaled."""
    from torch.utils.flop_counter import FlopCounterMode

    counted = batch if device.type == "cuda" else 2
    cfg = train_config(branches, counted)
    family = family_for_training(cfg, model_config(branches))
    plain = Execution(fused_upsample=False, gemm_convs=False, freeze_d_for_g_step=True)
    with skipped_v2_init():  # the weights do not change the count
        parts = build_training_parts(cfg, family, device, plain)
    size, text_dim = family.image_size, family.cfg.text_dim
    real = torch.rand(counted, 3, size, size, device=device) * 2 - 1
    wrong = torch.rand(counted, 3, size, size, device=device) * 2 - 1
    text = torch.randn(counted, text_dim, device=device)
    with FlopCounterMode(display=False) as counter:
        parts.step(Batch(images=real, text=text, wrong=wrong))
    return float(counter.get_total_flops()) * batch / counted
