"""End-to-end latency of ``stackgan generate "..." -n 8`` with a birds-width Stage-I file.

Writes a Stage-I generator file at the official birds widths (random weights) with a text
encoder (the real architecture, trained for one epoch on a few synthetic captions, since only
its size matters here), then runs the CLI as a fresh process several times on the CPU and
prints one JSON object: the median, min and max wall seconds, process start included. The
issue's budget is 5 s on CI's 2-core CPU. ``import_torch_s`` (a bare ``import torch`` in a
fresh process) and the load average show how much of the time is the interpreter and the
machine rather than generation; ``median_cpu_s`` (user + system seconds of the CLI process)
is less sensitive to other processes than the wall time.

Then (unless ``--phases 0``) it runs the same command as many times again under a small driver
(``_PHASE_DRIVER``, a fresh interpreter like the CLI) that wraps the library's steps with
timers and reports each phase's own milliseconds (nested phases are subtracted from their
callers, so the phases add up to the whole run): process start, the imports, the command-line
parsing, ``torch.load``, building the networks, text encoding, the forward pass, the PNGs,
interpreter exit. ``phases_ms`` holds the medians; ``phase_modules`` names notable modules
first imported inside a phase (e.g. ``torch._dynamo`` while building a generator);
``forward_warm_ms`` is the same forward run once more after the command, so ``forward``
minus it is the first-call set-up (oneDNN primitives, thread pool). A phase whose function
the package no longer has is listed in ``phases_missing``. Run against another copy of the
package with ``PYTHONPATH=/that/copy``.

    python benchmarks/generate_latency.py [--repeats 5] [--samples 8] [--phases 5]
"""

from __future__ import annotations

import argparse
import inspect
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
NOTABLE_MODULES = (
    "torch._dynamo",
    "sympy",
    "triton",
    "pydantic",
    "numpy",
    "PIL.Image",
    "PIL.GifImagePlugin",
    "PIL.PngImagePlugin",
    "torchvision",
    "torch_fidelity",
    "scipy",
    "stackgan_cli.text",
    "stackgan_cli.training",
    "stackgan_cli.serve",
    "stackgan_cli.evaluation",
    "stackgan_cli.data",
)

# Run as ``python -c _PHASE_DRIVER OUT_JSON SPAWN_EPOCH_S NOTABLE CLI_ARGS...``: the CLI in a
# fresh interpreter, with timers around its steps. Kept free of imports beyond the standard
# library before the first phase so that the import phases are the CLI's own.
_PHASE_DRIVER = r"""
import json, os, sys, time
started = time.time()
out_path, spawn, notable = sys.argv[1], float(sys.argv[2]), sys.argv[3].split(",")
cli_args = sys.argv[4:]
own = {}  # phase -> exclusive ms
modules = {}  # phase -> notable modules first imported in it
stack = []  # [phase, start, child ms]
missing = []
last_forward = []


def enter(name):
    stack.append([name, time.perf_counter(), 0.0, set(sys.modules)])


def leave():
    name, start, children, before = stack.pop()
    total = (time.perf_counter() - start) * 1000
    own[name] = own.get(name, 0.0) + total - children
    if stack:
        stack[-1][2] += total
    new = [m for m in notable if m in sys.modules and m not in before]
    if new:
        modules.setdefault(name, []).extend(m for m in new if m not in modules.get(name, []))
        for outer in stack:  # attributed to the innermost phase only
            outer[3].update(new)


def wrap(owner, attributes, name, after=None):
    # The first of ``attributes`` (one name or several spellings) that ``owner`` has.
    attributes = (attributes,) if isinstance(attributes, str) else attributes
    attribute = next((a for a in attributes if getattr(owner, a, None) is not None), None)
    if attribute is None:
        missing.append(f"{getattr(owner, '__name__', owner)}.{'|'.join(attributes)}")
        return
    original = getattr(owner, attribute)

    def timed(*args, **kwargs):
        enter(name)
        try:
            result = original(*args, **kwargs)
        finally:
            leave()
        return after(result) if after is not None else result

    setattr(owner, attribute, timed)


def time_forward(bundle):
    # Time the loaded generator's own forward, wherever the library calls it from.
    net = getattr(bundle, "generator", None)
    if net is None:
        missing.append("GeneratorBundle.generator")
        return bundle
    original = net.forward

    def timed_forward(*args, **kwargs):
        last_forward[:] = [original, args, kwargs]
        enter("forward")
        try:
            return original(*args, **kwargs)
        finally:
            leave()

    net.forward = timed_forward
    return bundle


own["process_start"] = (started - spawn) * 1000
enter("import_cli (typer, rich, command modules)")
import stackgan_cli.cli as cli
leave()
enter("import_torch")
import torch
leave()
enter("import_generate (rest: numpy, PIL, models)")
import stackgan_cli.generate as G
leave()
import stackgan_cli.generator_file as GF

wrap(cli, "main", "cli_parse_and_print (typer, pydantic)")
wrap(G, "generate", "generate_other (checks, noise, messages)")
wrap(G, "normalize_prompts", "normalize_prompts (imports text package)")
wrap(G, "pick_device", "pick_device")
wrap(G, "load_generator_file", "load_other (.to(device).eval(), checks)", after=time_forward)
wrap(torch, "load", "torch_load (file read)")
wrap(GF, "empty_module", "build_generator (meta device + init_weights)")
wrap(GF, "assign_state_dict", "assign_generator_weights")
wrap(GF, "text_encoder_from_dict", "build_text_encoder (from_dict)")
wrap(G, "encode_prompts", "encode_prompts")
wrap(G, "run_generator", "run_generator_other (channels_last, batching)")
wrap(G, "_write_samples", "write_other (paths, layout)")
wrap(G, ("to_uint8", "to_pixels"), "to_uint8")
wrap(G, "save_png", "save_png (PIL plugins, encode, fsync)")
wrap(G, "captioned_grid", "captioned_grid (font, text layout)")



def finish(code):
    # The warm forward and the report; then the exit, timed by the parent.
    warm = None
    if last_forward:
        forward, args, kwargs = last_forward
        start = time.perf_counter()
        with torch.inference_mode():
            forward(*args, **kwargs)
        warm = (time.perf_counter() - start) * 1000
    with open(out_path, "w") as handle:
        json.dump(
            {"own_ms": own, "modules": modules, "missing": missing, "forward_warm_ms": warm,
             "finished": time.time(), "code": code}, handle)


hard_exit = os._exit


def reported_exit(code):
    # A CLI that skips the interpreter's teardown with os._exit still gets its report.
    while stack:
        leave()
    finish(code)
    hard_exit(code)


os._exit = reported_exit
code = 0
sys.argv = ["stackgan", *cli_args]
try:
    cli.main()
except SystemExit as stop:
    code = stop.code or 0
finish(code)
sys.exit(code)
"""
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


def run_command(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Wall seconds and CPU seconds (user + system) of one run of ``command`` (which must
    succeed)."""
    before = os.times()
    start = time.perf_counter()
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seconds = time.perf_counter() - start
    after = os.times()
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr.decode(errors='replace')}")
    cpu = (after.children_user - before.children_user) + (
        after.children_system - before.children_system
    )
    return seconds, cpu


def time_command(command: list[str], env: dict[str, str]) -> float:
    """Wall seconds of one run of ``command`` (which must succeed)."""
    return run_command(command, env)[0]


def time_phases(cli_args: list[str], env: dict[str, str], out: Path) -> dict:
    """One instrumented run of the CLI (see ``_PHASE_DRIVER``): its phases in ms, the process
    exit included, plus the notable modules each phase imported."""
    spawn = time.time()
    command = [sys.executable, "-c", _PHASE_DRIVER, str(out), repr(spawn)]
    command += [",".join(NOTABLE_MODULES), *cli_args]
    done = subprocess.run(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ended = time.time()
    if done.returncode != 0 or not out.exists():
        sys.exit(f"the phase driver failed:\n{done.stderr.decode(errors='replace')}")
    report = json.loads(out.read_text())
    out.unlink()
    report["own_ms"]["interpreter_exit"] = (ended - report["finished"]) * 1000
    report["wall_ms"] = (ended - spawn) * 1000
    return report


def summarize_phases(reports: list[dict]) -> dict:
    """Median ms per phase over the runs (a phase missing from a run counts as 0)."""
    names = list(dict.fromkeys(name for report in reports for name in report["own_ms"]))
    phases = {
        name: round(statistics.median(r["own_ms"].get(name, 0.0) for r in reports), 1)
        for name in names
    }
    warm = [r["forward_warm_ms"] for r in reports if r["forward_warm_ms"] is not None]
    modules: dict[str, list[str]] = {}
    for report in reports:
        for phase, found in report["modules"].items():
            modules.setdefault(phase, [])
            modules[phase] += [m for m in found if m not in modules[phase]]
    walls = [r["wall_ms"] for r in reports]
    return {
        "phases_ms": dict(sorted(phases.items(), key=lambda item: -item[1])),
        "phases_sum_ms": round(sum(phases.values()), 1),
        "instrumented_median_s": round(statistics.median(walls) / 1000, 3),
        "forward_warm_ms": round(statistics.median(warm), 1) if warm else None,
        "phase_modules": modules,
        "phases_missing": sorted({m for r in reports for m in r["missing"]}),
        "phase_repeats": len(reports),
    }


def main() -> None:
    """Build the file, time the runs, print JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--samples", type=int, default=8)
    parser.add_argument(
        "--phases", type=int, default=None, help="Instrumented runs (default: --repeats; 0: none)."
    )
    args = parser.parse_args()
    phase_runs = args.repeats if args.phases is None else args.phases

    cfg = ModelConfig.preset("birds")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        torch.manual_seed(0)
        encoder = text_encoder_dict(cfg.text_dim)
        ckpt = root / "stage1_birds.pt"
        # The package's refactor names the network by ``family`` where it used to take
        # ``stage``; accept either, so the benchmark runs on both sides of it.
        which = (
            {"family": "v1-stage1"}
            if "family" in inspect.signature(save_generator_file).parameters
            else {"stage": 1}
        )
        save_generator_file(
            ckpt, Stage1Generator(cfg), cfg, **which, text_encoder=encoder, dataset=None, epoch=0
        )
        cli_args = ["generate", PROMPT]
        cli_args += ["-n", str(args.samples), "--ckpt", str(ckpt), "--seed", "0"]
        cli_args += ["--device", "cpu", "--out", str(root / "samples")]
        if encoder is None:
            embedding = root / "embedding.npy"
            np.save(embedding, np.random.default_rng(0).standard_normal(cfg.text_dim, "float32"))
            cli_args += ["--embedding-file", str(embedding)]
        command = [sys.executable, "-m", "stackgan_cli", *cli_args]
        env = {**os.environ, "STACKGAN_HOME": str(root / "home")}
        load_before = os.getloadavg()[0]
        time_command(command, env)  # warm the page cache: the first run reads every file
        runs = [run_command(command, env) for _ in range(args.repeats)]
        times = [wall for wall, _ in runs]
        import_torch = time_command([sys.executable, "-c", "import torch"], env)
        python_start = time_command([sys.executable, "-c", "pass"], env)
        phases = [time_phases(cli_args, env, root / "phases.json") for _ in range(phase_runs)]
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
                "median_cpu_s": round(statistics.median(cpu for _, cpu in runs), 3),
                "import_torch_s": round(import_torch, 3),
                "python_start_s": round(python_start, 3),
                "text_encoder": encoder is not None,
                "generator_file_mb": round(file_mb, 1),
                "repeats": args.repeats,
                "cpus": os.cpu_count(),
                "loadavg_1min_before": round(load_before, 2),
                "loadavg_1min": round(os.getloadavg()[0], 2),
                "torch": torch.__version__,
                "torch_threads": torch.get_num_threads(),
                **(summarize_phases(phases) if phases else {}),
            }
        )
    )


if __name__ == "__main__":
    main()
