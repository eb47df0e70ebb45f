"""Training regimes compared on the shapes dataset for the same CPU time each.

For each regime and seed: ``stackgan train --stage 1`` at small widths in a subprocess with one
torch thread, stopped with SIGINT (which saves the run after the current step) once the
process has used ``--cpu-seconds`` of CPU time (user + system, read from /proc, start-up
included). CPU time rather than wall time keeps the budget fair on a machine shared with other
work. Then ``stackgan generate`` for prompts of the colour/shape combinations seen in training
(the 18 training classes) and of the held-out ones (the 6 test classes: each colour with a shape
it is never drawn with in training), and the conditioning accuracy: the share of images whose
dominant colour (stackgan_cli/evaluation/colour.py, the method of tests/test_conditioning.py)
is the prompt's. Also the training steps done, CPU seconds per step, the last KL term (below
1e-4 means the conditioning collapsed onto its prior) and a sample grid per regime (rows: the
six colours; left three: a seen combination, right three: the held-out one).

Prints one JSON line per run (and one for the machine) on stdout. Linux only (/proc). Usage::

    python benchmarks/regimes_study.py --cpu-seconds 240 --seeds 0,1 --parallel 2 --out /tmp/study \
        > study.jsonl
    python benchmarks/regimes_study.py --table study.jsonl   # the Markdown table of REGIMES.md

The dataset is prepared once in ``OUT/home`` (its own STACKGAN_HOME): 400 images, 300 training
ones of 18 classes and 100 test ones of 6 classes, the text encoder trained for 8 epochs
(as tests/test_conditioning.py).

The AttnGAN regimes (``--arch attngan``) and StackGAN-v1 on DAMSM features read a DAMSM trained
once on the same training images before any budget starts, as the char-CNN-RNN stand-in is:
``stackgan train --arch damsm`` for ``--damsm-epochs`` epochs at its default widths, on random
Inception-v3 weights whose BatchNorm statistics are measured on the shapes images (no ImageNet
file is reachable offline; benchmarks/inception_weights.py). Its cost and last retrieval
accuracy go into the machine line.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

# name -> extra `stackgan train` options (the official recipe is no option at all)
POLICY = "color,translation,cutout"
REGIMES: dict[str, list[str]] = {
    "official": [],
    "hinge": ["--loss", "hinge"],
    "lsgan": ["--loss", "lsgan"],
    "wgan-gp-rmsprop": ["--loss", "wgan-gp", "--optimizer", "rmsprop"],
    "official+diffaugment": ["--diffaugment", POLICY],
    "official+diffaugment-nocolor": ["--diffaugment", "translation,cutout"],
    "hinge+diffaugment": ["--loss", "hinge", "--diffaugment", POLICY],
    "lsgan+diffaugment": ["--loss", "lsgan", "--diffaugment", POLICY],
    "official+spectral": ["--d-norm", "spectral"],
    "official+spectral+kl0.1": ["--d-norm", "spectral", "--kl-coeff", "0.1"],
    "hinge+spectral+diffaugment": ["--loss", "hinge", "--d-norm", "spectral",
                                   "--diffaugment", POLICY],
    "official+ema": ["--ema", "0.99"],
    # the DAMSM of prepare_damsm() in place of "{damsm}"
    "official+damsm-text": ["--damsm", "{damsm}"],
    "attngan": ["--arch", "attngan", "--branches", "2", "--damsm", "{damsm}"],
    "attngan+damsm-weight0": ["--arch", "attngan", "--branches", "2", "--damsm", "{damsm}",
                              "--damsm-weight", "0"],
}  # fmt: skip
PHRASINGS = ("an image of a {colour} {shape}", "{colour} {shape}", "please draw a {colour} {shape}")
WIDTH, BATCH, SAMPLES_SEEN, SAMPLES_HELD, LOG_EVERY = 8, 32, 2, 4, 10
TICKS = os.sysconf("SC_CLK_TCK")


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "stackgan_cli", *args]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a running process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime, stime


def prepare(home: Path, env: dict[str, str]) -> None:
    if (home / "datasets").exists() and any((home / "datasets").rglob("metadata.json")):
        return
    code = (
        "from stackgan_cli.data.prepare import prepare_shapes; "
        "prepare_shapes(images=400, seed=0, workers=0, text_encoder_epochs=8)"
    )
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)


def uses_damsm(regimes: list[str]) -> bool:
    return any("{damsm}" in REGIMES[name] for name in regimes)


def prepare_damsm(home: Path, epochs: int, env: dict[str, str]) -> dict:
    """Train the study's DAMSM once (``home/damsm.pt``); its CPU seconds and last test line."""
    damsm, run_dir = home / "damsm.pt", home / "damsm-run"
    log = home / "damsm.train.log"
    if damsm.exists():
        return {"damsm": str(damsm), "damsm_log": str(log)}
    env_here = {**env, "OMP_NUM_THREADS": str(os.cpu_count() or 1)}  # not a budgeted run
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); "
        "from inception_weights import calibrated_inception_weights; "
        "from stackgan_cli.data.prepared import load_prepared; "
        "calibrated_inception_weights(__import__('pathlib').Path(sys.argv[2]), "
        "load_prepared('shapes').split('train').images(304))"
    )
    weights = home / "inception_v3_google-calibrated.pth"
    subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent), str(weights)],
        env=env_here, check=True, capture_output=True,
    )  # fmt: skip
    started = time.monotonic()
    with open(log, "w") as out:
        proc = subprocess.Popen(
            cli("train", "--arch", "damsm", "--dataset", "shapes", "--epochs", str(epochs),
                "--batch-size", str(BATCH), "--inception-weights", str(weights), "--seed", "0",
                "--device", "cpu", "--run-dir", str(run_dir), "--out", str(damsm)),
            env=env_here, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
        used = 0.0
        while proc.poll() is None:
            time.sleep(0.25)
            try:
                used = cpu_seconds(proc.pid)
            except (FileNotFoundError, ProcessLookupError, IndexError):
                break
    if proc.wait() != 0:
        sys.exit(f"the study's DAMSM did not train: see {log}")
    tests = [r for r in metrics_lines(run_dir / "metrics.jsonl") if r.get("split") == "test"]
    return {
        "damsm": str(damsm),
        "damsm_epochs": epochs,
        "damsm_cpu_seconds": round(used, 1),
        "damsm_wall_seconds": round(time.monotonic() - started, 1),
        "damsm_caption_to_image_top1": round(tests[-1]["caption_to_image_top1"], 3),
        "damsm_image_to_caption_top1": round(tests[-1]["image_to_caption_top1"], 3),
    }


def metrics_lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def train(run: str, extra: list[str], seed: int, budget: float, out: Path, env: dict) -> dict:
    """Train until the process has used ``budget`` CPU seconds; steps, CPU s/step, last KL."""
    run_dir = out / "runs" / run
    generator = out / "generators" / f"{run}.pt"
    generator.parent.mkdir(parents=True, exist_ok=True)
    family = [] if "--arch" in extra else ["--stage", "1"]
    args = ["train", *family, "--dataset", "shapes", "--epochs", "100000",
            "--batch-size", str(BATCH), "--gf-dim", str(WIDTH), "--df-dim", str(WIDTH),
            "--sample-every", "100000", "--snapshot-every", "100000",
            "--log-every", str(LOG_EVERY), "--seed", str(seed), "--device", "cpu",
            "--run-dir", str(run_dir), "--out", str(generator), *extra]  # fmt: skip
    metrics = run_dir / "metrics.jsonl"
    started = time.monotonic()
    with open(out / f"{run}.train.log", "w") as log:
        proc = subprocess.Popen(cli(*args), env=env, stdout=log, stderr=subprocess.STDOUT)
        first_cpu = None  # CPU time when the first metrics line (step LOG_EVERY) appeared
        used = 0.0
        while proc.poll() is None and used < budget:
            time.sleep(0.25)
            try:
                used = cpu_seconds(proc.pid)
            except (FileNotFoundError, ProcessLookupError, IndexError):
                break
            if first_cpu is None and metrics.exists():
                first_cpu = used
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=300)
    records = metrics_lines(metrics)
    steps = records[-1]["step"] if records else 0
    if not generator.exists():  # an interrupted run leaves RUN_DIR/generator.pt
        generator = run_dir / "generator.pt"
    timed_steps = steps - LOG_EVERY
    return {
        "steps": steps,
        "cpu_seconds": round(used, 1),
        "wall_seconds": round(time.monotonic() - started, 1),
        "cpu_s_per_step": round((used - first_cpu) / timed_steps, 4)
        if first_cpu is not None and timed_steps > 0
        else None,
        "last_kl": records[-1]["kl"] if records else None,
        "generator": str(generator),
        "returncode": proc.returncode,
    }


def accuracy(generator: str, run: str, out: Path, env: dict[str, str]) -> dict:
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
        folder = out / "generated" / run / kind
        subprocess.run(
            cli("generate", *(text for _, _, text in prompts), "-n", str(samples), "--ckpt",
                generator, "--seed", "0", "--device", "cpu", "--out", str(folder)),
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
    result["grid"] = str(grid(images, run, out))
    return result


def grid(images: dict, run: str, out: Path) -> Path:
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
    path = out / "grids" / f"{run}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    picture = Image.fromarray(np.concatenate(rows, axis=0))
    picture.quantize(256, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)  # 1/3 size
    return path


def study_one(
    name: str, seed: int, budget: float, out: Path, env: dict[str, str], damsm: str | None
) -> dict:
    run = f"{name}-seed{seed}"
    options = REGIMES[name]
    record = {"regime": name, "seed": seed, "options": " ".join(options) or "(official)"}
    extra = [damsm if option == "{damsm}" else option for option in options]
    record.update(train(run, extra, seed, budget, out, env))
    record.update(accuracy(record["generator"], run, out, env))
    return record


def table(lines: list[str]) -> str:
    """The study's JSON lines as a Markdown table: one row per regime, seeds averaged."""
    runs: dict[str, list[dict]] = {}
    for line in lines:
        record = json.loads(line)
        if "regime" in record:
            runs.setdefault(record["regime"], []).append(record)

    def mean(values: list[float]) -> float:
        return sum(values) / len(values)

    def each(records: list[dict], key: str, scale: float = 100.0) -> str:
        return " / ".join(f"{r[key] * scale:.0f}" for r in records)

    rows = [
        "| regime | options | seeds | steps | CPU s/step | last KL (per seed) "
        "| acc. seen % (per seed) | acc. held-out % (per seed) |",
        "|---|---|---:|---:|---:|---:|---|---|",
    ]
    order = list(REGIMES)
    for name, records in sorted(runs.items(), key=lambda kv: order.index(kv[0])):
        records.sort(key=lambda r: r["seed"])
        kls = " / ".join(f"{r['last_kl']:.0e}" for r in records)
        rows.append(
            f"| {name} | `{records[0]['options']}` | {len(records)} "
            f"| {mean([r['steps'] for r in records]):.0f} "
            f"| {mean([r['cpu_s_per_step'] for r in records]):.3f} "
            f"| {kls} "
            f"| **{mean([r['acc_seen'] for r in records]) * 100:.1f}** "
            f"({each(records, 'acc_seen')}) "
            f"| **{mean([r['acc_held_out'] for r in records]) * 100:.1f}** "
            f"({each(records, 'acc_held_out')}) |"
        )
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cpu-seconds", type=float, default=60.0, help="CPU time per run")
    parser.add_argument("--seeds", default="0", help="training seeds, comma-separated")
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time")
    parser.add_argument("--out", type=Path, help="folder for the dataset, runs and grids")
    parser.add_argument("--regimes", default=",".join(REGIMES))
    parser.add_argument(
        "--damsm-epochs", type=int, default=30, help="epochs of the DAMSM the DAMSM regimes read"
    )
    parser.add_argument(
        "--table", type=Path, help="print the Markdown table of a study's JSON lines and exit"
    )
    args = parser.parse_args()
    if args.table is not None:
        print(table(args.table.read_text().splitlines()))
        return
    if args.out is None:
        parser.error("--out is required to run the study")
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "STACKGAN_HOME": str(out / "home"), "OMP_NUM_THREADS": "1"}
    env.setdefault("PYTHONUNBUFFERED", "1")
    prepare(out / "home", env)
    regimes = args.regimes.split(",")
    unknown = [name for name in regimes if name not in REGIMES]
    if unknown:
        parser.error(f"unknown regimes: {', '.join(unknown)}")
    damsm = prepare_damsm(out / "home", args.damsm_epochs, env) if uses_damsm(regimes) else {}
    machine = {
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "threads_per_run": 1,
        "parallel": args.parallel,
        "cpu_seconds": args.cpu_seconds,
        "load": os.getloadavg(),
        **damsm,
    }
    print(json.dumps(machine), flush=True)
    jobs = [(name, int(seed)) for seed in args.seeds.split(",") for name in regimes]
    with ThreadPoolExecutor(max_workers=args.parallel) as pool:
        futures = [
            pool.submit(study_one, n, s, args.cpu_seconds, out, env, damsm.get("damsm"))
            for n, s in jobs
        ]
        for future in futures:
            print(json.dumps(future.result()), flush=True)


if __name__ == "__main__":
    main()
