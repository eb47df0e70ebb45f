"""Free text -> DAMSM word and sentence features: what an AttnGAN generator reads.

:class:`DAMSMText` is a DAMSM text encoder (the bi-LSTM of models/damsm.py) with the word
vocabulary it was trained with. It encodes each prompt alone (a batch of one, zero initial
state), so a prompt's features never depend on the other prompts, and returns
:class:`WordFeatures`: one row per prompt, the word columns zero-padded to the longest.

Saved as a plain dict (``to_dict``), inside AttnGAN generator files and DAMSM files, loaded with
``weights_only=True``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import torch
from torch import Tensor

from stackgan_cli.console import warn
from stackgan_cli.errors import StackGANError
from stackgan_cli.formats import check_format
from stackgan_cli.models.config import ModelConfig
from stackgan_cli.text.words import WordVocabulary

FORMAT = "stackgan-damsm-text"
FORMAT_VERSION = 1
MAX_WORDS = 64
"""Words read of one prompt; the longest CUB caption has fewer than 60."""


@dataclass(frozen=True)
class WordFeatures:
    """DAMSM features of P captions: ``sentence`` (P, D), ``words`` (P, D, T) zero past each
    caption's length, ``lengths`` (P,) int64 (every length at least 1)."""

    sentence: Tensor
    words: Tensor
    lengths: Tensor

    def __len__(self) -> int:
        return self.sentence.shape[0]

    @property
    def shape(self) -> torch.Size:
        """(P, D): the shape of the sentence features, which stand where a plain embedding
        matrix stands for the other families."""
        return self.sentence.shape

    @staticmethod
    def blend(start: WordFeatures, end: WordFeatures, weights: Tensor) -> WordFeatures:
        """For each weight t of ``weights`` (S, 1), ``(1 - t) start + t end`` of two one-row
        features: sentences and words blended, the shorter caption's words padded with zeros,
        every row as long as the longer caption."""
        length = int(max(start.lengths.max(), end.lengths.max()))
        words = [
            torch.nn.functional.pad(f.words[0], (0, length - f.words.shape[2]))
            for f in (start, end)
        ]
        w = weights.reshape(-1, 1, 1)
        return WordFeatures(
            sentence=(1.0 - weights) * start.sentence + weights * end.sentence,
            words=(1.0 - w) * words[0] + w * words[1],
            lengths=torch.full((weights.shape[0],), length, dtype=torch.int64),
        )

    @property
    def mask(self) -> Tensor:
        """(P, T) bool, True at the padding past each caption's words."""
        columns = torch.arange(self.words.shape[2], device=self.words.device)
        return columns[None, :] >= self.lengths.to(self.words.device)[:, None]

    def __getitem__(self, index: Tensor | slice) -> WordFeatures:
        """The rows ``index``, their word columns cut to the longest of them."""
        lengths = self.lengths[index]
        longest = int(lengths.max()) if len(lengths) else 0
        return WordFeatures(self.sentence[index], self.words[index][:, :, :longest], lengths)

    def to(self, device: torch.device | str) -> WordFeatures:
        return WordFeatures(self.sentence.to(device), self.words.to(device), self.lengths)


class DAMSMText:
    """A DAMSM text encoder (eval mode, CPU) and its vocabulary; ``cfg`` holds its widths
    (``text_dim``: the feature size; the word-embedding size where the config has one)."""

    def __init__(self, encoder: torch.nn.Module, vocabulary: WordVocabulary, cfg: ModelConfig):
        self.encoder = encoder.eval()
        self.vocabulary = vocabulary
        self.cfg = cfg

    @property
    def out_dim(self) -> int:
        return self.cfg.text_dim

    @cached_property
    def fingerprint(self) -> str:
        """SHA-256 of the widths, the vocabulary and the weights: what the encoder computes,
        whatever file it came from."""
        digest = hashlib.sha256()
        digest.update(json.dumps(self.cfg.to_dict(), sort_keys=True).encode())
        digest.update("\n".join(self.vocabulary.words).encode())
        for key, value in sorted(self.encoder.state_dict().items()):
            digest.update(key.encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def token_ids(self, prompts: Sequence[str]) -> list[list[int]]:
        """Each prompt's word ids; one warning names the words outside the vocabulary, and a
        prompt with no known word is an error."""
        ids, unknown = [], {}
        for prompt in prompts:
            words, dropped = self.vocabulary.encode(prompt)
            unknown.update(dict.fromkeys(dropped))
            if not words:
                raise StackGANError(
                    f"the prompt {prompt!r} has no word this text encoder knows "
                    f"(its vocabulary has {len(self.vocabulary) - 1} words)"
                )
            if len(words) > MAX_WORDS:
                warn(f"a prompt has {len(words)} words; only its first {MAX_WORDS} are read")
                words = words[:MAX_WORDS]
            ids.append(words)
        if unknown:
            names = ", ".join(repr(word) for word in list(unknown)[:12])
            more = f" and {len(unknown) - 12} more" if len(unknown) > 12 else ""
            warn(f"words outside the vocabulary are left out: {names}{more}")
        return ids

    @torch.no_grad()
    def encode_ids(self, ids: Sequence[Sequence[int]]) -> WordFeatures:
        """Features of captions given as word ids, each encoded alone."""
        device = next(self.encoder.parameters()).device
        sentences, words = [], []
        for caption in ids:
            tokens = torch.tensor([list(caption)], dtype=torch.int64, device=device)
            length = torch.tensor([len(caption)], dtype=torch.int64)
            word, sentence = self.encoder(tokens, length)
            sentences.append(sentence.float().cpu())
            words.append(word.float().cpu())
        longest = max(w.shape[2] for w in words)
        padded = torch.zeros(len(words), words[0].shape[1], longest)
        for row, word in enumerate(words):
            padded[row, :, : word.shape[2]] = word[0]
        lengths = torch.tensor([len(caption) for caption in ids], dtype=torch.int64)
        return WordFeatures(torch.cat(sentences), padded, lengths)

    def encode(self, prompts: Sequence[str]) -> WordFeatures:
        """Features of free-text prompts (see :meth:`token_ids`)."""
        return self.encode_ids(self.token_ids(prompts))

    def to_dict(self) -> dict[str, Any]:
        """A plain dict of the encoder's weights (CPU), widths and vocabulary."""
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "model_config": self.cfg.to_dict(),
            "vocabulary": list(self.vocabulary.words),
            "state": {k: v.detach().cpu() for k, v in self.encoder.state_dict().items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str) -> DAMSMText:
        """Inverse of :meth:`to_dict`; one-line StackGANError naming ``where`` for a dict that
        is not one, or whose weights do not fit its widths and vocabulary."""
        check_format(
            data,
            tag=FORMAT,
            versions=(FORMAT_VERSION,),
            where=where,
            what="DAMSM text encoder",
            remedy="a newer stackgan may read it",
        )
        words = data.get("vocabulary")
        if not isinstance(words, Sequence) or not all(isinstance(w, str) for w in words):
            raise StackGANError(f"{where}: the DAMSM text encoder's vocabulary is not a word list")
        cfg = ModelConfig.from_dict(data.get("model_config"))
        state = data.get("state")
        if not isinstance(state, Mapping):
            raise StackGANError(f"{where}: the DAMSM text encoder holds no weights")
        return cls.from_state_dict(state, WordVocabulary(tuple(words)), cfg, where)

    @classmethod
    def from_state_dict(
        cls, state: Mapping[str, Tensor], vocabulary: WordVocabulary, cfg: ModelConfig, where: str
    ) -> DAMSMText:
        """The encoder of ``state`` (e.g. an official ``text_encoder200.pth``), which must have
        one embedding row per word of ``vocabulary``."""
        from stackgan_cli.models import DAMSMTextEncoder

        rows = state.get("encoder.weight")
        if isinstance(rows, Tensor) and rows.ndim == 2 and rows.shape[0] != len(vocabulary):
            raise StackGANError(
                f"{where}: the text encoder has {rows.shape[0]} word rows but the vocabulary "
                f"has {len(vocabulary)} words: they were not trained together"
            )
        encoder = DAMSMTextEncoder(cfg, len(vocabulary))
        try:
            encoder.load_state_dict(dict(state), strict=True)
        except (RuntimeError, TypeError, ValueError):
            raise StackGANError(
                f"{where}: the DAMSM text encoder's weights do not match its widths"
            ) from None
        return cls(encoder, vocabulary, cfg)
