"""The non-finite guard of training: a diverged run (a huge but finite learning rate) stops
with the guard's one-line message, whatever the family, instead of a traceback from the
binary cross-entropy of NaN probabilities."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from training_helpers import TINY, run_cli, train_args, v2_args

from stackgan_cli.models import AttnGANDiscriminator, ModelConfig
from stackgan_cli.models.losses import BCE, attngan_discriminator_loss

ATTN_CFG = dataclasses.replace(
    ModelConfig.preset("birds-attngan"),
    text_dim=16, word_dim=8, gf_dim=4, df_dim=4, z_dim=8, condition_dim=4, r_num=1, branch_num=3,
)  # fmt: skip


def _v1(run, *extra):
    return train_args(run, *TINY, *extra, epochs=2)


def _v2(run, *extra):
    return v2_args(run, *extra, epochs=2)


@pytest.mark.parametrize(
    ("args", "rates"),
    [
        (_v1, ["--lr-g", "1e30"]),
        (_v1, ["--lr-g", "1000", "--lr-d", "1000"]),
        (_v2, ["--lr-g", "1000", "--lr-d", "1000"]),
        (_v2, ["--lr-d", "1e30"]),
    ],
    ids=["v1-lr-g-1e30", "v1-lr-1000", "v2-lr-1000", "v2-lr-d-1e30"],
)
def test_a_diverging_run_stops_with_the_guard_line(tiny_dataset, tmp_path, args, rates):
    run = tmp_path / "run"
    result = run_cli(args(run, *rates), code=1)
    assert "Traceback" not in result.output
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and errors == result.output.strip().splitlines()[-1:]
    assert errors[0].startswith("error: training stopped: a loss became non-finite (")
    assert "at step " in errors[0] and "Lower --lr-g/--lr-d" in errors[0]
    assert " ".join(rates) in errors[0].replace("1e+30", "1e30")  # the regime it ran under
    assert not (run / "checkpoints" / "last.pt").exists()  # no diverged state kept


def test_bce_of_nan_probabilities_is_nan_and_unchanged_otherwise():
    probs = torch.tensor([0.2, 0.7, 1.0, 0.0], requires_grad=True)
    ours = BCE.real(probs)
    official = F.binary_cross_entropy(probs, torch.ones(4))
    assert torch.equal(ours, official)
    (grad,) = torch.autograd.grad(ours, probs)
    (official_grad,) = torch.autograd.grad(official, probs)
    assert torch.equal(grad, official_grad)

    diverged = torch.tensor([0.2, float("nan"), 0.5])
    for term in (BCE.real, BCE.fake, BCE.generator):
        assert torch.isnan(term(diverged))


def test_attngan_losses_of_a_diverged_discriminator_are_nan():
    torch.manual_seed(0)
    netD = AttnGANDiscriminator(ATTN_CFG, 64).train()
    with torch.no_grad():
        for parameter in netD.parameters():
            parameter.fill_(float("nan"))
    real = torch.rand(4, 3, 64, 64) * 2 - 1
    fake = torch.rand(4, 3, 64, 64) * 2 - 1
    err_d, parts = attngan_discriminator_loss(
        netD, real, fake, torch.randn(4, ATTN_CFG.text_dim), return_parts=True
    )
    assert torch.isnan(err_d)
    assert all(torch.isnan(value) for value in parts.values())
