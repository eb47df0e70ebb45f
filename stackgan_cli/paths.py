"""Where stackgan keeps its data: the cache root and the folders inside it."""

import os
from pathlib import Path

import platformdirs


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
