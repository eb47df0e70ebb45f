"""Training throughput: full StackGAN iterations at birds widths, as JSON.

One iteration = G forward, D step on real / wrong / fake, G step with the KL term: what
``stackgan train`` does per batch. ``--official`` runs the iteration the way the official
StackGAN-Pytorch trainer writes it (NCHW, the default for-loop Adam, D weight gradients
computed in the G step, float32, data as ready-made tensors), so speed-ups are measured on the
same machine. Without it the training defaults run: the parts ``stackgan train`` trains
with, built by ``stackgan_cli.training.assembly.build_training_parts`` (the means as its
``Execution``) from the official iteration's initial weights, and the device-resident
sampler of ``build_sampler`` over random data. Prints one JSON object: images/s and seconds
per iteration (median of the timed steps after warm-up), peak memory, FLOPs per iteration and
achieved FLOP/s (MFU on GPUs with a known peak), torch version, device name and process CPU
time over wall time (about the thread count on an idle CPU; near 1 when other processes
compete).

``--ablate`` measures the official iteration, then each means alone on top of it, then all of
them together (the training default) and with ``torch.compile``; one JSON line each, every
configuration in a fresh process (clean peak-memory figures and compile caches).

    python benchmarks/train_throughput.py --stage 1 --batch-size 16 --steps 8
    python benchmarks/train_throughput.py --stage 2 --device cuda --batch-size 64 --ablate

``--arch v2`` measures StackGAN-v2 at the birds widths (``ModelConfig.preset("birds-v2")``,
``--branches`` 3, batch 4 by default): the official StackGAN-v2 iteration restated around our
networks (``--official``) or the parts ``stackgan train --arch v2`` builds
(``build_training_parts``, benchmarks/v2_bench.py). ``--compare`` runs the official iteration
and the training default alternately, ``--rounds`` times each, every run in a fresh process
from the same initial weights, then prints a summary line with the speed-up.

    python benchmarks/train_throughput.py --arch v2 --compare --rounds 2 --steps 6
    python benchmarks/train_throughput.py --arch v2 --device cuda --batch-size 24 --compare

``--arch attngan`` measures AttnGAN at the birds widths (``ModelConfig.preset("birds-attngan")``,
``--branches`` 3, batch 4 by default, a random DAMSM made in a temporary folder): the official
AttnGAN iteration restated around our networks (``--official``) or the parts ``stackgan train
--arch attngan`` builds (benchmarks/attngan_bench.py). ``--breakdown`` adds the time of each part
of the iteration (text encoder, G forward, each D step, the G step's parts with the DAMSM image
encoder's forward and backward apart); ``--profile`` torch.profiler's top operators;
``--experiment NAME`` a monkeypatched variant of the frozen image encoder (or of G's memory
format), for a measurement only (with ``--compare``: a third configuration, the training
default with it).

    python benchmarks/train_throughput.py --arch attngan --compare --rounds 2 --steps 3 --breakdown
    python benchmarks/train_throughput.py --arch attngan --branches 1 --official --steps 3
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, replace

import torch

from stackgan_cli.data.batch import Batch
from stackgan_cli.families import family_for_training
from stackgan_cli.models import ModelConfig, build_discriminator, build_generator
from stackgan_cli.models.config import IMAGE_SIZE
from stackgan_cli.models.losses import discriminator_loss, generator_loss, kl_loss
from stackgan_cli.training.assembly import Execution, TrainingParts, build_training_parts
from stackgan_cli.training.config import TrainConfig
from stackgan_cli.training.step import make_optimizers

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import attngan_bench  # noqa: E402  (benchmarks/attngan_bench.py)
import v2_bench  # noqa: E402  (benchmarks/v2_bench.py)

# stackgan-pytorch-spec.md section 9's CPU measurements of the official code
DEFAULT_BATCH = {1: 16, 2: 4}
V2_DEFAULT_BATCH = 4  # StackGAN-v2, 3 branches (256 px) on the CPU
ATTNGAN_DEFAULT_BATCH = 4  # AttnGAN, 3 branches, on the CPU (the recipe's 20 by --batch-size)
OFFICIAL_CPU_IMAGES_PER_S = {1: 9.5, 2: 0.48}  # stackgan-pytorch-spec.md section 9, idle 2-core CPU
# Dense peak FLOP/s by GPU name fragment: (bf16 tensor cores, TF32 tensor cores).
PEAK_FLOPS = {"H100": (989.4e12, 494.7e12), "H200": (989.4e12, 494.7e12), "A100": (312e12, 156e12)}


@dataclass
class Means:
    """What an iteration uses; ``official`` runs the official trainer's iteration instead."""

    official: bool = False
    channels_last: bool = False
    fused_adam: bool = False
    freeze_d: bool = False  # no D weight gradients in the G step
    fused_upsample: bool = False  # G's upsample + conv3x3 at the input resolution
    gemm_convs: bool = False  # the widest convolutions as matrix products (CPU)
    sampler: bool = False  # device-resident uint8 data with on-device crop/flip/caption
    amp: bool = False  # bf16 autocast (CUDA only)
    cudnn_benchmark: bool = False  # CUDA only
    compile: bool = False
    compile_mode: str | None = None


def training_default(device: str) -> Means:
    """What ``stackgan train`` uses on ``device`` (without --compile)."""
    cuda = device == "cuda"
    return Means(
        channels_last=cuda,
        fused_adam=True,
        fused_upsample=True,
        gemm_convs=not cuda,
        freeze_d=True,
        sampler=True,
        amp=cuda,
        cudnn_benchmark=cuda,
    )


def ablation_plan(device: str) -> list[tuple[str, Means]]:
    """The official iteration, each means alone on it, all of them, all + compile variants."""
    base = Means()
    single = ["channels_last", "fused_adam", "freeze_d", "fused_upsample", "sampler"]
    if device == "cpu":
        single.append("gemm_convs")
    if device == "cuda":
        single += ["amp"]
    # The official trainer sets cudnn.benchmark itself (stackgan-pytorch-spec.md 5).
    plan = [("official", replace(base, official=True, cudnn_benchmark=device == "cuda"))]
    plan += [(f"+{name}", replace(base, **{name: True})) for name in single]
    default = training_default(device)
    plan.append(("training_default", default))
    flipped = not default.channels_last
    plan.append(
        (
            f"training_default{'+' if flipped else '-'}channels_last",
            replace(default, channels_last=flipped),
        )
    )
    if device == "cuda":
        plan.append(("training_default-cudnn_benchmark", replace(default, cudnn_benchmark=False)))
    plan.append(("training_default+compile", replace(default, compile=True)))
    if device == "cuda":
        plan.append(
            (
                "training_default+compile(max-autotune-no-cudagraphs)",
                replace(default, compile=True, compile_mode="max-autotune-no-cudagraphs"),
            )
        )
        plan.append(
            (
                "training_default+compile(reduce-overhead: CUDA graphs)",
                replace(default, compile=True, compile_mode="reduce-overhead"),
            )
        )
    return plan


def official_iteration(netG, netD, opt_g, opt_d, real, text, noise, stage, kl_coeff=2.0):
    """The official trainer's iteration (trainer.py): D weight gradients are computed in the G
    step too, and ``zero_grad`` clears them before the next D step."""
    noise.normal_(0, 1)
    _, fake, mu, logvar = netG(text, noise)
    netD.zero_grad()
    err_d, _ = discriminator_loss(netD, real, fake.detach(), mu.detach(), stage=stage)
    err_d.backward()
    opt_d.step()
    netG.zero_grad()
    err_g = generator_loss(netD, fake, mu.detach(), stage=stage)
    (err_g + kl_coeff * kl_loss(mu, logvar)).backward()
    opt_g.step()


def train_config(stage: int, batch: int) -> TrainConfig:
    """The StackGAN-v1 birds recipe (``stackgan train --stage N``): Adam 2e-4 (0.5, 0.999),
    BCE, KL x 2, no average: what the official iteration above does."""
    cfg = TrainConfig.for_arch("v1", stage=stage, batch_size=batch)
    recipe = (cfg.lr_g, cfg.lr_d, cfg.kl_coeff, cfg.loss, cfg.optimizer, cfg.ema)
    assert recipe == (2e-4, 2e-4, 2.0, "bce", "adam", 0.0), recipe
    return cfg


def seeded_stage1_state(cfg: ModelConfig) -> dict[str, torch.Tensor]:
    """The nested Stage-I generator's weights in ``build_generator(2, cfg)`` after
    ``torch.manual_seed(0)``: Stage II built from them starts where the official one does."""
    torch.manual_seed(0)
    return build_generator(2, cfg).STAGE1_G.state_dict()


def build_parts(
    stage: int, batch: int, device: torch.device, execution: Execution, cfg: ModelConfig
) -> TrainingParts:
    """What ``stackgan train --stage N`` trains (``build_training_parts``), from the weights
    the official iteration starts from (``torch.manual_seed(0)``, then G, then D)."""
    train_cfg = train_config(stage, batch)
    family = family_for_training(train_cfg, cfg)
    stage1_state = seeded_stage1_state(cfg) if stage == 2 else None
    torch.manual_seed(0)
    return build_training_parts(train_cfg, family, device, execution, stage1_state=stage1_state)


class Bench:
    """Networks, optimizers, data and one callable iteration for a configuration."""

    def __init__(self, stage: int, batch: int, device: torch.device, means: Means, cfg) -> None:
        self.stage, self.batch, self.device, self.means = stage, batch, device, means
        size = IMAGE_SIZE[stage]
        if means.official:
            torch.manual_seed(0)
            if device.type == "cuda":
                torch.backends.cudnn.benchmark = means.cudnn_benchmark
            self.netG = build_generator(stage, cfg).to(device).train()
            self.netD = build_discriminator(stage, cfg).to(device).train()
            self.opt_g, (self.opt_d,) = make_optimizers(
                self.netG, [self.netD], lr_g=2e-4, lr_d=2e-4, device=device, fused=False
            )
            self.real = torch.rand(batch, 3, size, size, device=device) * 2 - 1
            self.text = torch.randn(batch, cfg.text_dim, device=device)
            self.noise = torch.empty(batch, cfg.z_dim, device=device)
            self.iteration = lambda: official_iteration(
                self.netG, self.netD, self.opt_g, self.opt_d, self.real, self.text,
                self.noise, stage,
            )  # fmt: skip
            return
        self.parts = parts = build_parts(stage, batch, device, v2_bench.execution(means), cfg)
        if device.type == "cuda":  # build_training_parts turns it on; the means may not
            torch.backends.cudnn.benchmark = means.cudnn_benchmark
        self.netG, (self.netD,) = parts.netG, parts.netDs
        self.opt_g, step = parts.opt_g, parts.step
        if means.sampler:
            sampler = v2_bench.synthetic_sampler(parts.family, batch, device, means.channels_last)
            self.iteration = lambda: step(sampler.next_batch())
        else:
            real = torch.rand(batch, 3, size, size, device=device) * 2 - 1
            if means.channels_last:
                real = real.contiguous(memory_format=torch.channels_last)
            text = torch.randn(batch, cfg.text_dim, device=device)
            ready = Batch(images=real, text=text)
            self.iteration = lambda: step(ready)


def count_flops(stage: int, batch: int, cfg: ModelConfig, device: torch.device) -> float:
    """Model FLOPs of one iteration: the official maths without the D weight gradients of the
    G step (not needed) and with G's upsampling convolutions unfused (the fused ones compute
    the same with fewer operations; MFU counts the model's FLOPs), counted from the layer
    shapes by torch's FlopCounterMode. On the CPU it runs a batch of 2
    and scales: every counted operator (convolutions, matrix products) is linear in the batch.
    """
    from torch.utils.flop_counter import FlopCounterMode

    counted = batch if device.type == "cuda" else 2
    train_cfg = train_config(stage, counted)
    family = family_for_training(train_cfg, cfg)
    # Stage II: any Stage-I weights (they do not change the count)
    stage1_state = build_generator(1, cfg).state_dict() if stage == 2 else None
    plain = Execution(fused_upsample=False, gemm_convs=False, freeze_d_for_g_step=True)
    parts = build_training_parts(train_cfg, family, device, plain, stage1_state=stage1_state)
    size = IMAGE_SIZE[stage]
    real = torch.rand(counted, 3, size, size, device=device) * 2 - 1
    text = torch.randn(counted, cfg.text_dim, device=device)
    with FlopCounterMode(display=False) as counter:
        parts.step(Batch(images=real, text=text))
    return float(counter.get_total_flops()) * batch / counted


def peak_flops(device: torch.device, amp: bool, override_tflops: float | None) -> float | None:
    if override_tflops:
        return override_tflops * 1e12
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    for fragment, (bf16, tf32) in PEAK_FLOPS.items():
        if fragment in name:
            return bf16 if amp else tf32
    return None


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return platform.processor() or platform.machine()


def measure(args, means: Means, name: str) -> dict:
    """Time ``args.steps`` iterations after ``args.warmup`` and describe the result."""
    device = torch.device(args.device)
    v2 = args.arch == "v2"
    attngan = args.arch == "attngan"
    tree = v2 or attngan  # --branches, no --stage
    clock = None
    if v2:
        bench = v2_bench.BenchV2(args.branches, args.batch_size, device, means, args.init_state)
    elif attngan:
        default = means == training_default(args.device)
        bench = attngan_bench.BenchAttnGAN(
            args.branches, args.batch_size, device, means, args.init_state, args.damsm,
            execution=None if default else v2_bench.execution(means),
            experiment=args.experiment,
        )  # fmt: skip
        if args.breakdown:
            clock = attngan_bench.PhaseClock(bench)
    else:
        cfg = ModelConfig.preset("birds")
        bench = Bench(args.stage, args.batch_size, device, means, cfg)
    cuda = device.type == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for _ in range(args.warmup):
        bench.iteration()
    if cuda:
        torch.cuda.synchronize(device)
    warmup_s = time.perf_counter() - start

    times, cpu_times = [], []
    cpu_start, wall_start = time.process_time(), time.perf_counter()
    if cuda:
        events = [torch.cuda.Event(enable_timing=True) for _ in range(args.steps + 1)]
        events[0].record()
        for k in range(args.steps):
            bench.iteration()
            events[k + 1].record()
        torch.cuda.synchronize(device)
        times = [events[k].elapsed_time(events[k + 1]) / 1000 for k in range(args.steps)]
    else:
        run_one = (lambda: clock.run(bench.iteration)) if clock else bench.iteration
        for _ in range(args.steps):
            t0, c0 = time.perf_counter(), time.process_time()
            run_one()
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
    cpu, wall = time.process_time() - cpu_start, time.perf_counter() - wall_start
    if cuda and clock:  # the parts' marks need host-side timing
        for _ in range(args.steps):
            clock.run(bench.iteration)
            torch.cuda.synchronize(device)
    profile = attngan_bench.profile_top(bench.iteration) if attngan and args.profile else None

    median = statistics.median(times)
    if cuda:
        peak_mb = torch.cuda.max_memory_allocated(device) / 2**20
    else:  # ru_maxrss is in kilobytes on Linux: the process's resident peak
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if v2:
        flops = v2_bench.count_flops_v2(args.branches, args.batch_size, device)
    elif attngan:
        flops = attngan_bench.count_flops_attngan(
            args.branches, args.batch_size, device, args.damsm, args.init_state
        )
    else:
        flops = count_flops(args.stage, args.batch_size, cfg, device)
    achieved = flops / median if flops else None
    peak = peak_flops(device, means.amp, args.peak_tflops)
    result = {
        "benchmark": "train_throughput",
        "config": name,
        "arch": args.arch,
        "stage": None if tree else args.stage,
        "branches": args.branches if tree else None,
        "batch_size": args.batch_size,
        "device": device.type,
        "device_name": device_name(device),
        "images_per_s": round(args.batch_size / median, 3),
        "seconds_per_iter": round(median, 5),
        "seconds_per_iter_min": round(min(times), 5),
        "seconds_per_iter_max": round(max(times), 5),
        "warmup_seconds": round(warmup_s, 3),
        "steps": args.steps,
        "warmup": args.warmup,
        "peak_memory_mb": round(peak_mb, 1),
        "flops_per_iter": flops,
        "achieved_tflops": round(achieved / 1e12, 4) if achieved else None,
        "mfu": round(achieved / peak, 4) if achieved and peak else None,
        "process_cpu_over_wall": round(cpu / wall, 3),
        # CPU only: process CPU seconds per iteration (median), a contention-robust proxy
        # when OMP_WAIT_POLICY=PASSIVE keeps waiting threads from spinning
        "cpu_seconds_per_iter": round(statistics.median(cpu_times), 5) if cpu_times else None,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "means": asdict(means),
    }
    if attngan:
        result["experiment"] = args.experiment
        if clock:
            result["parts"] = clock.summary()
        if profile:
            result["profile_top"] = profile
    if not tree and not cuda and args.batch_size == DEFAULT_BATCH[args.stage]:
        official = OFFICIAL_CPU_IMAGES_PER_S[args.stage]
        result["official_cpu_images_per_s_spec9"] = official
        result["speedup_vs_spec9"] = round(result["images_per_s"] / official, 3)
    return result


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--arch", choices=("v1", "v2", "attngan"), default="v1")
    parser.add_argument("--stage", type=int, choices=(1, 2), default=1, help="v1 only")
    parser.add_argument(
        "--branches", type=int, choices=(1, 2, 3), default=3, help="v2 and attngan only"
    )
    parser.add_argument("--batch-size", type=int, default=None, help="default 16 / 4; v2 4")
    parser.add_argument("--device", choices=("cpu", "cuda"), default=None)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--official", action="store_true", help="the official iteration")
    parser.add_argument("--ablate", action="store_true", help="every means one by one")
    parser.add_argument(
        "--compare", action="store_true", help="official vs training default, alternating"
    )
    parser.add_argument("--rounds", type=int, default=2, help="--compare: runs of each")
    parser.add_argument(
        "--init-state", default=None, help="v2, attngan: initial weights (saved by --compare)"
    )
    parser.add_argument("--damsm", default=None, help="attngan: a DAMSM file (default: random)")
    parser.add_argument(
        "--experiment",
        choices=attngan_bench.EXPERIMENTS,
        default=None,
        help="attngan: a monkeypatched training default, for a measurement (attngan_bench.py)",
    )
    parser.add_argument("--breakdown", action="store_true", help="attngan: time of each part")
    parser.add_argument("--profile", action="store_true", help="attngan: top operators")
    parser.add_argument("--peak-tflops", type=float, default=None, help="for the MFU figure")
    flags = (
        "compile",
        "channels-last",
        "amp",
        "fused-adam",
        "freeze-d",
        "fused-upsample",
        "gemm-convs",
        "sampler",
    )
    for flag in flags:
        parser.add_argument(f"--{flag}", action=argparse.BooleanOptionalAction, default=None)
    parser.add_argument("--compile-mode", default=None)
    parser.add_argument("--means-json", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--name", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.arch == "v2":
        args.batch_size = args.batch_size or V2_DEFAULT_BATCH
    if args.arch == "attngan":
        args.batch_size = args.batch_size or ATTNGAN_DEFAULT_BATCH
        if args.batch_size < 2:
            parser.error("--arch attngan: --batch-size must be >= 2 (wrong pairs)")
    elif args.experiment or args.breakdown or args.profile:
        parser.error("--experiment, --breakdown and --profile go with --arch attngan")
    args.batch_size = args.batch_size or DEFAULT_BATCH[args.stage]
    if args.steps < 1 or args.warmup < 0:
        parser.error("--steps must be >= 1 and --warmup >= 0")
    return args


def chosen_means(args) -> tuple[str, Means]:
    if args.means_json:
        return args.name, Means(**json.loads(args.means_json))
    if args.official:
        return "official", Means(official=True, cudnn_benchmark=args.device == "cuda")
    means = training_default(args.device)
    overrides = {
        "compile": args.compile,
        "channels_last": args.channels_last,
        "amp": args.amp,
        "fused_adam": args.fused_adam,
        "freeze_d": args.freeze_d,
        "fused_upsample": args.fused_upsample,
        "gemm_convs": args.gemm_convs,
        "sampler": args.sampler,
    }
    means = replace(means, **{k: v for k, v in overrides.items() if v is not None})
    if args.compile_mode:
        means = replace(means, compile=True, compile_mode=args.compile_mode)
    return "custom" if any(v is not None for v in overrides.values()) else "training_default", means


def run_config(
    keep: list[str], device: str, name: str, means: Means, extra: list[str] | None = None
) -> dict | None:
    """One configuration in a fresh process; prints and returns its JSON line."""
    command = [sys.executable, __file__, *keep, *(extra or []), "--device", device,
               "--means-json", json.dumps(asdict(means)), "--name", name]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        print(json.dumps({"config": name, "error": done.stderr.strip()[-2000:]}), flush=True)
        return None
    line = done.stdout.strip().splitlines()[-1]
    print(line, flush=True)
    return json.loads(line)


def without_experiment(argv: list[str]) -> list[str]:
    """``argv`` without ``--experiment NAME`` / ``--experiment=NAME``."""
    kept, skip = [], False
    for item in argv:
        if skip:
            skip = False
        elif item == "--experiment":
            skip = True
        elif not item.startswith("--experiment="):
            kept.append(item)
    return kept


@contextlib.contextmanager
def shared_init(args, keep: list[str]):
    """v2: the initial weights built once (slow orthogonal init) and saved for every run;
    attngan: those and the random DAMSM."""
    if args.arch == "attngan":
        given = (args.damsm, args.init_state)
        with attngan_bench.shared_files(args.branches, *given) as (damsm, init_state):
            made = [] if args.damsm else ["--damsm", damsm]
            made += [] if args.init_state else ["--init-state", init_state]
            yield [*keep, *made]
        return
    if args.arch != "v2" or args.init_state:
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="train_throughput_") as tmp:
        path = os.path.join(tmp, "init.pt")
        v2_bench.save_init_state(args.branches, path)
        yield [*keep, "--init-state", path]


def ablate(args, argv) -> None:
    """Each configuration in its own process, one JSON line each."""
    keep = [item for item in argv if item != "--ablate"]
    with shared_init(args, keep) as keep:
        for name, means in ablation_plan(args.device):
            run_config(keep, args.device, name, means)


def compare(args, argv) -> None:
    """The official iteration and the training default alternately, ``--rounds`` times each
    (fresh processes, same initial weights), then one summary line."""
    keep = without_experiment([item for item in argv if item != "--compare"])
    plan = [
        ("official", Means(official=True, cudnn_benchmark=args.device == "cuda"), []),
        ("training_default", training_default(args.device), []),
    ]
    experiment = f"training_default+{args.experiment}" if args.experiment else None
    if experiment:  # attngan: a third configuration, the training default with the experiment
        plan.append((experiment, training_default(args.device), ["--experiment", args.experiment]))
    results: dict[str, list[dict]] = {name: [] for name, _, _ in plan}
    with shared_init(args, keep) as keep:
        for _ in range(args.rounds):
            for name, means, extra in plan:
                result = run_config(keep, args.device, name, means, extra)
                if result is not None:
                    results[name].append(result)
    official, ours = results["official"], results["training_default"]
    if not official or not ours:
        return

    def median(rows: list[dict], key: str) -> float | None:
        values = [row[key] for row in rows if row.get(key) is not None]
        return statistics.median(values) if values else None

    summary = {
        "benchmark": "train_throughput_compare",
        "arch": args.arch,
        "batch_size": args.batch_size,
        "device": args.device,
        "rounds": args.rounds,
        "official_images_per_s": [row["images_per_s"] for row in official],
        "training_default_images_per_s": [row["images_per_s"] for row in ours],
        "speedup": round(median(ours, "images_per_s") / median(official, "images_per_s"), 3),
        # Round by round (each pair ran back to back: the fairest pairing on a shared CPU)
        "speedup_per_round": [
            round(b["images_per_s"] / a["images_per_s"], 3)
            for a, b in zip(official, ours, strict=False)
        ],
        "official_peak_memory_mb": [row["peak_memory_mb"] for row in official],
        "training_default_peak_memory_mb": [row["peak_memory_mb"] for row in ours],
        "process_cpu_over_wall": [row["process_cpu_over_wall"] for row in official + ours],
        "load_average": os.getloadavg(),
    }
    cpu_official = median(official, "cpu_seconds_per_iter")
    cpu_ours = median(ours, "cpu_seconds_per_iter")
    if cpu_official and cpu_ours:
        summary["cpu_seconds_ratio"] = round(cpu_official / cpu_ours, 3)
        summary["cpu_seconds_ratio_per_round"] = [
            round(a["cpu_seconds_per_iter"] / b["cpu_seconds_per_iter"], 3)
            for a, b in zip(official, ours, strict=False)
        ]
    if experiment and results[experiment]:
        tried = results[experiment]
        summary[f"{experiment}_images_per_s"] = [row["images_per_s"] for row in tried]
        summary["experiment_speedup_vs_official"] = round(
            median(tried, "images_per_s") / median(official, "images_per_s"), 3
        )
        cpu_tried = median(tried, "cpu_seconds_per_iter")
        if cpu_official and cpu_tried:
            summary["experiment_cpu_seconds_ratio_vs_official"] = round(cpu_official / cpu_tried, 3)
            summary["experiment_cpu_seconds_ratio_vs_training_default"] = round(
                cpu_ours / cpu_tried, 3
            )
    if any("parts" in row for rows in results.values() for row in rows):
        # Per configuration and part: the median over the runs of each run's median CPU s
        summary["parts_cpu_s"] = {
            name: {
                part: round(statistics.median(row["parts"][part]["cpu_s"] for row in rows), 3)
                for part in rows[0]["parts"]
            }
            for name, rows in results.items()
            if rows and "parts" in rows[0]
        }
    print(json.dumps(summary), flush=True)


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.ablate:
        ablate(args, argv)
        return
    if args.compare:
        compare(args, argv)
        return
    name, means = chosen_means(args)
    if args.experiment and name == "training_default":
        name = f"training_default+{args.experiment}"
    if args.arch == "attngan" and not (args.damsm and args.init_state):
        with attngan_bench.shared_files(args.branches, args.damsm, args.init_state) as made:
            args.damsm, args.init_state = made
            print(json.dumps(measure(args, means, name)), flush=True)
        return
    print(json.dumps(measure(args, means, name)), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
