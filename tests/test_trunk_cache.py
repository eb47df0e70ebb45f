"""DAMSM pre-training over the frozen Inception trunk's cached outputs (training/trunk_cache.py).

The trunk is the full Inception-v3 with random weights in torchvision's layout (as in
test_damsm_training.py); the dataset is the tiny prepared one (16 train / 4 test images).
"""

import json

import numpy as np
import pytest
import torch
from training_helpers import load, run_cli, write_inception_weights, write_tiny_prepared

from stackgan_cli.data.prepared import load_prepared
from stackgan_cli.data.sampler import DeviceBatchSampler
from stackgan_cli.models import DAMSMImageEncoder, ModelConfig
from stackgan_cli.training import distributed as dist_utils
from stackgan_cli.training.trunk_cache import (
    CACHE_DIR,
    crop_views,
    open_or_build,
    view_plan,
)

TINY_DAMSM = ["--text-dim", "16", "--word-dim", "8"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    return write_inception_weights(folder / "inception_v3_google-test.pth")


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("STACKGAN_HOME", str(tmp_path / "home"))
    write_tiny_prepared(tmp_path / "home" / "datasets" / "tiny" / "prepared")
    return tmp_path


def damsm_args(run_dir, weights, *extra, epochs=1):
    return [
        "train", "--arch", "damsm", "--dataset", "tiny", "--epochs", str(epochs),
        "--batch-size", "4", *TINY_DAMSM, "--inception-weights", str(weights),
        "--run-dir", str(run_dir), "--log-every", "2", *extra,
    ]  # fmt: skip


def _encoder(weights):
    encoder = DAMSMImageEncoder(ModelConfig.preset("birds-attngan"))
    encoder.load_backbone(torch.load(weights, weights_only=True))
    return encoder.eval()


def test_views_alternate_flips_and_stay_inside_the_image():
    plan = view_plan(5, 4, 304, 256, seed=3)
    assert plan.views == 4 and plan.rows.shape == plan.cols.shape == (5, 4)
    assert plan.flips.tolist() == [[False, True, False, True]] * 5
    assert 0 <= int(plan.rows.min()) and int(plan.rows.max()) <= 48
    assert torch.equal(view_plan(5, 4, 304, 256, seed=3).cols, plan.cols)
    assert not torch.equal(view_plan(5, 4, 304, 256, seed=4).cols, plan.cols)


def test_a_view_is_the_crop_and_flip_it_names():
    images = np.random.default_rng(0).integers(0, 256, (3, 304, 304, 3), dtype=np.uint8)
    plan = view_plan(3, 2, 304, 256, seed=0)
    views = crop_views(images, np.array([5, 2]), plan, 256)  # image 2 view 1, image 1 view 0
    r, c = int(plan.rows[2, 1]), int(plan.cols[2, 1])
    expected = images[2, r : r + 256, c : c + 256][:, ::-1]
    assert torch.equal(views[0], torch.from_numpy(expected.copy()).permute(2, 0, 1) / 127.5 - 1)
    r, c = int(plan.rows[1, 0]), int(plan.cols[1, 0])
    expected = images[1, r : r + 256, c : c + 256]
    assert torch.equal(views[1], torch.from_numpy(expected.copy()).permute(2, 0, 1) / 127.5 - 1)


def test_cached_outputs_are_the_trunk_of_each_view_and_rebuild_to_the_same_bits(weights, home):
    split = load_prepared("tiny").split("test")
    images = split.images(304)
    encoder = _encoder(weights)
    plan = view_plan(len(split), 2, 304, 256, seed=1)
    key = {"views": 2, "what": "test"}
    build = dict(encoder=encoder, images=images, plan=plan, crop=256, report=lambda _: None)
    cpu = torch.device("cpu")
    ctx = dist_utils.DistContext(rank=0, world_size=1, local_rank=0, device=cpu)
    folder = home / "cache"
    cache = open_or_build(folder, "test", key, ctx=ctx, device=cpu, **build)
    assert len(cache) == 2 * len(split)
    rows = torch.tensor([7, 0, 3])
    regions, pooled = cache.gather(rows, cpu)
    with torch.no_grad():
        direct = encoder.trunk(crop_views(images, rows.numpy(), plan, 256))
    torch.testing.assert_close(regions, direct[0], atol=2e-3, rtol=2e-3)  # float16 storage
    torch.testing.assert_close(pooled, direct[1], atol=1e-5, rtol=1e-5)

    bits = np.array(cache.regions), np.array(cache.pooled)
    # A build interrupted before its key was written is redone, not trusted.
    (folder / "test.json").unlink()
    (folder / "test.regions.npy").write_bytes(b"")
    again = open_or_build(folder, "test", key, ctx=ctx, device=cpu, **build)
    assert np.array_equal(again.regions, bits[0]) and np.array_equal(again.pooled, bits[1])
    # Another key (other weights, another dataset, other views) rebuilds.
    stamp = (folder / "test.json").stat().st_mtime_ns
    open_or_build(folder, "test", {**key, "what": "other"}, ctx=ctx, device=cpu, **build)
    assert json.loads((folder / "test.json").read_text())["what"] == "other"
    assert (folder / "test.json").stat().st_mtime_ns != stamp


def test_the_sampler_hands_out_view_rows_sorted_with_their_captions():
    embeddings = np.zeros((6, 10, 4), dtype=np.float32)
    tokens = np.zeros((6, 10, 5), dtype=np.int64)
    lengths = np.tile(np.arange(1, 7)[:, None], (1, 10)).clip(max=5)
    for i in range(6):
        tokens[i, :, : lengths[i, 0]] = i + 1
    sampler = DeviceBatchSampler(
        None,
        embeddings,
        image_size=256,
        batch_size=3,
        device="cpu",
        seed=0,
        words=(tokens, lengths),
        class_ids=np.arange(6),
        views=4,
    )
    seen = []
    for _ in range(2):
        batch = sampler.next_batch()
        assert batch.images is None and len(batch) == 3
        image = batch.view_rows // 4
        assert torch.equal(batch.class_ids, image)  # rows follow the length sort
        assert torch.equal(batch.tokens[:, 0], image + 1)
        seen += image.tolist()
    assert sorted(seen) == list(range(6))
    with pytest.raises(ValueError, match="images are needed"):
        DeviceBatchSampler(None, embeddings, image_size=256, batch_size=3, device="cpu", seed=0)


def test_a_run_reads_the_cache_and_removes_it_at_the_end_and_views_0_is_the_official_step(
    weights, home
):
    cached, official = home / "cached", home / "official"
    result = run_cli(damsm_args(cached, weights))
    assert "computed once" in result.output and not (cached / CACHE_DIR).exists()
    assert json.loads((cached / "config.json").read_text())["train"]["trunk_views"] == 4
    run_cli(damsm_args(official, weights, "--trunk-views", "0"))
    assert not (official / CACHE_DIR).exists()
    a, b = load(cached / "checkpoints/last.pt"), load(official / "checkpoints/last.pt")
    assert a["train_config"]["trunk_views"] == 4 and b["train_config"]["trunk_views"] == 0
    key = "emb_cnn_code.weight"
    assert not torch.equal(a["image_projections"][key], b["image_projections"][key])
    for run in (cached, official):
        records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        assert all(np.isfinite(r["w_loss0"]) for r in records)


def test_a_disk_that_cannot_hold_the_cache_is_one_line_before_any_step(weights, home, tmpfs):
    disk = tmpfs(home / "small", 2 << 20)
    result = run_cli(damsm_args(disk / "run", weights), code=1)
    lines = result.output.strip().splitlines()
    assert "feature cache needs" in lines[-1] and "--trunk-views 0" in lines[-1]
    assert "Traceback" not in result.output
    assert not (disk / "run" / "checkpoints" / "last.pt").exists()


def test_trunk_views_is_refused_where_no_damsm_is_trained(home):
    result = run_cli(
        ["train", "--stage", "1", "--dataset", "tiny", "--trunk-views", "2", "--epochs", "1"],
        code=2,
    )
    assert "--trunk-views: only --arch damsm" in result.output
