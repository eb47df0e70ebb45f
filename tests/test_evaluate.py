"""``stackgan evaluate`` end to end, offline: a tiny random generator, the prepared shapes
and a randomly initialised Inception-v3 with torch-fidelity's exact architecture and keys.

A socket guard fails any test that tries to reach anything but 127.0.0.1.
"""

import json
import math
import shutil
import socket

import pytest
import torch
from torch import nn
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3
from typer.testing import CliRunner

from stackgan_cli import paths
from stackgan_cli.cli import app
from stackgan_cli.evaluation.inception import URL_ENV, WEIGHTS_FILENAME, default_weights_path
from stackgan_cli.generator_file import save_generator_file
from stackgan_cli.models import ModelConfig, Stage1Generator, Stage2Generator

TINY = ModelConfig(gf_dim=8, df_dim=8, z_dim=10, condition_dim=8, r_num=1, text_dim=1024)
TEST_IMAGES = 20  # the test split of the shapes_dataset fixture
LOCAL_HOSTS = {"127.0.0.1", "::1", "localhost", None}


class NetworkAccess(AssertionError):
    """Raised by the guard; not an OSError, so no download code can swallow it."""


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Make every connection or name lookup outside 127.0.0.1 fail the test."""
    attempts = []
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def _check(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in LOCAL_HOSTS:
            attempts.append(address)
            raise NetworkAccess(f"network access to {address} during an offline test")

    def connect(sock, address):
        _check(sock, address)
        return real_connect(sock, address)

    def connect_ex(sock, address):
        _check(sock, address)
        return real_connect_ex(sock, address)

    def getaddrinfo(host, *args, **kwargs):
        if host not in LOCAL_HOSTS:
            attempts.append(host)
            raise NetworkAccess(f"name lookup of {host} during an offline test")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    for name in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    yield attempts
    assert not attempts, f"tried to reach the network: {attempts}"


def test_network_guard_blocks_outside_connections(no_network):
    with socket.socket() as sock, pytest.raises(NetworkAccess):
        sock.connect(("192.0.2.1", 80))  # TEST-NET-1: never routed; the guard stops it first
    with pytest.raises(NetworkAccess):
        socket.getaddrinfo("github.com", 443)
    assert len(no_network) == 2
    no_network.clear()  # these two attempts were the point of this test


def _generator_file(path, stage=1):
    """A random generator whose images vary with the noise (the official N(0, 0.02) init
    gives a flat grey image at these tiny widths)."""
    torch.manual_seed(stage)
    generator = (Stage1Generator if stage == 1 else Stage2Generator)(TINY)
    for module in generator.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight)
    save_generator_file(path, generator, TINY, family=f"v1-stage{stage}", dataset="shapes", epoch=3)
    return path


def _invoke(*args):
    result = CliRunner().invoke(app, [str(a) for a in args])
    text = result.output + (getattr(result, "stderr", "") or "")
    return result, text


PROTOCOL_FIELDS = {
    "inception",
    "resolution",
    "num_samples",
    "splits",
    "seed",
    "batch_size",
    "device",
    "sampling",
    "image_conversion",
    "generator_mode",
    "real_images",
    "diversity",
    "torch_version",
    "torch_fidelity_version",
}
INCEPTION_FIELDS = {
    "variant",
    "weights_file",
    "weights_sha256",
    "weights_source",
    "official_weights",
    "is_layer",
    "fid_layer",
    "resize",
    "torch_fidelity_version",
}


@pytest.mark.slow
def test_evaluate_end_to_end_offline(tmp_path, shapes_dataset, inception_weights):
    ckpt = _generator_file(tmp_path / "tiny.pt")
    report = tmp_path / "r.json"
    args = ["evaluate", "--ckpt", ckpt, "--inception-weights", inception_weights]
    args += ["--num-samples", 40, "--splits", 2, "--batch-size", 20, "--device", "cpu"]
    result, text = _invoke(*args, "--out", report)
    assert result.exit_code == 0, text
    assert "3.70" in text and "fine-tuned on CUB" in text
    assert "Inception Score" in text and "FID" in text

    data = json.loads(report.read_text())
    assert data["format"] == "stackgan-evaluation" and data["mode"] == "generated"
    assert PROTOCOL_FIELDS <= set(data["protocol"])
    assert INCEPTION_FIELDS <= set(data["protocol"]["inception"])
    inception = data["protocol"]["inception"]
    assert inception["variant"] == "inception-v3-compat"
    assert inception["weights_file"] == "rand.pth"
    assert inception["weights_source"] == "--inception-weights"
    assert inception["official_weights"] is False
    assert data["protocol"]["resolution"] == 64
    assert data["protocol"]["num_samples"] == 40 and data["protocol"]["splits"] == 2
    assert data["checkpoint"]["stage"] == 1 and data["checkpoint"]["epoch"] == 3
    assert data["checkpoint"]["path"] == str(ckpt.resolve())
    metadata = json.loads((shapes_dataset / "metadata.json").read_text())
    assert data["dataset"]["name"] == "shapes"
    assert data["dataset"]["fingerprint"] == metadata["fingerprint"]
    assert data["dataset"]["test_images"] == TEST_IMAGES
    assert {"started_at", "wall_seconds", "process_cpu_seconds", "generation_seconds"} <= set(
        data["times"]
    )

    metrics = data["metrics"]
    assert set(metrics) == {"inception_score", "fid", "diversity", "diversity_real_reference"}
    assert metrics["inception_score"]["samples"] == 40
    assert metrics["inception_score"]["value"] >= 1.0 - 1e-9
    assert metrics["fid"]["value"] > 0 and metrics["fid"]["real_images"] == TEST_IMAGES
    assert metrics["fid"]["real_statistics_cached"] is False
    assert metrics["diversity"]["samples"] == 80 and metrics["diversity"]["value"] > 0
    assert metrics["diversity_real_reference"]["samples"] == 16  # 2 groups of 8
    for metric in metrics.values():
        assert math.isfinite(metric["value"])

    # Nothing was downloaded; the real statistics were cached in the weights folder.
    assert not default_weights_path().exists()
    assert len(list((paths.weights_dir() / "fid_stats").glob("shapes-64px-*.npz"))) == 1

    # Without --ckpt: the newest run's generator; the real statistics now come from the cache.
    run = paths.runs_dir() / "run1"
    run.mkdir(parents=True)
    shutil.copy(ckpt, run / "generator.pt")
    result, text = _invoke(
        "evaluate", "--fid", "--no-diversity", "--num-samples", 10, "--splits", 1,
        "--inception-weights", inception_weights, "--device", "cpu",
    )  # fmt: skip
    assert result.exit_code == 0, text
    second = json.loads((run / "generator.eval.json").read_text())
    assert set(second["metrics"]) == {"fid"}
    assert second["metrics"]["fid"]["real_statistics_cached"] is True
    assert "3.70" not in text  # no Inception Score, no note about it


@pytest.mark.slow
def test_evaluate_stage2_at_256(tmp_path, shapes_dataset, inception_weights):
    ckpt = _generator_file(tmp_path / "s2.pt", stage=2)
    result, text = _invoke(
        "evaluate", "--ckpt", ckpt, "--inception-weights", inception_weights, "--fid",
        "--no-diversity", "--num-samples", 6, "--splits", 1, "--device", "cpu",
        "--out", tmp_path / "s2.json",
    )  # fmt: skip
    assert result.exit_code == 0, text
    data = json.loads((tmp_path / "s2.json").read_text())
    assert data["protocol"]["resolution"] == 256 and data["checkpoint"]["stage"] == 2
    assert "centre-cropped to 256x256" in data["protocol"]["real_images"]
    assert math.isfinite(data["metrics"]["fid"]["value"]) and data["metrics"]["fid"]["value"] > 0

    # Same seed, other batch size: the same samples (noise is drawn up front), the same FID.
    result, text = _invoke(
        "evaluate", "--ckpt", ckpt, "--inception-weights", inception_weights, "--fid",
        "--no-diversity", "--num-samples", 6, "--splits", 1, "--device", "cpu",
        "--batch-size", 4, "--out", tmp_path / "again.json",
    )  # fmt: skip
    assert result.exit_code == 0, text
    again = json.loads((tmp_path / "again.json").read_text())
    assert again["metrics"]["fid"]["real_statistics_cached"] is True
    assert again["metrics"]["fid"]["value"] == pytest.approx(
        data["metrics"]["fid"]["value"], rel=1e-4
    )


@pytest.mark.slow
def test_evaluate_real_images(shapes_dataset, inception_weights):
    result, text = _invoke(
        "evaluate", "--real", "--dataset", "shapes", "--splits", 2,
        "--inception-weights", inception_weights, "--device", "cpu",
    )  # fmt: skip
    assert result.exit_code == 0, text
    data = json.loads(
        (paths.cache_root() / "evaluations" / "real-shapes-64px.eval.json").read_text()
    )
    assert data["mode"] == "real" and data["checkpoint"] is None
    assert set(data["metrics"]) == {
        "inception_score",
        "fid_real_halves",
        "diversity_real_reference",
    }
    assert data["metrics"]["inception_score"]["samples"] == TEST_IMAGES
    assert data["metrics"]["fid_real_halves"]["halves"] == [10, 10]
    # Scoring the whole split also fills the statistics cache used by FID runs.
    assert len(list((paths.weights_dir() / "fid_stats").glob("shapes-64px-*.npz"))) == 1


def test_offline_without_weights_says_which_file_to_get(
    tmp_path, shapes_dataset, monkeypatch, no_network
):
    # A local port that nothing listens on: the download fails without leaving the machine.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv(URL_ENV, f"http://127.0.0.1:{port}/{WEIGHTS_FILENAME}")
    ckpt = _generator_file(tmp_path / "tiny.pt")
    result, text = _invoke("evaluate", "--ckpt", ckpt, "--num-samples", 10, "--device", "cpu")
    assert result.exit_code == 1, text
    message = " ".join(text.split())
    assert WEIGHTS_FILENAME in message and URL_INCEPTION_V3 in message
    assert str(default_weights_path()) in message and "--inception-weights" in message
    assert "Traceback" not in text
    assert not default_weights_path().exists()
    assert not no_network  # nothing outside 127.0.0.1 was tried


def test_not_an_inception_weights_file(tmp_path, shapes_dataset):
    bogus = tmp_path / "bogus.pth"
    torch.save({"fc.weight": torch.zeros(3, 3)}, bogus)
    ckpt = _generator_file(tmp_path / "tiny.pt")
    result, text = _invoke("evaluate", "--ckpt", ckpt, "--inception-weights", bogus)
    assert result.exit_code == 1
    assert "not torch-fidelity's Inception-v3 weights" in " ".join(text.split())


def test_no_generator_anywhere():
    result, text = _invoke("evaluate")
    assert result.exit_code == 1
    assert "--ckpt" in text


def test_bad_option_combinations(tmp_path):
    cases = [
        (["--resolution", 128, "--real"], ["--resolution", "64 or 256"]),
        (["--resolution", 64], ["--resolution", "--real"]),
        (["--num-samples", 5, "--splits", 6], ["--splits", "exceed", "--num-samples"]),
    ]
    for args, named in cases:
        result, text = _invoke("evaluate", *args)
        assert result.exit_code == 2, text
        message = " ".join(text.replace("│", " ").split())  # rich's box and wrapping undone
        assert "No such option" not in message
        for part in named:
            assert part in message, (args, message)
