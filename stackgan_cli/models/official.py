"""Import of plain official StackGAN-Pytorch generator state dicts (``netG_epoch_*.pth``).

The stage and every width are read from the tensor shapes, so any official-layout generator
loads: the released COCO Stage-II model (gf_dim 192, r_num 2) as well as birds-style ones.
"""

from __future__ import annotations

import dataclasses
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from stackgan_cli.errors import StackGANError
from stackgan_cli.models.config import PRESETS, ModelConfig
from stackgan_cli.models.stage1 import Stage1Generator
from stackgan_cli.models.stage2 import Stage2Generator

_DISCRIMINATOR_PREFIXES = ("encode_img.", "get_cond_logits.", "get_uncond_logits.")
# Keys only StackGAN-v2 networks have: the first generator stage, the discriminators' encoder.
_V2_GENERATOR_PREFIX = "h_net1."
_V2_DISCRIMINATOR_PREFIX = "img_code_s16."
_RESIDUAL_KEY = re.compile(r"^residual\.(\d+)\.block\.")


def read_torch_file(path: str | Path) -> Any:
    """``torch.load(path, map_location="cpu", weights_only=True)`` with user-facing errors for a
    missing, unreadable, truncated or non-PyTorch file."""
    path = Path(path)
    if not path.exists():
        raise StackGANError(f"{path} does not exist")
    if not path.is_file():
        raise StackGANError(f"{path} is not a file")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise StackGANError(
            f"{path} is not a plain tensor file (it holds objects that weights_only loading "
            "refuses, or it is not a PyTorch file at all)"
        ) from None
    except OSError as exc:
        raise StackGANError(f"{path} could not be read: {exc.strerror or exc}") from None
    except Exception:
        raise StackGANError(
            f"{path} is not a readable PyTorch file (truncated or corrupt?)"
        ) from None


def load_official_generator(
    state_dict_or_path: Mapping[str, Any] | str | Path,
) -> tuple[int, ModelConfig, nn.Module]:
    """Build the generator that a plain official state dict (or a file holding one) describes.

    Returns ``(stage, cfg, generator)`` with the weights loaded strictly and the generator in
    eval mode on the CPU. A ``module.`` key prefix and missing BatchNorm ``num_batches_tracked``
    entries (pre-0.4 checkpoints) are accepted. ``cfg.df_dim`` is not stored in a generator; it
    is taken from the preset with the same gf_dim, else gf_dim // 2 (true of both presets).
    Raises StackGANError for a discriminator, an unreadable file or a non-StackGAN layout.
    """
    state, name = read_state(state_dict_or_path)
    return generator_from_state_dict(state, name=name)


def read_state(state_dict_or_path: Any) -> tuple[Any, str]:
    """``(object, name for errors)``: a path read with :func:`read_torch_file`, or the given
    (already loaded) object."""
    if isinstance(state_dict_or_path, (str, Path)):
        return read_torch_file(state_dict_or_path), str(state_dict_or_path)
    return state_dict_or_path, "the state dict"


def generator_from_state_dict(state: Any, *, name: str) -> tuple[int, ModelConfig, nn.Module]:
    """:func:`load_official_generator` for an already loaded object; ``name`` labels errors."""
    state = plain_state_dict(state, name)
    if any(key.startswith((*_DISCRIMINATOR_PREFIXES, _V2_DISCRIMINATOR_PREFIX)) for key in state):
        raise StackGANError(f"{name} is a discriminator, not a generator")
    if any(key.startswith(_V2_GENERATOR_PREFIX) for key in state):
        raise StackGANError(f"{name} is a StackGAN-v2 generator, not a StackGAN-v1 one")
    if not any(key.startswith(("ca_net.", "STAGE1_G.")) for key in state):
        raise StackGANError(f"{name} is not a StackGAN generator state dict")
    stage, cfg = _infer_config(state, name)
    generator = empty_module(Stage1Generator if stage == 1 else Stage2Generator, cfg)
    _check_layout(generator, state, stage, cfg, name)
    for key in generator.state_dict():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros((), dtype=torch.long)
    return stage, cfg, assign_state_dict(generator, state).eval()


def empty_module(model_class: type[nn.Module], cfg: ModelConfig) -> nn.Module:
    """``model_class(cfg)`` built on the meta device: the layout without any storage, so that no
    random initialisation is spent on weights about to be replaced (about 0.2 s for a Stage-II
    generator). Fill it with :func:`assign_state_dict`."""
    with torch.device("meta"):
        return model_class(cfg)


def assign_state_dict(module: nn.Module, state: Mapping[str, Tensor]) -> nn.Module:
    """Make ``module`` (e.g. from :func:`empty_module`) hold exactly the tensors of ``state``,
    cast to the module's dtypes. Raises the ``RuntimeError`` of ``load_state_dict`` when keys or
    shapes do not match."""
    expected = module.state_dict()
    converted = {
        key: value.to(expected[key].dtype) if key in expected else value
        for key, value in state.items()
    }
    module.load_state_dict(converted, strict=True, assign=True)
    return module


def plain_state_dict(state: Any, name: str, family: str = "StackGAN") -> dict[str, Tensor]:
    """``state`` as a str -> Tensor dict without the DataParallel ``module.`` prefix; anything
    else is "not a ``family`` generator state dict"."""
    if not isinstance(state, Mapping) or not state:
        raise StackGANError(f"{name} is not a {family} generator state dict")
    if not all(isinstance(key, str) and isinstance(v, Tensor) for key, v in state.items()):
        raise StackGANError(f"{name} is not a {family} generator state dict")
    if all(key.startswith("module.") for key in state):
        return {key[len("module.") :]: value for key, value in state.items()}
    return dict(state)


def refuse_non_generator(state: Mapping[str, Tensor], name: str) -> None:
    """StackGANError when a plain state dict is one of the official discriminators (StackGAN-v1
    STAGE*_D or StackGAN-v2 D_NET*), which people pass for a generator by mistake."""
    from stackgan_cli.models.official_v2 import DISCRIMINATOR_PREFIXES

    if any(key.startswith(DISCRIMINATOR_PREFIXES) for key in state):
        raise StackGANError(f"{name} is a discriminator, not a generator")


def _shape(state: Mapping[str, Tensor], key: str, ndim: int, name: str) -> tuple[int, ...]:
    value = state.get(key)
    if value is None or value.dim() != ndim:
        raise StackGANError(f"{name} fits no StackGAN generator layout (bad or missing {key})")
    return tuple(value.shape)


def _infer_config(state: Mapping[str, Tensor], name: str) -> tuple[int, ModelConfig]:
    """Stage and widths from the key set and a handful of shapes; the full check follows."""
    stage = 2 if any(key.startswith("STAGE1_G.") for key in state) else 1
    prefix = "STAGE1_G." if stage == 2 else ""
    ca_out, text_dim = _shape(state, f"{prefix}ca_net.fc.weight", 2, name)
    fc_out, fc_in = _shape(state, f"{prefix}fc.0.weight", 2, name)
    condition_dim = ca_out // 2
    gf_dim = fc_out // (8 * 4 * 4)
    z_dim = fc_in - condition_dim
    if ca_out % 2 or fc_out % (8 * 4 * 4) or z_dim < 1:
        raise StackGANError(f"{name} fits no StackGAN generator layout (Stage-I widths)")

    if stage == 2:
        indices = {int(m.group(1)) for key in state if (m := _RESIDUAL_KEY.match(key))}
        r_num = len(indices)
        if r_num == 0 or indices != set(range(r_num)):
            raise StackGANError(f"{name} fits no StackGAN generator layout (residual blocks)")
        encoder_out = _shape(state, "encoder.0.weight", 4, name)[0]
        if encoder_out != gf_dim:
            raise StackGANError(
                f"{name} fits no StackGAN generator layout (Stage-II gf_dim {encoder_out} "
                f"differs from its Stage-I gf_dim {gf_dim})"
            )
    v1_presets = (p for key, p in PRESETS.items() if not key.endswith(("-v2", "-attngan")))
    base = next((p for p in v1_presets if p.gf_dim == gf_dim), None)
    df_dim = base.df_dim if base else max(1, gf_dim // 2)
    r_num_default = base.r_num if base else ModelConfig().r_num
    try:
        cfg = dataclasses.replace(
            base or ModelConfig(),
            gf_dim=gf_dim,
            df_dim=df_dim,
            z_dim=z_dim,
            condition_dim=condition_dim,
            text_dim=text_dim,
            r_num=r_num if stage == 2 else r_num_default,
        )
    except ValueError as exc:
        raise StackGANError(f"{name} fits no StackGAN generator layout ({exc})") from None
    return stage, cfg


def _check_layout(
    generator: nn.Module, state: Mapping[str, Tensor], stage: int, cfg: ModelConfig, name: str
) -> None:
    check_state_layout(
        generator.state_dict(),
        state,
        layout=f"a Stage-{stage} generator with {_describe(cfg)}",
        family="StackGAN",
        name=name,
    )


def check_state_layout(
    expected: Mapping[str, Tensor],
    state: Mapping[str, Tensor],
    *,
    layout: str,
    family: str,
    name: str,
) -> None:
    """Compare the keys and shapes of ``state`` with ``expected`` (the state dict of the
    network built from the inferred config, described by ``layout``), naming the first
    mismatch: ``load_state_dict``'s own message lists them all and is hard to read.
    ``num_batches_tracked`` may be missing (official files predate it)."""
    for key, value in state.items():
        if key not in expected:
            raise StackGANError(
                f"{name} fits no {family} layout: unexpected key {key} for {layout}"
            )
        if tuple(value.shape) != tuple(expected[key].shape):
            raise StackGANError(
                f"{name} fits no {family} layout: {key} has shape {tuple(value.shape)}, "
                f"{layout} needs {tuple(expected[key].shape)}"
            )
    for key in expected:
        if key not in state and not key.endswith("num_batches_tracked"):
            raise StackGANError(f"{name} fits no {family} layout: {key} is missing for {layout}")


def _describe(cfg: ModelConfig) -> str:
    return (
        f"gf_dim={cfg.gf_dim}, z_dim={cfg.z_dim}, condition_dim={cfg.condition_dim}, "
        f"text_dim={cfg.text_dim}, r_num={cfg.r_num}"
    )
