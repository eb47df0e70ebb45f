"""More training regimes: --g-norm, --d-norm, --d-dropout, --diffaugment and --r1 on v1
Stage I, v1 Stage II and the v2 tree (models/network_options.py, training/diffaugment.py)."""

import numpy as np
import pytest
import torch
from training_helpers import (
    TINY,
    TINY_CFG,
    assert_same_state,
    assert_train_usage_error,
    finite_records,
    load,
    recorded,
    run_cli,
    train_args,
    v2_args,
)

from stackgan_cli.generator_file import load_generator_file, save_generator_file
from stackgan_cli.models import build_generator
from stackgan_cli.training.diffaugment import DiffAugment, parse_policy
from stackgan_cli.training.health import COLLAPSE_MIN_STEPS, COLLAPSED_KL, conditioning_collapsed

POLICY = "color,translation,cutout"


def test_diffaugment_keeps_shape_and_gradient():
    torch.manual_seed(0)
    images = torch.rand(4, 3, 16, 16, requires_grad=True)
    for policy in ("color", "translation", "cutout", POLICY):
        out = DiffAugment(policy)(images * 2 - 1)
        assert out.shape == images.shape
        out.square().sum().backward()
        assert images.grad is not None and images.grad.abs().sum() > 0
        images.grad = None
    # Fresh draws per call, from the global generator (reproducible after a reseed).
    augment = DiffAugment(POLICY)
    torch.manual_seed(1)
    a, b = augment(images), augment(images)
    torch.manual_seed(1)
    assert torch.equal(augment(images), a) and not torch.equal(a, b)
    # translation: a shifted copy with zeros moved in; cutout: a quarter of the image zeroed.
    ones = torch.ones(8, 3, 16, 16)
    moved = DiffAugment("translation")(ones)
    assert set(moved.unique().tolist()) <= {0.0, 1.0}
    cut = DiffAugment("cutout")(ones)
    assert ((cut == 0).float().mean(dim=(1, 2, 3)) <= 0.25 + 1e-6).all()
    assert not DiffAugment("") and DiffAugment(" color ").names == ("color",)


@pytest.mark.parametrize("policy", ["colour", "color,,cutout", "cutout,cutout", "flip"])
def test_diffaugment_policy_errors(policy):
    with pytest.raises(ValueError):
        parse_policy(policy)


@pytest.mark.parametrize(
    "extra",
    [
        ["--g-norm", "none"],
        ["--d-norm", "none", "--d-dropout", "0.3"],
        ["--d-norm", "spectral", "--loss", "hinge"],
        ["--diffaugment", POLICY],
        ["--r1", "1.0"],
    ],
    ids=["g-norm-none", "d-norm-none-dropout", "d-norm-spectral", "diffaugment", "r1"],
)
def test_stage1_options_train_with_finite_losses(tiny_dataset, tmp_path, extra):
    run = tmp_path / "run"
    run_cli(train_args(run, *TINY, *extra, epochs=1))
    records = finite_records(run)
    assert ("D_r1" in records[-1]) == ("--r1" in extra)
    train = recorded(run)
    given = dict(zip(extra[::2], extra[1::2], strict=True))
    for option, value in given.items():
        field = option[2:].replace("-", "_")
        assert str(train[field]) == value or train[field] == float(value), (field, train[field])
    state = load(run / "checkpoints/last.pt")
    g_keys, d_keys = set(state["generator"]), set(state["discriminators"][0])
    assert any("BatchNorm" in k or k.endswith("running_mean") for k in g_keys) == (
        "--g-norm" not in extra
    )
    assert any(k.endswith("running_mean") for k in d_keys) == ("--d-norm" not in extra)
    assert any("parametrizations" in k for k in d_keys) == ("spectral" in extra)


@pytest.mark.parametrize(
    "extra",
    [["--d-norm", "spectral", "--r1", "0.5"], ["--diffaugment", POLICY, "--d-dropout", "0.2"]],
    ids=["spectral-r1", "diffaugment-dropout"],
)
def test_v2_options_train_with_finite_losses(tiny_dataset, tmp_path, extra):
    run = tmp_path / "run"
    run_cli(v2_args(run, "--branches", "2", *extra, "--g-norm", "none", epochs=1, batch=16))
    records = finite_records(run)
    assert ("D1_r1" in records[-1]) == ("--r1" in extra)
    assert recorded(run)["g_norm"] == "none"
    bundle = load_generator_file(run / "generator.pt")
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in bundle.generator.modules())


@pytest.mark.parametrize(
    "extra",
    [["--d-norm", "spectral"], ["--diffaugment", POLICY, "--r1", "1", "--g-norm", "none"]],
    ids=["spectral", "diffaugment-r1-gnorm"],
)
def test_stage2_options_train_with_finite_losses(tiny_dataset, tmp_path, extra):
    stage1_file = tmp_path / "s1.pt"
    stage1 = build_generator(1, TINY_CFG)
    save_generator_file(stage1_file, stage1, TINY_CFG, family="v1-stage1", dataset="tiny", epoch=1)
    run = tmp_path / "run"
    args = ["--stage1-ckpt", str(stage1_file), "--r-num", "1", *extra]
    run_cli(train_args(run, *TINY, *args, stage=2, epochs=1, batch=16))
    records = finite_records(run)
    assert "D_uncond_real" in records[-1]
    bundle = load_generator_file(run / "generator.pt")
    assert bundle.stage == 2


def test_g_norm_none_generator_file_generates_and_feeds_stage2(tiny_dataset, tmp_path):
    run, out = tmp_path / "run", tmp_path / "s1.pt"
    run_cli(train_args(run, *TINY, "--g-norm", "none", "--out", str(out), epochs=1))
    assert load(out)["g_norm"] == "none"
    vector = tmp_path / "one.npy"
    np.save(vector, np.ones(16, dtype=np.float32))  # the tiny dataset has no text encoder
    images = tmp_path / "images"
    run_cli(["generate", "--ckpt", str(out), "--embedding-file", str(vector), "-n", "2",
             "--out", str(images)])  # fmt: skip
    assert (images / "00_01.png").is_file()
    # Stage II on top keeps the Stage-I layout; its own G keeps BatchNorm (--g-norm batch).
    run2 = tmp_path / "run2"
    args = ["--stage1-ckpt", str(out), "--r-num", "1"]
    run_cli(train_args(run2, *TINY, *args, stage=2, epochs=1, batch=16))
    data = load(run2 / "generator.pt")
    assert data["stage1_g_norm"] == "none" and "g_norm" not in data
    bundle = load_generator_file(run2 / "generator.pt")
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in bundle.generator.modules())


def test_default_generator_file_has_no_norm_keys(tiny_dataset, tmp_path):
    out = tmp_path / "s1.pt"
    run_cli(train_args(tmp_path / "run", *TINY, "--out", str(out), epochs=1))
    data = load(out)
    assert "g_norm" not in data and "stage1_g_norm" not in data


def test_diffaugment_r1_spectral_resumes_bit_for_bit(tiny_dataset, tmp_path):
    regime = ["--loss", "hinge", "--d-norm", "spectral", "--diffaugment", POLICY, "--r1", "1"]
    regime += ["--d-dropout", "0.1", "--g-norm", "none"]
    straight, halves = tmp_path / "straight", tmp_path / "halves"
    run_cli(train_args(straight, *TINY, *regime, epochs=2, batch=16))
    run_cli(train_args(halves, *TINY, *regime, epochs=1, batch=16))
    run_cli(["resume", str(halves), "--epochs", "2"])
    a, b = load(straight / "checkpoints/last.pt"), load(halves / "checkpoints/last.pt")
    assert_same_state(a, b)
    assert recorded(halves) == {**recorded(straight), "run_dir": str(halves)}
    assert recorded(halves)["diffaugment"] == POLICY and recorded(halves)["r1"] == 1.0


@pytest.mark.parametrize(
    ("extra", "option"),
    [
        (["--g-norm", "layer"], "--g-norm"),
        (["--d-norm", "instance"], "--d-norm"),
        (["--d-dropout", "1"], "--d-dropout"),
        (["--d-dropout", "-0.1"], "--d-dropout"),
        (["--diffaugment", "color,flip"], "--diffaugment"),
        (["--diffaugment", "color,,cutout"], "--diffaugment"),
        (["--r1", "-1"], "--r1"),
        (["--r1", "1", "--loss", "wgan-gp"], "--r1"),
        (["--r1", "1", "--compile"], "--compile"),
    ],
)
def test_bad_options_are_usage_errors(tiny_dataset, tmp_path, extra, option):
    assert_train_usage_error(tmp_path / "run", extra, option)


def test_describe_regime_names_the_new_options():
    from stackgan_cli.training.config import TrainConfig
    from stackgan_cli.training.regimes import describe_regime

    cfg = TrainConfig(g_norm="none", d_norm="spectral", d_dropout=0.2, diffaugment="color", r1=1.0)
    assert describe_regime(cfg) == (
        "--g-norm none --d-norm spectral --d-dropout 0.2 --diffaugment color --r1 1"
    )
    assert describe_regime(TrainConfig()) == "the official settings"


def test_conditioning_collapse_rule():
    assert conditioning_collapsed(3e-6, COLLAPSE_MIN_STEPS, kl_coeff=2.0)
    assert not conditioning_collapsed(3e-3, COLLAPSE_MIN_STEPS, kl_coeff=2.0)
    # Every run starts near the prior, and without the KL term nothing pulls it there.
    assert not conditioning_collapsed(3e-6, COLLAPSE_MIN_STEPS - 1, kl_coeff=2.0)
    assert not conditioning_collapsed(3e-6, COLLAPSE_MIN_STEPS, kl_coeff=0.0)


def test_collapsed_conditioning_is_reported(shapes_dataset, tmp_path):
    """Without BatchNorm the width-8 discriminator learns the text match too slowly and the
    KL term pulls conditioning augmentation onto its prior (benchmarks/REGIMES.md); training
    says so once, while it runs. The official run of tests/test_conditioning.py does not."""
    run_dir = tmp_path / "run"
    args = ["--gf-dim", "8", "--df-dim", "8", "--d-norm", "none", "--sample-every", "100",
            "--log-every", "10", "--seed", "0"]  # fmt: skip
    result = run_cli(train_args(run_dir, *args, epochs=55, batch=30, dataset="shapes"))
    output = " ".join(result.output.split())
    assert output.count("has collapsed onto its prior") == 1, output[-2000:]
    assert "--d-norm batch" in output and "--kl-coeff" in output
    last = finite_records(run_dir)[-1]
    assert last["step"] >= COLLAPSE_MIN_STEPS and last["kl"] < COLLAPSED_KL
