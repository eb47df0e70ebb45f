"""``stackgan prepare coco``: StackGAN-Pytorch's COCO layout, served and local, resumable."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from http_server import LocalHTTPServer
from prepare_helpers import (
    ImageOpenCounter,
    build_coco,
    invoke,
    one_error_line,
    output_text,
    pack_coco,
    train_one_epoch,
    whole_resized,
    write_pickle,
)

from stackgan_cli import paths
from stackgan_cli.data import prepared
from stackgan_cli.data.prepare import prepare_coco
from stackgan_cli.data.prepared import load_prepared
from stackgan_cli.data.resumable import PROGRESS_FILE, staging_dir
from stackgan_cli.errors import StackGANError


def _staging():
    return staging_dir(paths.prepared_dir("coco"))


def _progress() -> dict:
    return json.loads((_staging() / PROGRESS_FILE).read_text())


def _check_dataset(layout) -> None:
    """The prepared COCO holds the listed images resized whole, each image's 5 captions and
    embeddings repeated in order to fill 10, one class per image."""
    dataset = load_prepared("coco")
    metadata = dataset.metadata
    assert metadata["classes"] is None
    assert metadata["captions"]["from"] == {"train": 5, "test": 5}
    for split in ("train", "test"):
        part = dataset.split(split)
        n = len(layout.keys[split])
        assert metadata["splits"][split] == {"images": n, "classes": n, "captions": 5 * n}
        assert part.filenames == layout.keys[split]
        np.testing.assert_array_equal(part.class_ids, np.arange(n))
        for i in (0, n - 1):
            captions = layout.captions[split][i]
            assert part.captions[i] == captions + captions
            np.testing.assert_array_equal(
                part.embeddings[i], np.concatenate([layout.embeddings[split][i]] * 2)
            )
            source = layout.image(layout.keys[split][i])
            np.testing.assert_array_equal(part.images(76)[i], whole_resized(source, 76))
            np.testing.assert_array_equal(part.images(304)[i], whole_resized(source, 304))
    assert metadata["files"] == prepared.file_digests(dataset.root)
    assert dataset.fingerprint == prepared.fingerprint(metadata["files"])


def test_prepare_coco_downloads_from_a_mirror_and_trains(tmp_path):
    layout = build_coco(tmp_path / "layout", train=8, test=4, t7_in_coco=False)
    files = pack_coco(layout, tmp_path / "served", t7=True)
    with LocalHTTPServer() as server:
        for name, path in files.items():
            served = "val_captions.t7" if name == "t7" else f"{name}.zip"
            server.add_file(f"/c/{served}", path.read_bytes())
        mirror = server.url("/c")
        refused = invoke("prepare", "coco", "--mirror", mirror, "--no-text-encoder")
        line = one_error_line(refused)
        assert "train2014.zip" in line and "--no-verify" in line
        assert not paths.prepared_dir("coco").exists()

        args = ("prepare", "coco", "--mirror", mirror, "--no-verify", "--no-text-encoder")
        result = invoke(*args, "--workers", 2)
        assert result.exit_code == 0, output_text(result)
        requested = server.paths_requested()
    assert "verification is off" in output_text(result)
    assert "Prepared coco" in output_text(result)
    assert {"/c/coco.zip", "/c/val_captions.t7", "/c/train2014.zip", "/c/val2014.zip"} <= set(
        requested
    )
    _check_dataset(layout)
    inputs = load_prepared("coco").metadata["inputs"]
    assert inputs["train2014.zip"]["verified"] is False
    assert inputs["val_captions.t7"]["path"] == str(paths.downloads_dir() / "val_captions.t7")
    # the image zips are read in place: only coco.zip is unpacked
    assert sorted(p.name for p in paths.raw_dir("coco").iterdir() if p.is_dir()) == ["coco"]
    assert not _staging().exists()

    train_one_epoch("coco", tmp_path / "run")


def test_listed_images_only_and_a_missing_one_is_named(tmp_path, monkeypatch):
    layout = build_coco(tmp_path / "layout", train=6, test=3, unlisted=3)
    missing = layout.image(layout.keys["train"][4])
    kept = missing.read_bytes()
    missing.unlink()
    source = tmp_path / "archives"
    pack_coco(layout, source)
    result = invoke("prepare", "coco", "--source-dir", source, "--no-verify", "--no-text-encoder")
    line = one_error_line(result)
    assert f"holds no train2014/{missing.name}, which" in line
    assert str(paths.raw_dir("coco") / "coco" / "train" / "filenames.pickle") in line
    assert not paths.prepared_dir("coco").exists() and not _staging().exists()

    missing.write_bytes(kept)
    pack_coco(layout, source)
    opened = ImageOpenCounter(monkeypatch)
    result = invoke(
        "prepare", "coco", "--source-dir", source, "--no-verify", "--no-text-encoder",
        "--workers", 0,
    )  # fmt: skip
    assert result.exit_code == 0, output_text(result)
    assert opened.count == 6 + 3  # the 3 unlisted images of each zip are never read
    assert "using it anyway (--no-verify)" in output_text(result)
    _check_dataset(layout)


def test_a_test_caption_file_that_does_not_fit_the_split_is_refused(tmp_path):
    layout = build_coco(tmp_path / "layout", train=4, test=3)
    write_pickle(layout.root / "coco" / "test" / "filenames.pickle", layout.keys["test"][:2])
    with pytest.raises(StackGANError) as error:
        prepare_coco(source_dir=layout.root, workers=0, text_encoder=False)
    t7 = layout.root / "coco" / "test" / "val_captions.t7"
    assert str(error.value).startswith(f"{t7}: 15 captions for the 2 images of ")

    t7.write_bytes(t7.read_bytes()[:100])
    with pytest.raises(StackGANError, match=f"{t7}: not a readable Torch7 file"):
        prepare_coco(source_dir=layout.root, workers=0, text_encoder=False)


def test_an_interrupted_prepare_resumes_without_redoing_images(tmp_path, monkeypatch):
    """A worker process meets a truncated image after two chunks: the run fails naming it and
    keeps its staging; once the image is fixed, the next run decodes only what was left."""
    layout = build_coco(tmp_path / "source", train=14, test=5)
    broken = layout.image(layout.keys["train"][9])
    good = broken.read_bytes()
    broken.write_bytes(good[: len(good) // 3])
    with pytest.raises(StackGANError, match=f"cannot read image {broken}"):
        prepare_coco(source_dir=layout.root, workers=2, chunk=4, text_encoder=False)
    assert _progress()["written"] == {"train": 8, "test": 0}
    assert not paths.prepared_dir("coco").exists()

    broken.write_bytes(good)
    opened = ImageOpenCounter(monkeypatch)
    result = prepare_coco(source_dir=layout.root, workers=0, chunk=4, text_encoder=False)
    assert opened.count == (14 - 8) + 5
    assert (result.metadata["images_resumed"], result.metadata["images_decoded"]) == (8, 11)
    assert not _staging().exists()
    _check_dataset(layout)
    rows = load_prepared("coco").split("train").images(304)
    for i in range(14):  # rows of both runs
        np.testing.assert_array_equal(
            rows[i], whole_resized(layout.image(layout.keys["train"][i]), 304)
        )
    resumed = result.metadata["fingerprint"]

    again = prepare_coco(source_dir=layout.root, workers=0, force=True, text_encoder=False)
    assert again.metadata["images_resumed"] == 0
    assert again.metadata["fingerprint"] == resumed  # same dataset as an uninterrupted prepare


def test_a_staging_folder_of_other_inputs_starts_over(tmp_path, monkeypatch):
    layout = build_coco(tmp_path / "source", train=10, test=3)
    broken = layout.image(layout.keys["train"][6])
    good = broken.read_bytes()
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(StackGANError, match=f"cannot read image {broken}"):
        prepare_coco(source_dir=layout.root, workers=0, chunk=3, text_encoder=False)
    assert _progress()["written"]["train"] == 6
    broken.write_bytes(good)
    # one image fewer in the training list: the staged images are not those of the new list
    keys = layout.keys["train"][:-1]
    write_pickle(layout.root / "coco" / "train" / "filenames.pickle", keys)
    write_pickle(
        layout.root / "coco" / "train" / "char-CNN-RNN-embeddings.pickle",
        list(layout.embeddings["train"][:-1]),
    )
    opened = ImageOpenCounter(monkeypatch)
    result = prepare_coco(source_dir=layout.root, workers=0, chunk=3, text_encoder=False)
    assert opened.count == 9 + 3
    assert result.metadata["images_resumed"] == 0
    assert load_prepared("coco").split("train").filenames == keys

    # a --force prepare interrupted beside the complete dataset: a plain prepare keeps the
    # dataset and removes the staging folder, which a later --force would start over anyway
    broken.write_bytes(b"not a jpeg")
    with pytest.raises(StackGANError, match="cannot read image"):
        prepare_coco(source_dir=layout.root, workers=0, chunk=3, force=True, text_encoder=False)
    assert _staging().is_dir()
    assert prepare_coco(source_dir=layout.root, text_encoder=False).already_prepared
    assert not _staging().exists()
    assert load_prepared("coco").fingerprint == result.metadata["fingerprint"]


def test_ctrl_c_after_the_first_chunk_then_resume(tmp_path, monkeypatch, isolated_cache):
    """SIGINT to a real `stackgan prepare coco` once its first chunk is recorded: it exits
    130 with the chunk kept, and the next run decodes only the images not yet written."""
    layout = build_coco(tmp_path / "source", train=3000, test=4, unlisted=0, dim=8, size=(48, 36))
    command = [sys.executable, "-m", "stackgan_cli", "prepare", "coco"]
    command += ["--source-dir", str(layout.root), "--workers", "0", "--no-text-encoder"]
    process = subprocess.Popen(
        command,
        env={**os.environ, "STACKGAN_HOME": str(isolated_cache)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not (_staging() / PROGRESS_FILE).is_file() or not _progress()["written"]["train"]:
            assert process.poll() is None, process.stderr.read()
            assert time.monotonic() < deadline, "prepare never wrote its first chunk"
            time.sleep(0.005)
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    written = _progress()["written"]["train"]
    assert 256 <= written < 3000
    assert not paths.prepared_dir("coco").exists()

    opened = ImageOpenCounter(monkeypatch)
    result = prepare_coco(source_dir=layout.root, workers=0, text_encoder=False)
    assert opened.count == 3000 - written + 4
    assert result.metadata["images_resumed"] == written
    dataset = load_prepared("coco")
    assert dataset.metadata["files"] == prepared.file_digests(dataset.root)
    last = layout.keys["train"][written - 1]  # the last image of the interrupted run
    np.testing.assert_array_equal(
        dataset.split("train").images(76)[written - 1], whole_resized(layout.image(last), 76)
    )
