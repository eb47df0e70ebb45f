"""Generator file + prompts -> images: conditioning, sampling, interpolation, files on disk.

Reproducibility: one seed fixes, for sample k, the noise z_k and the conditioning-augmentation
noise eps_k (of each conditioning stage), drawn on the CPU in a fixed order by the family
(``Family.draw_noise``), so the same on every device. Every prompt uses the same z_k and eps_k,
so a column of the grid differs only in its text, and an image depends on the seed, its sample
index and its prompt alone, not on the other prompts (the generators run in eval mode, so the
batch does not matter either).
"""

from __future__ import annotations

import datetime as _dt
import math
import os
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from stackgan_cli.console import err
from stackgan_cli.devices import pick_device
from stackgan_cli.errors import StackGANError, UsageError
from stackgan_cli.families.base import SampleNoise
from stackgan_cli.formats import check_regular_file
from stackgan_cli.generator_file import GeneratorBundle, load_generator_file, newest_generator
from stackgan_cli.imaging import captioned_grid, save_png, side_by_side, strip, to_pixels
from stackgan_cli.limits import MAX_SAMPLES, MAX_STEPS

EMBEDDING_OPTION = "--embedding-file"


@dataclass
class GenerateResult:
    """What ``generate`` wrote: the output folder, the grid, the images (``[prompt][sample]``),
    the smaller outputs when shown (``[prompt]``: every sample's, smallest output first), the
    interpolation strip, and the seed used."""

    out_dir: Path
    seed: int
    grid: Path | None = None
    images: list[list[Path]] = field(default_factory=list)
    sketches: list[list[Path]] = field(default_factory=list)
    interpolation: Path | None = None
    attention: list[list[Path]] = field(default_factory=list)


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
    (P, text_dim) tensor.

    The header is checked before any data is read: the dtype must be real numbers (floats or
    integers), the shape must suit the generator and the file must hold as many bytes as the
    header promises, so a damaged or hostile header never makes numpy allocate its shape.
    """
    path = Path(path)
    where = f"{EMBEDDING_OPTION} {path}"
    check_regular_file(path, where)
    try:
        with open(path, "rb") as handle:
            shape, dtype = _npy_header(handle, where)
            _check_embedding_header(shape, dtype, text_dim, where)
            needed = dtype.itemsize * math.prod(shape)
            present = os.fstat(handle.fileno()).st_size - handle.tell()
            if present < needed:
                raise StackGANError(
                    f"{where} is truncated: its header promises shape {shape} of {dtype} "
                    f"({needed} bytes of data) but the file holds {present} bytes after it"
                )
            handle.seek(0)
            array = np.load(handle, allow_pickle=False)
    except OSError as exc:
        raise StackGANError(f"{where} could not be read: {exc.strerror or exc}") from None
    except ValueError as exc:
        raise StackGANError(f"{where} is not a readable .npy array ({exc})") from None
    if array.ndim == 1:
        array = array[None, :]
    if not np.isfinite(array).all():
        raise StackGANError(f"{where} contains NaN or infinite values")
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))


def _npy_header(handle: Any, where: str) -> tuple[tuple[int, ...], np.dtype]:
    """``(shape, dtype)`` from the header of the ``.npy`` file open in ``handle``, which is
    left at the start of the data."""
    readers = {
        (1, 0): np.lib.format.read_array_header_1_0,
        (2, 0): np.lib.format.read_array_header_2_0,
    }
    try:
        version = np.lib.format.read_magic(handle)
        reader = readers.get(version)
        if reader is None:
            raise ValueError(
                f"its .npy format version {version[0]}.{version[1]} is used for structured "
                "arrays only"
            )
        shape, _fortran_order, dtype = reader(handle)
    except (ValueError, EOFError) as exc:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise StackGANError(f"{where} is not a .npy array file ({message})") from None
    return tuple(int(side) for side in shape), dtype


def _check_embedding_header(
    shape: tuple[int, ...], dtype: np.dtype, text_dim: int, where: str
) -> None:
    """StackGANError unless a header's ``dtype`` holds real numbers and its ``shape`` is
    (P, text_dim) with P > 0 or (text_dim,)."""
    # Complex values would lose their imaginary part in the float32 cast, booleans, strings,
    # objects and records are not embeddings at all.
    if dtype.fields is not None or dtype.kind not in "fiu":
        raise StackGANError(
            f"{where} holds {_dtype_name(dtype)} values; embeddings are real numbers "
            "(a float or integer array)"
        )
    rows = shape[0] if len(shape) == 2 else 1
    if len(shape) not in (1, 2) or shape[-1] != text_dim or rows == 0:
        raise StackGANError(
            f"{where} has shape {shape}; this generator needs (P, {text_dim}) or ({text_dim},)"
        )


def _dtype_name(dtype: np.dtype) -> str:
    """A dtype as the user would write it: ``complex128``, ``bool``, ``<U5``, ``object``,
    or the fields of a record."""
    if dtype.fields is not None:
        return f"structured {dtype.descr}"
    return dtype.name if dtype.kind not in "SUV" else dtype.str


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
    embeddings = bundle.text_encoder.encode(list(prompts)).to("cpu")
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


def run_generator(
    bundle: GeneratorBundle,
    embeddings: Tensor,
    noise: SampleNoise,
    *,
    output: int,
    device: torch.device,
) -> list[Tensor]:
    """Images for every (embedding, sample) pair: outputs 1..``output`` of the family (a
    Stage-II file's sketch and result, a StackGAN-v2 file's branches), smallest first, each
    (P, n, 3, S, S) in [-1, 1] on the CPU."""
    family = bundle.family
    prompts, n = len(embeddings), len(noise)
    prompt_index = torch.arange(prompts).repeat_interleave(n)
    sample_index = torch.arange(n).repeat(prompts)
    batch = family.generation_batch(output)
    chunks: list[list[Tensor]] = []
    # channels_last measured ~25% faster on the CPU (oneDNN) and is the usual choice on CUDA.
    bundle.generator.to(memory_format=torch.channels_last)
    with torch.inference_mode():
        for start in range(0, prompts * n, batch):
            rows = slice(start, start + batch)
            text = embeddings[prompt_index[rows]].to(device)
            chunk = noise.select(sample_index[rows]).to(device)
            outputs = family.sample(bundle.generator, text, chunk, upto=output)
            chunks.append([images.float().cpu() for images in outputs])
    return [torch.cat(images).unflatten(0, (prompts, n)) for images in zip(*chunks, strict=True)]


def interpolate(
    bundle: GeneratorBundle,
    start: Tensor,
    end: Tensor,
    noise: SampleNoise,
    *,
    steps: int,
    output: int,
    device: torch.device,
) -> Tensor:
    """(n, steps, 3, H, W): for each sample's fixed z and CA noise, the images of the text
    ``(1 - t) * start + t * end`` (one-row conditionings, blended as the family says) for
    ``steps`` values of t from 0 to 1."""
    if steps < 2:
        raise ValueError(f"an interpolation needs at least 2 steps, got {steps}")
    weights = torch.linspace(0.0, 1.0, steps).unsqueeze(1)
    path = bundle.family.blend_text(start, end, weights)
    images = run_generator(bundle, path, noise, output=output, device=device)[-1]
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
        return embeddings[row : row + 1], captions[row]
    return encode_prompts(bundle, [normalized or text]), caption_sentence(text)


def image_name(prompt: int, sample: int, prompts: int, samples: int, suffix: str = "") -> str:
    """``<prompt>_<sample><suffix>.png``, both zero-padded to at least two digits."""
    width_p = max(2, len(str(prompts - 1)))
    width_s = max(2, len(str(samples - 1)))
    return f"{prompt:0{width_p}d}_{sample:0{width_s}d}{suffix}.png"


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
    damsm: str | Path | None = None,
    vocabulary: str | Path | None = None,
    attention: bool = False,
) -> GenerateResult:
    """Everything ``stackgan generate`` does; see its help. Returns what was written.

    ``size`` picks the output by its side: a StackGAN-v2 or AttnGAN file's branch (default its
    largest), or a StackGAN-v1 file's stage (64: stage 1, 256: stage 2). ``text_encoder`` (a
    prepared dataset or a file, see :mod:`stackgan_cli.text_encoder_source`) replaces the
    file's own; for AttnGAN files ``damsm`` does (a DAMSM file, or an official encoders folder
    with its ``vocabulary``). ``attention`` writes each AttnGAN sample's attention figure as
    ``PP_KK_attention.png``."""
    if not 1 <= n <= MAX_SAMPLES:
        raise ValueError(f"n must be between 1 and {MAX_SAMPLES}, got {n}")
    if not 2 <= steps <= MAX_STEPS:
        raise ValueError(f"steps must be between 2 and {MAX_STEPS}, got {steps}")
    check_options(prompts, stage, show_stages, size, embedding_file, interpolate_between)
    check_out_dir(out_dir)
    # A folder, a FIFO or a missing file fails before anything is loaded (and nothing blocks).
    if embedding_file is not None:
        check_regular_file(embedding_file, f"{EMBEDDING_OPTION} {embedding_file}")
    # Normalise first, so that an empty prompt fails before the generator is loaded.
    normalized = normalize_prompts(prompts) if embedding_file is None else None
    ends_normalized = [
        None if _is_row(end, embedding_file) else normalize_prompts([end])[0]
        for end in interpolate_between or ()
    ]
    if vocabulary is not None and damsm is None:
        raise UsageError("--vocabulary goes with --damsm (an official DAMSMencoders folder)")
    encoder = None
    if text_encoder is not None:
        from stackgan_cli.text_encoder_source import load_text_encoder

        encoder = load_text_encoder(text_encoder)
    damsm_text = None
    if damsm is not None:
        from stackgan_cli.damsm_file import load_damsm

        if vocabulary is not None:
            check_regular_file(Path(vocabulary).expanduser(), f"--vocabulary {vocabulary}")

        damsm_text = load_damsm(damsm, vocabulary, image_encoder=False).text
    torch_device = pick_device(device)
    if ckpt is None:
        ckpt = newest_generator()
        _say(f"using the newest generator in the cache: {ckpt}")
    bundle = load_generator_file(ckpt, device=torch_device)
    check_text_options(bundle, text_encoder, damsm, embedding_file, attention)
    if encoder is not None:
        from stackgan_cli.text_encoder_source import use_text_encoder

        use_text_encoder(bundle, encoder, text_encoder)
    if damsm_text is not None:
        use_damsm_text(bundle, damsm_text, damsm)
    output = pick_output(bundle, size=size, stage_option=stage, show_stages=show_stages)
    out_size = bundle.family.output_sizes()[output - 1]

    # All conditioning before any output, so that a bad prompt or file fails cleanly.
    embeddings: Tensor | None = None
    captions: list[str] = []
    if prompts or embedding_file is not None:
        embeddings, captions = conditioning(bundle, prompts, normalized, embedding_file)
    ends = [
        _endpoint(bundle, text, norm, embeddings, captions)
        for text, norm in zip(interpolate_between or (), ends_normalized, strict=True)
    ]
    _say(f"{ckpt}: {bundle.describe()}; {out_size}px images on {torch_device}")
    if seed is None:
        seed = secrets.randbelow(2**31)
        _say(f"seed {seed} (pass --seed {seed} to get the same images again)")
    noise = bundle.family.draw_noise(n, seed)
    result = GenerateResult(out_dir=Path(out_dir), seed=seed)

    if embeddings is not None:
        outputs = run_generator(bundle, embeddings, noise, output=output, device=torch_device)
        _write_samples(result, captions, bundle.family, outputs if show_stages else outputs[-1:])
        if attention:
            _write_attention(result, bundle, embeddings, noise, normalized, captions, torch_device)
    if ends:
        (start, first), (end, last) = ends
        strips = interpolate(
            bundle, start, end, noise, steps=steps, output=output, device=torch_device
        )
        labels = [f"{t:.2f}" for t in torch.linspace(0.0, 1.0, steps).tolist()]
        picture = strip(strips, labels, caption=f"0: {first}  |  1: {last}")
        result.interpolation = save_png(picture, result.out_dir / "interpolation.png")
    return result


def check_text_options(
    bundle: GeneratorBundle,
    text_encoder: str | Path | None,
    damsm: str | Path | None,
    embedding_file: Path | None,
    attention: bool,
) -> None:
    """StackGANError when the text options do not suit the file's family: AttnGAN reads a
    DAMSM's word features (--damsm), the others one embedding per caption (--text-encoder,
    --embedding-file)."""
    family, where = bundle.family, bundle.path
    if family.reads_words:
        for option, value in (
            ("--text-encoder", text_encoder),
            ("--embedding-file", embedding_file),
        ):
            if value is not None:
                raise StackGANError(
                    f"{option}: {where} is an {family.label}, which reads the words of typed "
                    "prompts through a DAMSM text encoder (its own, or --damsm)"
                )
    else:
        if damsm is not None:
            raise StackGANError(
                f"--damsm: {where} is a {family.label}, which reads sentence embeddings, not a "
                "DAMSM's word features (use --text-encoder)"
            )
        if attention:
            raise StackGANError(
                f"--attention: {where} is a {family.label}; only AttnGAN generators attend to words"
            )


def use_damsm_text(bundle: GeneratorBundle, text: Any, source: str | Path) -> None:
    """Replace an AttnGAN ``bundle``'s text encoder with a DAMSM's (``--damsm source``)."""
    if text.out_dim != bundle.cfg.text_dim:
        raise StackGANError(
            f"--damsm {source} gives {text.out_dim}-d features but {bundle.path} needs "
            f"{bundle.cfg.text_dim}-d ones"
        )
    bundle.text_encoder = text


def pick_output(
    bundle: GeneratorBundle, *, size: int | None, stage_option: int | None, show_stages: bool
) -> int:
    """The 1-based output of the file's family that ``--size`` or ``--stage`` asks for
    (default its largest); StackGANError when the file has no such output, when the two
    disagree, or for --show-stages at an output with nothing smaller beside it."""
    family, where = bundle.family, bundle.path
    sizes = family.output_sizes()
    output = family.select_output(size, str(where))
    if stage_option is not None:
        if not family.outputs_are_stages:
            raise StackGANError(f"--stage: {where} is a {family.label}; pick --size instead")
        if stage_option > len(sizes):
            raise StackGANError(
                f"{where} is a {family.label}: it has no stage {stage_option} "
                f"(use --stage {len(sizes)})"
            )
        if size is not None and stage_option != output:
            raise StackGANError(
                f"--size {size} and --stage {stage_option} ask for different outputs"
            )
        output = stage_option
    if show_stages and output == 1:
        asked = f"was asked for --stage {stage_option}" if stage_option else f"makes {sizes[0]} px"
        raise StackGANError(
            f"--show-stages shows the smaller outputs beside the result; {where} is a "
            f"{family.label} whose first output has none ({asked})"
        )
    return output


def _say(message: str) -> None:
    """A status line on stderr, never wrapped (paths stay whole for copying)."""
    err.print(message, highlight=False, soft_wrap=True, markup=False)


def _write_samples(
    result: GenerateResult, captions: Sequence[str], family: Any, outputs: Sequence[Tensor]
) -> None:
    """grid.png plus one PNG per image of the largest of ``outputs`` (each (P, n, 3, S, S),
    smallest first); the smaller ones (--show-stages) as ``PP_KK<suffix>.png`` and beside each
    result in the grid, enlarged."""
    *smaller, images = outputs
    prompts, n = images.shape[:2]
    out_dir = result.out_dir
    for p in range(prompts):
        pixels = to_pixels(images[p])
        result.images.append(
            [save_png(pixels[k], out_dir / image_name(p, k, prompts, n)) for k in range(n)]
        )
        if smaller:
            paths = []
            for output, small in enumerate(smaller, start=1):
                suffix = family.output_suffix(output)
                frames = to_pixels(small[p])
                paths += [
                    save_png(frames[k], out_dir / image_name(p, k, prompts, n, suffix))
                    for k in range(n)
                ]
            result.sketches.append(paths)
    grid = captioned_grid(list(side_by_side(outputs)), captions)
    result.grid = save_png(grid, out_dir / "grid.png")


def _write_attention(
    result: GenerateResult,
    bundle: GeneratorBundle,
    text: Any,
    noise: SampleNoise,
    prompts: Sequence[str],
    captions: Sequence[str],
    device: torch.device,
) -> None:
    """``PP_KK_attention.png`` for every sample: its attention figure over every output."""
    from stackgan_cli.attention_figure import sample_figures

    n = len(noise)
    figures = sample_figures(bundle, text, noise, prompts, captions, device)
    for p, row in enumerate(figures):
        paths = [
            save_png(figure, result.out_dir / image_name(p, k, len(prompts), n, "_attention"))
            for k, figure in enumerate(row)
        ]
        result.attention.append(paths)
