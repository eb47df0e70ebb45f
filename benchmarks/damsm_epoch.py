"""DAMSM pre-training epochs with and without the trunk feature cache, as JSON.

Two real ``stackgan train --arch damsm`` runs on the same prepared data, same CPU, same
networks (birds widths: text_dim 256, word_dim 300, the full Inception-v3 trunk), one after the
other:

* ``official``: ``--trunk-views 0`` with the official word loss (the loop over captions,
  ``damsm_word_loss``, put in place of the batched one in the benchmark's process only): the
  official step: a fresh crop and flip of every image, the frozen trunk run on it, then the
  projections, the official losses and the encoders' update; the test split's trunk pass every
  epoch too. (It keeps our device-resident sampler, so it is no slower than the official
  DataLoader step: the ratio below is a lower bound.)
* ``cached``: the training default: ``--trunk-views 4`` (the trunk's outputs for 4 fixed views
  of every training image and 1 of every test image computed once before the first epoch, then
  read every epoch) and the batched word loss.

Each run's output lines are time-stamped as they arrive (wall clock and the child's CPU time
from /proc), so an epoch is the span between two ``epoch N test`` lines (training steps plus
the test evaluation) and the cache build the span before the first epoch. CPU seconds keep
the comparison fair on a shared machine. The runs also log the test split's top-1 retrieval
accuracy (caption -> image and image -> caption within batches) per epoch: the check that the
fixed views learn no worse after equal epochs.

No ImageNet weights can be fetched offline, so the trunk has random weights in torchvision's
layout with its BatchNorm statistics calibrated on the training images (cumulative averages
over a few batches at 299 px), so that its activations have a trained trunk's scale; both runs
use the same file. Data: cub-mini (../shared/data/cub-mini: 275 train / 268 test real CUB
images with real captions), prepared into a temporary STACKGAN_HOME unless ``--home`` has it.
Linux only (/proc).

    python benchmarks/damsm_epoch.py --epochs 6
    python benchmarks/damsm_epoch.py --epochs 3 --batch-size 24 --home /tmp/bench-home
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from inception_weights import calibrated_inception_weights

ROOT = Path(__file__).resolve().parents[1]
CUB_MINI = ROOT.parent / "shared" / "data" / "cub-mini"
TICKS = os.sysconf("SC_CLK_TCK")


# The official run's process: the CLI with the official word loop in place of the batched loss.
OFFICIAL_LOSS = (
    "import sys\n"
    "from stackgan_cli.models.losses_attngan import damsm_word_loss\n"
    "from stackgan_cli.training import damsm_loop\n"
    "damsm_loop.damsm_word_loss_batched = lambda *a: damsm_word_loss(*a)[:2]\n"
    "from stackgan_cli.cli import main\n"
    "sys.argv[0] = 'stackgan'\n"
    "main()\n"
)


def cli(*args: str, env: dict[str, str], official_loss: bool = False) -> subprocess.Popen:
    entry = ["-c", OFFICIAL_LOSS] if official_loss else ["-m", "stackgan_cli"]
    return subprocess.Popen(
        [sys.executable, *entry, *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        bufsize=1,
    )


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def prepare(home: Path, env: dict[str, str]) -> None:
    if (home / "datasets" / "cub" / "prepared" / "metadata.json").exists():
        return
    if not CUB_MINI.is_dir():
        sys.exit(f"no prepared cub in {home} and no {CUB_MINI} to prepare it from")
    proc = cli("prepare", "cub", "--source-dir", str(CUB_MINI), env=env)
    output = proc.communicate()[0]
    if proc.returncode:
        sys.exit(output)


def training_images(home: Path) -> np.ndarray:
    """The prepared cub training images at 304 px (memory-mapped)."""
    os.environ["STACKGAN_HOME"] = str(home)
    from stackgan_cli.data.prepared import load_prepared

    return load_prepared("cub").split("train").images(304)


def timed_run(views: int, args: argparse.Namespace, weights: Path, home: Path, env: dict) -> dict:
    run_dir = home / "runs" / f"views-{views}"
    proc = cli(
        "train", "--arch", "damsm", "--dataset", "cub", "--epochs", str(args.epochs),
        "--batch-size", str(args.batch_size), "--inception-weights", str(weights),
        "--trunk-views", str(views), "--run-dir", str(run_dir), "--log-every", "1000",
        env=env, official_loss=views == 0,
    )  # fmt: skip
    start = time.monotonic()
    stamps, lines = [], []
    for line in proc.stdout:
        try:
            cpu = cpu_seconds(proc.pid)
        except OSError:
            cpu = float("nan")
        stamps.append((time.monotonic() - start, cpu, line.strip()))
        lines.append(line)
    proc.wait()
    if proc.returncode:
        sys.exit("".join(lines))
    wall, cpu = time.monotonic() - start, stamps[-1][1]
    epochs = [(w, c) for w, c, text in stamps if " test: " in text]
    built = [(w, c) for w, c, text in stamps if text.startswith("trunk features: 100%")]
    started = [(w, c) for w, c, text in stamps if text.startswith("DAMSM on ")][0]
    first = built[-1] if built else started
    marks = [first, *epochs]
    epoch_wall = [b[0] - a[0] for a, b in zip(marks, marks[1:], strict=False)]
    epoch_cpu = [b[1] - a[1] for a, b in zip(marks, marks[1:], strict=False)]
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    tests = [r for r in records if r.get("split") == "test"]
    return {
        "trunk_views": views,
        "wall_s": round(wall, 1),
        "cpu_s": round(cpu, 1),
        "build_wall_s": round(first[0] - started[0], 1) if built else 0.0,
        "build_cpu_s": round(first[1] - started[1], 1) if built else 0.0,
        "epoch_wall_s": [round(x, 2) for x in epoch_wall],
        "epoch_cpu_s": [round(x, 2) for x in epoch_cpu],
        "median_epoch_cpu_s": round(statistics.median(epoch_cpu), 2),
        "median_epoch_wall_s": round(statistics.median(epoch_wall), 2),
        "caption_to_image_top1": [round(r["caption_to_image_top1"], 4) for r in tests],
        "image_to_caption_top1": [round(r["image_to_caption_top1"], 4) for r in tests],
        "test_words_loss": [round(r["w_loss0"] + r["w_loss1"], 3) for r in tests],
        "test_sentence_loss": [round(r["s_loss0"] + r["s_loss1"], 3) for r in tests],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--batch-size", type=int, default=48)
    parser.add_argument("--views", type=int, default=4, help="--trunk-views of the cached run")
    parser.add_argument("--home", type=Path, help="STACKGAN_HOME (default: a temporary one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        home = (args.home or Path(scratch) / "home").resolve()
        env = {**os.environ, "STACKGAN_HOME": str(home), "PYTHONPATH": str(ROOT)}
        prepare(home, env)
        weights = Path(scratch) / "inception_v3_google-calibrated.pth"
        calibrated_inception_weights(weights, training_images(home))
        official = timed_run(0, args, weights, home, env)
        cached = timed_run(args.views, args, weights, home, env)
    ratio = official["median_epoch_cpu_s"] / cached["median_epoch_cpu_s"]
    saved = official["median_epoch_cpu_s"] - cached["median_epoch_cpu_s"]
    summary = {
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "dataset": "cub-mini",
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "official": official,
        "cached": cached,
        "epoch_cpu_speedup": round(ratio, 2),
        "epoch_wall_speedup": round(
            official["median_epoch_wall_s"] / cached["median_epoch_wall_s"], 2
        ),
        "build_in_official_epochs": round(
            cached["build_cpu_s"] / official["median_epoch_cpu_s"], 2
        ),
        "break_even_epochs": round(cached["build_cpu_s"] / saved, 2) if saved > 0 else None,
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
