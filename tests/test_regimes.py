"""Training regimes: --loss, --gp-weight, --n-critic, --optimizer/--beta1/--beta2, --init and
--tensorboard on v1 Stage I, v1 Stage II and the v2 tree (stackgan_cli/training/regimes.py)."""

import sys

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

from stackgan_cli.generator_file import save_generator_file
from stackgan_cli.models import build_generator
from stackgan_cli.models.layers import DiscriminatorHead
from stackgan_cli.models.losses import LOSSES


def test_logit_heads_keep_their_parameters_and_probabilities():
    torch.manual_seed(0)
    for conditional in (True, False):
        head = DiscriminatorHead(4, 3, conditional).eval()
        keys = set(head.state_dict())
        features, condition = torch.randn(5, 32, 4, 4), torch.randn(5, 3)
        probs = head(features, condition)
        logits = head(features, condition, logits=True)
        assert set(head.state_dict()) == keys
        assert torch.allclose(torch.sigmoid(logits), probs, atol=1e-6)
    assert list(LOSSES) == ["bce", "lsgan", "hinge", "wgan-gp"]
    assert not LOSSES["bce"].uses_logits and LOSSES["wgan-gp"].gradient_penalty
    scores = torch.tensor([2.0, -1.0])
    assert LOSSES["hinge"].real(scores).item() == pytest.approx(1.0)  # relu(-1), relu(2) -> 1
    assert LOSSES["hinge"].fake(scores).item() == pytest.approx(1.5)  # relu(3), relu(0)
    assert LOSSES["lsgan"].real(scores).item() == pytest.approx(2.5)  # (1 + 4) / 2
    assert LOSSES["wgan-gp"].real(scores).item() == pytest.approx(-0.5)


@pytest.mark.parametrize(
    "extra",
    [
        ["--loss", "lsgan", "--init", "xavier", "--beta1", "0.0", "--beta2", "0.9"],
        ["--loss", "hinge", "--optimizer", "rmsprop", "--init", "orthogonal"],
        ["--loss", "wgan-gp", "--gp-weight", "5", "--n-critic", "2", "--init", "kaiming"],
    ],
    ids=["lsgan-betas", "hinge-rmsprop", "wgan-gp-ncritic"],
)
def test_stage1_regimes_train_with_finite_losses(tiny_dataset, tmp_path, extra):
    run = tmp_path / "run"
    run_cli(train_args(run, *TINY, *extra, epochs=1))
    records = finite_records(run)
    assert ("D_gp" in records[-1]) == ("wgan-gp" in extra)  # the penalty, unweighted
    train = recorded(run)
    given = dict(zip(extra[::2], extra[1::2], strict=True))
    for option, value in given.items():
        field = option[2:].replace("-", "_")
        assert str(train[field]) == value or train[field] == float(value), (field, train[field])
    state = load(run / "checkpoints/last.pt")
    optimizer = train["optimizer"]
    betas = state["optimizer_g"]["param_groups"][0].get("betas")
    assert (betas is None) == (optimizer == "rmsprop")
    if "--beta1" in given:
        assert tuple(betas) == (0.0, 0.9)


@pytest.mark.parametrize(
    "extra",
    [["--loss", "wgan-gp", "--init", "xavier"], ["--loss", "hinge", "--n-critic", "2"]],
    ids=["wgan-gp", "hinge"],
)
def test_v2_regimes_train_with_finite_losses(tiny_dataset, tmp_path, extra):
    run = tmp_path / "run"
    run_cli(v2_args(run, "--branches", "2", *extra, epochs=1, batch=16))
    records = finite_records(run)
    assert "D1_uncond_fake" in records[-1]
    assert ("D0_gp" in records[-1] and "D1_gp" in records[-1]) == (extra[1] == "wgan-gp")
    assert recorded(run)["loss"] == extra[1]


def test_stage2_wgan_gp_keeps_the_stage1_generator(tiny_dataset, tmp_path):
    stage1_file = tmp_path / "s1.pt"
    stage1 = build_generator(1, TINY_CFG)
    save_generator_file(stage1_file, stage1, TINY_CFG, family="v1-stage1", dataset="tiny", epoch=1)
    run = tmp_path / "run"
    args = ["--stage1-ckpt", str(stage1_file), "--r-num", "1", "--loss", "wgan-gp"]
    run_cli(train_args(run, *TINY, *args, "--init", "kaiming", stage=2, epochs=1, batch=16))
    records = finite_records(run)
    assert "D_uncond_real" in records[-1] and records[-1]["D_gp"] >= 0
    generator = load(run / "checkpoints/last.pt")["generator"]
    # --init leaves the frozen Stage I's weights alone (its BatchNorm statistics do move).
    for key, value in stage1.named_parameters():
        assert torch.equal(generator[f"STAGE1_G.{key}"], value), key


def test_wgan_gp_rmsprop_ema_diffaugment_resumes_bit_for_bit(tiny_dataset, tmp_path):
    regime = ["--loss", "wgan-gp", "--optimizer", "rmsprop", "--ema", "0.99", "--n-critic", "2"]
    regime += ["--diffaugment", "color,translation,cutout"]
    straight, halves = tmp_path / "straight", tmp_path / "halves"
    # Batches of 16: one step per epoch, so the three runs stay short.
    run_cli(train_args(straight, *TINY, *regime, epochs=2, batch=16))
    run_cli(train_args(halves, *TINY, *regime, epochs=1, batch=16))
    run_cli(["resume", str(halves), "--epochs", "2"])
    a, b = load(straight / "checkpoints/last.pt"), load(halves / "checkpoints/last.pt")
    assert_same_state(a, b)
    for key, value in a["generator_average"].items():
        assert torch.equal(value, b["generator_average"][key]), key
    assert recorded(halves) == {**recorded(straight), "run_dir": str(halves)}
    assert recorded(halves)["optimizer"] == "rmsprop" and recorded(halves)["n_critic"] == 2
    assert recorded(halves)["diffaugment"] == "color,translation,cutout"


@pytest.mark.parametrize(
    ("extra", "option"),
    [
        (["--loss", "softplus"], "--loss"),
        (["--n-critic", "0"], "--n-critic"),
        (["--optimizer", "sgd"], "--optimizer"),
        (["--init", "zeros"], "--init"),
        (["--optimizer", "rmsprop", "--beta1", "0.9"], "--beta1"),
        (["--beta2", "1.5"], "--beta2"),
        (["--gp-weight", "5"], "--gp-weight"),
        (["--gp-weight", "-1", "--loss", "wgan-gp"], "--gp-weight"),
        (["--loss", "wgan-gp", "--compile"], "--compile"),
    ],
)
def test_bad_regimes_are_usage_errors(tiny_dataset, tmp_path, extra, option):
    assert_train_usage_error(tmp_path / "run", extra, option)


def test_non_finite_loss_names_the_regime(tiny_dataset, tmp_path, monkeypatch):
    from stackgan_cli.training.step import GANStep

    calls = {"n": 0}
    original = GANStep.__call__

    def poisoned(self, batch):
        calls["n"] += 1
        losses = original(self, batch)
        return losses * float("nan") if calls["n"] == 3 else losses

    monkeypatch.setattr(GANStep, "__call__", poisoned)
    run = tmp_path / "run"
    args = ["--loss", "hinge", "--optimizer", "rmsprop", "--log-every", "5"]
    result = run_cli(train_args(run, *TINY, *args, epochs=2), code=1)
    message = " ".join(result.output.split())
    assert "under --loss hinge --optimizer rmsprop --batch-size 8;" in message
    assert "last.pt (after epoch 1)" in message


def test_tensorboard_missing_is_one_line(tiny_dataset, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    result = run_cli(train_args(tmp_path / "run", *TINY, "--tensorboard", epochs=1), code=1)
    assert len(result.output.strip().splitlines()) == 1
    assert 'pip install "stackgan-cli[tensorboard]"' in " ".join(result.output.split())
    assert not (tmp_path / "run").exists()


def test_tensorboard_writes_event_files(tiny_dataset, tmp_path):
    pytest.importorskip("tensorboard")
    run = tmp_path / "run"
    run_cli(train_args(run, *TINY, "--tensorboard", "--log-every", "1", epochs=1))
    assert recorded(run)["tensorboard"] is True
    events = list((run / "tensorboard").glob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(run / "tensorboard"))
    accumulator.Reload()
    tags = accumulator.Tags()
    assert {"loss/errD", "loss/errG", "lr/g", "lr/d"} <= set(tags["scalars"])
    assert "samples" in tags["images"]


def test_tensorboard_shows_each_step_once_after_a_resume(tiny_dataset, tmp_path):
    """A session killed after its epoch-1 checkpoint had logged epoch 2 already; the resumed
    session logs epoch 2 again, and TensorBoard must show those steps once."""
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run = tmp_path / "run"
    args = [*TINY, "--tensorboard", "--log-every", "1", "--snapshot-every", "1"]
    run_cli(train_args(run, *args, epochs=2))
    checkpoints = run / "checkpoints"
    # Back to the state right after epoch 1, as if the process had died during epoch 2.
    (checkpoints / "epoch_0001.pt").replace(checkpoints / "last.pt")
    (checkpoints / "epoch_0002.pt").unlink()
    (run / "generator.pt").unlink()
    run_cli(["resume", str(run)])

    accumulator = EventAccumulator(str(run / "tensorboard"))
    accumulator.Reload()
    steps = [event.step for event in accumulator.Scalars("loss/errG")]
    assert steps == [1, 2, 3, 4]
