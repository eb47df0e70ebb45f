"""What every model family answers, and the records its parts pass around.

A :class:`Family` instance is one family with its network widths (a ``ModelConfig``) and, when
it trains, its recipe's coefficients. Generation (``generate``, ``evaluate``, ``serve``, the
training sample grids) asks it for its output sizes, for sample noise and for the images of a
batch; generator files ask it what they hold and how an official state dict of it loads;
training asks it for its networks and the parts of the shared training step
(:class:`~stackgan_cli.training.step.GANStep`): which images each discriminator judges, how its
terms are weighted, which further generator terms it adds.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from stackgan_cli.data.batch import Batch
from stackgan_cli.errors import StackGANError
from stackgan_cli.families.registry import FamilySpec
from stackgan_cli.models.config import ModelConfig, load_size
from stackgan_cli.models.losses import AdversarialLoss


@dataclass(frozen=True)
class SampleNoise:
    """The random inputs of ``n`` samples: z (n, z_dim) and the conditioning-augmentation noise
    of each conditioning stage, ``eps[k]`` (n, condition_dim) for stage k + 1."""

    z: Tensor
    eps: tuple[Tensor, ...]

    def __len__(self) -> int:
        return self.z.shape[0]

    def select(self, index: Tensor | slice) -> SampleNoise:
        """The rows ``index`` of every draw."""
        return SampleNoise(z=self.z[index], eps=tuple(e[index] for e in self.eps))

    def to(self, device: torch.device | str) -> SampleNoise:
        return SampleNoise(z=self.z.to(device), eps=tuple(e.to(device) for e in self.eps))


@dataclass(frozen=True)
class GeneratorOutput:
    """One training forward of a generator: ``images`` per output the discriminators judge
    (smallest first), the conditioning mean and log-variance, and family extras (e.g.
    attention maps) by name."""

    images: list[Tensor]
    mu: Tensor
    logvar: Tensor
    extras: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RealView:
    """The real batch as one discriminator sees it: ``images`` at its size and, for families
    that draw their mismatched images apart, ``wrong`` at the same size."""

    images: Tensor
    wrong: Tensor | None = None


class Family(ABC):
    """One model family with its widths ``cfg``; subclasses set the class attributes."""

    spec: ClassVar[FamilySpec]
    generator_class: ClassVar[type[nn.Module]]
    # Conditioning stages whose augmentation noise a sample needs (SampleNoise.eps).
    ca_draws: ClassVar[int] = 1
    # Generator files of this family: the format version older readers accept.
    file_version: ClassVar[int] = 1
    # The official generator files' names and which count they carry ("epoch", "iteration").
    official_name: ClassVar[re.Pattern[str] | None] = None
    official_count: ClassVar[str] = "epoch"
    # --show-stages / sample grids: whether a training sample grid shows every output of a
    # sample side by side (else only the largest).
    sheet_shows_every_output: ClassVar[bool] = False
    # Training: the named parts of each discriminator's loss, whether the G loss conditions the
    # discriminators on mu itself (else mu.detach()), whether the sampler draws wrong images.
    loss_parts: ClassVar[tuple[str, ...]] = ("real", "wrong", "fake")
    generator_condition_grad: ClassVar[bool] = False
    wrong_images: ClassVar[bool] = False
    # The family of a trained generator this one refines (training loads it from
    # --stage1-ckpt, frozen, into its nested generator); None for most.
    nested_family: ClassVar[str | None] = None
    # Which convolutions run as matrix products on the CPU (training/fast_layers.py options).
    cpu_gemm: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, cfg: ModelConfig) -> None:
        self.cfg = cfg

    # --- what it is ------------------------------------------------------------------------
    @property
    def key(self) -> str:
        return self.spec.key

    @property
    def label(self) -> str:
        """What its generator is called in messages, e.g. "Stage-I generator"."""
        return f"{self.spec.title} generator"

    def describe(self) -> str:
        """One line: the generator and the sizes it makes."""
        return f"{self.label} ({'/'.join(map(str, self.output_sizes()))} px)"

    @property
    def title(self) -> str:
        """How a training run of it is announced."""
        return self.spec.title

    def identity(self) -> dict[str, Any]:
        """What reports and the serve API say it is: ``family`` (the --arch), ``stage``,
        ``branches`` (None where it has none) and ``family_key`` (the registry key)."""
        return {
            "family": self.spec.arch,
            "family_key": self.key,
            "stage": self.spec.stage,
            "branches": None,
        }

    @property
    def outputs_are_stages(self) -> bool:
        """Whether its outputs are the stages a --stage option names (StackGAN-v1)."""
        return self.spec.stage is not None

    @abstractmethod
    def output_sizes(self) -> tuple[int, ...]:
        """The image sides the generator makes, smallest first (output k is ``sizes[k-1]``)."""

    def select_output(self, size: int | None, where: str) -> int:
        """The 1-based output that makes ``size`` px images (None: the largest); a
        StackGANError naming ``--size`` and ``where`` (the file) otherwise."""
        sizes = self.output_sizes()
        if size is None:
            return len(sizes)
        if size not in sizes:
            raise StackGANError(
                f"--size {size}: {where} is a {self.spec.title} generator; it makes "
                f"{', '.join(map(str, sizes))} px images"
            )
        return sizes.index(size) + 1

    # --- sampling --------------------------------------------------------------------------
    def draw_noise(self, n: int, seed: int) -> SampleNoise:
        """The noise of samples 0..n-1 for ``seed``: z, then each conditioning stage's CA
        noise, drawn on the CPU (the same on every device, whatever the batching)."""
        generator = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.cfg.z_dim, generator=generator)
        eps = tuple(
            torch.randn(n, self.cfg.condition_dim, generator=generator)
            for _ in range(self.ca_draws)
        )
        return SampleNoise(z=z, eps=eps)

    @abstractmethod
    def sample(
        self, generator: nn.Module, text: Tensor, noise: SampleNoise, upto: int | None = None
    ) -> list[Tensor]:
        """The images of outputs 1..``upto`` (default: all), smallest first, for matching rows
        of ``text`` and ``noise`` (on the generator's device), with the fixed CA noise. Calls
        the modules' ``forward`` (a torch.compile'd call would recompile for eval mode)."""

    # Whether the generator reads a caption's words (a DAMSM's WordFeatures, from --damsm)
    # rather than one embedding per caption (a char-CNN-RNN-space text encoder or .npy file).
    reads_words: ClassVar[bool] = False

    def blend_text(self, start: Tensor, end: Tensor, weights: Tensor) -> Tensor:
        """``(1 - t) start + t end`` for each weight t of ``weights`` (S, 1), of two one-row
        conditionings (--interpolate)."""
        return (1.0 - weights) * start.reshape(1, -1) + weights * end.reshape(1, -1)

    def generation_batch(self, output: int) -> int:
        """Samples per forward pass when making output ``output`` (bounds memory)."""
        return 64 if self.output_sizes()[output - 1] <= 64 else 16

    def output_suffix(self, output: int) -> str:
        """File-name suffix of a smaller output written beside the largest (--show-stages)."""
        return f"_{self.output_sizes()[output - 1]}"

    # --- generator files -------------------------------------------------------------------
    def file_entries(self) -> dict[str, Any]:
        """The keys a generator file of this family holds besides the common ones."""
        return {"family": self.key, "format_version": self.file_version}

    @classmethod
    def recognises_official(cls, state: Mapping[str, Tensor]) -> bool:
        """Whether a plain official state dict (``module.`` prefixes removed) is this family's
        generator."""
        return False

    @classmethod
    def from_official(cls, state: Mapping[str, Tensor], name: str) -> tuple[Family, nn.Module]:
        """The family and the eval-mode generator an official state dict describes."""
        raise StackGANError(f"{name}: {cls.spec.title} has no official generator files")

    # --- training --------------------------------------------------------------------------
    @classmethod
    def check_train_options(cls, cfg: Any) -> None:
        """UsageError for TrainConfig options this family does not take (none by default)."""
        return None

    @classmethod
    def model_fields(cls, cfg: Any) -> dict[str, int]:
        """ModelConfig fields a TrainConfig sets (e.g. the v2 tree's branches)."""
        return {}

    @classmethod
    def for_training(cls, train_cfg: Any, cfg: ModelConfig) -> Family:
        """The family with the coefficients of a TrainConfig."""
        return cls(cfg)

    @property
    def image_size(self) -> int:
        """The side of the real crops the sampler draws (the largest output)."""
        return self.output_sizes()[-1]

    @property
    def load_size(self) -> int:
        """The stored image side those crops come from (76 for 64, 304 for 256)."""
        return load_size(self.image_size)

    @abstractmethod
    def build_networks(
        self, stage1_state: Mapping[str, Tensor] | None = None
    ) -> tuple[nn.Module, list[nn.Module]]:
        """A freshly initialised generator and its discriminators."""

    def frozen_modules(self, netG: nn.Module) -> tuple[nn.Module, ...]:
        """Parts of ``netG`` that training leaves alone (no re-initialisation, no --g-norm)."""
        return ()

    def encoder(self, netD: nn.Module) -> nn.Module:
        """The module whose call gives ``netD``'s image features."""
        return netD

    def caption_words(self, split: Any) -> tuple[Any, Any] | None:
        """For a family that reads a caption's words: the word ids (N, 10, L) int64 and lengths
        (N, 10) of a prepared split's captions, which the sampler then puts in each batch;
        None (the default) for families that read embeddings only."""
        return None

    def condition_of(self, batch: Batch) -> Any:
        """What the generator reads of a training batch: its caption embeddings by default."""
        return batch.text

    @abstractmethod
    def generate(self, netG: Callable, text: Any, noise: Tensor) -> GeneratorOutput:
        """The training forward of :meth:`condition_of`'s ``text``: random CA noise, the images
        each discriminator judges."""

    def discriminator_condition(self, output: GeneratorOutput) -> Tensor:
        """What the discriminators judge images against: the conditioning mean (detached)."""
        return output.mu.detach().float()

    def caption_text(
        self, captions: list[str], embeddings: Tensor, text_encoder: Any = None
    ) -> Any:
        """The conditioning of dataset captions (a sample grid's rows, evaluation samples) from
        their texts and their (rows, D) dataset embeddings, indexable by row like a tensor:
        the embeddings by default. ``text_encoder`` is a generator file's (None: the one the
        family trains with); one that embeds dataset captions itself (a DAMSM sentence
        encoder, for files trained with ``--damsm``) gives the embeddings instead."""
        embed = getattr(text_encoder, "embed_captions", None)
        return embed(captions) if embed is not None else embeddings

    def text_encoder_entry(self, dataset: Any) -> Any:
        """The text encoder a generator file of a run carries: the dataset's by default."""
        return dataset.text_encoder_dict()

    def to(self, device: torch.device) -> Family:
        """Move what the family itself holds for training (e.g. frozen encoders) to ``device``."""
        return self

    def real_views(self, batch: Batch) -> list[RealView]:
        """The real batch as each discriminator sees it."""
        return [RealView(batch.images, batch.wrong)]

    @property
    def gp_uncond(self) -> bool:
        """Whether gradient penalties cover unconditional heads too (they count in the loss)."""
        return False

    @abstractmethod
    def discriminator_loss(
        self, netD: Any, real: RealView, fake: Tensor, conditions: Tensor, loss: AdversarialLoss
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """One discriminator's loss and its named parts (:attr:`loss_parts`)."""

    @abstractmethod
    def generator_loss(
        self, netD: Any, fake: Tensor, conditions: Tensor, loss: AdversarialLoss
    ) -> Tensor:
        """The generator's adversarial loss against one discriminator."""

    @property
    def generator_term_names(self) -> tuple[str, ...]:
        """The names of :meth:`generator_terms` (logged as ``G_<name>``)."""
        return ()

    def generator_terms(self, output: GeneratorOutput) -> dict[str, Tensor]:
        """Further weighted generator terms besides the adversarial ones and the KL, by name."""
        return {}
