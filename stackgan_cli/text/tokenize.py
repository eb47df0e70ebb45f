"""Prompt normalisation, word splitting, and hashed character n-gram features.

Every word becomes a bag of hashed ids: the whole word plus its character 3-, 4- and 5-grams
(with ``<`` and ``>`` marking the word's edges), so an unseen word or a typo still shares most
of its ids with the words seen in training. Hashing uses CRC-32, which, unlike Python's
``hash()``, is the same in every process.
"""

from __future__ import annotations

import re
import unicodedata
import zlib
from collections.abc import Iterable

from stackgan_cli.console import warn
from stackgan_cli.errors import StackGANError

MAX_TOKENS = 96
"""Longest prompt, in tokens (words and punctuation marks); the longest CUB caption has 92."""

NGRAM_SIZES = (3, 4, 5)
UNKNOWN_CHAR = "\ufffd"
"""Stands in for every character that the training captions never used."""

_TOKEN = re.compile(r"\w+|[^\w\s]")
_WORD = re.compile(r"\w+")
_SPACE = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """NFKC, lower case, whitespace collapsed to single spaces, stripped; never fails."""
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).lower()).strip()


def normalize_prompt(text: str, *, max_tokens: int = MAX_TOKENS) -> str:
    """Normalise a prompt as the encoder expects it: NFKC, lower case, single spaces.

    Any Unicode is kept. An empty or whitespace-only prompt raises ``StackGANError``; a prompt
    longer than ``max_tokens`` tokens is cut after its ``max_tokens``-th token, with a warning.
    """
    normalized = normalize_text(text)
    if not normalized:
        raise StackGANError("the prompt is empty: give a sentence such as 'a small red bird'")
    ends = [match.end() for match in _TOKEN.finditer(normalized)]
    if len(ends) > max_tokens:
        warn(
            f"the prompt has {len(ends)} tokens; only its first {max_tokens} (the maximum) are used"
        )
        normalized = normalized[: ends[max_tokens - 1]]
    return normalized


def split_tokens(text: str, *, max_tokens: int = MAX_TOKENS) -> list[str]:
    """The first ``max_tokens`` tokens (words, single punctuation marks) of normalised text."""
    return _TOKEN.findall(text)[:max_tokens]


def word_set(text: str) -> set[str]:
    """The distinct words (no punctuation) of a caption, normalised: for word-overlap matching."""
    return set(_WORD.findall(normalize_text(text)))


def restrict_alphabet(token: str, alphabet: frozenset[str] | None) -> str:
    """Replace each character outside ``alphabet`` with ``UNKNOWN_CHAR`` (None: keep all)."""
    if alphabet is None or all(char in alphabet for char in token):
        return token
    return "".join(char if char in alphabet else UNKNOWN_CHAR for char in token)


def token_ids(token: str, buckets: int) -> list[int]:
    """Hashed ids of a token: the whole token and its character n-grams, in ``[0, buckets)``."""
    marked = f"<{token}>"
    pieces = [marked]
    for size in NGRAM_SIZES:
        pieces.extend(marked[start : start + size] for start in range(len(marked) - size + 1))
    return [zlib.crc32(piece.encode("utf-8")) % buckets for piece in dict.fromkeys(pieces)]


class Vocabulary:
    """Distinct tokens of a batch of texts, each with its hashed ids, and texts as token indices.

    Grouping by distinct token means each token's n-grams are hashed and embedded once per
    batch, however often it occurs. Characters outside ``alphabet`` (those never seen in
    training) all hash as ``UNKNOWN_CHAR``; ``None`` keeps every character.
    """

    def __init__(self, alphabet: frozenset[str] | None, buckets: int) -> None:
        self.alphabet = alphabet
        self.buckets = buckets
        self.index: dict[str, int] = {}
        self.ids: list[list[int]] = []

    def add(self, token: str) -> int:
        """The index of ``token``, adding it (and hashing its n-grams) on first sight."""
        position = self.index.get(token)
        if position is None:
            position = len(self.ids)
            self.index[token] = position
            self.ids.append(token_ids(restrict_alphabet(token, self.alphabet), self.buckets))
        return position

    def encode_texts(self, texts: Iterable[str], *, max_tokens: int) -> list[list[int]]:
        """Each (already normalised) text as the list of its token indices."""
        return [
            [self.add(token) for token in split_tokens(text, max_tokens=max_tokens)]
            for text in texts
        ]
