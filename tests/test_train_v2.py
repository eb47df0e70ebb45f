"""`stackgan train --arch v2`: the StackGAN-v2 tree through the shared training core."""

import json

import numpy as np
import pytest
import torch
from PIL import Image
from training_helpers import assert_same_state, load, run_cli, v2_args

from stackgan_cli.generator_file import load_generator_file


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One 2-epoch, 3-branch run on the tiny dataset (shared by the tests of this module)."""
    from training_helpers import write_tiny_prepared

    home = tmp_path_factory.mktemp("v2home")
    patch = pytest.MonkeyPatch()
    patch.setenv("STACKGAN_HOME", str(home))
    try:
        from stackgan_cli import paths

        write_tiny_prepared(paths.prepared_dir("tiny"))
        run = home / "run"
        out = home / "g.pt"
        result = run_cli(v2_args(run, "--out", str(out), "--sample-every", "1"))
        (home / "output.txt").write_text(" ".join(result.output.split()))
        yield run, out
    finally:
        patch.undo()


@pytest.mark.slow
def test_v2_trains_every_branch(trained):
    run, out = trained
    records = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert records and records[-1]["step"] == 4  # 16 images / batch 8 x 2 epochs
    for record in records:
        for i in range(3):
            for part in ("real", "wrong", "fake", "uncond_real", "uncond_wrong", "uncond_fake"):
                assert torch.isfinite(torch.tensor(record[f"D{i}_{part}"]))
        assert all(torch.isfinite(torch.tensor(record[k])) for k in ("errD", "errG", "kl"))
    for name in ("generator.pt", "losses.png", "config.json", "checkpoints/last.pt"):
        assert (run / name).is_file(), name
    assert out.is_file()
    # 4 steps leave the 0.999 average almost all initial weights: the run says so.
    output = (run.parent / "output.txt").read_text()
    assert "moving average (--ema 0.999) still holds 100% of its initial random weights" in output
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["arch"] == "v2" and config["train"]["stage"] is None
    assert config["train"]["branches"] == 3 and config["train"]["ema"] == 0.999
    assert config["model"]["branch_num"] == 3 and config["model"]["gf_dim"] == 4

    state = load(run / "checkpoints/last.pt")
    assert len(state["discriminators"]) == 3 and len(state["optimizers_d"]) == 3
    average = state["generator_average"]
    assert average is not None and set(average) <= set(state["generator"])
    # The average is kept beside the trained weights, and generator files hold the average.
    name = "h_net1.fc.0.weight"
    assert not torch.equal(average[name], state["generator"][name])
    saved = torch.load(run / "generator.pt", weights_only=True)
    assert saved["arch"] == "v2" and saved["format_version"] == 2
    assert torch.equal(saved["generator"][name], average[name])

    # Two sample grids; each row holds every branch of a sample side by side, the 64 and 128
    # px images enlarged to 256: 3 x 8 images of 256 px across.
    grid = Image.open(run / "samples/epoch_0002.png")
    assert grid.width >= 3 * 8 * 256
    assert (run / "samples/epoch_0001.png").is_file()


def generate_v2(ckpt, embeddings, dest, *extra):
    """``stackgan generate`` from ``ckpt`` for the rows of ``embeddings`` (saved as .npy)."""
    emb = dest.with_suffix(".npy")
    np.save(emb, embeddings.astype(np.float32))
    args = ["--ckpt", str(ckpt), "--embedding-file", str(emb), "--out", str(dest)]
    run_cli(["generate", *args, *extra, "--device", "cpu"])


@pytest.mark.parametrize("size", [64, 128, 256])
def test_generate_from_a_v2_file_at_each_size(trained, tmp_path, size):
    _, out = trained
    bundle = load_generator_file(out)
    assert bundle.arch == "v2" and bundle.stage is None and bundle.cfg.branch_num == 3
    dest = tmp_path / "out"
    embeddings = np.random.default_rng(0).standard_normal((2, 16))
    generate_v2(out, embeddings, dest, "-n", "2", "--size", str(size))
    image = Image.open(dest / "00_00.png")
    assert image.size == (size, size)


def test_generate_v2_show_stages(trained, tmp_path):
    _, out = trained
    dest = tmp_path / "out"
    generate_v2(out, np.zeros((1, 16)), dest, "-n", "1", "--show-stages")
    assert Image.open(dest / "00_00.png").size == (256, 256)
    assert Image.open(dest / "00_00_64.png").size == (64, 64)
    assert Image.open(dest / "00_00_128.png").size == (128, 128)


@pytest.mark.slow
def test_v2_resume_is_bit_identical(tiny_dataset, tmp_path):
    straight, halves = tmp_path / "straight", tmp_path / "halves"
    run_cli(v2_args(straight, "--branches", "2", epochs=2))
    run_cli(v2_args(halves, "--branches", "2", epochs=1))
    run_cli(["resume", str(halves), "--epochs", "2"])
    a, b = load(straight / "checkpoints/last.pt"), load(halves / "checkpoints/last.pt")
    assert_same_state(a, b)
    assert len(a["discriminators"]) == 2
    for key, value in a["generator_average"].items():
        assert torch.equal(value, b["generator_average"][key]), key


@pytest.mark.parametrize(
    ("extra", "option"),
    [
        (["--arch", "v2", "--stage", "1"], "--stage"),
        (["--arch", "v1", "--stage", "1", "--branches", "2"], "--branches"),
        (["--arch", "v1"], "--stage"),
        ([], "--stage"),
    ],
)
def test_usage_errors(tiny_dataset, tmp_path, extra, option):
    args = ["train", "--dataset", "tiny", "--run-dir", str(tmp_path / "r"), *extra]
    result = run_cli(args, code=2)
    assert option in result.output


def test_wrong_sampler_draws_other_classes_and_resumes():
    from stackgan_cli.data.wrong_sampler import WrongImageSampler

    # Image k is the constant 10 k, so a wrong image tells which image it is.
    images = (torch.arange(12) * 10).to(torch.uint8)[:, None, None, None].expand(12, 76, 76, 3)
    classes = torch.arange(12) % 3
    embeddings = torch.randn(12, 10, 5)
    kwargs = dict(image_size=64, batch_size=4, device="cpu", seed=3)
    a = WrongImageSampler(images, embeddings, classes, **kwargs)
    batches = [a.next_batch() for _ in range(4)]
    state = a.state_dict()
    more = [a.next_batch() for _ in range(2)]
    b = WrongImageSampler(images, embeddings, classes, **kwargs)
    b.load_state_dict(state)
    again = [b.next_batch() for _ in range(2)]
    for x, y in zip(more, again, strict=True):
        assert all(
            torch.equal(u, v)
            for u, v in zip((x.images, x.text, x.wrong), (y.images, y.text, y.wrong), strict=True)
        )
    assert all(batch.wrong.shape == (4, 3, 64, 64) for batch in batches)
    same = total = 0
    for batch in batches + more:
        real, wrong = batch.images, batch.wrong
        own = ((real[:, 0, 0, 0] + 1) * 127.5).round().long() // 10
        other = ((wrong[:, 0, 0, 0] + 1) * 127.5).round().long() // 10
        same += int((classes[own] == classes[other]).sum())
        total += len(own)
    assert same <= total // 4  # same class only when the redraw hits it again (p = 1/9)


def _v2_family(branches, **coefficients):
    import dataclasses

    from training_helpers import TINY_CFG

    from stackgan_cli.families.stackgan_v2 import StackGANv2

    return StackGANv2(dataclasses.replace(TINY_CFG, branch_num=branches), **coefficients)


def test_v2_family_sizes_and_views():
    from stackgan_cli.data.batch import Batch

    one, two = _v2_family(1), _v2_family(2)
    assert (one.image_size, one.load_size, one.output_sizes()) == (64, 76, (64,))
    assert (two.image_size, two.load_size, two.output_sizes()) == (256, 304, (64, 128))
    real, wrong = torch.rand(2, 3, 256, 256), torch.rand(2, 3, 256, 256)
    text = torch.zeros(2, 16)
    views = two.real_views(Batch(images=real, text=text, wrong=wrong))
    assert [v.images.shape[-1] for v in views] == [64, 128]
    assert [v.wrong.shape[-1] for v in views] == [64, 128]
    # Antialiased bilinear shrinking of a constant image keeps the constant.
    flat = two.real_views(
        Batch(images=torch.full((1, 3, 256, 256), 0.25), text=text[:1], wrong=wrong[:1])
    )
    assert all(torch.allclose(v.images, torch.tensor(0.25)) for v in flat)


def test_generate_size_maps_to_v1_stages(tmp_path):
    import numpy as np
    from training_helpers import TINY_CFG

    from stackgan_cli.generator_file import save_generator_file
    from stackgan_cli.models import Stage2Generator

    ckpt = tmp_path / "s2.pt"
    save_generator_file(
        ckpt, Stage2Generator(TINY_CFG), TINY_CFG, family="v1-stage2", dataset=None, epoch=1
    )
    emb = tmp_path / "emb.npy"
    np.save(emb, np.zeros((1, 16), np.float32))
    common = ["generate", "--ckpt", str(ckpt), "--embedding-file", str(emb), "-n", "1"]
    run_cli([*common, "--size", "64", "--out", str(tmp_path / "a"), "--device", "cpu"])
    assert Image.open(tmp_path / "a" / "00_00.png").size == (64, 64)
    result = run_cli([*common, "--size", "128", "--out", str(tmp_path / "b")], code=1)
    assert "--size 128" in result.output


def test_colour_consistency_term():
    from stackgan_cli.families.base import GeneratorOutput

    def output(images):
        return GeneratorOutput(images=images, mu=torch.zeros(1), logvar=torch.zeros(1))

    plain = _v2_family(3)
    assert plain.generator_term_names == ()
    assert plain.generator_terms(output([torch.zeros(1, 3, 64, 64)] * 3)) == {}
    family = _v2_family(2, color_coeff=50.0)
    assert family.generator_term_names == ("color",)
    small = torch.rand(2, 3, 64, 64, requires_grad=True)
    large = torch.rand(2, 3, 128, 128, requires_grad=True)
    term = family.generator_terms(output([small, large]))["color"]
    term.backward()
    assert term.item() > 0 and small.grad is None and large.grad is not None
