"""Decoding one's own image files: any mode to RGB, EXIF orientation, size limits, crops.

Images of one's own folder (``stackgan prepare PATH``) come in every size and mode. Each is
checked from its header first (``probe_image``: is it an image at all, is its pixel count sane)
and only then decoded in full (``load_crops``), so a decompression bomb is refused without
being decoded and a truncated file is found by the full decode rather than later.

Conversion to RGB uint8, mode by mode:

- ``RGB``: as is; ``L``, ``1``, ``CMYK``, ``YCbCr`` and the rest: PIL's own conversion
  (CMYK without colour management, as PIL does it).
- Alpha (``RGBA``, ``LA``, ``PA``, premultiplied ``RGBa``/``La``, a palette or grey image with a
  transparent colour): composited on white. Transparent pixels keep whatever colour the
  encoder left there (often black), so dropping alpha would show it; white is what a page
  behind the image shows.
- 16-bit grey (``I;16``, ``I;16L``, ``I;16B``, ``I;16N``): the top 8 bits, so 0x8000 is
  mid-grey 128 (PIL's own conversion clips to 255, turning most 16-bit images white).
- 32-bit integer ``I``: read as 16-bit grey, values clipped to 0..65535 (what other tools and
  older Pillows store 16-bit data as).
- 32-bit float ``F``: values within 0..1 are intensities 0..1; otherwise PIL's 0..255
  convention, clipped.
"""

from __future__ import annotations

import os
import re
import stat
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from stackgan_cli.data import cub

MAX_IMAGE_PIXELS = 89_478_485
"""Largest width x height accepted (PIL's own warning level, about 9459 x 9459): above it a
file is refused from its header, never decoded."""

_ORIENTATION_TAG = 0x0112
_TRANSPOSED_ORIENTATIONS = (5, 6, 7, 8)  # EXIF orientations that swap width and height
_WHITE = (255, 255, 255, 255)
_ALPHA_MODES = ("RGBA", "RGBa", "LA", "La", "PA")
_BOMB_PIXELS = re.compile(r"\((\d+) pixels\)")


class BadImage(Exception):
    """An image file that cannot be used; the message is one line, the reason."""


def probe_image(path: Path | str) -> tuple[int, int]:
    """``(width, height)`` of the image at ``path`` as displayed (after its EXIF orientation),
    read from the header alone; ``BadImage`` when it is missing, not an image, or has more
    than ``MAX_IMAGE_PIXELS`` pixels."""
    with _open(path) as image:
        width, height = image.size
        if _orientation(image) in _TRANSPOSED_ORIENTATIONS:
            width, height = height, width
        return width, height


def load_rgb(path: Path | str) -> Image.Image:
    """The image at ``path`` decoded in full, turned upright by its EXIF orientation and
    converted to RGB (see the module docstring); ``BadImage`` when it cannot be."""
    with _open(path) as image:
        try:
            image.load()
            upright = ImageOps.exif_transpose(image)
            return to_rgb(upright)
        except Image.DecompressionBombError:
            raise BadImage(_too_large(None)) from None
        except (OSError, ValueError, SyntaxError, EOFError) as exc:
            raise BadImage(f"cannot decode the image ({_one_line(exc)})") from None


def to_rgb(image: Image.Image) -> Image.Image:
    """``image`` in RGB, 8 bits per channel, by the rules of the module docstring."""
    mode = image.mode
    if mode.startswith("I;16"):
        return _grey(np.asarray(image).astype(np.uint32) >> 8)
    if mode == "I":
        return _grey(np.clip(np.asarray(image, dtype=np.int64), 0, 0xFFFF) >> 8)
    if mode == "F":
        values = np.nan_to_num(np.asarray(image, dtype=np.float64))
        scale = 255.0 if values.size and values.min() >= 0.0 and values.max() <= 1.0 else 1.0
        return _grey(np.clip(np.rint(values * scale), 0, 255))
    if mode in _ALPHA_MODES:
        return _on_white(image.convert("RGBA"))
    if "transparency" in image.info and mode in ("P", "L", "RGB", "1"):
        return _on_white(image.convert("RGBA"))
    return image.convert("RGB")


def load_crops(
    path: Path | str, bbox: cub.BBox | None, sizes: tuple[int, ...] = cub.IMAGE_SIZES
) -> list[np.ndarray]:
    """The image at ``path`` (``load_rgb``) cropped to the official box around ``bbox``
    (``cub.crop_and_resize``) or, without a box, to its centre square, resized to each of
    ``sizes``: (S, S, 3) uint8 arrays."""
    image = load_rgb(path)
    if bbox is None:
        width, height = image.size
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        image = image.crop((left, top, left + side, top + side))
        # crop_box of the whole square is the whole square: the same resizes as CUB's
        bbox = (0, 0, side, side)
    return cub.crop_and_resize(image, bbox, sizes)


def _open(path: Path | str) -> Image.Image:
    """``Image.open`` (the header only) with every failure as a one-line ``BadImage``."""
    _check_regular(path)
    try:
        with warnings.catch_warnings():
            # the size is checked below; PIL's own warning would only repeat it
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(path)
    except FileNotFoundError:
        raise BadImage("no such file") from None
    except PermissionError:
        raise BadImage("cannot be read (permission denied)") from None
    except Image.DecompressionBombError as exc:
        found = _BOMB_PIXELS.search(str(exc))
        raise BadImage(_too_large(int(found.group(1)) if found else None)) from None
    except Image.UnidentifiedImageError:
        raise BadImage("not an image file PIL can read") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise BadImage(f"cannot read the image ({_one_line(exc)})") from None
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        image.close()
        raise BadImage(_too_large(width * height, f"{width}x{height}"))
    if width <= 0 or height <= 0:
        image.close()
        raise BadImage(f"an empty image ({width}x{height})")
    return image


def _check_regular(path: Path | str) -> None:
    """``BadImage`` unless ``path`` is (or links to) a regular file: opening a FIFO would wait
    for a writer forever."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.islink(path):
            raise BadImage(f"a broken link (to {os.readlink(path)})") from None
        raise BadImage("no such file") from None
    except OSError as exc:
        raise BadImage(f"cannot be read ({exc.strerror or exc})") from None
    if stat.S_ISDIR(mode):
        raise BadImage("a folder, not an image file")
    if not stat.S_ISREG(mode):
        raise BadImage("not a regular file (a FIFO, socket or device)")


def _too_large(pixels: int | None, size: str = "") -> str:
    if pixels is None:
        found = "more pixels than PIL allows"
    else:
        found = f"{size} = {pixels:,} pixels" if size else f"{pixels:,} pixels"
    return (
        f"too large ({found}; the limit is {MAX_IMAGE_PIXELS:,}): refused without decoding "
        "it (a possible decompression bomb)"
    )


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(_ORIENTATION_TAG, 1))
    except (OSError, ValueError, SyntaxError, TypeError):
        return 1  # unreadable EXIF: the image as stored


def _grey(values: np.ndarray) -> Image.Image:
    return Image.fromarray(values.astype(np.uint8)).convert("RGB")


def _on_white(image: Image.Image) -> Image.Image:
    background = Image.new("RGBA", image.size, _WHITE)
    return Image.alpha_composite(background, image).convert("RGB")


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__
