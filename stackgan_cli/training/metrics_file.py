"""Reading ``metrics.jsonl`` back (the training loop appends one JSON object per logging
point); torch-free, so listing runs stays fast."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_metrics(path: Path, problems: list[str] | None = None) -> list[dict[str, Any]]:
    """The JSON-object lines of a metrics.jsonl file; torn, foreign or non-object lines are
    skipped. A missing or unreadable file gives [] (and a note in ``problems``)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        if problems is not None:
            problems.append("metrics.jsonl is missing")
        return []
    except OSError as exc:
        if problems is not None:
            problems.append(f"metrics.jsonl is unreadable ({exc.strerror or exc})")
        return []
    records = []
    for line in text.splitlines():
        try:
            value = json.loads(line)
        except ValueError:
            continue
        if isinstance(value, dict):
            records.append(value)
    return records
