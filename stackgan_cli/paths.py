"""Where stackgan keeps its data: the cache root and the folders inside it."""

import os
from pathlib import Path

import platformdirs

from stackgan_cli.errors import StackGANError
from stackgan_cli.fsutil import write_problem


def cache_root() -> Path:
    """The cache root: ``$STACKGAN_HOME`` if set, else the platform's user cache folder."""
    override = os.environ.get("STACKGAN_HOME")
    if override:
        return Path(override).expanduser()
    return Path(platformdirs.user_cache_dir("stackgan"))


def downloads_dir() -> Path:
    """Upstream archives, kept as ``NAME.part`` while they download."""
    return cache_root() / "downloads"


def dataset_dir(name: str) -> Path:
    """The folder of one dataset, holding ``raw/`` and ``prepared/``."""
    return cache_root() / "datasets" / name


def raw_dir(name: str) -> Path:
    """The unpacked upstream layout of a dataset (``CUB_200_2011/``, ``birds/``)."""
    return dataset_dir(name) / "raw"


def prepared_dir(name: str) -> Path:
    """The prepared dataset (arrays, captions, text encoder, ``metadata.json``)."""
    return dataset_dir(name) / "prepared"


def runs_dir() -> Path:
    """Training runs, one folder each."""
    return cache_root() / "runs"


def weights_dir() -> Path:
    """Third-party weights such as the Inception network used for IS/FID."""
    return cache_root() / "weights"


def make_cache_dir(folder: Path) -> Path:
    """Create ``folder``, a folder of the cache, with its parents, and make sure files can be
    written in it; a one-line StackGANError naming the cache root (and ``STACKGAN_HOME``) when
    they cannot: a read-only cache, or a file where a folder of it should be."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        problem = f"{exc.filename or folder}: {exc.strerror or exc}"
    else:
        problem = write_problem(folder / "probe")
    if problem is not None:
        raise StackGANError(
            f"cannot write {folder} ({problem}): the cache {cache_root()} must be a writable "
            "folder; set STACKGAN_HOME to one"
        )
    return folder
