"""The maths on Inception outputs: Inception Score, FID and a same-caption diversity figure.

IS and FID are torch-fidelity's own functions (``isc_features_to_metric``,
``fid_features_to_statistics``, ``fid_statistics_to_metric``), so our numbers are computed the
way its CLI computes them; only the diversity figure is ours.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch_fidelity.metric_fid import (
    KEY_METRIC_FID,
    fid_features_to_statistics,
    fid_statistics_to_metric,
)
from torch_fidelity.metric_isc import (
    KEY_METRIC_ISC_MEAN,
    KEY_METRIC_ISC_STD,
    isc_features_to_metric,
)

DIVERSITY_GROUPS = 10
"""Diversity check: this many captions (generated) or groups of distinct images (real) ..."""
DIVERSITY_GROUP_SIZE = 8
"""... of this many samples (or images) each."""


@dataclass(frozen=True)
class FeatureStats:
    """Mean (D,) and covariance (D, D) of a feature set, as FID needs them."""

    mu: np.ndarray
    sigma: np.ndarray
    count: int


def inception_score(logits: Tensor, splits: int, seed: int) -> tuple[float, float]:
    """Inception Score of (N, C) logits: the samples are shuffled with ``seed``, cut into
    ``splits`` parts, and ``exp(mean KL(p(y|x) || p(y)))`` is taken per part, with ``p(y)`` the
    part's mean. Returns the mean and standard deviation over the parts."""
    if logits.dim() != 2:
        raise ValueError(f"logits must be (N, C), got shape {tuple(logits.shape)}")
    if not 1 <= splits <= logits.shape[0]:
        raise ValueError(
            f"splits must be between 1 and the {logits.shape[0]} samples, got {splits}"
        )
    result = isc_features_to_metric(logits.cpu(), splits=splits, shuffle=True, rng_seed=seed)
    return result[KEY_METRIC_ISC_MEAN], result[KEY_METRIC_ISC_STD]


def feature_statistics(features: Tensor) -> FeatureStats:
    """Mean and covariance of (N, D) features (N >= 2)."""
    if features.dim() != 2 or features.shape[0] < 2:
        raise ValueError(f"need (N >= 2, D) features, got shape {tuple(features.shape)}")
    stats = fid_features_to_statistics(features.cpu())
    return FeatureStats(mu=stats["mu"], sigma=stats["sigma"], count=int(features.shape[0]))


def frechet_distance(a: FeatureStats, b: FeatureStats, b_features: Tensor | None = None) -> float:
    """The Fréchet distance between two Gaussians (FID when the stats are Inception pool3):
    ``|mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr(sqrt(S_a S_b))``.

    Computed by torch-fidelity's ``fid_statistics_to_metric`` (eigenvalues of the D x D product,
    about a minute of CPU for D = 2048 on 2 cores), except when ``b_features`` (the N x D
    features behind ``b``) are given with N < D: ``S_b = B B^T`` with ``B`` the centred
    features / sqrt(N - 1), so the non-zero eigenvalues of ``S_a S_b`` are those of the N x N
    symmetric matrix ``B^T S_a B``: the same value in milliseconds for short runs.
    """
    if b_features is None or b_features.shape[0] >= b_features.shape[1]:
        stats_a = {"mu": a.mu, "sigma": a.sigma}
        stats_b = {"mu": b.mu.astype(a.mu.dtype), "sigma": b.sigma.astype(a.sigma.dtype)}
        return float(fid_statistics_to_metric(stats_a, stats_b, verbose=False)[KEY_METRIC_FID])
    features = b_features.cpu().double().numpy()
    centred = (features - features.mean(axis=0)) / np.sqrt(features.shape[0] - 1)
    small = centred @ (a.sigma.astype(np.float64) @ centred.T)  # (N, N) = B^T S_a B
    eigenvalues = np.linalg.eigvalsh((small + small.T) / 2)
    tr_covmean = np.sqrt(np.clip(eigenvalues, 0, None)).sum()
    diff = a.mu.astype(np.float64) - b.mu.astype(np.float64)
    return float(diff @ diff + np.trace(a.sigma) + np.trace(b.sigma) - 2 * tr_covmean)


def mean_pairwise_distance(groups: Tensor) -> tuple[float, float]:
    """(G, k, D) features -> mean and std over the G groups of the mean Euclidean distance
    between the k(k-1)/2 pairs inside each group. Near zero for a collapsed generator."""
    if groups.dim() != 3 or groups.shape[1] < 2:
        raise ValueError(f"need (G, k >= 2, D) features, got shape {tuple(groups.shape)}")
    groups = groups.double()
    k = groups.shape[1]
    distances = torch.cdist(groups, groups, compute_mode="donot_use_mm_for_euclid_dist")
    upper = torch.triu_indices(k, k, offset=1)
    per_group = distances[:, upper[0], upper[1]].mean(dim=1)
    std = float(per_group.std(unbiased=False)) if per_group.numel() > 1 else 0.0
    return float(per_group.mean()), std
