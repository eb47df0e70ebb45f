"""Real test images as Inception sees them, and their cached FID statistics.

Real images are the prepared bounding-box crops (76x76 / 304x304), centre-cropped to 64x64 /
256x256. Training takes random 64/256 crops of the same arrays (stackgan-pytorch-spec.md 2.2), so
the centre crop
shows the objects at exactly the scale the generator learned; resizing 76 -> 64 would shrink
them by 16 % and bias FID.

128x128 (a StackGAN-v2 file's middle branch) is not stored: its real images are the 256x256
centre crop of the 304x304 images shrunk to 128 (bilinear, antialiased, rounded to uint8), as
StackGAN-v2 training makes its 128 px real views from the 256 px crop. That is the same relative
crop as 64 from 76 and 256 from 304 (the centre 84 %), so the three sizes show the same objects.

The statistics of the whole test split (mean, covariance and the real diversity reference) are
cached under ``paths.weights_dir()/fid_stats/``, keyed by a hash of the dataset fingerprint,
the resolution, the crop and the Inception variant and weights, and written atomically.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torch_fidelity
from rich.progress import Progress
from torch import Tensor

from stackgan_cli import paths
from stackgan_cli.console import warn
from stackgan_cli.evaluation.inception import POOL_LAYER, VARIANT, InceptionNet
from stackgan_cli.evaluation.metrics import (
    DIVERSITY_GROUP_SIZE,
    DIVERSITY_GROUPS,
    FeatureStats,
    feature_statistics,
    mean_pairwise_distance,
)
from stackgan_cli.fsutil import atomic_file
from stackgan_cli.models.config import load_size

CACHE_FORMAT = 1
REAL_RESOLUTIONS = (64, 128, 256)
"""The sides real test images can be scored at (a StackGAN-v2 file's 128 included)."""
_SHRUNK_FROM = {128: 256}  # resolution -> the stored crop it is resized from


def _crop_size(resolution: int) -> int:
    if resolution not in REAL_RESOLUTIONS:
        raise ValueError(f"real images are made at {REAL_RESOLUTIONS} px, not {resolution}")
    return _SHRUNK_FROM.get(resolution, resolution)


def stored_size(resolution: int) -> int:
    """Side of the prepared images (76 or 304) that the real ``resolution`` images come from."""
    return load_size(_crop_size(resolution))


def crop_description(resolution: int) -> str:
    """How the real images are made, for the JSON protocol."""
    crop = _crop_size(resolution)
    load = load_size(crop)
    text = (
        f"test split bounding-box crops prepared at {load}x{load} (PIL bilinear), "
        f"centre-cropped to {crop}x{crop} (offset {(load - crop) // 2}); "
    )
    if crop == resolution:
        return text + "no flip, no resize"
    return text + f"resized to {resolution}x{resolution} (bilinear, antialiased); no flip"


def crop_summary(resolution: int) -> str:
    """The crop in a few words (``centre 76->64``), for the cache key and the FID protocol."""
    crop = _crop_size(resolution)
    text = f"centre {load_size(crop)}->{crop}"
    return text if crop == resolution else f"{text}, bilinear antialiased to {resolution}"


def real_image_batches(
    images: np.ndarray, resolution: int, indices: np.ndarray, batch_size: int
) -> Iterator[Tensor]:
    """Yield uint8 (B, 3, S, S) CPU batches of the centre-cropped ``images[indices]`` from the
    (N, L, L, 3) prepared array (L = :func:`stored_size` of ``resolution``: 76 or 304), shrunk
    to ``resolution`` when it is not stored (128)."""
    load = images.shape[1]
    size = _crop_size(resolution)
    offset = (load - size) // 2
    for start in range(0, len(indices), batch_size):
        rows = indices[start : start + batch_size]
        crop = images[rows, offset : offset + size, offset : offset + size]
        batch = torch.from_numpy(np.ascontiguousarray(crop)).permute(0, 3, 1, 2).contiguous()
        yield batch if size == resolution else _shrink(batch, resolution)


def _shrink(batch: Tensor, resolution: int) -> Tensor:
    """uint8 (B, 3, S, S) -> uint8 (B, 3, resolution, resolution), as StackGAN-v2 training
    shrinks its real crops (bilinear, antialiased), rounded back to 8 bits."""
    shrunk = F.interpolate(
        batch.float(),
        size=(resolution, resolution),
        mode="bilinear",
        align_corners=False,
        antialias=True,
    )
    return shrunk.round_().clamp_(0, 255).to(torch.uint8)


def real_features(
    images: np.ndarray,
    resolution: int,
    indices: np.ndarray,
    net: InceptionNet,
    *,
    batch_size: int,
    progress: Progress | None,
    description: str = "real images: Inception features",
) -> tuple[Tensor, Tensor]:
    """Inception (logits, pool features) of the centre-cropped real ``images[indices]``."""
    task = progress.add_task(description, total=len(indices)) if progress else None
    logits, pools = [], []
    for batch in real_image_batches(images, resolution, indices, batch_size):
        batch_logits, batch_pool = net.features(batch)
        logits.append(batch_logits)
        pools.append(batch_pool)
        if progress is not None:
            progress.advance(task, len(batch))
    return torch.cat(logits), torch.cat(pools)


def diversity_groups(num_images: int) -> np.ndarray | None:
    """Indices (G, k) of distinct images for the real diversity reference: up to 10 groups of
    8, spread evenly over the split, each group spanning the whole split (so its images come
    from different test images and mostly different classes). None with fewer than 2 images."""
    if num_images < 2:
        return None
    per_group = min(DIVERSITY_GROUP_SIZE, num_images)
    groups = max(1, min(DIVERSITY_GROUPS, num_images // per_group))
    spread = np.linspace(0, num_images - 1, num=groups * per_group).round().astype(np.int64)
    return spread.reshape(per_group, groups).T


def real_diversity(pool: Tensor) -> dict | None:
    """The real diversity reference of (N, 2048) pool features, or None for N < 2."""
    groups = diversity_groups(pool.shape[0])
    if groups is None:
        return None
    mean, std = mean_pairwise_distance(pool[torch.from_numpy(groups)])
    return {"mean": mean, "std": std, "groups": groups.shape[0], "per_group": groups.shape[1]}


@dataclass
class RealStats:
    """FID statistics of the whole test split plus its diversity reference."""

    stats: FeatureStats
    diversity: dict | None
    path: Path
    cached: bool
    seconds: float


def cache_key(fingerprint: str, resolution: int, net: InceptionNet) -> dict:
    """Everything the cached statistics depend on."""
    return {
        "cache_format": CACHE_FORMAT,
        "dataset_fingerprint": fingerprint,
        "split": "test",
        "resolution": resolution,
        "crop": crop_summary(resolution),
        "inception_variant": VARIANT,
        "inception_weights_sha256": net.weights_sha256,
        "feature_layer": POOL_LAYER,
        "torch_fidelity_version": torch_fidelity.__version__,
        "diversity": [DIVERSITY_GROUPS, DIVERSITY_GROUP_SIZE],
    }


def cache_path(dataset_name: str, resolution: int, key: dict) -> Path:
    """``weights/fid_stats/<dataset>-<res>px-<hash>.npz``."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    safe_name = "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in dataset_name)
    return paths.weights_dir() / "fid_stats" / f"{safe_name}-{resolution}px-{digest}.npz"


def _read_cache(path: Path, key: dict) -> tuple[FeatureStats, dict | None] | None:
    try:
        with np.load(path, allow_pickle=False) as data:
            if json.loads(str(data["key"])) != key:
                return None
            stats = FeatureStats(mu=data["mu"], sigma=data["sigma"], count=int(data["count"]))
            diversity = json.loads(str(data["diversity"]))
    except (OSError, KeyError, ValueError) as exc:
        warn(f"ignoring the unreadable real-image statistics {path} ({exc}); recomputing")
        return None
    return stats, diversity


def save_real_stats(path: Path, key: dict, stats: FeatureStats, diversity: dict | None) -> None:
    """Write the statistics atomically (a killed run never leaves a half-written cache)."""
    with atomic_file(path, "wb") as handle:
        np.savez(
            handle,
            key=np.array(json.dumps(key, sort_keys=True)),
            mu=stats.mu,
            sigma=stats.sigma,
            count=np.array(stats.count),
            diversity=np.array(json.dumps(diversity)),
        )


def load_or_compute_real_stats(
    dataset_name: str,
    fingerprint: str,
    images: np.ndarray,
    resolution: int,
    net: InceptionNet,
    *,
    batch_size: int,
    progress: Progress | None,
) -> RealStats:
    """The cached statistics of all test ``images`` at ``resolution``, computed on a miss."""
    start = time.perf_counter()
    key = cache_key(fingerprint, resolution, net)
    path = cache_path(dataset_name, resolution, key)
    if path.is_file():
        cached = _read_cache(path, key)
        if cached is not None:
            return RealStats(*cached, path=path, cached=True, seconds=time.perf_counter() - start)
    indices = np.arange(images.shape[0], dtype=np.int64)
    _, pool = real_features(
        images, resolution, indices, net, batch_size=batch_size, progress=progress
    )
    stats = feature_statistics(pool)
    diversity = real_diversity(pool)
    save_real_stats(path, key, stats, diversity)
    return RealStats(stats, diversity, path, cached=False, seconds=time.perf_counter() - start)
