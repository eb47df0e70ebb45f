"""Sample grids during training: fixed test captions (rows) x fixed noise (columns).

The captions, noise and conditioning-augmentation noise are drawn once from the run's seed with
a private generator, so every grid of a run (and of its resumed continuation) shows the same
inputs, and drawing them never touches the training random state. Grids are rendered with the
generator in eval mode without gradients, which leaves its BatchNorm statistics untouched.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stackgan_cli.imaging import captioned_grid, save_png

_SHEET_SEED_OFFSET = 7919  # keeps the sheet's draws apart from the sampler's seed


@dataclass
class SampleSheet:
    """The fixed inputs of a run's sample grids."""

    captions: list[str]  # one per row
    embeddings: Tensor  # (rows, D)
    noise: Tensor  # (cols, z_dim), shared by every row
    # Conditioning-augmentation noise, each (rows, cols, condition_dim): [0] for the generator's
    # own CA, [1] for a nested Stage-I generator's (see StackGANv1.sample)
    eps: list[Tensor]


def make_sample_sheet(
    captions: list[list[str]],
    embeddings: np.ndarray,
    *,
    z_dim: int,
    condition_dim: int,
    seed: int,
    rows: int,
    cols: int,
) -> SampleSheet:
    """Pick ``rows`` images spread evenly over a split (caption k mod 10 of the k-th) and draw
    ``cols`` noise vectors and the CA noise."""
    count = len(captions)
    picks = sorted({int(round(x)) for x in np.linspace(0, count - 1, min(rows, count))})
    chosen = [(i, k % len(captions[i])) for k, i in enumerate(picks)]
    generator = torch.Generator().manual_seed(seed + _SHEET_SEED_OFFSET)
    n = len(chosen)
    noise = torch.randn(cols, z_dim, generator=generator)
    eps = [torch.randn(n, cols, condition_dim, generator=generator) for _ in range(2)]
    return SampleSheet(
        captions=[captions[i][j] for i, j in chosen],
        embeddings=torch.stack([torch.as_tensor(np.asarray(embeddings[i, j])) for i, j in chosen]),
        noise=noise,
        eps=eps,
    )


def side_by_side(outputs: Sequence[Tensor]) -> Tensor:
    """(n, 3, H_k, W_k) outputs of the same n samples -> (n * K, 3, H, W): sample i's outputs
    next to each other, each enlarged (nearest neighbour) to the largest size."""
    if len(outputs) == 1:
        return outputs[0]
    size = max(images.shape[-1] for images in outputs)
    enlarged = [F.interpolate(images, size=(size, size), mode="nearest") for images in outputs]
    return torch.stack(enlarged, dim=1).flatten(0, 1)


@torch.no_grad()
def render_samples(
    netG: nn.Module, sheet: SampleSheet, *, family: Any, device: torch.device, autocast: Callable
) -> list[Tensor]:
    """One float tensor in [-1, 1] per caption, on the CPU: the row's samples (and, for a
    family that shows several outputs per sample, those side by side).

    The family calls ``netG.forward`` (not a torch.compile'd ``__call__``: no recompilation for
    eval mode); the generator's training mode is restored afterwards.
    """
    was_training = netG.training
    netG.eval()
    rows = []
    try:
        for r in range(len(sheet.captions)):
            cols = sheet.noise.size(0)
            text = sheet.embeddings[r].to(device).expand(cols, -1)
            noise = sheet.noise.to(device)
            eps = [draw[r].to(device) for draw in sheet.eps]
            with autocast():
                outputs = family.sample(netG, text, noise, eps)
            row = side_by_side([images.float().clamp(-1.0, 1.0) for images in outputs])
            rows.append(row.cpu())
    finally:
        netG.train(was_training)
    return rows


def write_sample_grid(
    path: Path,
    netG: nn.Module,
    sheet: SampleSheet,
    *,
    family: Any,
    device: torch.device,
    autocast: Callable,
) -> Path:
    """Render the sheet and save the captioned grid as a PNG at ``path``."""
    rows = render_samples(netG, sheet, family=family, device=device, autocast=autocast)
    return save_png(captioned_grid(rows, sheet.captions), path)
