"""The generator file: format, round trips, official state dicts and clear errors."""

import dataclasses

import pytest
import torch

import stackgan_cli.text
from stackgan_cli.errors import StackGANError
from stackgan_cli.generator_file import GeneratorBundle, load_generator_file, save_generator_file
from stackgan_cli.models import (
    ModelConfig,
    Stage1Discriminator,
    Stage1Generator,
    Stage2Generator,
    build_generator,
)

TINY = dataclasses.replace(
    ModelConfig.preset("birds"), gf_dim=8, df_dim=4, z_dim=10, condition_dim=6, r_num=2, text_dim=20
)


def _inputs(batch: int = 2):
    gen = torch.Generator().manual_seed(0)
    text = torch.randn(batch, TINY.text_dim, generator=gen)
    noise = torch.randn(batch, TINY.z_dim, generator=gen)
    eps1 = torch.randn(batch, TINY.condition_dim, generator=gen)
    eps2 = torch.randn(batch, TINY.condition_dim, generator=gen)
    return text, noise, eps1, eps2


def _trained_like(stage: int) -> torch.nn.Module:
    """A generator whose BatchNorm running statistics differ from the defaults."""
    torch.manual_seed(stage)
    g = build_generator(stage, TINY)
    text, noise, *_ = _inputs(4)
    g(text, noise)  # one train-mode forward updates the running statistics
    return g.eval()


def _outputs(g, stage):
    text, noise, eps1, eps2 = _inputs()
    with torch.no_grad():
        return g(text, noise, eps=eps1 if stage == 1 else (eps1, eps2))


@pytest.mark.parametrize("stage", [1, 2])
def test_round_trip(tmp_path, stage):
    g = _trained_like(stage)
    path = tmp_path / f"s{stage}.pt"
    save_generator_file(path, g, TINY, family=f"v1-stage{stage}", dataset="shapes", epoch=3)

    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["format"] == "stackgan-generator" and raw["format_version"] == 1
    assert raw["stage"] == stage and raw["model_config"] == TINY.to_dict()
    assert raw["text_encoder"] is None and raw["dataset"] == "shapes" and raw["epoch"] == 3
    assert list(raw["generator"]) == list(g.state_dict())
    assert any(k.startswith("STAGE1_G.") for k in raw["generator"]) == (stage == 2)

    bundle = load_generator_file(path)
    assert isinstance(bundle, GeneratorBundle)
    assert (bundle.stage, bundle.cfg, bundle.dataset, bundle.epoch) == (stage, TINY, "shapes", 3)
    assert bundle.source == "stackgan" and bundle.path == path and bundle.text_encoder is None
    assert not bundle.generator.training
    for ours, theirs in zip(_outputs(g, stage), _outputs(bundle.generator, stage), strict=True):
        assert (ours is None and theirs is None) or torch.equal(ours, theirs)
    if stage == 2:
        assert not any(p.requires_grad for p in bundle.generator.STAGE1_G.parameters())


def test_official_state_dict_is_accepted(tmp_path):
    g = _trained_like(2)
    path = tmp_path / "netG_epoch_90.pth"
    state = {k: v for k, v in g.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, path)
    bundle = load_generator_file(path)
    assert bundle.source == "official" and bundle.stage == 2 and bundle.epoch == 90
    assert bundle.text_encoder is None and bundle.dataset is None
    assert bundle.cfg.gf_dim == TINY.gf_dim and bundle.cfg.r_num == TINY.r_num
    for ours, theirs in zip(_outputs(g, 2), _outputs(bundle.generator, 2), strict=True):
        assert torch.equal(ours, theirs)


def test_text_encoder_dict_is_stored_as_given_and_rebuilt(tmp_path, monkeypatch):
    class RecordingEncoder:
        @classmethod
        def from_dict(cls, data):
            encoder = cls()
            encoder.data = data
            return encoder

    monkeypatch.setattr(stackgan_cli.text, "TextEncoder", RecordingEncoder, raising=False)
    encoder_dict = {"kind": "test", "weight": torch.arange(6.0).view(2, 3), "vocab": ["a", "b"]}
    path = tmp_path / "g.pt"
    save_generator_file(
        path,
        _trained_like(1),
        TINY,
        family="v1-stage1",
        text_encoder=encoder_dict,
        dataset="cub",
        epoch=1,
    )
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert raw["text_encoder"]["vocab"] == ["a", "b"]
    bundle = load_generator_file(path)
    assert isinstance(bundle.text_encoder, RecordingEncoder)
    assert torch.equal(bundle.text_encoder.data["weight"], encoder_dict["weight"])


def test_real_text_encoder_round_trip(tmp_path):
    if not hasattr(stackgan_cli.text, "TextEncoder"):
        pytest.skip("stackgan_cli.text has no TextEncoder yet")
    from stackgan_cli.text import train_text_encoder

    # The prepared-split layout: 10 captions and 10 embeddings per image.
    gen = torch.Generator().manual_seed(0)
    colours, parts = ("red", "blue", "green", "yellow"), ("wings", "beak", "tail", "head", "belly")
    captions = [
        [f"a {c} bird with a {size} {p}" for p in parts for size in ("small", "large")]
        for c in colours
    ]
    embeddings = torch.randn(len(colours), 10, TINY.text_dim, generator=gen).numpy()
    encoder, _ = train_text_encoder(
        captions, embeddings, captions, embeddings, epochs=1, progress=False
    )
    path = tmp_path / "g.pt"
    save_generator_file(
        path, _trained_like(1), TINY, family="v1-stage1", text_encoder=encoder, dataset="x", epoch=0
    )
    bundle = load_generator_file(path)
    prompt = ["a red bird"]
    assert torch.equal(bundle.text_encoder.encode(prompt), encoder.encode(prompt))


def test_save_checks_its_arguments(tmp_path):
    g1 = Stage1Generator(TINY)
    with pytest.raises(ValueError, match="Stage2Generator"):
        save_generator_file(
            tmp_path / "x.pt", g1, TINY, family="v1-stage2", dataset=None, epoch=None
        )
    with pytest.raises(ValueError, match="built with"):
        other = dataclasses.replace(TINY, z_dim=11)
        save_generator_file(
            tmp_path / "x.pt", g1, other, family="v1-stage1", dataset=None, epoch=None
        )
    assert not (tmp_path / "x.pt").exists()


def test_load_errors(tmp_path):
    with pytest.raises(StackGANError, match="does not exist"):
        load_generator_file(tmp_path / "missing.pt")

    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(StackGANError, match="notes.txt"):
        load_generator_file(text)

    good = tmp_path / "good.pt"
    save_generator_file(
        good, Stage2Generator(TINY), TINY, family="v1-stage2", dataset=None, epoch=None
    )
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[:1000])
    with pytest.raises(StackGANError, match="truncated or corrupt"):
        load_generator_file(truncated)

    payload = torch.load(good, weights_only=True)
    future = tmp_path / "future.pt"
    torch.save({**payload, "format_version": 3}, future)  # 2 holds StackGAN-v2 generators
    with pytest.raises(StackGANError, match="format version 3"):
        load_generator_file(future)

    mismatched = tmp_path / "mismatched.pt"
    torch.save({**payload, "model_config": {**TINY.to_dict(), "gf_dim": 16}}, mismatched)
    with pytest.raises(StackGANError, match="do not match"):
        load_generator_file(mismatched)

    netd = tmp_path / "netD_epoch_last.pth"
    torch.save(Stage1Discriminator(TINY).state_dict(), netd)
    with pytest.raises(StackGANError, match="is a discriminator, not a generator"):
        load_generator_file(netd)

    for name, obj in [("dict", {"a": 1}), ("list", [1, 2]), ("tensors", {"w": torch.zeros(2)})]:
        other = tmp_path / f"{name}.pt"
        torch.save(obj, other)
        with pytest.raises(StackGANError, match="not a StackGAN generator|neither"):
            load_generator_file(other)

    foreign = tmp_path / "foreign.pt"
    torch.save({"format": "something-else", "format_version": 1}, foreign)
    with pytest.raises(StackGANError, match="not a StackGAN generator file"):
        load_generator_file(foreign)


def test_loading_a_generator_file_imports_no_compiler(tmp_path):
    """A generator is built on the meta device to receive its weights; drawing an official
    initialisation there imports torch._dynamo, about 1.7 s of every `stackgan generate`."""
    import subprocess
    import sys

    path = tmp_path / "s2.pt"
    save_generator_file(path, Stage2Generator(TINY), TINY, dataset=None, epoch=None)
    code = (
        "import sys\n"
        "from stackgan_cli.generator_file import load_generator_file\n"
        f"load_generator_file({str(path)!r})\n"
        "print('dynamo' if 'torch._dynamo' in sys.modules else 'no dynamo')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "no dynamo"
