"""Import of official StackGAN-v2 (StackGAN++) generator files (``netG_<iteration>.pth``).

The released files are plain state dicts of a DataParallel-wrapped generator (every key starts
with ``module.``) written by PyTorch 0.2/0.3 under Python 2 in the legacy, non-zip format, with
no BatchNorm ``num_batches_tracked`` entries. ``torch.load(..., weights_only=True)`` reads that
format; its default utf-8 decoding handles the Python-2 byte-string keys, which are ASCII, and
the tensor data lies outside the pickle, so no ``encoding="latin1"`` is needed. The branch
count and every width are read from the tensor shapes.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from stackgan_cli.errors import StackGANError
from stackgan_cli.models.config import PRESETS, ModelConfig
from stackgan_cli.models.generator_v2 import MAX_BRANCHES, StackGANv2Generator
from stackgan_cli.models.official import (
    assign_state_dict,
    check_state_layout,
    empty_module,
    plain_state_dict,
    read_state,
)

# First keys of the official discriminators: StackGAN-v2 (D_NET*) and StackGAN-v1 (STAGE*_D).
DISCRIMINATOR_PREFIXES = (
    "img_code_s16.",
    "uncond_logits.",
    "jointConv.",
    "logits.",
    "encode_img.",
    "get_cond_logits.",
    "get_uncond_logits.",
)
# Top-level modules that only StackGAN-v1 generators have.
_V1_GENERATOR_PREFIXES = ("STAGE1_G.", "fc.", "upsample1.", "img.", "encoder.", "hr_joint.")
_BRANCH_KEY = re.compile(r"^h_net(\d+)\.")
_RESIDUAL_KEY = re.compile(r"^h_net2\.residual\.(\d+)\.block\.")


def load_official_v2_generator(
    state_dict_or_path: Mapping[str, Any] | str | Path,
) -> tuple[ModelConfig, StackGANv2Generator]:
    """Build the StackGAN-v2 generator that an official state dict (or a file holding one,
    such as the released birds ``netG_210000.pth``) describes.

    Returns ``(cfg, generator)`` with the weights loaded strictly and the generator in eval mode
    on the CPU. A ``module.`` key prefix and missing ``num_batches_tracked`` entries are
    accepted. ``cfg.df_dim`` is not stored in a generator; it is set to gf_dim, as in every
    official StackGAN-v2 configuration. Raises StackGANError (one line) for an unreadable or
    truncated file, a discriminator, a StackGAN-v1 generator, an unconditional StackGAN-v2
    generator, or shapes that fit no StackGAN-v2 layout.
    """
    state, name = read_state(state_dict_or_path)
    return v2_generator_from_state_dict(state, name=name)


def v2_generator_from_state_dict(
    state: Any, *, name: str
) -> tuple[ModelConfig, StackGANv2Generator]:
    """:func:`load_official_v2_generator` for an already loaded object; ``name`` labels errors."""
    state = plain_state_dict(state, name, "StackGAN-v2")
    _check_kind(state, name)
    cfg = _infer_config(state, name)
    generator = empty_module(StackGANv2Generator, cfg)
    _check_layout(generator.state_dict(), state, cfg, name)
    for key in generator.state_dict():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros((), dtype=torch.long)
    return cfg, assign_state_dict(generator, state).eval()


def _check_kind(state: Mapping[str, Tensor], name: str) -> None:
    """Tell discriminators, StackGAN-v1 and unconditional generators apart from what we load."""
    if any(key.startswith(DISCRIMINATOR_PREFIXES) for key in state):
        raise StackGANError(f"{name} is a discriminator, not a generator")
    if any(key.startswith(_V1_GENERATOR_PREFIXES) for key in state):
        raise StackGANError(
            f"{name} is a StackGAN-v1 (StackGAN-Pytorch) generator, not a StackGAN-v2 one"
        )
    if not any(key.startswith("h_net1.") for key in state):
        raise StackGANError(f"{name} is not a StackGAN-v2 generator state dict")
    if not any(key.startswith("ca_net.") for key in state):
        raise StackGANError(
            f"{name} is an unconditional StackGAN-v2 generator (no ca_net); only "
            "text-conditioned ones are supported"
        )


def _shape(state: Mapping[str, Tensor], key: str, ndim: int, name: str) -> tuple[int, ...]:
    value = state.get(key)
    if value is None or value.dim() != ndim:
        raise StackGANError(f"{name} fits no StackGAN-v2 generator layout (bad or missing {key})")
    return tuple(value.shape)


def _infer_config(state: Mapping[str, Tensor], name: str) -> ModelConfig:
    """Branch count and widths from the key set and a few shapes; the full check follows."""
    ca_out, text_dim = _shape(state, "ca_net.fc.weight", 2, name)
    fc_out, fc_in = _shape(state, "h_net1.fc.0.weight", 2, name)
    condition_dim = ca_out // 4
    # The first stage's linear layer makes 16 * gf_dim channels at 4x4, doubled for the gate.
    gf_dim = fc_out // (16 * 4 * 4 * 2)
    z_dim = fc_in - condition_dim
    if ca_out % 4 or fc_out % (16 * 4 * 4 * 2) or z_dim < 1:
        raise StackGANError(f"{name} fits no StackGAN-v2 generator layout (first-stage widths)")

    branches = {int(m.group(1)) for key in state if (m := _BRANCH_KEY.match(key))}
    branch_num = len(branches)
    if branches != set(range(1, branch_num + 1)) or branch_num > MAX_BRANCHES:
        found = ", ".join(f"h_net{b}" for b in sorted(branches))
        raise StackGANError(
            f"{name} fits no StackGAN-v2 generator layout (stages {found}; "
            f"1 to {MAX_BRANCHES} are supported)"
        )
    base = PRESETS["birds-v2"]
    r_num = base.r_num  # a one-branch generator has no residual blocks to count
    if branch_num > 1:
        indices = {int(m.group(1)) for key in state if (m := _RESIDUAL_KEY.match(key))}
        r_num = len(indices)
        if r_num == 0 or indices != set(range(r_num)):
            raise StackGANError(f"{name} fits no StackGAN-v2 generator layout (residual blocks)")
    try:
        return dataclasses.replace(
            base,
            gf_dim=gf_dim,
            df_dim=gf_dim,
            z_dim=z_dim,
            condition_dim=condition_dim,
            text_dim=text_dim,
            r_num=r_num,
            branch_num=branch_num,
        )
    except ValueError as exc:
        raise StackGANError(f"{name} fits no StackGAN-v2 generator layout ({exc})") from None


def _check_layout(
    expected: Mapping[str, Tensor], state: Mapping[str, Tensor], cfg: ModelConfig, name: str
) -> None:
    check_state_layout(
        expected,
        state,
        layout=(
            f"a {cfg.branch_num}-branch StackGAN-v2 generator with gf_dim={cfg.gf_dim}, "
            f"z_dim={cfg.z_dim}, condition_dim={cfg.condition_dim}, text_dim={cfg.text_dim}, "
            f"r_num={cfg.r_num}"
        ),
        family="StackGAN-v2",
        name=name,
    )
