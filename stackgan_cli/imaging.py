"""Generator outputs to pictures: uint8 arrays, captioned grids, interpolation strips, PNGs.

Images come in as float tensors (B, 3, H, W) in [-1, 1], the generators' Tanh range. Text is
drawn with Pillow's bundled default font (scalable when Pillow has FreeType), sized from the
image height so that captions stay readable beneath 64x64 sketches as well as 256x256 images.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from stackgan_cli.fsutil import atomic_file

BACKGROUND = (255, 255, 255)
TEXT_COLOUR = (20, 20, 20)
ELLIPSIS = "..."  # three dots: present in every font, the bitmap fallback included
_MAX_CAPTION_LINES = 3
_MAX_NARROW_RUN = 30
"""Most characters narrower than 1 px kept in a row: Unicode's stream-safe limit on combining
marks (UAX #15). They add (almost) no width, so without a limit a caption of them could be
endless; only such pathological runs lose characters."""

Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


def to_uint8(images: Tensor) -> Tensor:
    """Generator output in [-1, 1] -> uint8 in [0, 255], the same shape and device, as the
    official samplers save their images: ``uint8((x + 1) * 127.5)`` (truncated) after
    clamping. Every image this tool writes or scores goes through it."""
    return ((images.detach().float() + 1.0) * 127.5).clamp_(0.0, 255.0).to(torch.uint8)


def to_pixels(images: Tensor) -> np.ndarray:
    """(B, 3, H, W) floats in [-1, 1] -> (B, H, W, 3) uint8 (:func:`to_uint8`) on the CPU, as
    Pillow takes them. A single (3, H, W) image gives (H, W, 3)."""
    if images.dim() not in (3, 4) or images.shape[-3] != 3:
        raise ValueError(f"expected images of shape (B, 3, H, W), got {tuple(images.shape)}")
    return to_uint8(images).cpu().movedim(-3, -1).numpy()


def enlarge(images: Tensor, size: int) -> Tensor:
    """(..., 3, h, w) -> (..., 3, size, size) by nearest neighbour, so that a smaller output's
    pixels stay visible beside a larger one."""
    if images.shape[-1] == size and images.shape[-2] == size:
        return images
    flat = F.interpolate(images.reshape(-1, *images.shape[-3:]), size=(size, size), mode="nearest")
    return flat.reshape(*images.shape[:-2], size, size)


def side_by_side(outputs: Sequence[Tensor]) -> Tensor:
    """The outputs (..., n, 3, H_k, W_k) of the same n samples -> (..., n * K, 3, S, S): each
    sample's K outputs next to each other, enlarged to the largest side S."""
    if len(outputs) == 1:
        return outputs[0]
    size = max(images.shape[-1] for images in outputs)
    return torch.stack([enlarge(images, size) for images in outputs], dim=-4).flatten(-5, -4)


def font_for(image_height: int) -> Font:
    """The default font at a size that suits images ``image_height`` pixels tall."""
    size = int(min(20, max(11, round(image_height * 0.2))))
    return ImageFont.load_default(size=size)


def _drawable(text: str, font: Font) -> str:
    """``text`` with characters the font lacks replaced by their unaccented base letters where
    there is one (``é`` -> ``e``); others stay and show as the font's missing-glyph box."""
    if text.isascii():
        return text
    if not isinstance(font, ImageFont.FreeTypeFont):
        # Pillow's bitmap fallback font (no FreeType) only encodes Latin-1.
        return text.encode("latin-1", "replace").decode("latin-1")
    return "".join(ch if ch.isascii() else _glyph_or_base(font, ch) for ch in text)


@functools.lru_cache(maxsize=4096)
def _glyph_or_base(font: ImageFont.FreeTypeFont, ch: str) -> str:
    missing = bytes(font.getmask("\ue000"))  # a private-use code point: never in the font
    if bytes(font.getmask(ch)) != missing:
        return ch
    base = "".join(c for c in unicodedata.normalize("NFKD", ch) if not unicodedata.combining(c))
    return base if base and base.isascii() else ch


def _shown_part(text: str, font: Font, width: int, max_lines: int) -> tuple[str, bool]:
    """The drawable form (see ``_drawable``) of the start of ``text`` that ``max_lines`` lines
    of ``width`` pixels can show, and whether more followed it.

    A line holds at most ``width`` characters at least 1 px wide, so wrapping consumes at most
    ``max_lines * (width + 1)`` of them (with the spaces at the breaks); one line's worth more
    keeps the piece after the last line too wide to fit, so the lines come out as they would
    for the whole text. Narrower characters (zero-width or combining ones in some fonts) are
    not counted, but each run of them is cut to ``_MAX_NARROW_RUN``.
    """
    budget = (max_lines + 1) * (width + 1)
    head = _drawable(text[:budget], font)
    wide_chars = {ch: font.getlength(ch) >= 1 for ch in set(head)}
    if all(wide_chars.values()):
        return head, len(text) > budget
    kept: list[str] = []
    wide = run = 0
    for ch in _drawable_chars(text, font):
        if ch not in wide_chars:
            wide_chars[ch] = font.getlength(ch) >= 1
        if wide_chars[ch]:
            if wide == budget:
                return "".join(kept), True
            wide, run = wide + 1, 0
        elif run < _MAX_NARROW_RUN:
            run += 1
        else:
            continue
        kept.append(ch)
    return "".join(kept), False


def _drawable_chars(text: str, font: Font) -> Iterator[str]:
    """The characters of ``_drawable(text, font)`` one at a time, computed as they are asked
    for (so that a long text is only converted as far as it is read)."""
    for ch in text:
        yield from _drawable(ch, font)


def _label(text: str, font: Font, width: int) -> str:
    """``text`` on one line of ``width`` pixels, shortened with an ellipsis when too long."""
    shown, cut_off = _shown_part(text, font, width, 1)
    return _fit(shown, font, width, overflow=cut_off)


def _line_height(font: Font) -> int:
    if isinstance(font, ImageFont.FreeTypeFont):
        ascent, descent = font.getmetrics()
        return ascent + descent + 1
    left, top, right, bottom = font.getbbox("Ag")
    return bottom - top + 2


def _fit(text: str, font: Font, width: int, overflow: bool = False) -> str:
    """``text`` cut (with an ellipsis) so that it is at most ``width`` pixels long; with
    ``overflow`` (text followed that is not shown) the ellipsis is added even if it all fits."""
    if not overflow and font.getlength(text) <= width:
        return text
    # Binary search for the longest start of the text that fits beside the ellipsis (a longer
    # start is never shorter in pixels); no start at all fitting gives "".
    low, high = 0, len(text)
    while low < high:
        middle = (low + high + 1) // 2
        if font.getlength(text[:middle].rstrip() + ELLIPSIS) <= width:
            low = middle
        else:
            high = middle - 1
    return text[:low].rstrip() + ELLIPSIS if low else ""


def _fitting_length(word: str, font: Font, width: int) -> int:
    """Length of the longest start of ``word`` at most ``width`` pixels long, but at least 1."""
    low, high = 1, len(word)
    while low < high:
        middle = (low + high + 1) // 2
        if font.getlength(word[:middle]) <= width:
            low = middle
        else:
            high = middle - 1
    return low


def wrap_text(text: str, font: Font, width: int, max_lines: int = _MAX_CAPTION_LINES) -> list[str]:
    """Greedy word wrap of ``text`` to ``width`` pixels; words longer than a line are broken,
    and what does not fit in ``max_lines`` lines is replaced by an ellipsis."""
    width = max(width, 1)
    text, cut_off = _shown_part(" ".join(text.split()), font, width, max_lines)
    lines: list[str] = []
    current = ""
    words = text.split(" ") if text else []
    index = 0
    while index < len(words) and len(lines) < max_lines:
        word = words[index]
        candidate = f"{current} {word}" if current else word
        if font.getlength(candidate) <= width:
            current = candidate
            index += 1
        elif current:
            lines.append(current)
            current = ""
        else:
            # A single word wider than the line: break it after the last character that fits.
            cut = _fitting_length(word, font, width)
            lines.append(word[:cut])
            words[index] = word[cut:]
    if current and len(lines) < max_lines:
        lines.append(current)
        current = ""
    overflow = cut_off or index < len(words) or bool(current)
    if overflow and lines:
        rest = " ".join([lines[-1], current, *words[index:]]).strip()
        lines[-1] = _fit(rest, font, width, overflow=cut_off)
    return lines


def _text_height(lines: Sequence[str], font: Font) -> int:
    return len(lines) * _line_height(font) if lines else 0


def _draw_lines(
    draw: ImageDraw.ImageDraw, lines: Sequence[str], font: Font, x: int, y: int, width: int
) -> None:
    """Draw ``lines`` centred in the band [x, x + width) starting at height ``y``."""
    step = _line_height(font)
    for number, line in enumerate(lines):
        offset = max(0, int(round((width - font.getlength(line)) / 2)))
        draw.text((x + offset, y + number * step), line, fill=TEXT_COLOUR, font=font)


def _check_batch(images: Tensor, what: str) -> None:
    if images.dim() != 4 or images.shape[1] != 3 or images.shape[0] < 1:
        raise ValueError(
            f"{what} must have shape (n, 3, H, W) with n >= 1, got {tuple(images.shape)}"
        )


def _row_width(images: Tensor, pad: int) -> int:
    n, _, _, width = images.shape
    return n * width + (n + 1) * pad


def _paste_row(canvas: Image.Image, images: Tensor, x: int, y: int, pad: int) -> None:
    pixels = to_pixels(images)
    step = images.shape[-1] + pad
    for k, frame in enumerate(pixels):
        canvas.paste(Image.fromarray(frame, "RGB"), (x + pad + k * step, y))


def captioned_grid(rows: Sequence[Tensor], captions: Sequence[str], *, pad: int = 2) -> Image.Image:
    """One row of images per prompt with its caption printed beneath.

    ``rows[i]`` is an (n_i, 3, H_i, W_i) tensor in [-1, 1] laid out side by side; rows may differ
    in count and size (narrower rows are centred). Each caption is word-wrapped to the grid's
    width (at most three lines, the rest ellipsised) in a font sized from the tallest image.
    """
    if len(rows) != len(captions):
        raise ValueError(f"got {len(rows)} rows but {len(captions)} captions")
    if not rows:
        raise ValueError("captioned_grid needs at least one row")
    for images in rows:
        _check_batch(images, "every row")
    width = max(_row_width(images, pad) for images in rows)
    font = font_for(max(images.shape[-2] for images in rows))
    wrapped = [wrap_text(caption, font, width - 2 * pad) for caption in captions]
    gap = max(pad, 2)
    heights = [
        pad + images.shape[-2] + gap + _text_height(lines, font) + 2 * gap
        for images, lines in zip(rows, wrapped, strict=True)
    ]
    canvas = Image.new("RGB", (width, sum(heights) + pad), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    y = 0
    for images, lines, height in zip(rows, wrapped, heights, strict=True):
        x = (width - _row_width(images, pad)) // 2
        _paste_row(canvas, images, x, y + pad, pad)
        _draw_lines(draw, lines, font, pad, y + pad + images.shape[-2] + gap, width - 2 * pad)
        y += height
    return canvas


def strip(
    images: Tensor,
    labels: Sequence[str] | None = None,
    *,
    caption: str | None = None,
    pad: int = 2,
) -> Image.Image:
    """Interpolation strips: ``images`` (K, 3, H, W) is one strip of K frames, (R, K, 3, H, W)
    stacks R strips. ``labels`` (K strings, e.g. the interpolation weights) are printed once,
    each beneath its column and shortened to the column width; ``caption`` beneath it all."""
    if images.dim() == 4:
        images = images.unsqueeze(0)
    if images.dim() != 5:
        raise ValueError(
            f"strip expects (K, 3, H, W) or (R, K, 3, H, W), got {tuple(images.shape)}"
        )
    _check_batch(images[0], "each strip")
    n_rows, n_frames, _, height, frame_width = images.shape
    if labels is not None and len(labels) != n_frames:
        raise ValueError(f"got {len(labels)} labels for {n_frames} frames")
    width = _row_width(images[0], pad)
    font = font_for(height)
    label_lines = [[_label(text, font, frame_width)] for text in labels or []]
    caption_lines = wrap_text(caption, font, width - 2 * pad) if caption else []
    gap = max(pad, 2)
    label_height = (_line_height(font) + gap) if labels else 0
    caption_height = (_text_height(caption_lines, font) + gap) if caption_lines else 0
    total = (
        pad
        + n_rows * (height + pad)
        + label_height
        + caption_height
        + (gap if labels or caption_lines else 0)
    )
    canvas = Image.new("RGB", (width, total), BACKGROUND)
    draw = ImageDraw.Draw(canvas)
    y = pad
    for row in images:
        _paste_row(canvas, row, 0, y, pad)
        y += height + pad
    if labels:
        y += gap
        for k, lines in enumerate(label_lines):
            _draw_lines(draw, lines, font, pad + k * (frame_width + pad), y, frame_width)
        y += _line_height(font)
    if caption_lines:
        y += gap
        _draw_lines(draw, caption_lines, font, pad, y, width - 2 * pad)
    return canvas


def save_png(image: Image.Image | np.ndarray, path: str | Path) -> Path:
    """Write ``image`` (a PIL image or an (H, W, 3) uint8 array) as a PNG atomically; returns
    the path."""
    path = Path(path)
    if isinstance(image, np.ndarray):
        image = Image.fromarray(image, "RGB")
    with atomic_file(path, "wb") as handle:
        image.save(handle, format="PNG")
    return path
