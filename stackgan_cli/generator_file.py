"""The generator file: one file that alone is enough to generate images from text.

A plain dict written with ``atomic_torch_save``, read back with
``torch.load(path, weights_only=True)``::

    {"format": "stackgan-generator", "format_version": 1, "stage": 1 | 2,
     "model_config": ModelConfig.to_dict(), "generator": state_dict (Stage II: with STAGE1_G.*),
     "text_encoder": dict | None, "dataset": str | None, "epoch": int | None}

A StackGAN-v2 tree generator is written as ``"format_version": 2`` with ``"arch": "v2"`` and
``"stage": None`` (its ``model_config`` has ``branch_num``); StackGAN-v1 files stay version 1,
so older versions of this package keep reading them and refuse the v2 ones cleanly.

:func:`load_generator_file` also accepts a plain official StackGAN-Pytorch ``netG`` state dict
(StackGAN-v1 ``netG_epoch_<N>.pth``) and an official StackGAN-v2 one (``netG_<N>.pth``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stackgan_cli import paths
from stackgan_cli.errors import StackGANError
from stackgan_cli.formats import check_format
from stackgan_cli.fsutil import atomic_torch_save
from stackgan_cli.models.config import ModelConfig
from stackgan_cli.models.generator_v2 import StackGANv2Generator
from stackgan_cli.models.official import (
    assign_state_dict,
    empty_module,
    generator_from_state_dict,
    read_torch_file,
)
from stackgan_cli.models.official_v2 import v2_generator_from_state_dict
from stackgan_cli.models.stage1 import Stage1Generator
from stackgan_cli.models.stage2 import Stage2Generator

FORMAT = "stackgan-generator"
FORMAT_VERSION = 1
V2_FORMAT_VERSION = 2  # files holding a StackGAN-v2 generator
_GENERATOR_CLASSES = {1: Stage1Generator, 2: Stage2Generator}
_OFFICIAL_NAME = re.compile(r"netG_epoch_(\d+)\.pth$")
_OFFICIAL_V2_NAME = re.compile(r"netG_(\d+)\.pth$")  # StackGAN-v2 counts iterations
_V2_GENERATOR_PREFIXES = ("h_net1.", "module.h_net1.")


@dataclass
class GeneratorBundle:
    """Everything loaded from a generator file; ``generator`` is in eval mode on the device."""

    stage: int
    cfg: ModelConfig
    generator: nn.Module
    text_encoder: Any | None  # stackgan_cli.text.TextEncoder
    dataset: str | None
    epoch: int | None
    source: str  # "stackgan" (our format) or "official" (plain StackGAN-Pytorch state dict)
    path: Path
    arch: str = "v1"  # "v2": a StackGANv2Generator; ``stage`` is then None
    iteration: int | None = None  # official StackGAN-v2 files: N of ``netG_<N>.pth``


def _unwrap(module: nn.Module) -> nn.Module:
    """The bare network inside DistributedDataParallel / torch.compile wrappers."""
    while True:
        if hasattr(module, "_orig_mod"):
            module = module._orig_mod
        elif isinstance(module, (nn.DataParallel, nn.parallel.DistributedDataParallel)):
            module = module.module
        else:
            return module


def save_generator_file(
    path: str | Path,
    generator: nn.Module,
    cfg: ModelConfig,
    *,
    stage: int | None,
    text_encoder: Mapping[str, Any] | Any | None = None,
    dataset: str | None,
    epoch: int | None,
    g_norm: str = "batch",
) -> None:
    """Write ``generator`` (weights moved to the CPU), its config and the text encoder
    atomically to ``path``. ``stage`` is 1 or 2 for StackGAN-v1, None for a StackGAN-v2
    generator. ``text_encoder`` is the encoder's ``to_dict()`` (an encoder object is converted
    with its ``to_dict``), or None. ``g_norm`` "none" (a generator trained with --g-norm
    none) is recorded as ``"g_norm": "none"`` - and a Stage-II generator whose nested Stage-I
    generator has no BatchNorm as ``"stage1_g_norm": "none"`` - so that loading drops the
    same BatchNorm layers; the default writes neither key."""
    generator = _unwrap(generator)
    expected = _GENERATOR_CLASSES.get(stage) if stage is not None else StackGANv2Generator
    if expected is None:
        raise ValueError(f"stage must be 1, 2 or None (StackGAN-v2), got {stage!r}")
    if not isinstance(generator, expected):
        raise ValueError(
            f"stage {stage} needs a {expected.__name__}, got {type(generator).__name__}"
        )
    if generator.cfg != cfg:
        raise ValueError(f"the generator was built with {generator.cfg}, not {cfg}")
    if text_encoder is not None and not isinstance(text_encoder, Mapping):
        text_encoder = text_encoder.to_dict()
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION if stage is not None else V2_FORMAT_VERSION,
        "stage": stage,
        "model_config": cfg.to_dict(),
        "generator": {key: value.detach().cpu() for key, value in generator.state_dict().items()},
        "text_encoder": dict(text_encoder) if text_encoder is not None else None,
        "dataset": dataset,
        "epoch": epoch,
    }
    if stage is None:
        payload["arch"] = "v2"
    if g_norm != "batch":
        payload["g_norm"] = g_norm
    stage1 = getattr(generator, "STAGE1_G", None)
    if stage1 is not None and not any(
        isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in stage1.modules()
    ):
        payload["stage1_g_norm"] = "none"
    atomic_torch_save(payload, Path(path))


def load_generator_file(path: str | Path, device: str | torch.device = "cpu") -> GeneratorBundle:
    """Load a generator file (or a plain official ``netG_epoch_*.pth`` of StackGAN-v1 or
    ``netG_<iteration>.pth`` of StackGAN-v2) onto ``device``.

    Raises StackGANError for a missing, truncated or non-PyTorch file, an unknown format
    version, a discriminator, or any other dict that is not a StackGAN generator.
    """
    path = Path(path)
    data = read_torch_file(path)
    if isinstance(data, Mapping) and "format" in data:
        bundle = _from_generator_file(data, path)
    else:
        bundle = _from_official(data, path)
    bundle.generator.to(device).eval()
    return bundle


def _from_generator_file(data: Mapping[str, Any], path: Path) -> GeneratorBundle:
    version = check_format(
        data,
        tag=FORMAT,
        versions=(FORMAT_VERSION, V2_FORMAT_VERSION),
        where=str(path),
        what="StackGAN generator file",
        remedy="a newer stackgan may read it",
    )
    arch = data.get("arch", "v1") if version >= V2_FORMAT_VERSION else "v1"
    if arch not in ("v1", "v2"):
        raise StackGANError(f"{path} names architecture {arch!r}; known: v1, v2")
    stage = data.get("stage")
    if arch == "v2":
        stage = None
    elif stage not in _GENERATOR_CLASSES:
        raise StackGANError(f"{path} names stage {stage!r}; a generator file must be stage 1 or 2")
    try:
        cfg = ModelConfig.from_dict(data.get("model_config"))
    except StackGANError as exc:
        raise StackGANError(f"{path}: {exc}") from None
    state = data.get("generator")
    if not isinstance(state, Mapping):
        raise StackGANError(f"{path} holds no generator weights")
    model_class = StackGANv2Generator if arch == "v2" else _GENERATOR_CLASSES[stage]
    what = "StackGAN-v2" if arch == "v2" else f"Stage-{stage}"
    try:
        generator = empty_module(model_class, cfg)
        if data.get("g_norm", "batch") != "batch" or data.get("stage1_g_norm", "batch") != "batch":
            # --g-norm none: the BatchNorm layers the weights have no entries for are dropped.
            from stackgan_cli.training.network_options import strip_missing_batchnorm

            strip_missing_batchnorm(generator, state)
        generator = assign_state_dict(generator, state)
    except (RuntimeError, TypeError, AttributeError, ValueError):
        raise StackGANError(
            f"{path}: the generator weights do not match its {what} model configuration"
        ) from None
    dataset = data.get("dataset")
    epoch = data.get("epoch")
    if dataset is not None and not isinstance(dataset, str):
        raise StackGANError(f"{path}: dataset must be a string, got {type(dataset).__name__}")
    if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, int)):
        raise StackGANError(f"{path}: epoch must be an integer, got {type(epoch).__name__}")
    return GeneratorBundle(
        stage=stage,
        cfg=cfg,
        generator=generator,
        text_encoder=_text_encoder(data.get("text_encoder"), path),
        dataset=dataset,
        epoch=epoch,
        source="stackgan",
        path=path,
        arch=arch,
    )


def _text_encoder(data: Any, path: Path) -> Any | None:
    return None if data is None else text_encoder_from_dict(data, str(path))


def text_encoder_from_dict(data: Any, where: str) -> Any:
    """A ``TextEncoder`` from its ``to_dict()`` (a generator file's entry or a
    ``text_encoder.pt``); a one-line StackGANError naming ``where`` otherwise."""
    if not isinstance(data, Mapping):
        raise StackGANError(f"{where}: the text encoder entry is not a dict")
    from stackgan_cli.text import TextEncoder  # the text package is heavy; only when needed

    try:
        return TextEncoder.from_dict(dict(data))
    except StackGANError as exc:
        raise StackGANError(f"{where}: {exc}") from None
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise StackGANError(f"{where}: its text encoder could not be loaded ({exc})") from None


def _from_official(data: Any, path: Path) -> GeneratorBundle:
    is_state_dict = isinstance(data, Mapping) and all(
        isinstance(key, str) and isinstance(value, torch.Tensor) for key, value in data.items()
    )
    if not is_state_dict or not data:
        raise StackGANError(
            f"{path} is neither a StackGAN generator file nor a generator state dict"
        )
    if any(key.startswith(_V2_GENERATOR_PREFIXES) for key in data):
        # The v1 loader checks for discriminators first; v2 ones have no h_net1.
        return _from_official_v2(data, path)
    stage, cfg, generator = generator_from_state_dict(data, name=str(path))
    match = _OFFICIAL_NAME.search(path.name)
    return GeneratorBundle(
        stage=stage,
        cfg=cfg,
        generator=generator,
        text_encoder=None,
        dataset=None,
        epoch=int(match.group(1)) if match else None,
        source="official",
        path=path,
    )


def _from_official_v2(data: Mapping[str, Any], path: Path) -> GeneratorBundle:
    cfg, generator = v2_generator_from_state_dict(data, name=str(path))
    match = _OFFICIAL_V2_NAME.search(path.name)
    iteration = int(match.group(1)) if match else None
    return GeneratorBundle(
        stage=None,
        cfg=cfg,
        generator=generator,
        text_encoder=None,
        dataset=None,
        epoch=None,
        source="official",
        path=path,
        arch="v2",
        iteration=iteration,
    )


def newest_generator(runs_dir: Path | None = None) -> Path:
    """The most recently modified ``<runs_dir>/*/generator.pt`` (default: the cache's runs)."""
    runs_dir = paths.runs_dir() if runs_dir is None else Path(runs_dir)
    candidates = [p for p in runs_dir.glob("*/generator.pt") if p.is_file()]
    if not candidates:
        raise StackGANError(
            f"no --ckpt given and no trained generator in {runs_dir}: train one with "
            "`stackgan train --stage 1 --dataset shapes` or pass --ckpt FILE"
        )
    return max(candidates, key=lambda p: (p.stat().st_mtime_ns, str(p)))
