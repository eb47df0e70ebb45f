"""Shared helpers of the training tests: tiny networks, a tiny prepared dataset, the CLI.

Not a test module: tests import these names, and ``conftest.py`` builds the ``tiny_dataset``
fixture on :func:`write_tiny_prepared`.
"""

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import torch
from typer.testing import CliRunner

from stackgan_cli.cli import app
from stackgan_cli.data.prepared import FORMAT_VERSION, SplitWriter, fingerprint, write_metadata
from stackgan_cli.models import ModelConfig

TEXT_DIM = 16
# Tiny networks and data: 16 training images in batches of 8 -> 2 steps per epoch.
TINY = ["--gf-dim", "8", "--df-dim", "8", "--z-dim", "8", "--condition-dim", "4"]
TINY_CFG = ModelConfig(gf_dim=8, df_dim=8, z_dim=8, condition_dim=4, r_num=4, text_dim=TEXT_DIM)
# A tiny StackGAN-v2 tree (the birds-v2 preset at small widths) and its branches' image sides.
TINY_V2_CFG = dataclasses.replace(
    ModelConfig.preset("birds-v2"),
    gf_dim=8,
    df_dim=4,
    z_dim=10,
    condition_dim=6,
    r_num=2,
    text_dim=20,
    branch_num=3,
)
V2_SIZES = (64, 128, 256)


def write_tiny_prepared(root: Path, *, train: int = 16, test: int = 4, seed: int = 0) -> Path:
    """A prepared dataset in the format of stackgan_cli/data/prepared.py: random images,
    distinct captions."""
    rng = np.random.default_rng(seed)
    digests, splits = {}, {}
    for split, count in (("train", train), ("test", test)):
        writer = SplitWriter(root, split, count)
        for _ in range(count):
            writer.append([rng.integers(0, 256, (s, s, 3), dtype=np.uint8) for s in (76, 304)])
        captions = [[f"{split} bird {i} caption {j}" for j in range(10)] for i in range(count)]
        digests.update(
            writer.finish(
                embeddings=rng.standard_normal((count, 10, TEXT_DIM)).astype(np.float32),
                captions=captions,
                class_ids=np.arange(count) % 3,
                filenames=[f"00{i % 3}.class/{split}_{i}" for i in range(count)],
            )
        )
        splits[split] = {"images": count, "classes": 3, "captions": count * 10}
    metadata = {
        "format_version": FORMAT_VERSION,
        "dataset": root.parent.name,
        "fingerprint": fingerprint(digests),
        "splits": splits,
        "text_encoder": None,
    }
    write_metadata(root, metadata)
    return root


def run_cli(args, code=0):
    result = CliRunner().invoke(app, args)
    assert result.exit_code == code, result.output
    return result


def train_args(run_dir, *extra, stage=1, epochs=2, batch=8, dataset="tiny"):
    return [
        "train",
        "--stage",
        str(stage),
        "--dataset",
        dataset,
        "--epochs",
        str(epochs),
        "--batch-size",
        str(batch),
        "--run-dir",
        str(run_dir),
        *extra,
    ]


def assert_train_usage_error(run_dir, extra, option):
    """``stackgan train`` with ``extra`` exits 2 with one line naming ``option`` and creates
    no run directory."""
    result = run_cli(train_args(run_dir, *TINY, *extra), code=2)
    assert result.output.startswith("error:") and len(result.output.strip().splitlines()) == 1
    assert option in result.output
    assert not run_dir.exists()


def load(path):
    return torch.load(path, map_location="cpu", weights_only=True)


# Tiny StackGAN-v2 networks for the CLI (3 branches unless --branches says otherwise).
V2_TINY = ["--arch", "v2", "--gf-dim", "4", "--df-dim", "4", "--z-dim", "8"]
V2_TINY += ["--condition-dim", "4", "--r-num", "1"]


def v2_args(run_dir, *extra, epochs=2, batch=8):
    """`stackgan train` arguments of a tiny StackGAN-v2 run on the tiny dataset."""
    return [
        "train",
        *V2_TINY,
        "--dataset",
        "tiny",
        "--epochs",
        str(epochs),
        "--batch-size",
        str(batch),
        "--run-dir",
        str(run_dir),
        *extra,
    ]


def finite_records(run_dir):
    """The metrics records of a run, each checked to hold finite losses only."""
    records = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert records
    for record in records:
        assert all(math.isfinite(v) for v in record.values() if isinstance(v, float)), record
    return records


def recorded(run_dir):
    """The training settings a run recorded in config.json."""
    return json.loads((run_dir / "config.json").read_text())["train"]


def assert_same_state(a: dict, b: dict) -> None:
    """Bit-identical networks and optimizer states."""
    networks = [("generator", a["generator"], b["generator"])]
    networks += [
        ("discriminator", d_a, d_b)
        for d_a, d_b in zip(a["discriminators"], b["discriminators"], strict=True)
    ]
    for part, net_a, net_b in networks:
        assert net_a.keys() == net_b.keys()
        for key in net_a:
            assert torch.equal(net_a[key], net_b[key]), f"{part}.{key}"
    optimizers = [("optimizer_g", a["optimizer_g"], b["optimizer_g"])]
    optimizers += [
        ("optimizer_d", o_a, o_b)
        for o_a, o_b in zip(a["optimizers_d"], b["optimizers_d"], strict=True)
    ]
    for part, opt_a, opt_b in optimizers:
        for index, state in opt_a["state"].items():
            for key, value in state.items():
                assert torch.equal(value, opt_b["state"][index][key]), f"{part}.{index}.{key}"
    assert a["global_step"] == b["global_step"]


def write_inception_weights(path: Path) -> Path:
    """A file with the key names and shapes of torchvision's published Inception-v3 weights
    (random values, seed 0): what --inception-weights takes offline."""
    import torch
    from torchvision.models import inception_v3

    torch.manual_seed(0)
    torch.save(inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict(), path)
    return path
