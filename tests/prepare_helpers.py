"""Builders of small upstream layouts for the flowers and COCO prepare tests.

Not a test module. It writes, in the layouts the official code reads (see the docstrings of
stackgan_cli/data/flowers.py and coco.py), real JPEG images, Python pickles with protocol 2 (as
the Python 2 originals), caption files, and a real Torch7 file (``write_t7``: a small writer of
Torch7's binary serialisation, the format ``torchfile`` reads), and packs them into the
archives the upstream hosts serve.
"""

import pickle
import struct
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from training_helpers import TINY, run_cli, train_args
from typer.testing import CliRunner

from stackgan_cli.cli import app

# --- Torch7 binary serialisation (torch7's File.lua writeObject, little-endian, 64-bit longs)
_NIL, _NUMBER, _STRING, _TABLE, _TORCH, _BOOLEAN = 0, 1, 2, 3, 4, 5


class _T7Writer:
    def __init__(self, handle) -> None:
        self.handle = handle
        self.next_index = 1

    def int(self, value: int) -> None:
        self.handle.write(struct.pack("<i", value))

    def long(self, value: int) -> None:
        self.handle.write(struct.pack("<q", value))

    def raw_string(self, data: bytes) -> None:
        self.int(len(data))
        self.handle.write(data)

    def index(self) -> None:
        self.int(self.next_index)
        self.next_index += 1

    def obj(self, value) -> None:
        if value is None:
            self.int(_NIL)
        elif isinstance(value, bool):
            self.int(_BOOLEAN)
            self.int(int(value))
        elif isinstance(value, int | float):
            self.int(_NUMBER)
            self.handle.write(struct.pack("<d", float(value)))
        elif isinstance(value, str | bytes):
            self.int(_STRING)
            self.raw_string(value.encode("utf-8") if isinstance(value, str) else value)
        elif isinstance(value, np.ndarray):
            self.tensor(value)
        elif isinstance(value, dict | list):
            items = value.items() if isinstance(value, dict) else enumerate(value, start=1)
            items = list(items)
            self.int(_TABLE)
            self.index()
            self.int(len(items))
            for key, item in items:
                self.obj(key)
                self.obj(item)
        else:
            raise TypeError(f"cannot write {type(value).__name__} to a .t7 file")

    def tensor(self, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array, dtype=np.float32)
        self.int(_TORCH)
        self.index()
        self.raw_string(b"V 1")
        self.raw_string(b"torch.FloatTensor")
        self.int(array.ndim)
        for size in array.shape:
            self.long(size)
        for stride in (s // array.itemsize for s in array.strides):
            self.long(stride)
        self.long(1)  # storage offset, 1-based
        self.int(_TORCH)
        self.index()
        self.raw_string(b"V 1")
        self.raw_string(b"torch.FloatStorage")
        self.long(array.size)
        self.handle.write(array.tobytes())


def write_t7(path: Path, value) -> Path:
    """Serialise ``value`` (dicts and lists as Lua tables, strings, numbers, float32 arrays as
    ``torch.FloatTensor``) to ``path`` in Torch7's binary format."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as handle:
        _T7Writer(handle).obj(value)
    return path


# --- files of the layouts ----------------------------------------------------------------------


def write_pickle(path: Path, value) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(value, protocol=2))
    return path


def write_jpeg(path: Path, rng: np.random.Generator, size: tuple[int, int]) -> Path:
    """A JPEG of ``size`` (width, height): smooth colour gradients plus noise, so resizing it
    is not trivial."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    base = rng.integers(0, 256, 3)
    image = np.stack([(x * (c + 1) * 3 + y * (3 - c) * 2 + base[c]) % 256 for c in range(3)], -1)
    noise = rng.integers(-20, 21, image.shape)
    pixels = np.clip(image + noise, 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, quality=90)
    return path


def whole_resized(path: Path, size: int) -> np.ndarray:
    """What the official flowers/COCO pipeline stores: the whole image, PIL bilinear."""
    with Image.open(path) as image:
        rgb = image.convert("RGB")
    return np.asarray(rgb.resize((size, size), Image.Resampling.BILINEAR))


def pack_tgz(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        tar.add(folder, arcname=folder.name)
    return archive


def pack_zip(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as bundle:
        for path in sorted(folder.rglob("*")):
            bundle.write(path, f"{folder.name}/{path.relative_to(folder)}")
    return archive


def embedding_rows(rng: np.random.Generator, count: int, per_image: int, dim: int) -> list:
    """``count`` float32 arrays (per_image, dim), as the upstream pickles list them."""
    return [rng.standard_normal((per_image, dim)).astype(np.float32) for _ in range(count)]


# --- flowers -----------------------------------------------------------------------------------


@dataclass
class FlowersLayout:
    root: Path  # holds jpg/ and flowers/
    keys: dict[str, list[str]]
    class_ids: dict[str, list[int]]
    embeddings: dict[str, list[np.ndarray]]
    unlisted: list[str]  # image names in jpg/ that no pickle lists

    @property
    def jpg(self) -> Path:
        return self.root / "jpg"

    @property
    def flowers(self) -> Path:
        return self.root / "flowers"


def build_flowers(
    root: Path,
    *,
    train: dict[int, int],
    test: dict[int, int],
    unlisted: int = 2,
    dim: int = 1024,
    seed: int = 0,
) -> FlowersLayout:
    """Oxford-102 images (``jpg/image_NNNNN.jpg``) and StackGAN's ``flowers/`` folder for the
    classes in ``train`` and ``test`` ({class id: images}); ``unlisted`` more images in
    ``jpg/`` belong to no split (a subset of the archive)."""
    rng = np.random.default_rng(seed)
    number = 0
    layout = FlowersLayout(root, {}, {}, {}, [])
    for split, classes in (("train", train), ("test", test)):
        keys, ids = [], []
        for class_id, images in classes.items():
            for _ in range(images):
                number += 1
                name = f"image_{number:05d}"
                write_jpeg(root / "jpg" / f"{name}.jpg", rng, (40 + number % 7, 30 + number % 5))
                text = root / "flowers" / "text_c10" / f"class_{class_id:05d}" / f"{name}.txt"
                text.parent.mkdir(parents=True, exist_ok=True)
                text.write_text(
                    "".join(f"flower {name} of class {class_id}, caption {j}\n" for j in range(10))
                )
                keys.append(f"jpg/{name}")
                ids.append(class_id)
        vectors = embedding_rows(rng, len(keys), 10, dim)
        split_dir = root / "flowers" / split
        write_pickle(split_dir / "filenames.pickle", keys)
        write_pickle(split_dir / "class_info.pickle", ids)
        write_pickle(split_dir / "char-CNN-RNN-embeddings.pickle", vectors)
        layout.keys[split], layout.class_ids[split], layout.embeddings[split] = keys, ids, vectors
    for _ in range(unlisted):
        number += 1
        write_jpeg(root / "jpg" / f"image_{number:05d}.jpg", rng, (36, 36))
        layout.unlisted.append(f"image_{number:05d}")
    return layout


def pack_flowers(layout: FlowersLayout, folder: Path) -> tuple[Path, Path]:
    """``102flowers.tgz`` (top folder ``jpg/``) and ``flowers.zip`` (top folder ``flowers/``)."""
    folder.mkdir(parents=True, exist_ok=True)
    tgz = pack_tgz(layout.jpg, folder / "102flowers.tgz")
    bundle = pack_zip(layout.flowers, folder / "flowers.zip")
    return tgz, bundle


# --- COCO --------------------------------------------------------------------------------------


@dataclass
class CocoLayout:
    root: Path  # holds train2014/, val2014/ and coco/
    keys: dict[str, list[str]]
    captions: dict[str, list[list[str]]]  # the 5 captions of each image
    embeddings: dict[str, np.ndarray]  # (N, 5, D)

    def image(self, key: str) -> Path:
        folder = key.split("_")[1]
        return self.root / folder / f"{key}.jpg"


def coco_key(folder: str, number: int) -> str:
    return f"COCO_{folder}_{number:012d}"


def build_coco(
    root: Path,
    *,
    train: int,
    test: int,
    unlisted: int = 2,
    dim: int = 1024,
    size: tuple[int, int] = (48, 36),
    t7_in_coco: bool = True,
    seed: int = 0,
) -> CocoLayout:
    """COCO 2014 images (``train2014/``, ``val2014/``) and StackGAN-Pytorch's ``coco/`` folder:
    ``train`` listed training images, ``test`` listed test images (val2014), ``unlisted`` more
    images in each image folder. Training captions go to ``coco/text/`` (6 lines: one more
    than the embeddings, as some COCO images have); the test captions and embeddings to
    ``val_captions.t7``, in ``coco/test/`` when ``t7_in_coco`` else beside ``coco/``."""
    rng = np.random.default_rng(seed)
    layout = CocoLayout(root, {}, {}, {})
    for split, folder, count in (("train", "train2014", train), ("test", "val2014", test)):
        keys = [coco_key(folder, 9 + 7 * i) for i in range(count)]
        for key in keys:
            write_jpeg(root / folder / f"{key}.jpg", rng, size)
        for i in range(unlisted):
            write_jpeg(root / folder / f"{coco_key(folder, 100_000 + i)}.jpg", rng, size)
        captions = [[f"{split} picture {key} says {j}" for j in range(5)] for key in keys]
        vectors = rng.standard_normal((count, 5, dim)).astype(np.float32)
        write_pickle(root / "coco" / split / "filenames.pickle", keys)
        layout.keys[split], layout.captions[split] = keys, captions
        layout.embeddings[split] = vectors
    for key, captions in zip(layout.keys["train"], layout.captions["train"], strict=True):
        text = root / "coco" / "text" / f"{key}.txt"
        text.parent.mkdir(parents=True, exist_ok=True)
        text.write_text("\n".join([*captions, "a sixth caption beyond the embeddings"]) + "\n")
    write_pickle(
        root / "coco" / "train" / "char-CNN-RNN-embeddings.pickle", list(layout.embeddings["train"])
    )
    test_vectors = layout.embeddings["test"]
    t7 = {
        "raw_txt": [caption for captions in layout.captions["test"] for caption in captions],
        "fea_txt": [row[None, :] for rows in test_vectors for row in rows],  # 1 x D each
    }
    where = root / "coco" / "test" if t7_in_coco else root
    write_t7(where / "val_captions.t7", t7)
    return layout


def pack_coco(layout: CocoLayout, folder: Path, *, t7: bool = False) -> dict[str, Path]:
    """``coco.zip``, ``train2014.zip`` and ``val2014.zip`` (and, with ``t7``, a copy of the
    ``val_captions.t7`` beside ``coco/``) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    files = {
        name: pack_zip(layout.root / name, folder / f"{name}.zip")
        for name in ("coco", "train2014", "val2014")
    }
    if t7:
        files["t7"] = folder / "val_captions.t7"
        files["t7"].write_bytes((layout.root / "val_captions.t7").read_bytes())
    return files


# --- the CLI -----------------------------------------------------------------------------------


def invoke(*args):
    """Run ``stackgan`` with ``args`` in this process."""
    return CliRunner().invoke(app, [str(a) for a in args])


def output_text(result) -> str:
    """stdout and stderr with rich's line wrapping undone."""
    return " ".join((result.output + (getattr(result, "stderr", "") or "")).split())


def one_error_line(result) -> str:
    """The one ``error:`` line, the last on stderr (after progress messages), of a clean
    ``StackGANError`` exit."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # not a crash
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    return errors[0]


def train_one_epoch(dataset: str, run_dir: Path, batch: int = 4) -> None:
    """A tiny StackGAN-v1 Stage-I training of one epoch on a prepared dataset."""
    result = run_cli(train_args(run_dir, *TINY, dataset=dataset, epochs=1, batch=batch))
    assert (run_dir / "generator.pt").is_file(), result.output


class ImageOpenCounter:
    """Counts ``PIL.Image.open`` calls in this process (each one still opens the image)."""

    def __init__(self, monkeypatch) -> None:
        self.count = 0
        original = Image.open

        def counting_open(*args, **kwargs):
            self.count += 1
            return original(*args, **kwargs)

        monkeypatch.setattr(Image, "open", counting_open)
