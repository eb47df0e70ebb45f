"""The dominant palette colour of an image of the shapes dataset: how the conditioning tests
(tests/test_conditioning.py) and the regimes study (benchmarks/regimes_study.py) read whether
a generated image shows the colour its prompt names."""

from __future__ import annotations

import colorsys

import numpy as np
from PIL import Image

from stackgan_cli.data.shapes import COLOURS

HUES = np.array([colorsys.rgb_to_hsv(*(c / 255 for c in rgb))[0] for rgb in COLOURS.values()])
"""Hue (0..1) of each palette colour, in ``COLOURS`` order."""
NAMES = list(COLOURS)
MIN_SATURATION = 0.35  # the backgrounds (greys, beige at 0.18) stay below this
MIN_VALUE = 0.3
MIN_COVERAGE = 0.02  # share of the image that must be coloured to name a colour at all


def dominant_colour(pixels: np.ndarray) -> str | None:
    """The palette colour (a ``COLOURS`` key) nearest in hue to most of the saturated pixels
    of an (H, W, 3) uint8 image, or None when under ``MIN_COVERAGE`` of it is coloured."""
    hsv = np.asarray(Image.fromarray(pixels, "RGB").convert("HSV"), dtype=np.float32) / 255.0
    hue, saturation, value = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    coloured = (saturation >= MIN_SATURATION) & (value >= MIN_VALUE)
    if coloured.mean() < MIN_COVERAGE:
        return None
    distance = np.abs(hue[coloured][:, None] - HUES[None, :])
    distance = np.minimum(distance, 1.0 - distance)  # hue is circular
    votes = np.bincount(distance.argmin(axis=1), minlength=len(HUES))
    return NAMES[int(votes.argmax())]
