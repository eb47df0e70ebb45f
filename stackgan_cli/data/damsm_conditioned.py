"""A prepared dataset whose text embeddings are a DAMSM's sentence features (``--damsm``).

StackGAN-v1 and v2 read one embedding per caption. For a dataset without char-CNN-RNN
embeddings (one's own folder: ``stackgan prepare PATH``) or by choice, ``train --damsm FILE``
conditions them on the sentence features of a DAMSM trained on the dataset
(text/damsm_sentences.py). The features of every stored caption are computed once and kept
beside the prepared dataset::

    datasets/<name>/damsm_embeddings/<first 16 hex digits of the DAMSM's fingerprint>/
        <split>.npy     float32 (N, 10, D), embedding j of caption j
        key.json        the DAMSM's and the dataset's fingerprints (written last)

so the prepared dataset itself (and its fingerprint) stays as prepared. A key that does not
match (the dataset was prepared again) recomputes them. The wrapped dataset's fingerprint
combines the dataset's and the DAMSM's, so a run resumed with another DAMSM file is refused as
trained on other data.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from stackgan_cli.console import info
from stackgan_cli.data.cub import CAPTIONS_PER_IMAGE
from stackgan_cli.errors import StackGANError
from stackgan_cli.fsutil import atomic_file, atomic_write_text
from stackgan_cli.text.damsm_sentences import DAMSMSentenceEncoder, caption_sentences

FOLDER = "damsm_embeddings"
KEY_FILE = "key.json"


class ConditionedSplit:
    """A prepared split with other embeddings; everything else is the split's."""

    def __init__(self, split: Any, embeddings: np.ndarray) -> None:
        self._split = split
        self.embeddings = embeddings

    def __len__(self) -> int:
        return len(self._split)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._split, name)


class DAMSMConditionedDataset:
    """A :class:`~stackgan_cli.data.prepared.PreparedDataset` whose embeddings are the sentence
    features of ``encoder``'s DAMSM and whose text encoder is that encoder."""

    def __init__(self, dataset: Any, encoder: DAMSMSentenceEncoder, embeddings: dict) -> None:
        self._dataset = dataset
        self.encoder = encoder
        self._splits = {name: ConditionedSplit(dataset.split(name), embeddings[name])
                        for name in dataset.split_names}  # fmt: skip
        combined = f"{dataset.fingerprint} damsm {encoder.fingerprint}"
        self.fingerprint = hashlib.sha256(combined.encode()).hexdigest()
        self.metadata = {**dataset.metadata, "text_dim": encoder.config.out_dim}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._dataset, name)

    def __repr__(self) -> str:
        return f"DAMSMConditionedDataset({self._dataset!r})"

    def split(self, name: str) -> ConditionedSplit:
        if name not in self._splits:
            self._dataset.split(name)  # its own one-line error
        return self._splits[name]

    def text_encoder_dict(self) -> dict:
        return self.encoder.to_dict()


def embeddings_folder(dataset: Any, encoder: DAMSMSentenceEncoder) -> Path:
    """Where ``dataset``'s sentence features under ``encoder`` are kept."""
    return Path(dataset.root).parent / FOLDER / encoder.fingerprint[:16]


def condition_on_damsm(dataset: Any, encoder: DAMSMSentenceEncoder) -> DAMSMConditionedDataset:
    """``dataset`` with ``encoder``'s sentence features as its embeddings (computed on first
    use, then read from beside the dataset)."""
    folder = embeddings_folder(dataset, encoder)
    key = {"format": 1, "damsm": encoder.fingerprint, "dataset": dataset.fingerprint}
    embeddings = _stored(folder, key, dataset, encoder.config.out_dim)
    if embeddings is None:
        info(f"Embedding the captions of {dataset.name!r} with the DAMSM text encoder: {folder}")
        embeddings = {}
        try:
            folder.mkdir(parents=True, exist_ok=True)
            (folder / KEY_FILE).unlink(missing_ok=True)
            for name in dataset.split_names:
                array = caption_sentences(encoder.text, dataset.split(name).captions)
                with atomic_file(folder / f"{name}.npy") as handle:
                    np.save(handle, array, allow_pickle=False)
                embeddings[name] = array
            atomic_write_text(folder / KEY_FILE, json.dumps(key, sort_keys=True) + "\n")
        except OSError as exc:
            raise StackGANError(f"cannot store the DAMSM embeddings in {folder}: {exc}") from None
    return DAMSMConditionedDataset(dataset, encoder, embeddings)


def _stored(folder: Path, key: dict, dataset: Any, dim: int) -> dict[str, np.ndarray] | None:
    """The stored features when ``key`` matches and every split's array has its shape."""
    try:
        if json.loads((folder / KEY_FILE).read_text()) != key:
            return None
        arrays = {}
        for name in dataset.split_names:
            array = np.load(folder / f"{name}.npy", mmap_mode="r", allow_pickle=False)
            expected = (len(dataset.split(name)), CAPTIONS_PER_IMAGE, dim)
            if array.dtype != np.float32 or array.shape != expected:
                return None
            arrays[name] = array
    except (OSError, ValueError):
        return None
    return arrays
