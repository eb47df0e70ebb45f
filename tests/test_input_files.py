"""The input files of ``generate`` and ``evaluate``: damaged or hostile ``.npy`` headers,
non-real embeddings, folders and FIFOs where a file belongs, a training checkpoint given as
the generator, and a damaged cached Inception weights file.

Commands that are handed a FIFO run in a subprocess with a timeout, so that a reader that
blocks on it fails the test instead of hanging it.
"""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from http_server import LocalHTTPServer
from training_helpers import TEXT_DIM, TINY, run_cli, train_args
from typer.testing import CliRunner

from stackgan_cli.cli import app
from stackgan_cli.evaluation.inception import URL_ENV, WEIGHTS_FILENAME, default_weights_path
from stackgan_cli.generator_file import save_generator_file
from stackgan_cli.models import DAMSMTextEncoder, ModelConfig, Stage1Generator

SMALL = ModelConfig(gf_dim=8, df_dim=8, z_dim=8, condition_dim=4, r_num=1, text_dim=TEXT_DIM)
WIDE = dataclasses.replace(SMALL, text_dim=1024)  # the text_dim of the official embeddings
FIFO_TIMEOUT = 60  # seconds; the commands below answer in one or two


@pytest.fixture(scope="module")
def generators(tmp_path_factory) -> dict[str, Path]:
    """Tiny Stage-I generator files without a text encoder: 16-d (the tiny dataset's) and
    1024-d text embeddings."""
    root = tmp_path_factory.mktemp("generators")
    files = {}
    for name, cfg in (("small", SMALL), ("wide", WIDE)):
        torch.manual_seed(0)
        files[name] = root / f"{name}.pt"
        save_generator_file(
            files[name], Stage1Generator(cfg), cfg, family="v1-stage1", dataset="tiny", epoch=1
        )
    return files


def _invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args])


def _one_error_line(result, code: int = 1) -> str:
    """The single ``error:`` line of a failed command (no traceback, no exception left)."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    return lines[0]


def _run_with_timeout(*args) -> subprocess.CompletedProcess:
    """``stackgan ARGS`` in a subprocess (the test's cache, via STACKGAN_HOME); a command that
    blocks raises TimeoutExpired."""
    return subprocess.run(
        [sys.executable, "-m", "stackgan_cli", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=FIFO_TIMEOUT,
        env={**os.environ, "COLUMNS": "400"},
    )


def _subprocess_error(process: subprocess.CompletedProcess) -> str:
    assert process.returncode == 1, process.stderr
    lines = [line for line in process.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), process.stderr
    return lines[0]


# --- --embedding-file: the header is checked before the data is read -------------------------


def _npy_header_only(path: Path, shape: tuple[int, ...], data: bytes) -> Path:
    """A ``.npy`` file with a genuine numpy header announcing ``shape`` of float32, followed
    by ``data`` alone."""
    with open(path, "wb") as handle:
        np.lib.format.write_array_header_1_0(
            handle, {"descr": "<f4", "fortran_order": False, "shape": shape}
        )
        handle.write(data)
    return path


def test_a_header_claiming_a_huge_shape_is_refused_before_reading(generators, tmp_path):
    huge = _npy_header_only(tmp_path / "huge.npy", (10**11, 1024), b"\x00" * 64)
    result = _invoke(
        "generate", "--ckpt", generators["wide"], "--embedding-file", huge, "--out", tmp_path / "o"
    )
    message = _one_error_line(result)
    assert f"--embedding-file {huge} is truncated" in message
    assert "(100000000000, 1024)" in message and "64 bytes" in message
    assert not (tmp_path / "o").exists()


def test_a_header_with_a_few_rows_missing_is_refused(generators, tmp_path):
    rows = np.ones((3, TEXT_DIM), dtype=np.float32).tobytes()
    short = _npy_header_only(tmp_path / "short.npy", (4, TEXT_DIM), rows)
    result = _invoke("generate", "--ckpt", generators["small"], "--embedding-file", short)
    assert "is truncated" in _one_error_line(result)
    # The same bytes under a header that tells the truth generate.
    whole = _npy_header_only(tmp_path / "whole.npy", (3, TEXT_DIM), rows)
    out = tmp_path / "out"
    result = _invoke(
        "generate", "--ckpt", generators["small"], "--embedding-file", whole, "-n", 1, "--out", out
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.glob("??_??.png")) == ["00_00.png", "01_00.png", "02_00.png"]


NOT_REAL = {
    "complex64": np.ones((2, TEXT_DIM), dtype=np.complex64) * (1 + 2j),
    "complex128": np.ones((2, TEXT_DIM), dtype=np.complex128),
    "bool": np.ones((2, TEXT_DIM), dtype=bool),
    "<U3": np.full((2, TEXT_DIM), "x", dtype="<U3"),
    "structured": np.zeros((2, TEXT_DIM), dtype=[("a", "<f4"), ("b", "<f4")]),
    "object": np.array([[1.0] * TEXT_DIM, [2.0] * TEXT_DIM], dtype=object),
}


def test_only_real_number_embeddings_are_read(generators, tmp_path):
    out = tmp_path / "out"
    for named, array in NOT_REAL.items():
        path = tmp_path / "emb.npy"
        np.save(path, array, allow_pickle=True)
        result = _invoke(
            "generate", "--ckpt", generators["small"], "--embedding-file", path, "--out", out
        )
        message = _one_error_line(result)
        assert f"--embedding-file {path} holds {named}" in message, message
        assert "real numbers" in message
        assert not out.exists()
    for dtype in (np.int16, np.float16, np.float64):
        path = tmp_path / f"{np.dtype(dtype).name}.npy"
        np.save(path, np.ones((1, TEXT_DIM), dtype=dtype))
        result = _invoke(
            "generate", "--ckpt", generators["small"], "--embedding-file", path, "-n", 1,
            "--out", out / path.stem,
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert (out / path.stem / "00_00.png").is_file()


# --- folders and FIFOs where a file belongs --------------------------------------------------


def test_a_folder_as_embedding_file_is_called_a_folder(generators, tmp_path):
    folder = tmp_path / "embeddings.npy"
    folder.mkdir()
    result = _invoke("generate", "--ckpt", generators["small"], "--embedding-file", folder)
    assert f"--embedding-file {folder} is a folder, not a file" in _one_error_line(result)


def test_a_missing_embedding_file_and_a_broken_link_are_told_apart(generators, tmp_path):
    missing = tmp_path / "missing.npy"
    result = _invoke("generate", "--ckpt", generators["small"], "--embedding-file", missing)
    assert f"--embedding-file {missing} does not exist" in _one_error_line(result)
    link = tmp_path / "link.npy"
    link.symlink_to(missing)
    result = _invoke("generate", "--ckpt", generators["small"], "--embedding-file", link)
    assert f"--embedding-file {link} is a broken symbolic link" in _one_error_line(result)


@pytest.mark.slow
def test_fifos_given_to_generate_are_refused_without_blocking(generators, tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    cases = [
        (["--ckpt", generators["small"], "--embedding-file", fifo], f"--embedding-file {fifo}"),
        (["a red bird", "--ckpt", generators["small"], "--text-encoder", fifo],
         f"--text-encoder {fifo}"),
    ]  # fmt: skip
    for args, where in cases:
        message = _subprocess_error(_run_with_timeout("generate", *args))
        assert f"{where} is not a regular file (a named pipe)" in message, (args, message)
    # The generator file is stat-ed before torch opens it (in-process: it never opened one).
    message = _one_error_line(_invoke("generate", "a red bird", "--ckpt", fifo))
    assert f"{fifo} is not a regular file (a named pipe)" in message


def _official_damsm_folder(root: Path) -> Path:
    """An official DAMSMencoders/<dataset> folder holding a tiny text_encoder200.pth."""
    cfg = dataclasses.replace(ModelConfig.preset("birds-attngan"), text_dim=16, word_dim=8)
    folder = root / "DAMSMencoders" / "bird"
    folder.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(DAMSMTextEncoder(cfg, 12).state_dict(), folder / "text_encoder200.pth")
    return folder


@pytest.mark.slow
def test_a_fifo_as_vocabulary_is_refused_without_blocking(generators, tmp_path, tiny_dataset):
    folder = _official_damsm_folder(tmp_path)
    fifo = tmp_path / "captions.pickle"
    os.mkfifo(fifo)
    generate = ("generate", "a bird", "--damsm", folder, "--vocabulary", fifo)
    evaluate = ("evaluate", "--ckpt", generators["small"], "--dataset", tiny_dataset)
    evaluate += ("--r-precision", "--damsm", folder, "--vocabulary", fifo, "--num-samples", 4)
    for args in (generate, evaluate):
        message = _subprocess_error(_run_with_timeout(*args, "--device", "cpu"))
        assert f"--vocabulary {fifo} is not a regular file (a named pipe)" in message, message


@pytest.mark.slow
def test_a_fifo_as_inception_weights_is_refused_without_blocking(
    generators, tmp_path, tiny_dataset
):
    fifo = tmp_path / "weights.pth"
    os.mkfifo(fifo)
    process = _run_with_timeout(
        "evaluate", "--ckpt", generators["small"], "--dataset", tiny_dataset,
        "--num-samples", 4, "--splits", 2, "--inception-weights", fifo, "--device", "cpu",
    )  # fmt: skip
    message = _subprocess_error(process)
    assert f"--inception-weights {fifo} is not a regular file (a named pipe)" in message


# --- a training checkpoint given as the generator -------------------------------------------


def test_a_training_checkpoint_names_the_runs_generator_file(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    out = tmp_path / "final.pt"
    run_cli(train_args(run, *TINY, "--out", str(out), epochs=1))
    last = run / "checkpoints" / "last.pt"
    result = _invoke("generate", "a bird", "--ckpt", last, "--out", tmp_path / "o")
    message = _one_error_line(result)
    assert f"{last} is a training checkpoint; generate from {run / 'generator.pt'}" in message
    assert f"--out file, {out}" in message and "newer stackgan" not in message
    # Moved out of its run, the checkpoint still names the run it records.
    moved = tmp_path / "copy.pt"
    moved.write_bytes(last.read_bytes())
    message = _one_error_line(_invoke("generate", "a bird", "--ckpt", moved))
    assert f"{moved} is a training checkpoint; generate from {run / 'generator.pt'}" in message
    # The file it names is the one that generates.
    result = _invoke("generate", "a bird", "--ckpt", run / "generator.pt", "-n", 1, "--out",
                     tmp_path / "o", "--embedding-file", _row(tmp_path))  # fmt: skip
    assert result.exit_code == 0, result.output


def _row(tmp_path: Path) -> Path:
    path = tmp_path / "row.npy"
    np.save(path, np.ones(TEXT_DIM, dtype=np.float32))
    return path


# --- a damaged cached Inception weights file ------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_cached_inception_file_says_to_delete_it(
    generators, tiny_dataset, inception_weights, monkeypatch, damage
):
    intact = inception_weights.read_bytes()
    cached = default_weights_path()
    cached.parent.mkdir(parents=True, exist_ok=True)
    broken = intact[: len(intact) // 2] if damage == "truncated" else b"<html>502</html>" * 64
    cached.write_bytes(broken)
    args = ("evaluate", "--ckpt", generators["small"], "--dataset", tiny_dataset)
    args += ("--num-samples", 4, "--splits", 2, "--device", "cpu", "--no-diversity")
    with LocalHTTPServer() as server:
        server.add_file(f"/{WEIGHTS_FILENAME}", intact)
        monkeypatch.setenv(URL_ENV, server.url(f"/{WEIGHTS_FILENAME}"))
        message = " ".join(_one_error_line(_invoke(*args)).split())
        assert f"the cached Inception weights file {cached} is not a" in message
        assert "delete it and the next run downloads it again" in message
        assert "where the published file's starts with 6726825d" in message
        assert ("truncated or corrupt" in message) == (damage == "truncated")
        assert "weights_only` set to `False`" not in message  # torch's advice is not ours
        assert server.requests == []  # nothing downloaded behind the user's back
        assert cached.read_bytes() == broken  # nor anything deleted
        # Following the advice, the next run downloads the file again (the test server's
        # random weights then fail the published file's hash check).
        cached.unlink()
        result = _invoke(*args)
        assert result.exit_code == 1, result.output
        assert server.paths_requested() == [f"/{WEIGHTS_FILENAME}"]
        assert "error: cannot download the Inception weights" in result.stderr
    assert not cached.exists()
