"""Writing a prepared dataset so that an interrupted prepare resumes where it stopped.

Large datasets (COCO: about 80,000 training images) take long enough to prepare that an
interruption should not cost the images already done. The images are streamed, chunk by chunk,
from worker processes into memory-mapped arrays in a staging folder beside the prepared one::

    datasets/<name>/.prepared.partial/
        progress.json               what the images are made from (a key), and per split how
                                    many images are written and flushed to disk
        <split>/images_76.npy       the prepared format's arrays, sized for the whole split
        <split>/images_304.npy

After each chunk the arrays are flushed to disk and only then is ``progress.json`` rewritten
(atomically) with the new count, so the count never runs ahead of the data. A later prepare with
the same key picks up after the last recorded image; a different key (other archives, other
image lists, another format version) or damaged arrays start the staging folder over. Only a
complete dataset (images, the split's other files, text encoder, ``metadata.json``) is renamed
to ``prepared/``, so no half-written dataset is ever visible there.

The files written are those of ``prepared.py``'s format, with the same per-file SHA-256
digests, so ``prepared.file_digests`` recomputes exactly what is recorded here.

The images of flowers and COCO are resized whole (no crop), as the official pipelines do:
StackGAN's ``misc/preprocess_flowers.py`` (hanzhanggit/StackGAN) resizes each flower image to
304x304 without a crop, and StackGAN-Pytorch's ``code/miscc/datasets.py`` (``get_img`` without a
bounding box, hanzhanggit/StackGAN-Pytorch) resizes each COCO image whole with PIL bilinear.
Here each stored size is resized directly from the image with PIL bilinear, as for CUB.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import zipfile
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from stackgan_cli.console import task_progress
from stackgan_cli.data.cub import CAPTIONS_PER_IMAGE, IMAGE_SIZES
from stackgan_cli.data.prepared import FORMAT_VERSION
from stackgan_cli.errors import StackGANError
from stackgan_cli.fsutil import atomic_write_text, fsync_dir

CHUNK_IMAGES = 256
"""Images between two checkpoints: what an interruption can cost at most, per split."""
PROGRESS_FILE = "progress.json"
_PROGRESS_VERSION = 1
_HASH_ROWS = 256  # image rows read back at a time to re-hash a resumed split
_EMBEDDING_ROWS = 256  # images whose embeddings are written at a time

ImageTask = tuple[str | None, str]
"""One image to load: ``(None, path)`` for a file, ``(zip archive, member name)`` for a member
of a zip read in place. A plain tuple, so it pickles cheaply to a worker process."""

ParallelMap = Callable[[Callable, Iterable], Iterable]

_open_archives: dict[str, zipfile.ZipFile] = {}  # per process: a worker opens each zip once


@dataclass
class SplitPlan:
    """One split, fully read and checked, ready to be written: what every image is made of.

    ``captions`` hold ``CAPTIONS_PER_IMAGE`` captions per image; ``embeddings`` hold
    ``per_image`` vectors per image, (N, per_image, D) or N arrays (per_image, D) as the
    upstream pickle had them, and caption j of an image pairs with its embedding
    ``j % per_image`` (the captions were filled the same way).
    """

    name: str
    keys: list[str]
    class_ids: np.ndarray  # (N,) int64
    captions: list[list[str]]
    embeddings: Sequence[np.ndarray] | np.ndarray
    per_image: int
    tasks: list[ImageTask]

    def __len__(self) -> int:
        return len(self.keys)

    @property
    def text_dim(self) -> int:
        """The size of one embedding."""
        return int(np.shape(self.embeddings[0])[-1])

    def source_captions(self) -> list[list[str]]:
        """Each image's captions without the repeats that fill them up to 10."""
        return [captions[: self.per_image] for captions in self.captions]


def fill_to_ten(items: Sequence[Any]) -> list[Any]:
    """``CAPTIONS_PER_IMAGE`` items from 1 or more: repeated in order (item j is
    ``items[j % len(items)]``), the rule by which 5 COCO captions fill the 10 slots.

    >>> fill_to_ten(["a", "b", "c", "d", "e"])
    ['a', 'b', 'c', 'd', 'e', 'a', 'b', 'c', 'd', 'e']
    """
    if not items:
        raise ValueError("nothing to fill the captions with")
    return [items[j % len(items)] for j in range(CAPTIONS_PER_IMAGE)]


def load_whole_image(task: ImageTask) -> list[np.ndarray]:
    """Decode one image (a file, or a member of a zip read in place) and resize it whole to
    each of ``IMAGE_SIZES`` with PIL bilinear: (S, S, 3) uint8 arrays. The unit of work of the
    worker processes; a missing or unreadable image raises ``StackGANError`` naming it."""
    archive, name = task
    where = f"{name} in {archive}" if archive else name
    try:
        if archive is None:
            image = Image.open(name)
        else:
            image = Image.open(io.BytesIO(_archive(archive).read(name)))
        with image:
            rgb = image.convert("RGB")
        return [
            np.asarray(rgb.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)
            for size in IMAGE_SIZES
        ]
    except FileNotFoundError:
        raise StackGANError(f"missing image file: {where}") from None
    except KeyError:
        raise StackGANError(f"missing image: {where}") from None
    except (
        OSError,
        ValueError,
        SyntaxError,
        EOFError,
        Image.DecompressionBombError,
        zipfile.BadZipFile,
        zlib.error,
    ) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise StackGANError(f"cannot read image {where}: {reason}") from None


def close_archives() -> None:
    """Close the zip archives this process opened for ``load_whole_image``."""
    while _open_archives:
        _, bundle = _open_archives.popitem()
        bundle.close()


def _archive(path: str) -> zipfile.ZipFile:
    bundle = _open_archives.get(path)
    if bundle is None:
        bundle = _open_archives[path] = zipfile.ZipFile(path)
    return bundle


def inputs_key(dataset: str, inputs: Mapping[str, Any], plans: Mapping[str, SplitPlan]) -> str:
    """What a staging folder's images are made from, as one digest: the dataset, the format,
    the recorded inputs (archives with their MD5, or folders) and every split's image list. A
    staging folder with another key is not resumed."""
    lists = {
        name: hashlib.sha256(json.dumps(plan.tasks).encode("utf-8")).hexdigest()
        for name, plan in plans.items()
    }
    described = {
        "dataset": dataset,
        "format_version": FORMAT_VERSION,
        "progress_version": _PROGRESS_VERSION,
        "image_sizes": list(IMAGE_SIZES),
        "inputs": inputs,
        "images": lists,
        "counts": {name: len(plan) for name, plan in plans.items()},
    }
    return hashlib.sha256(json.dumps(described, sort_keys=True).encode("utf-8")).hexdigest()


def staging_dir(target: Path) -> Path:
    """The staging folder of the prepared dataset at ``target`` (``.prepared.partial``)."""
    target = Path(target)
    return target.with_name(f".{target.name}.partial")


class ResumableImages:
    """The staging folder of one prepare: its image arrays and its progress.

    ``open`` resumes a staging folder left by an interrupted prepare of the same inputs, or
    starts a new one. ``written(split)`` says how many images are already there; ``append``
    stores the next one; ``checkpoint`` makes them durable and records the count;
    ``finish_split`` writes a split's other files; ``commit`` renames the folder into place.
    """

    def __init__(self, staging: Path, key: str, counts: dict[str, int], written: dict[str, int]):
        self.staging = staging
        self.key = key
        self.counts = counts
        self.resumed = dict(written)
        """Images per split found already written when the folder was opened."""
        self._written = dict(written)
        self._open: dict[str, _SplitArrays] = {}

    @classmethod
    def open(
        cls, target: Path, key: str, counts: dict[str, int], *, fresh: bool = False
    ) -> ResumableImages:
        """The staging folder for ``target``: resumed when it was made from ``key`` with the
        same split sizes ``counts`` and its arrays are whole, else (or with ``fresh``) new."""
        for split, count in counts.items():
            if count <= 0:
                raise StackGANError(f"split {split!r} has no images")
        staging = staging_dir(target)
        written = None if fresh else _resumable_progress(staging, key, counts)
        if written is None:
            if staging.exists():
                shutil.rmtree(staging)
            _check_free_space(staging.parent, counts)
            staging.mkdir(parents=True)
            try:
                for split, count in counts.items():
                    _SplitArrays.create(staging / split, count)
            except StackGANError:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            written = dict.fromkeys(counts, 0)
            _write_progress(staging, key, counts, written)
        for leftover in staging.glob(".*.tmp"):  # a progress file whose rename was cut short
            leftover.unlink(missing_ok=True)
        return cls(staging, key, counts, written)

    def written(self, split: str) -> int:
        """Images of ``split`` stored so far (durable up to the last checkpoint)."""
        return self._written[split]

    def append(self, split: str, crops: Sequence[np.ndarray]) -> None:
        """Store the next image of ``split``, given as its resized images in ``IMAGE_SIZES``
        order."""
        arrays = self._arrays(split)
        arrays.put(self._written[split], crops)
        self._written[split] += 1

    def checkpoint(self, split: str) -> None:
        """Flush ``split``'s images to disk, then record how many there are."""
        if split in self._open:
            self._open[split].flush()
        _write_progress(self.staging, self.key, self.counts, self._written)

    def finish_split(self, plan: SplitPlan) -> dict[str, str]:
        """Write the rest of ``plan``'s split (embeddings filled to 10 per image, captions,
        class ids, filenames) once all its images are in; ``{relative path: sha256}`` of its
        files, as ``prepared.file_digests`` computes them."""
        split, count = plan.name, self.counts[plan.name]
        if self._written[split] != count:
            raise ValueError(f"split {split!r}: {self._written[split]} of {count} images")
        class_ids = np.ascontiguousarray(plan.class_ids, dtype=np.int64)
        if class_ids.shape != (count,) or len(plan.captions) != count or len(plan.keys) != count:
            raise ValueError("class ids, captions, filenames and images differ in number")
        digests = self._arrays(split).close()
        del self._open[split]
        directory = self.staging / split
        digests["embeddings.npy"] = _write_embeddings(directory / "embeddings.npy", plan)
        np.save(directory / "class_ids.npy", class_ids)
        digests["class_ids.npy"] = hashlib.sha256(class_ids.data).hexdigest()
        for name, obj in (("captions.json", plan.captions), ("filenames.json", plan.keys)):
            data = json.dumps(list(obj), ensure_ascii=False).encode("utf-8")
            (directory / name).write_bytes(data)
            digests[name] = hashlib.sha256(data).hexdigest()
        for name in digests:
            _fsync_file(directory / name)
        return {f"{split}/{name}": digest for name, digest in digests.items()}

    def commit(self, target: Path) -> None:
        """Rename the complete staging folder to ``target``, replacing what was there."""
        target = Path(target)
        (self.staging / PROGRESS_FILE).unlink(missing_ok=True)
        fsync_dir(self.staging)
        if target.exists():
            old = target.with_name(f".{target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
            os.replace(self.staging, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(self.staging, target)
        fsync_dir(target.parent)

    def close(self) -> None:
        """Release the open arrays (the staging folder stays for a later resume)."""
        for arrays in self._open.values():
            arrays.release()
        self._open.clear()

    def _arrays(self, split: str) -> _SplitArrays:
        if split not in self._open:
            self._open[split] = _SplitArrays(self.staging / split, self._written[split])
        return self._open[split]


def stream_images(
    images: ResumableImages,
    plans: Mapping[str, SplitPlan],
    pmap: ParallelMap,
    *,
    label: str,
    chunk: int = CHUNK_IMAGES,
    load: Callable[[ImageTask], list[np.ndarray]] = load_whole_image,
) -> int:
    """Decode every image not yet in ``images`` with ``pmap(load, tasks)``, store it and
    checkpoint after each ``chunk`` images, with a progress bar per split; the number of
    images decoded. At most two chunks are handed to the workers at a time (the next one is
    queued while the current one is stored), so memory stays bounded however large the split,
    and the workers never wait for a checkpoint."""
    if chunk <= 0:
        raise ValueError("chunk must be positive")
    decoded = 0
    with task_progress() as progress:
        for plan in plans.values():
            done = images.written(plan.name)
            task = progress.add_task(f"{label} {plan.name} images", total=len(plan), completed=done)
            starts = iter(range(done, len(plan), chunk))
            pending: deque[Iterable] = deque()
            for _ in range(2):
                _submit(pending, starts, pmap, load, plan.tasks, chunk)
            while pending:
                for crops in pending.popleft():
                    images.append(plan.name, crops)
                    decoded += 1
                    progress.advance(task)
                images.checkpoint(plan.name)
                _submit(pending, starts, pmap, load, plan.tasks, chunk)
    return decoded


def _submit(
    pending: deque[Iterable],
    starts: Iterator[int],
    pmap: ParallelMap,
    load: Callable,
    tasks: list[ImageTask],
    chunk: int,
) -> None:
    """Hand the next chunk of ``tasks`` (if any is left) to the workers."""
    start = next(starts, None)
    if start is not None:
        pending.append(pmap(load, tasks[start : start + chunk]))


class _SplitArrays:
    """The two image arrays of one split, memory-mapped for writing, and their running
    SHA-256 (re-hashed from disk up to ``written`` when a split is resumed)."""

    def __init__(self, directory: Path, written: int) -> None:
        self.directory = directory
        self.arrays = {size: self._map(size) for size in IMAGE_SIZES}
        self.hashes = {size: hashlib.sha256() for size in IMAGE_SIZES}
        for size, array in self.arrays.items():
            for start in range(0, written, _HASH_ROWS):
                stop = min(written, start + _HASH_ROWS)
                self.hashes[size].update(np.ascontiguousarray(array[start:stop]).data)
        self.flush()  # drop the pages read for hashing from this process's memory

    @staticmethod
    def create(directory: Path, count: int) -> None:
        """Create the split's image files, sized for ``count`` images (sparse until written)."""
        directory.mkdir(parents=True, exist_ok=True)
        for size in IMAGE_SIZES:
            _reserved_memmap(directory / f"images_{size}.npy", np.uint8, (count, size, size, 3))

    def put(self, row: int, crops: Sequence[np.ndarray]) -> None:
        for size, crop in zip(IMAGE_SIZES, crops, strict=True):
            crop = np.ascontiguousarray(crop, dtype=np.uint8)
            if crop.shape != (size, size, 3):
                raise ValueError(f"expected a ({size}, {size}, 3) image, got {crop.shape}")
            self.arrays[size][row] = crop
            self.hashes[size].update(crop.data)

    def flush(self) -> None:
        """Write the mapped pages to disk and map the files afresh, so written pages leave
        this process's resident memory (they stay in the OS page cache)."""
        for size in IMAGE_SIZES:
            self.arrays[size].flush()
            self.arrays[size] = self._map(size)

    def close(self) -> dict[str, str]:
        """Flush, unmap, and the digests of the two files."""
        self.flush()
        self.release()
        return {f"images_{size}.npy": self.hashes[size].hexdigest() for size in IMAGE_SIZES}

    def release(self) -> None:
        self.arrays.clear()

    def _map(self, size: int) -> np.memmap:
        return np.load(self.directory / f"images_{size}.npy", mmap_mode="r+")


def _write_embeddings(path: Path, plan: SplitPlan) -> str:
    """Write (N, 10, D) float32 embeddings, image i's slot j holding its vector
    ``j % per_image``, a block of rows at a time (each block flushed, so memory stays flat);
    the SHA-256 of the array data."""
    count, per_image, dim = len(plan), plan.per_image, plan.text_dim
    slots = [j % per_image for j in range(CAPTIONS_PER_IMAGE)]
    shape = (count, CAPTIONS_PER_IMAGE, dim)
    _reserved_memmap(path, np.float32, shape).flush()
    digest = hashlib.sha256()
    for start in range(0, count, _EMBEDDING_ROWS):
        stop = min(count, start + _EMBEDDING_ROWS)
        block = np.stack(
            [np.asarray(plan.embeddings[i], dtype=np.float32)[slots] for i in range(start, stop)]
        )
        out = np.load(path, mmap_mode="r+")
        out[start:stop] = block
        out.flush()
        del out
        digest.update(block.data)
    return digest.hexdigest()


def _reserved_memmap(path: Path, dtype: type, shape: tuple[int, ...]) -> np.memmap:
    """A new ``.npy`` array at ``path`` mapped for writing, its disk blocks reserved first: a
    write into a sparse memory map on a full disk is a SIGBUS, not an error that can be
    reported. A disk too full for it raises ``StackGANError``."""
    try:
        array = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
        array.flush()
        if hasattr(os, "posix_fallocate"):  # not on macOS or Windows
            with open(path, "r+b") as handle:
                os.posix_fallocate(handle.fileno(), 0, os.fstat(handle.fileno()).st_size)
    except OSError as exc:
        Path(path).unlink(missing_ok=True)
        raise StackGANError(f"cannot write {path}: {exc.strerror or exc}") from None
    return array


def _check_free_space(folder: Path, counts: dict[str, int]) -> None:
    """Refuse to start when the image arrays of ``counts`` images cannot fit in ``folder``."""
    needed = sum(count * size * size * 3 for count in counts.values() for size in IMAGE_SIZES)
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise StackGANError(
            f"the prepared images need {needed / 2**30:.1f} GiB in {folder}, "
            f"{free / 2**30:.1f} GiB are free: free some space or point STACKGAN_HOME elsewhere"
        )


def _resumable_progress(staging: Path, key: str, counts: dict[str, int]) -> dict[str, int] | None:
    """The written counts of a staging folder that can be resumed for ``key`` and ``counts``:
    same key, same split sizes, counts within them, and image arrays of the right shape and
    length; else None."""
    try:
        progress = json.loads((staging / PROGRESS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(progress, dict) or progress.get("key") != key:
        return None
    if progress.get("counts") != counts:
        return None
    written = progress.get("written")
    if not isinstance(written, dict) or set(written) != set(counts):
        return None
    for split, count in counts.items():
        done = written[split]
        if not isinstance(done, int) or isinstance(done, bool) or not 0 <= done <= count:
            return None
        for size in IMAGE_SIZES:
            if not _whole_array(staging / split / f"images_{size}.npy", (count, size, size, 3)):
                return None
    return dict(written)


def _whole_array(path: Path, shape: tuple[int, ...]) -> bool:
    """Whether ``path`` is a uint8 ``.npy`` array of ``shape`` with all its bytes on disk."""
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError):
        return False
    try:
        whole = path.stat().st_size == array.offset + array.nbytes
        return array.dtype == np.uint8 and array.shape == shape and whole
    finally:
        del array


def _write_progress(
    staging: Path, key: str, counts: dict[str, int], written: dict[str, int]
) -> None:
    record = {"key": key, "counts": counts, "written": written}
    atomic_write_text(staging / PROGRESS_FILE, json.dumps(record, indent=1) + "\n")


def _fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())
