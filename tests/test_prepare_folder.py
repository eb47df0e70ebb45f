"""``stackgan prepare PATH``: one's own folder of images and captions, in either layout.

Every folder here is real files written by PIL in tmp_path (real links, a real FIFO); each
prepare runs the CLI end to end into the test's own cache and is read back with
``load_prepared``.
"""

import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from stackgan_cli import paths
from stackgan_cli.cli import app
from stackgan_cli.data import cub, folder, images
from stackgan_cli.data.prepared import load_prepared

WIDTH, HEIGHT = 48, 32  # small images: every prepare here takes a fraction of a second


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _text(result) -> str:
    """stdout and stderr with rich's line wrapping undone."""
    return " ".join((result.output + (result.stderr or "")).split())


def _error_line(result, code: int = 1) -> str:
    """The one ``error:`` line of a clean failure (no traceback), exit ``code``."""
    assert result.exit_code == code, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    return errors[0]


def _image(path: Path, colour=(200, 30, 30), size=(WIDTH, HEIGHT), mode="RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, colour).save(path, format=None if path.suffix else "PNG")
    return path


def _jsonl(path: Path, rows) -> Path:
    """Write ``rows`` (objects, or raw strings written as they are) one per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [row if isinstance(row, str) else json.dumps(row) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _labelled_folder(root: Path, classes: int = 4, per_class: int = 3) -> Path:
    """A metadata.jsonl folder: ``classes`` x ``per_class`` images, labels c0, c1, ...; image
    i of class c has i + 1 captions."""
    rows = []
    for c in range(classes):
        for i in range(per_class):
            name = f"pics/c{c}_{i}.png"
            _image(root / name, colour=(c * 50, i * 60, 90))
            captions = [f"class {c} image {i} caption {j}" for j in range(i + 1)]
            rows.append({"file_name": name, "text": captions, "label": f"c{c}"})
    _jsonl(root / "metadata.jsonl", rows)
    return root


def _prepared_dir(name: str) -> Path:
    return paths.prepared_dir(name)


def _png_header_only_size(path: Path, width: int, height: int) -> Path:
    """A valid 1-bit grey PNG of ``width`` x ``height`` built by hand (all black rows,
    compressed as they are made), so a huge image costs a few KB and no decoding."""
    row = b"\x00" + bytes((width + 7) // 8)
    compressor = zlib.compressobj(9)
    block = 500
    parts = [
        compressor.compress(row * min(block, height - start)) for start in range(0, height, block)
    ]
    idat = b"".join(parts) + compressor.flush()

    def chunk(tag: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(tag + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")
    )
    return path


# --- both layouts -------------------------------------------------------------------------


def test_metadata_layout_prepares_and_loads(tmp_path):
    root = _labelled_folder(tmp_path / "my-pics", classes=4, per_class=3)
    rows = [json.loads(line) for line in (root / "metadata.jsonl").read_text().splitlines()]
    rows[0]["text"] = [f"caption {j}" for j in range(12)]  # 2 beyond the 10 kept
    _jsonl(root / "metadata.jsonl", rows)

    result = _invoke("prepare", root, "--workers", 0)
    assert result.exit_code == 0, result.output
    assert "Prepared my-pics" in _text(result)
    assert "train a DAMSM" in _text(result)

    dataset = load_prepared("my-pics")
    assert dataset.split_names == ["train", "test"]
    train, test = dataset.split("train"), dataset.split("test")
    # 12 images, 3 per class: 0.2 * 12 = 2.4 is closest to one whole class of 3
    assert (len(train), len(test)) == (9, 3)
    for split in (train, test):
        n = len(split)
        assert split.images(76).shape == (n, 76, 76, 3)
        assert split.images(304).shape == (n, 304, 304, 3)
        assert split.embeddings.shape == (n, 10, 0) and split.embeddings.dtype == np.float32
        assert all(len(c) == 10 for c in split.captions)
    assert set(train.class_ids.tolist()).isdisjoint(test.class_ids.tolist())
    assert len(set(test.class_ids.tolist())) == 1

    by_name = {}
    for split in (train, test):
        for key, captions, class_id in zip(
            split.filenames, split.captions, split.class_ids, strict=True
        ):
            by_name[key] = (captions, int(class_id))
    assert sorted(by_name) == sorted(f"pics/c{c}_{i}" for c in range(4) for i in range(3))
    assert by_name["pics/c0_0"][0] == [f"caption {j}" for j in range(10)]
    # two captions, repeated in order to fill 10
    assert by_name["pics/c2_1"][0] == [f"class 2 image 1 caption {j % 2}" for j in range(10)]
    assert by_name["pics/c3_2"][1] == 3  # class ids: sorted class names c0..c3 -> 0..3

    metadata = dataset.metadata
    assert metadata["text_dim"] == 0 and metadata["text_encoder"] is None
    assert metadata["classes"] == ["c0", "c1", "c2", "c3"]
    assert metadata["captions"]["dropped"] == 2
    assert metadata["inputs"]["folder"] == {
        "path": str(root),
        "layout": "metadata.jsonl",
        "split": "classes",
        "test_fraction": 0.2,
        "seed": 0,
        "skipped": 0,
    }
    assert not (dataset.root / "text_encoder.pt").exists()
    assert dataset.text_encoder_dict() is None

    again = _invoke("prepare", root, "--workers", 0, "--seed", 3)
    assert again.exit_code == 0, again.output
    assert "already prepared" in _text(again) and "--seed 0" in _text(again)


def test_cub_layout_prepares_with_boxes_links_and_the_centre_square(tmp_path):
    root = tmp_path / "birds-own"
    elsewhere = tmp_path / "elsewhere"  # a class folder that is a link, as a dataset cache
    for c, cls in enumerate(("001.Red", "002.Blue", "003.Green")):
        base = elsewhere if c == 2 else root / "images"
        for i in range(2):
            image = Image.new("RGB", (60, 40), (250, 250, 250))
            image.paste((c * 100, 20, 200), (30, 0, 60, 40))  # the right half coloured
            (base / cls).mkdir(parents=True, exist_ok=True)
            image.save(base / cls / f"bird_{i}.jpg", quality=95)
            text = root / "text" / cls / f"bird_{i}.txt"
            text.parent.mkdir(parents=True, exist_ok=True)
            text.write_text(f"\n  a bird of class {c}  \n\nnumber {i}\n", encoding="utf-8")
    (root / "images" / "003.Green").symlink_to(elsewhere / "003.Green", target_is_directory=True)
    (root / "images" / ".cache").mkdir()  # hidden: not read
    _image(root / "images" / ".cache" / "x.jpg")
    # both forms: CUB's "<id> x y w h" through images.txt, and "<path> x y w h"
    (root / "images.txt").write_text("7 001.Red/bird_0.jpg\n8 001.Red/bird_1.jpg\n")
    (root / "bounding_boxes.txt").write_text(
        "7 30.0 0.0 30.0 40.0\n002.Blue/bird_1.jpg 31 1 28 38\n999.Gone/x.jpg 1 1 2 2\n"
    )

    result = _invoke("prepare", root, "--test-fraction", 0.34, "--workers", 0)
    assert result.exit_code == 0, result.output
    dataset = load_prepared("birds-own")
    train, test = dataset.split("train"), dataset.split("test")
    assert (len(train), len(test)) == (4, 2)
    assert dataset.metadata["classes"] == ["001.Red", "002.Blue", "003.Green"]
    assert dataset.metadata["inputs"]["folder"]["layout"] == "cub"
    keys = train.filenames + test.filenames
    assert sorted(keys) == sorted(
        f"{c}/bird_{i}" for c in dataset.metadata["classes"] for i in (0, 1)
    )
    rows = {key: (split, j) for split in (train, test) for j, key in enumerate(split.filenames)}

    def stored(key: str, size: int) -> np.ndarray:
        split, j = rows[key]
        return np.asarray(split.images(size)[j])

    def expected(relative: str, bbox) -> list[np.ndarray]:
        with Image.open(root / "images" / relative) as image:
            if bbox is None:
                image = image.convert("RGB").crop((10, 0, 50, 40))  # the centre square
                bbox = (0, 0, 40, 40)
            return cub.crop_and_resize(image, bbox)

    for key, bbox in (("001.Red/bird_0", (30, 0, 30, 40)), ("002.Blue/bird_1", (31, 1, 28, 38))):
        for size, crop in zip(cub.IMAGE_SIZES, expected(f"{key}.jpg", bbox), strict=True):
            np.testing.assert_array_equal(stored(key, size), crop)
    for key in ("001.Red/bird_1", "003.Green/bird_0"):  # no box: the centre square
        for size, crop in zip(cub.IMAGE_SIZES, expected(f"{key}.jpg", None), strict=True):
            np.testing.assert_array_equal(stored(key, size), crop)
    split, j = rows["003.Green/bird_1"]
    assert split.captions[j] == ["a bird of class 2", "number 1"] * 5


def test_test_fraction_zero_keeps_every_image_for_training(tmp_path):
    root = _labelled_folder(tmp_path / "all-train", classes=2, per_class=2)
    result = _invoke("prepare", root, "--test-fraction", 0, "--workers", 0)
    assert result.exit_code == 0, result.output
    dataset = load_prepared("all-train")
    assert dataset.split_names == ["train"] and len(dataset.split("train")) == 4
    assert not (dataset.root / "test").exists()
    assert dataset.metadata["inputs"]["folder"]["split"] == "none"

    evaluated = _invoke("evaluate", "--real", "--dataset", "all-train", "--inception")
    line = _error_line(evaluated)
    assert "has no split 'test'" in line and "--test-fraction" in line


def test_split_is_seeded_and_by_images_without_classes(tmp_path):
    root = tmp_path / "no-classes"
    rows = []
    for i in range(10):
        _image(root / f"{i:02d}.png", colour=(i * 20, 0, 0))
        rows.append({"file_name": f"{i:02d}.png", "text": f"picture {i}"})
    _jsonl(root / "metadata.jsonl", rows)

    def split_keys(name: str, seed: int) -> tuple[list[str], list[str]]:
        result = _invoke("prepare", root, "--name", name, "--seed", seed, "--workers", 0)
        assert result.exit_code == 0, result.output
        dataset = load_prepared(name)
        return dataset.split("train").filenames, dataset.split("test").filenames

    first = split_keys("a", 0)
    assert split_keys("b", 0) == first
    assert any(split_keys(f"s{seed}", seed) != first for seed in (1, 2, 3))
    train, test = first
    assert (len(train), len(test)) == (8, 2)
    assert train == sorted(train) and test == sorted(test)  # the folder's order within a split

    dataset = load_prepared("a")
    assert dataset.metadata["classes"] is None
    assert dataset.metadata["inputs"]["folder"]["split"] == "images"
    ids = [*dataset.split("train").class_ids.tolist(), *dataset.split("test").class_ids.tolist()]
    assert ids == list(range(10))  # each image its own class


def test_split_folders_are_kept(tmp_path):
    root = tmp_path / "hf-style"
    for split, count in (("train", 3), ("test", 2)):
        rows = []
        for i in range(count):
            _image(root / split / f"img{i}.png")
            rows.append({"file_name": f"img{i}.png", "text": [f"{split} {i}"], "label": i % 2})
        _jsonl(root / split / "metadata.jsonl", rows)

    refused = _invoke("prepare", root, "--test-fraction", 0.5, "--workers", 0)
    assert "--test-fraction" in _error_line(refused, code=2)
    assert not _prepared_dir("hf-style").exists()

    result = _invoke("prepare", root, "--workers", 0)
    assert result.exit_code == 0, result.output
    dataset = load_prepared("hf-style")
    assert dataset.split("train").filenames == ["train/img0", "train/img1", "train/img2"]
    assert dataset.split("test").filenames == ["test/img0", "test/img1"]
    assert dataset.metadata["classes"] == ["0", "1"]  # integer labels, in numeric order
    assert dataset.split("test").class_ids.tolist() == [0, 1]
    assert dataset.metadata["inputs"]["folder"]["split"] == "folders"
    assert dataset.metadata["inputs"]["folder"]["test_fraction"] is None


def test_class_disjoint_split_is_close_to_the_fraction():
    rng = np.random.default_rng(0)
    picked = folder._pick_test_classes([5, 5, 5, 5, 80], 20.0, rng)
    assert picked == [0, 1, 2, 3]
    # one huge class and a small one: the small one goes to test, the huge one stays
    assert folder._pick_test_classes([1, 100], 20.2, rng) == [0]
    # a target below every class still gives test one class; above all but one, one stays
    assert len(folder._pick_test_classes([10, 10, 10], 1.0, rng)) == 1
    assert len(folder._pick_test_classes([10, 10, 10], 29.0, rng)) == 2


# --- images of every mode -----------------------------------------------------------------


def test_every_image_mode_becomes_rgb(tmp_path):
    root = tmp_path / "modes"
    grey16 = np.full((HEIGHT, WIDTH), 0x8000, dtype=np.uint16)
    made = {
        "rgb.png": Image.new("RGB", (WIDTH, HEIGHT), (10, 120, 230)),
        "grey.png": Image.new("L", (WIDTH, HEIGHT), 77),
        "bilevel.png": Image.new("1", (WIDTH, HEIGHT), 1),
        "grey_alpha.png": Image.new("LA", (WIDTH, HEIGHT), (0, 0)),
        "rgba_clear.png": Image.new("RGBA", (WIDTH, HEIGHT), (255, 0, 0, 0)),
        "rgba_half.png": Image.new("RGBA", (WIDTH, HEIGHT), (255, 0, 0, 128)),
        "cmyk.jpg": Image.new("CMYK", (WIDTH, HEIGHT), (0, 255, 255, 0)),
        "grey16.png": Image.fromarray(grey16),
        "grey16_big_endian.tif": Image.fromarray(grey16.astype(">u2")),
        "int32.tif": Image.new("I", (WIDTH, HEIGHT), 0x8000),
        "float_unit.tif": Image.new("F", (WIDTH, HEIGHT), 0.5),
        "float_bytes.tif": Image.new("F", (WIDTH, HEIGHT), 200.0),
    }
    palette = Image.new("P", (WIDTH, HEIGHT), 1)
    palette.putpalette([0, 0, 0, 0, 200, 0] + [0] * 762)
    made["palette.png"] = palette
    clear = palette.copy()
    clear.info["transparency"] = 1
    made["palette_clear.png"] = clear
    expected = {
        "rgb.png": (10, 120, 230),
        "grey.png": (77, 77, 77),
        "bilevel.png": (255, 255, 255),
        "grey_alpha.png": (255, 255, 255),
        "rgba_clear.png": (255, 255, 255),
        "rgba_half.png": (255, 127, 127),
        "cmyk.jpg": (255, 0, 0),
        "grey16.png": (128, 128, 128),
        "grey16_big_endian.tif": (128, 128, 128),
        "int32.tif": (128, 128, 128),
        "float_unit.tif": (128, 128, 128),
        "float_bytes.tif": (200, 200, 200),
        "palette.png": (0, 200, 0),
        "palette_clear.png": (255, 255, 255),
    }
    root.mkdir()
    for name, image in made.items():
        if name == "palette_clear.png":
            image.save(root / name, transparency=1)
        else:
            image.save(root / name)
    with Image.open(root / "grey16_big_endian.tif") as check:
        assert check.mode == "I;16B"
    with Image.open(root / "grey16.png") as check:
        assert check.mode == "I;16"
    rows = [{"file_name": name, "text": name} for name in made]
    _jsonl(root / "metadata.jsonl", rows)

    result = _invoke("prepare", root, "--test-fraction", 0, "--workers", 0)
    assert result.exit_code == 0, result.output
    train = load_prepared("modes").split("train")
    for j, key in enumerate(train.filenames):
        name = next(n for n in made if n.rsplit(".", 1)[0] == key)
        pixel = tuple(int(v) for v in train.images(76)[j, 38, 38])
        if name == "cmyk.jpg":  # JPEG is lossy
            assert np.abs(np.subtract(pixel, expected[name])).max() <= 3, (name, pixel)
        else:
            assert pixel == expected[name], (name, pixel)


def test_exif_orientation_is_applied(tmp_path):
    root = tmp_path / "rotated"
    stored = Image.new("RGB", (60, 20), (0, 0, 255))
    stored.paste((255, 0, 0), (0, 0, 30, 20))  # left half red, as stored
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated 90 degrees clockwise: red on top
    root.mkdir()
    stored.save(root / "photo.jpg", exif=exif, quality=95)
    assert images.probe_image(root / "photo.jpg") == (20, 60)
    _jsonl(root / "metadata.jsonl", [{"file_name": "photo.jpg", "text": "a photo"}])
    result = _invoke("prepare", root, "--test-fraction", 0, "--workers", 0)
    assert result.exit_code == 0, result.output
    crop = load_prepared("rotated").split("train").images(76)[0]
    # the centre square of the upright 20x60 image straddles red (top) and blue (bottom)
    assert crop[5, 38, 0] > 200 and crop[5, 38, 2] < 50
    assert crop[70, 38, 2] > 200 and crop[70, 38, 0] < 50


# --- bad input ------------------------------------------------------------------------------


def _two_good_rows(root: Path) -> list[dict]:
    for i in range(2):
        _image(root / f"good{i}.png")
    return [{"file_name": f"good{i}.png", "text": "a good one", "label": f"k{i}"} for i in range(2)]


def _truncated_jpeg(path: Path) -> Path:
    noise = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(noise).save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def _fifo(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mkfifo(path)
    return path


BAD_IMAGES = {
    # case: (how to make bad.* in the folder, file_name, words of the message)
    "dot-dot": (None, "../outside.png", "leaves the folder"),
    "absolute": (None, "/etc/hostname", "leaves the folder"),
    "missing": (None, "nowhere.png", "no such file"),
    "folder": (lambda p: p.mkdir(), "bad.jpg", "a folder"),
    "fifo": (_fifo, "bad.jpg", "not a regular file"),
    "fake": (lambda p: p.write_text("not an image at all"), "bad.jpg", "not an image"),
    "truncated": (_truncated_jpeg, "bad.jpg", "cannot decode"),
    "bomb": (lambda p: _png_header_only_size(p, 10_000, 9_000), "bad.png", "too large"),
    "huge-bomb": (lambda p: _png_header_only_size(p, 20_000, 20_000), "bad.png", "too large"),
}


@pytest.mark.parametrize("case", sorted(BAD_IMAGES))
def test_a_bad_image_is_refused_with_one_line_and_nothing_written(tmp_path, case):
    make, file_name, words = BAD_IMAGES[case]
    root = tmp_path / "bad-images"
    rows = _two_good_rows(root)
    if make is not None:
        make(root / file_name)
    if case == "dot-dot":
        _image(tmp_path / "outside.png")  # it exists: refused all the same
    rows.insert(1, {"file_name": file_name, "text": "the bad one", "label": "k0"})
    _jsonl(root / "metadata.jsonl", rows)

    line = _error_line(_invoke("prepare", root, "--workers", 0))
    assert f"{root / 'metadata.jsonl'}:2:" in line
    assert file_name in line and words in line and "--skip-bad" in line
    assert not _prepared_dir("bad-images").exists()


def test_an_unreadable_image_is_refused(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root reads files whatever their permissions")
    root = tmp_path / "locked"
    rows = _two_good_rows(root)
    (root / "good1.png").chmod(0)
    _jsonl(root / "metadata.jsonl", rows)
    line = _error_line(_invoke("prepare", root, "--workers", 0))
    assert ":2:" in line and "permission denied" in line
    assert not _prepared_dir("locked").exists()


BAD_ROWS = {
    "malformed JSON": ('{"file_name": "x.png", "text": ', "not valid JSON"),
    "not an object": ('["x.png", "a caption"]', "expected a JSON object"),
    "no file_name": ({"text": "a caption"}, "no file_name"),
    "file_name not a string": ({"file_name": 3, "text": "x"}, "file_name must be"),
    "no text": ({"file_name": "good0.png"}, "no text"),
    "text a number": ({"file_name": "good0.png", "text": 5}, "text must be"),
    "blank text": ({"file_name": "good0.png", "text": ["  ", ""]}, "no caption"),
    "label a list": ({"file_name": "good0.png", "text": "x", "label": [1]}, "label must be"),
    "bbox too short": ({"file_name": "good0.png", "text": "x", "bbox": [1, 2]}, "bbox must be"),
    "bbox empty": ({"file_name": "good0.png", "text": "x", "bbox": [1, 2, 0, 5]}, "at least 1"),
    "bbox outside": ({"file_name": "good0.png", "text": "x", "bbox": [99, 1, 5, 5]}, "outside"),
    "no label": ({"file_name": "good0.png", "text": "x"}, "no label"),
}


@pytest.mark.parametrize("case", sorted(BAD_ROWS))
def test_a_bad_metadata_line_is_refused_with_its_line_number(tmp_path, case):
    row, words = BAD_ROWS[case]
    if isinstance(row, dict) and case != "no label":
        row = {"label": "k0", **row}  # so that only the fault under test is one
    root = tmp_path / "bad-rows"
    good = _two_good_rows(root)
    _image(root / "x.png")
    _jsonl(root / "metadata.jsonl", [good[1], "", row])  # a blank line is skipped, still counted
    line = _error_line(_invoke("prepare", root, "--workers", 0))
    assert f"{root / 'metadata.jsonl'}:3:" in line and words in line, line
    assert not _prepared_dir("bad-rows").exists()


def test_an_image_listed_twice_and_a_line_not_utf8_are_refused(tmp_path):
    root = tmp_path / "twice"
    rows = _two_good_rows(root)
    _jsonl(root / "metadata.jsonl", [*rows, {"file_name": "./good0.png", "text": "again"}])
    line = _error_line(_invoke("prepare", root, "--workers", 0))
    assert ":3:" in line and "listed twice" in line and f"{root / 'metadata.jsonl'}:1" in line

    _jsonl(root / "metadata.jsonl", rows[:1])
    with open(root / "metadata.jsonl", "ab") as handle:
        handle.write(b'{"file_name": "good1.png", "text": "caf\xe9"}\n')
    line = _error_line(_invoke("prepare", root, "--workers", 0))
    assert ":2:" in line and "not UTF-8" in line
    assert not _prepared_dir("twice").exists()


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"\n   \n", "caption file is empty"),
        (b"an \xff\xfe bird\n", "not UTF-8"),
        (None, "missing"),
    ],
)
def test_a_bad_caption_file_is_refused(tmp_path, content, words):
    root = tmp_path / "bad-captions"
    for i in range(2):
        _image(root / "images" / "a" / f"{i}.jpg")
        (root / "text" / "a").mkdir(parents=True, exist_ok=True)
        (root / "text" / "a" / f"{i}.txt").write_text("fine\n")
    caption = root / "text" / "a" / "1.txt"
    if content is None:
        caption.unlink()
    else:
        caption.write_bytes(content)
    line = _error_line(_invoke("prepare", root, "--workers", 0))
    assert str(caption) in line and words in line
    assert not _prepared_dir("bad-captions").exists()


def test_a_failed_prepare_with_force_keeps_the_dataset_there_was(tmp_path):
    root = _labelled_folder(tmp_path / "kept", classes=2, per_class=2)
    assert _invoke("prepare", root, "--workers", 0).exit_code == 0
    before = load_prepared("kept").fingerprint
    _truncated_jpeg(root / "pics" / "c1_1.png")  # decoded only after the split is planned
    line = _error_line(_invoke("prepare", root, "--workers", 0, "--force"))
    assert "c1_1.png" in line and "cannot decode" in line
    assert load_prepared("kept").fingerprint == before
    assert not [p for p in paths.dataset_dir("kept").iterdir() if p.name.endswith(".tmp")]


# --- --skip-bad ----------------------------------------------------------------------------


def test_skip_bad_leaves_out_bad_rows_and_lists_them(tmp_path):
    root = tmp_path / "mixed"
    rows = []
    for i in range(8):
        _image(root / f"ok{i}.png", colour=(i * 30, 60, 60))
        rows.append({"file_name": f"ok{i}.png", "text": f"fine {i}"})
    _truncated_jpeg(root / "cut.jpg")
    (root / "fake.png").write_text("text")
    rows[2:2] = [
        {"file_name": "cut.jpg", "text": "cut in half"},
        "{broken",
        {"file_name": "../up.png", "text": "outside"},
        {"file_name": "fake.png", "text": "fake"},
    ]
    _jsonl(root / "metadata.jsonl", rows)

    result = _invoke("prepare", root, "--skip-bad", "--test-fraction", 0, "--workers", 2)
    assert result.exit_code == 0, result.output
    assert result.stderr.count("warning:") == 1
    assert "left out 4 bad image(s)" in _text(result)
    dataset = load_prepared("mixed")
    train = dataset.split("train")
    assert train.filenames == [f"ok{i}" for i in range(8)]
    assert train.images(304).shape == (8, 304, 304, 3)
    skipped = [
        json.loads(line)
        for line in (dataset.root / "skipped.jsonl").read_text(encoding="utf-8").splitlines()
    ]
    assert sorted((row["line"], row["reason"].split(":")[0]) for row in skipped) == [
        (3, "cut.jpg"),
        (4, "not valid JSON (Expecting property name enclosed in double quotes, column 2)"),
        (5, "file_name '../up.png' leaves the folder " + str(root)),
        (6, "fake.png"),
    ]
    assert {row["file"] for row in skipped} == {str(root / "metadata.jsonl")}
    assert dataset.metadata["inputs"]["folder"]["skipped"] == 4


def test_skip_bad_with_nothing_left_is_one_line(tmp_path):
    root = tmp_path / "all-bad"
    root.mkdir()
    (root / "a.png").write_text("no")
    _jsonl(root / "metadata.jsonl", [{"file_name": "a.png", "text": "x"}, "nonsense"])
    line = _error_line(_invoke("prepare", root, "--skip-bad", "--workers", 0))
    assert "no usable image" in line and "2 bad" in line
    assert not _prepared_dir("all-bad").exists()


# --- links, long captions ---------------------------------------------------------------------


def test_links_inside_the_folder_are_followed_wherever_they_point(tmp_path):
    # A Hugging Face cache: snapshots/<rev>/ holds links into blobs/, and the folder given is
    # itself a link to the snapshot.
    cache = tmp_path / "hub" / "datasets--me--pics"
    blob = _image(cache / "blobs" / "0a1b2c", colour=(0, 255, 0))
    rows = [
        {"file_name": "img/green.png", "text": "all green"},
        {"file_name": "far.png", "text": "a linked file outside"},
    ]
    metadata = _jsonl(cache / "blobs" / "3d4e", rows)
    snapshot = cache / "snapshots" / "rev1"
    (snapshot / "img").mkdir(parents=True)
    (snapshot / "img" / "green.png").symlink_to(blob)
    (snapshot / "metadata.jsonl").symlink_to(metadata)
    outside = _image(tmp_path / "elsewhere" / "far.png", colour=(0, 0, 255))
    (snapshot / "far.png").symlink_to(outside)
    link = tmp_path / "my-pics"
    link.symlink_to(snapshot, target_is_directory=True)

    result = _invoke("prepare", link, "--test-fraction", 0, "--workers", 0)
    assert result.exit_code == 0, result.output
    dataset = load_prepared("my-pics")  # the link's name, not the snapshot's
    train = dataset.split("train")
    assert train.filenames == ["img/green", "far"]
    assert tuple(train.images(76)[0, 38, 38]) == (0, 255, 0)
    assert tuple(train.images(76)[1, 38, 38]) == (0, 0, 255)
    assert dataset.metadata["inputs"]["folder"]["path"] == str(link)


def test_a_long_caption_is_truncated_not_refused(tmp_path):
    root = tmp_path / "wordy"
    _image(root / "a.png")
    long = "word " * 1000
    _jsonl(root / "metadata.jsonl", [{"file_name": "a.png", "text": [long, "short"]}])
    result = _invoke("prepare", root, "--test-fraction", 0, "--workers", 0)
    assert result.exit_code == 0, result.output
    assert "cut 1 caption(s) longer than 1,000 characters" in _text(result)
    captions = load_prepared("wordy").split("train").captions[0]
    assert len(captions[0]) <= folder.MAX_CAPTION_CHARS
    assert captions[0] == long[: folder.MAX_CAPTION_CHARS].rstrip()
    assert captions[1] == "short"


# --- the command line ---------------------------------------------------------------------


def test_prepare_help_lists_the_datasets_and_path():
    result = _invoke("prepare", "--help")
    assert result.exit_code == 0
    text = _text(result)
    assert "cub" in text and "shapes" in text and "PATH" in text
    assert "folder " not in text.split("Commands")[-1]  # the folder command stays hidden
    path_help = _invoke("prepare", "./anything", "--help")
    assert path_help.exit_code == 0
    assert "stackgan prepare {PATH} [OPTIONS]" in _text(path_help)
    assert "--test-fraction" in _text(path_help) and "--skip-bad" in _text(path_help)


def test_bad_paths_names_and_fractions_are_usage_errors(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    line = _error_line(_invoke("prepare", "flowerz"), code=2)
    assert "'flowerz'" in line and "cub, shapes" in line and "./flowerz" in line
    assert "no folder at ./flowerz" in _error_line(_invoke("prepare", "./flowerz"), code=2)
    (tmp_path / "file.txt").write_text("x")
    assert "not a folder" in _error_line(_invoke("prepare", "./file.txt"), code=2)

    _labelled_folder(tmp_path / "cub", classes=2, per_class=2)
    line = _error_line(_invoke("prepare", "./cub", "--workers", 0), code=2)
    assert "built-in" in line and "--name" in line
    line = _error_line(_invoke("prepare", "./cub", "--name", "my birds"), code=2)
    assert "--name" in line and "not a dataset name" in line
    assert "--name" in _error_line(_invoke("prepare", "./cub", "--name", ".hidden"), code=2)
    line = _error_line(_invoke("prepare", "./cub", "--name", "b", "--test-fraction", 1), code=2)
    assert "--test-fraction" in line
    assert not paths.dataset_dir("cub").exists() and not paths.dataset_dir("b").exists()

    # a bare name that is a folder here, and is no command, is that folder
    result = _invoke("prepare", "cub", "--help")
    assert "Prepare CUB-200-2011" in _text(result)  # a command's name stays the command
    (tmp_path / "mine").symlink_to(tmp_path / "cub", target_is_directory=True)
    result = _invoke("prepare", "mine", "--workers", 0)
    assert result.exit_code == 0, result.output
    assert load_prepared("mine").metadata["inputs"]["folder"]["path"] == str(tmp_path / "mine")


def test_neither_layout_or_no_images_is_one_line(tmp_path):
    root = tmp_path / "empty-ish"
    _image(root / "lonely.png")
    line = _error_line(_invoke("prepare", root, "--workers", 0))
    assert "neither layout" in line and "metadata.jsonl" in line
    (root / "metadata.jsonl").write_text("\n\n")
    assert f"no images in {root}" in _error_line(_invoke("prepare", root, "--workers", 0))
    assert not _prepared_dir("empty-ish").exists()


def test_training_runs_on_a_dataset_with_a_train_split_alone(tmp_path):
    from training_helpers import TINY, run_cli, train_args, write_tiny_prepared

    from stackgan_cli.data.prepared import read_metadata, write_metadata

    root = write_tiny_prepared(paths.prepared_dir("tiny"))
    metadata = read_metadata(root)
    del metadata["splits"]["test"]
    metadata["files"] = {k: v for k, v in metadata.get("files", {}).items() if k[:5] != "test/"}
    write_metadata(root, metadata)
    for path in (root / "test").iterdir():
        path.unlink()
    (root / "test").rmdir()
    assert load_prepared("tiny").split_names == ["train"]
    run_cli(train_args(tmp_path / "run", *TINY, epochs=1))
    assert (tmp_path / "run" / "generator.pt").is_file()


# --- real CUB images, when shared/data holds them -----------------------------------------------


def test_real_cub_images_in_cub_layout(tmp_path, shared_data):
    source = shared_data / "cub-mini"
    images_dir = source / "CUB_200_2011" / "images"
    classes = sorted(p.name for p in images_dir.iterdir() if p.is_dir())[:2]
    root = tmp_path / "mini-birds"
    root.mkdir()
    for table in ("images.txt", "bounding_boxes.txt"):  # CUB's own, listing every image
        (root / table).symlink_to(source / "CUB_200_2011" / table)
    expected = {}
    for cls in classes:
        for image in sorted((images_dir / cls).glob("*.jpg"))[:3]:
            key = f"{cls}/{image.stem}"
            text = source / "birds" / "text_c10" / f"{key}.txt"
            for sub, target in (("images", image), ("text", text)):
                link = root / sub / cls / target.name
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(target)
            expected[key] = cub.read_captions(text)
    result = _invoke("prepare", root, "--workers", 0)
    assert result.exit_code == 0, result.output
    dataset = load_prepared("mini-birds")
    index = cub.read_image_index(source / "CUB_200_2011")
    found = {}
    for split in (dataset.split(name) for name in dataset.split_names):
        found.update(zip(split.filenames, split.captions, strict=True))
        for j, key in enumerate(split.filenames):  # the official crop around the bird
            official = cub.load_image(images_dir / index[key].path, index[key].bbox)
            np.testing.assert_array_equal(split.images(76)[j], official[0])
            np.testing.assert_array_equal(split.images(304)[j], official[1])
    assert found == expected
    assert dataset.metadata["classes"] == classes
