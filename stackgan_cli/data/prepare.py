"""``stackgan prepare``: sources -> ``raw/`` -> ``prepared/`` -> text encoder.

``prepare_cub`` gets the two upstream archives (download, or ``--source-dir``), unpacks them to
``raw/`` and prepares; ``prepare_shapes`` generates the synthetic dataset into ``raw/`` in the
same layout and prepares it the same way. Preparing streams every image through the official
crop into memory-mapped arrays inside a temporary folder, trains the text encoder, writes
``metadata.json`` and only then renames the folder into place: a prepare that is interrupted
leaves no prepared dataset behind.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from stackgan_cli import __version__, paths
from stackgan_cli.console import info, task_progress, warn
from stackgan_cli.data import cub, shapes
from stackgan_cli.data.prepared import (
    FORMAT_VERSION,
    METADATA_FILE,
    TEXT_ENCODER_FILE,
    SplitWriter,
    directory_size,
    fingerprint,
    read_metadata,
    write_metadata,
)
from stackgan_cli.errors import StackGANError
from stackgan_cli.fsutil import (
    atomic_dir,
    atomic_torch_save,
    atomic_write_text,
    exclusive_lock,
    file_hashes,
)

CUB_PARTS = (("CUB_200_2011", "CUB_200_2011.tgz"), ("birds", "birds.zip"))
"""(unpacked folder, archive) of each upstream artifact."""
_POOL_CHUNK = 4  # images handed to a worker at a time

ParallelMap = Callable[[Callable, Iterable], Iterable]


@dataclass
class PrepareResult:
    """What a prepare did: where the dataset is, its metadata, and how long it took;
    ``note`` says how an already prepared dataset differs from what was asked for."""

    root: Path
    metadata: dict[str, Any]
    already_prepared: bool
    seconds: float
    note: str = ""


def default_workers() -> int:
    """Image worker processes by default: the usable CPU cores, at most 4."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


def prepare_cub(
    *,
    source_dir: Path | None = None,
    mirror: str | None = None,
    verify: bool = True,
    force: bool = False,
    workers: int | None = None,
    text_encoder: bool = True,
    text_encoder_epochs: int | None = None,
) -> PrepareResult:
    """Prepare CUB-200-2011 into ``paths.prepared_dir("cub")``.

    Without ``source_dir`` the archives are downloaded (``mirror`` or ``$STACKGAN_MIRROR``
    replacing the upstream hosts) into ``paths.downloads_dir()``. ``source_dir`` may hold the
    archives or their unpacked folders ``CUB_200_2011/`` and ``birds/`` (used in place).
    Archives that fail verification are refused unless ``verify=False``, which warns. Already
    prepared: nothing is done unless ``force``.
    """
    started = time.monotonic()
    target = paths.prepared_dir("cub")
    with _dataset_lock("cub"):
        existing = _existing_metadata(target)
        if existing is not None and not force:
            return PrepareResult(target, existing, True, time.monotonic() - started)
        folders, inputs = _cub_sources(source_dir, mirror=mirror, verify=verify, force=force)
        with _parallel_map(workers) as pmap:
            return _prepare_from_raw(
                "cub",
                folders["CUB_200_2011"],
                folders["birds"],
                target,
                inputs=inputs,
                pmap=pmap,
                text_encoder=text_encoder,
                text_encoder_epochs=text_encoder_epochs,
                started=started,
            )


def prepare_shapes(
    *,
    images: int = shapes.DEFAULT_IMAGES,
    seed: int = 0,
    force: bool = False,
    workers: int | None = None,
    text_encoder: bool = True,
    text_encoder_epochs: int | None = shapes.TEXT_ENCODER_EPOCHS,
) -> PrepareResult:
    """Generate the synthetic shapes dataset (``images`` images from ``seed``) into
    ``paths.raw_dir("shapes")`` and prepare it into ``paths.prepared_dir("shapes")``.
    Already prepared: nothing is done unless ``force``. ``text_encoder_epochs=None`` uses the
    text encoder's own size-based default instead of ``shapes.TEXT_ENCODER_EPOCHS``."""
    started = time.monotonic()
    target = paths.prepared_dir("shapes")
    with _dataset_lock("shapes"):
        existing = _existing_metadata(target)
        if existing is not None and not force:
            stored = existing.get("inputs", {}).get("shapes", {})
            note = ""
            if stored.get("images") != images or stored.get("seed") != seed:
                note = (
                    f"It was drawn with --images {stored.get('images')} --seed "
                    f"{stored.get('seed')}; add --force to redraw it with --images {images} "
                    f"--seed {seed}."
                )
            return PrepareResult(target, existing, True, time.monotonic() - started, note)
        raw = paths.raw_dir("shapes")
        info(f"Drawing {images:,} shape images into {raw}")
        with _parallel_map(workers) as pmap:
            with atomic_dir(raw) as staging, task_progress() as progress:
                task = progress.add_task("shapes drawing", total=images)

                def tracked(fn: Callable, items: list) -> Iterator:
                    for result in pmap(fn, items):
                        progress.advance(task)
                        yield result

                generated = shapes.write_shapes_raw(
                    staging, images=images, seed=seed, map_fn=tracked
                )
            return _prepare_from_raw(
                "shapes",
                raw / "CUB_200_2011",
                raw / "birds",
                target,
                inputs={"shapes": generated},
                pmap=pmap,
                text_encoder=text_encoder,
                text_encoder_epochs=text_encoder_epochs,
                started=started,
            )


def _prepare_from_raw(
    name: str,
    cub_dir: Path,
    birds_dir: Path,
    target: Path,
    *,
    inputs: dict[str, Any],
    pmap: ParallelMap,
    text_encoder: bool,
    text_encoder_epochs: int | None,
    started: float,
) -> PrepareResult:
    """Read and check the raw layout, then write the prepared dataset atomically."""
    info(f"Reading {cub_dir} and {birds_dir}")
    raw = cub.read_raw(cub_dir, birds_dir)
    for split in raw.values():
        if len(split) == 0:
            raise StackGANError(f"{birds_dir / split.name / 'filenames.pickle'} lists no images")
    dims = {split.embeddings.shape[2] for split in raw.values()}
    if len(dims) != 1:
        raise StackGANError(f"{birds_dir}: the splits' embeddings differ in size ({dims})")

    with atomic_dir(target) as staging:
        image_started = time.monotonic()
        digests: dict[str, str] = {}
        with task_progress() as progress:
            for split in raw.values():
                task = progress.add_task(f"{name} {split.name} images", total=len(split))
                writer = SplitWriter(staging, split.name, len(split))
                tasks = [
                    (str(p), box) for p, box in zip(split.image_paths, split.bboxes, strict=True)
                ]
                for crops in pmap(cub.load_image_task, tasks):
                    writer.append(crops)
                    progress.advance(task)
                digests.update(
                    writer.finish(
                        embeddings=split.embeddings,
                        captions=split.captions,
                        class_ids=split.class_ids,
                        filenames=split.keys,
                    )
                )
        image_seconds = time.monotonic() - image_started

        report = None
        if text_encoder:
            report = _train_text_encoder(raw, staging / TEXT_ENCODER_FILE, text_encoder_epochs)

        metadata = {
            "format_version": FORMAT_VERSION,
            "dataset": name,
            "fingerprint": fingerprint(digests),
            "splits": {
                split.name: {
                    "images": len(split),
                    "classes": len(np.unique(split.class_ids)),
                    "captions": sum(len(c) for c in split.captions),
                }
                for split in raw.values()
            },
            "image_sizes": list(cub.IMAGE_SIZES),
            "text_dim": dims.pop(),
            "text_encoder": report,
            "files": digests,
            "inputs": inputs,
            "bytes": directory_size(staging),
            "seconds": {
                "images": round(image_seconds, 3),
                "total": round(time.monotonic() - started, 3),
            },
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "stackgan_version": __version__,
        }
        write_metadata(staging, metadata)
    return PrepareResult(target, metadata, False, time.monotonic() - started)


def _train_text_encoder(
    raw: dict[str, cub.RawSplit], destination: Path, epochs: int | None
) -> dict[str, Any]:
    """Train the text encoder on the train split, evaluate on test, save it; its report."""
    from stackgan_cli.text import train_text_encoder

    train, test = raw["train"], raw["test"]
    encoder, report = train_text_encoder(
        train.captions,
        train.embeddings,
        test.captions,
        test.embeddings,
        seed=0,
        epochs=epochs,
    )
    atomic_torch_save(encoder.to_dict(), destination)
    return dict(report)


@contextlib.contextmanager
def _parallel_map(workers: int | None) -> Iterator[ParallelMap]:
    """Yield an ordered ``map(fn, items)`` that runs in ``workers`` processes (default
    ``default_workers()``; 0 or 1: in this process). Results arrive one by one, so the caller
    can stream them to disk and hold only a few at a time."""
    workers = default_workers() if workers is None else workers
    if workers <= 1:
        yield map
        return
    # spawn rather than fork: the parent may hold torch's threads, which fork cannot copy.
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers) as pool:
        yield lambda fn, items: pool.imap(fn, items, chunksize=_POOL_CHUNK)


def _cub_sources(
    source_dir: Path | None, *, mirror: str | None, verify: bool, force: bool
) -> tuple[dict[str, Path], dict[str, Any]]:
    """The unpacked ``CUB_200_2011`` and ``birds`` folders to read, and what they came from."""
    from stackgan_cli.data.sources import ARTIFACTS

    raw = paths.raw_dir("cub")
    folders: dict[str, Path] = {}
    inputs: dict[str, Any] = {}
    for folder, archive_name in CUB_PARTS:
        artifact = ARTIFACTS[archive_name]
        if source_dir is not None:
            source_dir = Path(source_dir).expanduser()
            if (source_dir / folder).is_dir():
                folders[folder] = source_dir / folder
                inputs[folder] = {"directory": str((source_dir / folder).resolve())}
                continue
            archive = source_dir / archive_name
            if not archive.is_file():
                raise StackGANError(
                    f"{source_dir} holds neither {folder}/ nor {archive_name} (--source-dir)"
                )
            verified = _check_archive(archive, artifact, verify)
        else:
            from stackgan_cli.data.download import fetch

            archive = fetch(artifact, paths.downloads_dir(), mirror=mirror, verify=verify)
            # fetch refuses a mismatch when verifying; otherwise it only warned
            verified = verify and _has_checksum(artifact)
        inputs[archive_name] = _archive_record(archive, artifact, verified)
        folders[folder] = _unpack(archive, raw, folder, force=force)
    return folders, inputs


def _check_archive(archive: Path, artifact, verify: bool) -> bool:
    """Whether ``archive`` matches the artifact's published checksum; a mismatch is an error,
    or a warning when ``verify`` is off. An artifact with no checksum is not verified."""
    from stackgan_cli.data.download import describe_mismatch

    if not _has_checksum(artifact):
        return False
    problem = describe_mismatch(archive, artifact)
    if problem is None:
        return True
    if verify:
        raise StackGANError(
            f"{archive} {problem}; pass --no-verify to use a repacked or partial archive"
        )
    warn(f"{archive} {problem}; using it anyway (--no-verify)")
    return False


def _has_checksum(artifact) -> bool:
    return bool(artifact.md5 or artifact.sha256)


def _archive_record(archive: Path, artifact, verified: bool) -> dict[str, Any]:
    """What metadata.json records of an input archive: size, MD5 (the published one when it
    verified, else computed here) and whether it matched the published checksums."""
    md5 = artifact.md5 if verified and artifact.md5 else file_hashes(archive, ["md5"])["md5"]
    return {
        "path": str(archive.resolve()),
        "bytes": archive.stat().st_size,
        "md5": md5,
        "verified": verified,
    }


def _unpack(archive: Path, raw: Path, folder: str, *, force: bool) -> Path:
    """Unpack ``folder/`` of ``archive`` to ``raw/folder``, unless an earlier run already
    unpacked this very file (same size and modification time) and ``force`` is off."""
    from stackgan_cli.data.archives import safe_extract

    target = raw / folder
    marker = raw / f".{folder}.unpacked.json"
    stat = archive.stat()
    identity = {
        "archive": str(archive.resolve()),
        "bytes": stat.st_size,
        "mtime_ns": stat.st_mtime_ns,
    }
    if not force and target.is_dir() and _read_json(marker) == identity:
        info(f"Using {target} (already unpacked from {archive.name})")
        return target
    info(f"Unpacking {archive} to {target}")
    marker.unlink(missing_ok=True)
    safe_extract(archive, target, root=folder)
    atomic_write_text(marker, json.dumps(identity))
    return target


def _existing_metadata(target: Path) -> dict[str, Any] | None:
    """The metadata of a complete prepared dataset at ``target``, else ``None``."""
    if not (target / METADATA_FILE).is_file():
        return None
    try:
        return read_metadata(target)
    except StackGANError:
        return None  # damaged or from another format version: prepare it again


@contextlib.contextmanager
def _dataset_lock(name: str) -> Iterator[None]:
    """Hold an exclusive lock on one dataset's folder for the whole prepare, and clear the
    temporary folders a killed earlier prepare may have left (safe only under the lock)."""
    folder = paths.dataset_dir(name)
    folder.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(folder / ".lock", f"another `stackgan prepare {name}` is running"):
        _remove_leftovers(folder)
        yield


def _remove_leftovers(folder: Path) -> None:
    """Delete ``.NAME.*.tmp`` / ``.NAME.old`` folders left by ``atomic_dir`` in a killed run."""
    for parent in (folder, folder / "raw"):
        if not parent.is_dir():
            continue
        for leftover in [*parent.glob(".*.tmp"), *parent.glob(".*.old")]:
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                leftover.unlink(missing_ok=True)


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
