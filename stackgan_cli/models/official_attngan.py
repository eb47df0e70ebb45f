"""Import of the official AttnGAN files: generators (``bird_AttnGAN2.pth``, ``netG_epoch_<N>.pth``)
and the DAMSM encoders (``text_encoder<N>.pth``, ``image_encoder<N>.pth``).

All were written by torch <= 0.3 under Python 2 (attngan-spec.md 11): plain state dicts in the
legacy serialisation, no ``module.`` prefix (one is accepted anyway), no BatchNorm
``num_batches_tracked`` entries (filled with zeros), which ``torch.load(..., weights_only=True)``
reads. Every width is read from the tensor shapes; a generator stores no discriminator width,
which takes the birds value.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from stackgan_cli.errors import StackGANError
from stackgan_cli.models.config import PRESETS, ModelConfig
from stackgan_cli.models.official import (
    assign_state_dict,
    check_state_layout,
    plain_state_dict,
    read_torch_file,
)

_BRANCH_KEY = re.compile(r"^h_net(\d+)\.")
_RESIDUAL_KEY = re.compile(r"^h_net2\.residual\.(\d+)\.block\.")
_TEXT_KEYS = ("encoder.weight", "rnn.weight_ih_l0", "rnn.weight_hh_l0")
_IMAGE_KEYS = ("emb_features.weight", "emb_cnn_code.weight", "Mixed_6e.branch1x1.conv.weight")


def _shape(state: Mapping[str, Tensor], key: str, ndim: int, name: str, what: str) -> tuple:
    value = state.get(key)
    if value is None or value.dim() != ndim:
        raise StackGANError(f"{name} fits no {what} layout (bad or missing {key})")
    return tuple(value.shape)


def _fill_batch_counts(module: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
    for key in module.state_dict():
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.zeros((), dtype=torch.long)
    return state


def _load(
    module_class: Any, cfg: ModelConfig, state: dict[str, Tensor], name: str, what: str, *args: Any
) -> nn.Module:
    with torch.device("meta"):
        module = module_class(cfg, *args)
    check_state_layout(module.state_dict(), state, layout=what, family="AttnGAN", name=name)
    return assign_state_dict(module, _fill_batch_counts(module, state)).eval()


def attngan_generator_from_state_dict(state: Any, *, name: str) -> tuple[ModelConfig, nn.Module]:
    """``(cfg, generator)`` of an official AttnGAN generator state dict, weights loaded
    strictly, eval mode, CPU; one-line StackGANError for anything else."""
    from stackgan_cli.models.attngan import AttnGANGenerator

    state = plain_state_dict(state, name, "AttnGAN")
    what = "AttnGAN generator"
    ca_out, text_dim = _shape(state, "ca_net.fc.weight", 2, name, what)
    fc_out, fc_in = _shape(state, "h_net1.fc.0.weight", 2, name, what)
    context = _shape(state, "h_net2.att.conv_context.weight", 4, name, what)
    condition_dim = ca_out // 4
    gf_dim = fc_out // (16 * 4 * 4 * 2)  # 16 gf_dim channels at 4x4, doubled for the gate
    z_dim = fc_in - condition_dim
    if ca_out % 4 or fc_out % (16 * 4 * 4 * 2) or z_dim < 1 or context[:2] != (gf_dim, text_dim):
        raise StackGANError(f"{name} fits no {what} layout (first-stage widths)")
    branches = {int(m.group(1)) for key in state if (m := _BRANCH_KEY.match(key))}
    branch_num = len(branches)
    if branches != set(range(1, branch_num + 1)) or branch_num > 3:
        raise StackGANError(f"{name} fits no {what} layout (stages {sorted(branches)})")
    residuals = {int(m.group(1)) for key in state if (m := _RESIDUAL_KEY.match(key))}
    if not residuals or residuals != set(range(len(residuals))):
        raise StackGANError(f"{name} fits no {what} layout (residual blocks)")
    try:
        cfg = dataclasses.replace(
            PRESETS["birds-attngan"],
            gf_dim=gf_dim,
            z_dim=z_dim,
            condition_dim=condition_dim,
            text_dim=text_dim,
            r_num=len(residuals),
            branch_num=branch_num,
        )
    except ValueError as exc:
        raise StackGANError(f"{name} fits no {what} layout ({exc})") from None
    return cfg, _load(AttnGANGenerator, cfg, state, name, what)


def text_encoder_config(state: Mapping[str, Tensor], name: str) -> tuple[ModelConfig, int]:
    """The widths and vocabulary size of a DAMSM text encoder state dict."""
    what = "DAMSM text encoder"
    words, word_dim = _shape(state, "encoder.weight", 2, name, what)
    gates, hidden = _shape(state, "rnn.weight_hh_l0", 2, name, what)
    if gates != 4 * hidden or "rnn.weight_hh_l0_reverse" not in state:
        raise StackGANError(f"{name} fits no {what} layout (a bidirectional LSTM)")
    cfg = dataclasses.replace(PRESETS["birds-attngan"], text_dim=2 * hidden, word_dim=word_dim)
    return cfg, words


def read_official_text_encoder(path: Path) -> tuple[ModelConfig, dict[str, Tensor]]:
    """The widths and the state dict of an official ``text_encoder<N>.pth``."""
    state = plain_state_dict(read_torch_file(path), str(path), "DAMSM text encoder")
    if not all(key in state for key in _TEXT_KEYS):
        raise StackGANError(f"{path} is not a DAMSM text encoder state dict")
    cfg, _ = text_encoder_config(state, str(path))
    return cfg, state


def load_official_image_encoder(path: Path, cfg: ModelConfig) -> nn.Module:
    """The DAMSM image encoder of an official ``image_encoder<N>.pth`` (its Inception trunk
    with the statistics it was trained with, and its projections), eval mode, CPU."""
    from stackgan_cli.models.damsm import DAMSMImageEncoder

    name = str(path)
    state = plain_state_dict(read_torch_file(path), name, "DAMSM image encoder")
    if not all(key in state for key in _IMAGE_KEYS):
        raise StackGANError(f"{path} is not a DAMSM image encoder state dict")
    embedding = _shape(state, "emb_cnn_code.weight", 2, name, "DAMSM image encoder")[0]
    if embedding != cfg.text_dim:
        raise StackGANError(
            f"{path} makes {embedding}-d codes but its text encoder {cfg.text_dim}-d features"
        )
    encoder = DAMSMImageEncoder(cfg)
    encoder.load_state_dict(_fill_batch_counts(encoder, state), strict=True)
    return encoder.eval()


def official_encoder_files(folder: Path) -> tuple[Path, Path | None]:
    """``text_encoder<N>.pth`` and, when there, ``image_encoder<N>.pth`` of the highest N in an
    official ``DAMSMencoders/<dataset>/`` folder."""
    found = {}
    for path in folder.glob("text_encoder*.pth"):
        match = re.fullmatch(r"text_encoder(\d*)\.pth", path.name)
        if match and path.is_file():
            found[int(match.group(1) or -1)] = path
    if not found:
        raise StackGANError(
            f"{folder} holds no text_encoder<N>.pth (an official DAMSMencoders/<dataset> folder)"
        )
    text = found[max(found)]
    image = text.with_name(text.name.replace("text_encoder", "image_encoder"))
    return text, image if image.is_file() else None
