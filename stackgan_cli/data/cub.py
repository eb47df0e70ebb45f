"""Reading the raw CUB-200-2011 + StackGAN ``birds`` layouts, and the official image crop.

The raw layout is what the two upstream archives unpack to (stackgan-pytorch-spec.md 2.1)::

    CUB_200_2011/images.txt                 "<id> <class_dir>/<name>.jpg"
    CUB_200_2011/bounding_boxes.txt         "<id> x y w h" (floats, truncated to int)
    CUB_200_2011/images/<class_dir>/<name>.jpg
    birds/{train,test}/filenames.pickle     keys "<class_dir>/<name>" (StackGAN's split)
    birds/{train,test}/class_info.pickle    one class id per key
    birds/{train,test}/char-CNN-RNN-embeddings.pickle   (N, 10, 1024) float32
    birds/text_c10/<key>.txt                10 captions; line j pairs with embedding j

Everything is checked here, before any image is decoded, so a broken layout fails in seconds
with a message naming the file.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from stackgan_cli.errors import StackGANError
from stackgan_cli.models.config import STORED_SIZES

SPLITS = ("train", "test")
IMAGE_SIZES = STORED_SIZES
"""The stored sides, ``int(IMSIZE * 76 / 64)`` for the Stage-I and Stage-II image sizes."""
CAPTIONS_PER_IMAGE = 10

BBox = tuple[int, int, int, int]
"""``(x, y, w, h)`` in pixels, as in ``bounding_boxes.txt`` after truncation to int."""

# What the upstream pickles may reference: numpy arrays and scalars. Anything else is refused,
# because unpickling a downloaded file may otherwise run arbitrary code.
_PICKLE_GLOBALS = {
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),
}


@dataclass
class ImageEntry:
    """One row of ``images.txt`` joined with its bounding box (``None`` when it has none)."""

    path: str
    bbox: BBox | None


@dataclass
class RawSplit:
    """One split of the raw layout, fully read and checked (images are only located)."""

    name: str
    keys: list[str]
    class_ids: np.ndarray  # (N,) int64
    captions: list[list[str]]  # N lists of 10
    image_paths: list[Path]
    bboxes: list[BBox]
    embeddings: np.ndarray | None  # (N, 10, D) float32; None when read without embeddings

    def __len__(self) -> int:
        return len(self.keys)


def crop_box(bbox: BBox, width: int, height: int) -> tuple[int, int, int, int]:
    """The official crop ``(x1, y1, x2, y2)`` for ``bbox`` in a ``width`` x ``height`` image.

    A square of side ``2R`` with ``R = int(0.75 * max(w, h))`` around the box centre, clipped at
    the image borders (so it is not square when the border cuts it; there is no padding).

    >>> crop_box((60, 27, 325, 304), 500, 336)
    (0, 0, 465, 336)
    """
    x, y, w, h = bbox
    r = int(max(w, h) * 0.75)
    cx = int((2 * x + w) / 2)
    cy = int((2 * y + h) / 2)
    return max(0, cx - r), max(0, cy - r), min(width, cx + r), min(height, cy + r)


def crop_and_resize(
    image: Image.Image, bbox: BBox, sizes: tuple[int, ...] = IMAGE_SIZES
) -> list[np.ndarray]:
    """Crop ``image`` around ``bbox`` (``crop_box``) and resize the crop to each size with PIL
    bilinear, each directly from the crop as the official loader does; (S, S, 3) uint8 arrays."""
    image = image.convert("RGB")
    cropped = image.crop(crop_box(bbox, *image.size))
    return [
        np.asarray(cropped.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)
        for size in sizes
    ]


def load_image(
    path: Path | str, bbox: BBox, sizes: tuple[int, ...] = IMAGE_SIZES
) -> list[np.ndarray]:
    """Read one image file and return its crops (``crop_and_resize``); a missing or unreadable
    file raises ``StackGANError`` naming it."""
    path = Path(path)
    try:
        with Image.open(path) as image:
            return crop_and_resize(image, bbox, sizes)
    except FileNotFoundError:
        raise StackGANError(f"missing image file: {path}") from None
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise StackGANError(f"cannot read image {path}: {exc}") from None


def load_image_task(task: tuple[str, BBox]) -> list[np.ndarray]:
    """``load_image`` of one ``(path, bbox)`` pair: the unit of work of the process pool."""
    path, bbox = task
    return load_image(path, bbox)


def read_image_index(cub_dir: Path) -> dict[str, ImageEntry]:
    """``images.txt`` and ``bounding_boxes.txt`` of ``cub_dir`` as ``{key: ImageEntry}``, where
    the key is the image path without its extension (``"<class_dir>/<name>"``)."""
    cub_dir = Path(cub_dir)
    boxes: dict[str, BBox] = {}
    for line_no, fields in _table_rows(cub_dir / "bounding_boxes.txt", 5):
        try:
            boxes[fields[0]] = tuple(int(float(v)) for v in fields[1:])  # type: ignore[assignment]
        except ValueError:
            raise StackGANError(
                f"{cub_dir / 'bounding_boxes.txt'}:{line_no}: expected '<id> x y w h'"
            ) from None
    index: dict[str, ImageEntry] = {}
    for _, (image_id, rel_path) in _table_rows(cub_dir / "images.txt", 2):
        index[_strip_extension(rel_path)] = ImageEntry(rel_path, boxes.get(image_id))
    return index


def read_captions(path: Path) -> list[str]:
    """The 10 captions of one ``text_c10`` file: non-empty lines after stripping, in order.

    Runs of U+FFFD (mojibake of non-breaking spaces in a few upstream files) become one space.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        raise StackGANError(f"missing caption file: {path}") from None
    lines = [" ".join(line.replace("\ufffd", " ").split()) for line in text.splitlines()]
    captions = [line for line in lines if line]
    if len(captions) != CAPTIONS_PER_IMAGE:
        raise StackGANError(
            f"{path}: expected {CAPTIONS_PER_IMAGE} captions, found {len(captions)}"
        )
    return captions


def read_split(
    cub_dir: Path,
    birds_dir: Path,
    split: str,
    *,
    index: dict[str, ImageEntry] | None = None,
    embeddings: bool = True,
) -> RawSplit:
    """Read and cross-check one split: keys, class ids, captions, image paths, bounding boxes
    and (unless ``embeddings=False``) the char-CNN-RNN embeddings. ``index`` is
    ``read_image_index(cub_dir)``, read here when not given."""
    cub_dir, birds_dir = Path(cub_dir), Path(birds_dir)
    split_dir = birds_dir / split
    if index is None:
        index = read_image_index(cub_dir)
    filenames_path = split_dir / "filenames.pickle"
    keys = [
        _as_key(key, filenames_path)
        for key in _as_list(load_pickle(filenames_path), filenames_path)
    ]

    class_info_path = split_dir / "class_info.pickle"
    try:
        class_ids = np.asarray(
            _as_list(load_pickle(class_info_path), class_info_path), dtype=np.int64
        )
    except (TypeError, ValueError):
        raise StackGANError(f"{class_info_path}: expected a list of class ids") from None
    if class_ids.shape != (len(keys),):
        raise StackGANError(
            f"{class_info_path}: {class_ids.size} class ids but {filenames_path} "
            f"lists {len(keys)} images"
        )

    image_paths: list[Path] = []
    bboxes: list[BBox] = []
    for key in keys:
        entry = index.get(key)
        if entry is None:
            raise StackGANError(f"{cub_dir / 'images.txt'}: no entry for {key}")
        if entry.bbox is None:
            raise StackGANError(f"{cub_dir / 'bounding_boxes.txt'}: no bounding box for {key}")
        image_paths.append(cub_dir / "images" / entry.path)
        bboxes.append(entry.bbox)

    captions = [read_captions(birds_dir / "text_c10" / f"{key}.txt") for key in keys]
    vectors = None
    if embeddings:
        vectors = _read_embeddings(split_dir / "char-CNN-RNN-embeddings.pickle", len(keys))
    return RawSplit(split, keys, class_ids, captions, image_paths, bboxes, vectors)


def read_raw(cub_dir: Path, birds_dir: Path) -> dict[str, RawSplit]:
    """Both splits (``train``, ``test``) of a raw layout, each checked by ``read_split``."""
    index = read_image_index(cub_dir)
    return {split: read_split(cub_dir, birds_dir, split, index=index) for split in SPLITS}


def load_pickle(path: Path):
    """Load an upstream pickle (Python 2 ones too) that may hold only lists, numbers, strings
    and numpy arrays; a missing, damaged or unexpected file raises ``StackGANError``."""
    path = Path(path)
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed by the with below
    except FileNotFoundError:
        raise StackGANError(f"missing file: {path}") from None
    # Unpickled from the file, not from a copy of its bytes, so that a large split's embeddings
    # (COCO's training ones: 1.7 GB) are held in memory once.
    with handle:
        try:
            return _RestrictedUnpickler(handle, encoding="latin1").load()
        except StackGANError as exc:
            raise StackGANError(f"{path}: {exc}") from None
        except Exception as exc:  # pickle raises many types on damaged input
            raise StackGANError(f"{path}: not a readable pickle ({exc})") from None


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if (module, name) not in _PICKLE_GLOBALS:
            raise StackGANError(f"refusing to unpickle {module}.{name}")
        return super().find_class(module, name)


def _read_embeddings(path: Path, count: int) -> np.ndarray:
    """The (count, 10, D) float32 embeddings; a list of (10, D) arrays is stacked."""
    raw = load_pickle(path)
    try:
        vectors = np.asarray(raw, dtype=np.float32)
    except (TypeError, ValueError):
        raise StackGANError(f"{path}: expected arrays of shape (10, D)") from None
    found = vectors.shape[0] if vectors.ndim else 0
    if found != count:
        raise StackGANError(f"{path}: {found} embeddings but filenames.pickle lists {count} images")
    if vectors.ndim != 3 or vectors.shape[1] != CAPTIONS_PER_IMAGE:
        raise StackGANError(
            f"{path}: expected shape (N, {CAPTIONS_PER_IMAGE}, D), found {vectors.shape}"
        )
    return np.ascontiguousarray(vectors)


def _table_rows(path: Path, columns: int):
    """``(line number, fields)`` for each non-empty line of a whitespace-separated table whose
    last field may itself contain spaces."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise StackGANError(f"missing file: {path}") from None
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(maxsplit=columns - 1)
        if len(fields) != columns:
            raise StackGANError(f"{path}:{line_no}: expected {columns} fields, found {line!r}")
        yield line_no, fields


def _strip_extension(rel_path: str) -> str:
    head, _, name = rel_path.rpartition("/")
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return f"{head}/{stem}" if head else stem


def _as_list(obj, path: Path) -> list:
    if isinstance(obj, list | tuple | np.ndarray):
        return list(obj)
    raise StackGANError(f"{path}: expected a list, found {type(obj).__name__}")


def _as_key(key, path: Path) -> str:
    if isinstance(key, bytes):
        key = key.decode("utf-8")
    if isinstance(key, np.str_):
        key = str(key)
    if not isinstance(key, str) or not key:
        raise StackGANError(f"{path}: expected image keys as strings, found {key!r}")
    return key
