"""What the commands print: result tables and summary lines, in one place.

Commands call these with what the library returned; nothing here computes results.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich import box
from rich.markup import escape
from rich.table import Table

from stackgan_cli.console import err, info, out
from stackgan_cli.evaluation.report import PAPER_NOTE

# --- prepare ---------------------------------------------------------------------------------


def print_prepare(result: Any, name: str) -> None:
    """The one-line no-op notice, or the summary tables of a finished prepare."""
    if result.already_prepared:
        note = f" {result.note}" if result.note else ""
        info(
            f"{name} is already prepared at {result.root} (use --force to prepare it again)." + note
        )
        return
    for renderable in prepare_summary(result):
        out.print(renderable)


def prepare_summary(result: Any) -> list:
    """Counts per split, disk size and time; the text encoder's scores against baselines."""
    from rich.table import Table

    metadata = result.metadata
    table = Table(title=f"Prepared {metadata['dataset']}", title_justify="left")
    for column in ("split", "images", "classes", "captions"):
        table.add_column(column, justify="left" if column == "split" else "right")
    for split, counts in metadata["splits"].items():
        table.add_row(
            split, f"{counts['images']:,}", f"{counts['classes']:,}", f"{counts['captions']:,}"
        )
    renderables: list = [
        table,
        f"{_size(metadata['bytes'])} in {result.root}, prepared in {result.seconds:.1f} s",
    ]

    report = metadata.get("text_encoder")
    encoder = Table(title="Text encoder (mean cosine to the test embeddings)", title_justify="left")
    encoder.add_column("predictor")
    encoder.add_column("cosine", justify="right")
    if report:
        encoder.add_row("[bold]trained text encoder[/]", f"[bold]{report['test_cosine']:.3f}[/]")
        encoder.add_row(
            "baseline: mean embedding", f"{report['baseline_mean_embedding_cosine']:.3f}"
        )
        encoder.add_row(
            "baseline: nearest caption", f"{report['baseline_nearest_caption_cosine']:.3f}"
        )
        renderables.append(encoder)
    elif metadata.get("text_dim") == 0:
        renderables.append(
            "Text embeddings: none, captions only; train a DAMSM on it for them "
            f"(stackgan train --arch damsm --dataset {metadata['dataset']})."
        )
    else:
        renderables.append("Text encoder: not trained (--no-text-encoder).")
    return renderables


def _size(num_bytes: float) -> str:
    for unit in ("B", "KB", "MB"):
        if num_bytes < 1000:
            return f"{num_bytes:.0f} {unit}" if unit == "B" else f"{num_bytes:.1f} {unit}"
        num_bytes /= 1000
    return f"{num_bytes:.1f} GB"


# --- train and resume -------------------------------------------------------------------------


def print_training_result(result: Any) -> None:
    """Where a finished (or already complete) run left its files."""
    if result.already_complete:
        err.print(
            f"{result.run_dir} has already trained {result.epochs} epochs; pass --epochs N "
            "to train further",
            highlight=False,
            soft_wrap=True,
        )
    out.print(f"run directory: {result.run_dir}", highlight=False, soft_wrap=True)
    out.print(f"{result.file_label}: {result.generator_path}", highlight=False, soft_wrap=True)
    if result.out is not None:
        out.print(f"copied to: {result.out}", highlight=False, soft_wrap=True)


def print_training_stopped(stop: Any) -> None:
    """Where a stopped run saved its state and how to continue it."""
    err.print(
        f"[yellow]stopped[/] {stop.where(stop.epoch, stop.step)}; saved "
        f"{escape(str(stop.run_dir / 'checkpoints' / 'last.pt'))}\n"
        f"continue with: stackgan resume {escape(str(stop.run_dir))}",
        highlight=False,
        soft_wrap=True,
    )


# --- evaluate ----------------------------------------------------------------------------------

METRIC_LABELS = {
    "inception_score": "Inception Score",
    "fid": "FID vs real test images",
    "fid_real_halves": "FID between test-split halves",
    "diversity": "diversity, same caption",
    "diversity_real_reference": "diversity, real distinct images",
    "r_precision": "R-precision (DAMSM, 1 in 100)",
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


def print_evaluation(result: dict, path: Path) -> None:
    """Print the table, the notes on the paper's Inception Score and on R-precision, and the
    protocol line with where the JSON went."""
    out.print(results_table(result))
    if "inception_score" in result["metrics"]:
        out.print(f"[bold]Note:[/] {PAPER_NOTE}", highlight=False)
    if "r_precision" in result["metrics"]:
        from stackgan_cli.evaluation.report import R_PRECISION_NOTE

        out.print(f"[bold]Note:[/] {R_PRECISION_NOTE}", highlight=False)
    protocol = result["protocol"]
    parts = []
    if protocol.get("inception") is not None:
        inception = protocol["inception"]
        parts.append(f"{inception['variant']} (weights {inception['weights_file']})")
    damsm = (protocol.get("r_precision") or {}).get("damsm")
    if damsm:
        parts.append(f"DAMSM {damsm}")
    parts.append(f"resolution {protocol['resolution']}px, seed {protocol['seed']}")
    out.print(f"Protocol: {', '.join(parts)}; full record: {path}", highlight=False, soft_wrap=True)


# --- runs --------------------------------------------------------------------------------------

_EVAL_LABELS = {"inception_score": "IS", "fid": "FID", "diversity": "div", "r_precision": "R-prec"}


def runs_table(records: Sequence[dict[str, Any]], title: str | None = None) -> Table:
    """One row per run: name (and its problems), model, dataset, regime (one changed option
    per line), epochs done / planned and training time, the last D / G / KL losses and the
    latest evaluation. Multi-line cells keep it readable in 80 columns."""
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False)
    table.add_column("run", overflow="fold", min_width=12)
    table.add_column("model", min_width=7)
    table.add_column("dataset", overflow="fold", min_width=5)
    table.add_column("regime", overflow="fold", min_width=8)
    table.add_column("epochs", justify="right", no_wrap=True)
    table.add_column("losses", no_wrap=True)
    table.add_column("eval", no_wrap=True)
    for record in records:
        name = escape(record["name"])
        if record["problems"]:
            name += "\n[red]" + escape("; ".join(record["problems"])) + "[/]"
        table.add_row(
            name,
            escape(_model(record)),
            escape(record["dataset"] or "?"),
            escape(format_regime(record["regime"], "\n")),
            f"{_epochs(record)}\n{format_seconds(record['time_s'])}",
            _losses(record),
            escape(_evaluation(record["evaluation"])),
        )
    return table


def format_regime(regime: dict[str, Any], separator: str = ", ") -> str:
    """``{"batch_size": 16}`` -> ``batch-size 16`` (the option names); "defaults" if empty."""
    if not regime:
        return "defaults"
    return separator.join(
        f"{name.replace('_', '-')} {_value(value)}" for name, value in regime.items()
    )


def format_seconds(seconds: float | None) -> str:
    """``75.2`` -> ``1:15``, ``3725`` -> ``1:02:05``; "-" when unknown."""
    if seconds is None:
        return "-"
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _model(record: dict[str, Any]) -> str:
    label = record["model"] or "?"
    widths = record["model_config"] or {}
    dims = [f"{key[:2]} {widths[key]}" for key in ("gf_dim", "df_dim") if key in widths]
    return f"{label}\n{' '.join(dims)}" if dims else label


def _epochs(record: dict[str, Any]) -> str:
    done, planned = record["epochs_done"], record["epochs_planned"]
    if done is None and planned is None:
        return "-"
    return f"{'-' if done is None else done}/{'?' if planned is None else planned}"


def _losses(record: dict[str, Any]) -> str:
    values = {"D": record["d_loss"], "G": record["g_loss"], "KL": record["kl"]}
    if all(value is None for value in values.values()):
        return "-"
    return "\n".join(
        f"{name} {'-' if value is None else f'{value:.3f}'}" for name, value in values.items()
    )


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, bool) or value is None:
        return json.dumps(value)
    return str(value)


def _evaluation(evaluation: dict[str, Any] | None) -> str:
    if not evaluation:
        return "-"
    parts = [
        f"{label} {evaluation['metrics'][name]:.2f}"
        for name, label in _EVAL_LABELS.items()
        if evaluation["metrics"].get(name) is not None
    ]
    if evaluation.get("size"):
        parts.append(f"at {evaluation['size']} px")
    return "\n".join(parts) or "evaluated"
