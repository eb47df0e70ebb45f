"""Files on disk: atomic writes (a crash or a kill never leaves a half-written file in place),
hashing, and the lock that gives a folder one owner process at a time."""

import contextlib
import hashlib
import os
import shutil
import socket
import sys
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from stackgan_cli.errors import StackGANError


def fsync_dir(path: Path) -> None:
    """Flush a directory entry (after a rename) to disk where the OS allows it."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary sibling of ``path`` for writing; on success fsync and rename it over
    ``path``. On any error the temporary file is removed and ``path`` is left untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, mode) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file atomically."""
    with atomic_file(path, "w") as handle:
        handle.write(text)


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, fsync, then rename into place."""
    import torch  # lazily: most callers of this module never save tensors

    with atomic_file(path, "wb") as handle:
        torch.save(obj, handle)


@contextlib.contextmanager
def atomic_dir(final: Path) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``final``; when the block succeeds, replace
    ``final`` with it in one rename. On error (or Ctrl-C) the temporary folder is deleted and
    ``final`` keeps whatever it held before."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    try:
        yield tmp
        if final.exists():
            old = final.with_name(f".{final.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            os.replace(tmp, final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, final)
        fsync_dir(final.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def file_hashes(path: Path, algorithms: Iterable[str]) -> dict[str, str]:
    """``{algorithm: hex digest}`` of the file at ``path`` (``hashlib`` names such as ``md5``,
    ``sha256``), read once in 1 MiB blocks whatever the number of algorithms."""
    hashers = {algorithm: hashlib.new(algorithm) for algorithm in algorithms}
    if hashers:
        with open(path, "rb") as handle:
            while block := handle.read(1 << 20):
                for hasher in hashers.values():
                    hasher.update(block)
    return {algorithm: hasher.hexdigest() for algorithm, hasher in hashers.items()}


def copy_file(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` atomically (a half-copied file never exists)."""
    with open(source, "rb") as src, atomic_file(Path(target), "wb") as dst:
        shutil.copyfileobj(src, dst, length=1 << 20)


@contextlib.contextmanager
def exclusive_lock(path: Path, busy: str) -> Iterator[None]:
    """Hold an exclusive advisory lock on the file ``path`` (created if needed) for the block.

    The file names its holder (process id, host and command line) while held. The operating
    system drops the lock when the holder exits, however it ends, so a lock left behind by a
    killed process is simply taken over. When another live process holds it, StackGANError
    says ``busy`` and names that holder. Where the OS has no advisory locks (Windows) the
    block runs unguarded.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise StackGANError(f"{busy}: {holder} holds {path}") from None
        handle.seek(0)
        handle.truncate()
        command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
        handle.write(f"process {os.getpid()} on {socket.gethostname()} ({command})\n")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
