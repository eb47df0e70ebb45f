"""`stackgan resume`: exact continuation, interruption by signals, damaged checkpoints."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from training_helpers import TINY, assert_same_state, load, run_cli, train_args

from stackgan_cli import paths
from stackgan_cli.training.checkpoint import save_checkpoint

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_resume_continues_bit_for_bit(tiny_dataset, tmp_path, monkeypatch):
    straight, halves, stopped = tmp_path / "straight", tmp_path / "halves", tmp_path / "stopped"
    run_cli(train_args(straight, *TINY, epochs=4))

    run_cli(train_args(halves, *TINY, epochs=2))
    result = run_cli(["resume", str(halves), "--epochs", "4"])
    assert "generator file" in result.output
    assert_same_state(load(straight / "checkpoints/last.pt"), load(halves / "checkpoints/last.pt"))

    # A SIGTERM in the middle of epoch 2: the step finishes, last.pt holds the mid-epoch state.
    from stackgan_cli.training.signals import StopRequest
    from stackgan_cli.training.step import GANStep

    calls = {"n": 0}
    during = []
    original = GANStep.__call__

    def signalling(self, batch):
        calls["n"] += 1
        if calls["n"] == 3:
            during.append(signal.getsignal(signal.SIGTERM))
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, batch)

    monkeypatch.setattr(GANStep, "__call__", signalling)
    before = signal.getsignal(signal.SIGTERM)
    result = run_cli(train_args(stopped, *TINY, epochs=4), code=130)
    assert f"stackgan resume {stopped}" in " ".join(result.output.split())
    # While training runs, SIGTERM goes to the stop handler; afterwards the one before is back.
    assert getattr(during[0], "__func__", None) is StopRequest._handle
    assert signal.getsignal(signal.SIGTERM) == before
    state = load(stopped / "checkpoints/last.pt")
    assert (state["epoch"], state["step"], state["global_step"]) == (1, 1, 3)
    monkeypatch.setattr(GANStep, "__call__", original)
    run_cli(["resume", str(stopped)])
    assert_same_state(load(straight / "checkpoints/last.pt"), load(stopped / "checkpoints/last.pt"))
    steps = [json.loads(x)["step"] for x in (stopped / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(set(steps)) and steps[-1] == 8


@pytest.mark.slow
def test_sigint_to_a_training_process_then_resume(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    args = train_args(run, *TINY, "--log-every", "1", epochs=1000)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.Popen(
        [sys.executable, "-m", "stackgan_cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        metrics = run / "metrics.jsonl"
        while not (metrics.exists() and metrics.stat().st_size > 0):
            assert child.poll() is None, child.communicate()
            assert time.monotonic() < deadline, "the child never logged a step"
            time.sleep(0.05)
        child.send_signal(signal.SIGINT)
        _, stderr = child.communicate(timeout=120)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 130, stderr
    assert f"stackgan resume {run}" in " ".join(stderr.split())
    state = load(run / "checkpoints/last.pt")
    assert state["global_step"] >= 1
    done = state["epoch"] + 1
    run_cli(["resume", str(run), "--epochs", str(done)])
    assert load(run / "checkpoints/last.pt")["epoch"] == done
    assert (run / "losses.png").is_file()


def test_damaged_last_pt_names_the_snapshots(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    run_cli(train_args(run, *TINY, "--snapshot-every", "1", epochs=2))
    last = run / "checkpoints/last.pt"
    last.write_bytes(last.read_bytes()[:1000])
    result = run_cli(["resume", str(run), "--epochs", "3"], code=1)
    message = " ".join(result.output.split())
    assert "last.pt is unreadable" in message
    assert "epoch_0001.pt, epoch_0002.pt" in message and "--from" in message

    run_cli(["resume", str(run), "--epochs", "3", "--from", str(run / "checkpoints/epoch_0001.pt")])
    state = load(last)
    assert (state["epoch"], state["global_step"]) == (3, 6)
    steps = [json.loads(x)["step"] for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6]  # the lines after the snapshot were replaced, not duplicated


def test_resume_refusals(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    run_cli(train_args(run, *TINY, epochs=2))
    result = run_cli(["resume", str(run)])
    assert "already trained 2 epochs" in " ".join(result.output.split())
    result = run_cli(["resume", str(run), "--epochs", "1"], code=1)
    assert "ends before the point" in result.output and "after epoch 2" in result.output
    result = run_cli(["resume", str(tmp_path / "nothing")], code=1)
    assert f"{tmp_path / 'nothing'} is not a run directory" in " ".join(result.output.split())

    metadata_path = paths.prepared_dir("tiny") / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    metadata["fingerprint"] = "0" * 64
    metadata_path.write_text(json.dumps(metadata))
    result = run_cli(["resume", str(run), "--epochs", "3"], code=1)
    assert "changed since this run started" in result.output


_KILLED_WRITER = """
import os, signal, sys, torch
from stackgan_cli.training.checkpoint import save_checkpoint

def killed(obj, handle, *args, **kwargs):
    handle.write(b"half a checkpoint")
    handle.flush()
    os.kill(os.getpid(), signal.SIGKILL)

torch.save = killed
save_checkpoint({"weights": torch.ones(4)}, sys.argv[1])
"""


def test_sigkill_during_a_save_leaves_the_previous_file(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint({"weights": torch.zeros(4)}, path)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    child = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(path)], env=env)
    assert child.returncode == -signal.SIGKILL
    assert torch.equal(load(path)["weights"], torch.zeros(4))
