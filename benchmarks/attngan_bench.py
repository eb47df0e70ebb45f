"""AttnGAN iterations for ``train_throughput.py --arch attngan`` (birds widths, 3 branches).

Two iterations around the same networks (``ModelConfig.preset("birds-attngan")``: gf_dim 32,
df_dim 64, text_dim 256, word_dim 300, r_num 2; ``--branches`` 1 to 3) and the same frozen DAMSM:

* :func:`official_iteration_attngan`: the official AttnGAN trainer's iteration (trainer.py,
  attngan-spec.md sections 7 and 8.2) restated around our networks: the batch sorted by caption
  length; the frozen DAMSM text encoder (zero initial state) gives the words and the sentence
  (detached); mask = captions == 0 cut to the longest caption; one G forward giving every
  branch's images; each D_i in turn: ``zero_grad``, errD_i (real and fake through D separately,
  wrong = real image i with sentence i + 1: :func:`attngan_discriminator_loss`), backward, step;
  then ``netG.zero_grad()``, errG_total (adversarial over every D plus the DAMSM word and
  sentence losses of the largest fake through the frozen image encoder, lambda 5:
  :func:`attngan_generator_loss`) + KL (weight 1), backward with the discriminators' parameters
  trainable (their weight gradients computed and thrown away by the next ``zero_grad``), step;
  then the moving average of G's parameters, one parameter at a time (spec 8.2). The default
  (for-loop) Adam(2e-4, betas 0.5 / 0.999), NCHW float32, images and padded captions as
  ready-made tensors (the official loader prepares them; ``prepare_data`` sorts each batch).
* :class:`BenchAttnGAN` otherwise: the parts ``stackgan train --arch attngan`` trains with,
  built by :func:`~stackgan_cli.training.assembly.build_training_parts` from
  ``TrainConfig.for_arch("attngan", damsm=..., branches=N)`` and ``Execution.for_config`` (the
  training default) and stepped with batches of :func:`~stackgan_cli.training.assembly
  .build_sampler` (the device-resident ``DeviceBatchSampler`` with the captions' word ids), then
  ``ParameterAverage.update()``.

The DAMSM is made once (:func:`make_damsm`) in a temporary folder and saved with
``save_damsm_file``: a random ``DAMSMTextEncoder`` over a synthetic vocabulary of 5450 words (the
birds size, attngan-spec.md 1) and a random-init ``DAMSMImageEncoder`` whose trunk BatchNorm
running statistics are set from random images, so that its activations have the scale of a
trained trunk's (torch's default init alone shrinks them to about 1e-6 by Mixed_6e). Data:
``4 x batch`` random uint8 images of ``load_size`` px (304; 76 with one branch), 10 captions of
10-25 random words each (cut to 18 words as the official loader does), class ids in 0..149.

The initial weights are built once (``torch.manual_seed(0)``) and saved (:func:`save_init_state`);
every measured configuration builds its modules without the orthogonal initialisation
(:func:`skipped_attngan_init`) and loads that state: the same weights for both iterations.

``--breakdown`` (:class:`PhaseClock`) times the parts of every timed iteration with module
hooks and optimizer-step wrappers that are the same for both iterations; ``--profile`` adds
torch.profiler's top operators of one iteration. ``--experiment`` (ours only, clearly not the
default) monkeypatches the DAMSM image encoder (``g_channels_last``: G's memory format) in the
benchmark process for a measurement; and
``python benchmarks/attngan_bench.py trunk`` times the image encoder's forward and
input-gradient backward alone under each experiment.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from stackgan_cli.damsm_file import DAMSMBundle, load_damsm, save_damsm_file
from stackgan_cli.data.batch import Batch
from stackgan_cli.families import family_for_training
from stackgan_cli.families.attngan import GAMMAS, AttnGAN
from stackgan_cli.models import DAMSMImageEncoder, DAMSMTextEncoder, ModelConfig
from stackgan_cli.models.damsm import INCEPTION_SIZE, TRUNK_MODULES
from stackgan_cli.models.losses import kl_loss
from stackgan_cli.models.losses_attngan import attngan_discriminator_loss, attngan_generator_loss
from stackgan_cli.text.damsm_text import DAMSMText
from stackgan_cli.text.words import END, WORDS_NUM, WordVocabulary
from stackgan_cli.training.assembly import (
    Execution,
    TrainingParts,
    build_sampler,
    build_training_parts,
)
from stackgan_cli.training.config import TrainConfig
from stackgan_cli.training.step import make_optimizers

VOCAB_SIZE = 5450  # birds, index 0 (<end>) included (attngan-spec.md 1)
CAPTION_WORDS = (10, 25)  # random captions of 10 to 25 words
CLASSES = 150  # CUB's training classes
KL_COEFF = 1.0  # KL added with weight 1 (attngan-spec.md 7)
DAMSM_WEIGHT = 5.0  # TRAIN.SMOOTH.LAMBDA of bird_attn2.yml
EMA_DECAY = 0.999
LR = 2e-4
EXPERIMENTS = (
    "fold_bn",
    "trunk_channels_last",
    "fold_bn+trunk_channels_last",
    "trunk_bf16",
    "g_channels_last",
    "trunk_channels_last+g_channels_last",
)


def model_config(branches: int) -> ModelConfig:
    """The birds AttnGAN widths with ``branches`` branches."""
    return replace(ModelConfig.preset("birds-attngan"), branch_num=branches)


def train_config(branches: int, batch: int, damsm: str) -> TrainConfig:
    """The AttnGAN birds recipe (``stackgan train --arch attngan``), checked against the
    official constants the iteration above restates."""
    cfg = TrainConfig.for_arch("attngan", damsm=damsm, branches=branches, batch_size=batch)
    recipe = (cfg.kl_coeff, cfg.damsm_weight, cfg.ema, cfg.lr_g, cfg.lr_d, cfg.beta1, cfg.beta2)
    assert recipe == (KL_COEFF, DAMSM_WEIGHT, EMA_DECAY, LR, LR, 0.5, 0.999), recipe
    assert cfg.loss == "bce" and cfg.optimizer == "adam", (cfg.loss, cfg.optimizer)
    assert GAMMAS == (4.0, 5.0, 10.0), GAMMAS
    return cfg


def vocabulary() -> WordVocabulary:
    """``<end>`` and 5449 synthetic words ``w1`` ... ``w5449`` (word id i is ``w<i>``)."""
    return WordVocabulary((END, *(f"w{i}" for i in range(1, VOCAB_SIZE))))


@torch.no_grad()
def calibrate_trunk(encoder: DAMSMImageEncoder, seed: int = 0, batches: int = 2) -> None:
    """Set the trunk BatchNorms' running statistics to those of random [-1, 1] images at 299 px
    (a cumulative average over ``batches`` batches of 4), then eval mode."""
    generator = torch.Generator().manual_seed(seed)
    norms = [m for name in TRUNK_MODULES for m in getattr(encoder, name).modules()]
    norms = [m for m in norms if isinstance(m, nn.BatchNorm2d)]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average
        norm.train()
    for _ in range(batches):
        images = torch.rand(4, 3, INCEPTION_SIZE, INCEPTION_SIZE, generator=generator) * 2 - 1
        encoder.trunk(images)
    for norm in norms:
        norm.momentum = 0.1
    encoder.eval()


def make_damsm(path: str | Path, seed: int = 0) -> None:
    """A DAMSM file at the birds widths: random text encoder over :func:`vocabulary`, random
    image encoder with calibrated trunk statistics (:func:`calibrate_trunk`)."""
    cfg = ModelConfig.preset("birds-attngan")
    torch.manual_seed(seed)
    text = DAMSMText(DAMSMTextEncoder(cfg, VOCAB_SIZE), vocabulary(), cfg)
    images = DAMSMImageEncoder(cfg)
    calibrate_trunk(images, seed)
    save_damsm_file(path, text, images, dataset="synthetic", epoch=None)


class SyntheticWordSplit:
    """A prepared split's interface for :func:`build_sampler` over random data: ``count``
    uint8 images of ``load_size`` px, 10 captions of 10-25 random words each (``captions``: the
    text, ``token_ids``: their word ids), class ids in 0..149; caption embeddings are zeros
    (AttnGAN reads the words). Drawn from ``numpy.random.default_rng(seed)``."""

    def __init__(self, count: int, load_size: int, text_dim: int, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.load_size = load_size
        self._images = rng.integers(0, 256, (count, load_size, load_size, 3), dtype=np.uint8)
        self.embeddings = np.zeros((count, 10, text_dim), dtype=np.float32)
        self.class_ids = rng.integers(0, CLASSES, count)
        low, high = CAPTION_WORDS
        lengths = rng.integers(low, high + 1, (count, 10))
        self.token_ids = [[rng.integers(1, VOCAB_SIZE, n).tolist() for n in row] for row in lengths]
        self.captions = [[" ".join(f"w{i}" for i in ids) for ids in row] for row in self.token_ids]

    def __len__(self) -> int:
        return len(self._images)

    def images(self, size: int) -> np.ndarray:
        if size != self.load_size:
            raise ValueError(f"synthetic images are {self.load_size} px, not {size}")
        return self._images


def synthetic_split(family: AttnGAN, batch: int) -> SyntheticWordSplit:
    return SyntheticWordSplit(4 * batch, family.load_size, family.cfg.text_dim)


def official_batch(split: SyntheticWordSplit, family: AttnGAN, batch: int, seed: int = 1):
    """What the official loader hands the trainer for the first ``batch`` images: every
    branch's real images (the top-left crop, shrunk as ``family.real_views``), one caption
    each cut to WORDS_NUM words (a random subset of a longer caption's positions, in order)
    and zero-padded, the lengths and the class ids; unsorted (the iteration sorts)."""
    rng = np.random.default_rng(seed)
    size = family.image_size
    pixels = torch.from_numpy(split.images(split.load_size)[:batch, :size, :size].copy())
    images = pixels.permute(0, 3, 1, 2).float().div(127.5).sub(1.0).contiguous()
    reals = [view.images for view in family.real_views(Batch(images=images, text=images))]
    captions = np.zeros((batch, WORDS_NUM), dtype=np.int64)
    lengths = np.zeros(batch, dtype=np.int64)
    for n in range(batch):
        ids = np.asarray(split.token_ids[n][rng.integers(0, 10)], dtype=np.int64)
        if len(ids) > WORDS_NUM:
            keep = np.arange(len(ids))
            rng.shuffle(keep)
            ids = ids[np.sort(keep[:WORDS_NUM])]
        captions[n, : len(ids)] = ids
        lengths[n] = len(ids)
    class_ids = torch.from_numpy(split.class_ids[:batch].astype(np.int64))
    return reals, torch.from_numpy(captions), torch.from_numpy(lengths), class_ids


@contextlib.contextmanager
def skipped_attngan_init() -> Iterator[None]:
    """Build AttnGAN networks without the orthogonal initialisation (their state is loaded
    after)."""
    import stackgan_cli.models.attngan as module

    saved = module.init_weights_attngan
    module.init_weights_attngan = lambda net: net
    try:
        yield
    finally:
        module.init_weights_attngan = saved


def save_init_state(branches: int, path: str) -> None:
    """Initialise the networks once (seed 0) and save their state for every configuration."""
    torch.manual_seed(0)
    netG, netDs = AttnGAN(model_config(branches)).build_networks()
    torch.save({"G": netG.state_dict(), "Ds": [d.state_dict() for d in netDs]}, path)


def load_init_state(netG: nn.Module, netDs: list[nn.Module], init_state: str) -> None:
    state = torch.load(init_state, map_location="cpu", weights_only=True)
    netG.load_state_dict(state["G"])
    for netD, d_state in zip(netDs, state["Ds"], strict=True):
        netD.load_state_dict(d_state)


@contextlib.contextmanager
def shared_files(branches: int, damsm: str | None, init_state: str | None) -> Iterator[tuple]:
    """(damsm path, init-state path): the given ones, else made in a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="attngan_bench_") as tmp:
        if damsm is None:
            damsm = os.path.join(tmp, "damsm.pt")
            make_damsm(damsm)
        if init_state is None:
            init_state = os.path.join(tmp, "init.pt")
            save_init_state(branches, init_state)
        yield damsm, init_state


def build_parts(
    branches: int, batch: int, device: torch.device, execution: Execution | None, damsm: str,
    init_state: str,
) -> TrainingParts:  # fmt: skip
    """What ``stackgan train --arch attngan`` trains (``build_training_parts``; ``execution``
    None: ``Execution.for_config``, the training default), built without the initialisation
    and loaded from ``init_state``, the parameter average restarted from those weights."""
    cfg = train_config(branches, batch, damsm)
    family = family_for_training(cfg, model_config(branches))
    if execution is None:
        execution = Execution.for_config(cfg, device)
    torch.manual_seed(0)
    with skipped_attngan_init():
        parts = build_training_parts(cfg, family, device, execution)
    load_init_state(parts.netG, parts.netDs, init_state)
    if parts.average is not None:
        params = parts.netG.named_parameters()
        parts.average.load_state_dict({n: p.detach() for n, p in params if p.requires_grad})
    return parts


def official_iteration_attngan(
    netG, netDs, opt_g, opt_ds, text_encoder, image_encoder, data, noise, averages
) -> None:
    """One iteration of the official AttnGAN trainer (trainer.py ``condGANTrainer.train``,
    attngan-spec.md 8.2), around our networks and losses."""
    reals, captions, cap_lens, class_ids = data
    # prepare_data: the batch sorted by caption length, longest first
    cap_lens, order = torch.sort(cap_lens, 0, True)
    reals = [real[order] for real in reals]
    captions, class_ids = captions[order], class_ids[order].numpy()
    hidden = text_encoder.init_hidden(captions.size(0))
    words_embs, sent_emb = text_encoder(captions, cap_lens, hidden)
    words_embs, sent_emb = words_embs.detach(), sent_emb.detach()
    mask = captions == 0
    num_words = words_embs.size(2)
    if mask.size(1) > num_words:
        mask = mask[:, :num_words]
    noise.normal_(0, 1)
    fake_imgs, _, mu, logvar = netG(sent_emb, words_embs, noise, mask)  # ours: (sent, words, z)
    for i, (netD, opt_d) in enumerate(zip(netDs, opt_ds, strict=True)):
        netD.zero_grad()
        err_d = attngan_discriminator_loss(netD, reals[i], fake_imgs[i], sent_emb)
        err_d.backward()
        opt_d.step()
    netG.zero_grad()  # the Ds' parameters stay trainable
    err_g_total = attngan_generator_loss(
        netDs, image_encoder, fake_imgs, words_embs, sent_emb, cap_lens, class_ids,
        *GAMMAS, damsm_weight=DAMSM_WEIGHT,
    )  # fmt: skip
    err_g_total = err_g_total + KL_COEFF * kl_loss(mu, logvar)
    err_g_total.backward()
    opt_g.step()
    for p, avg_p in zip(netG.parameters(), averages, strict=True):
        avg_p.mul_(EMA_DECAY).add_(p.data, alpha=1 - EMA_DECAY)


# --- experiments on the frozen DAMSM image encoder (benchmark process only) -----------------
def fold_trunk_batchnorm(encoder: nn.Module) -> int:
    """EXPERIMENT: every eval-mode trunk BatchNorm folded into the convolution before it
    (weight x gamma / sqrt(var + eps), bias beta - mean x that), the BatchNorm replaced by
    an identity: the same maths up to float rounding. Returns how many were folded."""
    from torchvision.models.inception import BasicConv2d

    count = 0
    with torch.no_grad():
        for name in TRUNK_MODULES:
            for block in getattr(encoder, name).modules():
                if not isinstance(block, BasicConv2d) or isinstance(block.bn, nn.Identity):
                    continue
                bn, conv = block.bn, block.conv
                scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
                conv.weight = nn.Parameter(conv.weight * scale.view(-1, 1, 1, 1), False)
                conv.bias = nn.Parameter(bn.bias - bn.running_mean * scale, False)
                block.bn = nn.Identity()
                count += 1
    return count


def trunk_channels_last(encoder: nn.Module) -> None:
    """EXPERIMENT: the trunk's weights and its resized input in channels_last."""
    encoder.to(memory_format=torch.channels_last)
    resize = encoder.resize
    encoder.resize = lambda images: resize(images).contiguous(memory_format=torch.channels_last)


def trunk_bf16(encoder: nn.Module) -> None:
    """EXPERIMENT (changes the rounding: not the float32 maths): the trunk under CPU bf16
    autocast, its outputs back in float32."""
    trunk = encoder.trunk

    def autocast_trunk(images: Tensor) -> tuple[Tensor, Tensor]:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            mixed_6e, pooled = trunk(images)
        return mixed_6e.float(), pooled.float()

    encoder.trunk = autocast_trunk


def apply_experiment(encoder: nn.Module, name: str | None, netG: nn.Module | None = None) -> None:
    """Monkeypatch the DAMSM image encoder (``g_channels_last``: the generator ``netG``, its
    weights and so its outputs in channels_last) in place with the named experiment(s)."""
    if not name:
        return
    for part in name.split("+"):
        if part == "g_channels_last":
            if netG is None:
                raise ValueError("g_channels_last needs the generator")
            netG.to(memory_format=torch.channels_last)
        elif part == "fold_bn":
            fold_trunk_batchnorm(encoder)
        elif part == "trunk_channels_last":
            trunk_channels_last(encoder)
        elif part == "trunk_bf16":
            trunk_bf16(encoder)
        else:
            raise ValueError(f"unknown experiment {part!r}; known: {', '.join(EXPERIMENTS)}")


# --- the benchmark ---------------------------------------------------------------------------
class BenchAttnGAN:
    """Networks, optimizers, data and one callable iteration for a configuration (``means``:
    train_throughput.Means; ``execution``: None for the training default, else the means'
    own Execution); ``text_encoder``, ``image_encoder``, ``netG``, ``opt_g`` and
    ``opt_ds`` are what :class:`PhaseClock` instruments."""

    def __init__(
        self, branches: int, batch: int, device: torch.device, means, init_state: str,
        damsm: str, execution: Execution | None = None, experiment: str | None = None,
    ) -> None:  # fmt: skip
        if batch < 2:
            raise ValueError("AttnGAN's discriminator loss needs a batch of at least 2")
        self.batch, self.device, self.means = batch, device, means
        self.cfg = cfg = model_config(branches)
        if means.official:
            if experiment:
                raise ValueError("--experiment applies to the training default only")
            if device.type == "cuda":
                torch.backends.cudnn.benchmark = means.cudnn_benchmark
            family = AttnGAN(cfg)
            torch.manual_seed(0)
            with skipped_attngan_init():
                netG, netDs = family.build_networks()
            load_init_state(netG, netDs, init_state)
            bundle: DAMSMBundle = load_damsm(damsm)
            self.text_encoder = bundle.text.encoder.to(device).eval().requires_grad_(False)
            image_encoder = bundle.require_image_encoder("the official iteration")
            self.image_encoder = image_encoder.to(device).eval().requires_grad_(False)
            self.netG = netG.to(device).train()
            self.netDs = [d.to(device).train() for d in netDs]
            torch.manual_seed(1)
            self.opt_g, self.opt_ds = make_optimizers(
                self.netG, self.netDs, lr_g=LR, lr_d=LR, device=device, fused=False
            )
            split = synthetic_split(family, batch)
            reals, captions, lengths, class_ids = official_batch(split, family, batch)
            data = ([r.to(device) for r in reals], captions.to(device), lengths, class_ids)
            noise = torch.empty(batch, cfg.z_dim, device=device)
            averages = [p.detach().clone() for p in self.netG.parameters()]
            self.iteration = lambda: official_iteration_attngan(
                self.netG, self.netDs, self.opt_g, self.opt_ds, self.text_encoder,
                self.image_encoder, data, noise, averages,
            )  # fmt: skip
            return
        parts = build_parts(branches, batch, device, execution, damsm, init_state)
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = means.cudnn_benchmark
        self.parts = parts
        self.netG, self.netDs = parts.netG, parts.netDs
        self.opt_g, self.opt_ds = parts.opt_g, parts.opt_ds
        damsm_bundle = parts.family.damsm
        self.text_encoder = damsm_bundle.text.encoder
        self.image_encoder = damsm_bundle.image_encoder
        apply_experiment(self.image_encoder, experiment, self.netG)
        split = synthetic_split(parts.family, batch)
        sampler = build_sampler(
            parts.family,
            split,
            batch_size=batch,
            device=device,
            seed=0,
            channels_last=parts.execution.channels_last,
            name="the synthetic data",
        )
        step, average = parts.step, parts.average
        torch.manual_seed(1)

        def iteration() -> Tensor:
            losses = step(sampler.next_batch())
            average.update()
            return losses

        self.iteration = iteration


class PhaseClock:
    """Wall and process-CPU time of the parts of an iteration, from marks set by module hooks
    and optimizer-step wrappers (the same for both iterations). A part is named by the mark
    that ends it:

    * ``data``: the start of the iteration to the text encoder (ours: the sampler's batch;
      official: the sort by caption length);
    * ``text encoder``; ``mask, noise``; ``G forward``;
    * ``D<i> step``: D_i's loss forward, backward and Adam step (D0 includes the real views'
      resizing in ours);
    * ``G step: Ds on the fakes``: zero_grad and every D's forward on its fake;
    * ``G step: image encoder forward`` (resize to 299, frozen Inception trunk, projections);
    * ``G step: DAMSM losses, KL, loss backward``: the matching losses, the KL and the backward
      down to the image encoder's outputs;
    * ``G step: image encoder backward``: through the frozen trunk to the 256 px fakes;
    * ``G step: backward through Ds and G``: the rest of the backward (the Ds' inputs, in the
      official iteration their weights too, then G);
    * ``G Adam step``; ``moving average``.
    """

    def __init__(self, bench: BenchAttnGAN) -> None:
        self.enabled = False
        self.marks: list[tuple[str, float, float]] = []
        self.iterations: list[dict[str, tuple[float, float]]] = []
        self._fired = False
        mark = self.mark
        bench.text_encoder.register_forward_pre_hook(lambda m, a: mark("data"))
        bench.text_encoder.register_forward_hook(lambda m, a, o: mark("text encoder"))
        bench.netG.register_forward_pre_hook(lambda m, a: mark("mask, noise"))
        bench.netG.register_forward_hook(lambda m, a, o: mark("G forward"))
        for i, opt in enumerate(bench.opt_ds):
            self._wrap(opt, None, f"D{i} step")
        self._wrap(bench.opt_g, "G step: backward through Ds and G", "G Adam step")
        bench.image_encoder.register_forward_pre_hook(self._encoder_pre)
        bench.image_encoder.register_forward_hook(self._encoder_post)

    def mark(self, name: str) -> None:
        if self.enabled:
            self.marks.append((name, time.perf_counter(), time.process_time()))

    def _wrap(self, opt, before: str | None, after: str) -> None:
        step = opt.step

        def wrapped(*args, **kwargs):
            if before:
                self.mark(before)
            result = step(*args, **kwargs)
            self.mark(after)
            return result

        opt.step = wrapped

    def _encoder_pre(self, module, args):
        self.mark("G step: Ds on the fakes")
        self._fired = False
        (images,) = args
        if not images.requires_grad:
            return None
        images = images.view_as(images)  # its gradient ends the encoder's backward
        images.register_hook(lambda g: self.mark("G step: image encoder backward"))
        return (images,)

    def _encoder_post(self, module, args, outputs):
        self.mark("G step: image encoder forward")

        def first(grad):
            if not self._fired:
                self._fired = True
                self.mark("G step: DAMSM losses, KL, loss backward")

        for output in outputs:
            if output.requires_grad:
                output.register_hook(first)

    def run(self, iteration: Callable[[], object]) -> None:
        """One instrumented iteration."""
        self.enabled, self.marks = True, []
        self.mark("start")
        iteration()
        self.mark("moving average")
        self.enabled = False
        parts: dict[str, tuple[float, float]] = {}
        for (_, t0, c0), (name, t1, c1) in zip(self.marks, self.marks[1:], strict=False):
            wall, cpu = parts.get(name, (0.0, 0.0))
            parts[name] = (wall + t1 - t0, cpu + c1 - c0)
        self.iterations.append(parts)

    def summary(self) -> dict[str, dict[str, float]]:
        """Per part: the median wall and process-CPU seconds over the instrumented iterations,
        in the order of the first iteration."""
        names = list(self.iterations[0])
        result = {}
        for name in names:
            rows = [it[name] for it in self.iterations if name in it]
            result[name] = {
                "wall_s": round(statistics.median(r[0] for r in rows), 4),
                "cpu_s": round(statistics.median(r[1] for r in rows), 4),
            }
        return result


def profile_top(iteration: Callable[[], object], count: int = 20) -> list[dict]:
    """torch.profiler's top operators of one iteration by self CPU time."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        iteration()
    events = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    return [
        {
            "op": e.key,
            "self_cpu_s": round(e.self_cpu_time_total / 1e6, 4),
            "share": round(e.self_cpu_time_total / total, 4),
            "calls": e.count,
        }
        for e in events[:count]
    ]


def count_flops_attngan(
    branches: int, batch: int, device: torch.device, damsm: str, init_state: str
) -> float:
    """Model FLOPs of one iteration (as ``train_throughput.count_flops``: unfused layers,
    D frozen in the G step; the frozen trunk's forward and input-gradient backward included),
    counted at batch 2 on the CPU and scaled."""
    from torch.utils.flop_counter import FlopCounterMode

    counted = batch if device.type == "cuda" else 2
    plain = Execution(fused_upsample=False, gemm_convs=False, freeze_d_for_g_step=True)
    parts = build_parts(branches, counted, device, plain, damsm, init_state)
    split = synthetic_split(parts.family, counted)
    sampler = build_sampler(
        parts.family, split, batch_size=counted, device=device, seed=0, channels_last=False
    )
    with FlopCounterMode(display=False) as counter:
        parts.step(sampler.next_batch())
    return float(counter.get_total_flops()) * batch / counted


# --- the trunk alone -------------------------------------------------------------------------
def trunk_bench(argv=None) -> None:
    """``python benchmarks/attngan_bench.py trunk``: the DAMSM image encoder's forward and
    input-gradient backward on (batch, 3, size, size) images, plain and under each experiment,
    alternated round-robin in one process; one JSON line per variant (median process-CPU and
    wall seconds), with its largest differences from the plain encoder in float64."""
    parser = argparse.ArgumentParser(prog="attngan_bench.py trunk")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None)
    trunk_only = [name for name in EXPERIMENTS if "g_channels_last" not in name]
    parser.add_argument("--variants", default=",".join(("plain", *trunk_only)))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    variants = args.variants.split(",")
    torch.manual_seed(0)
    images = torch.rand(args.batch_size, 3, args.size, args.size) * 2 - 1
    with tempfile.TemporaryDirectory(prefix="attngan_trunk_") as tmp:
        path = os.path.join(tmp, "damsm.pt")
        make_damsm(path)
        encoders = {}
        for name in variants:
            encoder = load_damsm(path).require_image_encoder("the trunk benchmark")
            encoder.eval().requires_grad_(False)
            apply_experiment(encoder, None if name == "plain" else name)
            encoders[name] = encoder
        exact = load_damsm(path).require_image_encoder("the trunk benchmark").double().eval()
    exact.requires_grad_(False)
    # The loss gradient stands in for a fixed random linear function of the outputs.
    with torch.no_grad():
        shapes = [out.shape for out in exact(images[:1].double())]
    weights = [torch.randn(args.batch_size, *shape[1:]) for shape in shapes]

    def forward_backward(encoder, x, dtype):
        outputs = encoder(x)
        loss = sum((out * w.to(dtype)).sum() for out, w in zip(outputs, weights, strict=True))
        return outputs, loss

    # The float64 plain encoder: the reference of every variant's float32 (or bf16) rounding.
    x64 = images.double().requires_grad_(True)
    outputs, loss = forward_backward(exact, x64, torch.float64)
    loss.backward()
    reference = [out.detach() for out in outputs] + [x64.grad]
    del exact
    timings: dict[str, list[tuple[float, float, float, float]]] = {n: [] for n in variants}
    differences = {}
    for k in range(args.warmup + args.repeats):
        for name, encoder in encoders.items():
            x = images.clone().requires_grad_(True)
            c0, t0 = time.process_time(), time.perf_counter()
            outputs, loss = forward_backward(encoder, x, torch.float32)
            c1, t1 = time.process_time(), time.perf_counter()
            loss.backward()
            c2, t2 = time.process_time(), time.perf_counter()
            if k >= args.warmup:
                timings[name].append((c1 - c0, c2 - c1, t1 - t0, t2 - t1))
            if k == 0:
                got = [out.detach().double() for out in outputs] + [x.grad.double()]
                differences[name] = [
                    float(f"{((a - b).abs().max() / b.abs().max()).item():.3g}")
                    for a, b in zip(got, reference, strict=True)
                ]
    for name, rows in timings.items():
        columns = zip(*rows, strict=True)
        fwd_cpu, bwd_cpu, fwd_wall, bwd_wall = (statistics.median(col) for col in columns)
        print(
            json.dumps(
                {
                    "benchmark": "attngan_trunk",
                    "variant": name,
                    "batch_size": args.batch_size,
                    "input_size": args.size,
                    "forward_cpu_s": round(fwd_cpu, 4),
                    "backward_cpu_s": round(bwd_cpu, 4),
                    "total_cpu_s": round(fwd_cpu + bwd_cpu, 4),
                    "forward_wall_s": round(fwd_wall, 4),
                    "backward_wall_s": round(bwd_wall, 4),
                    # max |x - x64| / max |x64| of (regions, code, input gradient), x64: the
                    # plain encoder in float64
                    "relative_difference": differences.get(name),
                    "threads": torch.get_num_threads(),
                    "torch": torch.__version__,
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    if sys.argv[1:2] == ["trunk"]:
        trunk_bench(sys.argv[2:])
    else:
        sys.exit("usage: python benchmarks/attngan_bench.py trunk [--batch-size 4] [--repeats 5]")
