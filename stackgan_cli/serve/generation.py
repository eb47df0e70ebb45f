"""Prompts -> images and a captioned grid, in memory: ``stackgan generate`` without the files.

Built on the functions of :mod:`stackgan_cli.generate` (prompt normalisation, conditioning,
the batched generator runs) and the file's family (its sizes and sample noise), so an image for
a given seed, sample index and prompt is the one ``stackgan generate --seed`` writes. The
generator file (and its text encoder) is loaded once; each request then only runs the networks,
one request at a time per device.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from torch import Tensor

from stackgan_cli.attention_figure import sample_figures
from stackgan_cli.devices import pick_device
from stackgan_cli.errors import StackGANError
from stackgan_cli.formats import check_regular_file
from stackgan_cli.generate import conditioning, normalize_prompts, run_generator
from stackgan_cli.generator_file import GeneratorBundle, load_generator_file, newest_generator
from stackgan_cli.imaging import captioned_grid, side_by_side

MAX_CAPTION_CHARS = 240
"""Longest caption drawn beneath a row (longer ones end in "..."); three lines of a grid row
hold about this much, and wrapping a much longer one takes seconds."""

_LOCKS: dict[str, threading.Lock] = {}
_LOCKS_GUARD = threading.Lock()


def device_lock(device: torch.device) -> threading.Lock:
    """The lock that lets one generation at a time use ``device``."""
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(str(device), threading.Lock())


class ClientGone(Exception):
    """The client of a waiting request went away before its turn: nothing was generated."""


class RequestQueue:
    """Admission to a model's device: the request generating and at most ``max_waiting``
    behind it. ``enter()`` says whether a request may join; each one that did calls
    ``leave()`` when done."""

    def __init__(self, max_waiting: int) -> None:
        self.max_waiting = max_waiting
        self.admitted = 0
        self._guard = threading.Lock()

    def enter(self) -> bool:
        """Join the queue, unless it is full."""
        with self._guard:
            if self.admitted > self.max_waiting:
                return False
            self.admitted += 1
            return True

    def leave(self) -> None:
        """Leave the queue (the request was answered, refused or abandoned)."""
        with self._guard:
            self.admitted -= 1


@dataclass
class Generated:
    """One request's result: images (P, n, 3, size, size) in [-1, 1] on the CPU; when stages
    were asked for, the smaller outputs (a Stage-II file's Stage-I sketches, a StackGAN-v2
    file's smaller branches), smallest first; the captioned grid; the seed used."""

    seed: int
    size: int
    captions: list[str]
    images: Tensor
    smaller: list[Tensor]
    grid: Image.Image
    attention: list[list[Image.Image]] | None = None  # per prompt, per sample (AttnGAN)


class LoadedGenerator:
    """A generator file loaded onto a device, ready to answer requests."""

    def __init__(self, bundle: GeneratorBundle, device: torch.device) -> None:
        if bundle.text_encoder is None:
            from stackgan_cli.text_encoder_source import no_text_encoder_message

            raise StackGANError(no_text_encoder_message(bundle, embedding_file=False))
        self.bundle = bundle
        self.device = device

    @classmethod
    def load(
        cls,
        ckpt: Path | None = None,
        device: str = "auto",
        text_encoder: str | Path | None = None,
        *,
        damsm: str | Path | None = None,
        vocabulary: str | Path | None = None,
    ) -> LoadedGenerator:
        """Load ``ckpt`` (default: the newest generator in the cache's runs) and run it once,
        so that the first request does not pay for the first-call set-up. ``text_encoder``
        (``--text-encoder DATASET|FILE``), or for an AttnGAN file ``damsm`` (``--damsm``, an
        official folder with its ``vocabulary``), replaces the file's own encoder."""
        from stackgan_cli.damsm_file import load_damsm
        from stackgan_cli.generate import check_text_options, use_damsm_text
        from stackgan_cli.text_encoder_source import load_text_encoder, use_text_encoder

        if vocabulary is not None and damsm is None:
            raise StackGANError("--vocabulary goes with --damsm (an official DAMSMencoders folder)")
        encoder = load_text_encoder(text_encoder) if text_encoder is not None else None
        if vocabulary is not None:
            check_regular_file(Path(vocabulary), f"--vocabulary {vocabulary}")
        words = load_damsm(damsm, vocabulary, image_encoder=False).text if damsm else None
        torch_device = pick_device(device)
        path = newest_generator() if ckpt is None else Path(ckpt)
        bundle = load_generator_file(path, device=torch_device)
        check_text_options(bundle, text_encoder, damsm, None, False)
        if encoder is not None:
            use_text_encoder(bundle, encoder, text_encoder)
        if words is not None:
            use_damsm_text(bundle, words, damsm)
        loaded = cls(bundle, torch_device)
        loaded.generate([loaded.warm_up_caption()], n=1, seed=0)
        return loaded

    def warm_up_caption(self) -> str:
        """A caption the file's text encoder reads: any text, or for a DAMSM (AttnGAN) one of
        its vocabulary's words, which it must know."""
        if self.bundle.family.reads_words:
            return self.bundle.text_encoder.vocabulary.words[1]
        return "a warm up caption"

    @property
    def sizes(self) -> tuple[int, ...]:
        """The output sides this file can make, smallest first."""
        return self.bundle.family.output_sizes()

    @property
    def label(self) -> str:
        """What the file holds, e.g. ``Stage-I generator`` or ``StackGAN-v2 generator``."""
        return self.bundle.family.label

    def describe(self) -> dict[str, Any]:
        """What is loaded, for ``GET /api/health`` and the page. ``stages`` says whether the
        file has smaller outputs to show beside its largest, ``attention`` whether it can draw
        attention maps (AttnGAN)."""
        bundle = self.bundle
        return {
            "path": str(bundle.path),
            "label": self.label,
            **bundle.family.identity(),
            "dataset": bundle.dataset,
            "epoch": bundle.epoch,
            "source": bundle.source,
            "sizes": list(self.sizes),
            "stages": len(self.sizes) > 1,
            "attention": self.bundle.family.reads_words,
            "device": str(self.device),
            "model_config": bundle.cfg.to_dict(),
        }

    def generate(
        self,
        prompts: Sequence[str],
        *,
        n: int,
        seed: int | None = None,
        size: int | None = None,
        stages: bool = False,
        attention: bool = False,
        still_wanted: Callable[[], bool] | None = None,
    ) -> Generated:
        """``n`` images per prompt at ``size`` (default: the largest), with the smaller outputs
        beside them in the grid when ``stages`` and each sample's attention figure when
        ``attention`` (AttnGAN files). Raises StackGANError for an empty prompt, a size the
        file cannot make, stages at the smallest size, or attention from a generator that does
        not attend to words. ``still_wanted`` is asked once the device is free; when it says
        False nothing runs and ClientGone is raised."""
        if attention and not self.bundle.family.reads_words:
            raise StackGANError(
                f"attention maps come from AttnGAN generators; this is a {self.label}"
            )
        sizes = self.sizes
        size = sizes[-1] if size is None else size
        if size not in sizes:
            can = ", ".join(str(side) for side in sizes[:-1])
            can = f"{can} or {sizes[-1]}" if can else str(sizes[-1])
            raise StackGANError(f"size {size} is not available: this {self.label} makes {can}")
        output = sizes.index(size) + 1
        if stages and output == 1:
            raise StackGANError(
                f"stages shows the smaller outputs beside the result; at size {size} this "
                f"{self.label} has none (sizes: {', '.join(map(str, sizes))})"
            )
        normalized = normalize_prompts(prompts)
        seed = secrets.randbelow(2**31) if seed is None else seed
        noise = self.bundle.family.draw_noise(n, seed)
        with device_lock(self.device):
            if still_wanted is not None and not still_wanted():
                raise ClientGone
            embeddings, captions = conditioning(self.bundle, prompts, normalized, None)
            outputs = run_generator(
                self.bundle, embeddings, noise, output=output, device=self.device
            )
            figures = None
            if attention:
                figures = sample_figures(
                    self.bundle, embeddings, noise, normalized, captions, self.device
                )
        *smaller, images = outputs if stages else outputs[-1:]
        captions = [_shorten(caption) for caption in captions]
        # Each sample's outputs side by side, the smaller ones enlarged.
        rows = side_by_side([*smaller, images])
        return Generated(
            seed=seed,
            size=size,
            captions=captions,
            images=images,
            smaller=smaller,
            grid=captioned_grid(list(rows), captions),
            attention=figures,
        )


def _shorten(caption: str) -> str:
    if len(caption) <= MAX_CAPTION_CHARS:
        return caption
    return caption[: MAX_CAPTION_CHARS - 3].rstrip() + "..."
