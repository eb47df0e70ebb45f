"""Sample grids during training: fixed test captions (rows) x fixed noise (columns).

The captions are picked and the noise drawn (by the family, as ``stackgan generate`` draws it:
column k has the same z and conditioning-augmentation noise in every row) once from the run's
seed with a private generator, so every grid of a run (and of its resumed continuation) shows
the same inputs, and drawing them never touches the training random state. Grids are rendered
with the generator in eval mode without gradients, which leaves its BatchNorm statistics
untouched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from stackgan_cli.families.base import Family, SampleNoise
from stackgan_cli.imaging import captioned_grid, save_png, side_by_side

_SHEET_SEED_OFFSET = 7919  # keeps the sheet's draws apart from the sampler's seed


@dataclass
class SampleSheet:
    """The fixed inputs of a run's sample grids."""

    captions: list[str]  # one per row
    embeddings: Any  # (rows, D), or what the family's generator reads (Family.caption_text)
    noise: SampleNoise  # one sample per column, the same in every row


def make_sample_sheet(
    captions: list[list[str]],
    embeddings: np.ndarray,
    *,
    family: Family,
    seed: int,
    rows: int,
    cols: int,
) -> SampleSheet:
    """Pick ``rows`` images spread evenly over a split (caption k mod 10 of the k-th) and draw
    the noise of ``cols`` samples."""
    count = len(captions)
    picks = sorted({int(round(x)) for x in np.linspace(0, count - 1, min(rows, count))})
    chosen = [(i, k % len(captions[i])) for k, i in enumerate(picks)]
    texts = [captions[i][j] for i, j in chosen]
    rows_embedded = torch.stack([torch.as_tensor(np.asarray(embeddings[i, j])) for i, j in chosen])
    return SampleSheet(
        captions=texts,
        embeddings=family.caption_text(texts, rows_embedded),
        noise=family.draw_noise(cols, seed + _SHEET_SEED_OFFSET),
    )


@torch.no_grad()
def render_samples(
    netG: nn.Module, sheet: SampleSheet, *, family: Family, device: torch.device, autocast: Callable
) -> list[Tensor]:
    """One float tensor in [-1, 1] per caption, on the CPU: the row's samples (and, for a
    family whose grids show every output, each sample's outputs side by side).

    The family calls ``netG.forward`` (not a torch.compile'd ``__call__``: no recompilation for
    eval mode); the generator's training mode is restored afterwards.
    """
    was_training = netG.training
    netG.eval()
    rows = []
    noise = sheet.noise.to(device)
    try:
        for row in range(len(sheet.captions)):
            text = sheet.embeddings[torch.full((len(noise),), row)].to(device)
            with autocast():
                outputs = family.sample(netG, text, noise)
            if not family.sheet_shows_every_output:
                outputs = outputs[-1:]
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
    family: Family,
    device: torch.device,
    autocast: Callable,
) -> Path:
    """Render the sheet and save the captioned grid as a PNG at ``path``."""
    rows = render_samples(netG, sheet, family=family, device=device, autocast=autocast)
    return save_png(captioned_grid(rows, sheet.captions), path)
