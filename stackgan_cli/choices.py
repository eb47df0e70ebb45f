"""The choice lists of the training options, each declared once as an enum.

The settings store their plain string values (``TrainConfig``; JSON- and ``weights_only``-safe),
the code that acts on a choice keys its table by them (``models/losses.py`` LOSSES, the
initialisations of ``training/regimes.py``, ``models/network_options.py``), the help texts list
them, and :func:`check_choice` refuses any other value once, where a run starts, with the
one-line usage error every bad option gets (Typer's own choice errors are a framed block).
``--arch`` and ``--preset`` are Typer enum types. Torch-free.
"""

from __future__ import annotations

from enum import Enum

from stackgan_cli.errors import UsageError
from stackgan_cli.families.registry import ARCHS
from stackgan_cli.models.config import PRESETS


class Loss(str, Enum):
    """Adversarial losses, each matching-aware; bce is the official one."""

    bce = "bce"
    lsgan = "lsgan"
    hinge = "hinge"
    wgan_gp = "wgan-gp"


class Optimizer(str, Enum):
    """adam is the official one (with --beta1/--beta2); rmsprop has no betas."""

    adam = "adam"
    rmsprop = "rmsprop"


class Init(str, Enum):
    """Weight initialisation: official is each family's own (v1 normal(0, 0.02), v2 orthogonal)."""

    official = "official"
    orthogonal = "orthogonal"
    normal = "normal"
    xavier = "xavier"
    kaiming = "kaiming"


class GNorm(str, Enum):
    """The generator's normalisation: batch (official) or none."""

    batch = "batch"
    none = "none"


class DNorm(str, Enum):
    """The discriminators' normalisation: batch (official), none, or spectral."""

    batch = "batch"
    none = "none"
    spectral = "spectral"


Arch = Enum("Arch", {arch: arch for arch in ARCHS}, type=str)
Arch.__doc__ = "The --arch choices: one per architecture of the family registry."

Preset = Enum("Preset", {name: name for name in PRESETS}, type=str)
Preset.__doc__ = "The official network widths (models/config.py PRESETS)."


def values(choice: type[Enum]) -> tuple[str, ...]:
    """The plain values of an enum of choices, in order."""
    return tuple(member.value for member in choice)


def check_choice(option: str, value: str, choice: type[Enum]) -> None:
    """UsageError naming ``option`` unless ``value`` is one of ``choice``'s values."""
    if value not in values(choice):
        raise UsageError(f"{option}: {value!r} is not one of {', '.join(values(choice))}")
