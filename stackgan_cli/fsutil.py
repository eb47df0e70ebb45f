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


class _RecordingWriter:
    """A file open for writing that remembers the first ``OSError`` its writes raised.

    Writers that call back into Python for their output do not always let that error through:
    ``torch.save``'s zip writer, after the ``OSError`` (ENOSPC) of a write, raises a
    ``RuntimeError`` ("unexpected pos ...") from its own ``__exit__`` while unwinding, and a
    writer may also catch the error and carry on. :func:`atomic_file` reports the recorded
    ``OSError`` instead. Everything but the writing methods is the file's own.
    """

    def __init__(self, handle: Any) -> None:
        self._handle = handle
        self.failure: OSError | None = None

    def _recorded(self, method: Any, *args: Any) -> Any:
        try:
            return method(*args)
        except OSError as exc:
            if self.failure is None:
                self.failure = exc
            raise

    def write(self, data: Any) -> Any:
        return self._recorded(self._handle.write, data)

    def writelines(self, lines: Iterable[Any]) -> None:
        self._recorded(self._handle.writelines, lines)

    def flush(self) -> None:
        self._recorded(self._handle.flush)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)


@contextlib.contextmanager
def atomic_file(path: Path, mode: str = "wb") -> Iterator[Any]:
    """Open a temporary sibling of ``path`` for writing; on success fsync and rename it over
    ``path``. On any error the temporary file is removed and ``path`` is left untouched.

    A failed write (a full disk: ``OSError`` ENOSPC, EDQUOT, EIO...) always surfaces as that
    ``OSError``, even when the code writing to the file raised something else while unwinding
    from it (``torch.save``'s ``RuntimeError``) or caught it and finished as if nothing had
    happened; errors not preceded by a failed write pass through unchanged."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    writer: _RecordingWriter | None = None
    try:
        with os.fdopen(fd, mode) as handle:
            writer = _RecordingWriter(handle)
            yield writer
            if writer.failure is not None:  # the caller's writer swallowed it
                raise writer.failure
            writer.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        failure = writer.failure if writer is not None else None
        # Ctrl-C and exit requests stay what they are; any other error after a failed write is
        # its consequence (the traceback of --debug shows it as the context).
        if failure is not None and failure is not exc and isinstance(exc, Exception):
            raise failure  # noqa: B904 - the failed write is the cause, not a consequence
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write a text file atomically."""
    with atomic_file(path, "w") as handle:
        handle.write(text)


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` to a temporary file, fsync, then rename into place. A full disk raises
    the ``OSError`` of the failed write (not the ``RuntimeError`` torch's zip writer raises
    after it) and leaves ``path`` as it was."""
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


def write_problem(path: Path) -> str | None:
    """Why ``path`` cannot be written (None when it can): its folder, or the nearest folder
    above it that exists (the missing ones get created), must be a folder in which a file can
    be created. Checked by creating and removing a temporary file there, so that permissions,
    a read-only file system and a file where a folder should be all count (os.access does not
    see the file system's state, and says yes to root)."""
    folder = Path(path).parent
    while not os.path.lexists(folder) and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        return f"{folder} is not a folder"
    try:
        fd, name = tempfile.mkstemp(prefix=".stackgan-write-check.", dir=folder)
    except OSError as exc:
        return f"{folder} is not writable ({exc.strerror or exc})"
    os.close(fd)
    os.unlink(name)
    return None


def copy_file(source: Path, target: Path) -> None:
    """Copy ``source`` to ``target`` atomically (a half-copied file never exists)."""
    with open(source, "rb") as src, atomic_file(Path(target), "wb") as dst:
        shutil.copyfileobj(src, dst, length=1 << 20)


@contextlib.contextmanager
def exclusive_lock(path: Path, busy: str) -> Iterator[None]:
    """Hold an exclusive advisory lock on the file ``path`` (created if needed) for the block.

    The file names its holder (process id, host and command line) while held, where the disk
    has room for that line (a full disk does not stop the lock from being taken). The operating
    system drops the lock when the holder exits, however it ends, so a lock left behind by a
    killed process is simply taken over. When another live process holds it, StackGANError
    says ``busy`` and names that holder; one that cannot be created (a folder without write
    permission) is a one-line StackGANError too. Where the OS has no advisory locks (Windows)
    the block runs unguarded.
    """
    try:
        import fcntl
    except ImportError:
        yield
        return
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - closed by the with below
    except OSError as exc:
        raise StackGANError(f"cannot create the lock file {path} ({exc.strerror or exc})") from None
    with handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise StackGANError(f"{busy}: {holder} holds {path}") from None
        handle.seek(0)
        handle.truncate()
        command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])
        note = f"process {os.getpid()} on {socket.gethostname()} ({command})\n"
        try:  # unbuffered: a note that could not be written is not written later either
            os.write(handle.fileno(), note.encode("utf-8", "replace"))
        except OSError:  # a full disk: the lock holds all the same, only its note is missing
            os.ftruncate(handle.fileno(), 0)
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
