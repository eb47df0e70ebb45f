"""The checks every file loader shares: that a user's path names a regular file (before it is
opened), and a stored file's format tag and version."""

from __future__ import annotations

import os
import stat
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from stackgan_cli.errors import StackGANError

CHECKPOINT_FORMAT = "stackgan-checkpoint"
"""The format tag of training checkpoints (training/checkpoint.py), named here so that the
lower layers can recognise a checkpoint given where a generator file is expected."""


def check_format(
    data: Any,
    *,
    tag: str | None,
    versions: Collection[int],
    where: str,
    what: str,
    remedy: str = "",
) -> int:
    """Return the ``format_version`` of ``data`` when this stackgan reads it.

    ``data`` must be a mapping whose ``"format"`` entry equals ``tag`` (skipped when ``tag`` is
    None, for files named by their place rather than a tag) and whose ``"format_version"`` is
    one of ``versions``. Otherwise StackGANError: "``where`` is not a ``what``", or the version
    found and the versions read; either followed by ``remedy`` when given.
    """
    if not isinstance(data, Mapping) or (tag is not None and data.get("format") != tag):
        message = f"{where} is not a {what}"
    else:
        version = data.get("format_version")
        if not isinstance(version, bool) and version in versions:
            return int(version)
        readable = " or ".join(str(v) for v in sorted(versions))
        message = f"{where} has {what} format version {version!r}; this stackgan reads {readable}"
    raise StackGANError(f"{message}; {remedy}" if remedy else message)


def check_regular_file(path: str | Path, where: str) -> Path:
    """Return ``path`` when it is (or links to) a regular file; otherwise StackGANError
    "``where`` does not exist", "... is a folder, not a file" or "... is not a regular file".

    Checked with ``os.stat`` before anything opens the file, so a FIFO or a device never
    blocks the reader. ``where`` names the file in the message (the option and the path).
    """
    path = Path(path)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if os.path.lexists(path):
            raise StackGANError(f"{where} is a broken symbolic link") from None
        raise StackGANError(f"{where} does not exist") from None
    except OSError as exc:
        raise StackGANError(f"{where} cannot be read: {exc.strerror or exc}") from None
    if stat.S_ISDIR(mode):
        raise StackGANError(f"{where} is a folder, not a file")
    if not stat.S_ISREG(mode):
        raise StackGANError(f"{where} is not a regular file ({_kind(mode)})")
    return path


def _kind(mode: int) -> str:
    """What a non-regular, non-folder file is, for messages."""
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "a special file"
