"""AttnGAN: StackGAN-v2's tree of generators whose later stages attend to the caption's words.

The generator reads a caption's DAMSM features (attngan-spec.md 5): the sentence feature feeds
the conditioning augmentation, the word features the attention of every stage after the first,
so its text is a :class:`~stackgan_cli.text.damsm_text.WordFeatures` rather than one embedding.
Besides its images (64, 128, 256 px for three branches) it returns one attention map per word
for each attending stage; :meth:`AttnGAN.attention` gives them for figures.

Generation runs the samples of one caption length together, with no padding, so the official
generator's batch-tiled word mask (attngan-spec.md 5) never mixes captions: an image depends on
its prompt, seed and sample index alone, and equals what the official code gives for a batch of
that caption.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from stackgan_cli.damsm_file import check_same_damsm
from stackgan_cli.damsm_file import load_damsm_once as _damsm
from stackgan_cli.data.batch import Batch
from stackgan_cli.errors import StackGANError, UsageError
from stackgan_cli.families.base import Family, GeneratorOutput, RealView, SampleNoise
from stackgan_cli.families.registry import FAMILIES
from stackgan_cli.families.stackgan_v2 import DiscriminatorEncoder, resize_images
from stackgan_cli.models.attngan import AttnGANDiscriminator, AttnGANGenerator
from stackgan_cli.models.config import ModelConfig
from stackgan_cli.models.generator_v2 import branch_image_sizes
from stackgan_cli.models.losses import AdversarialLoss, damsm_sentence_loss, damsm_word_loss
from stackgan_cli.text.damsm_text import WordFeatures
from stackgan_cli.text.words import caption_id_arrays

GAMMAS = (4.0, 5.0, 10.0)  # gamma1, gamma2, gamma3 of the birds recipe (attngan-spec.md 1)


class AttnGAN(Family):
    """AttnGAN with ``cfg.branch_num`` branches (images of 64, 128, 256 px, smallest first)."""

    spec = FAMILIES["attngan"]
    generator_class = AttnGANGenerator
    file_version = 2  # readers of version 1 only know StackGAN-v1, and refuse these cleanly
    official_name = re.compile(r"netG_epoch_(\d+)\.pth$")
    sheet_shows_every_output = True
    loss_parts = ("real", "wrong", "fake", "uncond_real", "uncond_fake")

    def __init__(self, cfg: ModelConfig, *, damsm: Any = None, damsm_weight: float = 5.0) -> None:
        super().__init__(cfg)
        self.sizes = branch_image_sizes(cfg.branch_num)
        self.damsm = damsm  # training: the frozen DAMSM (damsm_file.DAMSMBundle)
        self.damsm_weight = float(damsm_weight)

    @property
    def title(self) -> str:
        branches = self.cfg.branch_num
        return f"AttnGAN ({branches} branch{'es' if branches > 1 else ''})"

    def output_sizes(self) -> tuple[int, ...]:
        return self.sizes

    def identity(self) -> dict[str, Any]:
        return {**super().identity(), "branches": self.cfg.branch_num}

    reads_words = True

    def generation_batch(self, output: int) -> int:
        return 16  # every pass makes every branch, up to 256 px

    def blend_text(self, start: WordFeatures, end: WordFeatures, weights: Tensor) -> WordFeatures:
        return WordFeatures.blend(start, end, weights)

    # --- sampling --------------------------------------------------------------------------
    def sample(
        self, generator: nn.Module, text: WordFeatures, noise: SampleNoise, upto: int | None = None
    ) -> list[Tensor]:
        images, _ = self.attention(generator, text, noise)
        return images[:upto]

    def attention(
        self, generator: nn.Module, text: WordFeatures, noise: SampleNoise
    ) -> tuple[list[Tensor], list[Tensor]]:
        """The images of every output and the attention maps of every attending stage
        ((n, T, S, S) for the stage that starts from S px features, T the longest caption's
        words, zero past each caption's own), for matching rows of ``text`` and ``noise``."""
        n = len(text)
        if n != len(noise):
            raise ValueError(f"{n} captions but {len(noise)} noise rows")
        images: list[Tensor | None] = [None] * len(self.sizes)
        maps: list[Tensor | None] = [None] * (len(self.sizes) - 1)
        longest = text.words.shape[2]
        for length in torch.unique(text.lengths).tolist():
            rows = (text.lengths == length).nonzero().flatten()
            words = text.words[rows.to(text.words.device)][:, :, :length]
            sentence = text.sentence[rows.to(text.sentence.device)]
            part = noise.select(rows.to(noise.z.device))
            outputs, attention, _, _ = generator.forward(
                sentence, words, part.z, mask=None, eps=part.eps[0]
            )
            for k, image in enumerate(outputs):
                if images[k] is None:
                    images[k] = image.new_empty((n, *image.shape[1:]))
                images[k][rows.to(image.device)] = image
            for k, attended in enumerate(attention):
                if maps[k] is None:
                    maps[k] = attended.new_zeros((n, longest, *attended.shape[2:]))
                maps[k][rows.to(attended.device), :length] = attended
        return list(images), list(maps)

    # --- generator files -------------------------------------------------------------------
    def file_entries(self) -> dict[str, Any]:
        # "arch" as the StackGAN-v2 files, so that versions without "family" refuse it by name
        return {**super().file_entries(), "arch": "attngan", "stage": None}

    @classmethod
    def recognises_official(cls, state: Mapping[str, Tensor]) -> bool:
        return any(".att.conv_context." in key for key in state)

    @classmethod
    def from_official(cls, state: Mapping[str, Tensor], name: str) -> tuple[Family, nn.Module]:
        from stackgan_cli.models.official_attngan import attngan_generator_from_state_dict

        cfg, generator = attngan_generator_from_state_dict(state, name=name)
        return cls(cfg), generator

    # --- training --------------------------------------------------------------------------
    @classmethod
    def check_train_options(cls, cfg: Any) -> None:
        if cfg.branches not in range(1, 4):
            raise UsageError(f"--branches: must be 1, 2 or 3, got {cfg.branches}")
        if cfg.stage1_ckpt:
            raise UsageError("--stage1-ckpt: only --arch v1 Stage 2 uses a Stage-I generator")
        if not cfg.damsm:
            raise UsageError(
                "--damsm: --arch attngan reads the words through a frozen DAMSM: give a DAMSM "
                "file or an official DAMSMencoders/<dataset> folder (with --vocabulary)"
            )

    @classmethod
    def model_fields(cls, cfg: Any) -> dict[str, int]:
        text = _damsm(cfg.damsm, cfg.vocabulary).text
        return {
            "branch_num": int(cfg.branches),
            "text_dim": text.cfg.text_dim,
            "word_dim": text.cfg.word_dim,
        }

    @classmethod
    def for_training(cls, train_cfg: Any, cfg: ModelConfig) -> Family:
        damsm = _damsm(train_cfg.damsm, train_cfg.vocabulary)
        damsm.require_image_encoder("training AttnGAN (its matching loss)")
        check_same_damsm(damsm, train_cfg.damsm_fingerprint)
        if damsm.cfg.text_dim != cfg.text_dim:
            raise StackGANError(
                f"--damsm {train_cfg.damsm} gives {damsm.cfg.text_dim}-d features; this run's "
                f"networks take {cfg.text_dim}-d ones"
            )
        return cls(cfg, damsm=damsm, damsm_weight=train_cfg.damsm_weight)

    def to(self, device: torch.device) -> Family:
        if self.damsm is not None:
            self.damsm.text.encoder.to(device).eval().requires_grad_(False)
            # The frozen Inception trunk runs channels_last (weights and input): the same maths,
            # 21 % less CPU time for the trunk and 1.22x -> 1.32x the official iteration
            # (benchmarks/RESULTS.md, AttnGAN section).
            self.damsm.image_encoder.to(device, memory_format=torch.channels_last)
            self.damsm.image_encoder.eval().requires_grad_(False)
        return self

    @property
    def image_size(self) -> int:
        # As StackGAN-v2: one branch crops 64 from 76; more branches crop 256 from 304 and
        # shrink that crop to each branch's size (a 128 px tree's 152 px images are not stored).
        return 64 if self.cfg.branch_num == 1 else 256

    def _trained_damsm(self) -> Any:
        if self.damsm is None:
            raise StackGANError("training AttnGAN needs its DAMSM (Family.for_training)")
        return self.damsm

    def build_networks(
        self, stage1_state: Mapping[str, Tensor] | None = None
    ) -> tuple[nn.Module, list[nn.Module]]:
        """A freshly initialised (orthogonal) generator and one discriminator per branch."""
        if stage1_state is not None:
            raise StackGANError("AttnGAN does not nest a Stage-I generator")
        netG = AttnGANGenerator(self.cfg)
        return netG, [AttnGANDiscriminator(self.cfg, size) for size in self.sizes]

    def encoder(self, netD: nn.Module) -> nn.Module:
        return DiscriminatorEncoder(netD)

    def caption_words(self, split: Any) -> tuple[np.ndarray, np.ndarray]:
        """Every caption's word ids in the DAMSM's vocabulary (text.words.caption_id_arrays)."""
        return caption_id_arrays(split.captions, self._trained_damsm().text.vocabulary)

    def condition_of(self, batch: Batch) -> TrainingText:
        """The frozen DAMSM text encoder's features of the batch's captions (sorted by length,
        as the sampler sorts them), with the batch's class ids for the matching loss."""
        if batch.tokens is None or batch.token_mask is None:
            raise ValueError("AttnGAN batches carry word ids (DeviceBatchSampler words=...)")
        lengths = (~batch.token_mask).sum(dim=1)
        with torch.no_grad():
            words, sentence = self._trained_damsm().text.encoder(batch.tokens, lengths.cpu())
        return TrainingText(WordFeatures(sentence, words, lengths), batch.class_ids)

    def generate(self, netG: Callable, text: TrainingText, noise: Tensor) -> GeneratorOutput:
        features = text.features
        images, maps, mu, logvar = netG(features.sentence, features.words, noise, features.mask)
        return GeneratorOutput(
            images=list(images), mu=mu, logvar=logvar, extras={"text": text, "attention": maps}
        )

    def discriminator_condition(self, output: GeneratorOutput) -> Tensor:
        return output.extras["text"].features.sentence.detach().float()

    def real_views(self, batch: Batch) -> list[RealView]:
        """The real crop at each branch's size (wrong pairs come from the batch itself)."""
        return [RealView(resize_images(batch.images, size)) for size in self.sizes]

    @property
    def gp_uncond(self) -> bool:
        return True

    def discriminator_loss(
        self, netD: Any, real: RealView, fake: Tensor, conditions: Tensor, loss: AdversarialLoss
    ) -> tuple[Tensor, dict[str, Tensor]]:
        """D_i's official loss (attngan-spec.md 7): ``(uncond real + cond real) / 2 + (uncond
        fake + cond fake + cond wrong) / 3``, wrong pairs = image i with sentence i + 1."""
        conditions = conditions.detach()
        real_features, fake_features = netD(real.images), netD(fake.detach())
        # The official order of the head calls (their BatchNorm statistics depend on it).
        parts = {
            "real": loss.real(netD.get_cond_logits(real_features, conditions)),
            "fake": loss.fake(netD.get_cond_logits(fake_features, conditions)),
            "wrong": loss.fake(netD.get_cond_logits(real_features[:-1], conditions[1:])),
            "uncond_real": loss.real(netD.get_uncond_logits(real_features)),
            "uncond_fake": loss.fake(netD.get_uncond_logits(fake_features)),
        }
        err_d = (parts["uncond_real"] + parts["real"]) / 2.0 + (
            parts["uncond_fake"] + parts["fake"] + parts["wrong"]
        ) / 3.0
        return err_d, {name: value.detach() for name, value in parts.items()}

    def generator_loss(
        self, netD: Any, fake: Tensor, conditions: Tensor, loss: AdversarialLoss
    ) -> Tensor:
        """G's loss against D_i: uncond(fake) -> 1 plus cond(fake) -> 1."""
        features = netD(fake)
        cond = loss.generator(netD.get_cond_logits(features, conditions))
        return loss.generator(netD.get_uncond_logits(features)) + cond

    @property
    def generator_term_names(self) -> tuple[str, ...]:
        return ("damsm_words", "damsm_sentence") if self.damsm_weight > 0 else ()

    def generator_terms(self, output: GeneratorOutput) -> dict[str, Tensor]:
        """The DAMSM matching losses of the largest fake images, both directions, weighted by
        ``damsm_weight`` (LAMBDA): ``damsm_words`` and ``damsm_sentence``; none when
        ``damsm_weight`` is 0, which then skips the image encoder's pass altogether."""
        if not self.generator_term_names:
            return {}
        text: TrainingText = output.extras["text"]
        features = text.features
        fakes = output.images[-1].float().contiguous(memory_format=torch.channels_last)
        regions, code = self._trained_damsm().image_encoder(fakes)
        words0, words1, _ = damsm_word_loss(
            regions, features.words, features.lengths, text.class_ids, *GAMMAS
        )
        sentence0, sentence1 = damsm_sentence_loss(
            code, features.sentence, text.class_ids, gamma3=GAMMAS[2]
        )
        return {
            "damsm_words": (words0 + words1) * self.damsm_weight,
            "damsm_sentence": (sentence0 + sentence1) * self.damsm_weight,
        }

    def caption_text(
        self, captions: list[str], embeddings: Tensor, text_encoder: Any = None
    ) -> WordFeatures:
        """The DAMSM features of the captions (unknown words left out, as in training)."""
        text = text_encoder if text_encoder is not None else self._trained_damsm().text
        if text is None:
            raise StackGANError("an AttnGAN generator needs its DAMSM text encoder (--damsm)")
        ids = [text.vocabulary.encode(caption)[0] or [0] for caption in captions]
        return text.encode_ids(ids)

    def text_encoder_entry(self, dataset: Any) -> dict[str, Any]:
        return self._trained_damsm().text.to_dict()


@dataclass(frozen=True)
class TrainingText:
    """What AttnGAN's generator reads of a training batch: the DAMSM features of its captions
    and the images' class ids (the matching loss leaves same-class pairs out)."""

    features: WordFeatures
    class_ids: Tensor | None
