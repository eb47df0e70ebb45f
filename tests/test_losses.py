"""The official losses on hand-computable cases."""

import math

import pytest
import torch
from torch import nn

from stackgan_cli.models.losses import discriminator_loss, generator_loss, kl_loss

LN2 = math.log(2.0)


class ProbeD(nn.Module):
    """A stand-in discriminator whose outputs are set by the test: the "image" is a (B,)
    vector of features; the conditional head returns ``features * condition[:, 0]`` and the
    unconditional head ``features``, so each term's probabilities are known exactly."""

    def __init__(self, unconditional: bool) -> None:
        super().__init__()
        self.calls: list[str] = []
        self.get_uncond_logits = self._uncond if unconditional else None

    def forward(self, images):
        self.calls.append("encode")
        return images

    def get_cond_logits(self, features, condition):
        self.calls.append("cond")
        return features * condition[:, 0]

    def _uncond(self, features):
        self.calls.append("uncond")
        return features


def _bce(p, target):
    return -math.log(p) if target == 1 else -math.log(1.0 - p)


def test_half_probabilities_give_ln2():
    half = torch.full((4,), 0.5)
    ones = torch.ones(4, 3)
    for stage in (1, 2):
        d = ProbeD(unconditional=stage == 2)
        err_d, parts = discriminator_loss(d, half, half, ones, stage=stage)
        assert err_d.item() == pytest.approx(2 * LN2)  # both weightings sum to 2 x ln 2
        assert all(value.item() == pytest.approx(LN2) for value in parts.values())
        expected = {"real", "wrong", "fake"} | (
            {"uncond_real", "uncond_fake"} if stage == 2 else set()
        )
        assert set(parts) == expected
        assert generator_loss(d, half, ones, stage=stage).item() == pytest.approx(stage * LN2)


def test_discriminator_loss_terms_and_wrong_pair_shift():
    real = torch.tensor([0.9, 0.8, 0.6])
    fake = torch.tensor([0.3, 0.2, 0.4])
    cond = torch.tensor([[1.0], [0.5], [0.25]])
    # wrong pairs: features of samples 0..B-2 with the conditions of samples 1..B-1
    wrong = [0.9 * 0.5, 0.8 * 0.25]
    real_pairs = (real * cond[:, 0]).tolist()
    fake_pairs = (fake * cond[:, 0]).tolist()
    real_term = sum(_bce(p, 1) for p in real_pairs) / 3
    wrong_term = sum(_bce(p, 0) for p in wrong) / 2
    fake_term = sum(_bce(p, 0) for p in fake_pairs) / 3
    uncond_real = sum(_bce(r, 1) for r in real.tolist()) / 3
    uncond_fake = sum(_bce(f, 0) for f in fake.tolist()) / 3

    d1 = ProbeD(unconditional=False)
    err, parts = discriminator_loss(d1, real, fake, cond, stage=1)
    assert parts["real"].item() == pytest.approx(real_term)
    assert parts["wrong"].item() == pytest.approx(wrong_term)
    assert parts["fake"].item() == pytest.approx(fake_term)
    assert err.item() == pytest.approx(real_term + 0.5 * (fake_term + wrong_term))
    assert d1.calls == ["encode", "encode", "cond", "cond", "cond"]

    d2 = ProbeD(unconditional=True)
    err, parts = discriminator_loss(d2, real, fake, cond, stage=2)
    assert parts["uncond_real"].item() == pytest.approx(uncond_real)
    assert parts["uncond_fake"].item() == pytest.approx(uncond_fake)
    expected = (real_term + uncond_real) / 2 + (fake_term + wrong_term + uncond_fake) / 3
    assert err.item() == pytest.approx(expected)
    assert d2.calls == ["encode", "encode", "cond", "cond", "cond", "uncond", "uncond"]

    g_expected = sum(_bce(p, 1) for p in fake_pairs) / 3
    assert generator_loss(d1, fake, cond, stage=1).item() == pytest.approx(g_expected)
    g2_expected = g_expected + sum(_bce(f, 1) for f in fake.tolist()) / 3
    assert generator_loss(d2, fake, cond, stage=2).item() == pytest.approx(g2_expected)


def test_losses_detach_conditions_and_fakes():
    cond = torch.ones(2, 1, requires_grad=True)
    fake = torch.full((2,), 0.3, requires_grad=True)
    err, parts = discriminator_loss(ProbeD(False), torch.full((2,), 0.7), fake, cond, stage=1)
    assert not err.requires_grad
    assert all(not value.requires_grad for value in parts.values())
    err_g = generator_loss(ProbeD(False), fake, cond, stage=1)
    err_g.backward()
    assert fake.grad is not None and cond.grad is None


def test_saturated_probabilities_are_clamped_like_bceloss():
    d = ProbeD(unconditional=False)
    zero = torch.zeros(2)
    assert generator_loss(d, zero, torch.ones(2, 1), stage=1).item() == pytest.approx(100.0)


def test_kl_loss():
    zeros = torch.zeros(4, 8)
    assert kl_loss(zeros, zeros).item() == 0.0
    assert kl_loss(torch.ones(4, 8), zeros).item() == pytest.approx(0.5)
    logvar = torch.full((4, 8), math.log(2.0))
    assert kl_loss(zeros, logvar).item() == pytest.approx(-0.5 * (1 + math.log(2.0) - 2.0))
    # mean over batch and dims, not a sum over dims: half the elements at mu = 2 -> 0.5 * 2
    mu = torch.cat([torch.full((4, 4), 2.0), torch.zeros(4, 4)], 1)
    assert kl_loss(mu, zeros).item() == pytest.approx(1.0)


def test_argument_checks():
    half = torch.full((2,), 0.5)
    with pytest.raises(ValueError, match="stage"):
        generator_loss(ProbeD(True), half, torch.ones(2, 1), stage=3)
    with pytest.raises(ValueError, match="unconditional head"):
        discriminator_loss(ProbeD(False), half, half, torch.ones(2, 1), stage=2)
    with pytest.raises(ValueError, match="at least 2"):
        discriminator_loss(ProbeD(False), half[:1], half[:1], torch.ones(1, 1), stage=1)


def test_losses_under_autocast_are_float32():
    half = torch.full((4,), 0.5, dtype=torch.bfloat16)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        err, _ = discriminator_loss(ProbeD(True), half, half, torch.ones(4, 1), stage=2)
    assert err.dtype == torch.float32 and err.item() == pytest.approx(2 * LN2)
