"""A DAMSM's sentence features as the text embeddings of StackGAN-v1 and v2.

A dataset of one's own has no char-CNN-RNN embeddings. A DAMSM trained on its image-caption
pairs (``stackgan train --arch damsm --dataset NAME``) gives every caption a sentence vector
grounded in the images, and those vectors take the embeddings' place: StackGAN-v1 and v2 train
on them (``train --damsm FILE``), and the generator file carries the DAMSM text encoder as a
:class:`DAMSMSentenceEncoder`, so that ``generate`` embeds any sentence the same way.

A caption's sentence vector is the DAMSM text encoder's final hidden states over its known words
(at most ``damsm_text.MAX_WORDS``; a caption with none reads as ``<end>``), as
:meth:`DAMSMText.encode` gives them for a prompt.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from stackgan_cli.text.damsm_text import MAX_WORDS, DAMSMText

FEATURES = "sentence"  # the marker of a sentence encoder's dict (beside DAMSMText's own keys)
_BATCH = 256  # captions encoded at a time


@dataclass(frozen=True)
class SentenceEncoderConfig:
    """What users of a text encoder read of its configuration."""

    out_dim: int


class DAMSMSentenceEncoder:
    """Free text -> DAMSM sentence features (P, D): the text encoder of a StackGAN-v1/v2
    generator trained on a DAMSM's sentence features."""

    def __init__(self, text: DAMSMText) -> None:
        self.text = text
        self.config = SentenceEncoderConfig(out_dim=text.out_dim)

    @property
    def vocabulary(self) -> Any:
        return self.text.vocabulary

    @property
    def fingerprint(self) -> str:
        return self.text.fingerprint

    def encode(self, prompts: Sequence[str]) -> Tensor:
        """One sentence vector per prompt (unknown words left out with one warning)."""
        return self.text.encode(prompts).sentence

    def embed_captions(self, captions: Sequence[str]) -> Tensor:
        """The sentence features (P, D) of dataset captions, as training embedded them (no
        warning for unknown words: they are left out, as in training)."""
        return torch.from_numpy(caption_sentences(self.text, [[c] for c in captions])[:, 0])

    def to_dict(self) -> dict[str, Any]:
        return {**self.text.to_dict(), "features": FEATURES}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str) -> DAMSMSentenceEncoder:
        return cls(DAMSMText.from_dict(data, where))


def is_sentence_encoder_dict(data: Mapping[str, Any]) -> bool:
    """Whether a text-encoder entry is a :class:`DAMSMSentenceEncoder`'s."""
    return data.get("features") == FEATURES


@torch.no_grad()
def caption_sentences(text: DAMSMText, captions: Sequence[Sequence[str]]) -> np.ndarray:
    """Sentence features (N, K, D) float32 of K captions of each of N images, encoded in
    batches (rows padded; the encoder packs them, so a caption's vector does not depend on the
    others beyond float rounding)."""
    flat = [caption for image in captions for caption in image]
    per_image = len(captions[0]) if captions else 0
    encoder = text.encoder.eval()
    out = np.empty((len(flat), text.out_dim), dtype=np.float32)
    for start in range(0, len(flat), _BATCH):
        chunk = flat[start : start + _BATCH]
        ids = [text.vocabulary.encode(caption)[0][:MAX_WORDS] or [0] for caption in chunk]
        lengths = torch.tensor([len(row) for row in ids], dtype=torch.int64)
        tokens = torch.zeros(len(ids), int(lengths.max()), dtype=torch.int64)
        for row, caption in enumerate(ids):
            tokens[row, : len(caption)] = torch.tensor(caption)
        _, sentence = encoder(tokens, lengths)
        out[start : start + len(ids)] = sentence.float().numpy()
    return out.reshape(len(captions), per_image, text.out_dim)
