"""The parts of a training run, built once: networks, optimizers, the step, the sampler.

``build_training_parts`` turns a TrainConfig and a family into the networks (initialised,
with the regime's network options and the fast execution paths), their optimizers, the
generator's moving average and the :class:`~stackgan_cli.training.step.GANStep`;
``build_sampler`` the device-resident batch sampler. The Trainer (training/loop.py) and the
throughput benchmarks (benchmarks/) build their runs with these, so a benchmark measures what
training runs. :class:`Execution` holds the choices that change speed, never the maths.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from stackgan_cli.data.sampler import DeviceBatchSampler
from stackgan_cli.data.wrong_sampler import WrongImageSampler
from stackgan_cli.errors import StackGANError
from stackgan_cli.families.base import Family
from stackgan_cli.models.losses import adversarial_loss
from stackgan_cli.models.network_options import apply_network_options
from stackgan_cli.training import distributed as dist_utils
from stackgan_cli.training.diffaugment import DiffAugment
from stackgan_cli.training.ema import ParameterAverage
from stackgan_cli.training.regimes import apply_init
from stackgan_cli.training.step import GANStep, loss_names, make_optimizers, prepare_modules


@dataclass(frozen=True)
class Execution:
    """How the parts run on their device: each choice keeps the maths (training/step.py,
    training/fast_layers.py); ``fused_adam`` None lets make_optimizers pick."""

    channels_last: bool = False
    amp: bool = False  # bf16 autocast, on CUDA only
    compile: bool = False
    compile_mode: str | None = None
    fused_upsample: bool = True
    gemm_convs: bool = False  # the widest convolutions as matrix products (the CPU)
    fused_adam: bool | None = None
    freeze_d_for_g_step: bool = True

    @classmethod
    def for_config(cls, cfg: Any, device: torch.device) -> Execution:
        """What a TrainConfig asks for on ``device`` (channels_last None: on CUDA only; the CPU
        always trains in float32)."""
        cuda = device.type == "cuda"
        channels_last = cuda if cfg.channels_last is None else bool(cfg.channels_last)
        return cls(
            channels_last=channels_last,
            amp=cfg.amp and cuda,
            compile=cfg.compile,
            fused_upsample=cfg.fast_layers,
            gemm_convs=cfg.fast_layers and not cuda,
        )


@dataclass
class TrainingParts:
    """What one process trains: ``netG`` and ``netDs`` are the bare modules."""

    family: Family
    netG: nn.Module
    netDs: list[nn.Module]
    opt_g: torch.optim.Optimizer
    opt_ds: list[torch.optim.Optimizer]
    average: ParameterAverage | None  # --ema: the generator's moving average
    step: GANStep
    loss_names: tuple[str, ...]  # of the tensor ``step`` returns
    execution: Execution


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global random streams."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def restore_progress(
    state: dict[str, Any],
    source: Any,
    *,
    files: Any,
    ctx: dist_utils.DistContext,
    device: torch.device,
    seed: int,
    sampler: Any,
) -> tuple[int, float]:
    """What every run takes back from a checkpoint besides its networks: ``files``' metrics
    length and last saved position, this rank's random streams, and ``(global_step,
    elapsed)``, returned."""
    from stackgan_cli.console import warn
    from stackgan_cli.training import checkpoint as ckpt

    global_step = int(state["global_step"])
    files.metrics_bytes = int(state.get("metrics_bytes", 0))
    rng = state["rng"]
    if len(rng) == ctx.world_size:
        ckpt.restore_rng(rng[ctx.rank], device)
    else:
        # Another number of processes than the run had: no exact continuation is possible,
        # so give every rank fresh, distinct random streams.
        if ctx.is_main:
            warn(
                f"{source} was written by {len(rng)} processes and training continues "
                f"with {ctx.world_size}: the continuation is not bit-identical"
            )
        seed_everything(seed + ctx.rank + 1_000_003 * global_step)
    files.last_saved = (sampler.epoch, sampler.step)
    return global_step, float(state.get("elapsed", 0.0))


def build_training_parts(
    cfg: Any,
    family: Family,
    device: torch.device,
    execution: Execution,
    *,
    ctx: dist_utils.DistContext | None = None,
    stage1_state: dict[str, torch.Tensor] | None = None,
) -> TrainingParts:
    """The family's networks for the TrainConfig ``cfg`` on ``device``, trained in train mode,
    with their optimizers, average and step; under torchrun (``ctx``) wrapped for DDP."""
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    family.to(device)
    netG, netDs = family.build_networks(stage1_state)
    frozen = family.frozen_modules(netG)
    # --init other than official; a family's frozen parts keep their weights.
    apply_init(cfg.init, netG, *netDs, skip=frozen)
    # --g-norm / --d-norm / --d-dropout (nothing happens with the official defaults).
    apply_network_options(cfg, netG, netDs, frozen)
    for module in (netG, *netDs):
        module.to(device).train()
    prepare_modules(
        netG,
        netDs,
        channels_last=execution.channels_last,
        compile=execution.compile,
        compile_mode=execution.compile_mode,
        fused_upsample=execution.fused_upsample,
        gemm_convs=execution.gemm_convs,
        gemm_options=family.cpu_gemm,
    )
    opt_g, opt_ds = make_optimizers(
        netG,
        netDs,
        lr_g=cfg.lr_g,
        lr_d=cfg.lr_d,
        device=device,
        fused=execution.fused_adam,
        optimizer=cfg.optimizer,
        betas=(cfg.beta1, cfg.beta2),
    )
    average = ParameterAverage(netG, cfg.ema) if cfg.ema > 0 else None
    wrap = (lambda module: dist_utils.wrap_ddp(module, ctx)) if ctx is not None else None
    step = GANStep(
        family,
        netG,
        netDs,
        opt_g,
        opt_ds,
        loss=adversarial_loss(cfg.loss),
        kl_coeff=cfg.kl_coeff,
        gp_weight=cfg.gp_weight,
        n_critic=cfg.n_critic,
        augment=DiffAugment(cfg.diffaugment) if cfg.diffaugment else None,
        r1=cfg.r1,
        z_dim=family.cfg.z_dim,
        device=device,
        amp=execution.amp,
        ddp_g=wrap(netG) if wrap else None,
        ddp_ds=[wrap(family.encoder(netD)) for netD in netDs] if wrap else None,
        freeze_d_for_g_step=execution.freeze_d_for_g_step,
    )
    names = loss_names(
        family, len(netDs), gradient_penalty=step.loss.gradient_penalty, r1=cfg.r1 > 0
    )
    return TrainingParts(family, netG, netDs, opt_g, opt_ds, average, step, names, execution)


def build_sampler(
    family: Family,
    split: Any,
    *,
    batch_size: int,
    device: torch.device,
    seed: int,
    channels_last: bool,
    rank: int = 0,
    world_size: int = 1,
    name: str = "the dataset",
) -> DeviceBatchSampler:
    """The device-resident sampler of a prepared split (``images(size)``, ``embeddings``,
    ``class_ids``) at the family's training size; with the wrong images it draws apart, or
    the captions' words (:meth:`Family.caption_words`) for a family that reads them."""
    if len(split) < batch_size * world_size:
        raise StackGANError(
            f"--batch-size {batch_size} x {world_size} process(es) is more than the "
            f"{len(split)} training images of {name}"
        )
    sampler_class, extra, words = DeviceBatchSampler, (), {}
    if family.wrong_images:
        sampler_class, extra = WrongImageSampler, (split.class_ids,)
    caption_words = family.caption_words(split)
    if caption_words is not None:
        words = {"words": caption_words, "class_ids": split.class_ids}
    return sampler_class(
        split.images(family.load_size),
        split.embeddings,
        *extra,
        **words,
        image_size=family.image_size,
        batch_size=batch_size,
        device=device,
        seed=seed,
        rank=rank,
        world_size=world_size,
        channels_last=channels_last,
    )
