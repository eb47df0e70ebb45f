"""The network dimensions: one frozen dataclass shared by models, training, files and the CLI."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stackgan_cli.errors import StackGANError

# Output resolution of each stage's generator (Stage I 64x64, Stage II 256x256).
IMAGE_SIZE = {1: 64, 2: 256}


def load_size(image_size: int) -> int:
    """Side of the stored images that training crops ``image_size`` squares from:
    ``int(image_size * 76 / 64)``, as the official data loader (64 -> 76, 256 -> 304)."""
    return image_size * 76 // 64


STORED_SIZES = tuple(load_size(size) for size in IMAGE_SIZE.values())
"""The image sides a prepared dataset stores (76, 304)."""


@dataclass(frozen=True)
class ModelConfig:
    """StackGAN widths; the defaults are the official birds values (stackgan-pytorch-spec.md
    1.1)."""

    gf_dim: int = 128  # generator base width; Stage-I G starts at gf_dim*8 channels at 4x4
    df_dim: int = 64  # discriminator base width; both Ds end at df_dim*8 channels at 4x4
    z_dim: int = 100  # noise dimension
    condition_dim: int = 128  # conditioning-augmentation output (c, mu, logvar)
    r_num: int = 4  # residual blocks in Stage-II G (unused by Stage I)
    text_dim: int = 1024  # text embedding dimension
    branch_num: int = 3  # StackGAN-v2 only: generator branches (64, 128, 256 px); v1 ignores it
    word_dim: int = 300  # AttnGAN only: the DAMSM text encoder's word-embedding size

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"ModelConfig.{field.name} must be a positive integer, got {value!r}"
                )
        if self.gf_dim < 4:
            # Stage-II G's last upsampling block has gf_dim // 4 channels.
            raise ValueError(f"ModelConfig.gf_dim must be at least 4, got {self.gf_dim}")

    @classmethod
    def preset(cls, name: str) -> ModelConfig:
        """The official configuration called ``name`` ("birds" or "coco")."""
        try:
            return PRESETS[name]
        except KeyError:
            known = ", ".join(sorted(PRESETS))
            raise ValueError(f"unknown model preset {name!r} (known: {known})") from None

    def to_dict(self) -> dict[str, int]:
        """Plain dict of the widths (JSON- and ``weights_only``-safe). ``word_dim`` is left out
        at its default, so that the files of the families that never read it stay readable by
        versions that do not know it."""
        data = dataclasses.asdict(self)
        if data["word_dim"] == _DEFAULT_WORD_DIM:
            del data["word_dim"]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; every field must be present, unknown keys are rejected.

        ``branch_num`` and ``word_dim`` may be absent (files written before they existed) and then
        take their defaults.
        Raises StackGANError, since the dict normally comes from a file.
        """
        if not isinstance(data, Mapping):
            raise StackGANError(f"model configuration must be a mapping, got {type(data).__name__}")
        names = [field.name for field in dataclasses.fields(cls)]
        optional = {"branch_num", "word_dim"}  # fields added after configurations were first saved
        missing = [name for name in names if name not in data and name not in optional]
        unknown = [str(key) for key in data if key not in names]
        if missing or unknown:
            problems = []
            if missing:
                problems.append("missing " + ", ".join(missing))
            if unknown:
                problems.append("unknown " + ", ".join(unknown))
            raise StackGANError(f"invalid model configuration: {'; '.join(problems)}")
        try:
            return cls(**{name: data[name] for name in names if name in data})
        except ValueError as exc:
            raise StackGANError(f"invalid model configuration: {exc}") from None


_DEFAULT_WORD_DIM = ModelConfig().word_dim

PRESETS: dict[str, ModelConfig] = {
    "birds": ModelConfig(),
    "coco": ModelConfig(gf_dim=192, df_dim=96, r_num=2),
    # StackGAN-v2 (StackGAN++) birds, birds_3stages.yml
    "birds-v2": ModelConfig(gf_dim=64, df_dim=64, r_num=2, branch_num=3),
    # AttnGAN birds, bird_attn2.yml; text_dim is the DAMSM feature size, word_dim its words'
    "birds-attngan": ModelConfig(
        gf_dim=32,
        df_dim=64,
        z_dim=100,
        condition_dim=100,
        r_num=2,
        text_dim=256,
        branch_num=3,
        word_dim=300,
    ),
}


def image_size(stage: int) -> int:
    """Side length of the images a stage's generator makes and its discriminator takes."""
    try:
        return IMAGE_SIZE[stage]
    except KeyError:
        raise ValueError(f"stage must be 1 or 2, got {stage!r}") from None
