"""Generator file + prompts -> images: conditioning, sampling, interpolation, files on disk.

Reproducibility: one seed fixes, for sample k, the noise z_k and the conditioning-augmentation
noise eps_k (Stage I's and Stage II's), drawn on the CPU in a fixed order, so the same on every
device. Every prompt uses the same z_k and eps_k, so a column of the grid differs only in its
text, and an image depends on the seed, its sample index and its prompt alone, not on the other
prompts (the generators run in eval mode, so the batch does not matter either).
"""

from __future__ import annotations

import datetime as _dt
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from stackgan_cli.console import err
from stackgan_cli.devices import pick_device
from stackgan_cli.errors import StackGANError, UsageError
from stackgan_cli.generator_file import GeneratorBundle, load_generator_file, newest_generator
from stackgan_cli.imaging import captioned_grid, save_png, strip, to_uint8
from stackgan_cli.limits import MAX_SAMPLES, MAX_STEPS
from stackgan_cli.models.config import IMAGE_SIZE

_BATCH = {1: 64, 2: 16}
"""Images per forward pass, by output stage (bounds memory for large ``-n``)."""
_V2_BATCH = 16  # a StackGAN-v2 generator makes every branch up to 256 px in each pass


@dataclass(frozen=True)
class Noise:
    """The random inputs of ``n`` samples: z (n, z_dim) and the CA noise of each stage."""

    z: Tensor
    eps1: Tensor
    eps2: Tensor

    def __len__(self) -> int:
        return self.z.shape[0]


@dataclass
class GenerateResult:
    """What ``generate`` wrote: the output folder, the grid, the images (``[prompt][sample]``),
    Stage-I sketches when shown, the interpolation strips, and the seed used."""

    out_dir: Path
    seed: int
    grid: Path | None = None
    images: list[list[Path]] = field(default_factory=list)
    sketches: list[list[Path]] = field(default_factory=list)
    interpolation: Path | None = None


def default_out_dir(base: Path | None = None, now: _dt.datetime | None = None) -> Path:
    """A new folder ``<base>/samples/<YYYYmmdd-HHMMSS>`` (``-2``, ``-3``... if it exists);
    ``base`` defaults to the current directory."""
    now = now or _dt.datetime.now()
    root = (Path.cwd() if base is None else Path(base)) / "samples"
    candidate = root / f"{now:%Y%m%d-%H%M%S}"
    number = 2
    while candidate.exists():
        candidate = root / f"{now:%Y%m%d-%H%M%S}-{number}"
        number += 1
    return candidate


def check_options(
    prompts: Sequence[str],
    stage: int | None,
    show_stages: bool,
    size: int | None,
    embedding_file: Path | None,
    interpolate_between: tuple[str, str] | None,
) -> None:
    """UsageError (exit 2) for options that do not fit together, before anything is loaded."""
    if not prompts and embedding_file is None and interpolate_between is None:
        raise UsageError(
            "TEXT: give at least one prompt (or --embedding-file, or --interpolate A B)"
        )
    if stage == 1 and show_stages:
        raise UsageError("--show-stages shows both stages; drop --stage 1")
    sizes = (64, 128, 256)  # the outputs of the v1 stages and of the v2 branches
    if size is not None and size not in sizes:
        raise UsageError(f"--size must be {', '.join(map(str, sizes[:-1]))} or {sizes[-1]}")


def check_out_dir(out_dir: Path) -> None:
    """``StackGANError`` naming ``--out`` unless ``out_dir`` is a writable folder or can be
    created as one; checked before any work, so that a bad path fails at once."""
    path = Path(out_dir)
    if os.path.lexists(path) and not path.is_dir():
        kind = "a broken symbolic link" if not path.exists() else "a file"
        raise StackGANError(f"--out {path} is {kind}, not a folder: give a folder for the images")
    existing = path
    while not os.path.lexists(existing) and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise StackGANError(f"--out {path} cannot be created: {existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        if existing == path:
            raise StackGANError(f"--out {path} is not writable")
        raise StackGANError(f"--out {path} cannot be created: {existing} is not writable")


def read_embedding_file(path: Path, text_dim: int) -> Tensor:
    """A ``.npy`` of precomputed text embeddings, (P, text_dim) or (text_dim,), as a float32
    (P, text_dim) tensor."""
    path = Path(path)
    if not path.is_file():
        raise StackGANError(f"--embedding-file {path} does not exist")
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise StackGANError(
            f"--embedding-file {path} is not a readable .npy array ({exc})"
        ) from None
    if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.number):
        raise StackGANError(f"--embedding-file {path} must hold a numeric array")
    if array.ndim == 1:
        array = array[None, :]
    if array.ndim != 2 or array.shape[1] != text_dim or array.shape[0] == 0:
        raise StackGANError(
            f"--embedding-file {path} has shape {array.shape}; this generator needs "
            f"(P, {text_dim}) or ({text_dim},)"
        )
    if not np.isfinite(array).all():
        raise StackGANError(f"--embedding-file {path} contains NaN or infinite values")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def normalize_prompts(prompts: Sequence[str]) -> list[str]:
    """Each prompt normalised as the text encoder expects (empty -> error, long -> cut with a
    warning)."""
    from stackgan_cli.text import normalize_prompt

    return [normalize_prompt(prompt) for prompt in prompts]


def encode_prompts(bundle: GeneratorBundle, prompts: Sequence[str]) -> Tensor:
    """(P, text_dim) embeddings of prompts (already through :func:`normalize_prompts`) with the
    file's bundled text encoder."""
    if bundle.text_encoder is None:
        from stackgan_cli.text_encoder_source import no_text_encoder_message

        raise StackGANError(no_text_encoder_message(bundle))
    embeddings = bundle.text_encoder.encode(list(prompts)).float().cpu()
    if embeddings.shape != (len(prompts), bundle.cfg.text_dim):
        raise StackGANError(
            f"{bundle.path}: its text encoder gives embeddings of shape "
            f"{tuple(embeddings.shape)}, the generator needs (P, {bundle.cfg.text_dim})"
        )
    return embeddings


def caption_sentence(text: str) -> str:
    """How a prompt is printed beneath its row: the user's words, whitespace collapsed."""
    return " ".join(text.split())


def conditioning(
    bundle: GeneratorBundle,
    prompts: Sequence[str],
    normalized: Sequence[str] | None,
    embedding_file: Path | None,
) -> tuple[Tensor, list[str]]:
    """The (P, text_dim) embeddings and the P captions of one ``generate`` call.

    With ``embedding_file`` its rows are the prompts and the TEXT arguments, when given (one
    per row), are only the captions printed; without them the captions name the rows.
    Otherwise the ``normalized`` prompts are encoded with the bundled text encoder.
    """
    if embedding_file is None:
        if not prompts or normalized is None:
            raise StackGANError("give at least one TEXT prompt")
        return encode_prompts(bundle, normalized), [caption_sentence(p) for p in prompts]
    embeddings = read_embedding_file(embedding_file, bundle.cfg.text_dim)
    if prompts and len(prompts) != embeddings.shape[0]:
        raise StackGANError(
            f"--embedding-file {embedding_file} holds {embeddings.shape[0]} embedding(s) but "
            f"{len(prompts)} TEXT caption(s) were given: give one caption per row, or none"
        )
    if prompts:
        captions = [caption_sentence(p) for p in prompts]
    else:
        captions = [f"{Path(embedding_file).name} row {i}" for i in range(embeddings.shape[0])]
    return embeddings, captions


def draw_noise(bundle: GeneratorBundle, n: int, seed: int) -> Noise:
    """The noise of samples 0..n-1 for ``seed``, drawn on the CPU (same on every device)."""
    generator = torch.Generator().manual_seed(seed)
    cfg = bundle.cfg
    z = torch.randn(n, cfg.z_dim, generator=generator)
    eps1 = torch.randn(n, cfg.condition_dim, generator=generator)
    eps2 = torch.randn(n, cfg.condition_dim, generator=generator)
    return Noise(z=z, eps1=eps1, eps2=eps2)


def _forward(
    bundle: GeneratorBundle, embeddings: Tensor, noise: Noise, stage: int, device: torch.device
) -> tuple[Tensor | None, Tensor]:
    """(sketches or None, images) for matching rows of embeddings and noise, on the CPU."""
    text = embeddings.to(device)
    z, eps1, eps2 = (t.to(device) for t in (noise.z, noise.eps1, noise.eps2))
    if bundle.stage == 1:
        _, images, _, _ = bundle.generator(text, z, eps=eps1)
        return None, images.float().cpu()
    if stage == 1:
        _, images, _, _ = bundle.generator.STAGE1_G(text, z, eps=eps1)
        return None, images.float().cpu()
    sketches, images, _, _ = bundle.generator(text, z, eps=(eps1, eps2))
    return sketches.float().cpu(), images.float().cpu()


def run_branches(
    bundle: GeneratorBundle, embeddings: Tensor, noise: Noise, *, device: torch.device
) -> list[Tensor]:
    """A StackGAN-v2 file's images for every (embedding, sample) pair: one (P, n, 3, S, S)
    tensor per branch, smallest first, in [-1, 1] on the CPU (CA noise ``noise.eps1``)."""
    prompts, n = embeddings.shape[0], len(noise)
    prompt_index = torch.arange(prompts).repeat_interleave(n)
    sample_index = torch.arange(n).repeat(prompts)
    chunks: list[list[Tensor]] = []
    bundle.generator.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        for start in range(0, prompts * n, _V2_BATCH):
            rows = slice(start, start + _V2_BATCH)
            chunk = _select(noise, sample_index[rows])
            text = embeddings[prompt_index[rows]].to(device)
            images, _, _ = bundle.generator(text, chunk.z.to(device), eps=chunk.eps1.to(device))
            chunks.append([image.float().cpu() for image in images])
    return [torch.cat(branch).unflatten(0, (prompts, n)) for branch in zip(*chunks, strict=True)]


def _select(noise: Noise, index: Tensor) -> Noise:
    return Noise(z=noise.z[index], eps1=noise.eps1[index], eps2=noise.eps2[index])


def run_generator(
    bundle: GeneratorBundle,
    embeddings: Tensor,
    noise: Noise,
    *,
    stage: int,
    device: torch.device,
) -> tuple[Tensor | None, Tensor]:
    """Images for every (embedding, sample) pair: ``(sketches, images)``, each
    (P, n, 3, H, W) in [-1, 1] on the CPU; sketches (Stage-II files at stage 2 only) else None.

    ``stage`` is the output stage: 1 for a Stage-I file, 1 or 2 for a Stage-II file; for a
    StackGAN-v2 file the branch (1, 2, 3: 64, 128, 256 px), and sketches are None.
    """
    if bundle.arch == "v2":
        return None, run_branches(bundle, embeddings, noise, device=device)[stage - 1]
    prompts, n = embeddings.shape[0], len(noise)
    prompt_index = torch.arange(prompts).repeat_interleave(n)
    sample_index = torch.arange(n).repeat(prompts)
    batch = _BATCH[stage]
    sketches: list[Tensor] = []
    images: list[Tensor] = []
    # channels_last measured ~25% faster on the CPU (oneDNN) and is the usual choice on CUDA.
    bundle.generator.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        for start in range(0, prompts * n, batch):
            rows = slice(start, start + batch)
            chunk = _select(noise, sample_index[rows])
            sketch, image = _forward(bundle, embeddings[prompt_index[rows]], chunk, stage, device)
            images.append(image)
            if sketch is not None:
                sketches.append(sketch)
    shape = (prompts, n)
    result = torch.cat(images).unflatten(0, shape)
    return (torch.cat(sketches).unflatten(0, shape) if sketches else None), result


def interpolate(
    bundle: GeneratorBundle,
    start: Tensor,
    end: Tensor,
    noise: Noise,
    *,
    steps: int,
    stage: int,
    device: torch.device,
) -> Tensor:
    """(n, steps, 3, H, W): for each sample's fixed z and CA noise, the images of the text
    embeddings ``(1 - t) * start + t * end`` for ``steps`` values of t from 0 to 1."""
    if steps < 2:
        raise ValueError(f"an interpolation needs at least 2 steps, got {steps}")
    weights = torch.linspace(0.0, 1.0, steps).unsqueeze(1)
    path = (1.0 - weights) * start.reshape(1, -1) + weights * end.reshape(1, -1)
    _, images = run_generator(bundle, path, noise, stage=stage, device=device)
    return images.transpose(0, 1)  # (steps, n) -> (n, steps)


def _is_row(text: str, embedding_file: Path | None) -> bool:
    return embedding_file is not None and text.strip().isdigit()


def _endpoint(
    bundle: GeneratorBundle,
    text: str,
    normalized: str | None,
    embeddings: Tensor | None,
    captions: Sequence[str],
) -> tuple[Tensor, str]:
    """One end of an interpolation: a row of the embedding file (``normalized`` is None),
    else a sentence for the text encoder."""
    if normalized is None and embeddings is not None:
        row = int(text)
        if row >= embeddings.shape[0]:
            raise StackGANError(
                f"--interpolate: row {row} is past the embedding file's {embeddings.shape[0]} rows"
            )
        return embeddings[row], captions[row]
    return encode_prompts(bundle, [normalized or text])[0], caption_sentence(text)


def image_name(prompt: int, sample: int, prompts: int, samples: int, suffix: str = "") -> str:
    """``<prompt>_<sample><suffix>.png``, both zero-padded to at least two digits."""
    width_p = max(2, len(str(prompts - 1)))
    width_s = max(2, len(str(samples - 1)))
    return f"{prompt:0{width_p}d}_{sample:0{width_s}d}{suffix}.png"


def _upsample(images: Tensor, size: int) -> Tensor:
    """(P, n, 3, h, w) -> (P, n, 3, size, size), nearest neighbour (a sketch's pixels stay)."""
    flat = F.interpolate(images.flatten(0, 1), size=(size, size), mode="nearest")
    return flat.unflatten(0, images.shape[:2])


def _side_by_side(sketches: Tensor, images: Tensor) -> Tensor:
    """Alternate sketch k and image k along the sample axis: (P, 2n, 3, H, W)."""
    return torch.stack((sketches, images), dim=2).flatten(1, 2)


def generate(
    ckpt: Path | None,
    prompts: Sequence[str],
    *,
    n: int = 8,
    out_dir: Path,
    stage: int | None = None,
    show_stages: bool = False,
    seed: int | None = None,
    embedding_file: Path | None = None,
    interpolate_between: tuple[str, str] | None = None,
    steps: int = 8,
    device: str = "auto",
    size: int | None = None,
    text_encoder: str | Path | None = None,
) -> GenerateResult:
    """Everything ``stackgan generate`` does; see its help. Returns what was written.

    ``size`` picks the output by its side: a StackGAN-v2 file's branch (default its largest),
    or a StackGAN-v1 file's stage (64: stage 1, 256: stage 2). ``text_encoder`` (a prepared
    dataset or a file, see :mod:`stackgan_cli.text_encoder_source`) replaces the file's own."""
    if not 1 <= n <= MAX_SAMPLES:
        raise ValueError(f"n must be between 1 and {MAX_SAMPLES}, got {n}")
    if stage not in (None, 1, 2):
        raise ValueError(f"stage must be 1, 2 or None, got {stage!r}")
    if not 2 <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be between 2 and {MAX_STEPS}, got {steps}")
    check_options(prompts, stage, show_stages, size, embedding_file, interpolate_between)
    check_out_dir(out_dir)
    # Normalise first, so that an empty prompt fails before the generator is loaded.
    normalized = normalize_prompts(prompts) if embedding_file is None else None
    ends_normalized = [
        None if _is_row(end, embedding_file) else normalize_prompts([end])[0]
        for end in interpolate_between or ()
    ]
    encoder = None
    if text_encoder is not None:
        from stackgan_cli.text_encoder_source import load_text_encoder

        encoder = load_text_encoder(text_encoder)
    torch_device = pick_device(device)
    if ckpt is None:
        ckpt = newest_generator()
        _say(f"using the newest generator in the cache: {ckpt}")
    bundle = load_generator_file(ckpt, device=torch_device)
    if encoder is not None:
        from stackgan_cli.text_encoder_source import use_text_encoder

        use_text_encoder(bundle, encoder, text_encoder)
    if bundle.arch == "v2":
        stage = _v2_branch(bundle, ckpt, size, stage, show_stages)
        out_size = 64 * 2 ** (stage - 1)
    else:
        if size is not None:
            stage = _v1_stage_for_size(ckpt, size, stage)
        stage = bundle.stage if stage is None else stage
        if stage == 2 and bundle.stage == 1:
            raise StackGANError(f"{ckpt} is a Stage-I generator: it has no stage 2 (use --stage 1)")
        if show_stages and (bundle.stage == 1 or stage == 1):
            raise StackGANError(
                f"--show-stages needs the Stage-II output of a Stage-II generator; {ckpt} "
                + ("is a Stage-I generator" if bundle.stage == 1 else "was asked for --stage 1")
            )
        out_size = IMAGE_SIZE[stage]

    # All conditioning before any output, so that a bad prompt or file fails cleanly.
    embeddings: Tensor | None = None
    captions: list[str] = []
    if prompts or embedding_file is not None:
        embeddings, captions = conditioning(bundle, prompts, normalized, embedding_file)
    ends = [
        _endpoint(bundle, text, norm, embeddings, captions)
        for text, norm in zip(interpolate_between or (), ends_normalized, strict=True)
    ]
    _say(f"{ckpt}: {_describe(bundle)}; {out_size}px images on {torch_device}")
    if seed is None:
        seed = secrets.randbelow(2**31)
        _say(f"seed {seed} (pass --seed {seed} to get the same images again)")
    noise = draw_noise(bundle, n, seed)
    result = GenerateResult(out_dir=Path(out_dir), seed=seed)

    if embeddings is not None and bundle.arch == "v2" and show_stages:
        branches = run_branches(bundle, embeddings, noise, device=torch_device)[:stage]
        _write_branches(result, captions, branches)
    elif embeddings is not None:
        sketches, images = run_generator(
            bundle, embeddings, noise, stage=stage, device=torch_device
        )
        _write_samples(result, captions, images, sketches if show_stages else None)
    if ends:
        (start, first), (end, last) = ends
        strips = interpolate(
            bundle, start, end, noise, steps=steps, stage=stage, device=torch_device
        )
        labels = [f"{t:.2f}" for t in torch.linspace(0.0, 1.0, steps).tolist()]
        picture = strip(strips, labels, caption=f"0: {first}  |  1: {last}")
        result.interpolation = save_png(picture, result.out_dir / "interpolation.png")
    return result


def _say(message: str) -> None:
    """A status line on stderr, never wrapped (paths stay whole for copying)."""
    err.print(message, highlight=False, soft_wrap=True, markup=False)


def _v2_branch(
    bundle: GeneratorBundle, ckpt: Path, size: int | None, stage: int | None, show: bool
) -> int:
    """The branch (1-based) of a StackGAN-v2 file that ``--size`` asks for."""
    if stage is not None:
        raise StackGANError(f"--stage: {ckpt} is a StackGAN-v2 generator; pick --size instead")
    sizes = [64 * 2**i for i in range(bundle.cfg.branch_num)]
    if size is None:
        return len(sizes)
    if size not in sizes:
        raise StackGANError(f"--size {size}: {ckpt} makes {', '.join(map(str, sizes))} px images")
    if show and size == 64:
        raise StackGANError("--show-stages shows the smaller branches beside --size; 64 has none")
    return sizes.index(size) + 1


def _v1_stage_for_size(ckpt: Path, size: int, stage: int | None) -> int:
    """The StackGAN-v1 stage whose images are ``size`` px (64: 1, 256: 2)."""
    stages = {side: s for s, side in IMAGE_SIZE.items()}
    if size not in stages:
        raise StackGANError(f"--size {size}: {ckpt} is a StackGAN-v1 generator (64 or 256 px)")
    if stage is not None and stage != stages[size]:
        raise StackGANError(f"--size {size} and --stage {stage} ask for different outputs")
    return stages[size]


def _write_branches(
    result: GenerateResult, captions: Sequence[str], branches: Sequence[Tensor]
) -> None:
    """--show-stages for StackGAN-v2: the largest branch's PNGs, each smaller branch's as
    ``PP_KK_<size>.png``, and a grid with every branch side by side (nearest-enlarged)."""
    images = branches[-1]
    prompts, n = images.shape[:2]
    _write_samples(result, captions, images, None)
    for p in range(prompts):
        paths = []
        for branch in branches[:-1]:
            small = to_uint8(branch[p])
            suffix = f"_{branch.shape[-1]}"
            paths += [
                save_png(small[k], result.out_dir / image_name(p, k, prompts, n, suffix))
                for k in range(n)
            ]
        result.sketches.append(paths)
    size = images.shape[-1]
    enlarged = [_upsample(branch, size) for branch in branches]
    rows = torch.stack(enlarged, dim=2).flatten(1, 2)
    result.grid = save_png(captioned_grid(list(rows), captions), result.out_dir / "grid.png")


def _describe(bundle: GeneratorBundle) -> str:
    if bundle.arch == "v2":
        sizes = "/".join(str(64 * 2**i) for i in range(bundle.cfg.branch_num))
        text = f"StackGAN-v2 generator ({sizes} px)"
    else:
        text = f"Stage-{'I' * bundle.stage} generator"
    if bundle.source == "official":
        text += " (official state dict)"
    if bundle.dataset:
        text += f", trained on {bundle.dataset}"
    if bundle.epoch is not None:
        text += f", epoch {bundle.epoch}"
    if bundle.iteration is not None:
        text += f", iteration {bundle.iteration}"
    return text


def _write_samples(
    result: GenerateResult, captions: Sequence[str], images: Tensor, sketches: Tensor | None
) -> None:
    """grid.png plus one PNG per image (and per sketch when stages are shown)."""
    prompts, n = images.shape[:2]
    out_dir = result.out_dir
    for p in range(prompts):
        pixels = to_uint8(images[p])
        result.images.append(
            [save_png(pixels[k], out_dir / image_name(p, k, prompts, n)) for k in range(n)]
        )
        if sketches is not None:
            small = to_uint8(sketches[p])
            result.sketches.append(
                [
                    save_png(small[k], out_dir / image_name(p, k, prompts, n, "_stage1"))
                    for k in range(n)
                ]
            )
    if sketches is not None:
        rows = _side_by_side(_upsample(sketches, images.shape[-1]), images)
    else:
        rows = images
    result.grid = save_png(captioned_grid(list(rows), captions), out_dir / "grid.png")
