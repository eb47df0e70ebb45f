"""The official state-dict tables beside the specifications (../shared/reference), and the one
check that a network matches one. Not a test module: the model tests import it."""

import json
from pathlib import Path

from torch import nn

REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"


def read_table(name: str) -> dict:
    """``REFERENCE/<name>.json``, e.g. ``shapes_stage1_G`` or ``shapes_v2_D64``."""
    return json.loads((REFERENCE / f"{name}.json").read_text())


def assert_matches_table(model: nn.Module, table: dict) -> None:
    """Same state-dict keys, order and shapes, parameter counts (all and trainable) and
    parameters per top-level child as the official network the table lists."""
    ours = [[key, list(value.shape)] for key, value in model.state_dict().items()]
    assert ours == table["state_dict"]
    params = list(model.parameters())
    assert sum(p.numel() for p in params) == table["num_parameters"]
    assert sum(p.numel() for p in params if p.requires_grad) == table["num_trainable_parameters"]
    per_child = {
        name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()
    }
    assert per_child == table["parameters_per_top_level_child"]
