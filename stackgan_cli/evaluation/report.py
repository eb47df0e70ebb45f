"""An evaluation's full JSON record, and the notes on the paper's Inception Score and on
R-precision (the table the terminal shows is in ``stackgan_cli.reports``)."""

from __future__ import annotations

import json
from glob import escape as glob_escape
from pathlib import Path

from stackgan_cli import paths
from stackgan_cli.errors import StackGANError
from stackgan_cli.fsutil import atomic_write_text

PAPER_NOTE = (
    "The StackGAN paper's CUB Inception Score (3.70 ± 0.04) was computed with an Inception-v3 "
    "fine-tuned on CUB birds, which is not available for PyTorch. This Inception Score uses the "
    "standard ImageNet Inception-v3 (torch-fidelity's port of the 2015-12-05 TF graph), so it is "
    "on a different scale and must not be compared with 3.70; compare it only with scores "
    "computed by the same protocol (e.g. `stackgan evaluate --real` for real test images)."
)

R_PRECISION_NOTE = (
    "R-precision depends on the DAMSM that scores it (--damsm): compare it only with numbers "
    "computed with the same DAMSM files. The AttnGAN paper's CUB figure (about 67.8 %) and "
    "DM-GAN's used the released bird encoders (text/image_encoder200.pth), count a tie for "
    "first as a hit (here a miss) and average 3,000 hits over 2,999 per split (here the "
    "plain mean); `stackgan evaluate --real --r-precision` gives the real images' ceiling."
)


def write_report(path: Path, result: dict) -> None:
    """Write the JSON record atomically (indented, keys in insertion order)."""
    atomic_write_text(Path(path), json.dumps(result, indent=2, allow_nan=True) + "\n")


def checkpoint_report_path(ckpt: Path, size: int | None = None) -> Path:
    """The default report of ``ckpt``: ``<ckpt>.eval.json`` for its largest images (``size``
    None), ``<ckpt>.<size>px.eval.json`` for a smaller ``size``."""
    suffix = "" if size is None else f".{size}px"
    return ckpt.with_name(f"{ckpt.stem}{suffix}.eval.json")


def checkpoint_reports(ckpt: Path) -> list[Path]:
    """The default report paths of ``ckpt`` that may exist: the largest size's and those of
    every smaller ``--size`` found beside it."""
    return [
        checkpoint_report_path(ckpt),
        *ckpt.parent.glob(f"{glob_escape(ckpt.stem)}.*px.eval.json"),
    ]


def default_out_path(result: dict) -> Path:
    """Beside the checkpoint: ``<ckpt>.eval.json`` for its largest images, and
    ``<ckpt>.<size>px.eval.json`` for a smaller ``--size`` (so scoring one StackGAN-v2 file at
    two sizes keeps both reports); real-image runs go to the cache."""
    resolution = result["protocol"]["resolution"]
    if result["mode"] == "real":
        name = result["dataset"]["name"]
        return paths.cache_root() / "evaluations" / f"real-{name}-{resolution}px.eval.json"
    ckpt = Path(result["checkpoint"]["path"])
    sizes = result["checkpoint"].get("output_sizes") or [resolution]
    return checkpoint_report_path(ckpt, None if resolution == max(sizes) else resolution)


def save_report(result: dict, out: Path | None) -> Path:
    """Write the JSON record to ``out`` (default: :func:`default_out_path`); returns the path."""
    path = Path(out) if out is not None else default_out_path(result)
    try:
        write_report(path, result)
    except OSError as exc:
        raise StackGANError(f"cannot write the report {path} ({exc}); pass --out FILE") from None
    return path
