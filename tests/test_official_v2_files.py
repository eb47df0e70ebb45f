"""Official StackGAN-v2 ``netG_<iteration>.pth`` files wherever a generator file is accepted.

The files are built here as the released ones are: a tiny StackGANv2Generator's state dict with
the DataParallel ``module.`` prefix, no ``num_batches_tracked``, in the legacy (non-zip) torch
serialization. Their text encoder comes from the session's prepared shapes dataset.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from stackgan_cli.cli import app
from stackgan_cli.data.prepared import load_prepared
from stackgan_cli.errors import StackGANError
from stackgan_cli.generator_file import load_generator_file, save_generator_file
from stackgan_cli.models import ModelConfig, Stage1Generator
from stackgan_cli.models.discriminator_v2 import StackGANv2Discriminator
from stackgan_cli.models.generator_v2 import StackGANv2Generator

TINY_V2 = ModelConfig(
    gf_dim=4, df_dim=4, z_dim=10, condition_dim=8, r_num=1, text_dim=1024, branch_num=3
)
TINY_V1 = ModelConfig(gf_dim=8, df_dim=8, z_dim=10, condition_dim=8, r_num=1, text_dim=1024)


def _official(module: nn.Module, path: Path) -> Path:
    """Save ``module`` as the official code did: DataParallel keys, pre-0.4 BatchNorm, legacy
    serialization."""
    state = {
        f"module.{key}": value
        for key, value in module.state_dict().items()
        if not key.endswith("num_batches_tracked")
    }
    torch.save(state, path, _use_new_zipfile_serialization=False)
    return path


def _lively(module: nn.Module, seed: int = 0) -> nn.Module:
    """Kaiming weights, so that tiny generators make images that vary with the noise."""
    torch.manual_seed(seed)
    for layer in module.modules():
        if isinstance(layer, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(layer.weight)
    return module.eval()


@pytest.fixture(scope="module")
def made_files(tmp_path_factory, prepared_shapes_root) -> dict[str, Path]:
    """Official v2 / v1 / discriminator files, a truncated one and our generator files (made
    once: no test changes them)."""
    root = tmp_path_factory.mktemp("files")
    torch.manual_seed(0)
    v2 = _lively(StackGANv2Generator(TINY_V2))
    netG = _official(v2, root / "netG_1200.pth")
    data = netG.read_bytes()
    (root / "netG_1300.pth").write_bytes(data[: len(data) // 2])
    encoder = load_prepared(prepared_shapes_root / "datasets" / "shapes").text_encoder_dict()
    narrow = ModelConfig(**{**TINY_V2.to_dict(), "text_dim": 16})
    save_generator_file(
        root / "narrow.pt", StackGANv2Generator(narrow), narrow, family="v2", dataset=None, epoch=1
    )
    save_generator_file(
        root / "v2.pt", v2, TINY_V2, family="v2", text_encoder=encoder, dataset="shapes", epoch=1
    )
    return {
        "v2": netG,
        "truncated": root / "netG_1300.pth",
        "netD": _official(StackGANv2Discriminator(TINY_V2, 64), root / "netD0.pth"),
        "v1": _official(_lively(Stage1Generator(TINY_V1)), root / "netG_epoch_3.pth"),
        "ours": root / "v2.pt",
        "narrow": root / "narrow.pt",
    }


@pytest.fixture
def files(made_files, shapes_dataset) -> dict[str, Path]:
    """The files, with the shapes dataset prepared in this test's cache."""
    return made_files


def _run(*args):
    return CliRunner().invoke(app, [str(arg) for arg in args])


def _ok(*args):
    result = _run(*args)
    assert result.exit_code == 0, result.output
    return result


def _one_line_error(result) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def _side(path: Path) -> tuple[int, int]:
    with Image.open(path) as image:
        return image.size


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def test_load_official_v2_file(files):
    bundle = load_generator_file(files["v2"])
    assert (bundle.arch, bundle.stage, bundle.source) == ("v2", None, "official")
    assert bundle.cfg == ModelConfig(**{**TINY_V2.to_dict(), "df_dim": TINY_V2.gf_dim})
    assert bundle.iteration == 1200 and bundle.epoch is None and bundle.text_encoder is None


def test_generate_with_a_dataset_text_encoder(files, tmp_path):
    out = tmp_path / "a"
    args = ["generate", "a red circle", "--ckpt", files["v2"], "-n", 2, "--seed", 3]
    result = _ok(*args, "--text-encoder", "shapes", "--out", out, "--device", "cpu")
    assert "iteration 1200" in result.stderr
    assert _side(out / "00_00.png") == (256, 256)
    _ok(*args, "--text-encoder", "shapes", "--out", tmp_path / "b", "--device", "cpu")
    # Our generator file bundles the same encoder: the same images, seed for seed.
    _ok(*args, "--text-encoder", files["ours"], "--out", tmp_path / "c", "--device", "cpu")
    for name in ("00_00.png", "00_01.png"):
        assert np.array_equal(_pixels(out / name), _pixels(tmp_path / "b" / name))
        assert np.array_equal(_pixels(out / name), _pixels(tmp_path / "c" / name))
    assert not np.array_equal(_pixels(out / "00_00.png"), _pixels(out / "00_01.png"))

    small = tmp_path / "small"
    _ok(*args, "--text-encoder", "shapes", "--size", 128, "--out", small, "--device", "cpu")
    assert _side(small / "00_00.png") == (128, 128)


def test_generate_needs_a_text_encoder(files, tmp_path):
    result = _run("generate", "a red circle", "--ckpt", files["v2"], "--out", tmp_path / "o")
    message = _one_line_error(result)
    assert "--text-encoder cub" in message and "--embedding-file" in message


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("narrow", "carries no text encoder"),
        ("netD", "neither a stackgan generator file nor a text encoder"),
        ("nowhere", "not a prepared dataset"),
    ],
)
def test_bad_text_encoder_sources(files, tmp_path, source, expected):
    where = files.get(source, source)
    result = _run(
        "generate", "a red circle", "--ckpt", files["v2"], "--text-encoder", where,
        "--out", tmp_path / "o",
    )  # fmt: skip
    assert expected in _one_line_error(result)


def test_text_encoder_width_must_match(files, tmp_path):
    result = _run(
        "generate", "a red circle", "--ckpt", files["narrow"], "--text-encoder", "shapes",
        "--out", tmp_path / "o",
    )  # fmt: skip
    assert "gives 1024-d embeddings" in _one_line_error(result)


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["generate", "x", "--ckpt", "{netD}"], "is a discriminator, not a generator"),
        (["generate", "x", "--ckpt", "{truncated}"], "truncated or corrupt"),
        (["evaluate", "--ckpt", "{truncated}"], "truncated or corrupt"),
        (["generate", "x", "--ckpt", "{v1}", "--size", "128"], "StackGAN-v1 Stage-I generator"),
        (["evaluate", "--ckpt", "{v1}", "--size", "128", "--dataset", "shapes"], "64 px"),
        (["evaluate", "--ckpt", "{netD}"], "is a discriminator"),
        (
            ["train", "--stage", "2", "--stage1-ckpt", "{v2}", "--dataset", "shapes"],
            "needs a StackGAN-v1 Stage-I one",
        ),
    ],
)
def test_wrong_files_fail_in_one_line(files, tmp_path, args, expected):
    args = [arg.format(**files) for arg in args]
    if args[0] == "generate":
        args += ["--out", str(tmp_path / "o")]
    if args[0] == "train":
        args += ["--run-dir", str(tmp_path / "run"), "--device", "cpu"]
    result = _run(*args)
    assert expected in _one_line_error(result)


def test_serve_loads_an_official_file_with_a_text_encoder(files):
    pytest.importorskip("fastapi")
    from stackgan_cli.serve.generation import LoadedGenerator

    with pytest.raises(StackGANError, match="--text-encoder cub"):
        LoadedGenerator.load(files["v2"], "cpu")
    with pytest.raises(StackGANError, match="is a discriminator"):
        LoadedGenerator.load(files["netD"], "cpu", text_encoder="shapes")
    model = LoadedGenerator.load(files["v2"], "cpu", text_encoder="shapes")
    assert model.sizes == (64, 128, 256)
    assert model.generate(["a red circle"], n=1, seed=0, size=128).images.shape[-1] == 128


class _SizeRecorder(nn.Module):
    """A stand-in for Inception-v3 (whose CPU cost would dominate this file): fixed random
    projections of the images, the side of every batch recorded. The real network is covered
    by test_evaluate.py."""

    def __init__(self) -> None:
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        self.logits = torch.randn(3 * 8 * 8, 1008, generator=generator) * 0.01
        self.pool = torch.randn(3 * 8 * 8, 2048, generator=generator)
        self.sides: list[int] = []

    def forward(self, images):
        self.sides.append(images.shape[-1])
        small = nn.functional.adaptive_avg_pool2d(images.float() / 255, 8).flatten(1)
        return small @ self.logits, small @ self.pool


@pytest.fixture
def recorder(monkeypatch, tmp_path) -> _SizeRecorder:
    from stackgan_cli.evaluation import runner
    from stackgan_cli.evaluation.inception import InceptionNet

    net = _SizeRecorder()
    loaded = InceptionNet(net, torch.device("cpu"), tmp_path / "w.pth", "0" * 64, "test")
    monkeypatch.setattr(runner, "load_inception", lambda *args, **kwargs: loaded)
    return net


@pytest.mark.parametrize(("size", "stored"), [(128, 304), (64, 76), (None, 304)])
def test_evaluate_an_official_v2_file_at_a_size(files, tmp_path, recorder, size, stored):
    import json

    report = tmp_path / "r.json"
    _ok(
        "evaluate", "--ckpt", files["v2"], "--dataset", "shapes", "--num-samples", 6,
        "--splits", 1, "--batch-size", 4, "--device", "cpu", "--out", report, "--no-diversity",
        *(["--size", size] if size else []),
    )  # fmt: skip
    data = json.loads(report.read_text())
    side = size or 256
    assert set(recorder.sides) == {side}  # generated, diversity and real batches alike
    assert data["protocol"]["resolution"] == side
    assert data["checkpoint"]["arch"] == "v2" and data["checkpoint"]["iteration"] == 1200
    assert f"prepared at {stored}x{stored}" in data["protocol"]["real_images"]
    assert ("resized to 128x128" in data["protocol"]["real_images"]) == (side == 128)
    for metric in ("fid", "inception_score"):
        assert np.isfinite(data["metrics"][metric]["value"])


def test_default_reports_of_two_sizes_are_kept_apart(files, recorder, tmp_path):
    import json
    import shutil

    ckpt = tmp_path / files["v2"].name  # the reports go beside it
    shutil.copy(files["v2"], ckpt)
    common = ["--dataset", "shapes", "--num-samples", 6, "--splits", 1, "--batch-size", 4,
              "--device", "cpu", "--no-diversity"]  # fmt: skip
    _ok("evaluate", "--ckpt", ckpt, *common, "--size", 128)
    _ok("evaluate", "--ckpt", ckpt, *common)
    small = ckpt.with_name(f"{ckpt.stem}.128px.eval.json")
    largest = ckpt.with_name(f"{ckpt.stem}.eval.json")
    assert json.loads(small.read_text())["protocol"]["resolution"] == 128
    assert json.loads(largest.read_text())["protocol"]["resolution"] == 256
    assert json.loads(largest.read_text())["checkpoint"]["output_sizes"] == [64, 128, 256]


def test_evaluate_size_options(files, tmp_path, shapes_dataset):
    result = _run("evaluate", "--real", "--dataset", "shapes", "--size", 128)
    assert result.exit_code == 2 and "--resolution" in result.stderr
    result = _run("evaluate", "--ckpt", files["v2"], "--dataset", "shapes", "--size", 96)
    assert result.exit_code == 2


def test_real_images_at_128_are_the_256_crop_shrunk(shapes_dataset):
    from stackgan_cli.evaluation.real_stats import real_image_batches, stored_size

    images = load_prepared("shapes").split("test").images(stored_size(128))
    indices = np.arange(3)
    (small,) = real_image_batches(images, 128, indices, batch_size=8)
    (large,) = real_image_batches(images, 256, indices, batch_size=8)
    assert small.shape == (3, 3, 128, 128) and small.dtype == torch.uint8
    expected = nn.functional.interpolate(
        large.float(), size=(128, 128), mode="bilinear", antialias=True
    )
    assert (small.float() - expected).abs().max() <= 0.5 + 1e-4
