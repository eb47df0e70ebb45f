"""DiffAugment (Zhao et al., "Differentiable Augmentation for Data-Efficient GAN Training",
NeurIPS 2020): the same random, differentiable transformations applied to every image a
discriminator sees - real, wrong and fake - so that the generator's gradient flows through
them and D cannot memorise a small training set.

Written from the paper's description, on images in [-1, 1] of shape (B, C, H, W):

* ``color``: per sample, a random brightness shift in [-0.5, 0.5), a saturation factor in
  [0, 2) around the pixel's channel mean and a contrast factor in [0.5, 1.5) around the
  image mean;
* ``translation``: per sample, a random integer shift of up to 1/8 of the height and width,
  the uncovered pixels zero;
* ``cutout``: per sample, a random square of half the height and width (its centre anywhere
  in the image, clipped at the borders) set to zero.

Every random number comes from torch's global generator of the images' device (fresh draws at
each call), so a run resumed from a checkpoint that restores the RNG states continues
bit-exactly.
"""

from __future__ import annotations

import torch
from torch import Tensor

from stackgan_cli.models.memory import memory_format_of

AUGMENTATIONS = ("color", "translation", "cutout")


def parse_policy(policy: str) -> tuple[str, ...]:
    """``"color,translation"`` -> ("color", "translation"); "" -> (). ValueError for an unknown,
    empty or repeated name."""
    policy = policy.strip()
    if not policy:
        return ()
    names = [name.strip() for name in policy.split(",")]
    for name in names:
        if not name:
            raise ValueError(f"empty augmentation name in {policy!r}")
        if name not in AUGMENTATIONS:
            raise ValueError(f"unknown augmentation {name!r} (known: {', '.join(AUGMENTATIONS)})")
    if len(set(names)) != len(names):
        raise ValueError(f"an augmentation is repeated in {policy!r}")
    return tuple(names)


def _rand(x: Tensor) -> Tensor:
    return torch.rand(x.size(0), 1, 1, 1, dtype=x.dtype, device=x.device)


def color(x: Tensor) -> Tensor:
    """Random brightness, saturation and contrast per sample."""
    x = x + (_rand(x) - 0.5)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * (_rand(x) * 2.0) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * (_rand(x) + 0.5) + mean


def translation(x: Tensor, ratio: float = 0.125) -> Tensor:
    """Shift each sample by up to ``ratio`` of its size (zeros where nothing is shifted in)."""
    batch, _, height, width = x.shape
    max_dy, max_dx = int(height * ratio + 0.5), int(width * ratio + 0.5)
    dy = torch.randint(-max_dy, max_dy + 1, (batch, 1, 1), device=x.device)
    dx = torch.randint(-max_dx, max_dx + 1, (batch, 1, 1), device=x.device)
    b = torch.arange(batch, device=x.device).view(batch, 1, 1)
    rows = torch.arange(height, device=x.device).view(1, height, 1) + dy
    cols = torch.arange(width, device=x.device).view(1, 1, width) + dx
    # A one-pixel zero border: indices that leave the image land on it.
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1))
    rows = rows.clamp(-1, height) + 1
    cols = cols.clamp(-1, width) + 1
    shifted = padded.permute(0, 2, 3, 1)[b, rows, cols]  # (B, H, W, C)
    return shifted.permute(0, 3, 1, 2).contiguous(memory_format=memory_format_of(x))


def cutout(x: Tensor, ratio: float = 0.5) -> Tensor:
    """Zero a random square of ``ratio`` of the size in each sample."""
    batch, _, height, width = x.shape
    size_y, size_x = int(height * ratio + 0.5), int(width * ratio + 0.5)
    cy = torch.randint(0, height + (1 - size_y % 2), (batch, 1, 1), device=x.device)
    cx = torch.randint(0, width + (1 - size_x % 2), (batch, 1, 1), device=x.device)
    rows = torch.arange(height, device=x.device).view(1, height, 1)
    cols = torch.arange(width, device=x.device).view(1, 1, width)
    top, left = cy - size_y // 2, cx - size_x // 2
    inside = (rows >= top) & (rows < top + size_y) & (cols >= left) & (cols < left + size_x)
    return x * (~inside).unsqueeze(1).to(x.dtype)


_FUNCTIONS = {"color": color, "translation": translation, "cutout": cutout}


class DiffAugment:
    """Callable applying a policy's augmentations, in the order given, to a batch of images."""

    def __init__(self, policy: str) -> None:
        self.names = parse_policy(policy)
        self.policy = ",".join(self.names)

    def __bool__(self) -> bool:
        return bool(self.names)

    def __call__(self, x: Tensor) -> Tensor:
        for name in self.names:
            x = _FUNCTIONS[name](x)
        return x

    def __repr__(self) -> str:
        return f"DiffAugment({self.policy!r})"
