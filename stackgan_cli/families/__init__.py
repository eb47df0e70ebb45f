"""Model families: every layer asks the family of a run or a file instead of its architecture.

The registry (:mod:`stackgan_cli.families.registry`, torch-free) lists the families; the
lookups below find the one a training run, a generator file, a generator module or an
official state dict belongs to, and import its implementation only then. The lookups of
generators consider only the families that train one (``FamilySpec.kind``): a DAMSM run trains
encoders, and no generator file or official generator state dict is ever taken for one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stackgan_cli.errors import StackGANError, UsageError
from stackgan_cli.families.registry import (
    ARCHS,
    ENCODERS,
    FAMILIES,
    GENERATOR,
    FamilySpec,
    arch_recipe,
    generator_specs,
    spec_for_run,
    spec_named,
    specs_of_arch,
)

__all__ = [
    "ARCHS",
    "ENCODERS",
    "FAMILIES",
    "GENERATOR",
    "FamilySpec",
    "arch_recipe",
    "family_class_for_run",
    "family_for_file",
    "family_for_training",
    "family_of_generator",
    "generator_specs",
    "import_official",
    "spec_for_run",
    "spec_named",
    "train_spec",
]


def train_spec(cfg: Any) -> FamilySpec:
    """The family a TrainConfig trains; UsageError naming --arch or --stage when none does."""
    specs = specs_of_arch(cfg.arch)
    if not specs:
        raise UsageError(f"--arch: {cfg.arch!r} is not one of {', '.join(ARCHS)}")
    stages = [spec.stage for spec in specs if spec.stage is not None]
    if not stages and cfg.stage is not None:
        raise UsageError(
            f"--stage: --arch {cfg.arch} trains all its outputs at once; drop --stage "
            "(--branches 1|2|3 picks 64, 128 or 256 px)"
        )
    spec = spec_for_run(cfg.arch, cfg.stage)
    if spec is None:
        choices = " or ".join(map(str, stages))
        raise UsageError(
            f"--stage: --arch {cfg.arch} trains one stage per run: pass --stage {choices}"
        )
    return spec


def family_class_for_run(cfg: Any) -> Any:
    """The Family class a TrainConfig trains (see :func:`train_spec`)."""
    return train_spec(cfg).load()


def family_for_training(cfg: Any, model_cfg: Any) -> Any:
    """The Family a TrainConfig trains, with its widths and its recipe's coefficients."""
    return family_class_for_run(cfg).for_training(cfg, model_cfg)


def family_for_file(data: Mapping[str, Any], version: int, where: str) -> Any:
    """The Family class a generator file holds: its ``family`` key, or for files written
    before that key existed, its ``arch`` (version 2 on) and ``stage``."""
    if "family" in data:
        return _generator_family(spec_named(data["family"], where), where).load()
    arch = data.get("arch", "v1") if version >= 2 else "v1"
    if arch not in ARCHS:
        raise StackGANError(f"{where} names architecture {arch!r}; known: {', '.join(ARCHS)}")
    for spec in specs_of_arch(arch):
        _generator_family(spec, where)
    stage = data.get("stage")
    spec = spec_for_run(arch, stage)
    if spec is None:
        stages = " or ".join(str(s.stage) for s in specs_of_arch(arch))
        raise StackGANError(
            f"{where} names stage {stage!r}; a generator file must be stage {stages}"
        )
    return spec.load()


def _generator_family(spec: FamilySpec, where: str) -> FamilySpec:
    """``spec`` if its family trains a generator; StackGANError naming ``where`` otherwise."""
    if not spec.trains_generator:
        raise StackGANError(
            f"{where} names {spec.title}, which trains {spec.kind}, not a generator "
            f"(a {spec.title} file is read by --damsm)"
        )
    return spec


def family_of_generator(module: Any) -> Any:
    """The Family class whose generator ``module`` is (an instance of its generator class)."""
    for spec in generator_specs():
        family = spec.load()
        if type(module) is family.generator_class:
            return family
    raise ValueError(f"{type(module).__name__} is the generator of no model family")


def import_official(state: Any, name: str) -> tuple[Any, Any]:
    """``(family, generator)`` for a plain official generator state dict (``module.``
    prefixes accepted): the first family that recognises it builds it. StackGANError for a
    discriminator or a state dict no family recognises."""
    from stackgan_cli.models.official import plain_state_dict, refuse_non_generator

    plain = plain_state_dict(state, name)
    refuse_non_generator(plain, name)
    for spec in generator_specs():
        family = spec.load()
        if family.recognises_official(plain):
            return family.from_official(state, name)
    raise StackGANError(f"{name} is not a StackGAN generator state dict")
