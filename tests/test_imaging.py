"""Pictures from generator outputs: pixel mapping, captioned grids, strips, atomic PNGs."""

import numpy as np
import pytest
import torch
from PIL import Image, ImageFont

from stackgan_cli.imaging import (
    captioned_grid,
    font_for,
    save_png,
    strip,
    to_pixels,
    to_uint8,
    wrap_text,
)


def _solid(n: int, size: int, value: float) -> torch.Tensor:
    return torch.full((n, 3, size, size), value)


def test_to_pixels_maps_range_clamps_and_truncates_as_the_official_sampler():
    images = (
        torch.tensor([-1.0, -0.5, 0.0, 0.999, 1.0, 3.0, -7.0]).view(1, 1, 1, 7).repeat(2, 3, 1, 1)
    )
    pixels = to_pixels(images)
    assert pixels.dtype == np.uint8
    assert pixels.shape == (2, 1, 7, 3)
    # uint8((x + 1) * 127.5) after clamping: 63.75 -> 63, 127.5 -> 127, 254.87 -> 254
    assert pixels[0, 0, :, 0].tolist() == [0, 63, 127, 254, 255, 255, 0]
    assert np.array_equal(pixels, to_uint8(images).movedim(1, -1).numpy())
    assert to_pixels(images[0]).shape == (1, 7, 3)
    with pytest.raises(ValueError):
        to_pixels(torch.zeros(2, 1, 4, 4))


def test_grid_places_rows_and_captions():
    pad = 2
    rows = [_solid(4, 64, 1.0), _solid(4, 64, -1.0)]  # white row, black row
    grid = captioned_grid(rows, ["a white square", "a black square"], pad=pad)
    assert grid.width == 4 * 64 + 5 * pad
    pixels = np.asarray(grid)
    # First image of the first row is white, of the second row black (below the caption band).
    assert (pixels[pad : pad + 64, pad : pad + 64] == 255).all()
    black_rows = np.where((pixels[:, pad + 10] == 0).all(axis=1))[0]
    assert black_rows.size == 64
    # A caption band of dark text lies between the two image rows.
    band = pixels[pad + 64 : black_rows[0]]
    assert band.shape[0] >= 10
    assert (band < 128).any()


def test_grid_accepts_rows_of_different_sizes_and_counts():
    grid = captioned_grid([_solid(2, 256, 0.0), _solid(5, 64, 0.0)], ["big", "small"], pad=1)
    assert grid.width == max(2 * 256 + 3, 5 * 64 + 6)
    assert grid.height > 256 + 64


def test_grid_rejects_mismatched_captions():
    with pytest.raises(ValueError):
        captioned_grid([_solid(1, 8, 0.0)], [])
    with pytest.raises(ValueError):
        captioned_grid([torch.zeros(3, 8, 8)], ["x"])


def test_wrap_text_fits_width_and_ellipsises():
    font = font_for(64)
    text = "this small bird has a bright yellow belly and dark wings with white wing bars " * 5
    lines = wrap_text(text, font, 120, max_lines=3)
    assert len(lines) == 3
    assert all(font.getlength(line) <= 120 for line in lines)
    assert lines[-1].endswith("...")
    assert wrap_text("short", font, 120) == ["short"]
    assert wrap_text("", font, 120) == []
    broken = wrap_text("x" * 200, font, 50, max_lines=100)
    assert all(font.getlength(line) <= 50 for line in broken)
    assert "".join(broken) == "x" * 200


def test_unicode_captions_render():
    font = font_for(64)  # the font captioned_grid uses beneath 64 px images
    missing = bytes(font.getmask("\ue000"))  # a private-use code point: in no font

    def band(caption: str) -> np.ndarray:
        """The caption band beneath one white 64 px image (2 px padding)."""
        return np.asarray(captioned_grid([_solid(1, 64, 1.0)], [caption]))[66:]

    box = band("caf\ue000")  # the missing-glyph box where the accented letter goes
    for accented, base in [("é", "e"), ("ü", "u"), ("ï", "i"), ("ç", "c"), ("ñ", "n")]:
        drawn = band(f"caf{accented}")
        assert (drawn < 128).any(), accented
        assert not np.array_equal(drawn, box), accented
        if bytes(font.getmask(accented)) != missing:  # the font has it: drawn, accent and all
            assert not np.array_equal(drawn, band(f"caf{base}")), accented
        else:  # it lacks it: the base letter stands in
            assert np.array_equal(drawn, band(f"caf{base}")), accented
    # Every word of a mixed caption leaves ink: more than its last word alone.
    whole, last = band("café ünïcødé 中文 — bird"), band("bird")
    assert (whole < 128).sum() > 2 * (last < 128).sum()


def test_strip_layout_with_labels_and_caption():
    frames = _solid(6, 64, 0.0)
    single = strip(frames)
    assert single.size == (6 * 64 + 7 * 2, 64 + 2 * 2)
    stacked = strip(
        torch.stack([frames, frames, frames]), [f"{t:.1f}" for t in range(6)], caption="a -> b"
    )
    assert stacked.width == single.width
    assert stacked.height > 3 * 64 + 4 * 2
    with pytest.raises(ValueError):
        strip(frames, ["only one label"])


def test_save_png_is_atomic_and_readable(tmp_path):
    target = tmp_path / "sub" / "grid.png"
    image = captioned_grid([_solid(2, 16, 0.5)], ["grey"])
    assert save_png(image, target) == target
    with Image.open(target) as loaded:
        assert loaded.size == image.size
        assert loaded.format == "PNG"
    save_png(to_pixels(_solid(1, 16, 1.0))[0], tmp_path / "one.png")
    assert np.asarray(Image.open(tmp_path / "one.png")).min() == 255
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["grid.png", "one.png", "sub"]


class _CountingFont(ImageFont.FreeTypeFont):
    """A real font that counts its ``getlength`` calls and the characters they measure, and
    fails as soon as they measure more than ``limit`` characters (so that a quadratic wrap
    fails fast instead of running for minutes)."""

    def __init__(self, font: ImageFont.FreeTypeFont, limit: int = 200_000) -> None:
        self.__dict__.update(font.__dict__)
        self.calls = 0
        self.measured = 0
        self.limit = limit

    def getlength(self, text, *args, **kwargs):
        self.calls += 1
        self.measured += len(text)
        if self.measured > self.limit:
            raise AssertionError(f"measured {self.measured} characters in {self.calls} calls")
        return super().getlength(text, *args, **kwargs)


class _ZeroWidthSpaceFont(_CountingFont):
    """A counting font in which U+200B (zero width space) has no width, as in many fonts."""

    def getlength(self, text, *args, **kwargs):
        return super().getlength(text.replace("\u200b", ""), *args, **kwargs)


def _counted_wrap(text: str, width: int) -> tuple[list[str], _CountingFont]:
    font = _CountingFont(font_for(64))
    return wrap_text(text, font, width), font


def test_wrap_text_cost_does_not_grow_with_the_caption():
    lines, small = _counted_wrap("a red circle " * 80, 530)  # 1 KB
    huge_lines, huge = _counted_wrap("a red circle " * 80_000, 530)  # 1 MB
    assert huge_lines == lines
    assert len(lines) == 3 and lines[-1].endswith("...")
    assert huge.calls <= small.calls + 4
    assert huge.measured <= 2 * small.measured
    # One word longer than everything that can be shown is broken the same way.
    broken, small = _counted_wrap("x" * 1_000, 100)
    huge_broken, huge = _counted_wrap("x" * 10**6, 100)
    assert huge_broken == broken
    assert broken[-1].endswith("...")
    assert huge.calls <= small.calls + 4


def test_wrap_text_bounds_zero_width_characters():
    plain, plain_font = _counted_wrap("a red circle " * 80, 530)
    font = _ZeroWidthSpaceFont(font_for(64))
    lines = wrap_text("a" + "\u200b" * 10**6 + " red circle a" * 80_000, font, 530)
    assert [line.replace("\u200b", "") for line in lines] == plain
    assert 0 < "".join(lines).count("\u200b") <= 30
    assert font.calls <= plain_font.calls + 4
    assert font.measured <= 2 * plain_font.measured
