"""The StackGAN-v2 networks against the official layout (shape tables), their numerics re-derived
with plain torch.nn.functional calls, their initialisation, and the import of official
generator files (legacy torch serialization, Python-2 pickles)."""

import dataclasses
import pickle
import struct
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
import torch.nn.functional as F
from reference_tables import assert_matches_table, read_table
from training_helpers import TINY_V2_CFG as TINY
from training_helpers import V2_SIZES as SIZES

from stackgan_cli.errors import StackGANError
from stackgan_cli.models import (
    ModelConfig,
    StackGANv2Discriminator,
    StackGANv2Generator,
    Stage1Generator,
    Stage2Discriminator,
)
from stackgan_cli.models.official import load_official_generator
from stackgan_cli.models.official_v2 import load_official_v2_generator


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """The tiny networks gain nothing from intra-op threads, and on a busy machine contended
    OpenMP threads make each small QR or convolution hundreds of times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _inputs(cfg: ModelConfig, batch: int, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    text = torch.randn(batch, cfg.text_dim, generator=gen)
    noise = torch.randn(batch, cfg.z_dim, generator=gen)
    eps = torch.randn(batch, cfg.condition_dim, generator=gen)
    return text, noise, eps


def _randomize_bn(module: torch.nn.Module, seed: int = 1) -> None:
    """Non-trivial BatchNorm running statistics and biases, so eval mode exercises them."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)


def _official_layout(state: dict) -> dict:
    """What the official trainer saved: DataParallel ``module.`` keys, no num_batches_tracked."""
    return {
        f"module.{key}": value.clone()
        for key, value in state.items()
        if not key.endswith("num_batches_tracked")
    }


def _save_legacy(state: dict, path: Path) -> Path:
    torch.save(state, path, _use_new_zipfile_serialization=False, pickle_protocol=2)
    return path


# --- layout -------------------------------------------------------------------------------


@pytest.mark.parametrize("net", ["G", "D64", "D128", "D256"])
def test_state_dict_matches_official_v2_table(net):
    table = read_table(f"shapes_v2_{net}")
    cfg = ModelConfig.preset("birds-v2")
    official = table["config"]
    assert (cfg.gf_dim, cfg.df_dim, cfg.z_dim, cfg.condition_dim) == (
        official["GF_DIM"],
        official["DF_DIM"],
        official["Z_DIM"],
        official["EMBEDDING_DIM"],
    )
    assert (cfg.r_num, cfg.text_dim, cfg.branch_num) == (
        official["R_NUM"],
        official["TEXT_DIM"],
        official["BRANCH_NUM"],
    )
    with torch.device("meta"):  # shapes only: no memory, no orthogonalisation time
        model = (
            StackGANv2Generator(cfg) if net == "G" else StackGANv2Discriminator(cfg, int(net[1:]))
        )
    assert_matches_table(model, table)
    assert [key for key, _ in model.named_buffers()] == table["buffer_keys"]


def test_birds_v2_preset_and_config_dict():
    v2 = ModelConfig.preset("birds-v2")
    # What files hold: word_dim (AttnGAN's DAMSM word size) only when it is not its default,
    # so that versions which do not know it still read StackGAN files.
    assert v2.to_dict() == {
        "gf_dim": 64,
        "df_dim": 64,
        "z_dim": 100,
        "condition_dim": 128,
        "r_num": 2,
        "text_dim": 1024,
        "branch_num": 3,
    }
    assert ModelConfig.preset("birds") == ModelConfig()
    coco = ModelConfig.preset("coco")
    assert (coco.gf_dim, coco.df_dim, coco.r_num) == (192, 96, 2)
    assert ModelConfig.from_dict(TINY.to_dict()) == TINY
    small_words = dataclasses.replace(v2, word_dim=8)
    assert small_words.to_dict()["word_dim"] == 8
    assert ModelConfig.from_dict(small_words.to_dict()) == small_words
    two = dataclasses.replace(TINY, branch_num=2)
    assert ModelConfig.from_dict(two.to_dict()) == two
    # A dict written before branch_num existed gets the default.
    old = {k: v for k, v in TINY.to_dict().items() if k != "branch_num"}
    assert ModelConfig.from_dict(old) == dataclasses.replace(TINY, branch_num=3)
    with pytest.raises(StackGANError, match="missing gf_dim"):
        ModelConfig.from_dict({k: v for k, v in old.items() if k != "gf_dim"})
    with pytest.raises(StackGANError, match="unknown extra"):
        ModelConfig.from_dict({**TINY.to_dict(), "extra": 1})
    with pytest.raises(StackGANError, match="branch_num"):
        ModelConfig.from_dict({**TINY.to_dict(), "branch_num": 0})


@pytest.mark.parametrize("branch_num", [1, 2, 3])
def test_branch_num_selects_stages(branch_num):
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY, branch_num=branch_num)
    g = StackGANv2Generator(cfg).eval()
    children = [name for name, _ in g.named_children()]
    expected = ["ca_net"] + [
        f"{n}{i}" for i in range(1, branch_num + 1) for n in ("h_net", "img_net")
    ]
    assert children == expected
    text, noise, eps = _inputs(cfg, 2)
    with torch.no_grad():
        images, mu, logvar = g(text, noise, eps=eps)
    assert [tuple(img.shape) for img in images] == [(2, 3, s, s) for s in SIZES[:branch_num]]
    assert all(img.abs().max() <= 1 for img in images)
    assert mu.shape == logvar.shape == (2, cfg.condition_dim)


def test_invalid_branch_num_and_image_size():
    with pytest.raises(ValueError, match="branch_num must be 1, 2 or 3"):
        StackGANv2Generator(dataclasses.replace(TINY, branch_num=4))
    with pytest.raises(ValueError, match="image_size must be 64, 128 or 256"):
        StackGANv2Discriminator(TINY, 512)
    d = StackGANv2Discriminator(TINY, 128)
    with pytest.raises(ValueError, match=r"takes \(B, 3, 128, 128\) images"):
        d(torch.zeros(2, 3, 64, 64), torch.zeros(2, TINY.condition_dim))


def test_v2_init_follows_official_rules():
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY, gf_dim=4, df_dim=8, condition_dim=16, text_dim=64)
    g, d = StackGANv2Generator(cfg), StackGANv2Discriminator(cfg, 64)
    for module in [*g.modules(), *d.modules()]:
        if isinstance(module, (torch.nn.Conv2d, torch.nn.Linear)):
            w = module.weight.detach().flatten(1)
            # Orthogonal with gain 1: orthonormal rows, or columns when there are more rows.
            gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
            assert (gram - torch.eye(gram.shape[0])).abs().max() < 1e-4
        if isinstance(module, torch.nn.Linear) and module.bias is not None:
            assert torch.all(module.bias == 0)
    bn = g.h_net1.fc[1]  # 2048 features: enough for the statistics
    assert torch.all(bn.bias == 0)
    assert abs(bn.weight.mean().item() - 1.0) < 0.003 and abs(bn.weight.std().item() - 0.02) < 0.003
    for head in (d.logits[0], d.uncond_logits[0]):
        # The 4x4 logit convs keep torch's default bias: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
        bound = 1 / (cfg.df_dim * 8 * 16) ** 0.5
        assert 0 < head.bias.abs().item() <= bound


# --- forward ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", SIZES)
def test_discriminator_outputs_logits_and_split(size):
    torch.manual_seed(0)
    d = StackGANv2Discriminator(TINY, size)
    _randomize_bn(d)
    d.eval()
    image = torch.rand(3, 3, size, size) * 2 - 1
    condition = torch.randn(3, TINY.condition_dim)
    with torch.no_grad():
        cond, uncond = d(image, condition)
        cond_logit, uncond_logit = d(image, condition, logits=True)
        features = d.encode(image)
        split = (d.get_cond_logits(features, condition), d.get_uncond_logits(features))
        split_logits = (
            d.get_cond_logits(features, condition, logits=True),
            d.get_uncond_logits(features, logits=True),
        )
    assert features.shape == (3, TINY.df_dim * 8, 4, 4)
    assert cond.shape == uncond.shape == (3,)
    assert ((cond > 0) & (cond < 1)).all() and ((uncond > 0) & (uncond < 1)).all()
    torch.testing.assert_close(torch.sigmoid(cond_logit), cond, atol=0, rtol=0)
    torch.testing.assert_close(torch.sigmoid(uncond_logit), uncond, atol=0, rtol=0)
    assert torch.equal(split[0], cond) and torch.equal(split[1], uncond)
    assert torch.equal(split_logits[0], cond_logit) and torch.equal(split_logits[1], uncond_logit)


def test_eps_fixed_or_drawn_in_eval_mode():
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY, branch_num=1)
    g = StackGANv2Generator(cfg).eval()
    text, noise, eps = _inputs(cfg, 2)
    with torch.no_grad():
        a, mu_a, _ = g(text, noise, eps=eps)
        b, mu_b, _ = g(text, noise, eps=eps)
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
        assert torch.equal(mu_a, mu_b)
        c, mu_c, _ = g(text, noise)  # eps drawn although in eval mode, as official
        assert torch.equal(mu_a, mu_c) and not torch.equal(a[0], c[0])
    with pytest.raises(ValueError, match="eps must have shape"):
        g(text, noise, eps=eps[:, :2])


def test_gradients_reach_every_parameter():
    torch.manual_seed(0)
    g = StackGANv2Generator(TINY)
    discriminators = [StackGANv2Discriminator(TINY, size) for size in SIZES]
    text, noise, _ = _inputs(TINY, 2)
    images, mu, logvar = g(text, noise)
    outputs = [d(img, mu) for d, img in zip(discriminators, images, strict=True)]
    loss = sum(cond.sum() + uncond.sum() for cond, uncond in outputs)
    loss.backward()
    for net in (g, *discriminators):
        for name, p in net.named_parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name


# --- numerics, re-derived from the spec with functional calls -------------------------------


def _bn(x, sd, key, training):
    # In training mode F.batch_norm updates the (cloned) running statistics in sd, as BN does.
    return F.batch_norm(
        x,
        sd[f"{key}.running_mean"],
        sd[f"{key}.running_var"],
        sd[f"{key}.weight"],
        sd[f"{key}.bias"],
        training=training,
        momentum=0.1,
        eps=1e-5,
    )


def _gate(x):
    a, b = x.chunk(2, dim=1)
    return a * torch.sigmoid(b)


def _conv3(x, sd, key):
    return F.conv2d(x, sd[f"{key}.weight"], stride=1, padding=1)


def _g_reference(sd, cfg, text, noise, eps, training):
    x = _gate(F.linear(text, sd["ca_net.fc.weight"], sd["ca_net.fc.bias"]))
    mu, logvar = x[:, : cfg.condition_dim], x[:, cfg.condition_dim :]
    c = mu + torch.exp(logvar / 2) * eps
    h = F.linear(torch.cat([c, noise], 1), sd["h_net1.fc.0.weight"])
    h = _gate(_bn(h, sd, "h_net1.fc.1", training)).reshape(len(text), cfg.gf_dim * 16, 4, 4)
    for i in range(1, 5):
        h = F.interpolate(h, scale_factor=2, mode="nearest")
        h = _gate(
            _bn(_conv3(h, sd, f"h_net1.upsample{i}.1"), sd, f"h_net1.upsample{i}.2", training)
        )
    images = [torch.tanh(_conv3(h, sd, "img_net1.img.0"))]
    for branch in range(2, cfg.branch_num + 1):
        k = f"h_net{branch}"
        c_map = c[:, :, None, None].repeat(1, 1, h.shape[2], h.shape[3])
        h = _conv3(torch.cat([c_map, h], 1), sd, f"{k}.jointConv.0")
        h = _gate(_bn(h, sd, f"{k}.jointConv.1", training))
        for r in range(cfg.r_num):
            b = f"{k}.residual.{r}.block"
            y = _gate(_bn(_conv3(h, sd, f"{b}.0"), sd, f"{b}.1", training))
            h = h + _bn(_conv3(y, sd, f"{b}.3"), sd, f"{b}.4", training)
        h = F.interpolate(h, scale_factor=2, mode="nearest")
        h = _gate(_bn(_conv3(h, sd, f"{k}.upsample.1"), sd, f"{k}.upsample.2", training))
        images.append(torch.tanh(_conv3(h, sd, f"img_net{branch}.img.0")))
    return images, mu, logvar


def _d_reference(sd, size, image, condition, training):
    def leaky(x):
        return F.leaky_relu(x, 0.2)

    def down(x, conv, bn):
        return leaky(_bn(F.conv2d(x, sd[f"{conv}.weight"], stride=2, padding=1), sd, bn, training))

    def block3(x, key):
        return leaky(_bn(_conv3(x, sd, f"{key}.0"), sd, f"{key}.1", training))

    h = leaky(F.conv2d(image, sd["img_code_s16.0.weight"], stride=2, padding=1))
    for conv, bn in ((2, 3), (5, 6), (8, 9)):
        h = down(h, f"img_code_s16.{conv}", f"img_code_s16.{bn}")
    if size == 128:
        h = block3(down(h, "img_code_s32.0", "img_code_s32.1"), "img_code_s32_1")
    if size == 256:
        h = down(down(h, "img_code_s32.0", "img_code_s32.1"), "img_code_s64.0", "img_code_s64.1")
        h = block3(block3(h, "img_code_s64_1"), "img_code_s64_2")
    c_map = condition[:, :, None, None].repeat(1, 1, 4, 4)
    joint = block3(torch.cat([c_map, h], 1), "jointConv")
    cond = F.conv2d(joint, sd["logits.0.weight"], sd["logits.0.bias"], stride=4).flatten()
    uncond = F.conv2d(h, sd["uncond_logits.0.weight"], sd["uncond_logits.0.bias"], stride=4)
    return h, torch.sigmoid(cond), torch.sigmoid(uncond.flatten()), cond


def _cloned_state(module):
    return {key: value.detach().clone() for key, value in module.state_dict().items()}


def _assert_running_stats_equal(module, reference_sd, atol):
    for key, value in module.state_dict().items():
        if key.endswith(("running_mean", "running_var")):
            torch.testing.assert_close(value, reference_sd[key], atol=atol, rtol=0, msg=key)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
def test_generator_numerics_match_functional_reference(training):
    torch.manual_seed(0)
    g = StackGANv2Generator(TINY)
    _randomize_bn(g)
    g.train(training)
    text, noise, eps = _inputs(TINY, 3)
    sd = _cloned_state(g)
    with torch.no_grad():
        images, mu, logvar = g(text, noise, eps=eps)
        ref_images, ref_mu, ref_logvar = _g_reference(sd, TINY, text, noise, eps, training)
    atol = 1e-4 if training else 1e-5
    assert len(images) == len(ref_images) == 3
    for ours, theirs in zip(images, ref_images, strict=True):
        torch.testing.assert_close(ours, theirs, atol=atol, rtol=0)
    torch.testing.assert_close(mu, ref_mu, atol=1e-6, rtol=0)
    torch.testing.assert_close(logvar, ref_logvar, atol=1e-6, rtol=0)
    _assert_running_stats_equal(g, sd, atol)


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("size", SIZES)
def test_discriminator_numerics_match_functional_reference(size, training):
    torch.manual_seed(0)
    d = StackGANv2Discriminator(TINY, size)
    _randomize_bn(d)
    d.train(training)
    gen = torch.Generator().manual_seed(2)
    image = torch.rand(3, 3, size, size, generator=gen) * 2 - 1
    condition = torch.randn(3, TINY.condition_dim, generator=gen)
    sd = _cloned_state(d)
    with torch.no_grad():
        cond, uncond = d(image, condition)
        ref_features, ref_cond, ref_uncond, ref_logit = _d_reference(
            sd, size, image, condition, training
        )
        if not training:  # a second pass would move the training-mode running statistics again
            features = d.encode(image)
            logit = d.get_cond_logits(features, condition, logits=True)
            torch.testing.assert_close(features, ref_features, atol=1e-5, rtol=0)
            torch.testing.assert_close(logit, ref_logit, atol=1e-5, rtol=0)
    atol = 1e-4 if training else 1e-5
    torch.testing.assert_close(cond, ref_cond, atol=atol, rtol=0)
    torch.testing.assert_close(uncond, ref_uncond, atol=atol, rtol=0)
    _assert_running_stats_equal(d, sd, atol)


# --- official generator files ----------------------------------------------------------------


@pytest.mark.parametrize("branch_num", [1, 3])
def test_official_v2_round_trip_through_legacy_file(tmp_path, branch_num):
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY, branch_num=branch_num, r_num=1 if branch_num == 3 else 2)
    source = StackGANv2Generator(cfg)
    _randomize_bn(source)
    source.eval()
    path = _save_legacy(_official_layout(source.state_dict()), tmp_path / "netG_210000.pth")
    loaded_cfg, loaded = load_official_v2_generator(path)
    assert not loaded.training and isinstance(loaded, StackGANv2Generator)
    assert loaded_cfg == dataclasses.replace(cfg, df_dim=cfg.gf_dim)
    text, noise, eps = _inputs(cfg, 2)
    with torch.no_grad():
        ours, theirs = source(text, noise, eps=eps), loaded(text, noise, eps=eps)
    for a, b in zip(ours[0], theirs[0], strict=True):
        assert torch.equal(a, b)


def test_official_v2_birds_layout_is_recognised():
    preset = ModelConfig.preset("birds-v2")
    with torch.device("meta"):
        shapes = StackGANv2Generator(preset).state_dict()
    state = _official_layout(
        {k: torch.empty(v.shape, dtype=v.dtype, device="meta") for k, v in shapes.items()}
    )
    cfg, g = load_official_v2_generator(state)
    assert cfg == preset
    assert sum(p.numel() for p in g.parameters()) == 21_239_696


# A Python-2 / PyTorch-0.3 pickle, written opcode by opcode: byte-string (SHORT_BINSTRING)
# keys, ``torch._utils._rebuild_tensor`` with four arguments, and an OrderedDict rebuilt from
# a list of [key, value] pairs - the forms Python 2 and PyTorch 0.3 produced.
class _Global(NamedTuple):
    module: str
    name: str


class _Call(NamedTuple):
    func: _Global
    args: tuple


class _PersistentId(NamedTuple):
    pid: tuple


def _py2_opcodes(obj) -> bytes:
    if obj is None:
        return b"N"
    if isinstance(obj, _Global):
        return b"c" + f"{obj.module}\n{obj.name}\n".encode("ascii")
    if isinstance(obj, _Call):
        return _py2_opcodes(obj.func) + _py2_opcodes(obj.args) + b"R"
    if isinstance(obj, _PersistentId):
        return _py2_opcodes(obj.pid) + b"Q"
    if isinstance(obj, bool):
        return b"\x88" if obj else b"\x89"
    if isinstance(obj, int):
        return b"J" + struct.pack("<i", obj)
    if isinstance(obj, str):
        data = obj.encode("ascii")
        return b"U" + bytes([len(data)]) + data
    if isinstance(obj, tuple):
        return b"(" + b"".join(_py2_opcodes(x) for x in obj) + b"t"
    if isinstance(obj, list):
        return b"](" + b"".join(_py2_opcodes(x) for x in obj) + b"e"
    if isinstance(obj, dict):
        return b"}(" + b"".join(_py2_opcodes(k) + _py2_opcodes(v) for k, v in obj.items()) + b"u"
    raise TypeError(type(obj))


def _py2_pickle(obj) -> bytes:
    return b"\x80\x02" + _py2_opcodes(obj) + b"."


def _write_py2_torch03_file(path: Path, state: dict) -> Path:
    """The legacy layout: magic number, protocol, system info, the object pickle, the storage
    keys, then each storage as its element count (int64) and raw little-endian data."""
    items, storages = [], {}
    location = "cuda:0"  # saved from the training GPU: loading has to map storages to the CPU
    for index, (key, tensor) in enumerate(state.items()):
        data = tensor.detach().float().contiguous()
        storage_key = str(94_000_000 + index)
        pid = (
            "storage",
            _Global("torch", "FloatStorage"),
            storage_key,
            location,
            data.numel(),
            None,
        )
        rebuild = _Global("torch._utils", "_rebuild_tensor")
        args = (_PersistentId(pid), 0, tuple(data.shape), data.stride())
        items.append([key, _Call(rebuild, args)])
        storages[storage_key] = data
    sys_info = {
        "protocol_version": 1001,
        "little_endian": True,
        "type_sizes": {"short": 2, "int": 4, "long": 8},
    }
    magic = 0x1950A86A20F9469CFC6C
    blob = pickle.dumps(magic, protocol=2) + pickle.dumps(1001, protocol=2)
    blob += _py2_pickle(sys_info)
    blob += _py2_pickle(_Call(_Global("collections", "OrderedDict"), (items,)))
    keys = sorted(storages)
    blob += _py2_pickle(keys)
    for key in keys:
        blob += struct.pack("<q", storages[key].numel()) + storages[key].numpy().tobytes()
    path.write_bytes(blob)
    return path


def test_official_v2_python2_legacy_file_loads_weights_only(tmp_path):
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY, branch_num=2)
    source = StackGANv2Generator(cfg)
    _randomize_bn(source)
    source.eval()
    path = _write_py2_torch03_file(
        tmp_path / "netG_210000.pth", _official_layout(source.state_dict())
    )
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert list(raw) == list(_official_layout(source.state_dict()))
    loaded_cfg, loaded = load_official_v2_generator(path)
    assert loaded_cfg == dataclasses.replace(cfg, df_dim=cfg.gf_dim)
    text, noise, eps = _inputs(cfg, 2)
    with torch.no_grad():
        ours, theirs = source(text, noise, eps=eps), loaded(text, noise, eps=eps)
    for a, b in zip(ours[0], theirs[0], strict=True):
        assert torch.equal(a, b)


def test_official_v2_import_errors(tmp_path):
    torch.manual_seed(0)
    g_state = _official_layout(StackGANv2Generator(TINY).state_dict())
    d0 = _save_legacy(
        _official_layout(StackGANv2Discriminator(TINY, 64).state_dict()), tmp_path / "netD0.pth"
    )
    with pytest.raises(StackGANError, match=r"netD0\.pth is a discriminator, not a generator"):
        load_official_v2_generator(d0)
    with pytest.raises(StackGANError, match="is a discriminator"):
        load_official_v2_generator(Stage2Discriminator(TINY).state_dict())

    good = _save_legacy(g_state, tmp_path / "netG.pth")
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(StackGANError, match="truncated or corrupt"):
        load_official_v2_generator(truncated)

    v1 = _save_legacy(_official_layout(Stage1Generator(TINY).state_dict()), tmp_path / "v1.pth")
    with pytest.raises(StackGANError, match=r"v1\.pth is a StackGAN-v1 .* not a StackGAN-v2 one"):
        load_official_v2_generator(v1)
    # ... and the StackGAN-v1 import refuses StackGAN-v2 files in turn.
    with pytest.raises(StackGANError, match=r"netG\.pth is a StackGAN-v2 generator, not a"):
        load_official_generator(good)
    with pytest.raises(StackGANError, match=r"netD0\.pth is a discriminator"):
        load_official_generator(d0)

    unconditional = {k: v for k, v in g_state.items() if not k.startswith("module.ca_net.")}
    with pytest.raises(StackGANError, match="unconditional StackGAN-v2 generator"):
        load_official_v2_generator(unconditional)
    with pytest.raises(StackGANError, match="not a StackGAN-v2 generator state dict"):
        load_official_v2_generator({"weight": torch.zeros(3)})
    with pytest.raises(StackGANError, match=r"h_net1, h_net3"):
        load_official_v2_generator({k: v for k, v in g_state.items() if ".h_net2." not in k})
    missing = {k: v for k, v in g_state.items() if k != "module.h_net3.upsample.1.weight"}
    with pytest.raises(StackGANError, match=r"h_net3\.upsample\.1\.weight is missing"):
        load_official_v2_generator(missing)
    reshaped = {**g_state, "module.img_net2.img.0.weight": torch.zeros(3, 5, 3, 3)}
    with pytest.raises(StackGANError, match=r"img_net2\.img\.0\.weight has shape \(3, 5, 3, 3\)"):
        load_official_v2_generator(reshaped)
