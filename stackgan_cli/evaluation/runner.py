"""One evaluation from start to end: load, generate, extract features, score, record.

``evaluate_generator`` scores a generator file's samples; ``evaluate_real`` scores the real
test images themselves as a reference. Both return the JSON-ready result dict that
:mod:`stackgan_cli.evaluation.report` prints and writes.

With ``r_precision`` (``--r-precision --damsm PATH``) the same images (the IS/FID samples, or
the real test crops) also get their DAMSM image codes, scored against their own caption and 99
mismatched ones (:mod:`stackgan_cli.evaluation.r_precision`). The Inception network is loaded
only when IS, FID or the diversity check is asked for.
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
from torch import Tensor, nn

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
from stackgan_cli.evaluation.r_precision import (
    MISMATCHED,
    RPrecision,
    image_codes,
    r_precision,
    sentence_table,
)
from stackgan_cli.evaluation.r_precision import PROTOCOL as R_PRECISION_PROTOCOL
from stackgan_cli.evaluation.real_stats import (
    REAL_RESOLUTIONS,
    cache_key,
    cache_path,
    crop_description,
    crop_summary,
    load_or_compute_real_stats,
    real_diversity,
    real_features,
    real_image_batches,
    save_real_stats,
    stored_size,
)
from stackgan_cli.evaluation.report import PAPER_NOTE, R_PRECISION_NOTE
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
    r_precision: bool = False
    damsm: Path | None = None  # a DAMSM file or an official DAMSMencoders/<dataset> folder
    vocabulary: Path | None = None  # captions.pickle, with an official --damsm folder

    @property
    def uses_inception(self) -> bool:
        """Whether anything asked for needs the Inception network (IS, FID, diversity)."""
        return self.inception or self.fid or self.diversity


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
    if options.r_precision and options.damsm is None:
        raise UsageError(
            "--r-precision needs --damsm PATH (a DAMSM file or an official "
            "DAMSMencoders/<dataset> folder with --vocabulary)"
        )
    if options.vocabulary is not None and options.damsm is None:
        raise UsageError("--vocabulary goes with --damsm (an official DAMSMencoders folder)")


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


@dataclass
class _Features:
    """What was kept of a run of samples: Inception logits and pool3 features (None without
    the Inception network) and DAMSM image codes (None without R-precision)."""

    logits: Tensor | None
    pool: Tensor | None
    codes: Tensor | None


def _generated_features(
    bundle: GeneratorBundle,
    split: Any,
    schedule: tuple[np.ndarray, np.ndarray],
    net: InceptionNet | None,
    *,
    seed: int,
    batch_size: int,
    progress: Progress,
    clock: _Clock,
    label: str,
    output: int,
    device: torch.device,
    damsm_images: nn.Module | None = None,
) -> _Features:
    """Generate the scheduled samples batch by batch and keep only their Inception outputs
    and, with ``damsm_images``, their DAMSM image codes: both from the same uint8 images (30,000
    Stage-II images would not fit in memory)."""
    total = len(schedule[0])
    gen_task = progress.add_task(f"{label}: generating", total=total)
    feat_task = progress.add_task(f"{label}: Inception features", total=total) if net else None
    code_task = (
        progress.add_task(f"{label}: DAMSM image codes", total=total) if damsm_images else None
    )
    batches = generate_images(
        bundle,
        split,
        *schedule,
        seed=seed,
        batch_size=batch_size,
        device=device,
        output=output,
    )
    logits, pools, codes = [], [], []
    while True:
        start = time.perf_counter()
        images = next(batches, None)
        if images is None:
            break
        start = clock.add("generation", start)
        progress.advance(gen_task, len(images))
        if net is not None:
            batch_logits, batch_pool = net.features(images)
            start = clock.add("inception", start)
            progress.advance(feat_task, len(images))
            logits.append(batch_logits)
            pools.append(batch_pool)
        if damsm_images is not None:
            codes.append(image_codes(damsm_images, images))
            clock.add("damsm_images", start)
            progress.advance(code_task, len(images))
    return _Features(
        logits=torch.cat(logits) if net is not None else None,
        pool=torch.cat(pools) if net is not None else None,
        codes=torch.cat(codes) if damsm_images is not None else None,
    )


@dataclass
class _DAMSMScorer:
    """What R-precision needs: the DAMSM, its image encoder (on the evaluation device), the
    sentence features (N, 10, D) of every test caption and the classes mismatches avoid."""

    damsm: Any
    image_encoder: nn.Module
    sentences: Tensor
    class_ids: np.ndarray | None
    class_rule: str
    captions_without_known_words: int

    def score(
        self, codes: Tensor, image_idx: np.ndarray, caption_idx: np.ndarray, options: EvalOptions
    ) -> RPrecision:
        return r_precision(
            codes,
            self.sentences,
            image_idx,
            caption_idx,
            class_ids=self.class_ids,
            splits=options.splits,
            seed=options.seed,
        )

    def record(self, result: RPrecision, what: str) -> dict:
        """The ``r_precision`` entry of the result, beside ``inception_score``'s (``value`` is
        the mean, as every metric entry has one)."""
        return {
            "value": result.mean,
            "mean": result.mean,
            "std": result.std,
            "samples": result.samples,
            "splits": result.splits,
            "damsm": str(Path(self.damsm.path).resolve()),
            "mismatched": MISMATCHED,
            "ties": result.ties,
            "protocol": f"{what}: DAMSM cnn_code vs its caption and {MISMATCHED} captions of "
            f"{self.class_rule}, {result.splits} splits",
        }

    def protocol(self, seed: int) -> dict:
        damsm = self.damsm
        return {
            "definition": R_PRECISION_PROTOCOL,
            "damsm": str(Path(damsm.path).resolve()),
            "damsm_source": damsm.source,
            "damsm_dataset": damsm.dataset,
            "damsm_epoch": damsm.epoch,
            "text_dim": int(self.sentences.shape[2]),
            "mismatched": MISMATCHED,
            "mismatched_from": self.class_rule,
            "seed": seed,
            "text": "sentence features, each caption encoded alone with a zero initial state; "
            "words outside the DAMSM vocabulary left out (a caption with none: id 0)",
            "captions_without_known_words": self.captions_without_known_words,
            "image_input": "the uint8 images IS/FID see, as x / 127.5 - 1, resized to 299 by "
            "the image encoder (eval mode)",
            "image_resize_align_corners": bool(getattr(self.image_encoder, "align_corners", False)),
            "ties": "a ground truth tied for first counts as a miss",
        }


def _load_damsm(options: EvalOptions) -> Any:
    """The ``--damsm`` bundle (None without one); its image encoder only for R-precision."""
    if options.damsm is None:
        return None
    from stackgan_cli.damsm_file import load_damsm

    return load_damsm(options.damsm, options.vocabulary, image_encoder=options.r_precision)


def _test_classes(split: Any) -> tuple[np.ndarray | None, str]:
    """The test split's class ids for the mismatched captions and a description of the rule;
    None (another image, as DM-GAN without class_info) when there are none or only one."""
    try:
        classes = np.asarray(split.class_ids).reshape(-1)
    except OSError:
        return None, "random other test images (the split has no class ids)"
    count = len(np.unique(classes))
    if count < 2:
        warn(
            "the test split has a single class: R-precision's mismatched captions come from "
            "other images instead of other classes"
        )
        return None, "random other test images (the split has one class)"
    return classes, f"random test images of other classes (of {count} test classes)"


def _damsm_scorer(
    damsm: Any, dataset: PreparedDataset, split: Any, device: torch.device, clock: _Clock
) -> _DAMSMScorer:
    """Prepare R-precision: the image encoder on ``device`` and every test caption's
    sentence feature, computed once."""
    if damsm.dataset is not None and damsm.dataset != dataset.name:
        warn(f"the DAMSM {damsm.path} was trained on {damsm.dataset!r}; scoring {dataset.name!r}")
    encoder = damsm.require_image_encoder("R-precision").to(device).eval()
    start = time.perf_counter()
    sentences, empty = sentence_table(damsm.text, split.captions)
    clock.add("damsm_text", start)
    if empty:
        warn(
            f"{empty} of {sentences.shape[0] * sentences.shape[1]} test captions have no word "
            f"in the DAMSM's vocabulary ({damsm.path}): was it trained on this dataset?"
        )
    class_ids, rule = _test_classes(split)
    return _DAMSMScorer(damsm, encoder, sentences, class_ids, rule, empty)


def _use_damsm_text(bundle: GeneratorBundle, damsm: Any) -> None:
    """Condition an AttnGAN file that carries no text encoder on the --damsm one."""
    text = damsm.text
    if text.out_dim != bundle.cfg.text_dim:
        raise StackGANError(
            f"--damsm {damsm.path} gives {text.out_dim}-d features but {bundle.path} needs "
            f"{bundle.cfg.text_dim}-d ones"
        )
    bundle.text_encoder = text


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


def _protocol(
    options: EvalOptions,
    net: InceptionNet | None,
    resolution: int,
    device: torch.device,
    **extra: object,
) -> dict:
    import torch_fidelity

    return {
        "inception": net.protocol() if net is not None else None,
        "resolution": resolution,
        "num_samples_requested": options.num_samples,
        "splits": options.splits,
        "seed": options.seed,
        "is_shuffle_seed": options.seed,
        "batch_size": options.batch_size,
        "device": str(device),
        "real_images": crop_description(resolution),
        **extra,
        "stackgan_version": __version__,
        "torch_version": torch.__version__,
        "torch_fidelity_version": torch_fidelity.__version__,
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
    """Score a generator file: IS of its samples, FID against the real test images, the
    same-caption diversity next to the real reference, and R-precision of the same samples."""
    device = pick_device(options.device)
    clock = _Clock(device)
    ckpt = Path(options.ckpt) if options.ckpt is not None else newest_generator()
    damsm = _load_damsm(options)
    bundle = load_generator_file(ckpt, device=device)
    dataset = _load_dataset(options.dataset, bundle.dataset)
    test = dataset.split("test")
    embeddings = test.embeddings
    if bundle.family.reads_words:
        if bundle.text_encoder is None and damsm is not None:
            _use_damsm_text(bundle, damsm)
        elif damsm is not None and not options.r_precision:
            warn(f"--damsm is unused: {ckpt} carries its text encoder and --r-precision is off")
    elif damsm is not None and not options.r_precision:
        warn("--damsm is used only by --r-precision (and AttnGAN files without a text encoder)")
        if bundle.text_encoder is None:
            from stackgan_cli.text_encoder_source import no_text_encoder_message

            raise StackGANError(no_text_encoder_message(bundle, embedding_file=False))
    elif hasattr(bundle.text_encoder, "embed_captions"):
        pass  # trained on a DAMSM's sentence features: its encoder embeds the test captions
    elif embeddings.ndim != 3 or embeddings.shape[2] != bundle.cfg.text_dim:
        raise StackGANError(
            f"{dataset.name} has {embeddings.shape[-1]}-d text embeddings but {ckpt} expects "
            f"{bundle.cfg.text_dim}-d ones"
        )
    _check_splits(options.splits, options.num_samples, "samples")
    output = bundle.family.select_output(options.size, str(bundle.path))
    resolution = bundle.family.output_sizes()[output - 1]
    net = load_inception(options.inception_weights, device) if options.uses_inception else None
    scorer = _damsm_scorer(damsm, dataset, test, device, clock) if options.r_precision else None
    need_real = options.fid or options.diversity
    schedule = caption_schedule(len(test), options.num_samples)

    with task_progress() as progress:
        samples = _generated_features(
            bundle,
            test,
            schedule,
            net,
            seed=options.seed,
            batch_size=options.batch_size,
            progress=progress,
            clock=clock,
            label="samples",
            output=output,
            device=device,
            damsm_images=scorer.image_encoder if scorer is not None else None,
        )
        logits, pool = samples.logits, samples.pool
        diversity_pool = None
        if options.diversity:
            diversity_pool = _generated_features(
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
                device=device,
            ).pool
        real = None
        if need_real:
            real = load_or_compute_real_stats(
                dataset.name,
                dataset.fingerprint,
                test.images(stored_size(resolution)),
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
    if scorer is not None:
        start = time.perf_counter()
        scored = scorer.score(samples.codes, *schedule, options)
        clock.add("r_precision", start)
        metrics["r_precision"] = scorer.record(scored, f"{resolution}px samples")

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mode": "generated",
        "metrics": metrics,
        "protocol": _protocol(
            options,
            net,
            resolution,
            device,
            num_samples=options.num_samples,
            sampling=SAMPLING,
            image_conversion=IMAGE_CONVERSION,
            generator_mode=GENERATOR_MODE,
            diversity=DIVERSITY if options.diversity else None,
            r_precision=scorer.protocol(options.seed) if scorer is not None else None,
        ),
        "checkpoint": _checkpoint_record(bundle),
        "dataset": _dataset_record(dataset, len(test)),
        "times": clock.summary(real_statistics_cached=real.cached if real else None),
        "notes": _notes(options),
    }


def _notes(options: EvalOptions) -> list[str]:
    return [
        *([PAPER_NOTE] if options.inception else []),
        *([R_PRECISION_NOTE] if options.r_precision else []),
    ]


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
    would be 0 by construction), the real diversity reference, and their R-precision (each
    image against one of its own captions, drawn with the seed: the ceiling of a generator's)."""
    device = pick_device(options.device)
    clock = _Clock(device)
    damsm = _load_damsm(options)
    if damsm is not None and not options.r_precision:
        warn("--damsm is used only by --r-precision with --real")
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
    if options.inception or options.r_precision:
        _check_splits(options.splits, count, "real test images")
    if count < 4:
        raise StackGANError(f"the test split of {dataset.name} has {count} images; need 4 or more")
    images = test.images(stored_size(resolution))
    net = load_inception(options.inception_weights, device) if options.uses_inception else None
    scorer = _damsm_scorer(damsm, dataset, test, device, clock) if options.r_precision else None

    logits = pool = codes = None
    with task_progress() as progress:
        if net is not None:
            start = time.perf_counter()
            logits, pool = real_features(
                images, resolution, indices, net, batch_size=options.batch_size, progress=progress
            )
            clock.add("inception", start)
        if scorer is not None:
            start = time.perf_counter()
            task = progress.add_task("real images: DAMSM image codes", total=count)
            batches = []
            for batch in real_image_batches(images, resolution, indices, options.batch_size):
                batches.append(image_codes(scorer.image_encoder, batch))
                progress.advance(task, len(batch))
            codes = torch.cat(batches)
            clock.add("damsm_images", start)

    reference = real_diversity(pool) if pool is not None else None
    if count == total and pool is not None:
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
    if scorer is not None:
        # One of each image's own captions, from a generator of its own (the subset's and the
        # FID halves' draws stay as they were).
        own = np.random.default_rng([options.seed, 1]).integers(0, _captions_per_image(test), count)
        start = time.perf_counter()
        scored = scorer.score(codes, indices, own, options)
        clock.add("r_precision", start)
        metrics["r_precision"] = scorer.record(scored, f"real {resolution}px test crops")

    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "mode": "real",
        "metrics": metrics,
        "protocol": _protocol(
            options,
            net,
            resolution,
            device,
            num_samples=count,
            sampling="real test images" + (" (all)" if count == total else " (seeded subset)"),
            diversity=DIVERSITY if options.diversity else None,
            r_precision=scorer.protocol(options.seed) if scorer is not None else None,
            r_precision_captions="one of each image's own captions, uniformly at random "
            "(numpy generator seeded with [--seed, 1])"
            if scorer is not None
            else None,
        ),
        "checkpoint": _checkpoint_record(bundle) if bundle is not None else None,
        "dataset": _dataset_record(dataset, total),
        "times": clock.summary(),
        "notes": _notes(options),
    }


def _captions_per_image(split: Any) -> int:
    """Captions per image of a prepared split (10)."""
    return len(split.captions[0])
