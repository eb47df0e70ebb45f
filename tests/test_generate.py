"""``stackgan generate`` end to end on tiny random generators: files, grid, seeds, errors."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from typer.testing import CliRunner

from stackgan_cli import paths
from stackgan_cli.cli import app
from stackgan_cli.errors import StackGANError
from stackgan_cli.generate import default_out_dir, image_name
from stackgan_cli.generator_file import newest_generator, save_generator_file
from stackgan_cli.models import ModelConfig, Stage1Generator, Stage2Generator
from stackgan_cli.text import train_text_encoder

TINY = ModelConfig(gf_dim=8, df_dim=8, z_dim=8, condition_dim=4, r_num=1, text_dim=16)
CAPTIONS = [
    f"a {colour} {shape} on a plain background"
    for colour in ("red", "blue", "green", "yellow")
    for shape in ("circle", "square", "triangle")
]


def _lively(generator: nn.Module) -> nn.Module:
    """Weights scaled to keep unit variance through the layers, so that random generators in
    eval mode draw visibly different images for different inputs (the official N(0, 0.02)
    init gives flat grey)."""
    torch.manual_seed(1)
    with torch.no_grad():
        for module in generator.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                fan_in = module.weight[0].numel()
                module.weight.normal_(0.0, 1.5 / fan_in**0.5)
    return generator.eval()


@pytest.fixture(scope="module")
def text_encoder():
    """A tiny text encoder: two captions per "image", briefly trained."""
    generator = torch.Generator().manual_seed(0)
    captions = [CAPTIONS[i : i + 2] for i in range(0, len(CAPTIONS), 2)]
    embeddings = torch.randn(len(captions), 2, TINY.text_dim, generator=generator)
    encoder, _ = train_text_encoder(
        captions[:4], embeddings[:4], captions[4:], embeddings[4:], seed=0, epochs=1, progress=False
    )
    return encoder


@pytest.fixture(scope="module")
def files(tmp_path_factory, text_encoder):
    """Tiny generator files: Stage I and II with a text encoder, and an official state dict."""
    root = tmp_path_factory.mktemp("generators")
    torch.manual_seed(0)
    stage1 = _lively(Stage1Generator(TINY))
    stage2 = _lively(Stage2Generator(TINY))
    save_generator_file(
        root / "s1.pt",
        stage1,
        TINY,
        family="v1-stage1",
        text_encoder=text_encoder,
        dataset="shapes",
        epoch=2,
    )
    save_generator_file(
        root / "s2.pt",
        stage2,
        TINY,
        family="v1-stage2",
        text_encoder=text_encoder,
        dataset="shapes",
        epoch=2,
    )
    torch.save(stage1.state_dict(), root / "netG_epoch_5.pth")
    np.save(root / "emb.npy", np.random.default_rng(0).standard_normal((3, 16), dtype=np.float32))
    return root


def _run(*args: str):
    return CliRunner().invoke(app, ["generate", *map(str, args)])


def _ok(*args: str):
    result = _run(*args)
    assert result.exit_code == 0, result.output
    return result


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))


def _one_error_line(result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def _usage_error(result) -> str:
    """The message of a usage error (exit code 2), with rich's box and line wrapping undone."""
    assert result.exit_code == 2, result.output
    message = " ".join(result.stderr.replace("│", " ").split())
    assert "No such option" not in message  # a misspelt option exits with 2 as well
    return message


def test_grid_and_one_file_per_image(files, tmp_path):
    out = tmp_path / "out"
    result = _ok("a red circle", "a blue square", "-n", 3, "--ckpt", files / "s1.pt", "--out", out)
    names = sorted(p.name for p in out.iterdir())
    assert names == ["00_00.png", "00_01.png", "00_02.png"] + [
        "01_00.png",
        "01_01.png",
        "01_02.png",
        "grid.png",
    ]
    assert _pixels(out / "01_02.png").shape == (64, 64, 3)
    grid = _pixels(out / "grid.png")
    assert grid.shape[1] == 3 * 64 + 4 * 2  # three images and four 2-pixel pads
    assert grid.shape[0] > 2 * 64 + 2 * 12  # two rows, each with a caption band
    assert str(out / "grid.png") in result.stdout.replace("\n", "")
    # Images of the grid are the single files.
    assert np.array_equal(grid[2:66, 2:66], _pixels(out / "00_00.png"))


def test_image_names_are_zero_padded():
    assert image_name(0, 3, 2, 8) == "00_03.png"
    assert image_name(12, 7, 13, 200) == "12_007.png"
    assert image_name(1, 0, 2, 2, "_stage1") == "01_00_stage1.png"


def test_seed_reproduces_and_columns_share_noise(files, tmp_path):
    common = ("-n", 2, "--ckpt", files / "s1.pt", "--seed", 7)
    _ok("a red circle", "a blue square", *common, "--out", tmp_path / "a")
    _ok("a red circle", "a blue square", *common, "--out", tmp_path / "b")
    _ok("a blue square", *common, "--out", tmp_path / "c")
    _ok("a blue square", "-n", 2, "--ckpt", files / "s1.pt", "--seed", 8, "--out", tmp_path / "d")
    for name in ("00_00.png", "01_01.png", "grid.png"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    # An image depends on its prompt, seed and sample index only, not on the other prompts.
    assert np.array_equal(
        _pixels(tmp_path / "a" / "01_01.png"), _pixels(tmp_path / "c" / "00_01.png")
    )
    assert not np.array_equal(
        _pixels(tmp_path / "c" / "00_00.png"), _pixels(tmp_path / "d" / "00_00.png")
    )
    assert not np.array_equal(
        _pixels(tmp_path / "a" / "00_00.png"), _pixels(tmp_path / "a" / "00_01.png")
    )
    assert not np.array_equal(
        _pixels(tmp_path / "a" / "00_00.png"), _pixels(tmp_path / "a" / "01_00.png")
    )


def test_without_seed_the_seed_is_printed(files, tmp_path):
    result = _ok("a red circle", "-n", 1, "--ckpt", files / "s1.pt", "--out", tmp_path)
    assert "--seed" in result.stderr


@pytest.mark.parametrize("n", ["0", "257", "-1"])
def test_sample_count_out_of_range_is_a_usage_error(files, tmp_path, n):
    result = _run("a red circle", "-n", n, "--ckpt", files / "s1.pt", "--out", tmp_path)
    message = _usage_error(result)
    assert "Invalid value for '-n' / '--num-samples'" in message
    assert not list(tmp_path.iterdir())


def test_empty_prompt_is_one_line_error(files, tmp_path):
    result = _run("a red circle", "   ", "--ckpt", files / "s1.pt", "--out", tmp_path / "o")
    assert result.exit_code == 1
    assert "empty" in _one_error_line(result)
    assert not (tmp_path / "o").exists()


def test_long_prompt_is_truncated_with_warning(files, tmp_path):
    prompt = "a red circle with " + "very " * 200 + "round edges"
    result = _ok(prompt, "-n", 1, "--ckpt", files / "s1.pt", "--out", tmp_path)
    assert "warning" in result.stderr
    assert (tmp_path / "grid.png").is_file()


def test_no_prompt_is_a_usage_error(files):
    assert "give at least one prompt" in _usage_error(_run("--ckpt", files / "s1.pt"))


def test_missing_ckpt_is_one_line_error(tmp_path):
    missing = tmp_path / "nope.pt"
    result = _run("a red circle", "--ckpt", missing, "--out", tmp_path / "o")
    assert result.exit_code == 1
    assert "nope.pt" in _one_error_line(result)


def test_newest_generator_in_the_runs_is_used(files, tmp_path):
    with pytest.raises(StackGANError, match="stackgan train"):
        newest_generator()
    result = _run("a red circle", "--out", tmp_path / "o")
    assert result.exit_code == 1
    assert "stackgan train" in _one_error_line(result)

    runs = paths.runs_dir()
    for age, name in ((100, "old"), (10, "new"), (50, "middle")):
        target = runs / name / "generator.pt"
        target.parent.mkdir(parents=True)
        target.write_bytes((files / "s1.pt").read_bytes())
        os.utime(target, (target.stat().st_atime, target.stat().st_mtime - age))
    assert newest_generator() == runs / "new" / "generator.pt"
    result = _ok("a red circle", "-n", 1, "--out", tmp_path / "o")
    assert str(runs / "new" / "generator.pt") in result.stderr.replace("\n", "")


def test_default_out_dir_is_a_new_timestamped_folder(files, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _ok("a red circle", "-n", 1, "--ckpt", files / "s1.pt")
    (folder,) = (tmp_path / "samples").iterdir()
    assert (folder / "grid.png").is_file()
    assert default_out_dir(tmp_path) != folder  # a second run would not overwrite it
    assert default_out_dir(tmp_path).parent == tmp_path / "samples"


def test_official_state_dict_with_embedding_file(files, tmp_path):
    official = files / "netG_epoch_5.pth"
    result = _run("a red circle", "--ckpt", official, "--out", tmp_path / "x")
    assert result.exit_code == 1
    assert "--embedding-file" in _one_error_line(result)

    out = tmp_path / "rows"
    _ok("--ckpt", official, "--embedding-file", files / "emb.npy", "-n", 2, "--out", out)
    assert sorted(p.name for p in out.glob("??_??.png")) == [
        f"{p:02d}_{k:02d}.png" for p in range(3) for k in range(2)
    ]
    captioned = tmp_path / "captioned"
    _ok("one", "two", "three", "--ckpt", official, "--embedding-file", files / "emb.npy",
        "-n", 1, "--out", captioned, "--seed", 3)  # fmt: skip
    assert (captioned / "grid.png").is_file()

    mismatch = _run("one", "two", "--ckpt", official, "--embedding-file", files / "emb.npy")
    assert mismatch.exit_code == 1
    assert "3 embedding" in _one_error_line(mismatch)
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((2, 5), dtype=np.float32))
    wrong_dim = _run("--ckpt", official, "--embedding-file", bad)
    assert wrong_dim.exit_code == 1
    assert "(P, 16)" in _one_error_line(wrong_dim)


def test_single_embedding_vector(files, tmp_path):
    vector = tmp_path / "one.npy"
    np.save(vector, np.ones(16, dtype=np.float32))
    _ok("--ckpt", files / "s1.pt", "--embedding-file", vector, "-n", 2, "--out", tmp_path / "o")
    assert (tmp_path / "o" / "00_01.png").is_file()


def test_stage2_file_stages(files, tmp_path):
    common = ("a red circle", "-n", 2, "--ckpt", files / "s2.pt", "--seed", 1)
    _ok(*common, "--out", tmp_path / "full")
    assert _pixels(tmp_path / "full" / "00_00.png").shape == (256, 256, 3)

    _ok(*common, "--stage", 1, "--out", tmp_path / "sketch")
    assert _pixels(tmp_path / "sketch" / "00_00.png").shape == (64, 64, 3)
    assert _pixels(tmp_path / "sketch" / "grid.png").shape[1] == 2 * 64 + 3 * 2

    _ok(*common, "--show-stages", "--out", tmp_path / "both")
    both = tmp_path / "both"
    assert sorted(p.name for p in both.iterdir()) == [
        "00_00.png",
        "00_00_stage1.png",
        "00_01.png",
        "00_01_stage1.png",
        "grid.png",
    ]
    # The sketches shown are the ones --stage 1 gives, and the results the plain run's.
    sketch = _pixels(both / "00_01_stage1.png")
    assert np.array_equal(sketch, _pixels(tmp_path / "sketch" / "00_01.png"))
    assert np.array_equal(_pixels(both / "00_01.png"), _pixels(tmp_path / "full" / "00_01.png"))
    grid = _pixels(both / "grid.png")
    assert grid.shape[1] == 4 * 256 + 5 * 2  # sketch, result, sketch, result
    enlarged = grid[2 : 2 + 256, 2 : 2 + 256]
    assert np.array_equal(enlarged[::4, ::4], _pixels(both / "00_00_stage1.png"))


def test_stage_options_that_do_not_fit_the_file(files, tmp_path):
    result = _run("a red circle", "--ckpt", files / "s1.pt", "--stage", 2, "--out", tmp_path)
    assert result.exit_code == 1
    assert "Stage-I" in _one_error_line(result)
    result = _run("a red circle", "--ckpt", files / "s1.pt", "--show-stages", "--out", tmp_path)
    assert result.exit_code == 1
    assert "--show-stages" in _one_error_line(result)
    message = _usage_error(_run("x", "--ckpt", files / "s2.pt", "--stage", 1, "--show-stages"))
    assert "--show-stages" in message and "--stage 1" in message
    message = _usage_error(_run("x", "--ckpt", files / "s2.pt", "--stage", 3))
    assert "Invalid value for '--stage'" in message


def test_interpolation_strip(files, tmp_path):
    out = tmp_path / "interp"
    _ok("--interpolate", "a red circle", "a blue circle", "--steps", 5, "-n", 3,
        "--ckpt", files / "s1.pt", "--seed", 2, "--out", out)  # fmt: skip
    assert sorted(p.name for p in out.iterdir()) == ["interpolation.png"]
    strip = _pixels(out / "interpolation.png")
    assert strip.shape[1] == 5 * 64 + 6 * 2
    assert strip.shape[0] > 3 * 64 + 4 * 2  # three strips, then labels and caption
    # The ends of a strip are the two prompts' own images for the same sample.
    _ok("a red circle", "a blue circle", "-n", 3, "--ckpt", files / "s1.pt", "--seed", 2,
        "--out", tmp_path / "ends")  # fmt: skip
    row1 = slice(2 + 66, 2 + 66 + 64)
    assert np.array_equal(strip[row1, 2:66], _pixels(tmp_path / "ends" / "00_01.png"))
    last = 2 + 4 * 66
    assert np.array_equal(strip[row1, last : last + 64], _pixels(tmp_path / "ends" / "01_01.png"))
    # Middle frames differ from both ends.
    assert not np.array_equal(strip[row1, 2 + 2 * 66 : 2 + 2 * 66 + 64], strip[row1, 2:66])


def test_interpolation_between_embedding_rows(files, tmp_path):
    out = tmp_path / "rows"
    _ok("--ckpt", files / "netG_epoch_5.pth", "--embedding-file", files / "emb.npy",
        "--interpolate", "0", "2", "--steps", 3, "-n", 2, "--out", out)  # fmt: skip
    assert (out / "interpolation.png").is_file()
    assert (out / "grid.png").is_file()
    result = _run("--ckpt", files / "netG_epoch_5.pth", "--embedding-file", files / "emb.npy",
                  "--interpolate", "0", "9")  # fmt: skip
    assert result.exit_code == 1
    assert "--interpolate: row 9 is past the embedding file's 3 rows" in _one_error_line(result)
    result = _run("x", "--interpolate", "a", "b", "--steps", 1, "--ckpt", files / "s1.pt")
    assert "Invalid value for '--steps'" in _usage_error(result)


def test_out_that_cannot_be_a_folder_is_one_line_error(files, tmp_path):
    afile = tmp_path / "taken.png"
    afile.write_bytes(b"not a folder")
    for out in (afile, afile / "below"):
        result = _run("a red circle", "-n", 1, "--ckpt", files / "s1.pt", "--out", out)
        assert result.exit_code == 1, result.output
        assert isinstance(result.exception, SystemExit), result.exception  # not a crash
        line = " ".join(_one_error_line(result).split())
        assert "--out" in line and str(out) in line and "not a folder" in line
        assert afile.read_bytes() == b"not a folder"
    link = tmp_path / "dangling"
    link.symlink_to(tmp_path / "nowhere")
    result = _run("a red circle", "-n", 1, "--ckpt", files / "s1.pt", "--out", link)
    assert result.exit_code == 1 and "--out" in _one_error_line(result)


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_out_in_an_unwritable_folder_is_one_line_error(files, tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o500)
    result = _run("a red circle", "-n", 1, "--ckpt", files / "s1.pt", "--out", locked / "o")
    assert result.exit_code == 1, result.output
    line = _one_error_line(result)
    assert "--out" in line and "not writable" in line
