"""Presenting an evaluation: a rich table on the terminal and the full JSON record."""

from __future__ import annotations

import json
import math
from pathlib import Path

from rich.table import Table

from stackgan_cli.console import out
from stackgan_cli.fsutil import atomic_write_text

PAPER_NOTE = (
    "The StackGAN paper's CUB Inception Score (3.70 ± 0.04) was computed with an Inception-v3 "
    "fine-tuned on CUB birds, which is not available for PyTorch. This Inception Score uses the "
    "standard ImageNet Inception-v3 (torch-fidelity's port of the 2015-12-05 TF graph), so it is "
    "on a different scale and must not be compared with 3.70; compare it only with scores "
    "computed by the same protocol (e.g. `stackgan evaluate --real` for real test images)."
)

METRIC_LABELS = {
    "inception_score": "Inception Score",
    "fid": "FID vs real test images",
    "fid_real_halves": "FID between test-split halves",
    "diversity": "diversity, same caption",
    "diversity_real_reference": "diversity, real distinct images",
}


def _number(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)
    return f"{value:.{digits}f}"


def results_table(result: dict) -> Table:
    """One row per metric: metric, value, std, samples, protocol."""
    title = "real test images" if result["mode"] == "real" else result["checkpoint"]["path"]
    table = Table(title=f"stackgan evaluate: {title}", title_justify="left")
    for column in ("metric", "value", "std", "samples", "protocol"):
        table.add_column(column, justify="right" if column in ("value", "std") else "left")
    for name, metric in result["metrics"].items():
        table.add_row(
            METRIC_LABELS.get(name, name),
            _number(metric.get("value")),
            _number(metric.get("std")),
            str(metric.get("samples", "-")),
            metric.get("protocol", ""),
        )
    return table


def write_report(path: Path, result: dict) -> None:
    """Write the JSON record atomically (indented, keys in insertion order)."""
    atomic_write_text(Path(path), json.dumps(result, indent=2, allow_nan=True) + "\n")


def print_report(result: dict, path: Path) -> None:
    """Print the table, the note on the paper's Inception Score, and where the JSON went."""
    out.print(results_table(result))
    if "inception_score" in result["metrics"]:
        out.print(f"[bold]Note:[/] {PAPER_NOTE}", highlight=False)
    protocol = result["protocol"]
    out.print(
        f"Protocol: {protocol['inception']['variant']} "
        f"(weights {protocol['inception']['weights_file']}), resolution "
        f"{protocol['resolution']}px, seed {protocol['seed']}; full record: {path}",
        highlight=False,
        soft_wrap=True,
    )
