"""The four networks against the official layout (shape tables), their numerics re-derived
with plain torch.nn.functional calls, and the import of official generator state dicts."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from reference_tables import assert_matches_table, read_table

from stackgan_cli.errors import StackGANError
from stackgan_cli.models import (
    ModelConfig,
    Stage1Discriminator,
    Stage1Generator,
    Stage2Discriminator,
    Stage2Generator,
    build_discriminator,
    build_generator,
)
from stackgan_cli.models.official import load_official_generator

NETWORKS = {
    "stage1_G": Stage1Generator,
    "stage1_D": Stage1Discriminator,
    "stage2_G": Stage2Generator,
    "stage2_D": Stage2Discriminator,
}
TINY = dataclasses.replace(
    ModelConfig.preset("birds"), gf_dim=8, df_dim=4, z_dim=10, condition_dim=6, r_num=2, text_dim=20
)


def _inputs(cfg: ModelConfig, batch: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    text = torch.randn(batch, cfg.text_dim, generator=gen)
    noise = torch.randn(batch, cfg.z_dim, generator=gen)
    eps1 = torch.randn(batch, cfg.condition_dim, generator=gen)
    eps2 = torch.randn(batch, cfg.condition_dim, generator=gen)
    return text, noise, eps1, eps2


def _randomize_bn_stats(module: torch.nn.Module, seed: int = 1) -> None:
    """Give every BatchNorm non-trivial running statistics and affine parameters, so eval-mode
    comparisons exercise them."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)


# --- layout -------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["birds", "coco"])
@pytest.mark.parametrize("net", sorted(NETWORKS))
def test_state_dict_matches_official_table(preset, net):
    prefix = "" if preset == "birds" else "coco_"
    table = read_table(f"shapes_{prefix}{net}")
    assert table["config"]["preset"] == preset
    cfg = ModelConfig.preset(preset)
    with torch.device("meta"):  # shapes only: no memory, no time
        model = NETWORKS[net](cfg)
    assert_matches_table(model, table)


def test_presets_and_config_dict():
    birds = ModelConfig.preset("birds")
    assert birds == ModelConfig()
    assert (birds.gf_dim, birds.df_dim, birds.condition_dim, birds.z_dim, birds.r_num) == (
        128,
        64,
        128,
        100,
        4,
    )
    coco = ModelConfig.preset("coco")
    assert (coco.gf_dim, coco.df_dim, coco.r_num, coco.text_dim) == (192, 96, 2, 1024)
    assert ModelConfig.from_dict(TINY.to_dict()) == TINY
    with pytest.raises(ValueError, match="unknown model preset"):
        ModelConfig.preset("flowers")
    with pytest.raises(StackGANError, match="missing r_num"):
        ModelConfig.from_dict({k: v for k, v in TINY.to_dict().items() if k != "r_num"})
    with pytest.raises(StackGANError, match="unknown extra"):
        ModelConfig.from_dict({**TINY.to_dict(), "extra": 1})
    with pytest.raises(StackGANError, match="z_dim"):
        ModelConfig.from_dict({**TINY.to_dict(), "z_dim": 0})
    with pytest.raises(ValueError, match="gf_dim"):
        ModelConfig(gf_dim=2)


def test_weight_init_follows_official_rules():
    torch.manual_seed(0)
    d = Stage1Discriminator(dataclasses.replace(TINY, df_dim=16))
    g = Stage1Generator(dataclasses.replace(TINY, gf_dim=16))
    conv = d.encode_img[2].weight
    assert abs(conv.mean().item()) < 0.01 and abs(conv.std().item() - 0.02) < 0.004
    bn = d.encode_img[3]
    assert torch.all(bn.bias == 0) and abs(bn.weight.mean().item() - 1.0) < 0.01
    assert torch.all(g.ca_net.fc.bias == 0) and abs(g.ca_net.fc.weight.std().item() - 0.02) < 0.002
    # The 4x4 logit conv keeps torch's default (non-zero) bias.
    assert d.get_cond_logits.outlogits[3].bias.abs().item() > 0


# --- forward ------------------------------------------------------------------------------


@pytest.mark.parametrize("batch", [1, 4])
def test_output_shapes(batch):
    torch.manual_seed(0)
    cfg = TINY
    text, noise, eps1, eps2 = _inputs(cfg, batch)
    g1, d1 = Stage1Generator(cfg), Stage1Discriminator(cfg)
    g2, d2 = Stage2Generator(cfg), Stage2Discriminator(cfg)
    if batch == 1:  # BatchNorm1d refuses a single sample in train mode, as in the official code
        for net in (g1, d1, g2, d2):
            net.eval()
    none, img1, mu, logvar = g1(text, noise)
    assert none is None
    assert img1.shape == (batch, 3, 64, 64) and img1.abs().max() <= 1
    assert mu.shape == logvar.shape == (batch, cfg.condition_dim)
    assert (mu >= 0).all() and (logvar >= 0).all()  # ReLU before the split (official quirk)
    feats1 = d1(img1)
    assert feats1.shape == (batch, cfg.df_dim * 8, 4, 4)
    p1 = d1.get_cond_logits(feats1, mu)
    assert p1.shape == (batch,) and ((p1 > 0) & (p1 < 1)).all()
    assert d1.get_uncond_logits is None

    s1, img2, mu2, logvar2 = g2(text, noise, eps=(eps1, eps2))
    assert s1.shape == (batch, 3, 64, 64) and img2.shape == (batch, 3, 256, 256)
    assert mu2.shape == logvar2.shape == (batch, cfg.condition_dim)
    feats2 = d2(img2)
    assert feats2.shape == (batch, cfg.df_dim * 8, 4, 4)
    assert d2.get_cond_logits(feats2, mu2).shape == (batch,)
    assert d2.get_uncond_logits(feats2).shape == (batch,)


def test_birds_width_stage1_forward():
    torch.manual_seed(0)
    cfg = ModelConfig.preset("birds")
    g, d = Stage1Generator(cfg).eval(), Stage1Discriminator(cfg).eval()
    text, noise, eps, _ = _inputs(cfg, 2)
    with torch.no_grad():
        _, img, mu, _ = g(text, noise, eps=eps)
        p = d.get_cond_logits(d(img), mu)
    assert img.shape == (2, 3, 64, 64) and p.shape == (2,)
    assert torch.isfinite(img).all() and torch.isfinite(p).all()


def test_eval_determinism_with_fixed_eps():
    torch.manual_seed(0)
    g1, g2 = Stage1Generator(TINY).eval(), Stage2Generator(TINY).eval()
    text, noise, eps1, eps2 = _inputs(TINY, 3)
    with torch.no_grad():
        a, b = g1(text, noise, eps=eps1)[1], g1(text, noise, eps=eps1)[1]
        assert torch.equal(a, b)
        # eps is drawn in eval mode too, as the official code does
        assert not torch.equal(g1(text, noise)[1], g1(text, noise)[1])
        out_a, out_b = g2(text, noise, eps=(eps1, eps2)), g2(text, noise, eps=(eps1, eps2))
        for x, y in zip(out_a, out_b, strict=True):
            assert torch.equal(x, y)
        # eps1 feeds the nested Stage-I generator: its image equals a direct Stage-I call.
        g2.STAGE1_G.load_state_dict(g1.state_dict())
        assert torch.equal(g2(text, noise, eps=(eps1, eps2))[0], g1(text, noise, eps=eps1)[1])
        # eps2 feeds the Stage-II CA only.
        s1_a, img_a, *_ = g2(text, noise, eps=(eps1, eps2))
        s1_b, img_b, *_ = g2(text, noise, eps=(eps1, eps2 + 1))
        assert torch.equal(s1_a, s1_b) and not torch.equal(img_a, img_b)
    with pytest.raises(ValueError, match="eps must have shape"):
        g1(text, noise, eps=eps1[:, :2])


def test_gradients_reach_trainable_parameters_only():
    from stackgan_cli.models.losses import discriminator_loss, generator_loss, kl_loss

    torch.manual_seed(0)
    g, d = Stage2Generator(TINY), Stage2Discriminator(TINY)
    text, noise, *_ = _inputs(TINY, 4)
    real = torch.rand(4, 3, 256, 256) * 2 - 1
    _, fake, mu, logvar = g(text, noise)

    err_d, _ = discriminator_loss(d, real, fake.detach(), mu.detach(), stage=2)
    err_d.backward()
    for name, p in d.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert all(p.grad is None for p in g.parameters())

    d.zero_grad()
    err_g = generator_loss(d, fake, mu.detach(), stage=2) + 2.0 * kl_loss(mu, logvar)
    err_g.backward()
    for name, p in g.named_parameters():
        if name.startswith("STAGE1_G."):
            assert not p.requires_grad and p.grad is None, name
        else:
            assert p.requires_grad and p.grad is not None and p.grad.abs().sum() > 0, name


def test_nested_stage1_follows_parent_mode():
    g = Stage2Generator(TINY)
    assert g.STAGE1_G.training
    g.eval()
    assert not g.STAGE1_G.training
    g.train()
    assert g.STAGE1_G.training
    text, noise, *_ = _inputs(TINY, 4)
    before = g.STAGE1_G.fc[1].running_mean.clone()
    g(text, noise)  # train mode: the frozen Stage-I BatchNorm still tracks statistics
    assert not torch.equal(before, g.STAGE1_G.fc[1].running_mean)


# --- numerics, re-derived from the spec with functional calls -------------------------------


def _bn(x, sd, key):
    return F.batch_norm(
        x,
        sd[f"{key}.running_mean"],
        sd[f"{key}.running_var"],
        sd[f"{key}.weight"],
        sd[f"{key}.bias"],
        training=False,
        momentum=0.1,
        eps=1e-5,
    )


def _ca(sd, prefix, text, eps, cond):
    x = F.relu(F.linear(text, sd[f"{prefix}ca_net.fc.weight"], sd[f"{prefix}ca_net.fc.bias"]))
    mu, logvar = x[:, :cond], x[:, cond:]
    return mu + torch.exp(logvar / 2) * eps, mu, logvar


def _up(x, sd, key):
    x = F.interpolate(x, scale_factor=2, mode="nearest")
    x = F.conv2d(x, sd[f"{key}.1.weight"], padding=1)
    return F.relu(_bn(x, sd, f"{key}.2"))


def _stage1_g_reference(sd, cfg, text, noise, eps, prefix=""):
    c, mu, logvar = _ca(sd, prefix, text, eps, cfg.condition_dim)
    h = F.linear(torch.cat([noise, c], 1), sd[f"{prefix}fc.0.weight"])
    h = F.relu(_bn(h, sd, f"{prefix}fc.1")).view(text.shape[0], cfg.gf_dim * 8, 4, 4)
    for i in range(1, 5):
        h = _up(h, sd, f"{prefix}upsample{i}")
    return torch.tanh(F.conv2d(h, sd[f"{prefix}img.0.weight"], padding=1)), mu, logvar


def _stage2_g_reference(sd, cfg, text, noise, eps1, eps2):
    s1, _, _ = _stage1_g_reference(sd, cfg, text, noise, eps1, prefix="STAGE1_G.")
    h = F.relu(F.conv2d(s1, sd["encoder.0.weight"], padding=1))
    for conv, bn in (("encoder.2", "encoder.3"), ("encoder.5", "encoder.6")):
        h = F.relu(_bn(F.conv2d(h, sd[f"{conv}.weight"], stride=2, padding=1), sd, bn))
    c, mu, logvar = _ca(sd, "", text, eps2, cfg.condition_dim)
    c = c[:, :, None, None].repeat(1, 1, 16, 16)
    h = torch.cat([h, c], 1)
    h = F.relu(_bn(F.conv2d(h, sd["hr_joint.0.weight"], padding=1), sd, "hr_joint.1"))
    for i in range(cfg.r_num):
        k = f"residual.{i}.block"
        r = F.relu(_bn(F.conv2d(h, sd[f"{k}.0.weight"], padding=1), sd, f"{k}.1"))
        r = _bn(F.conv2d(r, sd[f"{k}.3.weight"], padding=1), sd, f"{k}.4")
        h = F.relu(r + h)
    for i in range(1, 5):
        h = _up(h, sd, f"upsample{i}")
    return s1, torch.tanh(F.conv2d(h, sd["img.0.weight"], padding=1)), mu, logvar


def _d_reference(sd, image, condition, stages):
    h = F.leaky_relu(F.conv2d(image, sd["encode_img.0.weight"], stride=2, padding=1), 0.2)
    for conv, bn, stride, pad in stages:
        h = F.conv2d(h, sd[f"encode_img.{conv}.weight"], stride=stride, padding=pad)
        h = F.leaky_relu(_bn(h, sd, f"encode_img.{bn}"), 0.2)
    c = condition[:, :, None, None].repeat(1, 1, 4, 4)
    x = F.conv2d(torch.cat([h, c], 1), sd["get_cond_logits.outlogits.0.weight"], padding=1)
    x = F.leaky_relu(_bn(x, sd, "get_cond_logits.outlogits.1"), 0.2)
    w, b = sd["get_cond_logits.outlogits.3.weight"], sd["get_cond_logits.outlogits.3.bias"]
    cond_p = torch.sigmoid(F.conv2d(x, w, b, stride=4)).view(-1)
    return h, cond_p


def test_stage1_numerics_match_functional_reference():
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY, gf_dim=16, df_dim=8)
    g, d = Stage1Generator(cfg), Stage1Discriminator(cfg)
    _randomize_bn_stats(g)
    _randomize_bn_stats(d)
    g.eval(), d.eval()
    text, noise, eps, _ = _inputs(cfg, 3)
    with torch.no_grad():
        _, img, mu, logvar = g(text, noise, eps=eps)
        ref_img, ref_mu, ref_logvar = _stage1_g_reference(g.state_dict(), cfg, text, noise, eps)
        feats = d(img)
        p = d.get_cond_logits(feats, mu)
        stages = [(2, 3, 2, 1), (5, 6, 2, 1), (8, 9, 2, 1)]
        ref_feats, ref_p = _d_reference(d.state_dict(), img, mu, stages)
    torch.testing.assert_close(img, ref_img, atol=1e-5, rtol=0)
    torch.testing.assert_close(mu, ref_mu, atol=1e-6, rtol=0)
    torch.testing.assert_close(logvar, ref_logvar, atol=1e-6, rtol=0)
    torch.testing.assert_close(feats, ref_feats, atol=1e-5, rtol=0)
    torch.testing.assert_close(p, ref_p, atol=1e-5, rtol=0)


def test_stage2_numerics_match_functional_reference():
    torch.manual_seed(0)
    cfg = TINY
    g, d = Stage2Generator(cfg), Stage2Discriminator(cfg)
    _randomize_bn_stats(g)
    _randomize_bn_stats(d)
    g.eval(), d.eval()
    text, noise, eps1, eps2 = _inputs(cfg, 2)
    with torch.no_grad():
        out = g(text, noise, eps=(eps1, eps2))
        ref = _stage2_g_reference(g.state_dict(), cfg, text, noise, eps1, eps2)
        feats = d(out[1])
        stages = [(c, c + 1, 2, 1) for c in (2, 5, 8, 11, 14)] + [(17, 18, 1, 1), (20, 21, 1, 1)]
        ref_feats, ref_p = _d_reference(d.state_dict(), out[1], out[2], stages)
        sd = d.state_dict()
        w, b = sd["get_uncond_logits.outlogits.0.weight"], sd["get_uncond_logits.outlogits.0.bias"]
        ref_uncond = torch.sigmoid(F.conv2d(ref_feats, w, b, stride=4)).view(-1)
        p, uncond = d.get_cond_logits(feats, out[2]), d.get_uncond_logits(feats)
    for ours, theirs in zip(out, ref, strict=True):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    torch.testing.assert_close(feats, ref_feats, atol=1e-5, rtol=0)
    torch.testing.assert_close(p, ref_p, atol=1e-5, rtol=0)
    torch.testing.assert_close(uncond, ref_uncond, atol=1e-5, rtol=0)


# --- official checkpoint import -------------------------------------------------------------


@pytest.mark.parametrize("stage", [1, 2])
def test_official_round_trip_through_file(tmp_path, stage):
    torch.manual_seed(0)
    source = build_generator(stage, TINY)
    _randomize_bn_stats(source)
    source.eval()
    path = tmp_path / "netG_epoch_7.pth"
    torch.save(source.state_dict(), path)
    loaded_stage, cfg, loaded = load_official_generator(path)
    assert loaded_stage == stage and not loaded.training
    assert (cfg.gf_dim, cfg.z_dim, cfg.condition_dim, cfg.text_dim) == (8, 10, 6, 20)
    assert cfg.df_dim == 4  # not in a generator: gf_dim // 2 when no preset has this gf_dim
    if stage == 2:
        assert cfg.r_num == 2
        assert not any(p.requires_grad for p in loaded.STAGE1_G.parameters())
    text, noise, eps1, eps2 = _inputs(TINY, 2)
    eps = eps1 if stage == 1 else (eps1, eps2)
    with torch.no_grad():
        for ours, theirs in zip(
            source(text, noise, eps=eps), loaded(text, noise, eps=eps), strict=True
        ):
            assert (ours is None and theirs is None) or torch.equal(ours, theirs)


def test_official_import_of_coco_stage2_state_dict():
    torch.manual_seed(0)
    coco = ModelConfig.preset("coco")
    state = Stage2Generator(coco).state_dict()
    old_style = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    for variant in (state, old_style, {f"module.{k}": v for k, v in old_style.items()}):
        stage, cfg, g = load_official_generator(variant)
        assert stage == 2 and cfg == coco
        assert isinstance(g, Stage2Generator)
        loaded = g.state_dict()
        assert all(torch.equal(loaded[k], v) for k, v in old_style.items())


def test_official_import_of_stage1_presets():
    for name in ("birds", "coco"):
        preset = ModelConfig.preset(name)
        with torch.device("meta"):
            shapes = Stage1Generator(preset).state_dict()
        state = {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in shapes.items()}
        stage, cfg, _ = load_official_generator(state)
        assert stage == 1 and cfg == preset


def test_official_import_errors(tmp_path):
    d_state = Stage1Discriminator(TINY).state_dict()
    with pytest.raises(StackGANError, match="is a discriminator, not a generator"):
        load_official_generator(d_state)
    path = tmp_path / "netD_epoch_last.pth"
    torch.save(Stage2Discriminator(TINY).state_dict(), path)
    with pytest.raises(StackGANError, match=r"netD_epoch_last\.pth is a discriminator"):
        load_official_generator(path)

    good = tmp_path / "netG.pth"
    torch.save(Stage1Generator(TINY).state_dict(), good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(StackGANError, match="truncated or corrupt"):
        load_official_generator(truncated)
    with pytest.raises(StackGANError, match="does not exist"):
        load_official_generator(tmp_path / "missing.pth")

    with pytest.raises(StackGANError, match="not a StackGAN generator state dict"):
        load_official_generator({"weight": torch.zeros(3)})
    state = Stage2Generator(TINY).state_dict()
    with pytest.raises(StackGANError, match="residual blocks"):
        load_official_generator({k: v for k, v in state.items() if not k.startswith("residual.0.")})
    state["hr_joint.0.weight"] = torch.zeros(3, 3, 3, 3)
    with pytest.raises(StackGANError, match=r"fits no StackGAN layout: hr_joint\.0\.weight"):
        load_official_generator(state)
    s1 = Stage1Generator(TINY).state_dict()
    del s1["upsample2.1.weight"]
    with pytest.raises(StackGANError, match=r"upsample2\.1\.weight is missing"):
        load_official_generator(s1)


def test_builders():
    assert isinstance(build_generator(1, TINY), Stage1Generator)
    assert isinstance(build_discriminator(2, TINY), Stage2Discriminator)
    with pytest.raises(ValueError):
        build_generator(3, TINY)
