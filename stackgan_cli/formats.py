"""The one check of a stored file's format tag and version, shared by every file loader."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from stackgan_cli.errors import StackGANError


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
