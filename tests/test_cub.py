"""Reading the raw CUB + birds layouts: crop arithmetic, parsing, and the errors that name files."""

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stackgan_cli.data import cub, shapes
from stackgan_cli.errors import StackGANError


@pytest.mark.parametrize(
    ("bbox", "size", "expected"),
    [
        # inside the image: R = int(60 * 0.75) = 45, centre (130, 100), a 90x90 square
        ((100, 80, 60, 40), (400, 300), (85, 55, 175, 145)),
        # odd sums are truncated after true division: R = int(33 * 0.75) = 24,
        # cx = int(53 / 2) = 26, cy = int(101 / 2) = 50
        ((10, 40, 33, 21), (200, 200), (2, 26, 50, 74)),
        # clipped at the left border: R = 30, centre (20, 120) -> 50 wide, 60 high
        ((0, 100, 40, 40), (300, 300), (0, 90, 50, 150)),
        # clipped at the top border
        ((100, 5, 40, 40), (300, 300), (90, 0, 150, 55)),
        # clipped at the right border: centre x 290, so x2 = min(300, 320)
        ((270, 100, 40, 40), (300, 300), (260, 90, 300, 150)),
        # clipped at the bottom border
        ((100, 270, 40, 40), (300, 300), (90, 260, 150, 300)),
        # clipped on all four sides: the whole (non-square) image
        ((0, 0, 300, 200), (300, 200), (0, 0, 300, 200)),
        # the first cub-mini test image's box in a 500x336 frame
        ((60, 27, 325, 304), (500, 336), (0, 0, 465, 336)),
    ],
)
def test_crop_box_matches_hand_computed_boxes(bbox, size, expected):
    assert cub.crop_box(bbox, *size) == expected


def test_crop_and_resize_uses_the_box_and_pil_bilinear():
    # Left half red, right half blue: a box well inside the left half must come out pure red.
    pixels = np.zeros((120, 200, 3), dtype=np.uint8)
    pixels[:, :100] = (255, 0, 0)
    pixels[:, 100:] = (0, 0, 255)
    image = Image.fromarray(pixels)
    small, large = cub.crop_and_resize(image, (30, 40, 20, 20))  # crop (25, 35)-(55, 65)
    assert small.shape == (76, 76, 3) and large.shape == (304, 304, 3)
    assert small.dtype == np.uint8
    assert (small == (255, 0, 0)).all() and (large == (255, 0, 0)).all()

    # Each size is resized directly from the (non-square, clipped) crop with PIL bilinear.
    gradient = Image.fromarray(np.random.default_rng(0).integers(0, 256, (90, 130, 3), np.uint8))
    box = cub.crop_box((100, 10, 40, 50), 130, 90)
    assert box == (83, 0, 130, 72)
    reference = gradient.crop(box)
    for size, array in zip(
        (76, 304), cub.crop_and_resize(gradient, (100, 10, 40, 50)), strict=True
    ):
        expected = np.asarray(reference.resize((size, size), Image.Resampling.BILINEAR))
        np.testing.assert_array_equal(array, expected)


def test_grayscale_images_become_rgb(tmp_path):
    path = tmp_path / "gray.jpg"
    Image.new("L", (50, 40), 100).save(path)
    small, large = cub.load_image(path, (5, 5, 20, 20))
    assert small.shape == (76, 76, 3) and large.shape == (304, 304, 3)
    assert (small[..., 0] == small[..., 1]).all()


def test_unreadable_and_missing_images_name_the_file(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a jpeg at all")
    with pytest.raises(StackGANError, match="cannot read image .*broken.jpg"):
        cub.load_image(broken, (0, 0, 10, 10))
    with pytest.raises(StackGANError, match="missing image file: .*absent.jpg"):
        cub.load_image(tmp_path / "absent.jpg", (0, 0, 10, 10))


@pytest.fixture
def raw(tmp_path) -> Path:
    """A small, valid raw layout (the shapes generator writes CUB's layout)."""
    shapes.write_shapes_raw(tmp_path, images=shapes.MIN_IMAGES, seed=0)
    return tmp_path


def _read(raw: Path) -> dict[str, cub.RawSplit]:
    return cub.read_raw(raw / "CUB_200_2011", raw / "birds")


def _train_key(raw: Path) -> str:
    return cub.load_pickle(raw / "birds" / "train" / "filenames.pickle")[0]


def test_read_raw_reads_a_valid_layout(raw):
    splits = _read(raw)
    train, test = splits["train"], splits["test"]
    assert len(train) + len(test) == shapes.MIN_IMAGES
    assert train.embeddings.shape == (len(train), 10, shapes.TEXT_DIM)
    assert train.embeddings.dtype == np.float32 and train.class_ids.dtype == np.int64
    assert all(len(c) == 10 for c in train.captions)
    assert all(p.is_file() for p in train.image_paths + test.image_paths)
    assert not set(train.class_ids) & set(test.class_ids)
    key = train.keys[0]
    assert train.image_paths[0] == raw / "CUB_200_2011" / "images" / f"{key}.jpg"


@pytest.mark.parametrize("as_array", [False, True])
def test_embeddings_as_list_or_array_and_bytes_keys(raw, as_array):
    """Python-2-style pickles (protocol 2): bytes keys, float64 arrays, list or one array."""
    split_dir = raw / "birds" / "train"
    embeddings = cub.load_pickle(split_dir / "char-CNN-RNN-embeddings.pickle")
    keys = cub.load_pickle(split_dir / "filenames.pickle")
    stored = [np.asarray(e, dtype=np.float64) for e in embeddings]
    with open(split_dir / "char-CNN-RNN-embeddings.pickle", "wb") as handle:
        pickle.dump(np.stack(stored) if as_array else stored, handle, protocol=2)
    with open(split_dir / "filenames.pickle", "wb") as handle:
        pickle.dump([k.encode() for k in keys], handle, protocol=2)
    train = _read(raw)["train"]
    assert train.keys == keys
    assert train.embeddings.dtype == np.float32
    np.testing.assert_allclose(train.embeddings, embeddings)


def test_missing_file_is_named(raw):
    (raw / "birds" / "test" / "class_info.pickle").unlink()
    with pytest.raises(StackGANError, match=r"missing file: .*test/class_info\.pickle"):
        _read(raw)
    (raw / "CUB_200_2011" / "bounding_boxes.txt").unlink()
    with pytest.raises(StackGANError, match=r"missing file: .*bounding_boxes\.txt"):
        _read(raw)


def test_missing_caption_file_is_named(raw):
    key = _train_key(raw)
    (raw / "birds" / "text_c10" / f"{key}.txt").unlink()
    with pytest.raises(StackGANError, match=f"missing caption file: .*{key}.txt"):
        _read(raw)


@pytest.mark.parametrize("count", [9, 11])
def test_caption_file_without_ten_captions_is_named(raw, count):
    key = _train_key(raw)
    path = raw / "birds" / "text_c10" / f"{key}.txt"
    path.write_text("\n".join(f"caption {i}" for i in range(count)) + "\n")
    with pytest.raises(StackGANError, match=f"{key}.txt: expected 10 captions, found {count}"):
        _read(raw)


def test_captions_skip_blank_lines_and_repair_replacement_characters(raw):
    key = _train_key(raw)
    path = raw / "birds" / "text_c10" / f"{key}.txt"
    lines = [f"  caption {i}  " for i in range(10)]
    lines[3] = "this\ufffd\ufffdbird has\ufffdwings"
    path.write_text("\n\n".join(lines) + "\n\n\n", encoding="utf-8")
    captions = cub.read_captions(path)
    assert captions[0] == "caption 0" and len(captions) == 10
    assert captions[3] == "this bird has wings"


def test_filename_without_bounding_box_is_named(raw):
    key = _train_key(raw)
    rows = (raw / "CUB_200_2011" / "images.txt").read_text().splitlines()
    image_id = next(r.split()[0] for r in rows if r.split()[1].startswith(key + "."))
    boxes = raw / "CUB_200_2011" / "bounding_boxes.txt"
    kept = [r for r in boxes.read_text().splitlines() if r.split()[0] != image_id]
    boxes.write_text("\n".join(kept) + "\n")
    with pytest.raises(StackGANError, match=f"bounding_boxes.txt: no bounding box for {key}"):
        _read(raw)


def test_filename_missing_from_images_txt_is_named(raw):
    key = _train_key(raw)
    images = raw / "CUB_200_2011" / "images.txt"
    kept = [r for r in images.read_text().splitlines() if not r.split()[1].startswith(key + ".")]
    images.write_text("\n".join(kept) + "\n")
    with pytest.raises(StackGANError, match=f"images.txt: no entry for {key}"):
        _read(raw)


def test_embedding_count_must_match_filenames(raw):
    path = raw / "birds" / "train" / "char-CNN-RNN-embeddings.pickle"
    embeddings = cub.load_pickle(path)
    with open(path, "wb") as handle:
        pickle.dump(embeddings[:-1], handle, protocol=2)
    n = len(embeddings)
    with pytest.raises(
        StackGANError,
        match=rf"char-CNN-RNN-embeddings\.pickle: {n - 1} embeddings but filenames\.pickle "
        rf"lists {n} images",
    ):
        _read(raw)


def test_embeddings_of_the_wrong_shape_are_refused(raw):
    path = raw / "birds" / "train" / "char-CNN-RNN-embeddings.pickle"
    embeddings = cub.load_pickle(path)
    with open(path, "wb") as handle:
        pickle.dump(np.asarray(embeddings)[:, :5], handle, protocol=2)
    with pytest.raises(StackGANError, match=r"expected shape \(N, 10, D\)"):
        _read(raw)


def test_class_info_count_must_match_filenames(raw):
    path = raw / "birds" / "test" / "class_info.pickle"
    with open(path, "wb") as handle:
        pickle.dump([1], handle, protocol=2)
    with pytest.raises(StackGANError, match=r"class_info\.pickle: 1 class ids"):
        _read(raw)


def test_damaged_and_malicious_pickles_are_refused(tmp_path):
    damaged = tmp_path / "damaged.pickle"
    damaged.write_bytes(b"\x80\x02]q\x00(X")
    with pytest.raises(StackGANError, match="damaged.pickle: not a readable pickle"):
        cub.load_pickle(damaged)

    malicious = tmp_path / "malicious.pickle"
    malicious.write_bytes(pickle.dumps(shutil.rmtree, protocol=2))
    with pytest.raises(StackGANError, match="malicious.pickle: refusing to unpickle shutil"):
        cub.load_pickle(malicious)


def test_malformed_table_line_is_named(raw):
    boxes = raw / "CUB_200_2011" / "bounding_boxes.txt"
    boxes.write_text(boxes.read_text() + "99 1.0 2.0\n")
    with pytest.raises(StackGANError, match=r"bounding_boxes\.txt:\d+: expected 5 fields"):
        _read(raw)


def test_all_real_captions_parse(shared_data):
    """Every key of both real filenames.pickle has a bounding box and 10 captions."""
    root = shared_data / "cub-captions"
    index = cub.read_image_index(root / "CUB_200_2011")
    assert len(index) == 11_788
    total = 0
    counts = {}
    for split in cub.SPLITS:
        raw_split = cub.read_split(
            root / "CUB_200_2011", root / "birds", split, index=index, embeddings=False
        )
        counts[split] = len(raw_split)
        total += sum(len(c) for c in raw_split.captions)
        assert all(c and all(c) for c in raw_split.captions)
        assert len(raw_split.bboxes) == len(raw_split)
        assert len(set(raw_split.class_ids)) == (150 if split == "train" else 50)
    assert counts == {"train": 8_855, "test": 2_933}
    assert total == 117_880
