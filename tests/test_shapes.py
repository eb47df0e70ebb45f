"""The synthetic shapes dataset: classes and split, determinism, raw layout, captions."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from stackgan_cli.data import cub, shapes


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


def test_split_is_class_disjoint_and_keeps_every_colour_and_shape_in_training():
    train = [c for c in shapes.CLASSES if c not in shapes.TEST_CLASSES]
    assert len(shapes.CLASSES) == len(shapes.COLOURS) * len(shapes.SHAPES)
    assert 0 < len(shapes.TEST_CLASSES) < len(shapes.CLASSES)
    assert {colour for colour, _ in train} == set(shapes.COLOURS)
    assert {shape for _, shape in train} == set(shapes.SHAPES)


def test_plan_spreads_images_evenly_over_classes():
    plan = shapes.plan_images(100)
    counts = np.bincount([item.class_id for item in plan])[1:]
    assert counts.sum() == 100 and counts.max() - counts.min() <= 1
    assert [item.image_id for item in plan] == list(range(1, 101))
    assert plan[0].key == "001.red_circle/red_circle_00001"
    with pytest.raises(ValueError, match="at least 24"):
        shapes.plan_images(23)


def test_same_seed_same_files_other_seed_other_images(tmp_path):
    shapes.write_shapes_raw(tmp_path / "a", images=30, seed=3)
    shapes.write_shapes_raw(tmp_path / "b", images=30, seed=3)
    shapes.write_shapes_raw(tmp_path / "c", images=30, seed=4)
    a, b, c = (_tree(tmp_path / name) for name in "abc")
    assert a == b
    assert a.keys() == c.keys()
    changed = [name for name in a if name.endswith(".jpg") and a[name] != c[name]]
    assert len(changed) == 30


def test_raw_layout_is_cubs(tmp_path):
    summary = shapes.write_shapes_raw(tmp_path, images=48, seed=0)
    assert summary == {"images": 48, "seed": 0, "classes": 24}
    cub_dir, birds_dir = tmp_path / "CUB_200_2011", tmp_path / "birds"
    for name in ("images.txt", "bounding_boxes.txt", "image_class_labels.txt", "classes.txt"):
        assert (cub_dir / name).is_file()
    classes = (cub_dir / "classes.txt").read_text().splitlines()
    assert classes[0] == "1 001.red_circle" and len(classes) == 24

    splits = cub.read_raw(cub_dir, birds_dir)  # the same reader as for CUB
    assert len(splits["train"]) + len(splits["test"]) == 48
    assert len(splits["test"]) == 2 * len(shapes.TEST_CLASSES)
    for split in splits.values():
        for path, (x, y, w, h) in zip(split.image_paths, split.bboxes, strict=True):
            with Image.open(path) as image:
                width, height = image.size
                assert image.mode == "RGB"
            assert 0 <= x and 0 <= y and w > 10 and h > 10
            assert x + w <= width and y + h <= height


def test_bounding_box_surrounds_the_shape():
    item = shapes.plan_images(24)[5]  # a green square
    image, (x, y, w, h), _ = shapes.draw_image(item, seed=0)
    pixels = np.asarray(image).astype(int)
    colour = np.array(shapes.COLOURS[item.colour])
    is_shape = np.abs(pixels - colour).sum(axis=2) < 60
    ys, xs = np.nonzero(is_shape)
    assert len(xs) > 100
    assert xs.min() >= int(x) and xs.max() <= x + w
    assert ys.min() >= int(y) and ys.max() <= y + h


def test_captions_name_colour_and_shape(tmp_path):
    shapes.write_shapes_raw(tmp_path, images=24, seed=0)
    splits = cub.read_raw(tmp_path / "CUB_200_2011", tmp_path / "birds")
    for split in splits.values():
        for key, class_id, captions in zip(
            split.keys, split.class_ids, split.captions, strict=True
        ):
            colour, shape = shapes.CLASSES[class_id - 1]
            assert key.startswith(f"{class_id:03d}.{colour}_{shape}/")
            assert len(set(captions)) == 10
            for caption in captions:
                assert colour in caption.split()
                assert shape in caption or shapes._ALTERNATIVE_NAMES[shape] in caption


def test_embeddings_pair_with_their_captions(tmp_path):
    shapes.write_shapes_raw(tmp_path, images=24, seed=0)
    train = cub.read_raw(tmp_path / "CUB_200_2011", tmp_path / "birds")["train"]
    for captions, vectors in zip(train.captions, train.embeddings, strict=True):
        for j, caption in enumerate(captions):
            np.testing.assert_array_equal(vectors[j], shapes.stand_in_embedding(caption))


def test_stand_in_embedding_is_deterministic_and_tells_words_apart():
    def cos(a, b):
        a, b = shapes.stand_in_embedding(a), shapes.stand_in_embedding(b)
        return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))

    vector = shapes.stand_in_embedding("A red circle")
    assert vector.shape == (1024,) and vector.dtype == np.float32
    assert np.linalg.norm(vector) == pytest.approx(shapes.EMBEDDING_NORM, rel=1e-4)
    np.testing.assert_array_equal(vector, shapes.stand_in_embedding("a  red circle"))
    same_words = cos("a red circle on gray", "a red circle")
    other_colour = cos("a red circle", "a blue circle")
    other_everything = cos("a red circle", "one yellow star")
    assert same_words > other_colour > other_everything
    assert cos("a red circle", "a green circle") < 0.8
