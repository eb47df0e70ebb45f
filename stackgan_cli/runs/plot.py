"""``stackgan runs --plot FILE``: the smoothed D and G losses of several runs in one PNG.

Drawn with Pillow by the axes, series and text helpers of ``charts.py``:
two panels over the training step, D loss above and G loss below, one colour per run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont

from stackgan_cli.charts import draw_axes, draw_series, draw_text
from stackgan_cli.errors import StackGANError
from stackgan_cli.imaging import save_png
from stackgan_cli.training.metrics_file import read_metrics

PANELS = (("errD", "D loss"), ("errG", "G loss"))
PALETTE = (
    (31, 119, 180),
    (214, 39, 40),
    (44, 160, 44),
    (255, 127, 14),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (23, 190, 207),
    (188, 189, 34),
    (127, 127, 127),
)
"""One colour per run, in table order (repeats after ten runs)."""

_WIDTH = 1000
_PANEL_HEIGHT = 320
_MARGIN = (70, 30, 30, 40)  # left, top, right, bottom of each panel
_LEGEND_ROW = 20
_AXIS = (60, 60, 60)
_POINTS_PER_WINDOW = 30


def smooth(values: Sequence[float]) -> list[float]:
    """Exponential moving average (bias-corrected) whose window is about a thirtieth of the
    series: short series are drawn as they are, long ones lose their step-to-step noise."""
    window = len(values) / _POINTS_PER_WINDOW
    if window <= 1:
        return list(values)
    weight = 1.0 - 1.0 / window
    average, out = 0.0, []
    for count, value in enumerate(values, start=1):
        average = weight * average + (1.0 - weight) * value
        out.append(average / (1.0 - weight**count))
    return out


def loss_series(metrics: Sequence[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    """(step, smoothed loss) of the records that have a finite ``key`` and step."""
    raw = []
    for record in metrics:
        step, value = record.get("step"), record.get(key)
        if _finite(step) and _finite(value):
            raw.append((float(step), float(value)))
    smoothed = smooth([value for _, value in raw])
    return [(step, value) for (step, _), value in zip(raw, smoothed, strict=True)]


def draw_runs(runs: Sequence[tuple[str, Sequence[dict[str, Any]]]]) -> Image.Image:
    """The chart of ``(name, metrics records)`` pairs: a D-loss and a G-loss panel sharing the
    step axis, and a legend naming each run in its colour."""
    font = ImageFont.load_default(size=14)
    series = [{key: loss_series(metrics, key) for key, _ in PANELS} for _, metrics in runs]
    legend_height = _LEGEND_ROW * max(1, len(runs)) + 10
    height = _PANEL_HEIGHT * len(PANELS) + legend_height
    image = Image.new("RGB", (_WIDTH, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    steps = [x for run in series for points in run.values() for x, _ in points]
    xrange = (min(steps), max(steps)) if steps else (0.0, 1.0)
    for number, (key, title) in enumerate(PANELS):
        lines = [(PALETTE[i % len(PALETTE)], run[key]) for i, run in enumerate(series)]
        _panel(draw, font, number * _PANEL_HEIGHT, title, xrange, lines)
    y = _PANEL_HEIGHT * len(PANELS) + 5
    left = _MARGIN[0]
    for i, (name, _) in enumerate(runs):
        colour = PALETTE[i % len(PALETTE)]
        row = y + i * _LEGEND_ROW
        draw.line([(left, row + 8), (left + 24, row + 8)], fill=colour, width=3)
        has_losses = any(series[i][key] for key, _ in PANELS)
        label = name if has_losses else f"{name} (no losses recorded)"
        draw_text(draw, (left + 32, row), label, font, _AXIS, "left-top")
    if not runs:
        draw_text(draw, (left, y), "no runs", font, _AXIS, "left-top")
    return image


def plot_runs(records: Sequence[dict[str, Any]], out_path: Path) -> Path:
    """Chart the runs of ``records`` (from :func:`collect_runs`, in their order) from their
    metrics.jsonl files and write it to ``out_path`` atomically; returns the path."""
    runs = [
        (record["name"], read_metrics(Path(record["path"]) / "metrics.jsonl")) for record in records
    ]
    try:
        return save_png(draw_runs(runs), out_path)
    except OSError as exc:
        raise StackGANError(f"cannot write the loss chart {out_path} ({exc})") from None


def _panel(
    draw: ImageDraw.ImageDraw,
    font,
    top_y: int,
    title: str,
    xrange: tuple[float, float],
    lines: Sequence[tuple[tuple[int, int, int], list[tuple[float, float]]]],
) -> None:
    """One chart panel whose box starts ``top_y`` pixels down the image."""
    left, top, right, bottom = _MARGIN
    x0, y0, x1, y1 = left, top_y + top, _WIDTH - right, top_y + _PANEL_HEIGHT - bottom
    values = [y for _, points in lines for _, y in points]
    xmin, xmax = xrange
    ymin, ymax = (min(0.0, min(values)), max(values)) if values else (0.0, 1.0)
    xmax = xmax if xmax > xmin else xmin + 1
    ymax = ymax + 0.05 * (ymax - ymin) if ymax > ymin else ymin + 1  # headroom above the top
    to_px = draw_axes(draw, font, (x0, y0, x1, y1), (xmin, xmax), (ymin, ymax))
    draw_text(
        draw, (x0, top_y + 8), f"{title} (smoothed) over the training step", font, _AXIS, "left-top"
    )
    for colour, points in lines:
        draw_series(draw, to_px, points, colour, radius=3)


def _finite(value: Any) -> bool:
    """Whether a metrics value is a number within the float range."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an integer too large for a float
        return False
