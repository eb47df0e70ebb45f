"""R-precision: does the DAMSM rank an image's own caption first among 100?

The AttnGAN paper's definition (attngan-spec.md section 10), computed the way the
implementation others use computes it (MinfengZhu/DM-GAN ``code/trainer.py`` and
``datasets.py``):

- For each scored image (a generated sample, or a real test image with ``--real``) the
  candidates are its ground-truth caption (the one it was generated from; for a real image one
  of its own captions) and :data:`MISMATCHED` = 99 mismatched ones. Each mismatched caption is a
  uniformly random caption of a uniformly random test image of a **different class** (without
  class ids: a different image), drawn independently, so with replacement (a caption may be
  drawn twice for one image), from a numpy generator seeded with ``seed``: the metric
  reproduces exactly for a seed.
- All candidates are encoded by the DAMSM text encoder (sentence features; each caption alone,
  with a zero initial state; words outside the vocabulary left out; a caption with no known
  word becomes the single id 0, as ``Family.caption_text`` conditions AttnGAN on it). Because a
  caption's feature never depends on the others, the sentence features of every test caption
  are computed once (:func:`sentence_table`) and indexed.
- The image's DAMSM global code (``cnn_code`` of the image encoder, eval mode; images in
  [-1, 1], resized to 299 inside the encoder) is compared with each candidate by cosine
  similarity (norms clamped at 1e-8, as DM-GAN); it is a hit when the ground truth scores
  strictly higher than all 99 mismatched captions. **A tie for first place counts as a miss**
  (DM-GAN's ``argmax == 0`` would count it as a hit); ties are counted and reported.
- The hits are shuffled (same generator) and cut into ``splits`` groups (``numpy.array_split``:
  sizes differ by at most one); the result is the mean and standard deviation (numpy's, ddof 0)
  of the groups' hit rates. Each rate is the plain mean of its group: DM-GAN divides each
  group's sum by one element less than the group holds (3,000 hits over 2,999), an off-by-one
  not reproduced here.

Differences from DM-GAN that remain: captions are encoded whole (DM-GAN's loader keeps a random
18 of the words of a longer caption, TEXT.WORDS_NUM; CUB captions are rarely that long), the
generated images are scored after the 8-bit conversion that IS and FID see (DM-GAN feeds the
float images), and the samples follow :mod:`stackgan_cli.evaluation.sampling`'s caption
schedule rather than one random caption per image per pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from stackgan_cli.text.words import END, caption_tokens

MISMATCHED = 99
"""Mismatched captions per image: with the ground truth, 100 candidates."""
NORM_EPS = 1e-8
"""Lower bound of the product of the two norms in a cosine (DM-GAN's clamp)."""
TEXT_BATCH = 256
"""Captions per text-encoder call in :func:`sentence_table`."""
SCORE_CHUNK = 1024
"""Images whose 100 cosines are computed at once in :func:`rank_hits`."""

PROTOCOL = (
    f"cosine(DAMSM cnn_code of the image, DAMSM sentence feature) of its ground-truth caption vs "
    f"{MISMATCHED} random captions of random test images of other classes (seeded, with "
    "replacement); hit if the ground truth is strictly first (ties are misses); mean and std "
    "of the hit rate over the shuffled splits"
)


@dataclass(frozen=True)
class RPrecision:
    """The outcome: ``mean`` and ``std`` over the ``split_rates``; ``hits`` (S,) bool in the
    order of the scored images; ``ties``: images whose ground truth tied for first (misses)."""

    mean: float
    std: float
    split_rates: tuple[float, ...]
    hits: np.ndarray
    ties: int

    @property
    def samples(self) -> int:
        return int(self.hits.shape[0])

    @property
    def splits(self) -> int:
        return len(self.split_rates)


def caption_ids(vocabulary: Any, captions: Sequence[str]) -> tuple[list[list[int]], int]:
    """Word ids of each caption (``WordVocabulary.encode``'s rule: unknown words left out) and
    how many captions had no known word (those become ``[0]``). The vocabulary's word index is
    built once for all the captions."""
    index = vocabulary.index
    ids, empty = [], 0
    for caption in captions:
        words = [index[t] for t in caption_tokens(caption) if t in index and t != END]
        if not words:
            empty += 1
            words = [0]
        ids.append(words)
    return ids, empty


@torch.no_grad()
def encode_sentences(text: Any, ids: Sequence[Sequence[int]], batch: int = TEXT_BATCH) -> Tensor:
    """(P, D) float32 CPU sentence features of captions given as word ids, each as if encoded
    alone with a zero initial state (``DAMSMText.encode_ids``): the encoder packs each batch by
    the captions' own lengths, so a caption's feature does not depend on its neighbours (up to
    float rounding, about 1e-7). Batches hold captions of similar lengths (sorted, longest
    first, as the official code sorts them)."""
    encoder = text.encoder.eval()
    device = next(encoder.parameters()).device
    lengths = np.array([len(caption) for caption in ids], dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    out = torch.zeros(len(ids), text.out_dim)
    for start in range(0, len(ids), batch):
        rows = order[start : start + batch]
        longest = int(lengths[rows[0]])
        tokens = torch.zeros(len(rows), longest, dtype=torch.int64)
        for row, caption in enumerate(rows):
            tokens[row, : lengths[caption]] = torch.as_tensor(ids[caption], dtype=torch.int64)
        _, sentence = encoder(tokens.to(device), torch.from_numpy(lengths[rows]))
        out[torch.from_numpy(rows)] = sentence.float().cpu()
    return out


def sentence_table(text: Any, captions: Sequence[Sequence[str]]) -> tuple[Tensor, int]:
    """(N, K, D) sentence features of the K captions of each of N images (a prepared split's
    ``captions``), and how many captions had no known word."""
    counts = {len(row) for row in captions}
    if len(counts) != 1:
        raise ValueError("every image needs the same number of captions")
    per_image = counts.pop()
    flat = [caption for row in captions for caption in row]
    ids, empty = caption_ids(text.vocabulary, flat)
    features = encode_sentences(text, ids)
    return features.view(len(captions), per_image, -1), empty


def draw_mismatched(
    image_idx: np.ndarray,
    class_ids: np.ndarray | None,
    num_images: int,
    captions_per_image: int,
    rng: np.random.Generator,
    count: int = MISMATCHED,
) -> tuple[np.ndarray, np.ndarray]:
    """(S, count) image and caption indices of the mismatched captions of S images whose
    test images are ``image_idx``: each a uniformly random image of another class (with
    ``class_ids`` None, another image) and a uniformly random caption of it, independently."""
    image_idx = np.asarray(image_idx, dtype=np.int64)
    classes = (
        np.arange(num_images, dtype=np.int64)
        if class_ids is None
        else np.asarray(class_ids).reshape(-1)
    )
    if classes.shape[0] != num_images:
        raise ValueError(f"class_ids must hold {num_images} ids, got {classes.shape[0]}")
    # Images sorted by class: the other-class images of class c are this order without c's
    # block, so the r-th of them is order[r] before the block and order[r + size] after it.
    order = np.argsort(classes, kind="stable")
    labels, first, sizes = np.unique(classes[order], return_index=True, return_counts=True)
    block = np.searchsorted(labels, classes[image_idx])
    start, size = first[block], sizes[block]
    others = num_images - size
    if (others < 1).any():
        what = "class" if class_ids is not None else "image"
        raise ValueError(f"R-precision needs test images of more than one {what}")
    r = rng.integers(0, others[:, None], size=(len(image_idx), count))
    r = np.where(r >= start[:, None], r + size[:, None], r)
    images = order[r]
    captions = rng.integers(0, captions_per_image, size=(len(image_idx), count))
    return images, captions


def rank_hits(codes: Tensor, truth: Tensor, mismatched: Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Hits and ties of S images: ``codes`` (S, D) image codes, ``truth`` (S, D) their
    ground-truth sentence features, ``mismatched`` (S, M, D) the others. A hit: the ground
    truth's cosine is strictly the largest; a tie: it equals the largest mismatched one."""
    candidates = torch.cat([truth[:, None], mismatched], dim=1).double()
    codes = codes.double()
    dots = torch.einsum("sd,smd->sm", codes, candidates)
    norms = codes.norm(dim=1, keepdim=True) * candidates.norm(dim=2)
    cosines = dots / norms.clamp(min=NORM_EPS)
    best_other = cosines[:, 1:].max(dim=1).values
    hits = (cosines[:, 0] > best_other).numpy()
    ties = (cosines[:, 0] == best_other).numpy()
    return hits, ties


def split_rates(hits: np.ndarray, splits: int, rng: np.random.Generator) -> tuple[float, ...]:
    """Hit rates of ``splits`` groups of the shuffled ``hits`` (each the plain mean)."""
    if not 1 <= splits <= len(hits):
        raise ValueError(f"splits must be between 1 and the {len(hits)} samples, got {splits}")
    shuffled = np.asarray(hits, dtype=np.float64)[rng.permutation(len(hits))]
    return tuple(float(group.mean()) for group in np.array_split(shuffled, splits))


def r_precision(
    codes: Tensor,
    sentences: Tensor,
    image_idx: np.ndarray,
    caption_idx: np.ndarray,
    *,
    class_ids: np.ndarray | None,
    splits: int,
    seed: int,
    mismatched: int = MISMATCHED,
) -> RPrecision:
    """R-precision of S images (see the module docstring): ``codes`` (S, D) their DAMSM
    ``cnn_code``, ``sentences`` (N, K, D) the sentence features of the K captions of each of
    the N test images, image ``s`` made from (or being) caption ``caption_idx[s]`` of test
    image ``image_idx[s]``; ``class_ids`` (N,) or None."""
    image_idx = np.asarray(image_idx, dtype=np.int64)
    caption_idx = np.asarray(caption_idx, dtype=np.int64)
    if codes.dim() != 2 or codes.shape[0] != len(image_idx) or len(caption_idx) != len(image_idx):
        raise ValueError("codes, image_idx and caption_idx must describe the same images")
    if sentences.dim() != 3 or sentences.shape[2] != codes.shape[1]:
        raise ValueError(
            f"sentences must be (N, K, {codes.shape[1]}), got {tuple(sentences.shape)}"
        )
    if not 1 <= splits <= len(image_idx):
        raise ValueError(f"splits must be between 1 and the {len(image_idx)} samples")
    rng = np.random.default_rng(seed)
    num_images, per_image = sentences.shape[:2]
    other_images, other_captions = draw_mismatched(
        image_idx, class_ids, num_images, per_image, rng, mismatched
    )
    codes = codes.detach().float().cpu()
    sentences = sentences.detach().float().cpu()
    hits, ties = [], []
    for start in range(0, len(image_idx), SCORE_CHUNK):
        rows = slice(start, start + SCORE_CHUNK)
        truth = sentences[torch.from_numpy(image_idx[rows]), torch.from_numpy(caption_idx[rows])]
        others = sentences[
            torch.from_numpy(other_images[rows]), torch.from_numpy(other_captions[rows])
        ]
        chunk_hits, chunk_ties = rank_hits(codes[rows], truth, others)
        hits.append(chunk_hits)
        ties.append(chunk_ties)
    all_hits = np.concatenate(hits)
    rates = split_rates(all_hits, splits, rng)
    return RPrecision(
        mean=float(np.mean(rates)),
        std=float(np.std(rates)),
        split_rates=rates,
        hits=all_hits,
        ties=int(np.concatenate(ties).sum()),
    )


@torch.no_grad()
def image_codes(encoder: torch.nn.Module, images: Tensor) -> Tensor:
    """(B, D) float32 CPU DAMSM ``cnn_code`` of uint8 (B, 3, H, W) images (the 8-bit images IS
    and FID see), mapped to [-1, 1] as ``x / 127.5 - 1``; the encoder (eval mode) resizes to
    299 itself."""
    device = next(encoder.parameters()).device
    scaled = images.to(device).float() / 127.5 - 1.0
    _, code = encoder.eval()(scaled)
    return code.float().cpu()
