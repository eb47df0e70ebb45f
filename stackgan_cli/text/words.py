"""Captions as word ids, the way the AttnGAN code makes them (attngan-spec.md section 9).

A caption is lower-cased, the two-character sequence U+FFFD U+FFFD (a decoding artefact of the
CUB text files) becomes a space, the runs of word characters are its tokens, each stripped of
non-ASCII characters, empty ones dropped. Index 0 of a vocabulary is ``<end>``, which the
captions never hold: it is the padding of a batch.

The released DAMSM encoders index their embedding table by the word ids of the released
``captions.pickle``, whose order came from Python 2's dict iteration and cannot be rebuilt
from the text files: :func:`read_captions_pickle` reads that file (with a reader that builds
nothing but lists, dicts, strings and numbers), :meth:`WordVocabulary.build` makes a new one
for our own DAMSM training.
"""

from __future__ import annotations

import io
import pickle
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stackgan_cli.errors import StackGANError

END = "<end>"
WORDS_NUM = 18
"""Words per caption in training (TEXT.WORDS_NUM of the birds configurations)."""

_WORD = re.compile(r"\w+")


def caption_tokens(text: str) -> list[str]:
    """The official tokens of one caption line."""
    text = text.replace("\ufffd\ufffd", " ").lower()
    tokens = (token.encode("ascii", "ignore").decode("ascii") for token in _WORD.findall(text))
    return [token for token in tokens if token]


@dataclass(frozen=True)
class WordVocabulary:
    """``words[i]`` is the word of id i (``words[0]`` is ``<end>``)."""

    words: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.words or self.words[0] != END:
            raise StackGANError(f"a word vocabulary starts with {END!r}")
        if len(set(self.words)) != len(self.words):
            raise StackGANError("a word vocabulary names some word twice")

    def __len__(self) -> int:
        return len(self.words)

    @property
    def index(self) -> dict[str, int]:
        return {word: i for i, word in enumerate(self.words)}

    @classmethod
    def build(cls, captions: Iterable[str]) -> WordVocabulary:
        """Every word of ``captions`` (the official rule: train and test captions, no count
        threshold), in order of first appearance, after ``<end>``."""
        seen: dict[str, None] = {END: None}
        for caption in captions:
            seen.update(dict.fromkeys(caption_tokens(caption)))
        return cls(tuple(seen))

    def encode(self, text: str) -> tuple[list[int], list[str]]:
        """The word ids of ``text`` and the words it drops because they are not in the
        vocabulary (as the official sampling code drops them)."""
        index = self.index
        ids, unknown = [], []
        for token in caption_tokens(text):
            if token in index and token != END:
                ids.append(index[token])
            else:
                unknown.append(token)
        return ids, unknown


def caption_id_arrays(
    captions: Sequence[Sequence[str]], vocabulary: WordVocabulary
) -> tuple[np.ndarray, np.ndarray]:
    """The word ids (N, K, L) int64, zero-padded, and lengths (N, K) of K captions for each of N
    images in ``vocabulary``: unknown words left out, as the official code leaves them out; a
    caption with no known word reads as ``<end>`` (one id 0)."""
    encoded = [[vocabulary.encode(c)[0] or [0] for c in image] for image in captions]
    longest = max(len(ids) for image in encoded for ids in image)
    count = max(len(image) for image in encoded)
    tokens = np.zeros((len(encoded), count, longest), dtype=np.int64)
    lengths = np.ones((len(encoded), count), dtype=np.int64)
    for n, image in enumerate(encoded):
        for k, ids in enumerate(image):
            tokens[n, k, : len(ids)] = ids
            lengths[n, k] = len(ids)
    return tokens, lengths


class _PlainUnpickler(pickle.Unpickler):
    """Unpickles only what a ``captions.pickle`` holds: no class is ever looked up."""

    def find_class(self, module: str, name: str):  # noqa: D102 - the pickle hook
        raise pickle.UnpicklingError(f"it names {module}.{name}, not plain data")


@dataclass(frozen=True)
class CaptionsPickle:
    """The released ``captions.pickle``: token-id captions of the train and test splits (10 per
    image, image-major) and the vocabulary."""

    train: list[list[int]]
    test: list[list[int]]
    vocabulary: WordVocabulary


def read_captions_pickle(path: str | Path) -> CaptionsPickle:
    """Read an official ``captions.pickle`` (a Python-2 protocol-2 pickle of ``[train
    captions, test captions, index -> word, word -> index]``); one-line StackGANError for
    anything else."""
    path = Path(path).expanduser()
    where = f"--vocabulary {path}"
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise StackGANError(f"{where} could not be read: {exc.strerror or exc}") from None
    try:
        data = _PlainUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError) as exc:
        raise StackGANError(f"{where} is not an AttnGAN captions.pickle ({exc})") from None
    if not (isinstance(data, (list, tuple)) and len(data) == 4):
        raise StackGANError(f"{where} is not an AttnGAN captions.pickle (a list of four)")
    train, test, ixtoword, wordtoix = data
    words = _words_of(ixtoword, where)
    if isinstance(wordtoix, Mapping) and any(
        not isinstance(ix, int) or not 0 <= ix < len(words) or words[ix] != _text(word)
        for word, ix in wordtoix.items()
    ):
        raise StackGANError(f"{where}: its word -> index table disagrees with index -> word")
    return CaptionsPickle(
        train=_captions(train, len(words), where),
        test=_captions(test, len(words), where),
        vocabulary=WordVocabulary(words),
    )


def _text(value: object) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def _words_of(ixtoword: object, where: str) -> tuple[str, ...]:
    if not isinstance(ixtoword, Mapping) or not ixtoword:
        raise StackGANError(f"{where}: its index -> word table is not a dict")
    if sorted(ixtoword) != list(range(len(ixtoword))):
        raise StackGANError(f"{where}: its word ids are not 0..{len(ixtoword) - 1}")
    return tuple(_text(ixtoword[i]) for i in range(len(ixtoword)))


def _captions(captions: object, vocabulary_size: int, where: str) -> list[list[int]]:
    if not isinstance(captions, Sequence):
        raise StackGANError(f"{where}: its captions are not a list")
    checked = []
    for caption in captions:
        if not isinstance(caption, Sequence) or any(
            not isinstance(i, int) or not 0 < i < vocabulary_size for i in caption
        ):
            raise StackGANError(f"{where}: a caption holds something other than word ids")
        checked.append(list(caption))
    return checked
