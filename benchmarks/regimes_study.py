"""Training regimes compared on the shapes dataset for the same wall time each.

For each regime: ``stackgan train --stage 1`` at small widths in a subprocess, stopped with
SIGINT (which saves the run after the current step) ``--seconds`` after training starts; then
``stackgan generate`` for prompts of the colour/shape combinations seen in training (the 18
training classes) and of the held-out ones (the 6 test classes: each colour with a shape it is
never drawn with in training), and the conditioning accuracy: the share of images whose
dominant colour (stackgan_cli/evaluation/colour.py, the method of tests/test_conditioning.py)
is the prompt's. Also the training steps done, seconds per step and a sample grid per regime
(rows: the six colours; left three: a seen combination, right three: the held-out one).

Prints one JSON line per regime (and one for the machine) on stdout. Usage::

    python benchmarks/regimes_study.py --seconds 75 --out /tmp/study [--regimes official,hinge]

The dataset is prepared once in ``OUT/home`` (its own STACKGAN_HOME): 400 images, 300 training
ones of 18 classes and 100 test ones of 6 classes, the text encoder trained for 8 epochs
(as tests/test_conditioning.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

# name -> extra `stackgan train` options (the official recipe is no option at all)
REGIMES: dict[str, list[str]] = {
    "official": [],
    "hinge": ["--loss", "hinge"],
    "lsgan": ["--loss", "lsgan"],
    "wgan-gp-rmsprop": ["--loss", "wgan-gp", "--optimizer", "rmsprop"],
    "official+diffaugment": ["--diffaugment", "color,translation,cutout"],
    "official+spectral": ["--d-norm", "spectral"],
    "official+ema": ["--ema", "0.999"],
    "hinge+spectral+diffaugment": ["--loss", "hinge", "--d-norm", "spectral",
                                   "--diffaugment", "color,translation,cutout"],
}  # fmt: skip
PHRASINGS = ("an image of a {colour} {shape}", "{colour} {shape}", "please draw a {colour} {shape}")
WIDTH, BATCH, SAMPLES_SEEN, SAMPLES_HELD = 8, 32, 2, 4


def cli(*args: str, env: dict[str, str]) -> list[str]:
    return [sys.executable, "-m", "stackgan_cli", *args]


def prepare(home: Path, env: dict[str, str]) -> None:
    if (home / "datasets").exists() and any((home / "datasets").rglob("metadata.json")):
        return
    code = (
        "from stackgan_cli.data.prepare import prepare_shapes; "
        "prepare_shapes(images=400, seed=0, workers=0, text_encoder_epochs=8)"
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)


def train(name: str, extra: list[str], seconds: float, out: Path, env: dict[str, str]) -> dict:
    run_dir = out / "runs" / name
    generator = out / "generators" / f"{name}.pt"
    generator.parent.mkdir(parents=True, exist_ok=True)
    args = ["train", "--stage", "1", "--dataset", "shapes", "--epochs", "100000",
            "--batch-size", str(BATCH), "--gf-dim", str(WIDTH), "--df-dim", str(WIDTH),
            "--sample-every", "100000", "--snapshot-every", "100000", "--log-every", "10",
            "--seed", "0", "--device", "cpu", "--run-dir", str(run_dir), "--out",
            str(generator), *extra]  # fmt: skip
    log = open(out / f"{name}.train.log", "w")
    started = time.monotonic()
    proc = subprocess.Popen(cli(*args, env=env), env=env, stdout=log, stderr=subprocess.STDOUT)
    metrics = run_dir / "metrics.jsonl"
    # The clock starts at the first step's metrics line (imports and set-up excluded)... or
    # after 60 s of set-up at the latest.
    while proc.poll() is None and not metrics.exists() and time.monotonic() - started < 60:
        time.sleep(0.2)
    first = time.monotonic()
    loads = []
    while proc.poll() is None and time.monotonic() - first < seconds:
        time.sleep(1.0)
        loads.append(os.getloadavg()[0])
    proc.send_signal(signal.SIGINT)
    proc.wait(timeout=300)
    log.close()
    import torch

    state = torch.load(run_dir / "checkpoints" / "last.pt", map_location="cpu", weights_only=True)
    steps = int(state["global_step"])
    elapsed = float(state.get("elapsed", 0.0))
    if not generator.exists():  # an interrupted run leaves RUN_DIR/generator.pt
        generator = run_dir / "generator.pt"
    return {
        "steps": steps,
        "train_seconds": round(elapsed, 1),
        "s_per_step": round(elapsed / max(steps, 1), 4),
        "load_avg_1min": round(sum(loads) / max(len(loads), 1), 2),
        "generator": str(generator),
        "returncode": proc.returncode,
    }


def accuracy(generator: str, name: str, out: Path, env: dict[str, str]) -> dict:
    import numpy as np
    from PIL import Image

    from stackgan_cli.data.shapes import CLASSES, TEST_CLASSES
    from stackgan_cli.evaluation.colour import dominant_colour

    result, images = {}, {}
    for kind, classes, samples in (
        ("seen", [c for c in CLASSES if c not in TEST_CLASSES], SAMPLES_SEEN),
        ("held_out", [c for c in CLASSES if c in TEST_CLASSES], SAMPLES_HELD),
    ):
        prompts = [(c, s, p.format(colour=c, shape=s)) for c, s in classes for p in PHRASINGS]
        folder = out / "generated" / name / kind
        subprocess.run(
            cli("generate", *(text for _, _, text in prompts), "-n", str(samples), "--ckpt",
                generator, "--seed", "0", "--device", "cpu", "--out", str(folder), env=env),
            env=env, check=True, capture_output=True,
        )  # fmt: skip
        width_p, width_s = max(2, len(str(len(prompts) - 1))), max(2, len(str(samples - 1)))
        hits = total = 0
        for p, (colour, shape, _) in enumerate(prompts):
            for k in range(samples):
                path = folder / f"{p:0{width_p}d}_{k:0{width_s}d}.png"
                with Image.open(path) as image:
                    pixels = np.asarray(image.convert("RGB"))
                hits += dominant_colour(pixels) == colour
                total += 1
                images.setdefault((kind, colour, shape), []).append(pixels)
        result[f"acc_{kind}"] = round(hits / total, 3)
        result[f"n_{kind}"] = total
    result["grid"] = str(grid(images, name, out))
    return result


def grid(images: dict, name: str, out: Path) -> Path:
    """Rows: the six colours; three images of a seen combination, then three of the held-out
    one (the held-out shape of each colour; the seen one is the next shape)."""
    import numpy as np
    from PIL import Image

    from stackgan_cli.data.shapes import COLOURS, SHAPES, TEST_CLASSES

    rows = []
    for colour in COLOURS:
        held = next(s for c, s in TEST_CLASSES if c == colour)
        seen = SHAPES[(SHAPES.index(held) + 1) % len(SHAPES)]
        tiles = images[("seen", colour, seen)][:3] + images[("held_out", colour, held)][:3]
        tiles = [np.asarray(Image.fromarray(t).resize((64, 64))) for t in tiles]
        gap = np.full((64, 4, 3), 255, np.uint8)
        rows.append(np.concatenate([*tiles[:3], gap, *tiles[3:]], axis=1))
    path = out / "grids" / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(rows, axis=0)).save(path, optimize=True)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=75.0, help="training time per regime")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--regimes", default=",".join(REGIMES))
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "STACKGAN_HOME": str(out / "home"), "OMP_NUM_THREADS": str(args.threads)}
    env.setdefault("PYTHONUNBUFFERED", "1")
    prepare(out / "home", env)
    print(json.dumps({"machine": platform.processor() or platform.machine(),
                      "cpus": os.cpu_count(), "threads": args.threads,
                      "seconds": args.seconds, "uptime": os.getloadavg()}), flush=True)  # fmt: skip
    for name in args.regimes.split(","):
        record = {"regime": name, "options": " ".join(REGIMES[name]) or "(official)"}
        record.update(train(name, REGIMES[name], args.seconds, out, env))
        record.update(accuracy(record["generator"], name, out, env))
        print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
