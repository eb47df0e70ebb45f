"""The registry of model families: what each one is, read without torch.

A family is one kind of model from training to generation: StackGAN-v1 Stage I, StackGAN-v1
Stage II, the StackGAN-v2 tree, AttnGAN. Its entry here says what it is (the key generator
files name it by, the ``--arch``/``--stage`` a run trains it with, its titles, run-folder
prefix and official recipe) and where its implementation lives; :meth:`FamilySpec.load` imports that
implementation (a :class:`stackgan_cli.families.base.Family` subclass, with torch) on first
use. So ``stackgan runs`` and ``--help`` ask the registry and never import torch, and a new
family is one entry here and one module beside this one.

Most entries train a generator (``kind`` "generator"). The DAMSM entry (``--arch damsm``)
trains AttnGAN's text and image encoders instead (``kind`` "encoders"): it is a run like every
other (run folder, recipe, ``stackgan runs``), but no generator file names it, and the lookups
of generators (:func:`generator_specs`) leave it out. Its implementation is its trainer.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from stackgan_cli.errors import StackGANError


def _v1_run_label(spec: FamilySpec, train: Mapping[str, Any]) -> str:
    return f"v1 stage {spec.stage}"


def _encoders_run_label(spec: FamilySpec, train: Mapping[str, Any]) -> str:
    return f"{spec.title} encoders"


def _tree_run_label(spec: FamilySpec, train: Mapping[str, Any]) -> str:
    branches = train.get("branches")
    if isinstance(branches, bool) or not isinstance(branches, int):
        return spec.arch
    return f"{spec.arch} {branches} {'branch' if branches == 1 else 'branches'}"


GENERATOR = "generator"
ENCODERS = "encoders"

FAMILY_OPTIONS = {
    "uncond_coeff": "--uncond-coeff",
    "color_coeff": "--color-coeff",
    "damsm_weight": "--damsm-weight",
}
"""TrainConfig fields that only some families read (FamilySpec.options), with their option."""

MIN_WIDTHS = {"gf_dim": 4}
"""The smallest widths every family's networks take (others: 1): Stage-II G's last upsampling
block has gf_dim // 4 channels, and models/config.py ModelConfig refuses less for every family."""


@dataclass(frozen=True)
class FamilySpec:
    """One family's entry: its identity, its official recipe and where its code lives."""

    key: str  # what generator files name it by ("family")
    arch: str  # the --arch that trains it (TrainConfig.arch)
    stage: int | None  # the --stage that trains it (TrainConfig.stage); None: no stages
    title: str  # e.g. "StackGAN-v1 Stage-I"
    run_prefix: str  # run folder names: <prefix>-<dataset>-<YYYYmmdd-HHMMSS>
    default_preset: str  # models/config.py PRESETS: the network widths of the official recipe
    implementation: str  # "module:Class" of its Family subclass
    # What the official recipe changes of TrainConfig's defaults (the families of one --arch
    # share one recipe: it is chosen before the stage is known).
    train_defaults: Mapping[str, Any] = field(default_factory=dict)
    # A run's model column in `stackgan runs`, from config.json's "train" dict.
    run_label: Callable[[FamilySpec, Mapping[str, Any]], str] = _v1_run_label
    # What a run of it trains: GENERATOR (generator files, samples) or ENCODERS (a DAMSM file).
    kind: str = GENERATOR
    # The FAMILY_OPTIONS its runs read; a run of another family refuses them.
    options: frozenset[str] = frozenset()
    # The smallest value of each ModelConfig width (a --gf-dim ... option) its networks take.
    min_widths: Mapping[str, int] = field(default_factory=lambda: dict(MIN_WIDTHS))

    @property
    def trains_generator(self) -> bool:
        """True for the families whose runs train a generator (those generator files name)."""
        return self.kind == GENERATOR

    def load(self) -> Any:
        """The family's implementation class (imports torch and the networks)."""
        module, _, name = self.implementation.partition(":")
        return getattr(importlib.import_module(module), name)


FAMILIES: dict[str, FamilySpec] = {
    spec.key: spec
    for spec in (
        FamilySpec(
            key="v1-stage1",
            arch="v1",
            stage=1,
            title="StackGAN-v1 Stage-I",
            run_prefix="stage1",
            default_preset="birds",
            implementation="stackgan_cli.families.stackgan_v1:StageOne",
        ),
        FamilySpec(
            key="v1-stage2",
            arch="v1",
            stage=2,
            title="StackGAN-v1 Stage-II",
            run_prefix="stage2",
            default_preset="birds",
            implementation="stackgan_cli.families.stackgan_v1:StageTwo",
        ),
        FamilySpec(
            key="v2",
            arch="v2",
            stage=None,
            title="StackGAN-v2",
            run_prefix="v2",
            default_preset="birds-v2",
            implementation="stackgan_cli.families.stackgan_v2:StackGANv2",
            # stackgan-v2-spec.md 1: batch 24, the parameter average 0.999 (no stages)
            train_defaults={"stage": None, "branches": 3, "batch_size": 24, "ema": 0.999},
            run_label=_tree_run_label,
            options=frozenset({"uncond_coeff", "color_coeff"}),
        ),
        FamilySpec(
            key="attngan",
            arch="attngan",
            stage=None,
            title="AttnGAN",
            run_prefix="attngan",
            default_preset="birds-attngan",
            implementation="stackgan_cli.families.attngan:AttnGAN",
            # attngan-spec.md 8.2: batch 20, the parameter average 0.999, three branches, KL 1
            train_defaults={
                "stage": None,
                "branches": 3,
                "batch_size": 20,
                "ema": 0.999,
                "kl_coeff": 1.0,
            },
            run_label=_tree_run_label,
            options=frozenset({"damsm_weight"}),
        ),
        FamilySpec(
            key="damsm",
            arch="damsm",
            stage=None,
            title="DAMSM",
            run_prefix="damsm",
            default_preset="birds-attngan",  # text_dim 256, word_dim 300
            implementation="stackgan_cli.training.damsm_loop:DAMSMTrainer",
            # attngan-spec.md 8.1 (DAMSM/bird.yml): batch 48, encoder lr 0.002 (x0.98 per
            # epoch while above 0.0002), 600 epochs, a snapshot every 50
            train_defaults={
                "stage": None,
                "batch_size": 48,
                "lr_encoder": 0.002,
                "trunk_views": 4,
                "epochs": 600,
                "snapshot_every": 50,
            },
            run_label=_encoders_run_label,
            kind=ENCODERS,
            min_widths={},  # it takes no GAN widths (and checks its own: text_dim even)
        ),
    )
}

ARCHS: tuple[str, ...] = tuple(dict.fromkeys(spec.arch for spec in FAMILIES.values()))
"""The --arch choices, in registry order."""


def generator_specs() -> list[FamilySpec]:
    """The families that train a generator (what generator files and official state dicts can
    hold), in registry order."""
    return [spec for spec in FAMILIES.values() if spec.trains_generator]


def users_of(option: str) -> list[FamilySpec]:
    """The families whose runs read the FAMILY_OPTIONS field ``option``, in registry order."""
    return [spec for spec in FAMILIES.values() if option in spec.options]


def specs_of_arch(arch: str) -> list[FamilySpec]:
    """The families that ``--arch arch`` trains (one per stage), in registry order."""
    return [spec for spec in FAMILIES.values() if spec.arch == arch]


def arch_recipe(arch: str) -> FamilySpec:
    """The family whose recipe (train_defaults, default_preset) ``--arch arch`` starts from."""
    specs = specs_of_arch(arch)
    if not specs:
        raise StackGANError(f"unknown architecture {arch!r}; known: {', '.join(ARCHS)}")
    return specs[0]


def spec_named(key: str, where: str = "") -> FamilySpec:
    """The family called ``key``; StackGANError (prefixed by ``where``) for an unknown one."""
    spec = FAMILIES.get(key) if isinstance(key, str) else None
    if spec is None:
        prefix = f"{where} names" if where else "unknown"
        raise StackGANError(
            f"{prefix} model family {key!r}; known: {', '.join(FAMILIES)} "
            "(a newer stackgan may know it)"
        )
    return spec


def spec_for_run(arch: Any, stage: Any) -> FamilySpec | None:
    """The family that ``--arch arch --stage stage`` trains, or None. An architecture without
    stages has one family, whatever ``stage`` says (older config.json files and generator
    files carry a stage for it)."""
    specs = [spec for spec in FAMILIES.values() if spec.arch == arch]
    if len(specs) == 1 and specs[0].stage is None:
        return specs[0]
    return next((spec for spec in specs if spec.stage == stage), None)
