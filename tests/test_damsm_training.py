"""`stackgan train --arch damsm`: DAMSM pre-training as a run like every other.

The image trunk is always the full Inception-v3 (about a second per step of 4 on two CPU
cores), so the runs are few and short: the tiny dataset (16 train / 4 test images, 3 classes)
in batches of 4, a DAMSM at text_dim 16 / word_dim 8. The ImageNet weights are a file of
torchvision's layout (random values) passed with --inception-weights, or served on 127.0.0.1.
"""

import hashlib
import json
import os
import signal

import pytest
import torch
from http_server import LocalHTTPServer
from training_helpers import load, run_cli, write_inception_weights, write_tiny_prepared

from stackgan_cli import paths
from stackgan_cli.damsm_file import load_damsm
from stackgan_cli.errors import StackGANError
from stackgan_cli.families import FAMILIES, family_for_file, generator_specs, train_spec
from stackgan_cli.text.words import WordVocabulary
from stackgan_cli.training.config import TrainConfig
from stackgan_cli.training.damsm_loop import LOSS_NAMES, DAMSMTrainer, encoder_lr
from stackgan_cli.training.damsm_weights import URL, URL_ENV, fetch_weights

TINY_DAMSM = ["--text-dim", "16", "--word-dim", "8"]
TIMING_KEYS = ("time", "images_per_s")


@pytest.fixture(scope="module")
def weights_bytes(tmp_path_factory):
    """A weights file with the key names of torchvision's published Inception-v3 file."""
    folder = tmp_path_factory.mktemp("weights")
    return write_inception_weights(folder / "inception_v3_google-test.pth")


def damsm_args(run_dir, weights, *extra, epochs=2):
    return [
        "train", "--arch", "damsm", "--dataset", "tiny", "--epochs", str(epochs),
        "--batch-size", "4", *TINY_DAMSM, "--inception-weights", str(weights),
        "--run-dir", str(run_dir), "--log-every", "2", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def straight(tmp_path_factory, weights_bytes):
    """A two-epoch DAMSM run on the tiny dataset, with --out and a snapshot at epoch 2."""
    root = tmp_path_factory.mktemp("damsm")
    home = root / "home"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STACKGAN_HOME", str(home))
        write_tiny_prepared(home / "datasets" / "tiny" / "prepared")
        args = damsm_args(root / "run", weights_bytes, "--out", str(root / "damsm_out.pt"))
        result = run_cli([*args, "--snapshot-every", "2"])
    return {"root": root, "home": home, "run": root / "run", "out": root / "damsm_out.pt",
            "output": result.output}  # fmt: skip


def _records(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def _without_timing(records):
    return [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in records]


def test_the_registry_knows_damsm_as_a_family_that_trains_encoders():
    spec = FAMILIES["damsm"]
    assert spec.kind == "encoders" and not spec.trains_generator
    assert spec.run_prefix == "damsm" and spec.load() is DAMSMTrainer
    assert spec not in generator_specs()
    cfg = TrainConfig.for_arch("damsm", stage=None)
    assert train_spec(cfg) is spec
    assert (cfg.batch_size, cfg.lr_encoder, cfg.epochs, cfg.snapshot_every) == (48, 0.002, 600, 50)
    with pytest.raises(StackGANError, match="not a generator"):
        family_for_file({"family": "damsm"}, 2, "x.pt")
    with pytest.raises(StackGANError, match="not a generator"):
        family_for_file({"arch": "damsm"}, 2, "x.pt")


def test_the_learning_rate_decays_114_times_as_the_official():
    assert encoder_lr(0.002, 0) == 0.002
    assert encoder_lr(0.002, 1) == 0.002 * 0.98
    assert encoder_lr(0.002, 113) > 0.0002 > encoder_lr(0.002, 114)
    assert encoder_lr(0.002, 114) == encoder_lr(0.002, 599) == pytest.approx(1.999e-4, rel=1e-4)


def test_a_run_writes_its_files_metrics_and_damsm_file(straight):
    run = straight["run"]
    assert "DAMSM file" in straight["output"]
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["arch"] == "damsm" and config["train"]["lr_encoder"] == 0.002
    assert config["model"]["text_dim"] == 16 and config["model"]["word_dim"] == 8
    for name in ("checkpoints/last.pt", "checkpoints/epoch_0002.pt", "damsm.pt"):
        assert (run / name).is_file(), name
    assert straight["out"].is_file()
    records = _records(run)
    train = [r for r in records if "split" not in r]
    test = [r for r in records if r.get("split") == "test"]
    assert [r["step"] for r in train] == [2, 4, 6, 8]
    assert [r["epoch"] for r in test] == [1, 2]
    for record in train:
        assert set(LOSS_NAMES) | {"epoch", "step", "lr", "images_per_s", "time"} <= set(record)
    assert [r["lr"] for r in train] == [0.002, 0.002, 0.002 * 0.98, 0.002 * 0.98]
    for record in test:
        assert set(LOSS_NAMES) <= set(record) and record["batches"] == 1
        for key in ("caption_to_image_top1", "image_to_caption_top1"):
            assert 0.0 <= record[key] <= 1.0
    state = load(run / "checkpoints/last.pt")
    assert (state["epoch"], state["step"], state["family"]) == (2, 0, "damsm")
    assert state["vocabulary"][0] == "<end>"


def test_the_damsm_file_loads_and_trains_attngan(straight, tmp_path, monkeypatch):
    bundle = load_damsm(straight["out"])
    assert bundle.epoch == 2 and bundle.dataset == "tiny" and bundle.image_encoder is not None
    assert (bundle.cfg.text_dim, bundle.cfg.word_dim) == (16, 8)
    captions = [
        f"{split} bird {i} caption {j}"
        for split, n in (("train", 16), ("test", 4))
        for i in range(n)
        for j in range(10)
    ]
    assert bundle.text.vocabulary == WordVocabulary.build(captions)
    assert load_damsm(straight["run"] / "damsm.pt").epoch == 2
    monkeypatch.setenv("STACKGAN_HOME", str(straight["home"]))
    run_cli([
        "train", "--arch", "attngan", "--damsm", str(straight["out"]), "--dataset", "tiny",
        "--epochs", "1", "--batch-size", "4", "--gf-dim", "4", "--df-dim", "4", "--z-dim", "8",
        "--condition-dim", "4", "--run-dir", str(tmp_path / "attn"),
    ])  # fmt: skip
    assert (tmp_path / "attn" / "generator.pt").is_file()


def test_resume_is_bit_exact_at_an_epoch_end_and_mid_epoch(
    straight, weights_bytes, tmp_path, monkeypatch
):
    monkeypatch.setenv("STACKGAN_HOME", str(straight["home"]))
    run = tmp_path / "split"
    run_cli(damsm_args(run, weights_bytes, epochs=1))
    # Resumed at the epoch end, then stopped by a SIGTERM in the middle of epoch 2.
    calls = {"n": 0}
    original = DAMSMTrainer.train_step

    def signalling(self, batch):
        calls["n"] += 1
        if calls["n"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self, batch)

    monkeypatch.setattr(DAMSMTrainer, "train_step", signalling)
    result = run_cli(["resume", str(run), "--epochs", "2"], code=130)
    assert f"stackgan resume {run}" in " ".join(result.output.split())
    state = load(run / "checkpoints/last.pt")
    assert (state["epoch"], state["step"], state["global_step"]) == (1, 2, 6)
    assert state["optimizer"] is not None
    monkeypatch.setattr(DAMSMTrainer, "train_step", original)
    run_cli(["resume", str(run)])

    a, b = load(straight["run"] / "checkpoints/last.pt"), load(run / "checkpoints/last.pt")
    for part in ("text_encoder", "image_projections"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            assert torch.equal(a[part][key], b[part][key]), f"{part}.{key}"
    assert torch.equal(a["sampler"]["generator_state"], b["sampler"]["generator_state"])
    assert a["rng"][0]["torch"].equal(b["rng"][0]["torch"])
    assert _without_timing(_records(run)) == _without_timing(_records(straight["run"]))


def test_weights_download_resumes_and_checks_the_hash(weights_bytes, monkeypatch):
    data = weights_bytes.read_bytes()
    name = f"inception_v3_google-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    with LocalHTTPServer() as server:
        server.add_file(f"/{name}", data, cut_after=len(data) // 3)
        monkeypatch.setenv(URL_ENV, server.url(f"/{name}"))
        path = fetch_weights()
        assert path == paths.weights_dir() / name and path.read_bytes() == data
        resumed = server.requests[-1].headers.get("Range", "")  # from what the cut left
        assert resumed.startswith("bytes=") and 0 < int(resumed[6:-1]) <= len(data) // 3
        count = len(server.requests)
        assert fetch_weights() == path and len(server.requests) == count  # cached


def test_a_corrupted_download_is_refused_with_one_line(tiny_dataset, tmp_path, monkeypatch):
    name = "inception_v3_google-0cc3c7bd.pth"
    with LocalHTTPServer() as server:
        server.add_file(f"/{name}", b"not the weights" * 1000)
        monkeypatch.setenv(URL_ENV, server.url(f"/{name}"))
        args = ["train", "--arch", "damsm", "--dataset", tiny_dataset, "--batch-size", "4"]
        result = run_cli([*args, *TINY_DAMSM, "--run-dir", str(tmp_path / "run")], code=1)
    error = result.output[result.output.index("error:") :]  # after the download notice
    assert len(error.strip().splitlines()) == 1 and "Traceback" not in result.output
    text = " ".join(error.split())
    assert "expected one starting with 0cc3c7bd" in text and "--inception-weights" in text
    assert not (paths.weights_dir() / name).exists() and not (tmp_path / "run").exists()
    assert URL.endswith(name)


def test_missing_weights_and_options_that_do_not_apply_are_one_line_errors(
    tiny_dataset, weights_bytes, tmp_path
):
    run = tmp_path / "run"
    v1 = ["train", "--stage", "1", "--dataset", "tiny", "--run-dir", str(run)]
    cases = [
        (damsm_args(run, tmp_path / "missing.pth"), "--inception-weights"),
        (damsm_args(run, weights_bytes, "--gf-dim", "8"), "--gf-dim"),
        (damsm_args(run, weights_bytes, "--loss", "hinge"), "--loss"),
        (damsm_args(run, weights_bytes, "--text-dim", "15"), "--text-dim"),
        ([*v1, "--text-dim", "16"], "--text-dim"),
        ([*v1, "--lr-encoder", "0.1"], "--lr-encoder"),
        ([*v1, "--inception-weights", str(weights_bytes)], "--inception-weights"),
    ]
    for args, option in cases:
        result = run_cli(args, code=2)
        assert result.output.startswith("error:"), result.output
        assert len(result.output.strip().splitlines()) == 1 and option in result.output
        assert not run.exists()
