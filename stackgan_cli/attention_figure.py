"""AttnGAN's attention figure: where each word of the caption looked, stage by stage.

One row per attending stage: the image that stage made, then the same image lit by each word's
attention map (the map upsampled bilinearly to the image and scaled from its least to its most
attended pixel, as the AttnGAN code draws them), each column labelled with its word, the
caption beneath, as in the AttnGAN paper's figures.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor

from stackgan_cli.imaging import enlarge, strip

DIM = 0.15  # brightness of a pixel no word attended to, so the image stays readable


def attention_figure(
    images: Sequence[Tensor], maps: Sequence[Tensor], words: Sequence[str], caption: str
) -> Image.Image:
    """The figure of one sample: ``images`` its outputs (3, S_k, S_k) smallest first,
    ``maps`` the attention of each attending stage (T, s_k, s_k), T >= len(words); stage k's
    maps belong to output k + 1. Rows are drawn at the largest output's side."""
    if len(maps) != len(images) - 1 or not maps:
        raise ValueError(f"{len(images)} outputs need {len(images) - 1} attention maps")
    if not words or any(attention.shape[0] < len(words) for attention in maps):
        raise ValueError(f"{len(words)} words for maps of {[m.shape[0] for m in maps]}")
    size = images[-1].shape[-1]
    rows = []
    for stage, attention in enumerate(maps, start=1):
        image = enlarge(images[stage].float().cpu()[None], size)[0]
        weights = attention[: len(words)].float().cpu()[None]
        weights = F.interpolate(weights, size=(size, size), mode="bilinear", align_corners=False)[0]
        low = weights.amin(dim=(1, 2), keepdim=True)
        span = (weights.amax(dim=(1, 2), keepdim=True) - low).clamp_min(1e-12)
        weights = (weights - low) / span
        lit = (image[None] + 1.0) * (DIM + (1.0 - DIM) * weights[:, None]) - 1.0
        rows.append(torch.cat([image[None], lit]))
    return strip(torch.stack(rows), ["image", *words], caption=caption)


def sample_figures(
    bundle: Any,
    text: Any,
    noise: Any,
    prompts: Sequence[str],
    captions: Sequence[str],
    device: torch.device,
) -> list[list[Image.Image]]:
    """The attention figure of every sample of an AttnGAN generator file ``bundle``: for each
    prompt (its DAMSM features ``text``, one row per prompt), one figure per noise row, the
    words labelled as the vocabulary reads them."""
    family, n = bundle.family, len(noise)
    vocabulary = bundle.text_encoder.vocabulary
    figures = []
    for p, prompt in enumerate(prompts):
        ids, _ = vocabulary.encode(prompt)
        words = [vocabulary.words[i] for i in ids][: int(text.lengths[p])]
        rows = torch.full((n,), p, dtype=torch.int64)
        with torch.inference_mode():
            images, maps = family.attention(
                bundle.generator, text[rows].to(device), noise.to(device)
            )
        figures.append(
            [
                attention_figure([i[k] for i in images], [m[k] for m in maps], words, captions[p])
                for k in range(n)
            ]
        )
    return figures
