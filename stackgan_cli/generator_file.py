"""The generator file: one file that alone is enough to generate images from text.

A plain dict written with ``atomic_torch_save``, read back with
``torch.load(path, weights_only=True)``::

    {"format": "stackgan-generator", "format_version": 1 | 2, "family": "v1-stage1" | ...,
     "model_config": ModelConfig.to_dict(), "generator": state_dict (Stage II: with STAGE1_G.*),
     "text_encoder": dict | None, "dataset": str | None, "epoch": int | None, ...}

``family`` names the model family (stackgan_cli/families/registry.py), which also adds the keys
that earlier versions read instead (``stage``; ``arch`` for StackGAN-v2) and picks the format
version: StackGAN-v1 files stay version 1, so older versions of this package keep reading them
and refuse the others cleanly. Files written before ``family`` existed load through those keys.

:func:`load_generator_file` also accepts a plain official generator state dict of any family
(StackGAN-v1 ``netG_epoch_<N>.pth``, StackGAN-v2 ``netG_<N>.pth``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stackgan_cli import families, paths
from stackgan_cli.errors import StackGANError
from stackgan_cli.formats import CHECKPOINT_FORMAT, check_format, check_regular_file
from stackgan_cli.fsutil import atomic_torch_save
from stackgan_cli.models.config import ModelConfig
from stackgan_cli.models.official import assign_state_dict, empty_module, read_torch_file

FORMAT = "stackgan-generator"
FORMAT_VERSIONS = (1, 2)  # 2: families whose files older versions must refuse (StackGAN-v2)


@dataclass
class GeneratorBundle:
    """Everything loaded from a generator file; ``generator`` is in eval mode on the device."""

    family: Any  # a stackgan_cli.families.base.Family, with the file's widths
    generator: nn.Module
    text_encoder: Any | None  # stackgan_cli.text.TextEncoder (AttnGAN: text.damsm_text.DAMSMText)
    dataset: str | None
    epoch: int | None
    source: str  # "stackgan" (our format) or "official" (a plain official state dict)
    path: Path
    iteration: int | None = None  # official StackGAN-v2 files: N of ``netG_<N>.pth``

    @property
    def cfg(self) -> ModelConfig:
        return self.family.cfg

    @property
    def arch(self) -> str:
        return self.family.spec.arch

    @property
    def stage(self) -> int | None:
        return self.family.spec.stage

    def describe(self) -> str:
        """One line: the family's generator and where the file comes from."""
        text = self.family.describe()
        if self.source == "official":
            text += " (official state dict)"
        if self.dataset:
            text += f", trained on {self.dataset}"
        if self.epoch is not None:
            text += f", epoch {self.epoch}"
        if self.iteration is not None:
            text += f", iteration {self.iteration}"
        return text


def unwrap(module: nn.Module) -> nn.Module:
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
    family: str | None = None,
    text_encoder: Mapping[str, Any] | Any | None = None,
    dataset: str | None,
    epoch: int | None,
    g_norm: str = "batch",
) -> None:
    """Write ``generator`` (weights moved to the CPU), its config and the text encoder
    atomically to ``path``. Its family follows from its class; ``family`` (a registry key),
    when given, must agree. ``text_encoder`` is the encoder's ``to_dict()`` (an encoder object
    is converted with its ``to_dict``), or None. ``g_norm`` "none" (a generator trained with
    --g-norm none) is recorded as ``"g_norm": "none"`` - and a Stage-II generator whose nested
    Stage-I generator has no BatchNorm as ``"stage1_g_norm": "none"`` - so that loading drops
    the same BatchNorm layers; the default writes neither key."""
    generator = unwrap(generator)
    family_class = families.family_of_generator(generator)
    if family is not None and family != family_class.spec.key:
        raise ValueError(
            f"family {family} needs a {families.spec_named(family).load().generator_class.__name__}"
            f", got {type(generator).__name__}"
        )
    if generator.cfg != cfg:
        raise ValueError(f"the generator was built with {generator.cfg}, not {cfg}")
    if text_encoder is not None and not isinstance(text_encoder, Mapping):
        text_encoder = text_encoder.to_dict()
    payload = {
        "format": FORMAT,
        **family_class(cfg).file_entries(),
        "model_config": cfg.to_dict(),
        "generator": {key: value.detach().cpu() for key, value in generator.state_dict().items()},
        "text_encoder": dict(text_encoder) if text_encoder is not None else None,
        "dataset": dataset,
        "epoch": epoch,
    }
    if g_norm != "batch":
        payload["g_norm"] = g_norm
    stage1 = getattr(generator, "STAGE1_G", None)
    if stage1 is not None and not any(
        isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in stage1.modules()
    ):
        payload["stage1_g_norm"] = "none"
    atomic_torch_save(payload, Path(path))


def load_generator_file(path: str | Path, device: str | torch.device = "cpu") -> GeneratorBundle:
    """Load a generator file (or a plain official generator state dict) onto ``device``.

    Raises StackGANError for a missing, truncated or non-PyTorch file (or a folder, a FIFO),
    a training checkpoint (naming the run's generator file), an unknown format version or
    family, a discriminator, or any other dict that is not a StackGAN generator.
    """
    path = Path(path)
    data = read_torch_file(check_regular_file(path, str(path)))
    if isinstance(data, Mapping) and "format" in data:
        bundle = _from_generator_file(data, path)
    else:
        bundle = _from_official(data, path)
    bundle.generator.to(device).eval()
    return bundle


def _from_generator_file(data: Mapping[str, Any], path: Path) -> GeneratorBundle:
    if data.get("format") == CHECKPOINT_FORMAT:
        raise StackGANError(training_checkpoint_message(data, path))
    version = check_format(
        data,
        tag=FORMAT,
        versions=FORMAT_VERSIONS,
        where=str(path),
        what="StackGAN generator file",
        remedy="a newer stackgan may read it",
    )
    family_class = families.family_for_file(data, version, str(path))
    try:
        cfg = ModelConfig.from_dict(data.get("model_config"))
    except StackGANError as exc:
        raise StackGANError(f"{path}: {exc}") from None
    family = family_class(cfg)
    state = data.get("generator")
    if not isinstance(state, Mapping):
        raise StackGANError(f"{path} holds no generator weights")
    try:
        generator = empty_module(family.generator_class, cfg)
        if data.get("g_norm", "batch") != "batch" or data.get("stage1_g_norm", "batch") != "batch":
            # --g-norm none: the BatchNorm layers the weights have no entries for are dropped.
            from stackgan_cli.models.network_options import strip_missing_batchnorm

            strip_missing_batchnorm(generator, state)
        generator = assign_state_dict(generator, state)
    except (RuntimeError, TypeError, AttributeError, ValueError):
        raise StackGANError(
            f"{path}: the generator weights do not match its {family.label}'s model configuration"
        ) from None
    dataset = data.get("dataset")
    epoch = data.get("epoch")
    if dataset is not None and not isinstance(dataset, str):
        raise StackGANError(f"{path}: dataset must be a string, got {type(dataset).__name__}")
    if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, int)):
        raise StackGANError(f"{path}: epoch must be an integer, got {type(epoch).__name__}")
    return GeneratorBundle(
        family=family,
        generator=generator,
        text_encoder=_text_encoder(data.get("text_encoder"), path),
        dataset=dataset,
        epoch=epoch,
        source="stackgan",
        path=path,
    )


def training_checkpoint_message(data: Mapping[str, Any], path: Path) -> str:
    """Why ``path``, a training checkpoint (``RUN/checkpoints/last.pt`` or a snapshot), is not
    a generator file, naming the file of its run to use instead: ``RUN/generator.pt`` (or the
    run's ``--out`` copy), or for a DAMSM run, which trains no generator, ``RUN/damsm.pt``."""
    train = data.get("train_config")
    train = train if isinstance(train, Mapping) else {}
    # The folder the checkpoint lies in wins over the recorded one: runs get moved or copied.
    folder = path.absolute().parent
    if folder.name == "checkpoints":
        run_dir = folder.parent
    elif isinstance(train.get("run_dir"), str) and train["run_dir"]:
        run_dir = Path(train["run_dir"])
    else:
        run_dir = None
    out = train.get("out")
    name = "generator.pt" if "generator" in data else "damsm.pt"
    where = f"{run_dir / name}" if run_dir is not None else f"the run's {name}"
    where += f" (or the run's --out file, {out})" if isinstance(out, str) and out else ""
    if "generator" not in data:
        return (
            f"{path} is a DAMSM run's training checkpoint, which holds no generator; its DAMSM "
            f"file is {where}, for --damsm"
        )
    return f"{path} is a training checkpoint; generate from {where}"


def _text_encoder(data: Any, path: Path) -> Any | None:
    return None if data is None else text_encoder_from_dict(data, str(path))


def text_encoder_from_dict(data: Any, where: str) -> Any:
    """A ``TextEncoder`` from its ``to_dict()`` (a generator file's entry or a
    ``text_encoder.pt``), for AttnGAN files a ``DAMSMText``, for StackGAN files trained on a
    DAMSM's sentence features a ``DAMSMSentenceEncoder``; a one-line StackGANError naming
    ``where`` otherwise."""
    if not isinstance(data, Mapping):
        raise StackGANError(f"{where}: the text encoder entry is not a dict")
    from stackgan_cli.text import damsm_text

    if data.get("format") == damsm_text.FORMAT:
        from stackgan_cli.text import damsm_sentences

        if damsm_sentences.is_sentence_encoder_dict(data):  # a v1/v2 file trained with --damsm
            return damsm_sentences.DAMSMSentenceEncoder.from_dict(data, where)
        return damsm_text.DAMSMText.from_dict(data, where)
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
    family, generator = families.import_official(data, str(path))
    # The number in an official file's name: the family says whether it counts epochs.
    match = family.official_name.search(path.name) if family.official_name else None
    count = int(match.group(1)) if match else None
    epoch, iteration = (count, None) if family.official_count == "epoch" else (None, count)
    return GeneratorBundle(
        family=family,
        generator=generator,
        text_encoder=None,
        dataset=None,
        epoch=epoch,
        source="official",
        path=path,
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
