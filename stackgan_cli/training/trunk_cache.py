"""The DAMSM image encoder's frozen Inception-v3 trunk, run once per image view.

DAMSM pre-training only trains the encoder's two projections on top of the trunk, whose
weights never change and whose BatchNorms use ImageNet's running statistics (our trunk is
truly frozen, see training/damsm_loop.py). So the trunk's outputs for a given crop are fixed,
and recomputing them every epoch is most of the official epoch's work on a CPU. Here every
image gets K fixed views (a crop of 256 from the stored 304 px image; views alternate
unflipped and flipped), their trunk outputs are computed once into memory-mapped files in the
run directory, and each training sample draws one of its image's views instead of a fresh
crop. K = ``--trunk-views``; 0 keeps the official per-step crops and trunk passes.

Files (``RUN/trunk_features/``), per split: ``<split>.regions.npy`` float16 (N*K, 768, 17, 17)
(the Mixed_6e map; float16 halves the disk and reads, its rounding is below the projections'
training noise), ``<split>.pooled.npy`` float32 (N*K, 2048) and ``<split>.json``, the key the
files were made for (trunk weights, dataset, views, seed). Row ``i*K + v`` is view v of image i.
The key is written last, after the arrays are flushed and renamed into place, so an
interrupted build is redone, not trusted; a key that differs (other weights, another dataset)
rebuilds. The folder is removed when the run finishes.

Rows are computed in fixed chunks of :data:`BUILD_BATCH`, so a row's values depend on neither
the run's batch size nor the number of processes: a cache rebuilt after an interruption holds
the same bits, and resuming stays bit-exact. Under torchrun the ranks share the chunks.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.lib.format import open_memmap
from torch import Tensor, nn

from stackgan_cli.errors import StackGANError
from stackgan_cli.fsutil import atomic_write_text, fsync_dir
from stackgan_cli.training import distributed as dist_utils

CACHE_DIR = "trunk_features"
FORMAT_VERSION = 1
BUILD_BATCH = 16  # trunk rows per forward while building (fixed: see the module docstring)
REGION_SHAPE = (768, 17, 17)  # Inception-v3 Mixed_6e at 299 px
POOLED_DIM = 2048
ROW_BYTES = int(np.prod(REGION_SHAPE)) * 2 + POOLED_DIM * 4


@dataclass(frozen=True)
class ViewPlan:
    """The K fixed views of N images: crop offsets (N, K) and flip flags (N, K)."""

    rows: Tensor
    cols: Tensor
    flips: Tensor

    @property
    def views(self) -> int:
        return int(self.rows.shape[1])


def view_plan(num_images: int, views: int, load_size: int, crop_size: int, seed: int) -> ViewPlan:
    """K views per image from ``seed``: random crop offsets in 0..load-crop, view v flipped
    when v is odd (so K >= 2 always sees both orientations)."""
    generator = torch.Generator().manual_seed(seed)
    span = load_size - crop_size + 1
    rows = torch.randint(0, span, (num_images, views), generator=generator)
    cols = torch.randint(0, span, (num_images, views), generator=generator)
    flips = (torch.arange(views) % 2 == 1).expand(num_images, views).clone()
    return ViewPlan(rows=rows, cols=cols, flips=flips)


def cache_bytes(num_images: int, views: int) -> int:
    """Disk bytes of one split's cache."""
    return num_images * views * ROW_BYTES


class TrunkFeatures:
    """One split's cached trunk outputs, read by row (``image * K + view``)."""

    def __init__(self, regions: np.ndarray, pooled: np.ndarray, views: int) -> None:
        self.regions, self.pooled, self.views = regions, pooled, views

    def __len__(self) -> int:
        return int(self.regions.shape[0])

    def gather(self, rows: Tensor, device: torch.device) -> tuple[Tensor, Tensor]:
        """Rows -> (Mixed_6e maps (B, 768, 17, 17), pooled codes (B, 2048)), float32 on
        ``device``, in the order of ``rows``."""
        index = rows.cpu().numpy()
        regions = torch.from_numpy(self.regions[index]).to(device=device, dtype=torch.float32)
        pooled = torch.from_numpy(self.pooled[index]).to(device=device, dtype=torch.float32)
        return regions, pooled


class CachedProjections(nn.Module):
    """The trainable half of a DAMSM image encoder over cached trunk outputs: what the
    training step calls (and DDP wraps) in place of the whole encoder."""

    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, regions: Tensor, pooled: Tensor) -> tuple[Tensor, Tensor]:
        return self.encoder.project(regions, pooled)


def crop_views(images: np.ndarray, index: np.ndarray, plan: ViewPlan, crop: int) -> Tensor:
    """The views of rows ``index`` (image * K + view) as float32 (B, 3, crop, crop) in [-1, 1]."""
    image, view = index // plan.views, index % plan.views
    out = np.empty((len(index), crop, crop, 3), dtype=np.uint8)
    for k, (i, v) in enumerate(zip(image.tolist(), view.tolist(), strict=True)):
        r, c = int(plan.rows[i, v]), int(plan.cols[i, v])
        pixels = images[i, r : r + crop, c : c + crop]
        out[k] = pixels[:, ::-1] if bool(plan.flips[i, v]) else pixels
    return torch.from_numpy(out).permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def open_or_build(
    directory: Path,
    split: str,
    key: dict[str, Any],
    *,
    encoder: nn.Module,
    images: np.ndarray,
    plan: ViewPlan,
    crop: int,
    ctx: dist_utils.DistContext,
    device: torch.device,
    report: Callable[[str], None],
) -> TrunkFeatures:
    """``split``'s cache in ``directory``: opened when its key matches ``key``, else (re)built
    by every rank together, then opened read-only. ``report`` gets progress lines (rank 0)."""
    rows = len(images) * plan.views
    names = _names(directory, split)
    if not _valid(names, key, rows):
        dist_utils.barrier(ctx)  # nobody still reads an old cache
        if ctx.is_main:
            _prepare(directory, names, rows)
        dist_utils.barrier(ctx)
        _build(names, encoder, images, plan, crop, ctx, device, report)
        dist_utils.barrier(ctx)
        if ctx.is_main:
            for part in ("regions", "pooled"):
                os.replace(names[part + ".partial"], names[part])
            fsync_dir(directory)
            atomic_write_text(names["key"], json.dumps(key, sort_keys=True) + "\n")
        dist_utils.barrier(ctx)
    regions = np.load(names["regions"], mmap_mode="r")
    pooled = np.load(names["pooled"], mmap_mode="r")
    return TrunkFeatures(regions, pooled, plan.views)


def remove_cache(run_dir: Path) -> None:
    """Delete a run's cache folder (a finished run no longer needs it)."""
    shutil.rmtree(run_dir / CACHE_DIR, ignore_errors=True)


def _names(directory: Path, split: str) -> dict[str, Path]:
    return {
        "key": directory / f"{split}.json",
        "regions": directory / f"{split}.regions.npy",
        "pooled": directory / f"{split}.pooled.npy",
        "regions.partial": directory / f"{split}.regions.npy.partial",
        "pooled.partial": directory / f"{split}.pooled.npy.partial",
    }


def _valid(names: dict[str, Path], key: dict[str, Any], rows: int) -> bool:
    try:
        if json.loads(names["key"].read_text()) != key:
            return False
        regions = np.load(names["regions"], mmap_mode="r")
        pooled = np.load(names["pooled"], mmap_mode="r")
    except (OSError, ValueError):
        return False
    return (
        regions.shape == (rows, *REGION_SHAPE)
        and regions.dtype == np.float16
        and pooled.shape == (rows, POOLED_DIM)
        and pooled.dtype == np.float32
    )


def _prepare(directory: Path, names: dict[str, Path], rows: int) -> None:
    """Remove the old files and make room for the new ones (a one-line error when the disk
    cannot hold them)."""
    names["key"].unlink(missing_ok=True)
    directory.mkdir(parents=True, exist_ok=True)
    for name in names.values():
        if name != names["key"]:
            name.unlink(missing_ok=True)
    needed = rows * ROW_BYTES
    free = shutil.disk_usage(directory).free
    if needed > free:
        raise StackGANError(
            f"the Inception trunk's feature cache needs {needed / 2**30:.1f} GiB in {directory}, "
            f"{free / 2**30:.1f} GiB are free: free some space, pass a smaller --trunk-views, "
            "or --trunk-views 0 to run the trunk at every step"
        )
    try:
        for part, dtype, shape in (
            ("regions", np.float16, (rows, *REGION_SHAPE)),
            ("pooled", np.float32, (rows, POOLED_DIM)),
        ):
            path = names[part + ".partial"]
            open_memmap(path, "w+", dtype, shape).flush()
            # Reserve the blocks now: a write into a sparse memory map on a full disk is a
            # SIGBUS, not an error that can be reported.
            with open(path, "r+b") as handle:
                os.posix_fallocate(handle.fileno(), 0, os.fstat(handle.fileno()).st_size)
    except OSError as exc:
        for part in ("regions", "pooled"):
            names[part + ".partial"].unlink(missing_ok=True)
        raise StackGANError(f"cannot write the trunk feature cache in {directory}: {exc}") from None


@torch.no_grad()
def _build(
    names: dict[str, Path],
    encoder: nn.Module,
    images: np.ndarray,
    plan: ViewPlan,
    crop: int,
    ctx: dist_utils.DistContext,
    device: torch.device,
    report: Callable[[str], None],
) -> None:
    """Fill this rank's chunks (chunk c belongs to rank c mod world size)."""
    regions = np.load(names["regions.partial"], mmap_mode="r+")
    pooled = np.load(names["pooled.partial"], mmap_mode="r+")
    total = len(regions)
    chunks = range(ctx.rank * BUILD_BATCH, total, BUILD_BATCH * ctx.world_size)
    started = last = time.monotonic()
    was_training = encoder.training
    encoder.eval()
    try:
        for done, start in enumerate(chunks, 1):
            index = np.arange(start, min(start + BUILD_BATCH, total))
            batch = crop_views(images, index, plan, crop).to(device)
            mixed, code = encoder.trunk(batch)
            regions[index[0] : index[-1] + 1] = mixed.cpu().numpy().astype(np.float16)
            pooled[index[0] : index[-1] + 1] = code.cpu().numpy()
            now = time.monotonic()
            if ctx.is_main and (now - last >= 30.0 or done == len(chunks)):
                last = now
                report(f"trunk features: {100 * done // len(chunks)}% in {now - started:.0f} s")
        regions.flush()
        pooled.flush()
    finally:
        encoder.train(was_training)
        del regions, pooled
