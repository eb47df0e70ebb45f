"""The training batch: what the samplers hand the training step, as one typed record."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


@dataclass(frozen=True)
class Batch:
    """One step's data on the training device.

    ``images`` (B, 3, S, S) in [-1, 1]: the real crops at the family's training size;
    ``text`` (B, D): one caption embedding per image; ``wrong`` (B, 3, S, S): images of other
    classes for the mismatched pairs, where the family draws them apart (StackGAN-v2), else
    None (StackGAN-v1 shifts the real batch). ``tokens``, ``token_mask`` and ``class_ids`` are
    room for families that read the words of a caption or their classes; None when unused.
    ``view_rows`` (B,): rows of a trunk feature cache (training/trunk_cache.py) that stand in
    for ``images`` (then None) in DAMSM pre-training over cached views.
    """

    images: Tensor | None
    text: Tensor
    wrong: Tensor | None = None
    tokens: Tensor | None = None  # (B, T) int64 word ids, 0 = padding
    token_mask: Tensor | None = None  # (B, T) bool, True = padding
    class_ids: Tensor | None = None  # (B,) int64
    view_rows: Tensor | None = None  # (B,) int64

    def __len__(self) -> int:
        return self.text.shape[0]
