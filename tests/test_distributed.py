"""Data-parallel training under torchrun: two gloo ranks on the CPU, then a plain resume."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from training_helpers import (
    TINY,
    load,
    run_cli,
    train_args,
    write_inception_weights,
    write_tiny_prepared,
)

from stackgan_cli import paths

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_two_gloo_ranks_write_one_resumable_run(tmp_path):
    write_tiny_prepared(paths.prepared_dir("tiny"))
    run = tmp_path / "run"
    # 16 images, 4 per rank and step: a global batch of 8, 2 steps per epoch.
    args = train_args(run, *TINY, "--log-every", "1", "--device", "cpu", epochs=2, batch=4)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        "-m",
        "stackgan_cli",
        *args,
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    child = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stdout + child.stderr
    assert child.stdout.count("run directory:") == 1  # rank 0 alone reports

    state = load(run / "checkpoints/last.pt")
    assert state["world_size"] == 2 and len(state["rng"]) == 2
    assert (state["epoch"], state["step"], state["global_step"]) == (2, 0, 4)
    assert state["sampler"]["global_batch"] == 8
    assert not any(key.startswith("module.") for key in state["generator"])
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert (run / "generator.pt").is_file() and (run / "losses.png").is_file()

    result = run_cli(["resume", str(run), "--epochs", "3"])
    assert "2 processes" in " ".join(result.output.split())
    state = load(run / "checkpoints/last.pt")
    # One process with batch 4 takes 4 steps per epoch.
    assert (state["epoch"], state["global_step"], state["world_size"]) == (3, 8, 1)


@pytest.mark.slow
def test_two_gloo_ranks_build_the_trunk_cache_together_and_pretrain_a_damsm(tmp_path):
    write_tiny_prepared(paths.prepared_dir("tiny"))
    weights = write_inception_weights(tmp_path / "inception_v3_google-test.pth")
    run = tmp_path / "damsm"
    args = [
        "train", "--arch", "damsm", "--dataset", "tiny", "--epochs", "1", "--batch-size", "4",
        "--text-dim", "16", "--word-dim", "8", "--trunk-views", "2", "--inception-weights",
        str(weights), "--run-dir", str(run), "--log-every", "1", "--device", "cpu",
    ]  # fmt: skip
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc-per-node", "2", "-m", "stackgan_cli", *args]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    child = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert child.returncode == 0, child.stdout + child.stderr
    assert (child.stdout + child.stderr).count("computed once") == 1  # rank 0 alone reports
    state = load(run / "checkpoints/last.pt")
    assert (state["world_size"], state["epoch"], state["global_step"]) == (2, 1, 2)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "split" not in r] == [1, 2]
    assert (run / "damsm.pt").is_file() and not (run / "trunk_features").exists()
