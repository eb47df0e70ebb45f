"""Reading the raw MS-COCO 2014 layout with StackGAN-Pytorch's COCO split, captions and
embeddings.

The raw layout is what the upstream files unpack to::

    train2014/COCO_train2014_NNNNNNNNNNNN.jpg   train2014.zip (cocodataset.org), read in place
    val2014/COCO_val2014_NNNNNNNNNNNN.jpg       val2014.zip, read in place
    coco/train/filenames.pickle                 keys "COCO_train2014_NNNNNNNNNNNN"
    coco/train/char-CNN-RNN-embeddings.pickle   (N, 5, 1024) float32, 5 per image
    coco/text/<key>.txt                         the image's captions, one per line
    coco/test/filenames.pickle                  keys "COCO_val2014_NNNNNNNNNNNN"
    coco/test/val_captions.t7                   Torch7 table: raw_txt (captions), fea_txt
                                                (their char-CNN-RNN embeddings, 1 x 1024 each)

Sources: hanzhanggit/StackGAN-Pytorch, ``code/miscc/datasets.py`` (``TextDataset``: a split's
``filenames.pickle`` and ``char-CNN-RNN-embeddings.pickle``, class ids ``arange(N)`` when there
is no ``class_info.pickle``, captions at ``<data_dir>/text/<key>.txt``, the image resized whole
without a bounding box), ``code/main.py`` and ``code/trainer.py`` (``sample``: the test
captions are ``<data_dir>/test/val_captions.t7``, ``raw_txt`` and ``fea_txt`` read with
``torchfile``), ``code/cfg/coco_*.yml`` and ``README.md`` (the two embedding downloads on Google
Drive, the COCO images from cocodataset.org).

How the pieces are joined here:

- Each key names its image: ``COCO_train2014_*`` is in ``train2014/``, ``COCO_val2014_*`` in
  ``val2014/``. The image zips are read in place (no 20 GB unpacking); only the listed images
  are read, and a listed image that is missing is an error naming it before anything is
  decoded.
- Training captions: the first K lines of ``text/<key>.txt``, K being the embeddings per image
  (5). Test captions and embeddings: ``val_captions.t7``, which holds the same number of
  captions for every image of ``test/filenames.pickle``, in its order.
- The prepared format stores 10 captions per image: an image's K captions (and, aligned, its
  embeddings) are repeated in order to fill them (``resumable.fill_to_ten``).
- No classes: each image is its own class (class ids ``0..N-1``), so the wrong images of the
  matching-aware loss are other images, as in the official COCO pipeline.
"""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

import numpy as np

from stackgan_cli.data import cub
from stackgan_cli.data.flowers import read_embeddings, read_keys
from stackgan_cli.data.resumable import ImageTask, SplitPlan, fill_to_ten
from stackgan_cli.errors import StackGANError

SPLITS = cub.SPLITS
IMAGE_FOLDERS = ("train2014", "val2014")
"""The two image folders (and ``.zip`` archives) of COCO 2014."""
TEST_CAPTIONS = "val_captions.t7"
EMBEDDINGS_FILE = "char-CNN-RNN-embeddings.pickle"
_IMAGE_NAME = re.compile(r"COCO_(train2014|val2014)_\d+")


def read_split_keys(coco_dir: Path) -> dict[str, list[str]]:
    """The image keys of each split (``coco/<split>/filenames.pickle``)."""
    return {split: read_keys(Path(coco_dir) / split / "filenames.pickle") for split in SPLITS}


def image_folder(key: str, filenames_path: Path) -> str:
    """Which of ``IMAGE_FOLDERS`` holds the image of ``key``, from its COCO file name."""
    match = _IMAGE_NAME.fullmatch(_image_name(key))
    if match is None:
        raise StackGANError(
            f"{filenames_path}: {key!r} is not a COCO 2014 image name "
            "(COCO_train2014_NNNNNNNNNNNN or COCO_val2014_NNNNNNNNNNNN)"
        )
    return match[1]


def folders_needed(coco_dir: Path, keys: dict[str, list[str]]) -> list[str]:
    """The image folders the splits' keys refer to, in ``IMAGE_FOLDERS`` order."""
    used = {
        image_folder(key, Path(coco_dir) / split / "filenames.pickle")
        for split, split_keys in keys.items()
        for key in split_keys
    }
    return [folder for folder in IMAGE_FOLDERS if folder in used]


class ImageIndex:
    """Where the images of one COCO image folder are: an unpacked folder, or a zip archive
    read in place (members ``<folder>/<name>.jpg``)."""

    def __init__(self, folder: str, source: Path) -> None:
        self.folder = folder
        self.source = Path(source)
        self.is_archive = self.source.is_file()
        self._names = self._zip_names() if self.is_archive else self._folder_names()

    def task(self, key: str, filenames_path: Path) -> ImageTask:
        """The load task of ``key``'s image; ``StackGANError`` naming it when it is missing."""
        name = f"{_image_name(key)}.jpg"
        if name not in self._names:
            raise StackGANError(
                f"{self.source} holds no {self.folder}/{name}, which {filenames_path} lists"
            )
        if self.is_archive:
            return str(self.source), self._names[name]
        return None, str(self.source / name)

    def _zip_names(self) -> dict[str, str]:
        prefix = f"{self.folder}/"
        names: dict[str, str] = {}
        try:
            with zipfile.ZipFile(self.source) as bundle:
                for info in bundle.infolist():
                    member = info.filename.replace("\\", "/")
                    if not member.startswith(prefix) or info.is_dir():
                        continue
                    if info.flag_bits & 0x1:
                        raise StackGANError(f"{self.source}: member {member} is encrypted")
                    names[member[len(prefix) :]] = info.filename
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise StackGANError(f"{self.source} is not a readable zip archive ({exc})") from None
        return names

    def _folder_names(self) -> dict[str, str]:
        try:
            with os.scandir(self.source) as entries:
                return {entry.name: entry.name for entry in entries}
        except FileNotFoundError:
            raise StackGANError(f"missing image folder: {self.source}") from None
        except NotADirectoryError:
            raise StackGANError(f"{self.source} is not a folder") from None


def read_raw(
    coco_dir: Path,
    test_captions: Path,
    images: dict[str, ImageIndex],
    keys: dict[str, list[str]] | None = None,
) -> dict[str, SplitPlan]:
    """Both splits of the raw COCO layout as ``{split: SplitPlan}``, checked: every listed
    image located in ``images`` (``{folder: ImageIndex}``), captions and embeddings read and
    filled to 10 per image. ``keys`` is ``read_split_keys(coco_dir)``, read when not given."""
    coco_dir = Path(coco_dir)
    keys = read_split_keys(coco_dir) if keys is None else keys
    plans = {
        "train": _train_split(coco_dir, keys["train"], images),
        "test": _test_split(coco_dir, Path(test_captions), keys["test"], images),
    }
    dims = {split: plan.text_dim for split, plan in plans.items()}
    if dims["train"] != dims["test"]:
        raise StackGANError(
            f"the training embeddings have {dims['train']} values but those of "
            f"{test_captions} {dims['test']}"
        )
    return plans


def read_val_captions(path: Path) -> tuple[list[str], np.ndarray]:
    """The captions (``raw_txt``) and their (M, D) float32 embeddings (``fea_txt``) of a
    StackGAN-Pytorch ``val_captions.t7``, read with the ``torchfile`` package.

    ``use_list_heuristic=False`` keeps Lua tables as ``{1: ..., 2: ...}`` dicts: the heuristic
    that turns them into lists compares each element with its table, which fails for the
    numpy arrays of a table of tensors under numpy 2."""
    import torchfile

    path = Path(path)
    if not path.is_file():
        raise StackGANError(f"missing file: {path}")
    try:
        table = torchfile.load(str(path), use_list_heuristic=False)
    except Exception as exc:  # torchfile raises struct, value and its own errors on bad input
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise StackGANError(f"{path}: not a readable Torch7 file ({reason})") from None
    if not isinstance(table, dict):
        raise StackGANError(f"{path}: expected a table with raw_txt and fea_txt")
    raw = _lua_list(_field(table, "raw_txt", path), path, "raw_txt")
    fea = _lua_list(_field(table, "fea_txt", path), path, "fea_txt")
    captions = []
    for index, caption in enumerate(raw, start=1):
        if isinstance(caption, bytes):
            caption = caption.decode("utf-8", errors="replace")
        if not isinstance(caption, str):
            raise StackGANError(f"{path}: raw_txt[{index}] is not a string")
        captions.append(" ".join(caption.replace("\ufffd", " ").split()))
    blocks = []
    for index, tensor in enumerate(fea, start=1):
        if not isinstance(tensor, np.ndarray) or tensor.dtype.kind != "f" or tensor.size == 0:
            raise StackGANError(f"{path}: fea_txt[{index}] is not a float tensor")
        rows = np.asarray(tensor, dtype=np.float32)
        blocks.append(rows.reshape(-1, rows.shape[-1]))
    if not blocks:
        raise StackGANError(f"{path}: fea_txt holds no embeddings")
    if len({block.shape[1] for block in blocks}) != 1:
        raise StackGANError(f"{path}: the fea_txt tensors differ in size")
    vectors = np.concatenate(blocks)
    if len(vectors) != len(captions):
        raise StackGANError(
            f"{path}: {len(captions)} captions in raw_txt but {len(vectors)} embeddings in fea_txt"
        )
    return captions, vectors


def read_caption_file(path: Path, count: int) -> list[str]:
    """The first ``count`` captions of a ``text/<key>.txt`` (non-empty lines, stripped; runs of
    U+FFFD, mojibake of non-breaking spaces, become one space)."""
    try:
        text = Path(path).read_bytes().decode("utf-8", errors="replace")
    except FileNotFoundError:
        raise StackGANError(f"missing caption file: {path}") from None
    lines = [" ".join(line.replace("\ufffd", " ").split()) for line in text.splitlines()]
    captions = [line for line in lines if line]
    if len(captions) < count:
        raise StackGANError(
            f"{path}: {len(captions)} captions, but the image has {count} embeddings"
        )
    return captions[:count]


def _train_split(coco_dir: Path, keys: list[str], images: dict[str, ImageIndex]) -> SplitPlan:
    split_dir = coco_dir / "train"
    filenames_path = split_dir / "filenames.pickle"
    tasks = _tasks(keys, images, filenames_path)
    vectors, per_image = read_embeddings(split_dir / EMBEDDINGS_FILE, len(keys), filenames_path)
    captions = [
        fill_to_ten(read_caption_file(coco_dir / "text" / f"{key}.txt", per_image)) for key in keys
    ]
    class_ids = np.arange(len(keys), dtype=np.int64)
    return SplitPlan("train", keys, class_ids, captions, vectors, per_image, tasks)


def _test_split(
    coco_dir: Path, t7: Path, keys: list[str], images: dict[str, ImageIndex]
) -> SplitPlan:
    filenames_path = coco_dir / "test" / "filenames.pickle"
    tasks = _tasks(keys, images, filenames_path)
    captions, vectors = read_val_captions(t7)
    per_image, left = divmod(len(captions), len(keys))
    if left or not 1 <= per_image <= cub.CAPTIONS_PER_IMAGE:
        raise StackGANError(
            f"{t7}: {len(captions)} captions for the {len(keys)} images of {filenames_path}; "
            f"expected the same number (1 to {cub.CAPTIONS_PER_IMAGE}) for each image"
        )
    grouped = [captions[i * per_image : (i + 1) * per_image] for i in range(len(keys))]
    embeddings = vectors.reshape(len(keys), per_image, vectors.shape[1])
    class_ids = np.arange(len(keys), dtype=np.int64)
    filled = [fill_to_ten(group) for group in grouped]
    return SplitPlan("test", keys, class_ids, filled, embeddings, per_image, tasks)


def _tasks(keys: list[str], images: dict[str, ImageIndex], filenames_path: Path) -> list:
    tasks = []
    for key in keys:
        folder = image_folder(key, filenames_path)
        index = images.get(folder)
        if index is None:
            raise StackGANError(f"no {folder} images were given for {key} ({filenames_path})")
        tasks.append(index.task(key, filenames_path))
    return tasks


def _image_name(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def _field(table: dict, name: str, path: Path):
    for key in (name, name.encode("ascii")):
        if key in table:
            return table[key]
    raise StackGANError(f"{path}: no {name} in the table")


def _lua_list(table, path: Path, name: str) -> list:
    """The elements of a Lua list (a table with keys 1..n) in order."""
    if isinstance(table, list):
        return table
    if not isinstance(table, dict):
        raise StackGANError(f"{path}: {name} is not a table")
    count = len(table)
    if any(index not in table for index in range(1, count + 1)):
        raise StackGANError(f"{path}: {name} is not a list (its keys are not 1..{count})")
    return [table[index] for index in range(1, count + 1)]
