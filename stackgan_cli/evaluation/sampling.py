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

from stackgan_cli.errors import StackGANError
from stackgan_cli.generator_file import GeneratorBundle
from stackgan_cli.models.config import IMAGE_SIZE
from stackgan_cli.models.generator_v2 import branch_image_sizes

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


def output_sizes(bundle: GeneratorBundle) -> tuple[int, ...]:
    """The image sides ``bundle`` makes, smallest first: a StackGAN-v2 file's branches, a
    Stage-II file's 64 (its Stage-I) and 256, a Stage-I file's 64."""
    if bundle.arch == "v2":
        return tuple(branch_image_sizes(bundle.cfg.branch_num))
    return tuple(IMAGE_SIZE[stage] for stage in range(1, bundle.stage + 1))


def select_output(bundle: GeneratorBundle, size: int | None) -> tuple[int, int]:
    """``(output, side)`` for ``--size``: the 1-based StackGAN-v1 stage or StackGAN-v2 branch
    that makes ``size`` px images (default: the largest), and that side."""
    sizes = output_sizes(bundle)
    if size is None:
        size = sizes[-1]
    if size not in sizes:
        kind = "StackGAN-v2" if bundle.arch == "v2" else f"StackGAN-v1 Stage-{'I' * bundle.stage}"
        raise StackGANError(
            f"--size {size}: {bundle.path} is a {kind} generator; it makes "
            f"{', '.join(map(str, sizes))} px images"
        )
    return sizes.index(size) + 1, size


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
    output: int | None = None,
) -> Iterator[Tensor]:
    """Yield uint8 (B, 3, S, S) batches on ``device``, sample ``i`` conditioned on
    ``embeddings[image_idx[i], caption_idx[i]]``. ``output`` (see :func:`select_output`) is
    the StackGAN-v1 stage or StackGAN-v2 branch to score; default the largest.

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
    output = len(output_sizes(bundle)) if output is None else output
    with torch.no_grad():
        for start in range(0, count, batch_size):
            stop = min(start + batch_size, count)
            text = np.ascontiguousarray(embeddings[image_idx[start:stop], caption_idx[start:stop]])
            text = torch.from_numpy(text).to(device=device, dtype=torch.float32)
            z = noise[start:stop].to(device)
            e1 = eps1[start:stop].to(device)
            if bundle.arch == "v2":
                branches, _, _ = generator(text, z, eps=e1)
                images = branches[output - 1]
            elif bundle.stage == 2 and output == 1:
                _, images, _, _ = generator.STAGE1_G(text, z, eps=e1)
            else:
                eps = (e1, eps2[start:stop].to(device)) if eps2 is not None else e1
                _, images, _, _ = generator(text, z, eps)
            yield to_uint8(images)
