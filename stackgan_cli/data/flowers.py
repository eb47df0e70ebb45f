"""Reading the raw Oxford-102 flowers layout with StackGAN's flowers split, captions and
embeddings.

The raw layout is what the two upstream archives unpack to::

    jpg/image_NNNNN.jpg                           102flowers.tgz (Nilsback & Zisserman, Oxford VGG)
    flowers/{train,test}/filenames.pickle         keys "jpg/image_NNNNN" (StackGAN's split)
    flowers/{train,test}/class_info.pickle        one class id (1..102) per key
    flowers/{train,test}/char-CNN-RNN-embeddings.pickle   (N, 10, 1024) float32
    flowers/text_c10/class_NNNNN/image_NNNNN.txt  10 captions (Reed et al. 2016); line j pairs
                                                  with embedding j

Sources: hanzhanggit/StackGAN, ``misc/preprocess_flowers.py`` (the image of key ``K`` is
``Data/flowers/K.jpg``, resized whole, without a crop) and ``misc/datasets.py``
(``readCaptions``: the captions of ``jpg/NAME`` with class id ``C`` are
``text_c10/class_%05d/NAME.txt``; the split's three pickles as for birds); ``README.md`` for
the flowers archive on Google Drive. The image archive is the Oxford VGG site's
``102flowers.tgz``.

Every file is read and cross-checked here before any image is decoded; only the images the
pickles list are read, so a self-consistent subset of the classes works.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from stackgan_cli.data import cub
from stackgan_cli.data.resumable import SplitPlan
from stackgan_cli.errors import StackGANError

SPLITS = cub.SPLITS
EMBEDDINGS_FILE = "char-CNN-RNN-embeddings.pickle"


def read_raw(jpg_dir: Path, flowers_dir: Path, *, images_from: str | None = None) -> dict:
    """Both splits (``train``, ``test``) of the raw flowers layout as ``{split: SplitPlan}``.

    ``jpg_dir`` holds the images (``102flowers.tgz``'s ``jpg/``), ``flowers_dir`` StackGAN's
    ``flowers/`` folder. ``images_from`` names where the images came from in the message about
    a listed image that is missing (default: ``jpg_dir``)."""
    jpg_dir, flowers_dir = Path(jpg_dir), Path(flowers_dir)
    available = image_names(jpg_dir)
    return {
        split: read_split(jpg_dir, flowers_dir, split, available, images_from=images_from)
        for split in SPLITS
    }


def read_split(
    jpg_dir: Path,
    flowers_dir: Path,
    split: str,
    available: set[str],
    *,
    images_from: str | None = None,
) -> SplitPlan:
    """One split, checked: keys, class ids, the 10 captions of each image, its embeddings and
    the image file of each key (``available``: the file names in ``jpg_dir``)."""
    split_dir = flowers_dir / split
    filenames_path = split_dir / "filenames.pickle"
    keys = read_keys(filenames_path)
    class_ids = read_class_ids(split_dir / "class_info.pickle", len(keys), filenames_path)
    tasks = []
    captions = []
    for key, class_id in zip(keys, class_ids.tolist(), strict=True):
        name = key.rsplit("/", 1)[-1]
        if f"{name}.jpg" not in available:
            raise StackGANError(
                f"{images_from or jpg_dir} holds no jpg/{name}.jpg, which {filenames_path} lists"
            )
        tasks.append((None, str(jpg_dir / f"{name}.jpg")))
        caption_file = flowers_dir / "text_c10" / f"class_{class_id:05d}" / f"{name}.txt"
        captions.append(cub.read_captions(caption_file))
    vectors, per_image = read_embeddings(split_dir / EMBEDDINGS_FILE, len(keys), filenames_path)
    if per_image != cub.CAPTIONS_PER_IMAGE:
        raise StackGANError(
            f"{split_dir / EMBEDDINGS_FILE}: {per_image} embeddings per image, expected "
            f"{cub.CAPTIONS_PER_IMAGE} (one per caption)"
        )
    return SplitPlan(split, keys, class_ids, captions, vectors, per_image, tasks)


def image_names(folder: Path) -> set[str]:
    """The names of the entries of ``folder``; a missing folder raises ``StackGANError``."""
    try:
        with os.scandir(folder) as entries:
            return {entry.name for entry in entries}
    except FileNotFoundError:
        raise StackGANError(f"missing image folder: {folder}") from None
    except NotADirectoryError:
        raise StackGANError(f"{folder} is not a folder") from None


def read_keys(path: Path) -> list[str]:
    """The image keys of a StackGAN ``filenames.pickle`` (a list of strings; Python 2 byte
    strings too), checked to be non-empty and distinct."""
    path = Path(path)
    data = cub.load_pickle(path)
    if not isinstance(data, list | tuple | np.ndarray):
        raise StackGANError(f"{path}: expected a list of image keys, found {type(data).__name__}")
    keys: list[str] = []
    seen: set[str] = set()
    for key in data:
        if isinstance(key, bytes):
            key = key.decode("utf-8", errors="replace")
        if isinstance(key, np.str_):
            key = str(key)
        if not isinstance(key, str) or not key:
            raise StackGANError(f"{path}: expected image keys as strings, found {key!r}")
        if key in seen:
            raise StackGANError(f"{path} lists {key} twice")
        seen.add(key)
        keys.append(key)
    if not keys:
        raise StackGANError(f"{path} lists no images")
    return keys


def read_class_ids(path: Path, count: int, filenames_path: Path) -> np.ndarray:
    """The (count,) int64 class ids of a ``class_info.pickle``."""
    data = cub.load_pickle(path)
    try:
        class_ids = np.asarray(data, dtype=np.int64)
    except (TypeError, ValueError):
        raise StackGANError(f"{path}: expected a list of class ids") from None
    if class_ids.shape != (count,):
        raise StackGANError(
            f"{path}: {class_ids.size} class ids but {filenames_path} lists {count} images"
        )
    return class_ids


def read_embeddings(
    path: Path, count: int, filenames_path: Path
) -> tuple[np.ndarray | list[np.ndarray], int]:
    """The embeddings of a ``char-CNN-RNN-embeddings.pickle`` for ``count`` images and how
    many there are per image: an (N, K, D) float array, or N float arrays (K, D) kept as the
    pickle holds them (stacking would double the memory of a large split)."""
    data = cub.load_pickle(path)
    if isinstance(data, np.ndarray):
        if data.ndim != 3 or data.dtype.kind != "f":
            raise StackGANError(
                f"{path}: expected float embeddings of shape (N, K, D), found {data.dtype} "
                f"{data.shape}"
            )
        shape = data.shape[1:]
        found = len(data)
    elif isinstance(data, list | tuple):
        found = len(data)
        shape = np.shape(data[0]) if data else ()
        for index, vectors in enumerate(data):
            if not isinstance(vectors, np.ndarray) or vectors.dtype.kind != "f":
                raise StackGANError(f"{path}: entry {index} is not an array of floats")
            if vectors.shape != shape or len(shape) != 2:
                raise StackGANError(
                    f"{path}: entry {index} has shape {vectors.shape}, expected (K, D) like the "
                    f"first {shape}"
                )
    else:
        raise StackGANError(f"{path}: expected embedding arrays, found {type(data).__name__}")
    if found != count:
        raise StackGANError(f"{path}: {found} embeddings but {filenames_path} lists {count} images")
    per_image = int(shape[0])
    if not 1 <= per_image <= cub.CAPTIONS_PER_IMAGE or shape[1] < 1:
        raise StackGANError(
            f"{path}: {per_image} embeddings of {shape[1]} values per image; expected 1 to "
            f"{cub.CAPTIONS_PER_IMAGE}"
        )
    return data, per_image
