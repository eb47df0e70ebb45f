"""The execution-only rewrites of training/fast_layers.py on the StackGAN-v2 networks: the
gated up-blocks of the tree generator get the fused nearest-upsample + 3x3 convolution (the
widest of them as a matrix product on the CPU), the discriminators' widest convolutions become
matrix products; outputs, gradients and state-dict keys stay those of the plain modules."""

import copy
import dataclasses

import pytest
import torch
from training_helpers import TINY_V2_CFG as SMALL
from training_helpers import V2_SIZES as SIZES

from stackgan_cli.models import ModelConfig, StackGANv2Discriminator, StackGANv2Generator
from stackgan_cli.training.fast_layers import (
    GEMM_MIN_WEIGHTS,
    GemmConv2d,
    NearestUpConv3x3,
    fuse_nearest_upsampling,
    gemm_large_convolutions,
)
from stackgan_cli.training.step import prepare_modules


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    actual, expected = actual.detach(), expected.detach()
    return float((actual - expected).norm() / expected.norm().clamp_min(1e-30))


def assert_same_keys(plain: torch.nn.Module, fast: torch.nn.Module) -> None:
    plain_state, fast_state = plain.state_dict(), fast.state_dict()
    assert list(fast_state) == list(plain_state)
    for key, value in plain_state.items():
        assert fast_state[key].shape == value.shape
        torch.testing.assert_close(fast_state[key], value, rtol=0, atol=0)


def assert_same_gradients(plain: torch.nn.Module, fast: torch.nn.Module) -> None:
    """Every parameter's gradient, computed in float64 (float32 gradients of BatchNorm weights
    deep in the tree differ by about 1e-5 relative through rounding alone)."""
    assert next(plain.parameters()).dtype == torch.float64
    fast_params = dict(fast.named_parameters())
    for name, p in plain.named_parameters():
        q = fast_params[name]
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None and p.grad.norm() > 0:
            assert relative_error(q.grad, p.grad) < 1e-9, name


@pytest.mark.parametrize("frozen", [False, True])
def test_matrix_product_convolution_with_a_frozen_weight(frozen):
    """The discriminators' weights are frozen in the G step: another matrix product, the same
    function and input gradient."""
    torch.manual_seed(0)
    for stride, padding, kernel in ((2, 1, 4), (1, 1, 3)):
        conv = torch.nn.Conv2d(6, 5, kernel, stride, padding, bias=False).double()
        conv.weight.requires_grad_(not frozen)
        fast = GemmConv2d(conv)
        x = torch.randn(2, 6, 8, 8, dtype=torch.float64, requires_grad=True)
        expected = conv(x)
        actual = fast(x)
        assert actual.is_contiguous()
        torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)
        grad = torch.randn_like(expected)
        torch.testing.assert_close(
            torch.autograd.grad(actual, x, grad)[0],
            torch.autograd.grad(expected, x, grad)[0],
            rtol=1e-12,
            atol=1e-12,
        )


@pytest.mark.parametrize("gemm", [False, True])
def test_generator_up_blocks_fused_same_outputs_and_keys(gemm):
    torch.manual_seed(0)
    plain = StackGANv2Generator(SMALL).train()
    fast = copy.deepcopy(plain)
    # Four up-blocks in h_net1, one in each later stage.
    assert fuse_nearest_upsampling(fast) == 6
    if gemm:  # the two widest up-blocks (16 * in * out >= 16 * 64 * 64) as matrix products
        assert gemm_large_convolutions(fast, min_weights=16 * 64 * 64) == 2
        assert fast.h_net1.upsample1[1].gemm and fast.h_net1.upsample2[1].gemm
        assert not fast.h_net1.upsample3[1].gemm
    for name in ("h_net1.upsample1", "h_net1.upsample4", "h_net2.upsample", "h_net3.upsample"):
        block = fast.get_submodule(name)
        assert isinstance(block[0], torch.nn.Identity)
        assert isinstance(block[1], NearestUpConv3x3)
    assert_same_keys(plain, fast)

    text, noise = torch.randn(4, SMALL.text_dim), torch.randn(4, SMALL.z_dim)
    eps = torch.randn(4, SMALL.condition_dim)
    expected, mu, logvar = plain(text, noise, eps)
    actual, mu_fast, logvar_fast = fast(text, noise, eps)
    assert [x.shape[-1] for x in actual] == list(SIZES)
    for got, want in zip(actual, expected, strict=True):
        assert relative_error(got, want) < 1e-5
    torch.testing.assert_close(mu_fast, mu, rtol=0, atol=0)
    torch.testing.assert_close(logvar_fast, logvar, rtol=0, atol=0)

    plain, fast = plain.double(), fast.double()
    text, noise, eps = text.double(), noise.double(), eps.double()
    weights = [torch.randn_like(x).double() for x in expected]
    for net in (plain, fast):
        images, _, _ = net(text, noise, eps)
        sum((x * w).sum() for x, w in zip(images, weights, strict=True)).backward()
    assert_same_gradients(plain, fast)


@pytest.mark.parametrize("size", SIZES)
def test_discriminator_widest_convolutions_as_gemm_same_outputs_and_keys(size):
    torch.manual_seed(size)
    plain = StackGANv2Discriminator(SMALL, size).train()
    fast = copy.deepcopy(plain)
    # The threshold that picks, at these widths, the convolutions the default threshold picks
    # at the birds widths (see the last test): those with 16 * df_dim channels on one side.
    threshold = 1024 * SMALL.df_dim**2  # 2**22 at df_dim 64
    expected = {64: [], 128: ["img_code_s32", "img_code_s32_1"]}.get(
        size, ["img_code_s32", "img_code_s64", "img_code_s64_1", "img_code_s64_2"]
    )
    assert gemm_large_convolutions(fast, min_weights=threshold) == len(expected)
    for name in expected:
        assert isinstance(fast.get_submodule(name)[0], GemmConv2d)
    assert_same_keys(plain, fast)

    images = torch.rand(4, 3, size, size) * 2 - 1
    condition = torch.randn(4, SMALL.condition_dim)
    expected = plain(images, condition, logits=True)
    actual = fast(images, condition, logits=True)
    for got, want in zip(actual, expected, strict=True):
        assert relative_error(got, want) < 1e-5
    features_plain, features_fast = plain.encode(images), fast.encode(images)
    assert relative_error(features_fast, features_plain) < 1e-5

    plain, fast = plain.double(), fast.double()
    for net in (plain, fast):
        cond, uncond = net(images.double(), condition.double(), logits=True)
        (cond.sum() + 2 * uncond.sum()).backward()
    assert_same_gradients(plain, fast)


def test_birds_widths_rewrites_as_the_trainer_prepares_them(monkeypatch):
    """At the birds-v2 widths ``prepare_modules`` (as ``stackgan train`` calls it on the CPU)
    fuses all six up-blocks of G (the first two, 1024 and 512 channels, as matrix products)
    and turns the discriminators' convolutions with 1024 or more channels on a side (8x8 and
    4x4 outputs) into matrix products. (The orthogonal initialisation is skipped: slow at
    these widths, and irrelevant to which layers are rewritten.)"""
    import stackgan_cli.models.discriminator_v2 as d_module
    import stackgan_cli.models.generator_v2 as g_module

    monkeypatch.setattr(g_module, "init_weights_v2", lambda module: None)
    monkeypatch.setattr(d_module, "init_weights_v2", lambda module: None)
    cfg = ModelConfig.preset("birds-v2")
    netG = StackGANv2Generator(cfg)
    netDs = [StackGANv2Discriminator(cfg, size) for size in SIZES]
    keys = [list(m.state_dict()) for m in (netG, *netDs)]
    prepare_modules(netG, netDs, channels_last=False, compile=False, gemm_convs=True)
    assert [list(m.state_dict()) for m in (netG, *netDs)] == keys
    fused = [m for m in netG.modules() if isinstance(m, NearestUpConv3x3)]
    assert len(fused) == 6
    assert [m.gemm for m in fused] == [True, True, False, False, False, False]
    assert not any(isinstance(m, torch.nn.Upsample) for m in netG.modules())
    gemm = [[m for m in d.modules() if isinstance(m, GemmConv2d)] for d in netDs]
    assert [len(found) for found in gemm] == [0, 2, 4]
    assert sorted(m.weight.numel() for m in gemm[2]) == [
        1024 * 512 * 9,
        512 * 1024 * 16,
        2048 * 1024 * 9,
        1024 * 2048 * 16,
    ]
    assert all(m.weight.numel() >= GEMM_MIN_WEIGHTS for d in gemm for m in d)


def test_compile_reaches_every_discriminator_block():
    """``--compile``: v1 discriminators are called as their encoder and head modules, v2 ones
    through methods over their blocks, so each v2 block is compiled. Compilation itself
    happens at the first call; the wiring and the state-dict keys are checked here."""
    from stackgan_cli.models import build_discriminator, build_generator

    cfg = ModelConfig(gf_dim=8, df_dim=8, z_dim=8, condition_dim=4, text_dim=16, branch_num=3)
    netDs = [StackGANv2Discriminator(cfg, size) for size in SIZES]
    keys = [list(d.state_dict()) for d in netDs]
    prepare_modules(StackGANv2Generator(cfg), netDs, channels_last=False, compile=True)
    for netD, before in zip(netDs, keys, strict=True):
        assert list(netD.state_dict()) == before
        blocks = list(netD.children())
        assert blocks and all(b._compiled_call_impl is not None for b in blocks)

    v1 = dataclasses.replace(cfg, branch_num=1, r_num=2)
    netD = build_discriminator(2, v1)
    prepare_modules(build_generator(1, v1), [netD], channels_last=False, compile=True)
    heads = (netD, netD.get_cond_logits, netD.get_uncond_logits)
    assert all(m._compiled_call_impl is not None for m in heads)
