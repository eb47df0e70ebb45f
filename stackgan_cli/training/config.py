"""Training settings: the one place that holds their defaults (the official birds recipe).

``TrainConfig`` carries everything about *how* to train; the network widths are a
``ModelConfig`` (stackgan_cli.models.config), resolved here from a preset, the command-line
overrides and, for Stage II, the Stage-I generator being refined. This module imports neither
torch nor the models so that ``stackgan train --help`` stays fast.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SAMPLE_CAPTIONS = 8  # rows of a sample grid (fixed test captions)
SAMPLE_NOISES = 8  # columns of a sample grid (fixed noise vectors)


@dataclass
class TrainConfig:
    """How to train; the field defaults are the official StackGAN-v1 PyTorch birds
    configuration (stackgan-pytorch-spec.md 1.4). :meth:`for_arch` starts from an
    architecture's own recipe instead (its family's ``train_defaults``)."""

    arch: str = "v1"  # choices.Arch: v1: StackGAN-v1 (one stage per run) | v2: StackGAN-v2 tree
    # v1: the stage to train (None only while unchecked: training/run.py check_options);
    # v2: None (every branch trains at once)
    stage: int | None = 1
    branches: int | None = None  # v2: 1, 2 or 3 branches (64, 128, 256 px); v1: None
    uncond_coeff: float = 1.0  # v2: weight of the unconditional D/G terms (UNCOND_LOSS)
    color_coeff: float = 0.0  # v2: colour-consistency weight (COLOR_LOSS; 0 = off for birds)
    # AttnGAN: the frozen DAMSM (a DAMSM file, or an official DAMSMencoders folder with the
    # captions.pickle of its vocabulary) and the weight of its terms in G's loss (LAMBDA).
    damsm: str | None = None
    vocabulary: str | None = None
    damsm_weight: float = 5.0
    # The fingerprint (DAMSMBundle.fingerprint) of the --damsm a run started with, recorded at
    # its start so that a resume with a replaced file is refused.
    damsm_fingerprint: str | None = None
    # --arch damsm (DAMSM pre-training, attngan-spec.md 8.1): the encoders' learning rate,
    # multiplied by 0.98 after every epoch while above a tenth of it (TRAIN.ENCODER_LR: the
    # config default 2e-4, the DAMSM recipe 2e-3), and the torchvision Inception-v3 ImageNet
    # weights of the frozen image trunk (None: downloaded once into the cache's weights/).
    lr_encoder: float = 2e-4
    inception_weights: str | None = None
    # DAMSM: fixed views per image whose frozen-trunk outputs are computed once
    # (training/trunk_cache.py); 0 runs the trunk at every step. The damsm recipe sets 4.
    trunk_views: int = 0
    # Moving average of G's parameters after every G step (0 = none, the v1 recipe; v2: 0.999).
    # Samples and generator files use the average; training continues from the trained weights.
    ema: float = 0.0
    # A prepared dataset name, or the path of a prepared folder; None (a new run only) = cub
    # once prepared (training/run.py default_dataset). Runs always store the resolved one.
    dataset: str | None = None
    run_dir: str = ""  # filled in when the run starts (runs/<stageN-dataset-time>)
    stage1_ckpt: str | None = None  # Stage II: the Stage-I generator file (or official netG)
    out: str | None = None  # copy the final generator file here
    # The run folder (absolute) that owns --out: a copy of that folder resumed elsewhere does
    # not write it (training/run.py). None with no --out, and in runs older than this field.
    out_owner: str | None = None
    epochs: int = 600
    batch_size: int = 64  # per process; under torchrun the global batch is this x processes
    lr_g: float = 2e-4
    lr_d: float = 2e-4
    # Both learning rates halve at the start of every epoch e > 0 with e % lr_decay_every == 0.
    # 600 is the official PyTorch default: no decay within 600 epochs (TF used 50 / 100).
    lr_decay_every: int = 600
    kl_coeff: float = 2.0
    loss: str = "bce"  # choices.Loss (models/losses.py LOSSES); bce is the official one
    gp_weight: float = 10.0  # --loss wgan-gp: weight of the gradient penalty
    # Discriminator updates per generator update; every one on the step's real batch and the
    # fakes of its single G forward (no extra batches drawn: epochs and resume are unchanged).
    n_critic: int = 1
    optimizer: str = "adam"  # choices.Optimizer: adam (official, beta1/beta2) | rmsprop
    beta1: float = 0.5
    beta2: float = 0.999
    # choices.Init. official: each family's own (v1 normal(0, 0.02), v2 orthogonal); else one
    # scheme for every conv/linear weight (training/regimes.py)
    init: str = "official"
    tensorboard: bool = False  # TensorBoard event files in RUN_DIR/tensorboard
    # Network options applied after the networks are built (models/network_options.py):
    g_norm: str = "batch"  # choices.GNorm: batch (official) | none: G's BatchNorm layers dropped
    d_norm: str = "batch"  # choices.DNorm: batch (official) | none | spectral (no BatchNorm)
    d_dropout: float = 0.0  # Dropout(P) after every LeakyReLU of the discriminators (0 = none)
    # DiffAugment policy (training/diffaugment.py): comma-separated color, translation,
    # cutout applied to every image the discriminators see; "" = none (official)
    diffaugment: str = ""
    r1: float = 0.0  # R1 penalty weight gamma on real pairs: gamma/2 E||grad_x D(x, c)||^2
    snapshot_every: int = 50  # epochs between checkpoints/epoch_NNNN.pt (official interval)
    sample_every: int = 10  # epochs between samples/epoch_NNNN.png (and after the last epoch)
    log_every: int = 20  # steps between loss synchronisations (metrics.jsonl, display)
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    amp: bool = True  # bf16 autocast on CUDA; ignored on the CPU (always float32 there)
    compile: bool = False  # torch.compile G, D and the D heads
    # channels_last activations and weights; None = on for CUDA (tensor cores), off on the CPU
    # where NCHW measured as fast or faster with oneDNN (benchmarks/RESULTS.md)
    channels_last: bool | None = None
    # Execution-only rewrites with the same function, parameters and state dicts
    # (training/fast_layers.py): G's nearest-upsampling + 3x3 conv pairs computed at the input
    # resolution (16 instead of 36 multiply-adds per output); on the CPU, the Stage-II D's
    # widest convolutions as matrix products.
    fast_layers: bool = True

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON- and ``weights_only``-safe)."""
        return dataclasses.asdict(self)

    @classmethod
    def for_arch(cls, arch: str, **options: Any) -> TrainConfig:
        """The recipe of ``arch`` (the field defaults overlaid with its family's ``train_defaults``)
        with the ``options`` that are not None on top."""
        from stackgan_cli.families.registry import arch_recipe

        given = {key: value for key, value in options.items() if value is not None}
        return cls(arch=arch, **{**arch_recipe(arch).train_defaults, **given})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys (from a newer version) are ignored and
        missing ones take today's defaults."""
        names = {field.name for field in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


def lr_at(base_lr: float, epoch: int, decay_every: int) -> float:
    """Learning rate during ``epoch`` (0-based): halved once per ``decay_every`` epochs, the
    same values as the official in-place halving at epochs e > 0 with e % decay_every == 0."""
    return base_lr * 0.5 ** (epoch // decay_every)


def default_run_name(prefix: str, dataset: str, now: _dt.datetime | None = None) -> str:
    """``<prefix>-<dataset>-<YYYYmmdd-HHMMSS>``; the prefix is the family's (``stage1``,
    ``stage2``, ``v2``: FamilySpec.run_prefix)."""
    now = now or _dt.datetime.now()
    return f"{prefix}-{Path(dataset).name}-{now:%Y%m%d-%H%M%S}"


# The widths the nested Stage-I generator shares with the Stage-II network it feeds.
SHARED_WITH_STAGE1 = ("gf_dim", "z_dim", "condition_dim", "text_dim")
_OPTION_NAMES = {
    "gf_dim": "--gf-dim",
    "df_dim": "--df-dim",
    "z_dim": "--z-dim",
    "condition_dim": "--condition-dim",
    "r_num": "--r-num",
}


def resolve_model_dims(
    *,
    preset: str | None,
    overrides: Mapping[str, int | None],
    text_dim: int,
    stage1: Mapping[str, int] | None = None,
    stage1_name: str = "the Stage-I generator",
    default_preset: str = "birds",
) -> dict[str, int]:
    """The ModelConfig fields for a new run, as a dict.

    Precedence: explicit width options, then the explicit ``--preset``, then (Stage II) the
    Stage-I generator's own widths, then ``default_preset`` (birds; birds-v2 for StackGAN-v2).
    ``text_dim`` comes from the dataset's embeddings. For Stage II, the widths the nested
    Stage-I generator uses (gf_dim, z_dim, condition_dim, text_dim) must equal the Stage-I
    file's; a mismatch raises StackGANError naming the option and both values.
    """
    from stackgan_cli.errors import StackGANError
    from stackgan_cli.models.config import PRESETS

    preset_dims = PRESETS[preset or default_preset].to_dict()
    dims = dict(stage1) if stage1 is not None and preset is None else dict(preset_dims)
    for name, value in overrides.items():
        if value is not None:
            dims[name] = int(value)
    dims["text_dim"] = int(text_dim)
    if stage1 is not None:
        for name in SHARED_WITH_STAGE1:
            if dims[name] == stage1[name]:
                continue
            if name == "text_dim":
                raise StackGANError(
                    f"{stage1_name} takes {stage1[name]}-d text embeddings but the dataset "
                    f"has {text_dim}-d ones"
                )
            source = (
                f"{_OPTION_NAMES[name]} {dims[name]}"
                if overrides.get(name) is not None
                else f"--preset {preset} ({name} {dims[name]})"
            )
            raise StackGANError(
                f"{source} does not match {stage1_name}, which has {name} {stage1[name]}"
            )
    return dims
