"""Training the text encoder on (caption, embedding) pairs, and scoring it against baselines."""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from stackgan_cli.console import task_progress
from stackgan_cli.text.baselines import mean_cosine, mean_embedding_cosine, nearest_caption_cosine
from stackgan_cli.text.encoder import (
    TextEncoder,
    TextEncoderConfig,
    TokenBatch,
    pad_ngrams,
    pad_tokens,
)
from stackgan_cli.text.threads import torch_threads
from stackgan_cli.text.tokenize import normalize_text

SAMPLE_BUDGET = 400_000
"""Default training length in caption passes: 5 epochs of full CUB (88,550 pairs; about 95 s
of one CPU core, everything included); smaller sets get more epochs, up to ``MAX_EPOCHS``."""
MIN_EPOCHS = 2
MAX_EPOCHS = 20
VALIDATION_FRACTION = 0.05
"""Share of the training images held out to pick the best epoch and to stop early."""
PATIENCE = 3
MIN_IMPROVEMENT = 2e-4
"""Training stops after ``PATIENCE`` epochs that raise the held-out cosine by less than this."""
LEARNING_RATE = 3e-3
MSE_WEIGHT = 1.0
EVAL_BATCH = 1024


@dataclass
class _Pairs:
    """Flattened (caption, embedding) pairs: ``texts[i]`` pairs with ``targets[i]``."""

    texts: list[str]
    targets: torch.Tensor  # (P, D) float32
    images: int


def _pairs(
    captions: Sequence[Sequence[str]], embeddings: np.ndarray | torch.Tensor, split: str
) -> _Pairs:
    """Caption j of image i with embedding (i, j); shapes are checked."""
    array = np.asarray(embeddings, dtype=np.float32)
    if not array.flags.writeable:  # e.g. a read-only memory map; torch wants writable memory
        array = array.copy()
    targets = torch.from_numpy(array)
    if targets.ndim != 3 or targets.shape[0] != len(captions):
        raise ValueError(
            f"{split}: embeddings must be (images, captions, dim) for {len(captions)} images, "
            f"got shape {tuple(targets.shape)}"
        )
    texts: list[str] = []
    for index, image_captions in enumerate(captions):
        if len(image_captions) != targets.shape[1]:
            raise ValueError(
                f"{split}: image {index} has {len(image_captions)} captions but "
                f"{targets.shape[1]} embeddings"
            )
        texts.extend(normalize_text(caption) for caption in image_captions)
    return _Pairs(texts, targets.reshape(-1, targets.shape[2]), len(captions))


def default_epochs(pairs: int) -> int:
    """Epochs for ``pairs`` training pairs: about ``SAMPLE_BUDGET`` caption passes in all."""
    return max(MIN_EPOCHS, min(MAX_EPOCHS, math.ceil(SAMPLE_BUDGET / max(pairs, 1))))


def default_batch_size(pairs: int) -> int:
    """A power of two near ``pairs / 32`` within [32, 256]: small sets still get ~30 steps an
    epoch, large ones the cheapest batches per caption."""
    return max(32, min(256, 2 ** int(math.log2(max(pairs // 32, 1)))))


class _TrainingSet:
    """Training captions as token tensors, ready for length-bucketed batches of the pairs in
    ``use`` (the others are held out)."""

    def __init__(
        self, encoder: TextEncoder, texts: Sequence[str], targets: torch.Tensor, use: torch.Tensor
    ) -> None:
        vocabulary = encoder.vocabulary()
        sequences = vocabulary.encode_texts(texts, max_tokens=encoder.config.max_tokens)
        # Index U (one past the distinct tokens) is an all-padding row: a zero vector.
        self.ngrams = pad_ngrams([*vocabulary.ids, []], encoder.config.buckets)
        self.tokens, self.lengths = pad_tokens(sequences, pad=len(vocabulary.ids))
        self.targets = targets
        self.use = use

    def batches(self, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
        """Shuffled batches of pair indices, each of similar lengths (sorted within blocks of
        32 batches) so little time goes into padding."""
        order = self.use[torch.randperm(len(self.use), generator=generator)]
        batches: list[torch.Tensor] = []
        block = batch_size * 32
        for start in range(0, len(order), block):
            chunk = order[start : start + block]
            chunk = chunk[torch.argsort(self.lengths[chunk], stable=True)]
            batches.extend(chunk.split(batch_size))
        shuffle = torch.randperm(len(batches), generator=generator).tolist()
        return [batches[i] for i in shuffle]

    def batch(self, indices: torch.Tensor) -> tuple[TokenBatch, torch.Tensor]:
        """Token batch and (B, D) targets of the given pairs."""
        lengths = self.lengths[indices]
        tokens = self.tokens[indices, : int(lengths.max())]
        distinct, inverse = torch.unique(tokens, return_inverse=True)
        return TokenBatch(self.ngrams[distinct], inverse, lengths), self.targets[indices]


def predict(encoder: TextEncoder, texts: Sequence[str]) -> torch.Tensor:
    """(N, D) CPU predictions for normalised texts (no prompt checks), in eval mode."""
    encoder.eval()
    device = next(encoder.parameters()).device
    # Batches of similar lengths waste little work on padding.
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    out = torch.zeros(len(texts), encoder.config.out_dim)
    with torch.no_grad():
        for start in range(0, len(order), EVAL_BATCH):
            chunk = order[start : start + EVAL_BATCH]
            batch = encoder.batch([texts[i] for i in chunk]).to(device)
            out[chunk] = encoder(batch).float().cpu()
    return out


def regression_loss(predicted: torch.Tensor, target: torch.Tensor, scale: float) -> torch.Tensor:
    """1 - cosine (direction) plus MSE relative to the targets' mean square (length)."""
    cosine = nn.functional.cosine_similarity(predicted, target, dim=1)
    return (1.0 - cosine).mean() + MSE_WEIGHT * (predicted - target).pow(2).mean() / scale


def _adamw(module: nn.Module) -> torch.optim.Optimizer:
    """AdamW, fused where this torch can (on CPU from 2.4): most of the parameters are the
    n-gram table, and the unfused update of it costs more than the forward pass."""
    try:
        return torch.optim.AdamW(module.parameters(), lr=LEARNING_RATE, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(module.parameters(), lr=LEARNING_RATE)


@contextlib.contextmanager
def _progress(total: int, enabled: bool) -> Iterator[Callable[[], None]]:
    """A step counter on the shared progress bar (hidden when ``enabled`` is false)."""
    bar = task_progress()
    bar.disable = bar.disable or not enabled
    with bar:
        task = bar.add_task("training the text encoder", total=total)
        yield lambda: bar.advance(task)
        bar.update(task, completed=total)  # early stopping ends short of the planned steps


def _split_validation(
    pairs: _Pairs, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pair indices for training and for held-out validation, holding out whole images."""
    per_image = len(pairs.texts) // max(pairs.images, 1)
    held_images = round(pairs.images * VALIDATION_FRACTION) or (1 if pairs.images >= 4 else 0)
    image_order = torch.randperm(pairs.images, generator=generator)
    held = torch.zeros(pairs.images, dtype=torch.bool)
    held[image_order[:held_images]] = True
    held_pairs = held.repeat_interleave(per_image)
    indices = torch.arange(len(pairs.texts))
    return indices[~held_pairs], indices[held_pairs]


def train_text_encoder(
    train_captions: Sequence[Sequence[str]],
    train_embeddings: np.ndarray | torch.Tensor,
    test_captions: Sequence[Sequence[str]],
    test_embeddings: np.ndarray | torch.Tensor,
    *,
    seed: int = 0,
    epochs: int | None = None,
    progress: bool = True,
) -> tuple[TextEncoder, dict]:
    """Train an encoder from captions to their embeddings and score it on the test split.

    ``*_captions`` are lists (one per image) of caption lists; ``*_embeddings`` are (images,
    captions, D) float arrays, caption j pairing with embedding j. ``epochs`` overrides the
    size-based default (``default_epochs``). Training runs on one CPU thread, is reproducible
    for a given ``seed`` and leaves the global random state untouched.

    Returns the encoder (CPU, eval mode) and the report: ``test_cosine`` (mean cosine between
    predicted and true embeddings over all test pairs), the same for the two baselines
    (``baseline_mean_embedding_cosine``, ``baseline_nearest_caption_cosine``), ``train_pairs``,
    ``test_pairs`` and ``seconds``.
    """
    started = time.perf_counter()
    train = _pairs(train_captions, train_embeddings, "train")
    test = _pairs(test_captions, test_embeddings, "test")
    if len(train.texts) == 0:
        raise ValueError("train: no captions to learn from")
    if test.targets.shape[1] != train.targets.shape[1]:
        raise ValueError(
            f"train and test embeddings differ in size ({train.targets.shape[1]} vs "
            f"{test.targets.shape[1]})"
        )
    epochs = default_epochs(len(train.texts)) if epochs is None else epochs
    if epochs < 1:
        raise ValueError(f"epochs must be at least 1, got {epochs}")

    # One thread: the results then do not depend on the machine's core count, and on shared
    # cores two threads ran 3-4x slower than one (full CUB: 516 s against 161 s).
    with torch_threads(1):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            generator = torch.Generator().manual_seed(seed)
            encoder = _fit(train, epochs, generator, progress)
        report = {
            "test_cosine": mean_cosine(predict(encoder, test.texts), test.targets),
            "baseline_mean_embedding_cosine": mean_embedding_cosine(train.targets, test.targets),
            "baseline_nearest_caption_cosine": nearest_caption_cosine(
                train.texts, train.targets, test.texts, test.targets
            ),
            "train_pairs": len(train.texts),
            "test_pairs": len(test.texts),
        }
    report["seconds"] = time.perf_counter() - started
    return encoder, report


def _fit(train: _Pairs, epochs: int, generator: torch.Generator, progress: bool) -> TextEncoder:
    alphabet = "".join(sorted(set("".join(train.texts)) - {" "}))
    config = TextEncoderConfig(out_dim=int(train.targets.shape[1]), alphabet=alphabet)
    encoder = TextEncoder(config)
    with torch.no_grad():
        # Start from the mean-embedding baseline, and learn the differences.
        encoder.head[-1].bias.copy_(train.targets.mean(dim=0, dtype=torch.float64))
        encoder.head[-1].weight.mul_(0.1)
    scale = (torch.linalg.vector_norm(train.targets).item() ** 2 / train.targets.numel()) or 1.0

    fit_indices, held_indices = _split_validation(train, generator)
    data = _TrainingSet(encoder, train.texts, train.targets, use=fit_indices)
    held_texts = [train.texts[i] for i in held_indices.tolist()]
    held_targets = train.targets[held_indices]

    batch_size = default_batch_size(len(fit_indices))
    steps_per_epoch = math.ceil(len(fit_indices) / batch_size)
    optimizer = _adamw(encoder)
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=LEARNING_RATE, total_steps=epochs * steps_per_epoch, pct_start=0.1
    )
    best_score, best_state, stale = -math.inf, None, 0
    with _progress(epochs * steps_per_epoch, progress) as advance:
        for _ in range(epochs):
            encoder.train()
            for indices in data.batches(batch_size, generator):
                batch, target = data.batch(indices)
                loss = regression_loss(encoder(batch), target, scale)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
                advance()
            if not held_texts:
                continue
            score = mean_cosine(predict(encoder, held_texts), held_targets)
            stale = stale + 1 if score < best_score + MIN_IMPROVEMENT else 0
            if score > best_score:
                best_score, best_state = score, copy.deepcopy(encoder.state_dict())
            if stale >= PATIENCE:
                break
    if best_state is not None:
        encoder.load_state_dict(best_state)
    return encoder.round_weights_().eval()
