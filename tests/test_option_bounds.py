"""`stackgan train` options checked where they are parsed: each width's bound is the one the
family's networks take, numbers are finite, and an option only some families read is refused
by the others. Each refusal is one `error:` line, exit code 2, before any run folder exists.
"""

import dataclasses
import json

import pytest
import torch
from training_helpers import (
    TINY,
    TINY_CFG,
    load,
    recorded,
    run_cli,
    train_args,
    v2_args,
)

from stackgan_cli.damsm_file import save_damsm_file
from stackgan_cli.generator_file import save_generator_file
from stackgan_cli.models import DAMSMImageEncoder, DAMSMTextEncoder, ModelConfig
from stackgan_cli.models.stage1 import Stage1Generator
from stackgan_cli.text.damsm_text import DAMSMText
from stackgan_cli.text.words import WordVocabulary
from stackgan_cli.training.checkpoint import save_checkpoint

# The tiny dataset's captions (training_helpers.write_tiny_prepared) and a tiny DAMSM for them.
CAPTIONS = [
    f"{split} bird {i} caption {j}"
    for split, n in (("train", 16), ("test", 4))
    for i in range(n)
    for j in range(10)
]
DAMSM_CFG = dataclasses.replace(ModelConfig.preset("birds-attngan"), text_dim=16, word_dim=8)


@pytest.fixture(scope="module")
def generator_files(tmp_path_factory):
    """A tiny Stage-I generator file (for --stage1-ckpt) and a tiny untrained DAMSM file (for
    --arch attngan --damsm)."""
    root = tmp_path_factory.mktemp("bounds")
    stage1 = root / "s1.pt"
    save_generator_file(
        stage1, Stage1Generator(TINY_CFG), TINY_CFG, family="v1-stage1", dataset="tiny", epoch=1
    )
    torch.manual_seed(0)
    vocabulary = WordVocabulary.build(CAPTIONS)
    text = DAMSMText(DAMSMTextEncoder(DAMSM_CFG, len(vocabulary)), vocabulary, DAMSM_CFG)
    damsm = root / "damsm.pt"
    save_damsm_file(damsm, text, DAMSMImageEncoder(DAMSM_CFG), dataset="tiny", epoch=0)
    return {"stage1": stage1, "damsm": damsm}


def family_args(family, files, run_dir, *extra):
    """`stackgan train` arguments of a one-epoch tiny run of ``family`` with ``extra``."""
    if family == "v1-stage1":
        return train_args(run_dir, *TINY, *extra, epochs=1)
    if family == "v1-stage2":
        return train_args(run_dir, *TINY, "--stage1-ckpt", str(files["stage1"]), *extra, stage=2)
    if family == "v2":
        return v2_args(run_dir, "--branches", "1", *extra, epochs=1)
    return [
        "train", "--arch", "attngan", "--damsm", str(files["damsm"]), "--branches", "1",
        "--dataset", "tiny", "--epochs", "1", "--batch-size", "4", "--gf-dim", "4",
        "--df-dim", "4", "--z-dim", "8", "--condition-dim", "4", "--r-num", "1",
        "--run-dir", str(run_dir), *extra,
    ]  # fmt: skip


def refused(args, run_dir, option):
    """``args`` exit 2 with one line naming ``option``, leaving no run folder."""
    result = run_cli(args, code=2)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert option in lines[0], result.output
    assert not run_dir.exists()
    return lines[0]


FAMILIES = ["v1-stage1", "v1-stage2", "v2", "attngan"]


@pytest.mark.parametrize("family", FAMILIES)
def test_gf_dim_below_what_the_networks_take_is_a_usage_error(
    family, generator_files, tiny_dataset, tmp_path
):
    run = tmp_path / "run"
    for gf_dim in ("1", "2", "3"):
        line = refused(
            family_args(family, generator_files, run, "--gf-dim", gf_dim), run, f"--gf-dim {gf_dim}"
        )
        assert "at least 4" in line
    if family in ("v1-stage1", "v2"):  # the bound is the real one: 4 trains
        # v2 with the coefficients that the other families refuse (below): v2 takes them.
        own = ["--uncond-coeff", "0.5", "--color-coeff", "0.1"] if family == "v2" else []
        run_cli(family_args(family, generator_files, run, "--gf-dim", "4", *own))
        assert load(run / "checkpoints" / "last.pt")["model_config"]["gf_dim"] == 4
        if own:
            assert (recorded(run)["uncond_coeff"], recorded(run)["color_coeff"]) == (0.5, 0.1)


@pytest.mark.parametrize(
    ("family", "option", "value"),
    [
        ("v1-stage1", "--lr-g", "inf"),
        ("v1-stage1", "--lr-d", "inf"),
        ("v1-stage1", "--kl-coeff", "inf"),
        ("v1-stage1", "--beta1", "nan"),
        ("v1-stage1", "--r1", "inf"),
        ("v2", "--uncond-coeff", "inf"),
        ("v2", "--color-coeff", "inf"),
        ("attngan", "--damsm-weight", "inf"),
    ],
)
def test_non_finite_numbers_are_usage_errors(
    family, option, value, generator_files, tiny_dataset, tmp_path
):
    run = tmp_path / "run"
    refused(family_args(family, generator_files, run, option, value), run, f"{option} {value}")


def test_a_run_recorded_with_a_non_finite_number_is_not_continued(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    run_cli(train_args(run, *TINY, epochs=1))
    last = run / "checkpoints" / "last.pt"
    state = load(last)
    state["train_config"]["lr_g"] = float("inf")  # as written by a version that took it
    save_checkpoint(state, last)
    config = (run / "config.json").read_bytes()
    result = run_cli(["resume", str(run), "--epochs", "2"], code=1)
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "--lr-g inf" in lines[0], result.output
    assert (run / "config.json").read_bytes() == config
    json.loads(config, parse_constant=lambda name: pytest.fail(f"config.json holds {name}"))


@pytest.mark.parametrize(
    ("family", "option", "value", "users"),
    [
        ("v1-stage1", "--uncond-coeff", "0.5", "--arch v2"),
        ("v1-stage1", "--color-coeff", "0.1", "--arch v2"),
        ("v1-stage2", "--uncond-coeff", "0.5", "--arch v2"),
        ("v1-stage2", "--color-coeff", "0.1", "--arch v2"),
        ("attngan", "--color-coeff", "0.1", "--arch v2"),
        ("v1-stage1", "--damsm-weight", "1", "--arch attngan"),
        ("v2", "--damsm-weight", "1", "--arch attngan"),
    ],
)
def test_an_option_of_another_family_is_refused(
    family, option, value, users, generator_files, tiny_dataset, tmp_path
):
    run = tmp_path / "run"
    line = refused(family_args(family, generator_files, run, option, value), run, option)
    assert f"only {users}" in line
