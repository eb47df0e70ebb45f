"""One evaluation from start to end: load, generate, extract features, score, record.

``evaluate_generator`` scores a generator file's samples; ``evaluate_real`` scores the real
test images themselves as a reference. Both return the JSON-ready result dict that
:mod:`stackgan_cli.evaluation.report` prints and writes.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import Progress
from torch import Tensor

from stackgan_cli import __version__
from stackgan_cli.console import task_progress, warn
from stackgan_cli.data.prepared import PreparedDataset, load_prepared
from stackgan_cli.devices import pick_device
from stackgan_cli.errors import StackGANError, UsageError
from stackgan_cli.evaluation.inception import InceptionNet, load_inception
from stackgan_cli.evaluation.metrics import (
    DIVERSITY_GROUP_SIZE,
    DIVERSITY_GROUPS,
    feature_statistics,
    frechet_distance,
    inception_score,
    mean_pairwise_distance,
)
from stackgan_cli.evaluation.real_stats import (
    REAL_RESOLUTIONS,
    cache_key,
    cache_path,
    crop_description,
    crop_summary,
    load_or_compute_real_stats,
    real_diversity,
    real_features,
    save_real_stats,
    stored_size,
)
from stackgan_cli.evaluation.report import PAPER_NOTE
from stackgan_cli.evaluation.sampling import (
    caption_schedule,
    diversity_schedule,
    generate_images,
)
from stackgan_cli.fsutil import file_hashes
from stackgan_cli.generator_file import GeneratorBundle, load_generator_file, newest_generator
from stackgan_cli.models.config import IMAGE_SIZE

FORMAT = "stackgan-evaluation"
FORMAT_VERSION = 1

SAMPLING = (
    "sample i is conditioned on the precomputed test-split embedding of image (i mod N), "
    "caption ((i div N) mod 10): each pass over the N test images uses the next caption, so "
    "10*N samples use all 10 captions of every test image once"
)
IMAGE_CONVERSION = "uint8((x + 1) * 127.5) after clamping to [0, 255], as the official sampler"
GENERATOR_MODE = (
    "eval mode (BatchNorm running statistics); z and the conditioning-augmentation eps drawn "
    "from a CPU torch.Generator seeded with --seed (eps is sampled in eval mode too, as the "
    "official code does)"
)
DIVERSITY = (
    f"mean pairwise Euclidean distance of Inception pool3 features among "
    f"{DIVERSITY_GROUP_SIZE} samples of each of {DIVERSITY_GROUPS} test captions "
    "(noise seed --seed + 1); reference: the same figure for groups of distinct real test "
    "images spread over the split"
)


@dataclass
class EvalOptions:
    """The settings of one evaluation (the ``stackgan evaluate`` options)."""

    ckpt: Path | None = None
    inception: bool = True
    fid: bool = True
    dataset: str | None = None
    num_samples: int = 30000
    splits: int = 10
    batch_size: int = 64
    inception_weights: Path | None = None
    real: bool = False
    resolution: int | None = None
    size: int | None = None  # generated samples' side: v1 stage / v2 branch (None: largest)
    seed: int = 0
    diversity: bool = True
    device: str = "auto"


def check_options(options: EvalOptions) -> None:
    """UsageError (exit 2) for options that do not fit together."""
    sizes = sorted(IMAGE_SIZE.values())
    if options.resolution is not None and options.resolution not in sizes:
        raise UsageError(f"--resolution must be {' or '.join(map(str, sizes))}")
    if options.resolution is not None and not options.real:
        raise UsageError("--resolution only applies with --real")
    if options.size is not None and options.size not in REAL_RESOLUTIONS:
        raise UsageError(f"--size must be {', '.join(map(str, REAL_RESOLUTIONS))}")
    if options.size is not None and options.real:
        raise UsageError("--size picks the generated images' size; with --real use --resolution")
    if not options.real and options.splits > options.num_samples:
        raise UsageError(f"--splits cannot exceed --num-samples {options.num_samples}")


def evaluate(options: EvalOptions) -> dict:
    """Everything ``stackgan evaluate`` computes: the generator's scores, or with
    ``options.real`` the real test images' (the record :mod:`evaluation.report` writes)."""
    check_options(options)
    return evaluate_real(options) if options.real else evaluate_generator(options)


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


class _Clock:
    """Wall and process-CPU time since creation, plus named phase totals."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.started_at = _now()
        self.wall = time.perf_counter()
        self.cpu = time.process_time()
        self.phases: dict[str, float] = {}

    def add(self, phase: str, since: float) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.phases[phase] = self.phases.get(phase, 0.0) + now - since
        return now

    def summary(self, **extra: object) -> dict:
        wall = time.perf_counter() - self.wall
        cpu = time.process_time() - self.cpu
        return {
            "started_at": self.started_at,
            "finished_at": _now(),
            "wall_seconds": round(wall, 3),
            "process_cpu_seconds": round(cpu, 3),
            "cpu_per_wall": round(cpu / wall, 2) if wall > 0 else None,
            **{f"{name}_seconds": round(value, 3) for name, value in self.phases.items()},
            **extra,
        }


def _generated_features(
    bundle: GeneratorBundle,
    split: Any,
    schedule: tuple[np.ndarray, np.ndarray],
    net: InceptionNet,
    *,
    seed: int,
    batch_size: int,
    progress: Progress,
    clock: _Clock,
    label: str,
    output: int,
) -> tuple[Tensor, Tensor]:
    """Generate the scheduled samples batch by batch and keep only their Inception outputs
    (30,000 Stage-II images would not fit in memory)."""
    total = len(schedule[0])
    gen_task = progress.add_task(f"{label}: generating", total=total)
    feat_task = progress.add_task(f"{label}: Inception features", total=total)
    batches = generate_images(
        bundle,
        split,
        *schedule,
        seed=seed,
        batch_size=batch_size,
        device=net.device,
        output=output,
    )
    logits, pools = [], []
    while True:
        start = time.perf_counter()
        images = next(batches, None)
        if images is None:
            break
        start = clock.add("generation", start)
        progress.advance(gen_task, len(images))
        batch_logits, batch_pool = net.features(images)
        clock.add("inception", start)
        progress.advance(feat_task, len(images))
        logits.append(batch_logits)
        pools.append(batch_pool)
    return torch.cat(logits), torch.cat(pools)


def _load_dataset(requested: str | None, from_file: str | None) -> PreparedDataset:
    """--dataset wins when given (with a warning if the generator names another); else the
    generator file's dataset."""
    name = requested or from_file
    if name is None:
        raise StackGANError(
            "the generator file names no dataset (e.g. an official netG file); pass --dataset NAME"
        )
    dataset = load_prepared(name)
    if requested and from_file and dataset.name != from_file:
        warn(f"the generator was trained on {from_file!r}; evaluating on {dataset.name!r}")
    return dataset


def _checkpoint_record(bundle: GeneratorBundle) -> dict:
    return {
        "path": str(Path(bundle.path).resolve()),
        "sha256": file_hashes(bundle.path, ["sha256"])["sha256"],
        "arch": bundle.arch,
        "family": bundle.family.key,
        "stage": bundle.stage,
        "epoch": bundle.epoch,
        "iteration": bundle.iteration,
        "source": bundle.source,
        "dataset": bundle.dataset,
        "model_config": bundle.cfg.to_dict(),
        "output_sizes": list(bundle.family.output_sizes()),
    }


def _dataset_record(dataset: PreparedDataset, test_images: int) -> dict:
    return {
        "name": dataset.name,
        "root": str(dataset.root),
        "fingerprint": dataset.fingerprint,
        "split": "test",
        "test_images": test_images,
    }


def _protocol(options: EvalOptions, net: InceptionNet, resolution: int, **extra: object) -> dict:
    return {
        "inception": net.protocol(),
        "resolution": resolution,
        "num_samples_requested": options.num_samples,
        "splits": options.splits,
        "seed": options.seed,
        "is_shuffle_seed": options.seed,
        "batch_size": options.batch_size,
        "device": str(net.device),
        "real_images": crop_description(resolution),
        **extra,
        "stackgan_version": __version__,
        "torch_version": torch.__version__,
        "torch_fidelity_version": net.protocol()["torch_fidelity_version"],
    }


def _inception_score_record(logits: Tensor, options: EvalOptions, protocol: str) -> dict:
    """The ``inception_score`` entry of the result: mean and std over the splits."""
    mean, std = inception_score(logits, options.splits, options.seed)
    return {
        "value": mean,
        "std": std,
        "samples": int(logits.shape[0]),
        "splits": options.splits,
        "protocol": protocol,
    }


def _check_splits(splits: int, count: int, what: str) -> None:
    if splits > count:
        raise StackGANError(f"--splits {splits} needs at least {splits} {what}, there are {count}")


def evaluate_generator(options: EvalOptions) -> dict:
    """Score a generator file: IS of its samples, FID against the real test images, and the
    same-caption diversity next to the real reference."""
    device = pick_device(options.device)
    clock = _Clock(device)
    ckpt = Path(options.ckpt) if options.ckpt is not None else newest_generator()
    bundle = load_generator_file(ckpt, device=device)
    dataset = _load_dataset(options.dataset, bundle.dataset)
    test = dataset.split("test")
    embeddings = test.embeddings
    if bundle.family.reads_words:
        if bundle.text_encoder is None:
            from stackgan_cli.text_encoder_source import no_text_encoder_message

            raise StackGANError(no_text_encoder_message(bundle, embedding_file=False))
    elif embeddings.ndim != 3 or embeddings.shape[2] != bundle.cfg.text_dim:
        raise StackGANError(
            f"{dataset.name} has {embeddings.shape[-1]}-d text embeddings but {ckpt} expects "
            f"{bundle.cfg.text_dim}-d ones"
        )
    _check_splits(options.splits, options.num_samples, "samples")
    output = bundle.family.select_output(options.size, str(bundle.path))
    resolution = bundle.family.output_sizes()[output - 1]
    real_images = test.images(stored_size(resolution))
    net = load_inception(options.inception_weights, device)
    need_real = options.fid or options.diversity

    with task_progress() as progress:
        logits, pool = _generated_features(
            bundle,
            test,
            caption_schedule(len(test), options.num_samples),
            net,
            seed=options.seed,
            batch_size=options.batch_size,
            progress=progress,
            clock=clock,
            label="samples",
            output=output,
        )
        diversity_pool = None
        if options.diversity:
            _, diversity_pool = _generated_features(
                bundle,
                test,
                diversity_schedule(len(test), DIVERSITY_GROUPS, DIVERSITY_GROUP_SIZE),
                net,
                seed=options.seed + 1,
                batch_size=options.batch_size,
                progress=progress,
                clock=clock,
                label="diversity samples",
                output=output,
            )
        real = None
        if need_real:
            real = load_or_compute_real_stats(
                dataset.name,
                dataset.fingerprint,
                real_images,
                resolution,
                net,
                batch_size=options.batch_size,
                progress=progress,
            )
            clock.phases["real_statistics"] = real.seconds

    metrics: dict[str, dict] = {}
    if options.inception:
        metrics["inception_score"] = _inception_score_record(
            logits, options, f"ImageNet Inception-v3, {options.splits} splits, {resolution}px"
        )
    if options.fid:
        metrics["fid"] = {
            "value": frechet_distance(real.stats, feature_statistics(pool), pool),
            "samples": options.num_samples,
            "real_images": real.stats.count,
            "real_statistics": str(real.path),
            "real_statistics_cached": real.cached,
            "protocol": f"pool3 vs {real.stats.count} test crops, {crop_summary(resolution)}",
        }
    if diversity_pool is not None:
        groups = diversity_pool.view(DIVERSITY_GROUPS, DIVERSITY_GROUP_SIZE, -1)
        mean, std = mean_pairwise_distance(groups)
        metrics["diversity"] = {
            "value": mean,
            "std": std,
            "samples": DIVERSITY_GROUPS * DIVERSITY_GROUP_SIZE,
            "captions": DIVERSITY_GROUPS,
            "per_caption": DIVERSITY_GROUP_SIZE,
            "protocol": f"pool3 mean pairwise L2, {DIVERSITY_GROUPS} captions x "
            f"{DIVERSITY_GROUP_SIZE} samples",
        }
        metrics["diversity_real_reference"] = _reference_record(real.diversity)

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mode": "generated",
        "metrics": metrics,
        "protocol": _protocol(
            options,
            net,
            resolution,
            num_samples=options.num_samples,
            sampling=SAMPLING,
            image_conversion=IMAGE_CONVERSION,
            generator_mode=GENERATOR_MODE,
            diversity=DIVERSITY if options.diversity else None,
        ),
        "checkpoint": _checkpoint_record(bundle),
        "dataset": _dataset_record(dataset, len(test)),
        "times": clock.summary(real_statistics_cached=real.cached if real else None),
        "notes": [PAPER_NOTE] if options.inception else [],
    }


def _reference_record(reference: dict | None) -> dict:
    if reference is None:
        return {"value": None, "std": None, "samples": 0, "protocol": "fewer than 2 test images"}
    count = reference["groups"] * reference["per_group"]
    return {
        "value": reference["mean"],
        "std": reference["std"],
        "samples": count,
        "groups": reference["groups"],
        "per_group": reference["per_group"],
        "protocol": f"pool3 mean pairwise L2, {reference['groups']} groups x "
        f"{reference['per_group']} distinct real images",
    }


def evaluate_real(options: EvalOptions) -> dict:
    """Score the real test images with the same protocol: their IS, the FID between two random
    halves of them (the floor a generator could reach at that sample size; real vs itself
    would be 0 by construction), and the real diversity reference."""
    device = pick_device(options.device)
    clock = _Clock(device)
    bundle = load_generator_file(options.ckpt) if options.ckpt is not None else None
    if options.dataset is None and (bundle is None or bundle.dataset is None):
        raise StackGANError("--real needs --dataset NAME (or a --ckpt that names its dataset)")
    dataset = _load_dataset(options.dataset, bundle.dataset if bundle else None)
    if options.resolution is not None:
        resolution = options.resolution
    else:
        resolution = bundle.family.output_sizes()[-1] if bundle is not None else 64
    test = dataset.split("test")
    total = len(test)
    rng = np.random.default_rng(options.seed)
    if options.num_samples >= total:
        indices = np.arange(total, dtype=np.int64)
    else:
        indices = np.sort(rng.permutation(total)[: options.num_samples])
    count = len(indices)
    if options.inception:
        _check_splits(options.splits, count, "real test images")
    if count < 4:
        raise StackGANError(f"the test split of {dataset.name} has {count} images; need 4 or more")
    images = test.images(stored_size(resolution))
    net = load_inception(options.inception_weights, device)

    with task_progress() as progress:
        start = time.perf_counter()
        logits, pool = real_features(
            images, resolution, indices, net, batch_size=options.batch_size, progress=progress
        )
        clock.add("inception", start)

    reference = real_diversity(pool)
    if count == total:
        # The whole split was just scored: keep its statistics for later FID runs.
        key = cache_key(dataset.fingerprint, resolution, net)
        save_real_stats(
            cache_path(dataset.name, resolution, key), key, feature_statistics(pool), reference
        )

    metrics: dict[str, dict] = {}
    if options.inception:
        metrics["inception_score"] = _inception_score_record(
            logits,
            options,
            f"real test crops, ImageNet Inception-v3, {options.splits} splits, {resolution}px",
        )
    if options.fid:
        order = rng.permutation(count)
        half = count // 2
        first = feature_statistics(pool[torch.from_numpy(order[:half])])
        second_pool = pool[torch.from_numpy(order[half : 2 * half])]
        metrics["fid_real_halves"] = {
            "value": frechet_distance(first, feature_statistics(second_pool), second_pool),
            "samples": 2 * half,
            "halves": [half, half],
            "protocol": "pool3, two random disjoint halves of the real test crops",
        }
    if options.diversity:
        metrics["diversity_real_reference"] = _reference_record(reference)

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mode": "real",
        "metrics": metrics,
        "protocol": _protocol(
            options,
            net,
            resolution,
            num_samples=count,
            sampling="real test images" + (" (all)" if count == total else " (seeded subset)"),
            diversity=DIVERSITY if options.diversity else None,
        ),
        "checkpoint": _checkpoint_record(bundle) if bundle is not None else None,
        "dataset": _dataset_record(dataset, total),
        "times": clock.summary(),
        "notes": [PAPER_NOTE] if options.inception else [],
    }
