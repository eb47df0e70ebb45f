"""The synthetic ``shapes`` dataset: coloured shapes with captions, in CUB's raw layout.

Every image shows one shape (circle, square, triangle, star) in one colour (red, green, blue,
yellow, purple, orange) on a muted background, at a random size, position and slight tilt. A
class is a (colour, shape) pair; like CUB's, the split is class-disjoint: the six test classes
are combinations never seen in training, while every colour and every shape is in training.

Captions come from templates that name the colour, the shape and often the size and background.
Their stand-in embeddings (``stand_in_embedding``) sum one fixed pseudo-random vector per word,
so they tell the words apart the way char-CNN-RNN embeddings tell descriptions apart.

The files are written exactly as the CUB archives unpack (``CUB_200_2011/``, ``birds/``), so
preparing them runs the same code as preparing CUB. Output depends only on the image count and
the seed: each image draws from its own random stream seeded by ``(seed, index)``.
"""

from __future__ import annotations

import hashlib
import math
import pickle
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from stackgan_cli.data.cub import CAPTIONS_PER_IMAGE, SPLITS

SHAPES = ("circle", "square", "triangle", "star")
COLOURS = {
    "red": (215, 35, 35),
    "green": (40, 165, 55),
    "blue": (35, 75, 215),
    "yellow": (240, 205, 30),
    "purple": (135, 55, 175),
    "orange": (245, 135, 25),
}
BACKGROUNDS = {
    "gray": (128, 128, 128),
    "light gray": (185, 185, 185),
    "dark gray": (68, 68, 68),
    "beige": (196, 186, 160),
}
CLASSES = tuple((colour, shape) for colour in COLOURS for shape in SHAPES)
"""(colour, shape) pairs; class id = position + 1, as CUB numbers its classes from 1."""
TEST_CLASSES = frozenset((colour, SHAPES[i % len(SHAPES)]) for i, colour in enumerate(COLOURS))
"""One shape per colour, cycling through the shapes: each colour keeps three shapes in training
and each shape at least four colours."""
MIN_IMAGES = len(CLASSES)
DEFAULT_IMAGES = 1000
TEXT_DIM = 1024
TEXT_ENCODER_EPOCHS = 3
"""Text-encoder epochs for shapes. Templated captions are learned in a few: on the default
1,000 images the test cosine is about 0.988 after 3 epochs, 0.996 after 5 and 0.998 after the
encoder's own default (60, minutes on 2 cores)."""
IMAGE_SUFFIX = ".jpg"
EMBEDDING_NORM = 4.61
"""The L2 norm of a real char-CNN-RNN embedding (shared/data/char-cnn-rnn-example.json)."""

_ALTERNATIVE_NAMES = {
    "circle": "round shape",
    "square": "shape with four equal sides",
    "triangle": "shape with three corners",
    "star": "five-pointed star",
}
_TEMPLATES = (
    "a {colour} {shape} on a {background} background",
    "this is a {size} {colour} {shape}",
    "a {size} {colour} {shape} in front of a {background} background",
    "the picture shows a {colour} {shape}",
    "a {colour} {shape} drawn on a plain {background} background",
    "there is a {size} {shape} colored {colour}",
    "a single {colour} {shape} and nothing else",
    "this {shape} is {colour} and {size}",
    "a {background} background with a {colour} {shape} on it",
    "a {colour} {alternative}",
    "the {shape} in this image is {colour}",
    "one {size} {colour} {shape}",
    "a simple drawing of a {colour} {shape}",
    "the {colour} object is a {shape}",
)
_SUPERSAMPLE = 2  # draw at twice the size, then average down: smooth edges
_WORD = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class ShapeImage:
    """One generated image: where it goes in the layout, and what it shows."""

    image_id: int  # 1-based, the row of images.txt
    class_id: int  # 1-based
    key: str  # "<class_dir>/<name>"
    colour: str
    shape: str


def class_dir(class_id: int) -> str:
    """CUB-style class folder name, e.g. ``"001.red_circle"``."""
    colour, shape = CLASSES[class_id - 1]
    return f"{class_id:03d}.{colour}_{shape}"


def plan_images(count: int) -> list[ShapeImage]:
    """The ``count`` images, spread evenly over the classes, grouped by class as CUB is."""
    if count < MIN_IMAGES:
        raise ValueError(f"need at least {MIN_IMAGES} images (one per class), got {count}")
    per_class, extra = divmod(count, len(CLASSES))
    plan = []
    for index, (colour, shape) in enumerate(CLASSES):
        class_id = index + 1
        for _ in range(per_class + (index < extra)):
            image_id = len(plan) + 1
            key = f"{class_dir(class_id)}/{colour}_{shape}_{image_id:05d}"
            plan.append(ShapeImage(image_id, class_id, key, colour, shape))
    return plan


def draw_image(item: ShapeImage, seed: int) -> tuple[Image.Image, tuple[float, ...], list[str]]:
    """Draw one image; returns it, its bounding box ``(x, y, w, h)`` and its 10 captions."""
    rng = np.random.default_rng([seed, item.image_id])
    width, height = int(rng.integers(224, 321)), int(rng.integers(192, 289))
    background_name = list(BACKGROUNDS)[int(rng.integers(len(BACKGROUNDS)))]
    brightness = int(rng.integers(-10, 11))
    background = _jitter(rng, tuple(c + brightness for c in BACKGROUNDS[background_name]), 3)
    colour = _jitter(rng, COLOURS[item.colour], 14)

    short_side = min(width, height)
    fraction = float(rng.uniform(0.3, 0.65))
    radius = fraction * short_side / 2
    cx = float(rng.uniform(radius + 2, width - radius - 2))
    cy = float(rng.uniform(radius + 2, height - radius - 2))
    points = _outline(item.shape, cx, cy, radius, rng)

    s = _SUPERSAMPLE
    mask = Image.new("L", (width * s, height * s), 0)
    draw = ImageDraw.Draw(mask)
    if item.shape == "circle":
        xs, ys = zip(*points, strict=True)
        draw.ellipse([min(xs) * s, min(ys) * s, max(xs) * s, max(ys) * s], fill=255)
    else:
        draw.polygon([(x * s, y * s) for x, y in points], fill=255)
    image = Image.fromarray(_gradient(rng, background, width, height))
    image.paste(colour, (0, 0, width, height), mask.reduce(s))

    bbox = _bounding_box(points, width, height, margin=0.08 * 2 * radius)
    size_word = "small" if fraction < 0.4 else "large" if fraction > 0.55 else "medium-sized"
    chosen = rng.choice(len(_TEMPLATES), size=CAPTIONS_PER_IMAGE, replace=False)
    captions = [
        _TEMPLATES[int(t)].format(
            colour=item.colour,
            shape=item.shape,
            size=size_word,
            background=background_name,
            alternative=_ALTERNATIVE_NAMES[item.shape],
        )
        for t in chosen
    ]
    return image, bbox, captions


def stand_in_embedding(text: str) -> np.ndarray:
    """A deterministic 1024-d float32 embedding of ``text``: the sum of one pseudo-random
    Gaussian vector per word (seeded by the word's SHA-256), scaled to ``EMBEDDING_NORM``.
    Captions sharing words point in similar directions; different words, different ones."""
    total = np.zeros(TEXT_DIM, dtype=np.float64)
    for word in _WORD.findall(text.lower()):
        total += _word_vector(word)
    norm = np.linalg.norm(total)
    if norm == 0:
        return total.astype(np.float32)
    return (total * (EMBEDDING_NORM / norm)).astype(np.float32)


def render_image(task: tuple[str, ShapeImage, int]) -> tuple[tuple[float, ...], list[str]]:
    """Draw one image of ``(root, item, seed)`` and write it and its caption file under
    ``root``; returns its bounding box and captions. The unit of work of the process pool."""
    root, item, seed = task
    image, bbox, captions = draw_image(item, seed)
    image_path = Path(root) / "CUB_200_2011" / "images" / f"{item.key}{IMAGE_SUFFIX}"
    image_path.parent.mkdir(parents=True, exist_ok=True)
    # 4:4:4 chroma at high quality keeps the flat colours and their edges clean
    image.save(image_path, quality=95, subsampling=0)
    caption_path = Path(root) / "birds" / "text_c10" / f"{item.key}.txt"
    caption_path.parent.mkdir(parents=True, exist_ok=True)
    caption_path.write_text("\n".join(captions) + "\n", encoding="utf-8")
    return bbox, captions


def write_shapes_raw(
    root: Path,
    *,
    images: int = DEFAULT_IMAGES,
    seed: int = 0,
    map_fn: Callable[..., Iterable] = map,
) -> dict:
    """Generate the dataset into ``root`` in CUB's raw layout (``root/CUB_200_2011``,
    ``root/birds``); returns ``{"images": N, "seed": S, "classes": K}``. ``map_fn`` (an
    ordered map, e.g. a process pool's ``imap``) runs ``render_image`` over the images."""
    root = Path(root)
    cub_dir, birds_dir = root / "CUB_200_2011", root / "birds"
    plan = plan_images(images)
    image_rows, box_rows, label_rows, split_rows = [], [], [], []
    by_split: dict[str, list[tuple[ShapeImage, list[str]]]] = {split: [] for split in SPLITS}
    rendered = map_fn(render_image, [(str(root), item, seed) for item in plan])
    for item, (bbox, captions) in zip(plan, rendered, strict=True):
        split = "test" if CLASSES[item.class_id - 1] in TEST_CLASSES else "train"
        by_split[split].append((item, captions))
        image_rows.append(f"{item.image_id} {item.key}{IMAGE_SUFFIX}")
        box_rows.append(f"{item.image_id} " + " ".join(f"{v:.1f}" for v in bbox))
        label_rows.append(f"{item.image_id} {item.class_id}")
        split_rows.append(f"{item.image_id} {int(split == 'train')}")

    _write_lines(cub_dir / "images.txt", image_rows)
    _write_lines(cub_dir / "bounding_boxes.txt", box_rows)
    _write_lines(cub_dir / "image_class_labels.txt", label_rows)
    _write_lines(cub_dir / "train_test_split.txt", split_rows)
    _write_lines(
        cub_dir / "classes.txt", [f"{i} {class_dir(i)}" for i in range(1, len(CLASSES) + 1)]
    )
    for split, entries in by_split.items():
        split_dir = birds_dir / split
        split_dir.mkdir(parents=True, exist_ok=True)
        # a list of (10, 1024) arrays, as in the upstream pickles
        embeddings = [
            np.stack([stand_in_embedding(c) for c in captions]) for _, captions in entries
        ]
        _write_pickle(split_dir / "filenames.pickle", [item.key for item, _ in entries])
        _write_pickle(split_dir / "class_info.pickle", [item.class_id for item, _ in entries])
        _write_pickle(split_dir / "char-CNN-RNN-embeddings.pickle", embeddings)
    return {"images": images, "seed": seed, "classes": len(CLASSES)}


@lru_cache(maxsize=4096)
def _word_vector(word: str) -> np.ndarray:
    digest = hashlib.sha256(word.encode("utf-8")).digest()
    rng = np.random.default_rng(int.from_bytes(digest[:8], "little"))
    vector = rng.standard_normal(TEXT_DIM)
    vector.setflags(write=False)
    return vector


def _outline(
    shape: str, cx: float, cy: float, radius: float, rng: np.random.Generator
) -> list[tuple[float, float]]:
    """The shape's outline points (a circle's is its ellipse's four extreme points)."""
    if shape == "circle":
        rx = radius * float(rng.uniform(0.9, 1.0))
        ry = radius * float(rng.uniform(0.9, 1.0))
        return [(cx - rx, cy), (cx + rx, cy), (cx, cy - ry), (cx, cy + ry)]
    tilt = math.radians(float(rng.uniform(-15, 15)))
    if shape == "square":
        corners = [(radius * math.cos(a), radius * math.sin(a)) for a in _angles(4, math.pi / 4)]
        # a square's corners are at radius; shrink so its side is about the circle's diameter
        corners = [(x * 0.75, y * 0.75) for x, y in corners]
    elif shape == "triangle":
        corners = [(radius * math.cos(a), radius * math.sin(a)) for a in _angles(3, -math.pi / 2)]
    elif shape == "star":
        corners = []
        for i, a in enumerate(_angles(10, -math.pi / 2)):
            r = radius if i % 2 == 0 else radius * 0.42
            corners.append((r * math.cos(a), r * math.sin(a)))
    else:
        raise ValueError(f"unknown shape {shape!r}")
    cos_t, sin_t = math.cos(tilt), math.sin(tilt)
    return [(cx + x * cos_t - y * sin_t, cy + x * sin_t + y * cos_t) for x, y in corners]


def _angles(count: int, start: float) -> list[float]:
    return [start + 2 * math.pi * i / count for i in range(count)]


def _bounding_box(
    points: list[tuple[float, float]], width: int, height: int, margin: float
) -> tuple[float, float, float, float]:
    """``(x, y, w, h)`` around ``points`` widened by ``margin``, kept inside the image."""
    xs, ys = zip(*points, strict=True)
    x1, y1 = max(0.0, min(xs) - margin), max(0.0, min(ys) - margin)
    x2, y2 = min(float(width), max(xs) + margin), min(float(height), max(ys) + margin)
    return (round(x1, 1), round(y1, 1), round(x2 - x1, 1), round(y2 - y1, 1))


def _jitter(rng: np.random.Generator, rgb: tuple[int, int, int], amount: int) -> tuple:
    return tuple(int(np.clip(c + rng.integers(-amount, amount + 1), 0, 255)) for c in rgb)


def _gradient(
    rng: np.random.Generator, rgb: tuple[int, ...], width: int, height: int
) -> np.ndarray:
    """A background of colour ``rgb`` with a gentle linear shading in a random direction."""
    angle = float(rng.uniform(0, 2 * math.pi))
    strength = float(rng.uniform(6, 18))
    xs = np.linspace(-1, 1, width, dtype=np.float32)[None, :]
    ys = np.linspace(-1, 1, height, dtype=np.float32)[:, None]
    shade = (math.cos(angle) * xs + math.sin(angle) * ys) * strength
    pixels = np.asarray(rgb, dtype=np.float32)[None, None, :] + shade[:, :, None]
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _write_lines(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _write_pickle(path: Path, obj) -> None:
    with open(path, "wb") as handle:
        # Protocol 4, not the upstream files' 2: protocol 2 spells array bytes as latin-1 text,
        # which takes several times the array's size in memory. The reader accepts both.
        pickle.dump(obj, handle, protocol=4)
