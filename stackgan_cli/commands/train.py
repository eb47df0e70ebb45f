"""``stackgan train``: train Stage I or Stage II with the official recipe."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from stackgan_cli.commands.choices import Device
from stackgan_cli.training.config import TrainConfig

_D = TrainConfig()  # the defaults live in TrainConfig alone


class Preset(str, Enum):
    """Official network widths."""

    birds = "birds"
    coco = "coco"


def _width(help_text: str):
    return typer.Option(min=1, help=f"{help_text} Overrides the preset.", show_default=False)


def train(
    stage: Annotated[
        int,
        typer.Option(
            min=1, max=2, help="1: 64x64 from text; 2: 256x256 refining a Stage-I generator."
        ),
    ],
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
            help="Run directory. Default: runs/stage<N>-<dataset>-<YYYYmmdd-HHMMSS> in the cache.",
            file_okay=False,
            show_default=False,
        ),
    ] = None,
    epochs: Annotated[int, typer.Option(min=1, help="Epochs to train.")] = _D.epochs,
    batch_size: Annotated[
        int, typer.Option(min=2, help="Images per step (per process under torchrun).")
    ] = _D.batch_size,
    preset: Annotated[
        Preset | None,
        typer.Option(
            help="Network widths: birds (default) or coco. Stage 2 defaults to the Stage-I "
            "file's widths.",
            show_default=False,
        ),
    ] = None,
    gf_dim: Annotated[int | None, _width("Generator base width (birds 128).")] = None,
    df_dim: Annotated[int | None, _width("Discriminator base width (birds 64).")] = None,
    z_dim: Annotated[int | None, _width("Noise dimension (100).")] = None,
    condition_dim: Annotated[int | None, _width("Conditioning-augmentation size (128).")] = None,
    r_num: Annotated[int | None, _width("Stage-II residual blocks (birds 4).")] = None,
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
        float, typer.Option(min=0.0, help="Weight of the KL term in the generator loss.")
    ] = _D.kl_coeff,
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
    seed: Annotated[int, typer.Option(min=0, help="Random seed.")] = _D.seed,
    device: Annotated[Device, typer.Option(help="auto picks CUDA when present.")] = Device.auto,
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
    """Train a StackGAN stage; checkpoints, samples and metrics go to the run directory.

    Ctrl-C saves the run after the current step; `stackgan resume RUN_DIR` continues it.
    Under `torchrun --nproc-per-node N -m stackgan_cli train ...` it trains data-parallel.
    Example (the offline demo):

        stackgan prepare shapes
        stackgan train --stage 1 --dataset shapes --epochs 30 --batch-size 32 --gf-dim 16 \
--df-dim 16 --out s1.pt
        stackgan train --stage 2 --dataset shapes --epochs 3 --batch-size 16 --stage1-ckpt \
s1.pt --out s2.pt
    """
    if stage == 1 and stage1_ckpt is not None:
        raise typer.BadParameter(
            "only Stage 2 uses a Stage-I generator", param_hint="--stage1-ckpt"
        )
    if stage == 2 and stage1_ckpt is None:
        raise typer.BadParameter(
            "Stage 2 refines a Stage-I generator: pass the --out file (or RUN_DIR/generator.pt) "
            "of `stackgan train --stage 1`",
            param_hint="--stage1-ckpt",
        )
    if lr_g <= 0 or lr_d <= 0:
        raise typer.BadParameter("learning rates must be positive", param_hint="--lr-g/--lr-d")

    from stackgan_cli import paths
    from stackgan_cli.errors import StackGANError
    from stackgan_cli.training.run import start_training

    if dataset is None:
        if not (paths.prepared_dir("cub") / "metadata.json").exists():
            raise StackGANError(
                "no --dataset given and the default dataset cub is not prepared: run "
                "`stackgan prepare cub`, or `stackgan prepare shapes` and pass --dataset shapes "
                "for the offline demo"
            )
        dataset = "cub"
    cfg = TrainConfig(
        stage=stage,
        dataset=dataset,
        run_dir=str(run_dir) if run_dir else "",
        stage1_ckpt=str(stage1_ckpt) if stage1_ckpt else None,
        out=str(out) if out else None,
        epochs=epochs,
        batch_size=batch_size,
        lr_g=lr_g,
        lr_d=lr_d,
        lr_decay_every=lr_decay_every,
        kl_coeff=kl_coeff,
        snapshot_every=snapshot_every,
        sample_every=sample_every,
        log_every=log_every,
        seed=seed,
        device=device.value,
        amp=amp,
        compile=compile,
        channels_last=channels_last,
        fast_layers=fast_layers,
    )
    overrides = {
        "gf_dim": gf_dim,
        "df_dim": df_dim,
        "z_dim": z_dim,
        "condition_dim": condition_dim,
        "r_num": r_num,
    }
    run_and_report(
        lambda: start_training(cfg, preset=preset.value if preset else None, overrides=overrides)
    )


def run_and_report(work) -> None:
    """Run ``work()`` (start or resume), then print where the results are; a Ctrl-C/SIGTERM
    stop prints how to continue and exits with 130."""
    import os

    from stackgan_cli.console import err, out
    from stackgan_cli.training.loop import TrainingInterrupted

    is_main = int(os.environ.get("RANK", "0")) == 0  # under torchrun only rank 0 reports
    try:
        result = work()
    except TrainingInterrupted as stop:
        if not is_main:
            raise typer.Exit(130) from None
        err.print(
            f"[yellow]stopped[/] {stop.where(stop.epoch, stop.step)}; saved "
            f"{stop.run_dir / 'checkpoints' / 'last.pt'}\n"
            f"continue with: stackgan resume {stop.run_dir}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(130) from None
    if not is_main:
        return
    if result.already_complete:
        err.print(
            f"{result.run_dir} has already trained {result.epochs} epochs; pass --epochs N "
            "to train further",
            highlight=False,
            soft_wrap=True,
        )
    out.print(f"run directory: {result.run_dir}", highlight=False, soft_wrap=True)
    out.print(f"generator file: {result.generator_path}", highlight=False, soft_wrap=True)
    if result.out is not None:
        out.print(f"copied to: {result.out}", highlight=False, soft_wrap=True)
