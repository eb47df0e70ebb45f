"""Unpacking .tgz/.tar.gz/.tar and .zip archives without letting any member escape its folder.

Every member is checked before anything is written: absolute paths, ``..`` components, links
(symbolic or hard) and special files (devices, FIFOs) are refused. Only regular files and
folders are written, by this module itself rather than by ``tarfile``/``zipfile`` extraction,
so no member can create a link or set odd permissions.
"""

import gzip
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import IO

from stackgan_cli.errors import StackGANError
from stackgan_cli.fsutil import atomic_dir

CHUNK_BYTES = 1 << 20
_TAR_SUFFIXES = (".tgz", ".tar.gz", ".tar")
_DRIVE_LETTER = re.compile(r"^[A-Za-z]:")
# What reading a damaged archive raises, from tarfile, zipfile and the decompressors below them.
_DAMAGED = (tarfile.TarError, zipfile.BadZipFile, EOFError, zlib.error, gzip.BadGzipFile)


def safe_extract(archive: Path, target: Path, *, root: str | None = None) -> None:
    """Unpack ``archive`` (.tgz, .tar.gz, .tar or .zip) so that ``target`` holds its contents.

    The archive is unpacked into a temporary folder beside ``target``, which then replaces
    ``target`` in one rename; on any error nothing changes. With ``root``, only the archive's
    top-level folder of that name is unpacked, its contents landing directly in ``target``
    (``safe_extract(tgz, raw / "CUB_200_2011", root="CUB_200_2011")``). Unsafe members, a
    damaged archive, or a missing ``root`` raise ``StackGANError``.
    """
    archive, target = Path(archive), Path(target)
    if not archive.is_file():
        raise StackGANError(f"archive not found: {archive}")
    name = archive.name.lower()
    if name.endswith(".zip"):
        extract = _extract_zip
    elif name.endswith(_TAR_SUFFIXES):
        extract = _extract_tar
    else:
        raise StackGANError(f"{archive}: unsupported archive type (expected .tgz, .tar or .zip)")
    try:
        with atomic_dir(target) as staging:
            if not extract(archive, staging, root):
                raise StackGANError(f"{archive} has no top-level folder {root}/")
    except _DAMAGED as exc:
        raise StackGANError(f"{archive} is truncated or corrupt ({exc})") from exc


def _extract_tar(archive: Path, dest: Path, root: str | None) -> bool:
    """Unpack a tar archive into ``dest``; whether anything matched ``root``."""
    found = root is None
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            if member.issym() or member.islnk():
                _refuse(archive, member.name, f"is a link to {member.linkname!r}")
            if not (member.isfile() or member.isdir()):
                _refuse(archive, member.name, "is a device, FIFO or other special file")
            parts = _member_parts(archive, member.name, root)
            if parts is None:
                continue
            found = True
            if member.isdir():
                dest.joinpath(*parts).mkdir(parents=True, exist_ok=True)
            elif parts:
                _write_file(dest, parts, tar.extractfile(member))
    return found


def _extract_zip(archive: Path, dest: Path, root: str | None) -> bool:
    """Unpack a zip archive into ``dest``; whether anything matched ``root``."""
    found = root is None
    with zipfile.ZipFile(archive) as bundle:
        for info in bundle.infolist():
            mode = info.external_attr >> 16  # Unix mode bits, when the creator recorded them
            if stat.S_ISLNK(mode):
                _refuse(archive, info.filename, "is a symbolic link")
            if stat.S_IFMT(mode) and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                _refuse(archive, info.filename, "is a device, FIFO or other special file")
            if info.flag_bits & 0x1:
                _refuse(archive, info.filename, "is encrypted")
            parts = _member_parts(archive, info.filename, root)
            if parts is None:
                continue
            found = True
            if info.is_dir():
                dest.joinpath(*parts).mkdir(parents=True, exist_ok=True)
            elif parts:
                _write_file(dest, parts, bundle.open(info))
    return found


def _member_parts(archive: Path, name: str, root: str | None) -> tuple[str, ...] | None:
    """The path components to write ``name`` at, relative to the destination; ``None`` when
    the member lies outside ``root``. Refuses absolute paths and ``..`` components."""
    posix = name.replace("\\", "/")  # zips made on Windows may use backslashes
    path = PurePosixPath(posix)
    if path.is_absolute() or _DRIVE_LETTER.match(posix):
        _refuse(archive, name, "has an absolute path")
    if ".." in path.parts:
        _refuse(archive, name, "has a '..' component that points outside the archive")
    parts = path.parts
    if root is not None:
        if not parts or parts[0] != root:
            return None
        parts = parts[1:]
    return parts


def _write_file(dest: Path, parts: tuple[str, ...], source: IO[bytes] | None) -> None:
    path = dest.joinpath(*parts)
    path.parent.mkdir(parents=True, exist_ok=True)
    if source is None:  # tarfile found no data for a regular member
        raise tarfile.ReadError(f"no data for member {'/'.join(parts)}")
    with source, open(path, "wb") as handle:
        shutil.copyfileobj(source, handle, CHUNK_BYTES)


def _refuse(archive: Path, member: str, why: str) -> None:
    raise StackGANError(f"{archive}: refusing to unpack member {member!r}, which {why}")
