"""Real test images as Inception sees them, and their cached FID statistics.

Real images are the prepared bounding-box crops (76x76 / 304x304), centre-cropped to 64x64 /
256x256. Training takes random 64/256 crops of the same arrays (spec 2.2), so the centre crop
shows the objects at exactly the scale the generator learned; resizing 76 -> 64 would shrink
them by 16 % and bias FID.

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

LOAD_SIZE = {64: 76, 256: 304}
"""The prepared array each evaluation resolution is cropped from."""

CACHE_FORMAT = 1


def crop_description(resolution: int) -> str:
    """How the real images are made, for the JSON protocol."""
    load = LOAD_SIZE[resolution]
    return (
        f"test split bounding-box crops prepared at {load}x{load} (PIL bilinear), "
        f"centre-cropped to {resolution}x{resolution} (offset {(load - resolution) // 2}); "
        "no flip, no resize"
    )


def real_image_batches(
    images: np.ndarray, resolution: int, indices: np.ndarray, batch_size: int
) -> Iterator[Tensor]:
    """Yield uint8 (B, 3, S, S) CPU batches of the centre-cropped ``images[indices]`` from the
    (N, L, L, 3) prepared array (L = 76 or 304)."""
    load = images.shape[1]
    offset = (load - resolution) // 2
    for start in range(0, len(indices), batch_size):
        rows = indices[start : start + batch_size]
        crop = images[rows, offset : offset + resolution, offset : offset + resolution]
        yield torch.from_numpy(np.ascontiguousarray(crop)).permute(0, 3, 1, 2).contiguous()


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
        "crop": f"centre {LOAD_SIZE[resolution]}->{resolution}",
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
