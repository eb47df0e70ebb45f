"""`stackgan train`: files of a run, Stage I then Stage II, user errors, non-finite losses."""

import json
import math

import pytest
import torch
from training_helpers import TEXT_DIM, TINY, TINY_CFG, load, run_cli, train_args

from stackgan_cli.charts import draw_losses
from stackgan_cli.generator_file import save_generator_file
from stackgan_cli.models import ModelConfig, Stage2Generator, build_discriminator, build_generator
from stackgan_cli.training.config import lr_at, resolve_model_dims
from stackgan_cli.training.health import STALE_BATCHNORM_SHARE, initial_batchnorm_share


@pytest.mark.slow
def test_stage1_then_stage2_on_shapes_write_every_file_and_train(shapes_dataset, tmp_path):
    from stackgan_cli.data.prepared import load_prepared

    text_dim = load_prepared("shapes").split("train").embeddings.shape[2]
    cfg = ModelConfig(**{**TINY_CFG.to_dict(), "text_dim": text_dim})
    # 60 training images in batches of 30: 2 steps per epoch.
    run1, s1 = tmp_path / "run1", tmp_path / "s1.pt"
    args = ["--snapshot-every", "1", "--sample-every", "1", "--log-every", "1", "--out", str(s1)]
    result = run_cli(train_args(run1, *TINY, *args, batch=30, dataset="shapes"))
    # 4 steps leave BatchNorm's running statistics mostly at their initial values (0.9**4)
    message = " ".join(result.output.split())
    assert "only 4 training steps" in message and "66% their initial values" in message

    config = json.loads((run1 / "config.json").read_text())
    assert config["model"] == cfg.to_dict() and config["train"]["epochs"] == 2
    for name in ("generator.pt", "losses.png", "metrics.jsonl", "samples/epoch_0001.png"):
        assert (run1 / name).is_file(), name
    assert (run1 / "samples/epoch_0002.png").is_file()
    for name in ("last.pt", "epoch_0001.pt", "epoch_0002.pt"):
        assert (run1 / "checkpoints" / name).is_file()
    assert s1.read_bytes() == (run1 / "generator.pt").read_bytes()

    records = [json.loads(line) for line in (run1 / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    for record in records:
        for key in ("errD", "errG", "kl", "D_real", "D_wrong", "D_fake", "images_per_s"):
            assert math.isfinite(record[key])
        assert record["lr_g"] == record["lr_d"] == 2e-4

    last = load(run1 / "checkpoints/last.pt")
    assert (last["epoch"], last["step"], last["global_step"]) == (2, 0, 4)
    assert last["dataset"]["name"] == "shapes" and len(last["dataset"]["fingerprint"]) == 64
    torch.manual_seed(0)  # the seed the run built its networks with
    initial_g, initial_d = build_generator(1, cfg), build_discriminator(1, cfg)
    for initial, trained in (
        (initial_g, last["generator"]),
        (initial_d, last["discriminators"][0]),
    ):
        params = dict(initial.named_parameters())
        changed = [k for k in params if not torch.equal(params[k], trained[k])]
        assert len(changed) == len(params), "every parameter should have moved"
    generator_file = load(run1 / "generator.pt")
    assert generator_file["stage"] == 1 and generator_file["epoch"] == 2
    assert generator_file["dataset"] == "shapes" and generator_file["text_encoder"] is not None

    # Stage II on top: no width options, they come from the Stage-I file.
    run2 = tmp_path / "run2"
    args = ["--stage1-ckpt", str(s1), "--r-num", "1"]
    run_cli(train_args(run2, *args, stage=2, epochs=1, batch=30, dataset="shapes"))
    for name in ("generator.pt", "losses.png", "metrics.jsonl", "samples/epoch_0001.png"):
        assert (run2 / name).is_file(), name
    stage2 = load(run2 / "checkpoints/last.pt")
    assert stage2["model_config"] == {**cfg.to_dict(), "r_num": 1}
    for key, _ in build_generator(1, cfg).named_parameters():
        # the frozen Stage-I weights are those of s1.pt, unchanged
        assert torch.equal(stage2["generator"][f"STAGE1_G.{key}"], generator_file["generator"][key])
    torch.manual_seed(0)
    initial2 = build_generator(2, ModelConfig(**stage2["model_config"]))
    trainable = [k for k, p in initial2.named_parameters() if p.requires_grad]
    assert trainable and not any(k.startswith("STAGE1_G.") for k in trainable)
    for key in trainable:
        assert not torch.equal(stage2["generator"][key], initial2.state_dict()[key]), key
    records = [json.loads(line) for line in (run2 / "metrics.jsonl").read_text().splitlines()]
    assert records and all(math.isfinite(r["D_uncond_fake"]) for r in records)
    assert load(run2 / "generator.pt")["stage"] == 2


def test_usage_errors(tiny_dataset, tmp_path):
    result = run_cli(train_args(tmp_path / "a", *TINY, stage=2), code=2)
    assert "--stage1-ckpt" in result.output
    result = run_cli(train_args(tmp_path / "b", "--stage1-ckpt", "x.pt"), code=2)
    assert "only Stage 2" in result.output

    stage2_file = tmp_path / "s2.pt"
    save_generator_file(
        stage2_file,
        Stage2Generator(TINY_CFG),
        TINY_CFG,
        family="v1-stage2",
        dataset="tiny",
        epoch=1,
    )
    result = run_cli(train_args(tmp_path / "c", "--stage1-ckpt", str(stage2_file), stage=2), code=1)
    assert "is a Stage-II generator" in result.output

    stage1_file = tmp_path / "s1.pt"
    save_generator_file(
        stage1_file,
        build_generator(1, TINY_CFG),
        TINY_CFG,
        family="v1-stage1",
        dataset="tiny",
        epoch=1,
    )
    args = train_args(tmp_path / "d", "--stage1-ckpt", str(stage1_file), "--gf-dim", "16", stage=2)
    result = run_cli(args, code=1)
    assert "--gf-dim 16 does not match" in result.output and "gf_dim 8" in result.output
    args = train_args(
        tmp_path / "e", "--stage1-ckpt", str(stage1_file), "--preset", "coco", stage=2
    )
    result = run_cli(args, code=1)
    assert "--preset coco" in result.output

    result = run_cli(["train", "--stage", "1", "--dataset", "nowhere"], code=1)
    assert "stackgan prepare nowhere" in result.output
    result = run_cli(["train", "--stage", "1"], code=1)
    assert "stackgan prepare cub" in result.output and "shapes" in result.output


def test_batch_larger_than_the_dataset_is_refused(tiny_dataset, tmp_path):
    result = run_cli(train_args(tmp_path / "run", *TINY, batch=17), code=1)
    assert "--batch-size 17" in result.output and "16 training images" in result.output


def test_existing_run_dir_is_refused(tiny_dataset, tmp_path):
    run_cli(train_args(tmp_path / "run", *TINY, epochs=1))
    result = run_cli(train_args(tmp_path / "run", *TINY, epochs=1), code=1)
    assert "stackgan resume" in result.output


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(
    tiny_dataset, tmp_path, monkeypatch
):
    from stackgan_cli.training.step import GANStep

    calls = {"n": 0}
    original = GANStep.__call__

    def poisoned(self, batch):
        calls["n"] += 1
        losses = original(self, batch)
        return losses * float("nan") if calls["n"] == 4 else losses

    monkeypatch.setattr(GANStep, "__call__", poisoned)
    run = tmp_path / "run"
    result = run_cli(train_args(run, *TINY, "--log-every", "5", epochs=3), code=1)
    message = " ".join(result.output.split())
    assert "non-finite" in message and "at step 4 (epoch 2)" in message
    assert "last.pt (after epoch 1)" in message
    last = load(run / "checkpoints/last.pt")
    assert (last["epoch"], last["global_step"]) == (1, 2)


def test_lr_schedule_and_width_resolution():
    assert [lr_at(2e-4, e, 2) for e in range(5)] == [2e-4, 2e-4, 1e-4, 1e-4, 5e-5]
    assert lr_at(2e-4, 599, 600) == 2e-4
    dims = resolve_model_dims(preset=None, overrides={"gf_dim": 32}, text_dim=1024)
    assert dims == {**ModelConfig().to_dict(), "gf_dim": 32}
    stage1 = TINY_CFG.to_dict()
    dims = resolve_model_dims(preset=None, overrides={"r_num": 2}, text_dim=16, stage1=stage1)
    assert dims == {**stage1, "r_num": 2}


def test_loss_plot_skips_non_finite_values():
    import numpy as np

    from stackgan_cli.charts import SERIES

    finite = [
        {"step": 1, "errD": 1.0, "errG": 2.0, "kl": 0.1},
        {"step": 2, "errG": 1.5, "kl": 0.2},
        {"step": 3, "errD": 0.8, "errG": 1.2, "kl": 0.1},
        {"step": 4, "errD": 0.7, "kl": 0.3},
    ]
    records = [dict(record) for record in finite]
    records[1]["errD"] = float("nan")
    records[3]["errG"] = float("inf")
    image = np.asarray(draw_losses(records, "test"))
    assert image.shape == (540, 960, 3)
    # The bad values are left out and nothing else changes: the same picture as without them.
    assert np.array_equal(image, np.asarray(draw_losses(finite, "test")))
    # Each series is drawn as a line across the plot, not only named in the legend (top rows).
    for _, _, colour in SERIES:
        drawn = (image[60:490, 70:930] == colour).all(axis=-1)
        assert drawn.any(axis=0).sum() > 400, colour  # spans most of the 860 px wide plot
    nothing = np.asarray(draw_losses([]))
    assert nothing.shape == (540, 960, 3)
    assert np.array_equal(np.asarray(draw_losses([{"step": 1, "errD": float("nan")}])), nothing)


@pytest.mark.slow
def test_stage1_one_epoch_on_cub_mini(shared_data, tmp_path):
    from stackgan_cli.data.prepare import prepare_cub

    prepare_cub(source_dir=shared_data / "cub-mini", text_encoder=False, workers=1)
    run = tmp_path / "run"
    args = ["train", "--stage", "1", "--dataset", "cub", "--epochs", "1", "--batch-size", "16"]
    run_cli([*args, *TINY, "--run-dir", str(run)])
    last = load(run / "checkpoints/last.pt")
    assert (last["epoch"], last["global_step"]) == (1, 275 // 16)
    assert last["model_config"]["text_dim"] == 1024
    assert (run / "samples/epoch_0001.png").is_file()


@pytest.mark.parametrize("gemm", [False, True])
@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_upsampling_is_the_same_function(channels_last, gemm):
    from stackgan_cli.training.fast_layers import fuse_nearest_upsampling, nearest_up_conv3x3

    torch.manual_seed(0)
    x = torch.randn(3, 5, 6, 7, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 5, 3, 3, dtype=torch.float64, requires_grad=True)
    if channels_last:
        x = x.detach().contiguous(memory_format=torch.channels_last).requires_grad_()
    reference = torch.nn.functional.conv2d(
        torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest"), w, padding=1
    )
    fused = nearest_up_conv3x3(x, w, gemm=gemm)  # gemm: the phase convolution as one product
    assert fused.shape == (3, 4, 12, 14)
    assert fused.is_contiguous(memory_format=torch.channels_last) == channels_last
    torch.testing.assert_close(fused, reference, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(reference)
    expected = torch.autograd.grad(reference, (x, w), grad)
    for got, want in zip(torch.autograd.grad(fused, (x, w), grad), expected, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)

    for stage in (1, 2):
        torch.manual_seed(1)
        plain = build_generator(stage, TINY_CFG).double().eval()
        torch.manual_seed(1)
        fast = build_generator(stage, TINY_CFG).double().eval()
        assert fuse_nearest_upsampling(fast) == 4 * stage  # Stage II also holds Stage I's
        assert fast.state_dict().keys() == plain.state_dict().keys()
        text, noise = torch.randn(2, TEXT_DIM, dtype=torch.float64), torch.randn(2, 8).double()
        eps = torch.randn(2, 4, dtype=torch.float64)
        eps = eps if stage == 1 else (eps, eps)
        torch.testing.assert_close(fast(text, noise, eps)[1], plain(text, noise, eps)[1])


def test_large_convolutions_as_matrix_products_are_the_same_function():
    from stackgan_cli.training.fast_layers import GemmConv2d, gemm_large_convolutions

    torch.manual_seed(0)
    for stride, padding, kernel in ((2, 1, 4), (1, 1, 3)):
        conv = torch.nn.Conv2d(6, 5, kernel, stride, padding, bias=False).double()
        x = torch.randn(2, 6, 8, 8, dtype=torch.float64, requires_grad=True)
        fast = GemmConv2d(conv)
        assert fast.weight is conv.weight
        torch.testing.assert_close(fast(x), conv(x), rtol=1e-12, atol=1e-12)
        grad = torch.randn_like(conv(x))
        want = torch.autograd.grad(conv(x), (x, conv.weight), grad)
        got = torch.autograd.grad(fast(x), (x, fast.weight), grad)
        for a, b in zip(got, want, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    discriminator = build_discriminator(2, TINY_CFG)
    keys = discriminator.state_dict().keys()
    assert gemm_large_convolutions(discriminator, min_weights=256 * 128 * 9) == 2  # the widest
    assert discriminator.state_dict().keys() == keys


def test_initial_batchnorm_share_decays_with_the_steps():
    generator = build_generator(1, TINY_CFG)
    assert initial_batchnorm_share(generator, 0) == 1.0
    assert initial_batchnorm_share(generator, 22) == pytest.approx(0.9**22)
    assert initial_batchnorm_share(generator, 50) < STALE_BATCHNORM_SHARE
    assert initial_batchnorm_share(torch.nn.Linear(2, 2), 1) == 0.0


HOLD_LOCK = """
import sys
from pathlib import Path
from stackgan_cli.fsutil import exclusive_lock
with exclusive_lock(Path(sys.argv[1]), "busy"):
    print("held", flush=True)
    sys.stdin.read()
"""


def hold_lock(path):
    """A separate process holding the lock file ``path`` until its stdin closes."""
    import subprocess
    import sys

    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_LOCK, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout.readline().strip() == "held"
    return holder


def test_train_never_restarts_a_run_that_can_be_continued(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    run_cli(train_args(run, *TINY, "--snapshot-every", "1", epochs=1))
    last = run / "checkpoints" / "last.pt"
    for _ in range(2):  # with last.pt, then with only its snapshot left
        result = run_cli(train_args(run, *TINY, epochs=1), code=1)
        assert f"already holds a run: continue it with `stackgan resume {run}`" in " ".join(
            result.output.split()
        )
        last.unlink(missing_ok=True)
    assert load(run / "checkpoints" / "epoch_0001.pt")["epoch"] == 1


def test_a_run_directory_has_one_owner(tiny_dataset, tmp_path):
    run = tmp_path / "run"
    holder = hold_lock(run / ".lock")
    try:
        result = run_cli(train_args(run, *TINY, epochs=1), code=1)
        message = " ".join(result.output.split())
        assert "is in use by another stackgan train or resume" in message
        assert f"process {holder.pid}" in message
        assert "Traceback" not in result.output
        assert not (run / "config.json").exists()  # the second process wrote nothing
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    # The holder is gone: its lock is taken over.
    run_cli(train_args(run, *TINY, epochs=1))
    assert (run / "checkpoints" / "last.pt").is_file()

    holder = hold_lock(run / ".lock")
    try:
        result = run_cli(["resume", str(run), "--epochs", "2"], code=1)
        assert f"process {holder.pid}" in " ".join(result.output.split())
        assert load(run / "checkpoints" / "last.pt")["epoch"] == 1  # untouched
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
