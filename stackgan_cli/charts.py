"""Line charts drawn with Pillow, beside :mod:`stackgan_cli.imaging`: the axes, series and text
primitives that ``stackgan runs --plot`` (runs/plot.py) builds on, and a run's ``losses.png``
(D loss, G loss and KL against the training step), which training writes and serve draws.

Pillow is already a dependency; matplotlib would add tens of megabytes for a few line charts.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from stackgan_cli.imaging import save_png
from stackgan_cli.training.metrics_file import read_metrics

SERIES = (
    ("errD", "D loss", (31, 119, 180)),
    ("errG", "G loss", (214, 39, 40)),
    ("kl", "KL", (44, 160, 44)),
)
_SIZE = (960, 540)
_MARGIN = (70, 30, 30, 50)  # left, top, right, bottom
_AXIS = (60, 60, 60)
_GRID = (225, 225, 225)


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high]."""
    if high <= low:
        return [low]
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = min((m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw), default=raw)
    first = math.ceil(low / step) * step
    ticks = []
    value = first
    while value <= high + step * 1e-9:
        ticks.append(round(value, 12))
        value += step
    return ticks


def _label(value: float) -> str:
    return f"{value:.4g}" if abs(value) < 1e5 else f"{value:.2e}"


def draw_text(
    draw: ImageDraw.ImageDraw, xy: tuple[float, float], text: str, font, fill, align: str
) -> None:
    """Draw ``text`` with its anchor point at ``xy``: align is "right-middle", "middle-top",
    "middle-bottom" or "left-top" (bounding boxes, so the bitmap fallback font works too)."""
    left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
    width, height = right - left, bottom - top
    x, y = xy
    horizontal, vertical = align.split("-")
    x -= {"left": 0, "middle": width / 2, "right": width}[horizontal] + left
    y -= {"top": 0, "middle": height / 2, "bottom": height}[vertical] + top
    draw.text((x, y), text, fill=fill, font=font)


def draw_axes(
    draw: ImageDraw.ImageDraw,
    font,
    box: tuple[float, float, float, float],
    xrange: tuple[float, float],
    yrange: tuple[float, float],
) -> Callable[[float, float], tuple[float, float]]:
    """Grid lines, labelled ticks and the frame of a chart occupying ``box`` (x0, y0, x1, y1)
    for data in ``xrange`` x ``yrange``; returns the data-to-pixel mapping."""
    x0, y0, x1, y1 = box
    (xmin, xmax), (ymin, ymax) = xrange, yrange

    def to_px(x: float, y: float) -> tuple[float, float]:
        return (
            x0 + (x - xmin) / (xmax - xmin) * (x1 - x0),
            y1 - (y - ymin) / (ymax - ymin) * (y1 - y0),
        )

    for tick in _ticks(ymin, ymax):
        _, py = to_px(xmin, tick)
        draw.line([(x0, py), (x1, py)], fill=_GRID)
        draw_text(draw, (x0 - 8, py), _label(tick), font, _AXIS, "right-middle")
    for tick in _ticks(xmin, xmax):
        px, _ = to_px(tick, ymin)
        draw.line([(px, y1), (px, y1 + 4)], fill=_AXIS)
        draw_text(draw, (px, y1 + 6), _label(tick), font, _AXIS, "middle-top")
    draw.rectangle([x0, y0, x1, y1], outline=_AXIS)
    return to_px


def draw_series(
    draw: ImageDraw.ImageDraw,
    to_px: Callable[[float, float], tuple[float, float]],
    points: Sequence[tuple[float, float]],
    colour: tuple[int, int, int],
    *,
    radius: int,
) -> None:
    """A line through ``points`` (a dot of ``radius`` when there is only one)."""
    if len(points) > 1:
        draw.line([to_px(x, y) for x, y in points], fill=colour, width=2)
    elif points:
        px, py = to_px(*points[0])
        draw.ellipse([px - radius, py - radius, px + radius, py + radius], fill=colour)


def draw_losses(records: Sequence[dict], title: str = "") -> Image.Image:
    """A line chart of the SERIES over ``step``; records whose step or value is not a finite
    number are left out."""
    image = Image.new("RGB", _SIZE, (255, 255, 255))
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=14)  # the bitmap font where Pillow lacks FreeType
    left, top, right, bottom = _MARGIN
    x0, y0, x1, y1 = left, top, _SIZE[0] - right, _SIZE[1] - bottom
    points = {
        key: [
            (float(r["step"]), float(r[key]))
            for r in records
            if _finite_number(r.get("step")) and _finite_number(r.get(key))
        ]
        for key, _, _ in SERIES
    }
    xs = [x for series in points.values() for x, _ in series]
    ys = [y for series in points.values() for _, y in series]
    if not xs:
        draw_text(draw, (x0, y0), "no finite losses recorded", font, _AXIS, "left-top")
        return image
    xmin, xmax = min(xs), max(xs)
    ymin, ymax = min(0.0, min(ys)), max(ys)
    if xmax == xmin:
        xmax = xmin + 1
    if ymax == ymin:
        ymax = ymin + 1

    to_px = draw_axes(draw, font, (x0, y0, x1, y1), (xmin, xmax), (ymin, ymax))
    draw_text(draw, ((x0 + x1) / 2, _SIZE[1] - 8), "step", font, _AXIS, "middle-bottom")
    if title:
        draw_text(draw, (x0, 8), title, font, _AXIS, "left-top")
    legend_x = x1 - 10
    for key, name, colour in reversed(SERIES):
        draw_series(draw, to_px, points[key], colour, radius=2)
        width = draw.textbbox((0, 0), name, font=font)[2]
        draw_text(draw, (legend_x - width, y0 + 6), name, font, colour, "left-top")
        legend_x -= width + 16
    return image


def _finite_number(value: object) -> bool:
    """Whether a metrics value is a number within the float range (records of other
    versions or damaged files may hold anything)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False


def plot_losses(metrics_path: Path, out_path: Path, title: str = "") -> Path:
    """Read ``metrics.jsonl`` and write the chart to ``out_path`` (atomically)."""
    return save_png(draw_losses(read_metrics(metrics_path), title), out_path)
