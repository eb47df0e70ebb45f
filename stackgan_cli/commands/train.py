"""``stackgan train``: train a StackGAN-v1 stage, the StackGAN-v2 tree or AttnGAN with the
official recipe."""

from __future__ import annotations

import dataclasses
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer

from stackgan_cli.choices import Arch, DNorm, GNorm, Init, Loss, Optimizer, Preset, values
from stackgan_cli.commands.options import DeviceOption, SeedOption, VocabularyOption
from stackgan_cli.devices import Device
from stackgan_cli.training.config import TrainConfig

_D = TrainConfig()  # the defaults live in TrainConfig alone
# ModelConfig overrides (text_dim and word_dim: --arch damsm only)
_WIDTHS = ("gf_dim", "df_dim", "z_dim", "condition_dim", "r_num", "text_dim", "word_dim")


def _width(help_text: str):
    return typer.Option(min=1, help=f"{help_text} Overrides the preset.", show_default=False)


def train(
    stage: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=2,
            help="--arch v1 (required): 1: 64x64 from text; 2: 256x256 refining a Stage-I "
            "generator.",
            show_default=False,
        ),
    ] = None,
    arch: Annotated[
        Arch,
        typer.Option(
            help="v1: StackGAN-v1, one --stage per run; v2: StackGAN-v2 (StackGAN++), one tree "
            "generator trained jointly at 64/128/256 px; attngan: AttnGAN (needs --damsm); "
            "damsm: AttnGAN's DAMSM text and image encoders (--out writes the DAMSM file that "
            "--damsm reads).",
        ),
    ] = Arch(_D.arch),
    branches: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=3,
            help="--arch v2/attngan: branches of the tree (1: 64 px, 2: up to 128, 3: up to 256). "
            "Default 3.",
            show_default=False,
        ),
    ] = None,
    dataset: Annotated[
        str | None,
        typer.Option(
            help="Prepared dataset name or path. Default: cub if prepared (`stackgan prepare "
            "shapes` gives an offline demo dataset).",
            show_default=False,
        ),
    ] = None,
    stage1_ckpt: Annotated[
        Path | None,
        typer.Option(
            help="Stage 2: the Stage-I generator file to refine (frozen), or an official "
            "netG .pth.",
            dir_okay=False,
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Copy the final generator file here.", dir_okay=False),
    ] = None,
    run_dir: Annotated[
        Path | None,
        typer.Option(
            help="Run directory: a new or empty folder (or one whose run stopped before its "
            "first checkpoint). Default: runs/stage<N>-<dataset>-<YYYYmmdd-HHMMSS> in the cache.",
            file_okay=False,
            show_default=False,
        ),
    ] = None,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs to train.")] = _D.epochs,
    batch_size: Annotated[
        int | None,
        typer.Option(
            min=2,
            help="Images per step (per process under torchrun). Default: 64 (v1), 24 (v2), "
            "20 (attngan), 48 (damsm).",
            show_default=False,
        ),
    ] = None,
    preset: Annotated[
        Preset | None,
        typer.Option(
            help="Network widths: birds (v1 default), coco or birds-v2 (v2 default). Stage 2 "
            "defaults to the Stage-I file's widths.",
            show_default=False,
        ),
    ] = None,
    gf_dim: Annotated[int | None, _width("Generator base width (birds 128; at least 4).")] = None,
    df_dim: Annotated[int | None, _width("Discriminator base width (birds 64).")] = None,
    z_dim: Annotated[int | None, _width("Noise dimension (100).")] = None,
    condition_dim: Annotated[int | None, _width("Conditioning-augmentation size (128).")] = None,
    r_num: Annotated[int | None, _width("Stage-II residual blocks (birds 4).")] = None,
    text_dim: Annotated[
        int | None, _width("--arch damsm: the DAMSM feature size (birds 256; even).")
    ] = None,
    word_dim: Annotated[
        int | None, _width("--arch damsm: the DAMSM word-embedding size (birds 300).")
    ] = None,
    lr_encoder: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="--arch damsm: the encoders' learning rate, x0.98 after every epoch while "
            "above a tenth of it. Default 0.002 (the official DAMSM recipe).",
            show_default=False,
        ),
    ] = None,
    inception_weights: Annotated[
        Path | None,
        typer.Option(
            "--inception-weights",
            metavar="FILE",
            help="--arch damsm: torchvision's Inception-v3 ImageNet weights "
            "(inception_v3_google-0cc3c7bd.pth) for the frozen image trunk. Default: "
            "downloaded once into the cache.",
            dir_okay=False,
            show_default=False,
        ),
    ] = None,
    trunk_views: Annotated[
        int | None,
        typer.Option(
            min=0,
            max=64,
            help="--arch damsm: fixed crops per image whose frozen Inception features are "
            "computed once and reused every epoch (0: the official fresh crop and trunk pass "
            "at every step). Default 4.",
            show_default=False,
        ),
    ] = None,
    lr_g: Annotated[float, typer.Option(min=0.0, help="Generator learning rate.")] = _D.lr_g,
    lr_d: Annotated[float, typer.Option(min=0.0, help="Discriminator learning rate.")] = _D.lr_d,
    lr_decay_every: Annotated[
        int,
        typer.Option(
            min=1,
            help="Halve both learning rates every N epochs. The default is the official "
            "PyTorch value: no decay within 600 epochs (the TensorFlow code used 50 / 100).",
        ),
    ] = _D.lr_decay_every,
    kl_coeff: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            help="Weight of the KL term in the generator loss. Default: 2 (v1, v2), 1 (attngan).",
            show_default=False,
        ),
    ] = None,
    loss: Annotated[
        str,
        typer.Option(
            help="Adversarial loss, matching-aware (real pairs against wrong and fake ones): "
            f"{', '.join(values(Loss))} (bce is the official one).",
        ),
    ] = _D.loss,
    gp_weight: Annotated[
        float | None,
        typer.Option(
            help=f"--loss wgan-gp: weight of the gradient penalty. Default {_D.gp_weight:g}.",
            show_default=False,
        ),
    ] = None,
    n_critic: Annotated[
        int,
        typer.Option(
            help="Discriminator updates per generator update (each on the step's batch and fakes).",
        ),
    ] = _D.n_critic,
    optimizer: Annotated[
        str, typer.Option(help=f"{' or '.join(values(Optimizer))}: adam is the official one.")
    ] = _D.optimizer,
    beta1: Annotated[
        float | None,
        typer.Option(help=f"Adam's beta1. Default {_D.beta1:g}.", show_default=False),
    ] = None,
    beta2: Annotated[
        float | None,
        typer.Option(help=f"Adam's beta2. Default {_D.beta2:g}.", show_default=False),
    ] = None,
    init: Annotated[
        str,
        typer.Option(
            help=f"Weight initialisation: {', '.join(values(Init))}; official is each "
            "architecture's own (v1 normal(0, 0.02), v2 orthogonal).",
        ),
    ] = _D.init,
    g_norm: Annotated[
        str,
        typer.Option(
            help=f"Generator normalisation: {' or '.join(values(GNorm))} (batch: official)."
        ),
    ] = _D.g_norm,
    d_norm: Annotated[
        str,
        typer.Option(
            help=f"Discriminator normalisation: {', '.join(values(DNorm))} (batch: official; "
            "spectral: spectral norm on every conv/linear weight, no BatchNorm).",
        ),
    ] = _D.d_norm,
    d_dropout: Annotated[
        float,
        typer.Option(help="Dropout probability after every LeakyReLU of the discriminators."),
    ] = _D.d_dropout,
    diffaugment: Annotated[
        str,
        typer.Option(
            help="DiffAugment policy for every image the discriminators see: comma-separated "
            "color, translation, cutout (default: none).",
        ),
    ] = _D.diffaugment,
    r1: Annotated[
        float,
        typer.Option(help="R1 penalty weight gamma on real pairs (0 = none)."),
    ] = _D.r1,
    tensorboard: Annotated[
        bool,
        typer.Option(
            "--tensorboard/--no-tensorboard",
            help="TensorBoard event files in RUN_DIR/tensorboard (pip install "
            '"stackgan-cli\\[tensorboard]").',
        ),
    ] = _D.tensorboard,
    ema: Annotated[
        float | None,
        typer.Option(
            min=0.0,
            max=0.999999,
            help="Decay of the moving average of G's parameters that samples and generator "
            "files use (0 = none). Default: 0 (v1), 0.999 (v2, attngan).",
            show_default=False,
        ),
    ] = None,
    uncond_coeff: Annotated[
        float, typer.Option(min=0.0, help="--arch v2: weight of the unconditional terms.")
    ] = _D.uncond_coeff,
    color_coeff: Annotated[
        float,
        typer.Option(
            min=0.0, help="--arch v2: colour-consistency weight between branches (0 = off)."
        ),
    ] = _D.color_coeff,
    damsm: Annotated[
        Path | None,
        typer.Option(
            "--damsm",
            metavar="PATH",
            help="--arch attngan (required): the frozen DAMSM whose word and sentence features "
            "G reads and whose matching loss enters G's: a DAMSM file or an official "
            "DAMSMencoders/<dataset> folder (with --vocabulary). --arch v1/v2: a DAMSM whose "
            "sentence features are the text embeddings (needed for a dataset without them, "
            "such as one's own folder); the generator file carries its text encoder.",
            show_default=False,
        ),
    ] = None,
    vocabulary: VocabularyOption = None,
    damsm_weight: Annotated[
        float,
        typer.Option(
            min=0.0, help="--arch attngan: weight of the DAMSM terms in G's loss (LAMBDA)."
        ),
    ] = _D.damsm_weight,
    snapshot_every: Annotated[
        int, typer.Option(min=1, help="Keep checkpoints/epoch_NNNN.pt every N epochs.")
    ] = _D.snapshot_every,
    sample_every: Annotated[
        int,
        typer.Option(min=1, help="Write samples/epoch_NNNN.png every N epochs (and at the end)."),
    ] = _D.sample_every,
    log_every: Annotated[
        int, typer.Option(min=1, help="Read the losses back every N steps (metrics.jsonl).")
    ] = _D.log_every,
    seed: SeedOption = _D.seed,
    device: DeviceOption = Device.auto,
    amp: Annotated[
        bool, typer.Option("--amp/--no-amp", help="bf16 autocast on CUDA (the CPU uses float32).")
    ] = _D.amp,
    compile: Annotated[
        bool, typer.Option("--compile/--no-compile", help="torch.compile the networks.")
    ] = _D.compile,
    channels_last: Annotated[
        bool | None,
        typer.Option(
            "--channels-last/--no-channels-last",
            help="channels_last memory format (default: on for CUDA, off on the CPU).",
            show_default=False,
        ),
    ] = None,
    fast_layers: Annotated[
        bool,
        typer.Option(
            "--fast-layers/--no-fast-layers",
            help="Same maths, less work: G's upsampling + 3x3 convolutions at the input "
            "resolution; on the CPU the widest convolutions as matrix products.",
        ),
    ] = _D.fast_layers,
) -> None:
    """Train a StackGAN-v1 stage, the StackGAN-v2 tree or AttnGAN; checkpoints, samples and
    metrics go to the run directory.

    Ctrl-C saves the run after the current step; `stackgan resume RUN_DIR` continues it.
    Under `torchrun --nproc-per-node N -m stackgan_cli train ...` it trains data-parallel.
    Example (the offline demo):

        stackgan prepare shapes
        stackgan train --stage 1 --dataset shapes --epochs 30 --batch-size 32 --gf-dim 16 \
--df-dim 16 --out s1.pt
        stackgan train --stage 2 --dataset shapes --epochs 3 --batch-size 16 --stage1-ckpt \
s1.pt --out s2.pt
        stackgan train --arch v2 --dataset shapes --epochs 3 --gf-dim 16 --df-dim 16 --out v2.pt
        stackgan train --arch damsm --dataset shapes --epochs 10 --batch-size 16 --out damsm.pt
        stackgan train --arch attngan --dataset shapes --damsm damsm.pt --epochs 3
    """
    from stackgan_cli.commands.outcome import report_training
    from stackgan_cli.training.run import start_training

    # Every option but the widths and the preset is a TrainConfig field of the same name.
    options = {name: _plain(value) for name, value in locals().items()}
    fields = {field.name for field in dataclasses.fields(TrainConfig)}
    cfg = TrainConfig.for_arch(
        options.pop("arch"), **{name: options[name] for name in fields & options.keys()}
    )
    # for_arch leaves out options not given; --stage not given stays None for the check.
    cfg = dataclasses.replace(cfg, stage=stage, run_dir=options["run_dir"] or "")
    overrides = {name: options[name] for name in _WIDTHS}
    report_training(lambda: start_training(cfg, preset=options["preset"], overrides=overrides))


def _plain(value: Any) -> Any:
    """An option's value as TrainConfig stores it: enums by value, paths as strings."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    return value
