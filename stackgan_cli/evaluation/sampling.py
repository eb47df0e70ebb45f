"""Which test captions the evaluation samples use, and generating those samples.

Sample ``i`` uses test image ``i mod N`` and its caption ``(i div N) mod 10``: every pass over
the N test images uses the next of their 10 captions, so 10·N samples use every caption of every
image exactly once (30,000 ≈ 10 × 2,933 for CUB, as in the paper) and a shorter run still covers
every test image (and so every test class) evenly instead of only the first few images.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from stackgan_cli.generator_file import GeneratorBundle

CAPTIONS_PER_IMAGE = 10


def caption_schedule(num_images: int, num_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """(image index, caption index) of each of ``num_samples`` samples over ``num_images``."""
    if num_images < 1:
        raise ValueError("the test split has no images")
    order = np.arange(num_samples, dtype=np.int64)
    return order % num_images, (order // num_images) % CAPTIONS_PER_IMAGE


def diversity_schedule(
    num_images: int, captions: int, per_caption: int
) -> tuple[np.ndarray, np.ndarray]:
    """``captions`` (image, caption) pairs spread evenly over the test split, each repeated
    ``per_caption`` times in a row: sample ``g * per_caption + j`` is draw ``j`` of caption
    ``g``."""
    if num_images < 1:
        raise ValueError("the test split has no images")
    group = np.arange(captions, dtype=np.int64)
    images = np.linspace(0, num_images - 1, num=captions).round().astype(np.int64)
    return np.repeat(images, per_caption), np.repeat(group % CAPTIONS_PER_IMAGE, per_caption)


def to_uint8(images: Tensor) -> Tensor:
    """Generator output in [-1, 1] -> uint8 in [0, 255] as the official sampler saves PNGs:
    ``uint8((x + 1) * 127.5)`` (truncation), after clamping."""
    return ((images + 1) * 127.5).clamp_(0, 255).to(torch.uint8)


def generate_images(
    bundle: GeneratorBundle,
    embeddings: np.ndarray,
    image_idx: np.ndarray,
    caption_idx: np.ndarray,
    *,
    seed: int,
    batch_size: int,
    device: torch.device,
) -> Iterator[Tensor]:
    """Yield uint8 (B, 3, S, S) batches on ``device``, sample ``i`` conditioned on
    ``embeddings[image_idx[i], caption_idx[i]]``.

    All noise (z and the conditioning-augmentation eps, which the official generator samples in
    eval mode too) is drawn up front from a CPU generator seeded with ``seed``, so the images do
    not depend on the batch size or the device's random number generator.
    """
    cfg = bundle.cfg
    count = len(image_idx)
    rng = torch.Generator().manual_seed(seed)
    noise = torch.randn(count, cfg.z_dim, generator=rng)
    eps1 = torch.randn(count, cfg.condition_dim, generator=rng)
    eps2 = torch.randn(count, cfg.condition_dim, generator=rng) if bundle.stage == 2 else None
    generator = bundle.generator.eval()
    with torch.no_grad():
        for start in range(0, count, batch_size):
            stop = min(start + batch_size, count)
            text = np.ascontiguousarray(embeddings[image_idx[start:stop], caption_idx[start:stop]])
            text = torch.from_numpy(text).to(device=device, dtype=torch.float32)
            z = noise[start:stop].to(device)
            e1 = eps1[start:stop].to(device)
            eps = (e1, eps2[start:stop].to(device)) if eps2 is not None else e1
            _, images, _, _ = generator(text, z, eps)
            yield to_uint8(images)
