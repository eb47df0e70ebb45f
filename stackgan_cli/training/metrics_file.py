"""Reading ``metrics.jsonl`` back (the training loop appends one JSON object per logging
point) and the other small files of a run folder; torch-free, so listing runs stays fast.

Every read here is bounded and never blocks: only regular files are read (a named pipe or a
device in a run folder would wait forever or never end), a small file only up to a size limit,
the last metrics record from the end of the file, and the records of a chart from at most
:data:`READ_BYTES` of it however long the run.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

MAX_LINE_BYTES = 64 * 1024
"""The longest metrics line read as a record (the loop writes a few hundred bytes a line);
longer lines are foreign and skipped."""

TAIL_BYTES = 4 * 1024 * 1024
"""How far back from the end of metrics.jsonl :func:`last_record` looks for a record."""

READ_BYTES = 4 * 1024 * 1024
"""The most that :func:`read_metrics` reads of one file."""

MAX_RECORDS = 20_000
"""The most records :func:`read_metrics` returns (a chart is a thousand pixels wide); beyond
that every second one is dropped, as often as needed."""

_BLOCK = 64 * 1024


class NotRegularFile(OSError):
    """The path is a folder, a named pipe, a device or a socket, not a file to read."""


class FileTooLarge(OSError):
    """The file is larger than its reader accepts."""


def open_regular(path: Path) -> IO[bytes]:
    """``path`` open for reading bytes, if it is (or links to) a regular file.

    The file is opened without blocking (``O_NONBLOCK``: a named pipe with no writer cannot
    hang the caller) and then checked with ``fstat`` (no race with a rename): anything but a
    regular file raises :class:`NotRegularFile`. Missing or unreadable files raise the
    ``OSError`` of ``os.open`` (``FileNotFoundError``, ``PermissionError``, ...)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(f"not a regular file ({_kind(mode)})")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_limited(path: Path, limit: int) -> bytes:
    """The bytes of the regular file ``path`` (see :func:`open_regular`); :class:`FileTooLarge`
    if it holds more than ``limit`` bytes (only ``limit + 1`` are ever read)."""
    with open_regular(path) as handle:
        data = handle.read(limit + 1)
    if len(data) > limit:
        raise FileTooLarge(f"too large (over {_size(limit)})")
    return data


def last_record(path: Path, problems: list[str] | None = None) -> dict[str, Any] | None:
    """The last JSON-object line of a metrics.jsonl file, read back from its end in blocks: a
    torn last line (a run killed while writing it), foreign or over-long lines are passed over
    for the record before them. Looks back at most :data:`TAIL_BYTES`. None, with a note in
    ``problems``, when the file is missing, unreadable or holds no record there."""
    path = Path(path)
    try:
        with open_regular(path) as handle:
            size = os.fstat(handle.fileno()).st_size
            for line in _lines_backwards(handle, size, TAIL_BYTES):
                record = _record(line)
                if record is not None:
                    return record
    except OSError as exc:
        _note(problems, path, exc)
        return None
    if size > TAIL_BYTES:
        _note(problems, path, f"holds no record in its last {_size(TAIL_BYTES)}")
    else:
        _note(problems, path, "holds no records yet")
    return None


def read_metrics(
    path: Path, problems: list[str] | None = None, *, max_bytes: int = READ_BYTES
) -> list[dict[str, Any]]:
    """The JSON-object lines of a metrics.jsonl file, in file order; torn, foreign, over-long or
    non-object lines are skipped. A file larger than ``max_bytes`` is sampled: evenly spaced
    windows of it, its first and last among them, ``max_bytes`` in all, so that a chart of
    the records still spans the whole run; at most :data:`MAX_RECORDS` records come back. A
    missing or unreadable file gives [] (and a note in ``problems``)."""
    path = Path(path)
    kept: list[dict[str, Any]] = []
    stride, seen = 1, 0
    try:
        with open_regular(path) as handle:
            size = os.fstat(handle.fileno()).st_size
            for line in _sampled_lines(handle, size, max_bytes):
                record = _record(line)
                if record is None:
                    continue
                if seen % stride == 0:
                    kept.append(record)
                    if len(kept) > MAX_RECORDS:
                        kept, stride = kept[::2], stride * 2
                seen += 1
    except OSError as exc:
        _note(problems, path, exc)
        return []
    return kept


def _sampled_lines(handle: IO[bytes], size: int, max_bytes: int) -> Iterator[bytes]:
    """The complete lines of the whole file (``size`` <= ``max_bytes``) or of evenly spaced
    windows of it; a window's first and last partial lines are dropped."""
    if size <= max_bytes:
        spans = [(0, size)]
    else:
        count = max(2, max_bytes // _BLOCK)
        width = max_bytes // count  # count * width <= max_bytes < size: windows never overlap
        spans = [(i * (size - width) // (count - 1), width) for i in range(count)]
    for start, width in spans:
        handle.seek(start)
        data = handle.read(width)
        lines = data.split(b"\n")
        if start > 0:  # the window starts inside a line
            lines = lines[1:]
        if start + len(data) < size:  # and ends inside one
            lines = lines[:-1]
        yield from lines


def _lines_backwards(handle: IO[bytes], size: int, limit: int) -> Iterator[bytes]:
    """The lines of the last ``limit`` bytes of the file, last first, without newlines; a line
    longer than :data:`MAX_LINE_BYTES` is left out whole (never held in memory)."""
    position, partial, overlong = size, b"", False
    while position > 0 and size - position < limit:
        width = min(_BLOCK, position)
        position -= width
        handle.seek(position)
        block = handle.read(width)
        if len(block) != width:  # truncated while being read (a resumed run)
            return
        pieces = block.split(b"\n")
        if overlong:
            if len(pieces) == 1:  # still inside the over-long line
                continue
            lines, overlong = pieces[1:-1], False  # the last piece starts the over-long line
        else:
            pieces[-1] += partial
            lines = pieces[1:]
        yield from reversed(lines)
        partial = pieces[0]
        if len(partial) > MAX_LINE_BYTES:
            partial, overlong = b"", True
    if overlong:
        return
    if position > 0:  # stopped at the limit: ``partial`` is a line if a newline precedes it
        handle.seek(position - 1)
        if handle.read(1) != b"\n":
            return
    yield partial


def _record(line: bytes) -> dict[str, Any] | None:
    """The JSON object on ``line``, or None for anything else (deep nesting included)."""
    if not line.strip() or len(line) > MAX_LINE_BYTES:
        return None
    try:
        value = json.loads(line.decode("utf-8", errors="replace"))
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


def _note(problems: list[str] | None, path: Path, what: OSError | str) -> None:
    if problems is None:
        return
    if isinstance(what, FileNotFoundError):
        what = "is missing"
    elif isinstance(what, (NotRegularFile, FileTooLarge)):
        what = f"is {what}"
    elif isinstance(what, OSError):
        what = f"is unreadable ({what.strerror or what})"
    problems.append(f"{path.name} {what}")


def _kind(mode: int) -> str:
    """What a file that is not a regular one is, for messages."""
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"


def _size(count: int) -> str:
    return f"{count // 2**20} MiB" if count >= 2**20 else f"{count} bytes"
