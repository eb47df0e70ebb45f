"""``stackgan serve``: the JSON API through FastAPI's test client, the command, the page files."""

from __future__ import annotations

import base64
import io
import json
import socket
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

pytest.importorskip("fastapi", reason="the serve extra is not installed")
import httpx  # noqa: E402

with warnings.catch_warnings():
    # Newer Starlette asks for httpx2 (Python 3.11+) and warns about httpx, which still works.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient
from serve_helpers import LiveServer, write_attngan_file, write_generator_files  # noqa: E402

from stackgan_cli.cli import app as cli_app  # noqa: E402
from stackgan_cli.errors import StackGANError  # noqa: E402
from stackgan_cli.runs import collect_runs  # noqa: E402
from stackgan_cli.serve import generation  # noqa: E402
from stackgan_cli.serve.app import STATIC_DIR, create_app  # noqa: E402
from stackgan_cli.serve.generation import LoadedGenerator  # noqa: E402
from stackgan_cli.serve.server import uvicorn_options  # noqa: E402
from stackgan_cli.serve.validation import MAX_BODY_BYTES, MAX_WAITING_REQUESTS  # noqa: E402


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return write_generator_files(tmp_path_factory.mktemp("generators"))


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory):
    """Two runs: one finished (sample grid, losses.png), one still training (metrics only)."""
    root = tmp_path_factory.mktemp("runs")
    for name, finished in (("done", True), ("training", False)):
        run_dir = root / name
        (run_dir / "samples").mkdir(parents=True)
        config = {"train": {"stage": 1, "epochs": 5, "batch_size": 16}, "model": {}}
        (run_dir / "config.json").write_text(json.dumps(config))
        metrics = [
            {"epoch": 1, "step": s, "errD": 1.0, "errG": 2.0, "kl": 0.1, "time": s}
            for s in (1, 2, 3)
        ]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))
        if finished:
            Image.new("RGB", (10, 6), (200, 0, 0)).save(run_dir / "samples" / "epoch_0005.png")
            Image.new("RGB", (8, 4), (0, 0, 200)).save(run_dir / "losses.png")
    return root


@pytest.fixture(scope="module")
def client(files, runs_dir):
    with TestClient(create_app(files[1], device="cpu", runs_dir=runs_dir)) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def client2(files, runs_dir):
    with TestClient(create_app(files[2], device="cpu", runs_dir=runs_dir)) as test_client:
        yield test_client


def _pixels(url: str) -> np.ndarray:
    prefix = "data:image/png;base64,"
    assert url.startswith(prefix)
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(url[len(prefix) :]))).convert("RGB"))


def _generate(client, **body):
    return client.post("/api/generate", json=body)


def test_health_names_the_loaded_model(client, client2, files):
    health = client.get("/api/health").json()
    assert health["status"] == "ok"
    model = health["model"]
    assert model["path"] == str(files[1]) and model["stage"] == 1
    assert (model["sizes"], model["stages"], model["device"]) == ([64], False, "cpu")
    assert model["dataset"] == "shapes" and model["epoch"] == 3
    assert health["limits"]["max_n"] == 256
    assert client2.get("/api/health").json()["model"]["sizes"] == [64, 256]


def test_generate_returns_the_grid_and_every_image_and_a_seed_repeats_them(client):
    body = {"prompts": ["a red circle", "a blue square"], "n": 3, "seed": 5}
    answer = client.post("/api/generate", json=body)
    assert answer.status_code == 200, answer.text
    result = answer.json()
    assert (result["seed"], result["size"]) == (5, 64)
    assert result["captions"] == ["a red circle", "a blue square"]
    assert [len(row) for row in result["images"]] == [3, 3]
    images = [[_pixels(url) for url in row] for row in result["images"]]
    assert all(image.shape == (64, 64, 3) for row in images for image in row)
    assert not np.array_equal(images[0][0], images[0][1])  # other noise
    assert not np.array_equal(images[0][0], images[1][0])  # other caption
    grid = _pixels(result["grid"])
    assert grid.shape[1] == 3 * 64 + 4 * 2 and grid.shape[0] > 2 * 64
    assert "sketches" not in result

    assert client.post("/api/generate", json=body).json() == result
    other = client.post("/api/generate", json=body | {"seed": 6}).json()
    assert other["images"] != result["images"]
    # A row depends on its caption, the seed and n only, not on the other captions.
    alone = _generate(client, prompts=["a blue square"], n=3, seed=5).json()
    assert alone["images"][0] == result["images"][1]

    drawn = client.post("/api/generate", json={"prompts": ["a red circle"], "n": 1}).json()
    assert isinstance(drawn["seed"], int) and drawn["seed"] >= 0


def test_generate_gives_the_images_of_stackgan_generate(client, files, tmp_path):
    out = tmp_path / "samples"
    result = CliRunner().invoke(
        cli_app,
        [
            "generate",
            "a green triangle",
            "-n",
            "2",
            "--seed",
            "9",
            "--ckpt",
            str(files[1]),
            "--device",
            "cpu",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    api = _generate(client, prompts=["a green triangle"], n=2, seed=9).json()
    for k in range(2):
        written = np.asarray(Image.open(out / f"00_{k:02d}.png").convert("RGB"))
        assert np.array_equal(_pixels(api["images"][0][k]), written)


def test_stage2_sizes_and_stages_side_by_side(client, client2):
    base = {"prompts": ["a yellow star"], "n": 2, "seed": 1}
    big = _generate(client2, **base).json()
    assert big["size"] == 256 and _pixels(big["images"][0][0]).shape == (256, 256, 3)
    small = _generate(client2, **base, size=64).json()
    assert _pixels(small["images"][0][1]).shape == (64, 64, 3)
    staged = _generate(client2, **base, size=256, stages=True).json()
    assert staged["images"] == big["images"]
    ((sketches,),) = [staged["stages"]]
    assert sketches["size"] == 64 and [len(row) for row in sketches["images"]] == [2]
    assert _pixels(sketches["images"][0][0]).shape == (64, 64, 3)
    # Sketch and result side by side: the grid holds four 256-wide pictures per row.
    assert _pixels(staged["grid"]).shape[1] == 4 * 256 + 5 * 2
    assert _pixels(big["grid"]).shape[1] == 2 * 256 + 3 * 2
    assert "stages" not in big

    for answer, named in (
        (_generate(client2, **base, size=128), "Stage-II generator makes 64 or 256"),
        (_generate(client, **base, size=256), "Stage-I generator makes 64"),
        (_generate(client, **base, stages=True), "has none"),
        (_generate(client2, **base, size=64, stages=True), "at size 64"),
    ):
        assert answer.status_code == 422 and named in answer.json()["error"]


def test_a_stackgan_v2_file_serves_each_branch(files, runs_dir):
    with TestClient(create_app(files["v2"], device="cpu", runs_dir=runs_dir)) as v2:
        model = v2.get("/api/health").json()["model"]
        assert (model["family"], model["branches"], model["sizes"]) == ("v2", 3, [64, 128, 256])
        assert model["label"] == "StackGAN-v2 generator" and model["stages"]
        base = {"prompts": ["a green circle"], "n": 2, "seed": 3}
        for size in (64, 128, 256):
            result = _generate(v2, **base, size=size).json()
            assert _pixels(result["images"][0][1]).shape == (size, size, 3)
        staged = _generate(v2, **base, size=128, stages=True).json()
        assert [output["size"] for output in staged["stages"]] == [64]
        assert staged["images"] == _generate(v2, **base, size=128).json()["images"]
        assert _pixels(staged["grid"]).shape[1] == 4 * 128 + 5 * 2
        every = _generate(v2, **base, stages=True).json()
        assert [output["size"] for output in every["stages"]] == [64, 128]
        assert _pixels(every["grid"]).shape[1] == 6 * 256 + 7 * 2
        answer = _generate(v2, **base, size=512)
        assert answer.status_code == 422
        assert "makes 64, 128 or 256" in answer.json()["error"]


def test_an_attngan_file_answers_with_its_attention_figures(client, tmp_path, runs_dir):
    with TestClient(
        create_app(write_attngan_file(tmp_path), device="cpu", runs_dir=runs_dir)
    ) as attn:
        model = attn.get("/api/health").json()["model"]
        assert model["family"] == "attngan" and model["attention"] is True
        base = {"prompts": ["a red circle", "a blue square on a plain background"], "n": 2}
        result = _generate(attn, **base, seed=4, size=128, attention=True).json()
        figures = result["attention"]
        assert [len(row) for row in figures] == [2, 2]
        # One row per attending stage (64 and 128 px: the branches up to the size asked for
        # and beyond: every output), the image then one map per word: wider for more words.
        short, long = _pixels(figures[0][0]), _pixels(figures[1][0])
        assert short.std() > 10 and long.shape[1] > short.shape[1]
        assert result["images"] == _generate(attn, **base, seed=4, size=128).json()["images"]
        assert "attention" not in _generate(attn, **base, seed=4).json()
    assert client.get("/api/health").json()["model"]["attention"] is False
    answer = _generate(client, prompts=["a red circle"], n=1, attention=True)
    assert answer.status_code == 422 and "AttnGAN" in answer.json()["error"]


BAD_REQUESTS = [
    # (body or raw bytes, content type, status, words of the error)
    (b"{not json", "application/json", 400, "not valid JSON"),
    (b"", "application/json", 400, "not valid JSON"),
    (b"[" * 60000, "application/json", 400, "not valid JSON"),
    ({"prompts": ["a red bird"]}, "text/plain", 415, "Content-Type: application/json"),
    (["a red bird"], "application/json", 422, "JSON object"),
    ({}, "application/json", 422, "prompts: is missing"),
    ({"prompts": []}, "application/json", 422, "prompts"),
    ({"prompts": "a red bird"}, "application/json", 422, "prompts"),
    ({"prompts": [""]}, "application/json", 422, "prompts[0] is empty"),
    ({"prompts": ["a bird", " \t\n "]}, "application/json", 422, "prompts[1] is empty"),
    ({"prompts": [3]}, "application/json", 422, "prompts[0]"),
    ({"prompts": ["a bird"], "n": 0}, "application/json", 422, "n: input should be greater"),
    ({"prompts": ["a bird"], "n": 257}, "application/json", 422, "n: input should be less"),
    ({"prompts": ["a bird"], "n": "8"}, "application/json", 422, "n: input should be a valid"),
    ({"prompts": ["a bird"], "n": 2.5}, "application/json", 422, "n: input should be a valid"),
    ({"prompts": ["a bird"], "n": True}, "application/json", 422, "n: input should be a valid"),
    ({"prompts": ["a bird"], "seed": -1}, "application/json", 422, "seed"),
    ({"prompts": ["a bird"], "seed": 2**40}, "application/json", 422, "seed"),
    ({"prompts": ["a bird"], "size": "big"}, "application/json", 422, "size"),
    ({"prompts": ["a bird"], "stages": "yes"}, "application/json", 422, "stages"),
    ({"prompts": ["a bird"], "prompt": "x"}, "application/json", 422, "prompt: is not a known"),
    ({"prompts": ["a bird"] * 17}, "application/json", 422, "prompts"),
    ({"prompts": ["a bird"] * 2, "n": 200}, "application/json", 422, "at most 256"),
    ({"prompts": ["a " * 1500]}, "application/json", 422, "at most 2000"),
    ({"prompts": ["a bird " * 20000]}, "application/json", 413, "at most 65536 bytes are accepted"),
]


@pytest.mark.parametrize(("body", "content_type", "status", "words"), BAD_REQUESTS)
def test_bad_requests_get_a_4xx_json_error(client, body, content_type, status, words):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    start = time.perf_counter()
    answer = client.post("/api/generate", content=data, headers={"Content-Type": content_type})
    assert time.perf_counter() - start < 2.0
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert words in error and "\n" not in error
    assert client.get("/api/health").status_code == 200


def test_a_megabyte_is_refused_before_it_is_read(client):
    prompt = "a red bird " * 100_000
    start = time.perf_counter()
    answer = _generate(client, prompts=[prompt])
    assert answer.status_code == 413 and time.perf_counter() - start < 1.0

    def chunks():  # no Content-Length: the server counts what arrives
        for _ in range(64):
            yield b"x" * 16384

    answer = client.post(
        "/api/generate", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert answer.status_code == 413 and str(MAX_BODY_BYTES) in answer.json()["error"]


def test_16_concurrent_requests_are_answered_or_refused_one_generation_at_a_time(
    files, runs_dir, monkeypatch
):
    running, most = 0, 0
    guard = threading.Lock()
    real_run = generation.run_generator

    def counting_run(*args, **kwargs):
        nonlocal running, most
        with guard:
            running += 1
            most = max(most, running)
        try:
            time.sleep(0.02)  # widen the window in which an overlap would show
            return real_run(*args, **kwargs)
        finally:
            with guard:
                running -= 1

    monkeypatch.setattr(generation, "run_generator", counting_run)
    app = create_app(files[1], device="cpu", runs_dir=runs_dir)
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as http:

        def ask(seed: int) -> httpx.Response:
            return http.post(
                "/api/generate", json={"prompts": ["a red circle"], "n": 4, "seed": seed}
            )

        with ThreadPoolExecutor(16) as pool:
            answers = list(pool.map(ask, range(16)))
    # Past the queue's bound a request is refused (503) rather than left waiting.
    answered = [seed for seed, answer in enumerate(answers) if answer.status_code == 200]
    assert all(answer.status_code in (200, 503) for answer in answers)
    assert len(answered) >= MAX_WAITING_REQUESTS + 1
    assert [answers[seed].json()["seed"] for seed in answered] == answered
    assert most == 1


def test_runs_view_lists_the_runs_and_serves_their_pictures(client, runs_dir):
    runs = client.get("/api/runs").json()
    assert runs == collect_runs(runs_dir)
    assert {run["name"] for run in runs} == {"done", "training"}

    sample = client.get("/api/runs/done/sample.png")
    assert sample.status_code == 200 and sample.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(sample.content)).size == (10, 6)
    losses = client.get("/api/runs/done/losses.png")
    assert Image.open(io.BytesIO(losses.content)).size == (8, 4)
    drawn = client.get("/api/runs/training/losses.png")  # still training: drawn from metrics
    assert drawn.status_code == 200 and Image.open(io.BytesIO(drawn.content)).size[0] > 100

    for path in (
        "/api/runs/training/sample.png",
        "/api/runs/missing/losses.png",
        "/api/runs/../sample.png",
        "/api/runs/%2E%2E/sample.png",
        "/api/runs/..%2Fdone/sample.png",
    ):
        answer = client.get(path)
        assert answer.status_code == 404, path
        assert "error" in answer.json()


def test_runs_of_a_missing_folder_is_an_empty_list(files, tmp_path):
    app = create_app(
        device="cpu", runs_dir=tmp_path / "none", model=LoadedGenerator.load(files[1], "cpu")
    )
    with TestClient(app) as test_client:
        assert test_client.get("/api/runs").json() == []


def test_the_page_and_its_files_work_offline(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert '<script src="/static/app.js"' in page.text
    for name, kind in (("app.js", "javascript"), ("style.css", "text/css")):
        answer = client.get(f"/static/{name}")
        assert answer.status_code == 200 and kind in answer.headers["content-type"]
    for path in STATIC_DIR.iterdir():  # nothing is fetched from elsewhere
        text = path.read_text()
        assert "http://" not in text and "https://" not in text and "//cdn" not in text
    assert client.get("/docs").status_code == 404  # FastAPI's docs page loads a CDN script


def test_unknown_routes_and_methods_answer_json(client):
    assert client.get("/nope").json() == {"error": "Not Found"}
    answer = client.get("/api/generate")
    assert answer.status_code == 405 and "error" in answer.json()


def test_host_check_against_dns_rebinding(files, runs_dir):
    model = LoadedGenerator.load(files[1], "cpu")
    app = create_app(model=model, runs_dir=runs_dir, allowed_hosts=["127.0.0.1", "localhost"])
    with TestClient(app, base_url="http://127.0.0.1:8000") as test_client:
        assert test_client.get("/api/health").status_code == 200
        answer = test_client.get("/api/health", headers={"Host": "evil.example:8000"})
        assert answer.status_code == 400 and "answers only" in answer.json()["error"]


def test_a_generator_without_text_encoder_is_refused(files, tmp_path):
    import torch

    state = torch.load(files[1], weights_only=True)["generator"]
    torch.save(state, tmp_path / "netG_epoch_1.pth")
    with pytest.raises(StackGANError, match="no text encoder"):
        LoadedGenerator.load(tmp_path / "netG_epoch_1.pth", "cpu")


# --- the command ---------------------------------------------------------------------------


def _serve(*args):
    return CliRunner().invoke(cli_app, ["serve", *map(str, args)])


@pytest.fixture
def fake_uvicorn(monkeypatch):
    import uvicorn

    calls = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kwargs: calls.append((app, kwargs)))
    return calls


def test_serve_prints_the_url_and_runs_uvicorn_on_the_loopback(files, fake_uvicorn):
    from fastapi import FastAPI

    result = _serve("--ckpt", files[1], "--port", 8123, "--device", "cpu")
    assert result.exit_code == 0, result.output
    ((app, kwargs),) = fake_uvicorn
    assert isinstance(app, FastAPI)
    assert kwargs == {
        "host": "127.0.0.1",
        "port": 8123,
        "log_level": "warning",
        "timeout_graceful_shutdown": 5,
        **uvicorn_options(),
    }
    assert "open http://127.0.0.1:8123/" in result.stderr
    assert str(files[1]) in result.stderr
    assert "warning" not in result.stderr
    assert app.state.model.describe()["stage"] == 1


def test_serve_on_another_host_warns_that_the_network_can_reach_it(files, fake_uvicorn):
    result = _serve("--ckpt", files[1], "--host", "0.0.0.0", "--port", 8124, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert fake_uvicorn[0][1]["host"] == "0.0.0.0"
    assert "warning:" in result.stderr and "reachable from the network" in result.stderr
    assert "open http://127.0.0.1:8124/" in result.stderr


def test_serve_without_the_extra_says_how_to_install_it(files, monkeypatch):
    monkeypatch.setitem(sys.modules, "fastapi", None)  # import fastapi now raises ImportError
    result = _serve("--ckpt", files[1])
    assert result.exit_code == 1
    assert result.stderr.strip().count("\n") == 0
    assert 'pip install "stackgan-cli[serve]"' in result.stderr


def test_serve_errors_are_one_line(files, fake_uvicorn, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = _serve("--ckpt", files[1], "--port", port)
    assert result.exit_code == 1 and "pick another --port" in result.stderr
    result = _serve("--device", "cpu", "--port", 8125)  # no --ckpt, no runs in the cache
    assert result.exit_code == 1 and "no trained generator" in result.stderr
    result = _serve("--ckpt", tmp_path / "missing.pt", "--port", 8125)
    assert result.exit_code == 1 and result.stderr.strip().count("\n") == 0
    assert _serve("--port", 0).exit_code == 2
    assert fake_uvicorn == []
