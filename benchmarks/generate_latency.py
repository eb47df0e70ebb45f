"""End-to-end latency of ``stackgan generate "..." -n 8`` with a birds-width Stage-I file.

Writes a Stage-I generator file at the official birds widths (random weights) with a text
encoder (the real architecture, trained for one epoch on a few synthetic captions, since only
its size matters here), then runs the CLI as a fresh process several times on the CPU and
prints one JSON object: the median, min and max wall seconds, process start included. The
issue's budget is 5 s on CI's 2-core CPU. ``import_torch_s`` (a bare ``import torch`` in a
fresh process) and the load average show how much of the time is the interpreter and the
machine rather than generation.

    python benchmarks/generate_latency.py [--repeats 5] [--samples 8]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from stackgan_cli.generator_file import save_generator_file
from stackgan_cli.models import ModelConfig, Stage1Generator

BUDGET_S = 5.0
PROMPT = "a small red bird with black wings and a short pointed beak"
COLOURS = ("red", "blue", "yellow", "brown", "white", "black", "grey", "green")
PARTS = ("wings", "belly", "crown", "breast", "tail", "beak")


def synthetic_captions(count: int) -> list[str]:
    """Bird-like captions, enough to train a text encoder for one epoch."""
    return [
        f"this bird has {COLOURS[i % len(COLOURS)]} {PARTS[i % len(PARTS)]} and a "
        f"{COLOURS[(i * 3 + 1) % len(COLOURS)]} {PARTS[(i * 5 + 2) % len(PARTS)]}"
        for i in range(count)
    ]


def text_encoder_dict(text_dim: int) -> dict | None:
    """A default-size text encoder's ``to_dict()``, or None if the text package lacks one."""
    try:
        from stackgan_cli.text import train_text_encoder
    except ImportError:
        return None
    # 40 "images" with 2 captions each: the layout of a prepared dataset's splits.
    captions = synthetic_captions(80)
    per_image = [captions[i : i + 2] for i in range(0, len(captions), 2)]
    generator = torch.Generator().manual_seed(0)
    embeddings = torch.randn(len(per_image), 2, text_dim, generator=generator)
    encoder, _ = train_text_encoder(
        per_image[:30], embeddings[:30], per_image[30:], embeddings[30:], epochs=1, progress=False
    )
    return encoder.to_dict()


def time_command(command: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one run of ``command`` (which must succeed)."""
    start = time.perf_counter()
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr.decode(errors='replace')}")
    return seconds


def main() -> None:
    """Build the file, time the runs, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--samples", type=int, default=8)
    args = parser.parse_args()

    cfg = ModelConfig.preset("birds")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        torch.manual_seed(0)
        encoder = text_encoder_dict(cfg.text_dim)
        ckpt = root / "stage1_birds.pt"
        save_generator_file(
            ckpt, Stage1Generator(cfg), cfg, stage=1, text_encoder=encoder, dataset=None, epoch=0
        )
        command = [sys.executable, "-m", "stackgan_cli", "generate", PROMPT]
        command += ["-n", str(args.samples), "--ckpt", str(ckpt), "--seed", "0"]
        command += ["--device", "cpu", "--out", str(root / "samples")]
        if encoder is None:
            embedding = root / "embedding.npy"
            np.save(embedding, np.random.default_rng(0).standard_normal(cfg.text_dim, "float32"))
            command += ["--embedding-file", str(embedding)]
        env = {**os.environ, "STACKGAN_HOME": str(root / "home")}
        time_command(command, env)  # warm the page cache: the first run reads every file
        times = [time_command(command, env) for _ in range(args.repeats)]
        import_torch = time_command([sys.executable, "-c", "import torch"], env)
        file_mb = ckpt.stat().st_size / 2**20
    median = statistics.median(times)
    print(
        json.dumps(
            {
                "benchmark": "generate_latency",
                "command": f'stackgan generate "..." -n {args.samples} (Stage-I, birds widths)',
                "median_s": round(median, 3),
                "min_s": round(min(times), 3),
                "max_s": round(max(times), 3),
                "budget_s": BUDGET_S,
                "within_budget": median < BUDGET_S,
                "import_torch_s": round(import_torch, 3),
                "text_encoder": encoder is not None,
                "generator_file_mb": round(file_mb, 1),
                "repeats": args.repeats,
                "cpus": os.cpu_count(),
                "loadavg_1min": round(os.getloadavg()[0], 2),
                "torch": torch.__version__,
            }
        )
    )


if __name__ == "__main__":
    main()
