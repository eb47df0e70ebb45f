"""Which test captions the evaluation samples use, and generating those samples.

Sample ``i`` uses test image ``i mod N`` and its caption ``(i div N) mod 10``: every pass over
the N test images uses the next of their 10 captions, so 10·N samples use every caption of every
image exactly once (30,000 ≈ 10 × 2,933 for CUB, as in the paper) and a shorter run still covers
every test image (and so every test class) evenly instead of only the first few images.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from stackgan_cli.generator_file import GeneratorBundle
from stackgan_cli.imaging import to_uint8

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


def generate_images(
    bundle: GeneratorBundle,
    split: Any,
    image_idx: np.ndarray,
    caption_idx: np.ndarray,
    *,
    seed: int,
    batch_size: int,
    device: torch.device,
    output: int | None = None,
) -> Iterator[Tensor]:
    """Yield uint8 (B, 3, S, S) batches on ``device``, sample ``i`` conditioned on caption
    ``caption_idx[i]`` of image ``image_idx[i]`` of the prepared ``split`` (its embedding, or
    what the family reads of it: ``Family.caption_text`` with the file's text encoder).
    ``output`` (``Family.select_output``) is the 1-based output of the file's family to score
    (a StackGAN-v1 stage, a StackGAN-v2 or AttnGAN branch); default the largest.

    All noise (z and the conditioning-augmentation eps, which the official generator samples in
    eval mode too) is drawn up front by the family from a CPU generator seeded with ``seed``,
    so the images do not depend on the batch size or the device's random number generator.
    """
    family = bundle.family
    noise = family.draw_noise(len(image_idx), seed)
    generator = bundle.generator.eval()
    output = len(family.output_sizes()) if output is None else output
    with torch.no_grad():
        for start in range(0, len(image_idx), batch_size):
            rows = slice(start, start + batch_size)
            images_of, captions_of = image_idx[rows], caption_idx[rows]
            rows_embedded = np.ascontiguousarray(split.embeddings[images_of, captions_of])
            texts = [split.captions[i][j] for i, j in zip(images_of, captions_of, strict=True)]
            text = family.caption_text(
                texts, torch.from_numpy(rows_embedded).float(), bundle.text_encoder
            ).to(device)
            images = family.sample(generator, text, noise.select(rows).to(device), upto=output)
            yield to_uint8(images[-1])
