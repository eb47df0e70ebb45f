"""``stackgan prepare``: sources -> ``raw/`` -> ``prepared/`` -> text encoder.

``prepare_cub`` gets the two upstream archives (download, or ``--source-dir``), unpacks them to
``raw/`` and prepares; ``prepare_shapes`` generates the synthetic dataset into ``raw/`` in the
same layout and prepares it the same way. Preparing streams every image through the official
crop into memory-mapped arrays inside a temporary folder, trains the text encoder, writes
``metadata.json`` and only then renames the folder into place: a prepare that is interrupted
leaves no prepared dataset behind. ``prepare_folder`` prepares one's own folder of images and
captions (data/folder.py), read where it is, the same way but with no embeddings and no text
encoder. ``prepare_flowers`` and ``prepare_coco`` get the StackGAN paper's other two datasets
in their upstream layouts (data/flowers.py, data/coco.py) and write them through
data/resumable.py, whose staging folder outlives an interruption: running the same prepare
again resumes after the last image written.
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from stackgan_cli import __version__, paths
from stackgan_cli.console import info, task_progress, warn
from stackgan_cli.data import coco as coco_data
from stackgan_cli.data import cub, resumable, shapes
from stackgan_cli.data import flowers as flowers_data
from stackgan_cli.data import folder as folder_data
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
from stackgan_cli.errors import StackGANError, UsageError
from stackgan_cli.fsutil import (
    atomic_dir,
    atomic_torch_save,
    atomic_write_text,
    exclusive_lock,
    file_hashes,
)

CUB_PARTS = (("CUB_200_2011", "CUB_200_2011.tgz"), ("birds", "birds.zip"))
"""(unpacked folder, archive) of each upstream artifact."""
FLOWERS_PARTS = (("jpg", "102flowers.tgz"), ("flowers", "flowers.zip"))
COCO_PARTS = (("coco", "coco.zip"),)
"""COCO's split, captions and embeddings; its images (``train2014.zip``, ``val2014.zip``) are
read in place, and ``val_captions.t7`` may come inside ``coco/test/`` or beside it."""
_POOL_CHUNK = 4  # images in flight per worker process
SKIPPED_FILE = "skipped.jsonl"
"""The images ``--skip-bad`` left out of a folder's prepared dataset: file, line, reason."""

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


def prepare_folder(
    folder: Path | str,
    *,
    name: str | None = None,
    test_fraction: float | None = None,
    skip_bad: bool = False,
    force: bool = False,
    workers: int | None = None,
    seed: int = 0,
) -> PrepareResult:
    """Prepare one's own folder of images and captions (either layout of data/folder.py) into
    ``paths.prepared_dir(name)``; ``name`` defaults to the folder's name.

    Split folders are kept; otherwise ``test_fraction`` (default 0.2; 0: no test split) of the
    images go to test, whole classes when the folder has classes, drawn from ``seed``. Every
    image is checked from its header before any is decoded. A bad image (row) is refused with
    one line naming it, unless ``skip_bad``: then it is left out, counted in a warning and
    listed in ``skipped.jsonl``. Already prepared: nothing is done unless ``force``.
    """
    started = time.monotonic()
    root = folder_data.check_folder(folder)
    name = folder_data.dataset_name(root, name)
    folder_data.check_test_fraction(test_fraction)
    target = paths.prepared_dir(name)
    with _dataset_lock(name):
        existing = _existing_metadata(target)
        if existing is not None and not force:
            note = _folder_note(existing, root, test_fraction, seed)
            return PrepareResult(target, existing, True, time.monotonic() - started, note)
        info(f"Reading {root}")
        index = folder_data.read_folder(root)
        if index.split_folders and test_fraction is not None:
            raise UsageError(
                f"--test-fraction: {root} has split folders (train/, test/), which are kept "
                "as the splits; leave --test-fraction out"
            )
        for ignored in index.ignored:
            warn(f"{root / ignored}: not a split stackgan keeps (train, test); left out")
        fraction = folder_data.DEFAULT_TEST_FRACTION if test_fraction is None else test_fraction
        bad = _BadRows(skip_bad)
        bad.add(index.bad)
        with _parallel_map(workers) as pmap:
            images = _checked_images(index.images, pmap, bad)
            if not images:
                raise bad.nothing_left(str(root))
            splits, how = folder_data.plan_splits(images, fraction, seed)
            inputs = {
                "path": str(root),
                "layout": index.layout,
                "split": how,
                "test_fraction": None if index.split_folders else fraction,
                "seed": seed,
            }
            metadata = _write_folder_dataset(
                name, index, splits, target, inputs=inputs, pmap=pmap, bad=bad, started=started
            )
    if bad.rows:
        warn(
            f"left out {len(bad.rows):,} bad image(s) (--skip-bad); they are listed in "
            f"{target / SKIPPED_FILE}"
        )
    if index.truncated:
        warn(
            f"cut {index.truncated:,} caption(s) longer than {folder_data.MAX_CAPTION_CHARS:,} "
            "characters to that length"
        )
    return PrepareResult(target, metadata, False, time.monotonic() - started)


class _BadRows:
    """The bad rows of a folder: the first one is an error, unless ``skip_bad`` keeps them
    (for ``skipped.jsonl``)."""

    def __init__(self, skip_bad: bool) -> None:
        self.skip_bad = skip_bad
        self.rows: list[folder_data.BadRow] = []

    def add(self, rows: Iterable[folder_data.BadRow]) -> None:
        for row in rows:
            if not self.skip_bad:
                raise StackGANError(f"{row} (--skip-bad leaves such images out)")
            self.rows.append(row)

    def nothing_left(self, where: str) -> StackGANError:
        """The error for a folder (or split) with no usable image left."""
        if not self.rows:
            return StackGANError(f"no images in {where}")
        return StackGANError(
            f"no usable image left in {where} ({len(self.rows):,} bad; the first: {self.rows[0]})"
        )


def _checked_images(
    images: list[folder_data.FolderImage], pmap: ParallelMap, bad: _BadRows
) -> list[folder_data.FolderImage]:
    """The images whose header reads and whose box lies on them (none decoded yet)."""
    kept = []
    with task_progress() as progress:
        task = progress.add_task("checking images", total=len(images))
        for image, size in zip(
            images, pmap(folder_data.probe_task, [str(i.path) for i in images]), strict=True
        ):
            progress.advance(task)
            problem = size if isinstance(size, str) else folder_data.bbox_problem(image.bbox, size)
            if problem is None:
                kept.append(image)
            else:
                bad.add([image.bad(problem)])
    return kept


def _write_folder_dataset(
    name: str,
    index: folder_data.FolderIndex,
    splits: dict[str, list[folder_data.FolderImage]],
    target: Path,
    *,
    inputs: dict[str, Any],
    pmap: ParallelMap,
    bad: _BadRows,
    started: float,
) -> dict[str, Any]:
    """Decode, crop and write every split into ``target`` atomically; its metadata."""
    classes = folder_data.class_names([image for items in splits.values() for image in items])
    class_index = {label: i for i, label in enumerate(classes or [])}
    if not splits.get("train"):
        raise bad.nothing_left(f"{index.root} for training")
    with atomic_dir(target) as staging:
        image_started = time.monotonic()
        digests: dict[str, str] = {}
        counts: dict[str, dict[str, int]] = {}
        dropped = next_id = 0
        with task_progress() as progress:
            for split, items in splits.items():
                task = progress.add_task(f"{name} {split} images", total=len(items))
                writer = SplitWriter(staging, split, len(items))
                tasks = [(str(image.path), image.bbox) for image in items]
                kept = []
                for image, crops in zip(items, pmap(folder_data.crop_task, tasks), strict=True):
                    progress.advance(task)
                    if isinstance(crops, str):
                        bad.add([image.bad(crops)])
                        continue
                    writer.append(crops)
                    kept.append(image)
                if not kept:
                    if split == "train":
                        raise bad.nothing_left(f"{index.root} for training")
                    warn(f"no usable image left for the {split} split: it is not written")
                    shutil.rmtree(staging / split)
                    continue
                writer.shrink()
                captions = []
                for image in kept:
                    filled, extra = folder_data.fill_captions(image.captions)
                    captions.append(filled)
                    dropped += extra
                if classes is None:  # each image its own class
                    class_ids = np.arange(next_id, next_id + len(kept), dtype=np.int64)
                    next_id += len(kept)
                else:
                    class_ids = np.array([class_index[str(i.label)] for i in kept], np.int64)
                digests.update(
                    writer.finish(
                        embeddings=np.zeros((len(kept), cub.CAPTIONS_PER_IMAGE, 0), np.float32),
                        captions=captions,
                        class_ids=class_ids,
                        filenames=[image.key for image in kept],
                    )
                )
                counts[split] = {
                    "images": len(kept),
                    "classes": len(np.unique(class_ids)),
                    "captions": sum(min(len(i.captions), cub.CAPTIONS_PER_IMAGE) for i in kept),
                }
        image_seconds = time.monotonic() - image_started
        if bad.rows:
            lines = "".join(json.dumps(row.record(), ensure_ascii=False) + "\n" for row in bad.rows)
            atomic_write_text(staging / SKIPPED_FILE, lines)
        metadata = {
            "format_version": FORMAT_VERSION,
            "dataset": name,
            "fingerprint": fingerprint(digests),
            "splits": counts,
            "image_sizes": list(cub.IMAGE_SIZES),
            "text_dim": 0,
            "text_encoder": None,
            "classes": classes,
            "captions": {
                "per_image": cub.CAPTIONS_PER_IMAGE,
                "dropped": dropped,
                "truncated": index.truncated,
            },
            "files": digests,
            "inputs": {"folder": {**inputs, "skipped": len(bad.rows)}},
            "bytes": directory_size(staging),
            "seconds": {
                "images": round(image_seconds, 3),
                "total": round(time.monotonic() - started, 3),
            },
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "stackgan_version": __version__,
        }
        write_metadata(staging, metadata)
    return metadata


def _folder_note(
    existing: dict[str, Any], root: Path, test_fraction: float | None, seed: int
) -> str:
    """How an already prepared dataset differs from the folder and split asked for."""
    stored = existing.get("inputs", {}).get("folder")
    if not isinstance(stored, dict):
        return "It was not prepared from a folder; add --force to prepare it from this one."
    differs = stored.get("path") != str(root) or stored.get("seed") != seed
    if test_fraction is not None and stored.get("test_fraction") != test_fraction:
        differs = True
    if not differs:
        return ""
    return (
        f"It was prepared from {stored.get('path')} (--test-fraction "
        f"{stored.get('test_fraction')} --seed {stored.get('seed')}); add --force to prepare "
        "it again as asked."
    )


def prepare_flowers(
    *,
    source_dir: Path | None = None,
    mirror: str | None = None,
    verify: bool = True,
    force: bool = False,
    workers: int | None = None,
    text_encoder: bool = True,
    text_encoder_epochs: int | None = None,
    chunk: int = resumable.CHUNK_IMAGES,
) -> PrepareResult:
    """Prepare Oxford-102 flowers with StackGAN's split, captions and embeddings into
    ``paths.prepared_dir("flowers")``.

    Sources as for ``prepare_cub``: ``102flowers.tgz`` and ``flowers.zip`` downloaded (or from
    ``mirror``), or taken from ``source_dir`` as archives or as their unpacked folders ``jpg/``
    and ``flowers/``. Each image is resized whole (no crop). An interrupted prepare resumes
    when run again (``chunk`` images between two checkpoints); ``force`` redoes everything.
    """
    started = time.monotonic()
    target = paths.prepared_dir("flowers")
    with _dataset_lock("flowers"):
        existing = _existing_metadata(target)
        if existing is not None and not force:
            _discard_partial(target)
            return PrepareResult(target, existing, True, time.monotonic() - started)
        folders, inputs = _gather_sources(
            "flowers", FLOWERS_PARTS, source_dir, mirror=mirror, verify=verify, force=force
        )
        jpg_dir, flowers_dir = folders["jpg"], folders["flowers"]
        images_from = inputs.get("102flowers.tgz", {}).get("path", str(jpg_dir.parent))
        info(f"Reading {jpg_dir} and {flowers_dir}")
        plans = flowers_data.read_raw(jpg_dir, flowers_dir, images_from=images_from)
        with _parallel_map(workers) as pmap:
            return _prepare_resumable(
                "flowers",
                plans,
                target,
                inputs=inputs,
                pmap=pmap,
                fresh=force,
                chunk=chunk,
                text_encoder=text_encoder,
                text_encoder_epochs=text_encoder_epochs,
                extra={"crop": "none (the whole image is resized)"},
                started=started,
            )


def prepare_coco(
    *,
    source_dir: Path | None = None,
    mirror: str | None = None,
    verify: bool = True,
    force: bool = False,
    workers: int | None = None,
    text_encoder: bool = True,
    text_encoder_epochs: int | None = None,
    chunk: int = resumable.CHUNK_IMAGES,
) -> PrepareResult:
    """Prepare MS-COCO 2014 with StackGAN-Pytorch's split, captions and embeddings into
    ``paths.prepared_dir("coco")``.

    ``coco.zip`` (unpacked to ``raw/coco``) and ``val_captions.t7`` are read first; then only
    the image archives the split's keys refer to (``train2014.zip``, ``val2014.zip``) are
    fetched, and read in place. ``source_dir`` may hold the archives or the unpacked folders
    ``coco/``, ``train2014/``, ``val2014/``. The 5 captions of an image fill the 10 slots of the
    prepared format in order; each image is its own class. An interrupted prepare resumes when
    run again (``chunk`` images between two checkpoints); ``force`` redoes everything.
    """
    started = time.monotonic()
    target = paths.prepared_dir("coco")
    with _dataset_lock("coco"):
        existing = _existing_metadata(target)
        if existing is not None and not force:
            _discard_partial(target)
            return PrepareResult(target, existing, True, time.monotonic() - started)
        folders, inputs = _gather_sources(
            "coco", COCO_PARTS, source_dir, mirror=mirror, verify=verify, force=force
        )
        coco_dir = folders["coco"]
        t7 = coco_dir / "test" / coco_data.TEST_CAPTIONS
        if not t7.is_file():
            missing = (
                f"{source_dir} holds neither {t7} nor {coco_data.TEST_CAPTIONS} (--source-dir)"
            )
            t7, inputs[coco_data.TEST_CAPTIONS] = _source_file(
                coco_data.TEST_CAPTIONS, source_dir, mirror=mirror, verify=verify, missing=missing
            )
        info(f"Reading {coco_dir}")
        keys = coco_data.read_split_keys(coco_dir)
        image_parts = [(f, f"{f}.zip") for f in coco_data.folders_needed(coco_dir, keys)]
        sources, image_inputs = _gather_sources(
            "coco", image_parts, source_dir, mirror=mirror, verify=verify, force=force, unpack=False
        )
        inputs.update(image_inputs)
        indexes = {f: coco_data.ImageIndex(f, path) for f, path in sources.items()}
        plans = coco_data.read_raw(coco_dir, t7, indexes, keys)
        extra = {
            "classes": None,
            "crop": "none (the whole image is resized)",
            "captions": {
                "per_image": cub.CAPTIONS_PER_IMAGE,
                "from": {split: plan.per_image for split, plan in plans.items()},
                "fill": "each image's captions (and embeddings) repeated in order",
            },
        }
        with _parallel_map(workers) as pmap:
            return _prepare_resumable(
                "coco",
                plans,
                target,
                inputs=inputs,
                pmap=pmap,
                fresh=force,
                chunk=chunk,
                text_encoder=text_encoder,
                text_encoder_epochs=text_encoder_epochs,
                extra=extra,
                started=started,
            )


def _prepare_resumable(
    name: str,
    plans: dict[str, resumable.SplitPlan],
    target: Path,
    *,
    inputs: dict[str, Any],
    pmap: ParallelMap,
    fresh: bool,
    chunk: int,
    text_encoder: bool,
    text_encoder_epochs: int | None,
    extra: dict[str, Any],
    started: float,
) -> PrepareResult:
    """Write checked split plans through a resumable staging folder (data/resumable.py),
    train the text encoder, write the metadata and rename the folder into place."""
    dims = {plan.text_dim for plan in plans.values()}
    if len(dims) != 1:
        raise StackGANError(f"{name}: the splits' embeddings differ in size ({sorted(dims)})")
    key = resumable.inputs_key(name, inputs, plans)
    counts = {split: len(plan) for split, plan in plans.items()}
    images = resumable.ResumableImages.open(target, key, counts, fresh=fresh)
    reused = sum(images.resumed.values())
    if reused:
        info(f"Resuming an interrupted prepare of {name}: {reused:,} images already written")
    image_started = time.monotonic()
    try:
        decoded = resumable.stream_images(images, plans, pmap, label=name, chunk=chunk)
        digests: dict[str, str] = {}
        for plan in plans.values():
            digests.update(images.finish_split(plan))
    finally:
        images.close()
        resumable.close_archives()
    image_seconds = time.monotonic() - image_started

    report = None
    if text_encoder:
        report = _train_text_encoder_on_plans(
            plans, images.staging, images.staging / TEXT_ENCODER_FILE, text_encoder_epochs
        )
    metadata = {
        "format_version": FORMAT_VERSION,
        "dataset": name,
        "fingerprint": fingerprint(digests),
        "splits": {
            split: {
                "images": len(plan),
                "classes": len(np.unique(plan.class_ids)),
                "captions": len(plan) * plan.per_image,
            }
            for split, plan in plans.items()
        },
        "image_sizes": list(cub.IMAGE_SIZES),
        "text_dim": dims.pop(),
        "text_encoder": report,
        **extra,
        "files": digests,
        "inputs": inputs,
        "bytes": directory_size(images.staging),
        "seconds": {
            "images": round(image_seconds, 3),
            "total": round(time.monotonic() - started, 3),
        },
        "images_resumed": reused,
        "images_decoded": decoded,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "stackgan_version": __version__,
    }
    write_metadata(images.staging, metadata)
    images.commit(target)
    return PrepareResult(target, metadata, False, time.monotonic() - started)


def _discard_partial(target: Path) -> None:
    """Delete the staging folder an interrupted ``--force`` prepare left beside a complete
    dataset: a later ``--force`` starts over anyway, so it could only take up space."""
    staging = resumable.staging_dir(target)
    if staging.exists():
        info(f"Removing {staging}, left by an interrupted `--force` prepare")
        shutil.rmtree(staging, ignore_errors=True)


def _train_text_encoder_on_plans(
    plans: dict[str, resumable.SplitPlan], staging: Path, destination: Path, epochs: int | None
) -> dict[str, Any]:
    """Train the text encoder as for CUB (``_train_text_encoder``) on each image's own
    captions (the repeats that fill them to 10 would only weigh them twice), with their
    embeddings read back from the staged files; save it; its report."""
    from stackgan_cli.text import train_text_encoder

    def pairs(split: str) -> tuple[list[list[str]], np.ndarray]:
        plan = plans[split]
        stored = np.load(staging / split / "embeddings.npy", mmap_mode="r")
        return plan.source_captions(), stored[:, : plan.per_image]

    encoder, report = train_text_encoder(*pairs("train"), *pairs("test"), seed=0, epochs=epochs)
    atomic_torch_save(encoder.to_dict(), destination)
    return dict(report)


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
    # An executor fed a bounded window of tasks rather than Pool.imap: imap's feeder thread
    # pushes every task into a pipe at once, and a Pool terminated after a worker's error can
    # then wait forever on that full pipe.
    context = multiprocessing.get_context("spawn")
    pool = ProcessPoolExecutor(workers, mp_context=context)
    window = workers * _POOL_CHUNK

    def ordered(fn: Callable, items: Iterable) -> Iterator:
        pending: collections.deque = collections.deque()
        remaining = iter(items)
        for item in itertools.islice(remaining, window):
            pending.append(pool.submit(fn, item))
        while pending:
            result = pending.popleft().result()
            for item in itertools.islice(remaining, 1):
                pending.append(pool.submit(fn, item))
            yield result

    try:
        yield ordered
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


def _cub_sources(
    source_dir: Path | None, *, mirror: str | None, verify: bool, force: bool
) -> tuple[dict[str, Path], dict[str, Any]]:
    """The unpacked ``CUB_200_2011`` and ``birds`` folders to read, and what they came from."""
    return _gather_sources("cub", CUB_PARTS, source_dir, mirror=mirror, verify=verify, force=force)


def _gather_sources(
    dataset: str,
    parts: Iterable[tuple[str, str]],
    source_dir: Path | None,
    *,
    mirror: str | None,
    verify: bool,
    force: bool,
    unpack: bool = True,
) -> tuple[dict[str, Path], dict[str, Any]]:
    """For each ``(folder, archive)`` part: ``source_dir/folder`` when it is a folder (used in
    place), else the archive (from ``source_dir``, or downloaded) unpacked to
    ``raw/folder``, or with ``unpack=False`` the archive itself (a zip read in place). Returns
    ``{folder: path}`` and what ``metadata.json`` records of the inputs."""
    raw = paths.raw_dir(dataset)
    folders: dict[str, Path] = {}
    inputs: dict[str, Any] = {}
    for folder, archive_name in parts:
        if source_dir is not None:
            source_dir = Path(source_dir).expanduser()
            if (source_dir / folder).is_dir():
                folders[folder] = source_dir / folder
                inputs[folder] = {"directory": str((source_dir / folder).resolve())}
                continue
        missing = f"{source_dir} holds neither {folder}/ nor {archive_name} (--source-dir)"
        archive, inputs[archive_name] = _source_file(
            archive_name, source_dir, mirror=mirror, verify=verify, missing=missing
        )
        folders[folder] = _unpack(archive, raw, folder, force=force) if unpack else archive
    return folders, inputs


def _source_file(
    name: str, source_dir: Path | None, *, mirror: str | None, verify: bool, missing: str
) -> tuple[Path, dict[str, Any]]:
    """The upstream file ``name``, from ``source_dir`` (``missing`` is the error when it is not
    there) or downloaded into the cache, checked; its path and its record for metadata.json."""
    from stackgan_cli.data.sources import ARTIFACTS

    artifact = ARTIFACTS[name]
    if source_dir is not None:
        path = Path(source_dir).expanduser() / name
        if not path.is_file():
            raise StackGANError(missing)
        verified = _check_archive(path, artifact, verify)
    else:
        from stackgan_cli.data.download import fetch

        path = fetch(artifact, paths.downloads_dir(), mirror=mirror, verify=verify)
        # fetch refuses a mismatch when verifying; otherwise it only warned
        verified = verify and _has_checksum(artifact)
    return path, _archive_record(path, artifact, verified)


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
    folder = paths.make_cache_dir(paths.dataset_dir(name))
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
