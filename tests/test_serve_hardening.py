"""``stackgan serve`` against hostile or careless clients and run folders, on a real uvicorn
server: symbolic links out of the runs folder, slow and silent connections, a flood of
generate requests, clients that leave, text that is not Unicode, names too long for a path."""

from __future__ import annotations

import io
import json
import os
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra is not installed")
import httpx  # noqa: E402
import torch  # noqa: E402
from serve_helpers import LiveServer, write_generator_files  # noqa: E402

from stackgan_cli.serve import generation, validation  # noqa: E402
from stackgan_cli.serve.app import create_app  # noqa: E402
from stackgan_cli.serve.generation import LoadedGenerator, device_lock  # noqa: E402
from stackgan_cli.serve.server import MAX_IDLE_CONNECTIONS, uvicorn_options  # noqa: E402
from stackgan_cli.serve.validation import MAX_WAITING_REQUESTS  # noqa: E402

PROMPT = {"prompts": ["a red circle"], "n": 1, "seed": 1}


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    files = write_generator_files(tmp_path_factory.mktemp("generators"))
    return LoadedGenerator.load(files[1], "cpu")


def _png(path: Path, size: tuple[int, int]) -> bytes:
    Image.new("RGB", size, (0, 120, 0)).save(path)
    return path.read_bytes()


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A runs folder whose runs hold links and FIFOs, beside an outside folder they point to."""
    top = tmp_path_factory.mktemp("tree")
    runs, outside = top / "runs", top / "outside"
    (outside / "samples").mkdir(parents=True)
    secret = _png(outside / "secret.png", (7, 7))
    _png(outside / "samples" / "epoch_0001.png", (5, 5))
    _png(outside / "losses.png", (5, 5))
    (outside / "metrics.jsonl").write_text(
        json.dumps({"epoch": 1, "step": 1, "errD": 9.0, "errG": 9.0, "time": 1}) + "\n"
    )

    good = runs / "good"
    (good / "samples").mkdir(parents=True)
    older = _png(good / "samples" / "epoch_0001.png", (10, 6))
    (good / "samples" / "epoch_9999.png").symlink_to("/etc/passwd")
    (good / "samples" / "epoch_9998.png").symlink_to(outside / "secret.png")
    (good / "losses.png").symlink_to(outside / "secret.png")
    metrics = [{"epoch": 1, "step": s, "errD": 1.0, "errG": 2.0, "time": s} for s in (1, 2, 3)]
    (good / "metrics.jsonl").write_text("".join(json.dumps(m) + "\n" for m in metrics))

    fifo = runs / "fifo"
    (fifo / "samples").mkdir(parents=True)
    fifo_older = _png(fifo / "samples" / "epoch_0001.png", (4, 8))
    os.mkfifo(fifo / "samples" / "epoch_0002.png")
    os.mkfifo(fifo / "losses.png")

    only_links = runs / "only_links"
    (only_links / "samples").mkdir(parents=True)
    (only_links / "samples" / "epoch_0003.png").symlink_to("/etc/passwd")
    (only_links / "metrics.jsonl").symlink_to(outside / "metrics.jsonl")

    inside = runs / "inside"
    (inside / "samples").mkdir(parents=True)
    (inside / "samples" / "epoch_0002.png").symlink_to(good / "samples" / "epoch_0001.png")
    inside_chart = _png(inside / "chart.png", (3, 9))
    (inside / "losses.png").symlink_to("chart.png")

    (runs / "linked").symlink_to(outside, target_is_directory=True)
    (runs / "alias").symlink_to("good", target_is_directory=True)
    (runs / "loop").symlink_to("loop")
    return {
        "runs": runs,
        "outside": outside,
        "secret": secret,
        "older": older,
        "fifo_older": fifo_older,
        "inside_chart": inside_chart,
    }


@pytest.fixture(scope="module")
def live(model, tree):
    with LiveServer(create_app(model=model, runs_dir=tree["runs"])) as server:
        yield server


@pytest.fixture
def generations(monkeypatch):
    """How many times the networks ran (each call still runs the real generator)."""
    calls = []
    real_run = generation.run_generator

    def counting_run(*args, **kwargs):
        calls.append(1)
        return real_run(*args, **kwargs)

    monkeypatch.setattr(generation, "run_generator", counting_run)
    return calls


def _get(server: LiveServer, path: str) -> httpx.Response:
    return httpx.get(server.url + path, timeout=10)


def test_only_regular_files_inside_the_runs_folder_are_served(live, tree):
    passwd = Path("/etc/passwd").read_bytes()
    sample = _get(live, "/api/runs/good/sample.png")
    assert sample.status_code == 200 and sample.headers["content-type"] == "image/png"
    # The newest sample links out of the runs folder: the older real one is served instead.
    assert sample.content == tree["older"]
    assert _get(live, "/api/runs/fifo/sample.png").content == tree["fifo_older"]
    assert _get(live, "/api/runs/alias/sample.png").content == tree["older"]
    assert _get(live, "/api/runs/inside/sample.png").content == tree["older"]

    # losses.png links outside: the chart is drawn from the run's own metrics instead.
    losses = _get(live, "/api/runs/good/losses.png")
    assert losses.status_code == 200 and losses.content not in (tree["secret"], passwd)
    assert Image.open(io.BytesIO(losses.content)).size[0] > 100
    assert _get(live, "/api/runs/inside/losses.png").content == tree["inside_chart"]

    for path, words in (
        ("/api/runs/only_links/sample.png", "run only_links has no sample grid yet"),
        ("/api/runs/only_links/losses.png", "run only_links has no losses recorded yet"),
        ("/api/runs/fifo/losses.png", "run fifo has no losses recorded yet"),
        ("/api/runs/linked/sample.png", "no run named 'linked'"),
        ("/api/runs/linked/losses.png", "no run named 'linked'"),
        ("/api/runs/loop/sample.png", "no run named 'loop'"),
    ):
        answer = _get(live, path)
        assert answer.status_code == 404, path
        assert answer.json() == {"error": words}, path


@pytest.mark.parametrize(
    "name",
    ["missing", "x" * 5000, "%00", "a%00b", "linked", "loop", "%F0%9F%90%A6"],
)
def test_a_404_names_the_run_and_never_a_path(live, tree, name):
    answer = _get(live, f"/api/runs/{name}/sample.png")
    assert answer.status_code == 404, answer.text
    error = answer.json()["error"]
    assert error.startswith("no run named ") and "\n" not in error and len(error) < 120
    assert str(tree["runs"].parent) not in answer.text and "/tmp" not in answer.text
    assert _get(live, f"/api/runs/{name}/losses.png").status_code == 404


def test_a_lone_surrogate_is_refused_before_generating(live, generations):
    for raw, index in (
        (b'{"prompts": ["\\ud800"]}', 0),
        (b'{"prompts": ["a red bird", "a blue \\udfff square"], "n": 1}', 1),
    ):
        answer = httpx.post(
            live.url + "/api/generate",
            content=raw,
            headers={"Content-Type": "application/json"},
            timeout=10,
        )
        assert answer.status_code == 422, answer.text
        error = answer.json()["error"]
        assert error.startswith(f"prompts[{index}] is not valid Unicode: a lone surrogate U+")
    assert generations == []
    # An escaped surrogate pair is one valid character.
    pair = httpx.post(
        live.url + "/api/generate",
        content=b'{"prompts": ["a bird \\ud83d\\udc26"], "n": 1, "seed": 2}',
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    assert pair.status_code == 200 and pair.json()["captions"] == ["a bird \U0001f426"]
    assert len(generations) == 1


def _wait_for(condition, seconds: float = 15.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


def test_a_full_queue_answers_503_at_once(model, tree):
    app = create_app(model=model, runs_dir=tree["runs"])
    queue, lock = app.state.queue, device_lock(torch.device("cpu"))
    with LiveServer(app) as server, httpx.Client(base_url=server.url, timeout=60) as http:
        with ThreadPoolExecutor(MAX_WAITING_REQUESTS + 1) as pool:
            lock.acquire()  # the device is busy: requests wait behind it
            try:
                waiting = [
                    pool.submit(http.post, "/api/generate", json=PROMPT | {"seed": seed})
                    for seed in range(MAX_WAITING_REQUESTS + 1)
                ]
                _wait_for(lambda: queue.admitted == MAX_WAITING_REQUESTS + 1)
                start = time.monotonic()
                refused = http.post("/api/generate", json=PROMPT)
                assert time.monotonic() - start < 2.0
                assert refused.status_code == 503
                error = refused.json()["error"]
                assert "busy" in error and f"{MAX_WAITING_REQUESTS} requests" in error
                assert "\n" not in error
                health = http.get("/api/health")
                assert health.json()["limits"]["max_waiting_requests"] == MAX_WAITING_REQUESTS
            finally:
                lock.release()
            answers = [future.result() for future in waiting]
        assert [answer.status_code for answer in answers] == [200] * (MAX_WAITING_REQUESTS + 1)
        assert sorted(answer.json()["seed"] for answer in answers) == list(
            range(MAX_WAITING_REQUESTS + 1)
        )
        assert queue.admitted == 0
        assert http.post("/api/generate", json=PROMPT).status_code == 200


def _raw_post(port: int, body: dict) -> socket.socket:
    data = json.dumps(body).encode()
    client = socket.create_connection(("127.0.0.1", port))
    client.sendall(
        b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(data)}\r\n\r\n".encode()
        + data
    )
    return client


def test_a_waiting_request_whose_client_left_is_not_generated(model, tree, generations):
    app = create_app(model=model, runs_dir=tree["runs"])
    queue, lock = app.state.queue, device_lock(torch.device("cpu"))
    with LiveServer(app) as server, ThreadPoolExecutor(1) as pool:
        connections = server.server.server_state.connections
        lock.acquire()
        try:
            gone = _raw_post(server.port, PROMPT)
            _wait_for(lambda: queue.admitted == 1)
            gone.close()
            _wait_for(lambda: not connections)  # the server has seen it go
            stays = pool.submit(
                httpx.post, server.url + "/api/generate", json=PROMPT | {"seed": 7}, timeout=60
            )
            _wait_for(lambda: queue.admitted == 2)
        finally:
            lock.release()
        answer = stays.result()
        assert answer.status_code == 200 and answer.json()["seed"] == 7
        _wait_for(lambda: queue.admitted == 0)
    assert len(generations) == 1


def _closed(client: socket.socket) -> bool:
    """Whether the server has closed this connection (any answer it sent is read first)."""
    try:
        while True:
            data = client.recv(65536, socket.MSG_DONTWAIT)
            if not data:
                return True
    except BlockingIOError:
        return False
    except ConnectionError:
        return True


def test_silent_and_dripping_connections_are_closed_and_the_page_still_answers(model, tree):
    timeout = 2.0
    app = create_app(model=model, runs_dir=tree["runs"])
    with LiveServer(app, **uvicorn_options(header_timeout=timeout)) as server:
        start = time.monotonic()
        silent = []
        for _ in range(300):
            client = socket.create_connection(("127.0.0.1", server.port))
            client.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            silent.append(client)
        dripping = []
        for _ in range(3):
            client = socket.create_connection(("127.0.0.1", server.port))
            client.sendall(b"GET /api/health HTTP/1.1\r\n")
            dripping.append(client)
        # A whole request, then half of the next one on the same connection.
        second = socket.create_connection(("127.0.0.1", server.port))
        second.sendall(b"GET /api/health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        assert second.recv(65536).startswith(b"HTTP/1.1 200")
        second.sendall(b"GET /api/health HTTP/1.1\r\n")

        answer = httpx.get(server.url + "/api/health", timeout=5)
        assert answer.status_code == 200 and answer.json()["status"] == "ok"
        # Beyond the cap, the longest waiting connections are closed at once, long before
        # the deadline would close them.
        while sum(not _closed(client) for client in silent) > MAX_IDLE_CONNECTIONS:
            assert time.monotonic() - start < timeout - 0.5, "idle connections were not capped"
            time.sleep(0.02)

        everyone = [*silent, *dripping, second]
        while not all(_closed(client) for client in everyone):
            assert time.monotonic() - start < timeout + 6, "slow connections stayed open"
            for client in dripping:
                try:
                    client.sendall(b"X")  # a header byte now and then
                except ConnectionError:
                    pass
            time.sleep(0.2)
        assert time.monotonic() - start >= timeout - 0.5  # closed by the deadline, not before
        assert httpx.get(server.url + "/api/health", timeout=5).status_code == 200
        for client in everyone:
            client.close()


def test_a_body_that_does_not_arrive_is_refused(model, tree, monkeypatch, generations):
    monkeypatch.setattr(validation, "BODY_TIMEOUT_S", 0.5)
    app = create_app(model=model, runs_dir=tree["runs"])
    with LiveServer(app) as server:
        client = socket.create_connection(("127.0.0.1", server.port))
        client.settimeout(5)
        start = time.monotonic()
        client.sendall(
            b"POST /api/generate HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b'Content-Type: application/json\r\nContent-Length: 100\r\n\r\n{"prom'
        )
        reply = client.recv(65536)
        assert time.monotonic() - start < 3
        head, _, body = reply.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 408")
        assert json.loads(body)["error"].startswith("the request body did not arrive within")
        client.close()
    assert generations == []


def test_serving_starts_uvicorn_with_the_connection_limits():
    options = uvicorn_options()
    protocol = options["http"]
    assert protocol.header_timeout == 10.0 and protocol.max_idle == MAX_IDLE_CONNECTIONS
    assert options["limit_concurrency"] > MAX_IDLE_CONNECTIONS
    assert uvicorn_options()["http"] is protocol  # one class: uvicorn.run's kwargs compare equal
    assert options["ws"] == "none"
