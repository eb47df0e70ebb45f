"""A run folder holds one run: what `stackgan train` and `stackgan resume` refuse to touch.

A new run never goes into a folder of other files; a resume never continues another run's
checkpoint; a copied run folder never writes the original's --out file; a refused command
leaves no lock file behind; paths that cannot be written are found before the first step.
All through the real CLI on the tiny dataset, with real files, copies and permissions.
"""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from training_helpers import TINY, load, run_cli, train_args, v2_args, write_tiny_prepared

from stackgan_cli import paths

REPO = Path(__file__).resolve().parents[1]


def one_error_line(result):
    """The single `error:` line of a refused command (no traceback, nothing else)."""
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert isinstance(result.exception, SystemExit), result.exception
    return " ".join(result.output.split())


def snapshot(folder):
    """Every file below ``folder`` with its bytes."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


# --- a new run goes into a new, empty or unfinished folder only -------------------------------


def test_train_refuses_a_folder_of_other_files(tiny_dataset, tmp_path):
    folder = tmp_path / "mine"
    (folder / "samples").mkdir(parents=True)
    (folder / "generator.pt").write_bytes(b"my own generator")
    (folder / "losses.png").write_bytes(b"my own plot")
    (folder / "samples" / "epoch_0001.png").write_bytes(b"my own picture")
    (folder / "metrics.jsonl").write_text('{"mine": 1}\n')
    before = snapshot(folder)
    result = run_cli(train_args(folder, *TINY, epochs=1), code=2)
    message = one_error_line(result)
    assert f"--run-dir {folder}" in message and "no config.json" in message
    assert snapshot(folder) == before
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        ["samples", "generator.pt", "losses.png", "metrics.jsonl"]
    )  # not even a .lock

    # A file deep down counts too; empty folders alone do not.
    nested = tmp_path / "nested"
    (nested / "a" / "b").mkdir(parents=True)
    (nested / "a" / "b" / "notes.txt").write_text("keep me")
    run_cli(train_args(nested, *TINY, epochs=1), code=2)
    assert (nested / "a" / "b" / "notes.txt").read_text() == "keep me"
    assert not (nested / ".lock").exists()

    empty = tmp_path / "empty"
    (empty / "samples").mkdir(parents=True)
    run_cli(train_args(empty, *TINY, epochs=1))
    assert load(empty / "checkpoints" / "last.pt")["epoch"] == 1

    # A run that stopped before its first checkpoint (config.json, no checkpoint) is a run: a
    # new one takes its place.
    shutil.rmtree(empty / "checkpoints")
    result = run_cli(train_args(empty, *TINY, epochs=1))
    assert "starting afresh" in " ".join(result.output.split())
    assert load(empty / "checkpoints" / "last.pt")["epoch"] == 1


# --- a checkpoint continues only its own run ----------------------------------------------------


def _other_run(kind, root):
    """A finished one-epoch run unlike the tiny v1 Stage-I run in one respect, with --out."""
    run, out = root / f"other-{kind}", root / f"other-{kind}.pt"
    if kind == "family":
        args = v2_args(run, "--branches", "1", "--out", str(out), epochs=1)
    elif kind == "widths":
        args = train_args(run, *TINY, "--df-dim", "4", "--out", str(out), epochs=1)
    else:
        write_tiny_prepared(paths.prepared_dir("tiny2"), seed=1)
        args = train_args(run, *TINY, "--out", str(out), epochs=1, dataset="tiny2")
    run_cli(args)
    return run, out


@pytest.mark.parametrize("kind", ["family", "widths", "dataset"])
def test_resume_refuses_a_checkpoint_of_another_run(tiny_dataset, tmp_path, kind):
    run = tmp_path / "v1"
    run_cli(train_args(run, *TINY, epochs=1))
    other, other_out = _other_run(kind, tmp_path)
    own_last = (run / "checkpoints" / "last.pt").read_bytes()
    config = (run / "config.json").read_bytes()
    out_bytes, out_stat = other_out.read_bytes(), other_out.stat()
    foreign = other / "checkpoints" / "last.pt"

    # resume RUN --from OTHER/last.pt
    result = run_cli(["resume", str(run), "--epochs", "2", "--from", str(foreign)], code=1)
    message = one_error_line(result)
    assert str(foreign) in message and str(run / "config.json") in message
    assert (run / "checkpoints" / "last.pt").read_bytes() == own_last

    # OTHER/last.pt copied over RUN/checkpoints/last.pt
    shutil.copy2(foreign, run / "checkpoints" / "last.pt")
    result = run_cli(["resume", str(run), "--epochs", "2"], code=1)
    message = one_error_line(result)
    assert str(run / "checkpoints" / "last.pt") in message
    assert str(run / "config.json") in message
    assert (run / "config.json").read_bytes() == config
    assert json.loads(config)["train"]["arch"] == "v1"
    assert (run / "checkpoints" / "last.pt").read_bytes() == foreign.read_bytes()  # untouched
    assert other_out.read_bytes() == out_bytes
    assert other_out.stat().st_mtime_ns == out_stat.st_mtime_ns


# --- a copied run folder leaves the original's --out alone --------------------------------------


def test_a_copied_run_never_writes_the_original_out(tiny_dataset, tmp_path):
    run_a, out = tmp_path / "runA", tmp_path / "a.pt"
    run_cli(train_args(run_a, *TINY, "--snapshot-every", "1", "--out", str(out), epochs=1))
    recorded = json.loads((run_a / "config.json").read_text())["train"]
    assert recorded["out_owner"] == str(run_a)
    run_b = tmp_path / "runB"
    shutil.copytree(run_a, run_b, symlinks=True)  # cp -a runA runB
    out.write_bytes(b"runA's generator file")  # what runA last wrote there, told apart

    # Nothing left to train: a resume still ends with the final files, --out among them.
    result = run_cli(["resume", str(run_b)])
    words = " ".join(result.output.split())
    assert words.count(f"--out {out} belongs to the run in {run_a}") == 1
    assert out.read_bytes() == b"runA's generator file"

    result = run_cli(["resume", str(run_b), "--epochs", "2"])
    assert out.read_bytes() == b"runA's generator file"
    assert load(run_b / "generator.pt")["epoch"] == 2
    assert "copied to" not in result.output
    assert json.loads((run_b / "config.json").read_text())["train"]["out"] is None

    # The run that made it still writes it, from its last.pt or from its own snapshot.
    run_cli(["resume", str(run_a), "--epochs", "2"])
    assert out.read_bytes() == (run_a / "generator.pt").read_bytes()
    out.write_bytes(b"stale")
    snapshot_file = run_a / "checkpoints" / "epoch_0001.pt"
    run_cli(["resume", str(run_a), "--epochs", "2", "--from", str(snapshot_file)])
    assert out.read_bytes() == (run_a / "generator.pt").read_bytes()


# --- no lock in a folder that is not a run -----------------------------------------------------


def test_refused_commands_leave_no_lock_file(tiny_dataset, tmp_path):
    folder = tmp_path / "stuff"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a run")
    result = run_cli(["resume", str(folder)], code=1)
    assert "is not a run directory" in one_error_line(result)
    run_cli(["resume", str(folder), "--from", str(folder / "notes.txt")], code=1)
    run_cli(train_args(folder, *TINY, epochs=1), code=2)
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]

    empty = tmp_path / "empty"
    empty.mkdir()
    run_cli(["resume", str(empty)], code=1)
    assert list(empty.iterdir()) == []


# --- paths that cannot be written: found before the first step ------------------------------


def test_out_below_a_file_is_refused_before_training(tiny_dataset, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("a file, not a folder")
    run = tmp_path / "run"
    result = run_cli(train_args(run, *TINY, "--out", str(afile / "s1.pt"), epochs=1), code=1)
    message = one_error_line(result)
    assert f"--out {afile / 's1.pt'}" in message and f"{afile} is not a folder" in message
    assert not run.exists()  # refused before the run folder was made, let alone trained


def test_run_dir_below_a_file_is_one_line(tiny_dataset, tmp_path):
    afile = tmp_path / "afile"
    afile.write_text("a file, not a folder")
    result = run_cli(train_args(afile / "run", *TINY, epochs=1), code=1)
    message = one_error_line(result)
    assert f"--run-dir {afile / 'run'}" in message and f"{afile} is not a folder" in message
    assert afile.read_text() == "a file, not a folder"


def test_stackgan_home_that_is_a_file_is_one_line(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.write_text("a file, not a folder")
    monkeypatch.setenv("STACKGAN_HOME", str(home))
    result = run_cli(["prepare", "shapes", "--images", "40", "--workers", "0"], code=1)
    message = one_error_line(result)
    assert str(home) in message and "STACKGAN_HOME" in message


# Read-only (chmod 0o500) folders. Root writes into them all the same, so as root the command
# runs without the capabilities that let it (setpriv drops CAP_DAC_OVERRIDE): the permission
# bits then hold for it too, and these tests run in CI as well.
_DROP = "-dac_override,-dac_read_search"
_LOCKED_DOWN = ["setpriv", f"--bounding-set={_DROP}", f"--inh-caps={_DROP}"]


@pytest.fixture
def bound_by_permissions():
    """A function running ``stackgan ARGS`` in a process that file permissions bind, returning
    (exit code, output); skips where root cannot give up its override."""
    prefix = []
    if os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("root ignores chmod, and setpriv is not there to make it obey")
        probe = subprocess.run([*_LOCKED_DOWN, "true"], capture_output=True)
        if probe.returncode != 0:
            pytest.skip(f"setpriv cannot drop CAP_DAC_OVERRIDE here: {probe.stderr!r}")
        prefix = _LOCKED_DOWN

    def run(args, code):
        env = {**os.environ, "PYTHONPATH": str(REPO), "COLUMNS": "400"}
        done = subprocess.run(
            [*prefix, sys.executable, "-m", "stackgan_cli", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == code, done.stdout + done.stderr
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:"), done.stderr
        return " ".join(done.stderr.split())

    return run


def test_out_in_a_read_only_folder_is_refused_before_training(
    tiny_dataset, tmp_path, bound_by_permissions
):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    run = tmp_path / "run"
    try:
        args = train_args(run, *TINY, "--out", str(locked / "s1.pt"), epochs=1)
        message = bound_by_permissions(args, code=1)
    finally:
        locked.chmod(0o700)
    assert f"--out {locked / 's1.pt'}" in message and "not writable" in message
    assert not run.exists()


def test_run_dir_in_a_read_only_folder_is_one_line(tiny_dataset, tmp_path, bound_by_permissions):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        message = bound_by_permissions(train_args(locked / "run", *TINY, epochs=1), code=1)
    finally:
        locked.chmod(0o700)
    assert f"--run-dir {locked / 'run'}" in message and "not writable" in message
    assert list(locked.iterdir()) == []


def test_resume_of_a_read_only_run_is_one_line(tiny_dataset, tmp_path, bound_by_permissions):
    run = tmp_path / "run"
    run_cli(train_args(run, *TINY, epochs=1))
    (run / ".lock").unlink()
    run.chmod(0o500)
    try:
        message = bound_by_permissions(["resume", str(run), "--epochs", "2"], code=1)
    finally:
        run.chmod(0o700)
    assert f"{run / '.lock'}" in message and "Permission denied" in message
    assert load(run / "checkpoints" / "last.pt")["epoch"] == 1


def test_read_only_stackgan_home_is_one_line(tmp_path, monkeypatch, bound_by_permissions):
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o500)
    monkeypatch.setenv("STACKGAN_HOME", str(home))
    try:
        message = bound_by_permissions(
            ["prepare", "shapes", "--images", "40", "--workers", "0"], code=1
        )
    finally:
        home.chmod(0o700)
    assert str(home) in message and "STACKGAN_HOME" in message
    assert list(home.iterdir()) == []
