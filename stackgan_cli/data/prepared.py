"""The prepared dataset on disk: writing it split by split, and reading it back.

Layout of a prepared dataset (``paths.prepared_dir(name)``)::

    metadata.json            format version, counts, fingerprint, inputs, text-encoder report
    <split>/images_76.npy    uint8 (N, 76, 76, 3)     bbox crop + PIL bilinear (see below)
    <split>/images_304.npy   uint8 (N, 304, 304, 3)
    <split>/embeddings.npy   float32 (N, 10, D)       embedding j pairs with caption j
    <split>/captions.json    N lists of 10 strings
    <split>/class_ids.npy    int64 (N,)
    <split>/filenames.json   N keys "<class_dir>/<name>"
    text_encoder.pt          the trained text encoder's ``to_dict()`` (optional)
    skipped.jsonl            the images ``--skip-bad`` left out (one's own folders only)

The crops follow the official pipeline (stackgan-pytorch-spec.md 2.2). The splits are
``train`` and ``test``, or ``train`` alone (one's own folder with ``--test-fraction 0``). A
dataset without char-CNN-RNN embeddings (one's own folder) has ``text_dim`` 0: embeddings of
shape (N, 10, 0) and no text encoder.

The fingerprint is the SHA-256 of the sorted ``"<relative path> <sha256 of its content>"`` lines
of these files (for ``.npy`` files, of the array data in C order), so it identifies the data
itself, not when or where it was written.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from stackgan_cli import paths
from stackgan_cli.data.cub import CAPTIONS_PER_IMAGE, IMAGE_SIZES
from stackgan_cli.errors import StackGANError
from stackgan_cli.formats import check_format
from stackgan_cli.fsutil import atomic_write_text

FORMAT_VERSION = 1
METADATA_FILE = "metadata.json"
TEXT_ENCODER_FILE = "text_encoder.pt"
SPLIT_FILES = (
    *(f"images_{size}.npy" for size in IMAGE_SIZES),
    "embeddings.npy",
    "captions.json",
    "class_ids.npy",
    "filenames.json",
)
_HASH_ROWS = 256  # rows of an image array hashed at a time when recomputing a fingerprint
_REMAP_EVERY = 128  # images written between two remappings of the image files


class SplitWriter:
    """Writes one split: images are streamed into memory-mapped ``.npy`` files one at a time
    (so memory stays flat however large the split), everything else at ``finish``. Each file's
    SHA-256 is computed as it is written."""

    def __init__(self, root: Path, split: str, count: int) -> None:
        if count <= 0:
            raise StackGANError(f"split {split!r} has no images")
        self.split = split
        self.count = count
        self.directory = Path(root) / split
        self.directory.mkdir(parents=True, exist_ok=True)
        self._images = {
            size: np.lib.format.open_memmap(
                self.directory / f"images_{size}.npy",
                mode="w+",
                dtype=np.uint8,
                shape=(count, size, size, 3),
            )
            for size in IMAGE_SIZES
        }
        self._hashes = {size: hashlib.sha256() for size in IMAGE_SIZES}
        self._written = 0
        self.digests: dict[str, str] = {}

    def append(self, crops: Sequence[np.ndarray]) -> None:
        """Store the next image, given as its crops in ``IMAGE_SIZES`` order."""
        if self._written >= self.count:
            raise ValueError(f"split {self.split!r} already holds {self.count} images")
        for size, crop in zip(IMAGE_SIZES, crops, strict=True):
            crop = np.ascontiguousarray(crop, dtype=np.uint8)
            if crop.shape != (size, size, 3):
                raise ValueError(f"expected a ({size}, {size}, 3) image, got {crop.shape}")
            self._images[size][self._written] = crop
            self._hashes[size].update(crop.data)
        self._written += 1
        if self._written % _REMAP_EVERY == 0:
            self._remap()

    def shrink(self) -> None:
        """Keep only the images appended so far, when fewer than ``count`` turned out usable:
        each image file is copied, a block of rows at a time, into one of the right size."""
        if self._written == self.count:
            return
        if self._written == 0:
            raise ValueError(f"split {self.split!r}: no images were appended")
        for size in IMAGE_SIZES:
            array = self._images.pop(size)
            array.flush()
            filename = Path(array.filename)
            del array
            source = np.load(filename, mmap_mode="r")
            partial = filename.with_name(f".{filename.name}.part")
            target = np.lib.format.open_memmap(
                partial, mode="w+", dtype=np.uint8, shape=(self._written, size, size, 3)
            )
            for start in range(0, self._written, _HASH_ROWS):
                stop = min(start + _HASH_ROWS, self._written)
                target[start:stop] = source[start:stop]
            target.flush()
            del target, source
            os.replace(partial, filename)
            self._images[size] = np.load(filename, mmap_mode="r+")
        self.count = self._written

    def _remap(self) -> None:
        """Flush and map the image files afresh: written pages then leave this process's
        resident memory (they stay in the OS page cache), so a large split does not look like
        gigabytes of RAM."""
        for size, array in self._images.items():
            array.flush()
            filename = array.filename
            del array
            self._images[size] = np.load(filename, mmap_mode="r+")

    def finish(
        self,
        *,
        embeddings: np.ndarray,
        captions: Sequence[Sequence[str]],
        class_ids: np.ndarray,
        filenames: Sequence[str],
    ) -> dict[str, str]:
        """Write the remaining files, flush everything to disk and return ``{relative path:
        sha256}`` for this split's files."""
        if self._written != self.count:
            raise ValueError(f"split {self.split!r}: {self._written} of {self.count} images")
        embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
        class_ids = np.ascontiguousarray(class_ids, dtype=np.int64)
        if embeddings.ndim != 3 or embeddings.shape[:2] != (self.count, CAPTIONS_PER_IMAGE):
            raise ValueError(f"embeddings of shape {embeddings.shape} for {self.count} images")
        if class_ids.shape != (self.count,) or len(captions) != self.count:
            raise ValueError("class ids, captions and images differ in number")
        if len(filenames) != self.count:
            raise ValueError("filenames and images differ in number")

        for size, array in self._images.items():
            array.flush()
            self._record(f"images_{size}.npy", self._hashes[size].hexdigest())
        self._images.clear()
        self._save_array("embeddings.npy", embeddings)
        self._save_array("class_ids.npy", class_ids)
        self._save_json("captions.json", [list(c) for c in captions])
        self._save_json("filenames.json", list(filenames))
        for name in SPLIT_FILES:
            _fsync_file(self.directory / name)
        return dict(self.digests)

    def _save_array(self, name: str, array: np.ndarray) -> None:
        np.save(self.directory / name, array)
        self._record(name, hashlib.sha256(array.data).hexdigest())

    def _save_json(self, name: str, obj: Any) -> None:
        data = json.dumps(obj, ensure_ascii=False).encode("utf-8")
        (self.directory / name).write_bytes(data)
        self._record(name, hashlib.sha256(data).hexdigest())

    def _record(self, name: str, digest: str) -> None:
        self.digests[f"{self.split}/{name}"] = digest


def fingerprint(digests: dict[str, str]) -> str:
    """The dataset fingerprint from ``{relative path: sha256}`` of its data files."""
    lines = "".join(f"{name} {digest}\n" for name, digest in sorted(digests.items()))
    return hashlib.sha256(lines.encode("utf-8")).hexdigest()


def file_digests(root: Path) -> dict[str, str]:
    """Recompute ``{relative path: sha256}`` for every data file of a prepared dataset (reads
    all of it; ``SplitWriter`` computes the same values while writing)."""
    root = Path(root)
    digests = {}
    for split in read_metadata(root)["splits"]:
        for name in SPLIT_FILES:
            path = root / split / name
            digest = hashlib.sha256()
            if name.endswith(".npy"):
                array = np.load(path, mmap_mode="r")
                for start in range(0, max(len(array), 1), _HASH_ROWS):
                    digest.update(np.ascontiguousarray(array[start : start + _HASH_ROWS]).data)
            else:
                digest.update(path.read_bytes())
            digests[f"{split}/{name}"] = digest.hexdigest()
    return digests


def write_metadata(root: Path, metadata: dict[str, Any]) -> None:
    """Write ``metadata.json`` (the last file of a prepare: its presence marks completion)."""
    atomic_write_text(Path(root) / METADATA_FILE, json.dumps(metadata, indent=2) + "\n")


def read_metadata(root: Path) -> dict[str, Any]:
    """``metadata.json`` of a prepared dataset; ``StackGANError`` when absent or unusable."""
    path = Path(root) / METADATA_FILE
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise StackGANError(f"{root} holds no prepared dataset ({METADATA_FILE} missing)") from None
    except (OSError, ValueError) as exc:
        raise StackGANError(f"{path} is damaged ({exc}); {_reprepare(root)}") from None
    if not isinstance(metadata, dict) or not isinstance(metadata.get("splits"), dict):
        raise StackGANError(f"{path} is not a stackgan dataset description; {_reprepare(root)}")
    check_format(
        metadata,
        tag=None,
        versions=(FORMAT_VERSION,),
        where=str(path),
        what="prepared dataset description",
        remedy=f"re-run `stackgan prepare {metadata.get('dataset', 'NAME')} --force`",
    )
    return metadata


def _reprepare(root: Path) -> str:
    """How to rebuild the prepared dataset at ``root`` (``datasets/NAME/prepared``)."""
    root = Path(root)
    name = root.parent.name if root.name == "prepared" else "NAME"
    return f"re-run `stackgan prepare {name} --force`"


class PreparedSplit:
    """One split of a prepared dataset. Images are memory-mapped; the rest loads on first use."""

    def __init__(self, directory: Path, name: str, count: int) -> None:
        self.directory = directory
        self.name = name
        self._count = count
        self._images: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self._count

    def __repr__(self) -> str:
        return f"PreparedSplit({self.name!r}, {self._count} images, {str(self.directory)!r})"

    def images(self, size: int) -> np.ndarray:
        """The (N, size, size, 3) uint8 images, memory-mapped read-only; size is 76 or 304."""
        if size not in IMAGE_SIZES:
            raise ValueError(f"image size must be one of {IMAGE_SIZES}, not {size}")
        if size not in self._images:
            self._images[size] = np.load(self.directory / f"images_{size}.npy", mmap_mode="r")
        return self._images[size]

    @cached_property
    def embeddings(self) -> np.ndarray:
        """(N, 10, D) float32; embedding j of an image pairs with its caption j."""
        return np.load(self.directory / "embeddings.npy")

    @cached_property
    def captions(self) -> list[list[str]]:
        """N lists of 10 captions."""
        return json.loads((self.directory / "captions.json").read_text(encoding="utf-8"))

    @cached_property
    def class_ids(self) -> np.ndarray:
        """(N,) int64 class ids (CUB's, 1-based)."""
        return np.load(self.directory / "class_ids.npy")

    @cached_property
    def filenames(self) -> list[str]:
        """N image keys ``"<class_dir>/<name>"``."""
        return json.loads((self.directory / "filenames.json").read_text(encoding="utf-8"))


class PreparedDataset:
    """A prepared dataset: ``metadata``, its splits and its text encoder."""

    def __init__(self, root: Path, metadata: dict[str, Any]) -> None:
        self.root = root
        self.metadata = metadata
        self.name: str = metadata.get("dataset", root.name)
        self.fingerprint: str = metadata.get("fingerprint", "")
        self._splits: dict[str, PreparedSplit] = {}

    def __repr__(self) -> str:
        return f"PreparedDataset({self.name!r}, {str(self.root)!r})"

    @property
    def split_names(self) -> list[str]:
        """The splits, in the order they were written (``train``, ``test``; or ``train``
        alone)."""
        return list(self.metadata["splits"])

    def split(self, name: str) -> PreparedSplit:
        """One split by name (``"train"`` or ``"test"``)."""
        if name not in self.metadata["splits"]:
            hint = ""
            if name == "test":
                hint = (
                    f" (it was prepared with every image for training); prepare it again with "
                    f"`stackgan prepare PATH --name {self.name} --test-fraction F --force`"
                )
            raise StackGANError(f"dataset {self.name!r} has no split {name!r}{hint}")
        if name not in self._splits:
            count = int(self.metadata["splits"][name]["images"])
            self._splits[name] = PreparedSplit(self.root / name, name, count)
        return self._splits[name]

    def text_encoder_dict(self) -> dict | None:
        """The stored text encoder's ``to_dict()``, or ``None`` when prepared without one."""
        path = self.root / TEXT_ENCODER_FILE
        if not path.is_file():
            return None
        import torch

        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types on a damaged file
            raise StackGANError(f"cannot read {path} ({exc})") from None


def resolve_prepared(name_or_path: str | Path) -> Path:
    """Where a dataset name or path points: a bare name (no path separator) is
    ``paths.prepared_dir(name)``; anything else is a path, used as is (a dataset folder
    holding ``prepared/`` is accepted too)."""
    if isinstance(name_or_path, str) and _is_bare_name(name_or_path):
        return paths.prepared_dir(name_or_path)
    path = Path(name_or_path).expanduser()
    if not (path / METADATA_FILE).exists() and (path / "prepared" / METADATA_FILE).exists():
        return path / "prepared"
    return path


def load_prepared(name_or_path: str | Path) -> PreparedDataset:
    """Open a prepared dataset by name (``"cub"``, ``"shapes"``) or path; ``StackGANError``
    with the command to run when it is not prepared or is incomplete."""
    root = resolve_prepared(name_or_path)
    if not (root / METADATA_FILE).exists():
        if isinstance(name_or_path, str) and _is_bare_name(name_or_path):
            raise StackGANError(
                f"dataset {name_or_path!r} is not prepared (nothing at {root}); "
                f"run `stackgan prepare {name_or_path}`"
            )
        raise StackGANError(
            f"{root} holds no prepared dataset ({METADATA_FILE} missing); "
            "run `stackgan prepare cub` or `stackgan prepare shapes`"
        )
    metadata = read_metadata(root)
    dataset = metadata.get("dataset", "NAME")
    redo = f"re-run `stackgan prepare {dataset} --force`"
    for split in metadata["splits"]:
        for name in SPLIT_FILES:
            if not (root / split / name).is_file():
                raise StackGANError(f"{root / split / name} is missing; {redo}")
        count = _split_count(metadata, split)
        if count is None:
            raise StackGANError(
                f"{root / METADATA_FILE} is damaged (no image count for split {split!r}); {redo}"
            )
        for name, (dtype, shape) in _array_specs(count, metadata.get("text_dim")).items():
            problem = _array_problem(root / split / name, dtype, shape)
            if problem is not None:
                raise StackGANError(f"{root / split / name} is damaged ({problem}); {redo}")
    return PreparedDataset(root, metadata)


def _split_count(metadata: dict[str, Any], split: str) -> int | None:
    """The number of images ``metadata`` gives for ``split``, or None when it gives none."""
    entry = metadata["splits"][split]
    count = entry.get("images") if isinstance(entry, dict) else None
    valid = isinstance(count, int) and not isinstance(count, bool) and count > 0
    return count if valid else None


def _array_specs(count: int, text_dim: Any) -> dict[str, tuple[np.dtype, tuple[int | None, ...]]]:
    """The dtype and shape of each ``.npy`` file of a split of ``count`` images (None in a
    shape: any size, for the embedding size of metadata without ``text_dim``)."""
    dim = text_dim if isinstance(text_dim, int) and not isinstance(text_dim, bool) else None
    specs: dict[str, tuple[np.dtype, tuple[int | None, ...]]] = {
        f"images_{size}.npy": (np.dtype(np.uint8), (count, size, size, 3)) for size in IMAGE_SIZES
    }
    specs["embeddings.npy"] = (np.dtype(np.float32), (count, CAPTIONS_PER_IMAGE, dim))
    specs["class_ids.npy"] = (np.dtype(np.int64), (count,))
    return specs


def _array_problem(path: Path, dtype: np.dtype, shape: tuple[int | None, ...]) -> str | None:
    """What is wrong with the ``.npy`` file at ``path``, which should hold an array of
    ``dtype`` and ``shape``, judged from its header and size alone; None when nothing is."""
    try:
        found_shape, found_dtype, offset = _read_npy_header(path)
    except ValueError as exc:
        return f"not a .npy file: {' '.join(str(exc).split())}"
    except OSError as exc:
        return f"cannot be read: {exc.strerror or exc}"
    if found_dtype != dtype:
        return f"dtype {found_dtype}, not {dtype}"
    wanted = tuple(
        got if want is None else want for got, want in zip(found_shape, shape, strict=False)
    )
    if len(found_shape) != len(shape) or tuple(found_shape) != wanted:
        described = str(shape).replace("None", "D")
        return f"an array of shape {tuple(found_shape)}, not the {described} of {METADATA_FILE}"
    expected = offset + math.prod(found_shape) * found_dtype.itemsize
    size = path.stat().st_size
    if size < expected:
        return f"truncated: {size:,} bytes where its header needs {expected:,}"
    if size > expected:
        return f"{size:,} bytes where its header needs {expected:,}: extra data at its end"
    return None


def _read_npy_header(path: Path) -> tuple[tuple[int, ...], np.dtype, int]:
    """The shape, the dtype and the offset of the data of a ``.npy`` file, from its header
    alone (the data is not read); ``ValueError`` when the header is not a valid one."""
    with open(path, "rb") as handle:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
        else:
            raise ValueError(f"format version {version[0]}.{version[1]} is not supported")
        return shape, dtype, handle.tell()


def directory_size(root: Path) -> int:
    """Total bytes of the files under ``root``."""
    return sum(p.stat().st_size for p in Path(root).rglob("*") if p.is_file())


def _is_bare_name(text: str) -> bool:
    return bool(text) and text not in (".", "..") and "/" not in text and os.sep not in text


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
