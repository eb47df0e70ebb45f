"""Reading one's own folder of images and captions (``stackgan prepare PATH``).

Two layouts are read, the two people already have:

- the image-folder layout (Hugging Face ``imagefolder``): a ``metadata.jsonl`` with one JSON
  object per image, ``{"file_name": "a/b.jpg", "text": "a caption" | ["one", "two", ...],
  "label": "class" | 3, "bbox": [x, y, width, height]}`` (``label``, or ``class``, and ``bbox``
  optional; other keys ignored), ``file_name`` relative to the folder of its ``metadata.jsonl``.
  It sits at the root, or in split folders ``train/metadata.jsonl`` (and ``test/``), which are
  then kept as the splits;
- CUB's own layout: ``images/<class>/<name>.<ext>`` with ``text/<class>/<name>.txt``, one
  caption per line (what StackGAN's ``text_c10`` is), and optionally ``bounding_boxes.txt``,
  either CUB's own (``<id> x y w h`` with ``images.txt``'s ``<id> <class>/<name>.<ext>``) or
  ``<class>/<name>.<ext> x y w h`` lines.

Bounding boxes are in pixels of the image as displayed (after its EXIF orientation), as CUB's.

Every row is checked here without decoding an image; a row that cannot be used becomes a
``BadRow`` naming the file (and line) and the reason, which the caller refuses or, with
``--skip-bad``, leaves out. Problems that are not one image's (an unreadable
``metadata.jsonl``, a malformed ``bounding_boxes.txt`` line, neither layout) raise
``StackGANError`` at once. Paths are judged lexically: a ``file_name`` whose normalised path
leaves its folder is refused, while symbolic links inside the folder are followed wherever they
point (Hugging Face snapshots are links into its blob store).
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stackgan_cli.data import cub
from stackgan_cli.data.images import BadImage, load_crops, probe_image
from stackgan_cli.errors import StackGANError, UsageError

METADATA = "metadata.jsonl"
SPLIT_FOLDERS = ("train", "test")
MAX_CAPTION_CHARS = 1000
"""Captions are cut to this many characters: far more than the text encoders read (the
char-CNN-RNN 201 characters, the DAMSM 18 words), so a long one is truncated, not refused."""
DEFAULT_TEST_FRACTION = 0.2
RESERVED_NAMES = ("cub", "shapes", "flowers", "coco")
"""Dataset names ``stackgan prepare`` has its own recipes for."""
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
)
"""Files under ``images/`` of the CUB layout that count as images (case-insensitive)."""

_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]*")
_SPLIT_TRIALS = 16  # seeded class orders tried for the class-disjoint split


@dataclass(frozen=True)
class BadRow:
    """One image (row) that cannot be used: where it is named, and why (one line)."""

    file: Path
    line: int | None
    reason: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line is not None else str(self.file)
        return f"{where}: {self.reason}"

    def record(self) -> dict[str, Any]:
        """The row as one object of ``skipped.jsonl``."""
        return {"file": str(self.file), "line": self.line, "reason": self.reason}


@dataclass
class FolderImage:
    """One image of the folder with its captions (1 or more, as given), class and box."""

    path: Path  # the image file, lexically inside the folder (links are followed on reading)
    key: str  # the prepared dataset's filename: its path without extension
    captions: list[str]
    label: str | int | None
    bbox: cub.BBox | None
    source: Path  # the file that names it: metadata.jsonl, or the image itself
    line: int | None  # its line in metadata.jsonl
    name: str  # how messages call it: its file_name, or nothing for the image itself
    split: str | None = None  # its split folder, if any

    def bad(self, reason: str) -> BadRow:
        """A ``BadRow`` for this image."""
        return BadRow(self.source, self.line, f"{self.name}: {reason}" if self.name else reason)


@dataclass
class FolderIndex:
    """What a folder holds: its usable rows, its bad ones and how it was laid out."""

    root: Path
    layout: str  # "metadata.jsonl" or "cub"
    images: list[FolderImage]
    bad: list[BadRow]
    split_folders: bool
    truncated: int = 0  # captions cut to MAX_CAPTION_CHARS
    ignored: list[str] = field(default_factory=list)  # split folders that are not train/test


def check_folder(path: Path | str) -> Path:
    """The absolute (lexical: links kept) path of the folder to prepare; ``UsageError``
    when there is none."""
    folder = Path(os.path.abspath(Path(path).expanduser()))
    if not folder.exists():
        raise UsageError(f"no folder at {path}")
    if not folder.is_dir():
        raise UsageError(f"{path} is a file, not a folder of images")
    return folder


def dataset_name(folder: Path, name: str | None) -> str:
    """The dataset name: ``name``, or the folder's own name; ``UsageError`` when it is not a
    bare name or is one of the built-in datasets."""
    option = "--name" if name is not None else "the folder's name (pass --name NAME)"
    chosen = name if name is not None else folder.name
    if not _NAME.fullmatch(chosen):
        raise UsageError(
            f"{option}: {chosen!r} is not a dataset name (letters, digits, '.', '_', '-', "
            "not starting with '.')"
        )
    if chosen.lower() in RESERVED_NAMES:
        raise UsageError(
            f"{option}: {chosen!r} is a built-in dataset's name; pass --name NAME to prepare "
            "this folder under another one"
        )
    return chosen


def check_test_fraction(fraction: float | None) -> float | None:
    """``fraction`` when it is within [0, 1); ``UsageError`` otherwise."""
    if fraction is not None and not (0.0 <= fraction < 1.0):
        raise UsageError(f"--test-fraction: must be at least 0 and below 1, got {fraction}")
    return fraction


def read_folder(root: Path) -> FolderIndex:
    """Read ``root`` in whichever layout it has (``StackGANError`` when neither)."""
    root = Path(root)
    at_root = root / METADATA
    in_splits = [root / split / METADATA for split in SPLIT_FOLDERS]
    if at_root.is_file() and any(path.is_file() for path in in_splits):
        raise StackGANError(
            f"{root} holds both {METADATA} and {in_splits[0].relative_to(root)}: keep one "
            "(split folders are kept as the splits; a root one is split by --test-fraction)"
        )
    if at_root.is_file():
        return _read_metadata_layout(root, [(at_root, None)])
    if in_splits[0].is_file():
        sources = [
            (path, split)
            for path, split in zip(in_splits, SPLIT_FOLDERS, strict=True)
            if path.is_file()
        ]
        index = _read_metadata_layout(root, sources)
        index.ignored = sorted(
            p.parent.name for p in root.glob(f"*/{METADATA}") if p.parent.name not in SPLIT_FOLDERS
        )
        return index
    if in_splits[1].is_file():
        raise StackGANError(f"{in_splits[1]} has no {in_splits[0].relative_to(root)} beside it")
    if (root / "images").is_dir() and (root / "text").is_dir():
        return _read_cub_layout(root)
    raise StackGANError(
        f"{root} is in neither layout: expected {METADATA} (or train/{METADATA}) for the image "
        "folder layout, or images/ and text/ folders for CUB's"
    )


def class_names(images: list[FolderImage]) -> list[str] | None:
    """The distinct labels of ``images`` as names in class-id order (numerically when every
    label is a number, else by name), or None when no image has a label."""
    labels = {image.label for image in images if image.label is not None}
    if not labels:
        return None
    if all(isinstance(label, int) for label in labels):
        return [str(label) for label in sorted(labels)]  # type: ignore[type-var]
    return sorted({str(label) for label in labels})


def plan_splits(
    images: list[FolderImage], test_fraction: float, seed: int
) -> tuple[dict[str, list[FolderImage]], str]:
    """The images of each split (in their order in the folder) and how they were split:
    ``"folders"`` (the split folders), ``"none"`` (``test_fraction`` 0: all for training),
    ``"classes"`` (whole classes for test, as close to ``test_fraction`` of the images as
    the classes allow) or ``"images"`` (random images: no classes, or only one)."""
    if any(image.split is not None for image in images):
        splits = {
            split: [image for image in images if image.split == split] for split in SPLIT_FOLDERS
        }
        return {split: items for split, items in splits.items() if items}, "folders"
    if test_fraction == 0:
        return {"train": list(images)}, "none"
    if len(images) < 2:
        raise UsageError(
            f"--test-fraction {test_fraction}: one image cannot be split into train and test; "
            "pass --test-fraction 0"
        )
    rng = np.random.default_rng(seed)
    names = class_names(images)
    if names is not None and len(names) >= 2:
        counts: dict[str, int] = {}
        for image in images:
            counts[str(image.label)] = counts.get(str(image.label), 0) + 1
        test_classes = _pick_test_classes(
            [counts[name] for name in names], test_fraction * len(images), rng
        )
        chosen = {names[i] for i in test_classes}
        is_test = [str(image.label) in chosen for image in images]
        how = "classes"
    else:
        count = min(max(1, round(test_fraction * len(images))), len(images) - 1)
        picked = set(rng.permutation(len(images))[:count].tolist())
        is_test = [i in picked for i in range(len(images))]
        how = "images"
    return {
        "train": [image for image, test in zip(images, is_test, strict=True) if not test],
        "test": [image for image, test in zip(images, is_test, strict=True) if test],
    }, how


def fill_captions(captions: list[str]) -> tuple[list[str], int]:
    """Exactly ``cub.CAPTIONS_PER_IMAGE`` captions from 1 or more: repeated in order when
    fewer, the first ones when more; and how many were dropped."""
    wanted = cub.CAPTIONS_PER_IMAGE
    if len(captions) >= wanted:
        return list(captions[:wanted]), len(captions) - wanted
    return [captions[i % len(captions)] for i in range(wanted)], 0


def bbox_problem(bbox: cub.BBox | None, size: tuple[int, int]) -> str | None:
    """Why ``bbox`` cannot be used in an image of ``size`` (it misses the image), or None."""
    if bbox is None:
        return None
    x, y, w, h = bbox
    width, height = size
    if x >= width or y >= height or x + w <= 0 or y + h <= 0:
        return f"bbox {list(bbox)} lies outside the {width}x{height} image"
    return None


def probe_task(path: str) -> tuple[int, int] | str:
    """The displayed size of the image at ``path`` from its header, or why it cannot be used:
    the unit of work of the check pass (a process pool's, so errors come back as values)."""
    try:
        return probe_image(path)
    except BadImage as exc:
        return str(exc)


def crop_task(task: tuple[str, cub.BBox | None]) -> list[np.ndarray] | str:
    """The crops of one ``(path, bbox)`` (``images.load_crops``), or why it cannot be decoded:
    the unit of work of the image pass."""
    path, bbox = task
    try:
        return load_crops(path, bbox)
    except BadImage as exc:
        return str(exc)


# --- the image-folder layout ---------------------------------------------------------------


def _read_metadata_layout(root: Path, sources: list[tuple[Path, str | None]]) -> FolderIndex:
    images: list[FolderImage] = []
    bad: list[BadRow] = []
    seen: dict[str, tuple[Path, int]] = {}
    truncated = 0
    for path, split in sources:
        base = path.parent
        for line_no, row in _json_lines(path, bad):
            image = _metadata_row(row, path, line_no, base, root, split, bad)
            if image is None:
                continue
            identity = image.path.relative_to(root).as_posix()
            if identity in seen:
                first, first_line = seen[identity]
                bad.append(image.bad(f"listed twice (first at {first}:{first_line})"))
                continue
            seen[identity] = (path, line_no)
            truncated += sum(_was_truncated(c) for c in image.captions)
            image.captions = [_truncate(c) for c in image.captions]
            images.append(image)
    images = _agree_on_labels(images, bad)
    return FolderIndex(root, "metadata.jsonl", images, bad, sources[0][1] is not None, truncated)


def _json_lines(path: Path, bad: list[BadRow]):
    """``(line number, object)`` of each non-blank line; a line that is not UTF-8 or not
    JSON becomes a ``BadRow``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise StackGANError(f"cannot read {path}: {exc.strerror or exc}") from None
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    for line_no, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            bad.append(BadRow(path, line_no, f"not UTF-8 (byte {exc.start + 1})"))
            continue
        try:
            yield line_no, json.loads(text)
        except json.JSONDecodeError as exc:
            bad.append(BadRow(path, line_no, f"not valid JSON ({exc.msg}, column {exc.colno})"))


def _metadata_row(
    row: Any,
    path: Path,
    line_no: int,
    base: Path,
    root: Path,
    split: str | None,
    bad: list[BadRow],
) -> FolderImage | None:
    """The image one JSON object describes, or None after adding its ``BadRow``."""

    def refuse(reason: str) -> None:
        bad.append(BadRow(path, line_no, reason))

    if not isinstance(row, dict):
        return refuse(f"expected a JSON object, found {_json_type(row)}")
    file_name = row.get("file_name")
    if file_name is None:
        return refuse("no file_name")
    if not isinstance(file_name, str) or not file_name.strip():
        return refuse(f"file_name must be a non-empty string, found {_json_type(file_name)}")
    relative = _inside(file_name)
    if relative is None:
        return refuse(f"file_name {file_name!r} leaves the folder {base}")
    captions = _captions_value(row.get("text"))
    if isinstance(captions, str):
        return refuse(f"{file_name}: {captions}")
    label = row.get("label") if row.get("label") is not None else row.get("class")
    if label is not None and (
        isinstance(label, bool) or not isinstance(label, str | int) or not str(label).strip()
    ):
        return refuse(f"{file_name}: label must be a string or an integer, found {label!r}")
    bbox = _bbox_value(row.get("bbox"))
    if isinstance(bbox, str):
        return refuse(f"{file_name}: {bbox}")
    image_path = base / relative
    key = _strip_suffix(image_path.relative_to(root).as_posix())
    return FolderImage(
        image_path,
        key,
        captions,
        label.strip() if isinstance(label, str) else label,
        bbox,
        path,
        line_no,
        file_name,
        split,
    )


def _inside(file_name: str) -> str | None:
    """``file_name`` normalised, or None when it leaves its folder (absolute, or through
    ``..``); lexical, so links inside the folder still point wherever they point."""
    if "\x00" in file_name or os.path.isabs(file_name):
        return None
    normal = os.path.normpath(file_name)
    if normal in (".", os.curdir, os.pardir) or normal.startswith(os.pardir + os.sep):
        return None
    return normal


def _captions_value(text: Any) -> list[str] | str:
    """The captions of a ``text`` value, or why there are none."""
    if text is None:
        return "no text (a caption or a list of captions)"
    values = [text] if isinstance(text, str) else text
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        return f"text must be a caption or a list of captions, found {_json_type(text)}"
    captions = [_clean(v) for v in values]
    captions = [c for c in captions if c]
    return captions or "no caption: text is blank"


def _bbox_value(value: Any) -> cub.BBox | None | str:
    """The box ``[x, y, width, height]`` (truncated to int, as CUB's), or why it is not one."""
    if value is None:
        return None
    numbers = (
        isinstance(value, list)
        and len(value) == 4
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        and all(math.isfinite(v) for v in value)
    )
    if not numbers:
        return f"bbox must be [x, y, width, height] in pixels, found {json.dumps(value)}"
    box = tuple(int(v) for v in value)
    if box[2] < 1 or box[3] < 1:
        return f"bbox {json.dumps(value)}: width and height must be at least 1 pixel"
    return box  # type: ignore[return-value]


def _agree_on_labels(images: list[FolderImage], bad: list[BadRow]) -> list[FolderImage]:
    """When some images have a label, the ones without one are bad rows (their class is
    unknown, and the split is by class)."""
    if not any(image.label is not None for image in images):
        return images
    kept = []
    for image in images:
        if image.label is None:
            bad.append(image.bad("no label, while other images have one"))
        else:
            kept.append(image)
    return kept


# --- CUB's layout --------------------------------------------------------------------------


def _read_cub_layout(root: Path) -> FolderIndex:
    images_dir, text_dir = root / "images", root / "text"
    boxes = _read_boxes(root)
    images: list[FolderImage] = []
    bad: list[BadRow] = []
    by_key: dict[str, Path] = {}
    truncated = 0
    for path in _image_files(images_dir):
        relative = path.relative_to(images_dir)
        image = FolderImage(path, "", [], None, None, path, None, "")
        if len(relative.parts) < 2:
            bad.append(image.bad("not in a class folder (images/<class>/<name>)"))
            continue
        key = _strip_suffix(relative.as_posix())
        if key in by_key:
            bad.append(image.bad(f"has the same name as {by_key[key].name} (one caption file)"))
            continue
        by_key[key] = path
        caption_file = text_dir / f"{key}.txt"
        captions = _read_caption_file(caption_file)
        if isinstance(captions, str):
            bad.append(BadRow(caption_file, None, captions))
            continue
        truncated += sum(_was_truncated(c) for c in captions)
        image.key = key
        image.captions = [_truncate(c) for c in captions]
        image.label = relative.parts[0]
        image.bbox = boxes.get(key)
        images.append(image)
    if not images and not bad:
        raise StackGANError(f"{images_dir} holds no images (images/<class>/<name>.jpg)")
    return FolderIndex(root, "cub", images, bad, False, truncated)


def _image_files(folder: Path) -> list[Path]:
    """The image files under ``folder`` (by extension; hidden names skipped), sorted, with
    linked folders followed once each."""
    found: list[Path] = []
    visited: set[tuple[int, int]] = set()

    def fail(exc: OSError) -> None:
        raise StackGANError(f"cannot list {exc.filename}: {exc.strerror or exc}")

    for current, dirs, files in os.walk(folder, onerror=fail, followlinks=True):
        stat = os.stat(current)
        if (stat.st_dev, stat.st_ino) in visited:  # a link back up: a loop
            dirs[:] = []
            continue
        visited.add((stat.st_dev, stat.st_ino))
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if not name.startswith(".") and Path(name).suffix.lower() in IMAGE_EXTENSIONS:
                found.append(Path(current) / name)
    return sorted(found)


def _read_caption_file(path: Path) -> list[str] | str:
    """The captions of one caption file (one per line), or why it has none."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the read
            return "not a regular file"
        data = path.read_bytes()
    except FileNotFoundError:
        return "missing caption file"
    except OSError as exc:
        return f"cannot read the caption file ({exc.strerror or exc})"
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return f"not UTF-8 (byte {exc.start + 1})"
    captions = [_clean(line) for line in text.splitlines()]
    captions = [c for c in captions if c]
    return captions or "the caption file is empty"


def _read_boxes(root: Path) -> dict[str, cub.BBox]:
    """``bounding_boxes.txt`` as ``{key: box}``; a line of CUB's ``<id> x y w h`` form goes
    through ``images.txt``, any other is ``<class>/<name>.<ext> x y w h``."""
    path = root / "bounding_boxes.txt"
    if not path.is_file():
        return {}
    ids: dict[str, str] = {}
    if (root / "images.txt").is_file():
        for line_no, line in _lines(root / "images.txt"):
            fields = line.split(maxsplit=1)
            if len(fields) != 2:
                raise StackGANError(f"{root / 'images.txt'}:{line_no}: expected '<id> <path>'")
            ids[fields[0]] = fields[1].strip()
    boxes: dict[str, cub.BBox] = {}
    for line_no, line in _lines(path):
        fields = line.rsplit(maxsplit=4)
        try:
            if len(fields) != 5:
                raise ValueError
            box = tuple(int(float(v)) for v in fields[1:])
        except ValueError:
            raise StackGANError(
                f"{path}:{line_no}: expected '<id> x y w h' or '<class>/<name>.<ext> x y w h'"
            ) from None
        if box[2] < 1 or box[3] < 1:
            raise StackGANError(f"{path}:{line_no}: width and height must be at least 1 pixel")
        boxes[_strip_suffix(ids.get(fields[0], fields[0]))] = box  # type: ignore[assignment]
    return boxes


def _lines(path: Path):
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise StackGANError(f"cannot read {path}: {exc}") from None
    for line_no, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield line_no, line.strip()


# --- shared ----------------------------------------------------------------------------------


def _pick_test_classes(counts: list[int], target: float, rng: np.random.Generator) -> list[int]:
    """Indices of the classes for test: whole classes whose images add up as close to
    ``target`` as a greedy pass over several seeded orders finds, at least one class on
    each side."""
    best: list[int] = []
    best_gap = math.inf
    for _ in range(_SPLIT_TRIALS):
        chosen, total = [], 0
        for i in rng.permutation(len(counts)).tolist():
            if abs(total + counts[i] - target) < abs(total - target):
                chosen.append(i)
                total += counts[i]
        if not chosen:
            chosen = [min(range(len(counts)), key=lambda i: abs(counts[i] - target))]
        elif len(chosen) == len(counts):
            chosen.remove(min(chosen, key=lambda i: abs(total - counts[i] - target)))
        gap = abs(sum(counts[i] for i in chosen) - target)
        if gap < best_gap:
            best, best_gap = sorted(chosen), gap
    return best


def _clean(caption: str) -> str:
    """Whitespace collapsed; U+FFFD (mojibake of non-breaking spaces in CUB's own caption
    files, which people copy into this layout) is a space, as ``cub.read_captions`` has it."""
    return " ".join(caption.replace("\ufffd", " ").split())


def _was_truncated(caption: str) -> bool:
    return len(caption) > MAX_CAPTION_CHARS


def _truncate(caption: str) -> str:
    return caption[:MAX_CAPTION_CHARS].rstrip()


def _strip_suffix(relative: str) -> str:
    head, _, name = relative.rpartition("/")
    stem = name.rsplit(".", 1)[0] if "." in name.lstrip(".") else name
    return f"{head}/{stem}" if head else stem


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    for kind, name in names.items():
        if isinstance(value, kind):
            return name
    return "a number" if isinstance(value, int | float) else type(value).__name__
