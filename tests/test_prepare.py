"""``stackgan prepare``: the prepared format, no-op re-runs, interruption, and CUB sources."""

import hashlib
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from http_server import LocalHTTPServer
from typer.testing import CliRunner

from stackgan_cli import paths
from stackgan_cli.cli import app
from stackgan_cli.data import cub, prepared, shapes
from stackgan_cli.data.prepare import prepare_cub
from stackgan_cli.data.prepared import load_prepared
from stackgan_cli.errors import StackGANError


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _text(result) -> str:
    """stdout and stderr with rich's line wrapping undone."""
    return " ".join((result.output + (getattr(result, "stderr", "") or "")).split())


def _expected_split_sizes(images: int) -> dict[str, int]:
    plan = shapes.plan_images(images)
    test = sum(shapes.CLASSES[item.class_id - 1] in shapes.TEST_CLASSES for item in plan)
    return {"train": images - test, "test": test}


def test_prepare_shapes_end_to_end(isolated_cache):
    # The text encoder (trained by default) is covered through the shapes_dataset fixture,
    # which prepares with it; here it would only add its training time.
    result = _invoke("prepare", "shapes", "--images", 60, "--workers", 0, "--no-text-encoder")
    assert result.exit_code == 0, _text(result)
    assert "Prepared shapes" in _text(result)
    assert "Text encoder: not trained (--no-text-encoder)" in _text(result)

    dataset = load_prepared("shapes")
    assert dataset.root == isolated_cache / "datasets" / "shapes" / "prepared"
    assert dataset.name == "shapes"
    assert dataset.text_encoder_dict() is None
    assert dataset.metadata["text_encoder"] is None
    assert not (dataset.root / "text_encoder.pt").exists()
    sizes = _expected_split_sizes(60)
    metadata = dataset.metadata
    assert metadata["format_version"] == prepared.FORMAT_VERSION
    assert metadata["inputs"]["shapes"] == {"images": 60, "seed": 0, "classes": 24}
    classes = {}
    for name in ("train", "test"):
        split = dataset.split(name)
        n = sizes[name]
        assert len(split) == n
        assert metadata["splits"][name] == {
            "images": n,
            "classes": len(set(split.class_ids)),
            "captions": 10 * n,
        }
        small, large = split.images(76), split.images(304)
        assert isinstance(small, np.memmap) and not small.flags.writeable
        assert small.shape == (n, 76, 76, 3) and large.shape == (n, 304, 304, 3)
        assert small.dtype == large.dtype == np.uint8
        assert split.embeddings.shape == (n, 10, 1024) and split.embeddings.dtype == np.float32
        assert split.class_ids.dtype == np.int64 and split.class_ids.shape == (n,)
        assert len(split.captions) == n and all(len(c) == 10 for c in split.captions)
        assert len(split.filenames) == n
        classes[name] = set(split.class_ids.tolist())
        # embedding j still pairs with caption j after preparing
        for i in (0, n - 1):
            for j in (0, 9):
                np.testing.assert_array_equal(
                    split.embeddings[i, j], shapes.stand_in_embedding(split.captions[i][j])
                )
    assert not classes["train"] & classes["test"]

    # the stored images are the official crops of the raw images
    train = dataset.split("train")
    raw = paths.raw_dir("shapes")
    index = cub.read_image_index(raw / "CUB_200_2011")
    entry = index[train.filenames[3]]
    small, large = cub.load_image(raw / "CUB_200_2011" / "images" / entry.path, entry.bbox)
    np.testing.assert_array_equal(train.images(76)[3], small)
    np.testing.assert_array_equal(train.images(304)[3], large)

    # the fingerprint streamed while writing equals one recomputed from the files
    assert dataset.fingerprint == prepared.fingerprint(prepared.file_digests(dataset.root))
    assert metadata["files"] == prepared.file_digests(dataset.root)


def test_rerun_is_a_noop_and_force_redoes(isolated_cache):
    args = ("prepare", "shapes", "--images", 30, "--no-text-encoder", "--workers", 0)
    assert _invoke(*args).exit_code == 0
    metadata_file = paths.prepared_dir("shapes") / "metadata.json"
    before = metadata_file.stat()
    fingerprint = load_prepared("shapes").fingerprint

    again = _invoke(*args)
    assert again.exit_code == 0
    assert "shapes is already prepared at" in _text(again)
    assert str(paths.prepared_dir("shapes")) in _text(again)
    assert "Prepared shapes" not in _text(again)
    assert metadata_file.stat().st_ino == before.st_ino
    assert metadata_file.stat().st_mtime_ns == before.st_mtime_ns

    other = _invoke("prepare", "shapes", "--images", 40, "--no-text-encoder")
    assert other.exit_code == 0
    assert "--images 30 --seed 0" in _text(other) and "--force" in _text(other)

    forced = _invoke(*args, "--force")
    assert forced.exit_code == 0 and "Prepared shapes" in _text(forced)
    assert metadata_file.stat().st_ino != before.st_ino
    assert load_prepared("shapes").fingerprint == fingerprint  # same seed, same data

    reseeded = _invoke(*args, "--force", "--seed", 1)
    assert reseeded.exit_code == 0
    assert load_prepared("shapes").fingerprint != fingerprint


def test_too_few_images_is_a_usage_error():
    result = _invoke("prepare", "shapes", "--images", 10)
    assert result.exit_code == 2
    assert not paths.prepared_dir("shapes").exists()


def test_interrupted_prepare_leaves_no_dataset_and_the_next_run_completes(isolated_cache):
    dataset_dir = paths.dataset_dir("shapes")
    env = {**os.environ, "STACKGAN_HOME": str(isolated_cache)}
    command = [sys.executable, "-m", "stackgan_cli", "prepare", "shapes", "--images", "300"]
    process = subprocess.Popen(
        [*command, "--workers", "0", "--no-text-encoder"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        # wait until images are being written into the temporary prepared folder
        while not list(dataset_dir.glob(".prepared.*.tmp/train/images_76.npy")):
            assert process.poll() is None, "prepare ended before it could be interrupted"
            assert time.monotonic() < deadline, "prepare never started writing"
            time.sleep(0.02)
        assert process.poll() is None
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == -signal.SIGKILL
    assert not paths.prepared_dir("shapes").exists()
    assert list(dataset_dir.glob(".prepared.*.tmp"))  # it really was killed mid-way
    with pytest.raises(StackGANError, match="run `stackgan prepare shapes`"):
        load_prepared("shapes")

    result = _invoke("prepare", "shapes", "--images", 24, "--no-text-encoder", "--workers", 0)
    assert result.exit_code == 0, _text(result)
    assert (
        len(load_prepared("shapes").split("train")) + len(load_prepared("shapes").split("test"))
        == 24
    )
    assert not list(dataset_dir.glob(".*.tmp"))  # the killed run's leftovers are gone


def test_worker_processes_give_the_same_dataset_and_report_errors(tmp_path):
    layout = tmp_path / "layout"
    shapes.write_shapes_raw(layout, images=24, seed=0)
    prepare_cub(source_dir=layout, workers=0, text_encoder=False)
    single = load_prepared("cub").fingerprint
    prepare_cub(source_dir=layout, workers=2, text_encoder=False, force=True)
    assert load_prepared("cub").fingerprint == single

    # an unreadable image, met inside a worker, is reported by name; the old dataset stays
    splits = cub.read_raw(layout / "CUB_200_2011", layout / "birds")
    broken = splits["test"].image_paths[1]
    broken.write_bytes(b"garbage")
    with pytest.raises(StackGANError, match=f"cannot read image {broken}"):
        prepare_cub(source_dir=layout, workers=2, text_encoder=False, force=True)
    assert load_prepared("cub").fingerprint == single
    assert not list(paths.dataset_dir("cub").glob(".prepared.*.tmp"))


def test_load_prepared_resolves_names_and_paths(shapes_dataset, isolated_cache):
    by_name = load_prepared("shapes")
    assert by_name.root == shapes_dataset
    assert load_prepared(shapes_dataset).fingerprint == by_name.fingerprint
    assert load_prepared(str(shapes_dataset)).fingerprint == by_name.fingerprint
    assert load_prepared(shapes_dataset.parent).root == shapes_dataset  # the dataset folder
    assert by_name.split_names == ["train", "test"]
    assert len(by_name.split("train")) + len(by_name.split("test")) == 80
    with pytest.raises(StackGANError, match="has no split 'val'"):
        by_name.split("val")
    with pytest.raises(ValueError, match="image size"):
        by_name.split("train").images(64)
    # the fixture's files are links into the session's copy; its folders are this test's own
    assert (shapes_dataset / "metadata.json").is_symlink()
    assert not shapes_dataset.is_symlink()


def test_load_prepared_errors(tmp_path, shapes_dataset):
    with pytest.raises(
        StackGANError, match=r"dataset 'cub' is not prepared .*stackgan prepare cub"
    ):
        load_prepared("cub")
    with pytest.raises(StackGANError, match="holds no prepared dataset"):
        load_prepared(tmp_path)

    copy = tmp_path / "copy"
    for path in shapes_dataset.rglob("*"):
        target = copy / path.relative_to(shapes_dataset)
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    (copy / "test" / "captions.json").unlink()
    with pytest.raises(StackGANError, match=r"captions\.json is missing.*prepare shapes --force"):
        load_prepared(copy)

    metadata = json.loads((copy / "metadata.json").read_text())
    (copy / "metadata.json").write_text(json.dumps({**metadata, "format_version": 99}))
    with pytest.raises(StackGANError, match="format version 99.*prepare shapes --force"):
        load_prepared(copy)
    (copy / "metadata.json").write_text("{not json")
    with pytest.raises(StackGANError, match="is damaged.*stackgan prepare .* --force"):
        load_prepared(copy)


def test_shapes_fixture_has_a_working_text_encoder(shapes_dataset):
    from stackgan_cli.text import TextEncoder

    dataset = load_prepared("shapes")
    encoder = TextEncoder.from_dict(dataset.text_encoder_dict())
    vectors = encoder.encode(["a red circle", "a blue star"])
    assert tuple(vectors.shape) == (2, 1024)
    report = dataset.metadata["text_encoder"]
    assert (report["train_pairs"], report["test_pairs"]) == (600, 200)
    for key in ("test_cosine", "baseline_mean_embedding_cosine", "baseline_nearest_caption_cosine"):
        assert -1 <= report[key] <= 1


def test_summary_shows_counts_and_text_encoder_scores(shapes_dataset):
    from rich.console import Console

    from stackgan_cli.data.prepare import PrepareResult
    from stackgan_cli.reports import prepare_summary

    dataset = load_prepared("shapes")
    console = Console(record=True, width=120)
    for renderable in prepare_summary(PrepareResult(dataset.root, dataset.metadata, False, 1.5)):
        console.print(renderable)
    text = console.export_text()
    assert "train" in text and "60" in text and "600" in text and "prepared in 1.5 s" in text
    report = dataset.metadata["text_encoder"]
    assert "trained text encoder" in text and f"{report['test_cosine']:.3f}" in text
    assert f"{report['baseline_nearest_caption_cosine']:.3f}" in text


# --- prepare cub --------------------------------------------------------------------------


def _pack_tgz(folder: Path, archive: Path) -> Path:
    with tarfile.open(archive, "w:gz", compresslevel=1) as tar:
        tar.add(folder, arcname=folder.name)
    return archive


def _pack_zip(folder: Path, archive: Path) -> Path:
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_STORED) as bundle:
        for path in sorted(folder.rglob("*")):
            bundle.write(path, f"{folder.name}/{path.relative_to(folder)}")
    return archive


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_prepare_cub_from_mixed_source_dir(tmp_path):
    """--source-dir may hold one part unpacked and the other as an archive; a layout with
    its own classes (here the shapes one) prepares like CUB."""
    shapes.write_shapes_raw(tmp_path / "layout", images=24, seed=0)
    source = tmp_path / "source"
    source.mkdir()
    (tmp_path / "layout" / "CUB_200_2011").rename(source / "CUB_200_2011")
    zip_path = _pack_zip(tmp_path / "layout" / "birds", source / "birds.zip")

    result = _invoke("prepare", "cub", "--source-dir", source, "--no-text-encoder")
    assert result.exit_code == 0, _text(result)
    assert "warning" not in _text(result)  # birds.zip has no published checksum to differ from
    dataset = load_prepared("cub")
    assert {s: len(dataset.split(s)) for s in ("train", "test")} == _expected_split_sizes(24)
    inputs = dataset.metadata["inputs"]
    assert inputs["CUB_200_2011"] == {"directory": str((source / "CUB_200_2011").resolve())}
    assert inputs["birds.zip"]["md5"] == _md5(zip_path)
    assert inputs["birds.zip"]["verified"] is False
    assert not (paths.raw_dir("cub") / "CUB_200_2011").exists()  # used in place
    assert (paths.raw_dir("cub") / "birds" / "train" / "filenames.pickle").is_file()


def test_prepare_cub_source_dir_without_sources(tmp_path):
    result = _invoke("prepare", "cub", "--source-dir", tmp_path)
    assert result.exit_code == 1
    assert "holds neither CUB_200_2011/ nor CUB_200_2011.tgz" in _text(result)
    assert not paths.prepared_dir("cub").exists()


def test_prepare_cub_downloads_from_a_mirror(tmp_path):
    shapes.write_shapes_raw(tmp_path / "layout", images=24, seed=1)
    tgz = _pack_tgz(tmp_path / "layout" / "CUB_200_2011", tmp_path / "CUB_200_2011.tgz")
    zip_path = _pack_zip(tmp_path / "layout" / "birds", tmp_path / "birds.zip")
    with LocalHTTPServer() as server:
        server.add_file("/stackgan/CUB_200_2011.tgz", tgz.read_bytes())
        server.add_file("/stackgan/birds.zip", zip_path.read_bytes())
        refused = _invoke("prepare", "cub", "--mirror", server.url("/stackgan"))
        assert refused.exit_code == 1
        assert "CUB_200_2011.tgz" in _text(refused) and "--no-verify" in _text(refused)
        assert not paths.prepared_dir("cub").exists()

        args = ("prepare", "cub", "--mirror", server.url("/stackgan"), "--no-verify")
        result = _invoke(*args, "--no-text-encoder", "--workers", 0)
    assert result.exit_code == 0, _text(result)
    assert "verification is off" in _text(result)
    assert (paths.downloads_dir() / "CUB_200_2011.tgz").read_bytes() == tgz.read_bytes()
    dataset = load_prepared("cub")
    assert {s: len(dataset.split(s)) for s in ("train", "test")} == _expected_split_sizes(24)
    assert dataset.metadata["inputs"]["CUB_200_2011.tgz"]["md5"] == _md5(tgz)


@pytest.mark.slow
def test_prepare_cub_mini_from_its_folders(shared_data):
    source = shared_data / "cub-mini"
    result = _invoke("prepare", "cub", "--source-dir", source, "--no-text-encoder", "--workers", 2)
    assert result.exit_code == 0, _text(result)
    dataset = load_prepared("cub")
    assert dataset.metadata["splits"] == {
        "train": {"images": 275, "classes": 5, "captions": 2750},
        "test": {"images": 268, "classes": 5, "captions": 2680},
    }
    train = dataset.split("train")
    assert set(train.class_ids.tolist()) == {2, 3, 5, 7, 10}
    raw_train = cub.read_split(source / "CUB_200_2011", source / "birds", "train")
    assert train.filenames == raw_train.keys
    np.testing.assert_array_equal(train.embeddings, raw_train.embeddings)
    i = 17
    small, large = cub.load_image(raw_train.image_paths[i], raw_train.bboxes[i])
    np.testing.assert_array_equal(train.images(76)[i], small)
    np.testing.assert_array_equal(train.images(304)[i], large)
    assert not paths.raw_dir("cub").exists()  # unpacked folders are read in place


@pytest.mark.slow
def test_prepare_cub_mini_from_repacked_archives(shared_data, tmp_path):
    source = tmp_path / "archives"
    source.mkdir()
    tgz = _pack_tgz(shared_data / "cub-mini" / "CUB_200_2011", source / "CUB_200_2011.tgz")
    _pack_zip(shared_data / "cub-mini" / "birds", source / "birds.zip")

    refused = _invoke("prepare", "cub", "--source-dir", source, "--no-text-encoder")
    assert refused.exit_code == 1
    assert f"{tgz} is" in _text(refused) and "--no-verify" in _text(refused)
    assert not paths.prepared_dir("cub").exists()

    args = ("prepare", "cub", "--source-dir", source, "--no-verify", "--no-text-encoder")
    result = _invoke(*args)
    assert result.exit_code == 0, _text(result)
    assert "warning:" in _text(result) and "using it anyway (--no-verify)" in _text(result)
    dataset = load_prepared("cub")
    splits = dataset.metadata["splits"]
    assert (splits["train"]["images"], splits["test"]["images"]) == (275, 268)
    record = dataset.metadata["inputs"]["CUB_200_2011.tgz"]
    assert record["md5"] == _md5(tgz) and record["verified"] is False
    assert (paths.raw_dir("cub") / "CUB_200_2011" / "images.txt").is_file()


def _copy_prepared(source: Path, target: Path) -> Path:
    """A copy of a prepared dataset folder with real files (the fixture's are links into the
    session's shared read-only copy)."""
    for path in sorted(source.rglob("*")):
        destination = target / path.relative_to(source)
        if path.is_dir():
            destination.mkdir(parents=True, exist_ok=True)
        else:
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(path.read_bytes())
    return target


def _one_error_line(result) -> str:
    """The single line a clean ``StackGANError`` exit leaves on stderr."""
    assert result.exit_code == 1, result.output
    assert isinstance(result.exception, SystemExit), result.exception  # not a crash
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_train_on_a_truncated_images_file_is_one_line(tmp_path, shapes_dataset):
    copy = _copy_prepared(shapes_dataset, tmp_path / "copy")
    images = copy / "train" / "images_76.npy"
    size = images.stat().st_size
    os.truncate(images, size // 2)
    result = _invoke(
        "train", "--stage", 1, "--dataset", copy, "--epochs", 1, "--batch-size", 8,
        "--gf-dim", 8, "--df-dim", 8,
    )  # fmt: skip
    line = _one_error_line(result)
    assert f"{images} is damaged" in line
    assert f"{size // 2:,} bytes" in line and f"{size:,}" in line
    assert "stackgan prepare shapes --force" in line


def test_load_prepared_checks_array_headers_against_the_metadata(tmp_path, shapes_dataset):
    copy = _copy_prepared(shapes_dataset, tmp_path / "copy")
    metadata = json.loads((copy / "metadata.json").read_text())
    count = metadata["splits"]["test"]["images"]
    images = copy / "test" / "images_304.npy"
    original = images.read_bytes()
    np.save(images, np.load(images)[:-1])  # a whole, readable array with one image too few
    with pytest.raises(StackGANError) as error:
        load_prepared(copy)
    message = str(error.value)
    assert f"{images} is damaged" in message
    assert f"shape ({count - 1}, 304, 304, 3)" in message and f"({count}, 304, 304, 3)" in message
    assert message.endswith("re-run `stackgan prepare shapes --force`")
    assert "\n" not in message

    images.write_bytes(original)
    embeddings = copy / "test" / "embeddings.npy"
    np.save(embeddings, np.load(embeddings).astype(np.float64))
    with pytest.raises(StackGANError, match=r"embeddings\.npy is damaged \(dtype float64"):
        load_prepared(copy)
    embeddings.write_bytes(b"not an array at all")
    with pytest.raises(StackGANError, match=r"embeddings\.npy is damaged \(not a \.npy file"):
        load_prepared(copy)
    embeddings.unlink()
    embeddings.mkdir()
    with pytest.raises(StackGANError, match=r"embeddings\.npy is missing"):
        load_prepared(copy)
