"""Train the text encoder on one dataset and print its quality report as JSON.

    python benchmarks/text_encoder_quality.py                       # ../shared/data/cub-mini
    python benchmarks/text_encoder_quality.py --raw DIR             # any raw CUB-layout folder
    python benchmarks/text_encoder_quality.py --prepared shapes     # a prepared dataset
    python benchmarks/text_encoder_quality.py --shapes 1000         # fresh synthetic shapes
    python benchmarks/text_encoder_quality.py --full-cub-captions ../shared/data/cub-captions

``--full-cub-captions`` measures time at full CUB scale (88,550 training pairs): it uses the
real captions with stand-in targets (a fixed pseudo-random vector per word, summed), since
the real embeddings are not available offline; its cosine figures describe those targets only.

Besides the report it prints the epochs, the process CPU seconds of training (which runs on
one thread, so CPU seconds close to ``seconds`` mean the core was not shared), the saved size
of the encoder and the median time to encode one sentence on CPU.
"""

from __future__ import annotations

import argparse
import io
import json
import pickle
import re
import statistics
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
import torch

from stackgan_cli.text import TextEncoder, train_text_encoder
from stackgan_cli.text.training import default_epochs

DEFAULT_RAW = Path(__file__).resolve().parents[2] / "shared" / "data" / "cub-mini"
PROMPT = "a small bird with a red head, black wings and a short pointed beak"


def read_raw(root: Path) -> dict[str, tuple[list[list[str]], np.ndarray]]:
    """(captions, embeddings) per split from a raw layout (``birds/{train,test}``, text_c10)."""
    splits = {}
    for split in ("train", "test"):
        folder = root / "birds" / split
        with open(folder / "filenames.pickle", "rb") as f:
            keys = pickle.load(f, encoding="latin1")
        with open(folder / "char-CNN-RNN-embeddings.pickle", "rb") as f:
            embeddings = np.stack(
                [np.asarray(e, dtype=np.float32) for e in pickle.load(f, encoding="latin1")]
            )
        captions = [_captions(root, key, embeddings.shape[1]) for key in keys]
        splits[split] = (captions, embeddings)
    return splits


def _captions(root: Path, key: str, count: int) -> list[str]:
    lines = (root / "birds" / "text_c10" / f"{key}.txt").read_text(encoding="utf-8").splitlines()
    return lines[:count]


def read_prepared(name: str) -> dict[str, tuple[list[list[str]], np.ndarray]]:
    """(captions, embeddings) per split of a prepared dataset."""
    from stackgan_cli.data.prepared import load_prepared

    dataset = load_prepared(name)
    return {
        split: (dataset.split(split).captions, np.asarray(dataset.split(split).embeddings))
        for split in ("train", "test")
    }


def read_shapes(images: int) -> dict[str, tuple[list[list[str]], np.ndarray]]:
    """A freshly generated synthetic shapes dataset, read back from its raw layout."""
    from stackgan_cli.data.shapes import write_shapes_raw

    with tempfile.TemporaryDirectory() as folder:
        write_shapes_raw(Path(folder), images=images, seed=0)
        return read_raw(Path(folder))


def read_full_captions(
    root: Path, dim: int = 1024
) -> dict[str, tuple[list[list[str]], np.ndarray]]:
    """Full CUB captions with stand-in targets: per-word pseudo-random vectors, summed."""
    word = re.compile(r"[a-z]+")
    vectors: dict[str, np.ndarray] = {}

    def embed(caption: str) -> np.ndarray:
        total = np.zeros(dim, dtype=np.float32)
        for w in word.findall(caption.lower()):
            if w not in vectors:
                seed = zlib.crc32(w.encode())
                vectors[w] = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
            total += vectors[w]
        return total * (4.61 / max(float(np.linalg.norm(total)), 1e-6))

    splits = {}
    for split in ("train", "test"):
        with open(root / "birds" / split / "filenames.pickle", "rb") as f:
            keys = pickle.load(f, encoding="latin1")
        captions = [_captions(root, key, 10) for key in keys]
        embeddings = np.stack([np.stack([embed(c) for c in caps]) for caps in captions])
        splits[split] = (captions, embeddings)
    return splits


def inference_ms(encoder: TextEncoder, repeats: int = 200) -> float:
    """Median wall time, in ms, to encode one sentence on CPU."""
    encoder.encode([PROMPT])
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        encoder.encode([PROMPT])
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000.0


def main() -> None:
    """Parse the options, train, and print the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--raw", type=Path, help="raw CUB-layout folder (default: cub-mini)")
    source.add_argument("--prepared", help="prepared dataset name or path")
    source.add_argument("--shapes", type=int, metavar="IMAGES", help="generate shapes")
    source.add_argument("--full-cub-captions", type=Path, metavar="DIR", help="timing at scale")
    parser.add_argument("--epochs", type=int, default=None, help="default: by dataset size")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    if args.prepared:
        name, data = f"prepared:{args.prepared}", read_prepared(args.prepared)
    elif args.shapes:
        name, data = f"shapes:{args.shapes}", read_shapes(args.shapes)
    elif args.full_cub_captions:
        name, data = "cub-captions (stand-in targets)", read_full_captions(args.full_cub_captions)
    else:
        root = args.raw or DEFAULT_RAW
        name, data = str(root), read_raw(root)

    (train_captions, train_embeddings), (test_captions, test_embeddings) = (
        data["train"],
        data["test"],
    )
    cpu_start = time.process_time()
    encoder, report = train_text_encoder(
        train_captions,
        train_embeddings,
        test_captions,
        test_embeddings,
        seed=args.seed,
        epochs=args.epochs,
        progress=sys.stderr.isatty(),
    )
    cpu_seconds = time.process_time() - cpu_start
    buffer = io.BytesIO()
    torch.save(encoder.to_dict(), buffer)
    report.update(
        dataset=name,
        epochs=args.epochs or default_epochs(report["train_pairs"]),
        process_cpu_seconds=round(cpu_seconds, 2),
        saved_bytes=buffer.tell(),
        inference_ms_per_sentence=round(inference_ms(encoder), 3),
    )
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
