"""Sample grids during training: fixed test captions (rows) x fixed noise (columns).

The captions, noise and conditioning-augmentation noise are drawn once from the run's seed with
a private generator, so every grid of a run (and of its resumed continuation) shows the same
inputs, and drawing them never touches the training random state. Grids are rendered with the
generator in eval mode without gradients, which leaves its BatchNorm statistics untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from stackgan_cli.imaging import captioned_grid, save_png

_SHEET_SEED_OFFSET = 7919  # keeps the sheet's draws apart from the sampler's seed


@dataclass
class SampleSheet:
    """The fixed inputs of a run's sample grids."""

    captions: list[str]  # one per row
    embeddings: Tensor  # (rows, D)
    noise: Tensor  # (cols, z_dim), shared by every row
    eps: Tensor  # (rows, cols, condition_dim) for the (Stage-II) CA
    eps_stage1: Tensor  # (rows, cols, condition_dim) for the nested Stage-I CA (Stage II)


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
    return SampleSheet(
        captions=[captions[i][j] for i, j in chosen],
        embeddings=torch.stack([torch.as_tensor(np.asarray(embeddings[i, j])) for i, j in chosen]),
        noise=torch.randn(cols, z_dim, generator=generator),
        eps=torch.randn(n, cols, condition_dim, generator=generator),
        eps_stage1=torch.randn(n, cols, condition_dim, generator=generator),
    )


@torch.no_grad()
def render_samples(
    netG: nn.Module, sheet: SampleSheet, *, stage: int, device: torch.device, autocast: Callable
) -> list[Tensor]:
    """One (cols, 3, H, W) float tensor in [-1, 1] per caption, on the CPU.

    Calls ``netG.forward`` (not a torch.compile'd ``__call__``: no recompilation for eval mode)
    and restores the generator's training mode afterwards.
    """
    was_training = netG.training
    netG.eval()
    rows = []
    try:
        for r in range(len(sheet.captions)):
            cols = sheet.noise.size(0)
            text = sheet.embeddings[r].to(device).expand(cols, -1)
            noise = sheet.noise.to(device)
            eps = sheet.eps[r].to(device)
            if stage == 2:
                eps = (sheet.eps_stage1[r].to(device), eps)
            with autocast():
                _, images, _, _ = netG.forward(text, noise, eps)
            rows.append(images.float().clamp(-1.0, 1.0).cpu())
    finally:
        netG.train(was_training)
    return rows


def write_sample_grid(
    path: Path,
    netG: nn.Module,
    sheet: SampleSheet,
    *,
    stage: int,
    device: torch.device,
    autocast: Callable,
) -> Path:
    """Render the sheet and save the captioned grid as a PNG at ``path``."""
    rows = render_samples(netG, sheet, stage=stage, device=device, autocast=autocast)
    return save_png(captioned_grid(rows, sheet.captions), path)
