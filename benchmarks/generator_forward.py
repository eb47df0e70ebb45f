"""CPU forward time of the birds-width generators (eval mode, no grad).

Stage-I G at batch 16 and Stage-II G at batch 4, as in stackgan-pytorch-spec.md section 9, which
measured the
official code at about 0.33-0.41 s and 0.96 s on an idle 2-core machine. Prints one JSON
object per stage. ``cpu_wall_ratio`` (process CPU time / wall time) shows contention: close to
the thread count on an idle machine, close to 1 or below when other processes share the CPU.

    python benchmarks/generator_forward.py [--repeats 5] [--warmup 2] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch

from stackgan_cli.models import ModelConfig, Stage1Generator, Stage2Generator

# Official generator-only figures from stackgan-pytorch-spec.md section 9 (seconds per forward).
OFFICIAL_SECONDS = {1: "0.33-0.41", 2: "0.96"}


def time_generator(stage: int, batch: int, cfg: ModelConfig, repeats: int, warmup: int) -> dict:
    """Median wall time of ``repeats`` eval-mode forwards after ``warmup`` untimed ones."""
    torch.manual_seed(0)
    generator = (Stage1Generator if stage == 1 else Stage2Generator)(cfg).eval()
    text = torch.randn(batch, cfg.text_dim)
    noise = torch.randn(batch, cfg.z_dim)
    times = []
    with torch.inference_mode():
        for _ in range(warmup):
            generator(text, noise)
        cpu_start, wall_start = time.process_time(), time.perf_counter()
        for _ in range(repeats):
            start = time.perf_counter()
            generator(text, noise)
            times.append(time.perf_counter() - start)
        cpu, wall = time.process_time() - cpu_start, time.perf_counter() - wall_start
    median = statistics.median(times)
    return {
        "benchmark": "generator_forward",
        "stage": stage,
        "preset": "birds",
        "batch": batch,
        "median_s": round(median, 4),
        "min_s": round(min(times), 4),
        "max_s": round(max(times), 4),
        "images_per_s": round(batch / median, 2),
        "official_s": OFFICIAL_SECONDS[stage],
        "cpu_wall_ratio": round(cpu / wall, 2),
        "threads": torch.get_num_threads(),
        "repeats": repeats,
        "torch": torch.__version__,
    }


def main() -> None:
    """Parse the options, time both generators and print their JSON lines."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed forwards per stage")
    parser.add_argument("--warmup", type=int, default=2, help="untimed forwards first")
    parser.add_argument("--threads", type=int, default=os.cpu_count(), help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = ModelConfig.preset("birds")
    for stage, batch in ((1, 16), (2, 4)):
        print(json.dumps(time_generator(stage, batch, cfg, args.repeats, args.warmup)), flush=True)


if __name__ == "__main__":
    main()
