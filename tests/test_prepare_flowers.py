"""``stackgan prepare flowers``: Oxford-102 with StackGAN's flowers layout, served and local."""

import numpy as np
from http_server import LocalHTTPServer
from prepare_helpers import (
    ImageOpenCounter,
    build_flowers,
    invoke,
    one_error_line,
    output_text,
    pack_flowers,
    train_one_epoch,
    whole_resized,
)

from stackgan_cli import paths
from stackgan_cli.data import prepared
from stackgan_cli.data.prepare import prepare_flowers
from stackgan_cli.data.prepared import load_prepared
from stackgan_cli.text import TextEncoder

TRAIN = {1: 3, 4: 3}  # class id: images (a subset of the 102 classes)
TEST = {2: 2, 7: 2}


def _check_dataset(layout) -> None:
    """The prepared flowers hold the listed images resized whole, their 10 captions from
    text_c10/class_NNNNN/ and their embeddings, with StackGAN's class ids."""
    dataset = load_prepared("flowers")
    metadata = dataset.metadata
    for split, classes in (("train", TRAIN), ("test", TEST)):
        part = dataset.split(split)
        n = sum(classes.values())
        assert metadata["splits"][split] == {
            "images": n,
            "classes": len(classes),
            "captions": 10 * n,
        }
        assert part.filenames == layout.keys[split]
        assert part.class_ids.tolist() == layout.class_ids[split]
        for i in (0, n - 1):
            name = layout.keys[split][i].split("/")[1]
            class_id = layout.class_ids[split][i]
            assert part.captions[i][3] == f"flower {name} of class {class_id}, caption 3"
            np.testing.assert_array_equal(part.embeddings[i], layout.embeddings[split][i])
            source = layout.jpg / f"{name}.jpg"
            np.testing.assert_array_equal(part.images(76)[i], whole_resized(source, 76))
            np.testing.assert_array_equal(part.images(304)[i], whole_resized(source, 304))
    assert metadata["text_dim"] == 1024
    assert metadata["files"] == prepared.file_digests(dataset.root)
    assert dataset.fingerprint == prepared.fingerprint(metadata["files"])


def test_prepare_flowers_downloads_from_a_mirror_and_trains(tmp_path):
    layout = build_flowers(tmp_path / "layout", train=TRAIN, test=TEST)
    tgz, bundle = pack_flowers(layout, tmp_path / "served")
    with LocalHTTPServer() as server:
        server.add_file("/f/102flowers.tgz", tgz.read_bytes())
        server.add_file("/f/flowers.zip", bundle.read_bytes())
        mirror = server.url("/f")
        refused = invoke("prepare", "flowers", "--mirror", mirror, "--no-text-encoder")
        line = one_error_line(refused)
        assert "102flowers.tgz" in line and "expected 344,862,509" in line
        assert "--no-verify" in line
        assert not paths.prepared_dir("flowers").exists()

        args = ("prepare", "flowers", "--mirror", mirror, "--no-verify", "--no-text-encoder")
        result = invoke(*args, "--workers", 2)
    assert result.exit_code == 0, output_text(result)
    assert "verification is off" in output_text(result)
    assert "Prepared flowers" in output_text(result)
    _check_dataset(layout)
    inputs = load_prepared("flowers").metadata["inputs"]
    assert inputs["102flowers.tgz"]["verified"] is False
    assert inputs["flowers.zip"]["verified"] is False  # Drive files have no checksum
    assert (paths.raw_dir("flowers") / "jpg" / "image_00001.jpg").is_file()

    train_one_epoch("flowers", tmp_path / "run")


def test_prepare_flowers_from_archives_names_a_missing_image(tmp_path):
    layout = build_flowers(tmp_path / "layout", train=TRAIN, test=TEST)
    missing = layout.jpg / "image_00008.jpg"  # the second test image, of class 2
    kept = missing.read_bytes()
    missing.unlink()
    source = tmp_path / "archives"
    pack_flowers(layout, source)
    result = invoke("prepare", "flowers", "--source-dir", source, "--no-verify")
    line = one_error_line(result)
    tgz = source / "102flowers.tgz"
    assert f"{tgz.resolve()} holds no jpg/image_00008.jpg, which" in line
    assert str(paths.raw_dir("flowers") / "flowers" / "test" / "filenames.pickle") in line
    assert not paths.prepared_dir("flowers").exists()

    missing.write_bytes(kept)
    pack_flowers(layout, source)
    refused = invoke("prepare", "flowers", "--source-dir", source, "--no-text-encoder")
    assert f"{tgz} is" in one_error_line(refused) and "--no-verify" in output_text(refused)
    result = invoke(
        "prepare", "flowers", "--source-dir", source, "--no-verify", "--no-text-encoder"
    )
    assert result.exit_code == 0, output_text(result)
    assert "using it anyway (--no-verify)" in output_text(result)
    _check_dataset(layout)


def test_prepare_flowers_from_unpacked_folders_reads_only_listed_images(tmp_path, monkeypatch):
    layout = build_flowers(tmp_path / "source", train=TRAIN, test=TEST, unlisted=3)
    opened = ImageOpenCounter(monkeypatch)
    result = prepare_flowers(source_dir=layout.root, workers=0, text_encoder_epochs=1)
    assert opened.count == 10  # the 3 images no pickle lists are never read
    assert result.metadata["inputs"] == {
        "jpg": {"directory": str(layout.jpg.resolve())},
        "flowers": {"directory": str(layout.flowers.resolve())},
    }
    assert not paths.raw_dir("flowers").exists()  # unpacked folders are read in place
    _check_dataset(layout)

    # the text encoder, trained as for CUB, maps free text into the embeddings' space
    dataset = load_prepared("flowers")
    report = dataset.metadata["text_encoder"]
    assert (report["train_pairs"], report["test_pairs"]) == (60, 40)
    encoder = TextEncoder.from_dict(dataset.text_encoder_dict())
    assert tuple(encoder.encode(["a flower with pink petals"]).shape) == (1, 1024)

    again = invoke("prepare", "flowers", "--source-dir", layout.root)
    assert again.exit_code == 0 and "flowers is already prepared at" in output_text(again)
