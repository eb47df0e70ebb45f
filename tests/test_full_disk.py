"""A full disk, for real: tmpfs mounts of a chosen size, so writes fail with ENOSPC in the kernel.

Each training case puts a run (or one of its folders or files) on a tmpfs that holds what the
run writes before the file under test but not that file: the checkpoint (``last.pt``), a
snapshot (``epoch_NNNN.pt``), the generator file, a sample grid and ``metrics.jsonl``. Then
``stackgan train`` must stop with exit code 1 and one line on stderr that names what failed,
leave the previous ``last.pt`` loadable, and, once the tmpfs is remounted larger, ``stackgan
resume`` must finish the run.

Sizes come from a calibration run (the ``last.pt`` and ``generator.pt`` of these tiny networks)
and tmpfs counts whole 4 KiB pages, empty files and folders taking none. Mounting needs root on
Linux (CI); elsewhere the tests skip.
"""

import errno
import json
import shutil
from pathlib import Path

import pytest
import torch
from disk_helpers import mount_command as _mount
from disk_helpers import unmount as _unmount
from training_helpers import TINY, finite_records, load, run_cli, train_args, write_tiny_prepared
from typer.testing import CliRunner

from stackgan_cli.cli import app
from stackgan_cli.fsutil import atomic_torch_save, atomic_write_text, copy_file, exclusive_lock

PAGE = 4096
SMALL = 4  # pages for the small files of a run: .lock (its holder line), config.json, metrics
ROOMY = 64 << 20  # "freeing space": the tmpfs remounted this large
NO_SPACE = "No space left on device"


def pages(size: int) -> int:
    return -(-size // PAGE)


def resize(path: Path, size: int) -> None:
    result = _mount("-o", f"remount,size={size}", str(path))
    assert result.returncode == 0, result.stderr


def fill(folder: Path) -> None:
    """Write a ballast file into ``folder`` until its filesystem has no free page left."""
    with open(folder / "ballast", "wb", buffering=0) as handle:
        with pytest.raises(OSError) as failure:
            while True:
                handle.write(b"\0" * PAGE)
    assert failure.value.errno == errno.ENOSPC


def leftovers(folder: Path) -> list[Path]:
    """Temporary files of atomic writes left behind."""
    return sorted(folder.rglob(".*.tmp"))


@pytest.fixture(scope="module")
def sizes(tmp_path_factory) -> dict[str, int]:
    """Byte sizes of ``last.pt`` and ``generator.pt`` of the tiny runs below (one epoch)."""
    home = tmp_path_factory.mktemp("full_disk_home")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STACKGAN_HOME", str(home))
        write_tiny_prepared(home / "datasets" / "tiny" / "prepared")
        run = home / "run"
        run_cli(train_args(run, *TINY, epochs=1))
    return {
        "last.pt": (run / "checkpoints" / "last.pt").stat().st_size,
        "generator.pt": (run / "generator.pt").stat().st_size,
    }


def stopped(args: list[str]) -> str:
    """Run ``stackgan ARGS``, which must stop on the full disk with exit code 1 and a single
    line on stderr (the last, after the progress lines) and no traceback; that line, with
    whitespace normalised."""
    result = CliRunner().invoke(app, args)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(
        result.exception
    )
    assert result.exit_code == 1, result.output
    lines = result.stderr.splitlines()
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], result.stderr
    assert "Traceback" not in result.output
    assert not any(line.startswith(("╭", "│", "╰")) for line in lines), result.stderr
    assert NO_SPACE in errors[0]
    return " ".join(errors[0].split())


def assert_intact_checkpoint(run: Path, epoch: int, message: str) -> None:
    """``last.pt`` holds ``epoch`` and loads, and the message says so and how to go on."""
    last = run / "checkpoints" / "last.pt"
    assert load(last)["epoch"] == epoch
    assert f"the last good checkpoint, {last} (after epoch {epoch}), is intact" in message, message
    assert f"`stackgan resume {run}` continues from it" in message, message


def assert_resumes_to_the_end(run: Path, epochs: int, *options: str) -> None:
    """``stackgan resume RUN [OPTIONS]`` trains to epoch ``epochs`` and leaves consistent
    files."""
    run_cli(["resume", str(run), *options])
    state = load(run / "checkpoints" / "last.pt")
    assert (state["epoch"], state["step"]) == (epochs, 0)
    assert (run / "generator.pt").is_file() and (run / "losses.png").is_file()
    steps = [record["step"] for record in finite_records(run)]
    assert steps == sorted(set(steps)) and steps[-1] == state["global_step"], steps
    assert not leftovers(run)


# --- the writers of stackgan_cli/fsutil.py ---------------------------------------------------

WRITERS = {
    "atomic_torch_save": lambda target, source: atomic_torch_save(
        {"w": torch.ones(1 << 16)}, target
    ),
    "atomic_write_text": lambda target, source: atomic_write_text(target, "x" * (256 << 10)),
    "copy_file": lambda target, source: copy_file(source, target),
}


@pytest.mark.parametrize("writer", WRITERS)
def test_a_full_disk_raises_enospc_and_leaves_the_target_as_it_was(writer, tmpfs, tmp_path):
    # torch.save's zip writer raises a RuntimeError ("unexpected pos ...") after the OSError
    # of the failed write: the OSError is what comes out.
    source = tmp_path / "source.bin"
    source.write_bytes(b"y" * (256 << 10))
    disk = tmpfs(tmp_path / "disk", 16 * PAGE)
    target = disk / "target.bin"
    target.write_bytes(b"old")
    with pytest.raises(OSError) as failure:
        WRITERS[writer](target, source)
    assert failure.value.errno == errno.ENOSPC
    assert target.read_bytes() == b"old"
    assert [path.name for path in disk.iterdir()] == ["target.bin"]


def test_errors_that_are_not_a_failed_write_pass_through(tmp_path):
    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("not a write")

    target = tmp_path / "file.pt"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="not a write"):
        atomic_torch_save({"w": torch.ones(4), "bad": Unpicklable()}, target)
    assert target.read_bytes() == b"old" and not leftovers(tmp_path)


def test_the_lock_is_taken_on_a_full_disk(tmpfs, tmp_path):
    disk = tmpfs(tmp_path / "disk", PAGE)
    fill(disk)
    with exclusive_lock(disk / ".lock", "busy"):
        assert (disk / ".lock").read_text() == ""  # no room for the holder line, no half line


# --- stackgan train ---------------------------------------------------------------------------


def test_a_full_disk_at_the_first_checkpoint(tiny_dataset, sizes, tmpfs, tmp_path):
    # The case: the run directory a tmpfs too small for the first last.pt.
    disk = tmpfs(tmp_path / "disk", (SMALL + pages(sizes["last.pt"]) // 2) * PAGE)
    run = disk / "run"
    message = stopped(train_args(run, *TINY, epochs=2))
    assert f"writing the checkpoint failed ({NO_SPACE})" in message, message
    assert not (run / "checkpoints" / "last.pt").exists() and not leftovers(run)
    # Nothing to resume from: with space again, the same command starts the run afresh.
    resize(disk, ROOMY)
    run_cli(train_args(run, *TINY, epochs=2))
    assert load(run / "checkpoints" / "last.pt")["epoch"] == 2
    steps = [record["step"] for record in finite_records(run)]
    assert steps == [2, 4], steps  # nothing left over from the attempt that stopped


def test_a_full_disk_at_a_later_checkpoint_keeps_the_last_one(tiny_dataset, sizes, tmpfs, tmp_path):
    # Room for epoch 1's last.pt and generator.pt, not for epoch 2's last.pt beside the old one.
    last, generator = pages(sizes["last.pt"]), pages(sizes["generator.pt"])
    disk = tmpfs(tmp_path / "disk", (SMALL + last + generator + last // 2) * PAGE)
    run = disk / "run"
    message = stopped(train_args(run, *TINY, "--sample-every", "50", epochs=2))
    assert f"writing the checkpoint failed ({NO_SPACE})" in message, message
    assert_intact_checkpoint(run, 1, message)
    assert not leftovers(run)
    resize(disk, ROOMY)
    assert_resumes_to_the_end(run, 2)


def test_a_full_disk_at_a_snapshot(tiny_dataset, sizes, tmpfs, tmp_path):
    # Room for epoch 1's last.pt, not for its snapshot epoch_0001.pt.
    last = pages(sizes["last.pt"])
    disk = tmpfs(tmp_path / "disk", (SMALL + last + last // 2) * PAGE)
    run = disk / "run"
    args = train_args(run, *TINY, "--snapshot-every", "1", "--sample-every", "50", epochs=2)
    message = stopped(args)
    assert "snapshot" in message or "epoch_0001.pt" in message, message
    assert not (run / "checkpoints" / "epoch_0001.pt").exists() and not leftovers(run)
    assert_intact_checkpoint(run, 1, message)  # last.pt was written before the snapshot
    resize(disk, ROOMY)
    assert_resumes_to_the_end(run, 2)


def test_a_full_disk_at_the_generator_file(tiny_dataset, sizes, tmpfs, tmp_path):
    # Room for epoch 1's last.pt, not for generator.pt.
    last, generator = pages(sizes["last.pt"]), pages(sizes["generator.pt"])
    disk = tmpfs(tmp_path / "disk", (SMALL + last + generator // 2) * PAGE)
    run = disk / "run"
    message = stopped(train_args(run, *TINY, "--sample-every", "50", epochs=2))
    assert "generator file" in message or "generator.pt" in message, message
    assert not (run / "generator.pt").exists() and not leftovers(run)
    assert_intact_checkpoint(run, 1, message)  # last.pt was written before generator.pt
    resize(disk, ROOMY)
    assert_resumes_to_the_end(run, 2)


def test_a_full_disk_at_a_sample_grid(tiny_dataset, tmpfs, tmp_path, request):
    # samples/ is on a full tmpfs of its own: the checkpoint and generator.pt go through, the
    # PNG does not (a window of one or two pages on one shared tmpfs would be too fragile).
    # The ballast that fills it lies outside the run, whose folder a new run finds empty: an
    # empty folder of the full tmpfs is bind-mounted as samples/.
    disk = tmpfs(tmp_path / "disk", PAGE)
    (disk / "samples").mkdir()
    fill(disk)
    run = tmp_path / "run"
    samples = run / "samples"
    samples.mkdir(parents=True)
    bound = _mount("--bind", str(disk / "samples"), str(samples))
    assert bound.returncode == 0, bound.stderr
    request.addfinalizer(lambda: _unmount(samples))  # before the tmpfs's own (last in, first out)
    message = stopped(train_args(run, *TINY, "--sample-every", "1", epochs=2))
    assert f"writing the sample grid failed ({NO_SPACE})" in message, message
    assert not (samples / "epoch_0001.png").exists() and not leftovers(run)
    assert_intact_checkpoint(run, 1, message)
    resize(disk, ROOMY)
    assert_resumes_to_the_end(run, 2)
    assert (samples / "epoch_0002.png").is_file()


def test_a_full_disk_at_metrics_jsonl(isolated_cache, tmpfs, tmp_path):
    # After one epoch (20 images in batches of 2, a record of about 300 bytes every step: 10
    # records), metrics.jsonl moves onto a one-page tmpfs, linked from the run. Continuing to
    # epoch 2, the append that needs a second page fails: after last.pt of epoch 1.
    write_tiny_prepared(isolated_cache / "datasets" / "tiny" / "prepared", train=20)
    run = tmp_path / "run"
    run_cli(train_args(run, *TINY, "--log-every", "1", "--sample-every", "50", epochs=1, batch=2))
    disk = tmpfs(tmp_path / "disk", PAGE)
    shutil.move(run / "metrics.jsonl", disk / "metrics.jsonl")
    (run / "metrics.jsonl").symlink_to(disk / "metrics.jsonl")
    message = stopped(["resume", str(run), "--epochs", "2"])
    assert f"writing metrics.jsonl failed ({NO_SPACE})" in message, message
    assert_intact_checkpoint(run, 1, message)
    resize(disk, ROOMY)
    assert_resumes_to_the_end(run, 2, "--epochs", "2")
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [record["step"] for record in records] == list(range(1, 21))
