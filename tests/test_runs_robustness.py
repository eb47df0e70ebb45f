"""``stackgan runs`` and the page's runs view on damaged run folders: wrong JSON types, deep
nesting, named pipes and devices in place of files, non-finite numbers, very large files."""

import io
import json
import os
import resource
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from stackgan_cli.charts import plot_losses
from stackgan_cli.cli import app
from stackgan_cli.runs import collect_runs, read_run
from stackgan_cli.runs.plot import plot_runs
from stackgan_cli.training.config import TrainConfig
from stackgan_cli.training.metrics_file import (
    MAX_RECORDS,
    READ_BYTES,
    TAIL_BYTES,
    last_record,
    read_metrics,
)

needs_fifo = pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
DEEP = 30_000  # nesting levels: far past the JSON decoder's recursion limit, under 64 KiB


def metrics_line(step: int, *, d: float = 1.0) -> str:
    record = {"epoch": 1 + step // 100, "step": step, "errD": d, "errG": 2.0, "kl": 0.1}
    return json.dumps(record | {"time": float(step)}) + "\n"


def make_run(root: Path, name: str, *, train: dict | None = None, config: dict | None = None,
             metrics: str | None = None) -> Path:  # fmt: skip
    """A run folder as training leaves it: config.json (``train`` merged into the settings,
    ``config`` into the file) and a three-record metrics.jsonl (or ``metrics``)."""
    run_dir = root / name
    run_dir.mkdir(parents=True)
    settings = TrainConfig(dataset="shapes", run_dir=str(run_dir)).to_dict() | (train or {})
    content = {"train": settings, "model": {"gf_dim": 8, "df_dim": 8}} | (config or {})
    (run_dir / "config.json").write_text(json.dumps(content))
    lines = metrics if metrics is not None else "".join(metrics_line(s) for s in (1, 2, 3))
    (run_dir / "metrics.jsonl").write_text(lines)
    return run_dir


def strict_json(text: str):
    """``text`` parsed as strict JSON: NaN and Infinity refused."""

    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    return json.loads(text, parse_constant=refuse)


def runs_cli(*args) -> object:
    return CliRunner().invoke(app, ["runs", *map(str, args)], env={"COLUMNS": "250"})


def test_malformed_config_values_are_problems_of_a_listed_run(tmp_path):
    make_run(tmp_path, "arch-list", train={"arch": ["v2"], "epochs": "many"})
    make_run(tmp_path, "nested-config", config={"model": json.loads("[" * 500 + "]" * 500)})
    deep = make_run(tmp_path, "deep-config")
    (deep / "config.json").write_text('{"train": ' + "[" * DEEP + "]" * DEEP + "}")
    make_run(tmp_path, "huge-config", config={"notes": "x" * (2 * 2**20)})
    make_run(tmp_path, "odd-out", train={"out": "~no-such-user-here/g.pt", "lr_d": "fast"})
    make_run(tmp_path, "nul-out", train={"out": "a\x00b.pt"}, config={"dataset": ["shapes"]})
    deep_line = '{"a": ' + "[" * DEEP + "]" * DEEP + "}\n"
    make_run(tmp_path, "deep-metrics", metrics=metrics_line(1) + metrics_line(2) + deep_line)

    records = {record["name"]: record for record in collect_runs(tmp_path)}
    assert len(records) == 7
    arch = records["arch-list"]
    assert "config.json: train.arch is a list" in arch["problems"]
    assert "config.json: train.epochs is text" in arch["problems"]
    assert (arch["family"], arch["model"], arch["epochs_planned"]) == (None, None, None)
    assert arch["steps"] == 3
    assert records["nested-config"]["problems"] == ["config.json: model is a list"]
    assert records["nested-config"]["model_config"] is None
    assert records["deep-config"]["problems"] == ["config.json is unreadable (nested too deeply)"]
    assert records["huge-config"]["problems"] == ["config.json is too large (over 1 MiB)"]
    assert records["odd-out"]["problems"] == ["config.json: train.lr_d is text"]
    assert records["odd-out"]["regime"] == {"lr_d": None}
    assert records["nul-out"]["problems"] == ["config.json: dataset is a list"]
    assert records["nul-out"]["dataset"] == "shapes"  # from the training settings
    assert records["deep-metrics"]["problems"] == [] and records["deep-metrics"]["steps"] == 2

    table = runs_cli(tmp_path)
    assert table.exit_code == 0, table.output
    for name in records:
        assert name in table.output
    assert "train.arch" in table.output
    listed = runs_cli(tmp_path, "--json")
    assert listed.exit_code == 0, listed.output
    assert {record["name"] for record in strict_json(listed.output)} == set(records)


def test_non_finite_settings_of_older_runs_are_null_in_strict_json(tmp_path):
    make_run(
        tmp_path,
        "infinite",
        train={"lr_g": float("inf"), "kl_coeff": float("nan")},
        config={"model": {"gf_dim": 8, "df_dim": float("-inf")}},
    )
    assert "Infinity" in (tmp_path / "infinite" / "config.json").read_text()

    listed = runs_cli(tmp_path, "--json")
    assert listed.exit_code == 0, listed.output
    (record,) = strict_json(listed.output)
    assert record["regime"] == {"lr_g": None, "kl_coeff": None}
    assert record["model_config"] == {"gf_dim": 8, "df_dim": None}
    assert record["problems"] == [
        "config.json: train.lr_g is not a finite number (inf)",
        "config.json: train.kl_coeff is not a finite number (nan)",
        "config.json: model.df_dim is not a finite number (-inf)",
    ]
    table = runs_cli(tmp_path)
    assert table.exit_code == 0 and "infinite" in table.output
    assert "train.lr_g" in table.output


def _limited_memory() -> None:
    """In the child: 2 GiB of address space, so a reader of /dev/zero fails fast."""
    resource.setrlimit(resource.RLIMIT_AS, (2 * 2**30, 2 * 2**30))


@needs_fifo
def test_named_pipes_and_devices_are_listed_without_blocking(tmp_path):
    runs = tmp_path / "runs"
    pipes = [make_run(runs, "fifo-metrics") / "metrics.jsonl"]
    pipes += [make_run(runs, "fifo-config") / "config.json"]
    pipes += [runs / "fifo-config" / "generator.eval.json"]  # an evaluation report's name
    for pipe in pipes:
        pipe.unlink(missing_ok=True)
        os.mkfifo(pipe)
    for name, file in (("zero-metrics", "metrics.jsonl"), ("zero-config", "config.json")):
        (make_run(runs, name) / file).unlink()
        (runs / name / file).symlink_to("/dev/zero")

    # A child process, so that a reader that blocks or reads without end fails the test.
    command = [sys.executable, "-m", "stackgan_cli", "runs", str(runs), "--json"]
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=60, preexec_fn=_limited_memory
    )
    assert done.returncode == 0, done.stderr
    records = {record["name"]: record for record in strict_json(done.stdout)}
    assert records["fifo-metrics"]["problems"] == [
        "metrics.jsonl is not a regular file (a named pipe)"
    ]
    assert records["fifo-metrics"]["family"] == "v1"
    assert records["fifo-config"]["problems"] == [
        "config.json is not a regular file (a named pipe)"
    ]
    assert records["fifo-config"]["steps"] == 3 and records["fifo-config"]["evaluation"] is None
    assert records["zero-metrics"]["problems"] == ["metrics.jsonl is not a regular file (a device)"]
    assert records["zero-config"]["problems"] == ["config.json is not a regular file (a device)"]

    table = subprocess.run(
        command[:-1], capture_output=True, text=True, timeout=60, preexec_fn=_limited_memory,
        env={**os.environ, "COLUMNS": "250"},
    )  # fmt: skip
    assert table.returncode == 0, table.stderr
    assert "metrics.jsonl is not a regular file (a named pipe)" in table.stdout


def test_the_last_record_of_a_large_file_is_read_from_its_end(tmp_path):
    run_dir = make_run(tmp_path, "long", metrics="")
    filler = metrics_line(7, d=9.0).encode()
    with open(run_dir / "metrics.jsonl", "wb") as handle:
        handle.write(filler * (50 * 2**20 // len(filler)))
        handle.write(metrics_line(123_456, d=0.25).encode())
        handle.write(b'{"epoch": 2, "step": 123457, "errD": 0.')  # torn: killed mid-write

    tracemalloc.start()
    try:
        record = read_run(run_dir)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (record["steps"], record["d_loss"], record["problems"]) == (123_456, 0.25, [])
    assert peak < 2 * 2**20
    listed = runs_cli(tmp_path, "--json")
    assert strict_json(listed.output)[0]["steps"] == 123_456


def test_over_long_and_foreign_lines_at_the_end_are_passed_over(tmp_path):
    path = tmp_path / "metrics.jsonl"
    path.write_text(metrics_line(5) + "x" * (300 * 1024) + "\n[1, 2]\n" + "{" * DEEP + "\n")
    assert last_record(path)["step"] == 5
    path.write_text(metrics_line(6).rstrip("\n"))  # one record, no newline
    assert last_record(path)["step"] == 6

    problems: list[str] = []
    path.write_text(metrics_line(1) + "y" * (TAIL_BYTES + 10))
    assert last_record(path, problems) is None
    assert problems == ["metrics.jsonl holds no record in its last 4 MiB"]


def test_chart_records_of_a_large_file_are_bounded_and_span_the_run(tmp_path):
    run_dir = make_run(tmp_path, "long", metrics="")
    line = '{{"epoch": 1, "step": {0}, "errD": 1.0, "errG": 2.0, "kl": 0.1, "time": {0}.0}}\n'
    (run_dir / "metrics.jsonl").write_text("".join(map(line.format, range(1, 600_001))))
    assert (run_dir / "metrics.jsonl").stat().st_size > 10 * READ_BYTES

    tracemalloc.start()
    try:
        records = read_metrics(run_dir / "metrics.jsonl")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    seen = [record["step"] for record in records]
    assert 1000 < len(seen) <= MAX_RECORDS
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    assert seen[0] < 1000 and seen[-1] > 599_000  # from the start to the end of the run
    assert peak < 64 * 2**20

    chart = plot_runs(collect_runs(tmp_path), tmp_path / "losses.png")
    assert Image.open(chart).size[0] == 1000


ODD_RECORDS = (
    '{"errD": 1.0}\n{"step": 4, "errD": "high"}\n{"step": [5], "errG": 1.0}\n'
    '{"step": 6, "errD": ' + "9" * 400 + "}\n"
)
"""Metrics lines a chart cannot use: no step, text, a list, an integer past the float range."""


def test_charts_skip_deeply_nested_and_malformed_metrics_lines(tmp_path):
    path = make_run(tmp_path, "odd", metrics="") / "metrics.jsonl"
    deep_line = "[" * DEEP + "]" * DEEP + "\n"
    path.write_text(metrics_line(1) + deep_line + ODD_RECORDS + metrics_line(2))
    records = read_metrics(path)
    assert [record.get("step") for record in records] == [1, None, 4, [5], 6, 2]

    chart = plot_losses(path, tmp_path / "losses.png", "odd")
    assert Image.open(chart).size == (960, 540)
    assert Image.open(plot_runs(collect_runs(tmp_path), tmp_path / "all.png")).size[0] == 1000
    assert read_run(path.parent)["steps"] == 2


# --- the page's runs view --------------------------------------------------------------------


@pytest.fixture(scope="module")
def generator_file(tmp_path_factory):
    pytest.importorskip("fastapi", reason="the serve extra is not installed")
    from serve_helpers import write_generator_files

    return write_generator_files(tmp_path_factory.mktemp("generators"))[1]


def _release_readers(pipes: list[Path]) -> None:
    """Open and close each pipe's writing end: a reader blocked on it gets end-of-file."""
    for pipe in pipes:
        try:
            os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:  # no reader waiting
            pass


@needs_fifo
def test_the_runs_api_lists_damaged_runs_and_draws_their_losses(generator_file, tmp_path):
    import httpx
    from serve_helpers import LiveServer

    from stackgan_cli.serve.app import create_app

    runs = tmp_path / "runs"
    make_run(runs, "arch-list", train={"arch": ["v2"]})
    make_run(runs, "infinite", train={"lr_g": float("inf")})
    deep_line = "[" * DEEP + "]" * DEEP + "\n"
    make_run(runs, "deep-metrics", metrics=metrics_line(1) + deep_line + metrics_line(2))
    make_run(runs, "odd-metrics", metrics=metrics_line(1) + ODD_RECORDS)
    deep = make_run(runs, "deep-config")
    (deep / "config.json").write_text('{"train": ' + "[" * DEEP + "]" * DEEP + "}")
    pipes = [make_run(runs, "fifo-metrics") / "metrics.jsonl", make_run(runs, "fifo-config")]
    pipes[1] = pipes[1] / "config.json"
    for pipe in pipes:
        pipe.unlink()
        os.mkfifo(pipe)

    server = create_app(generator_file, device="cpu", runs_dir=runs)
    try:
        with LiveServer(server) as live, httpx.Client(base_url=live.url, timeout=20) as http:
            listed = http.get("/api/runs")
            assert listed.status_code == 200, listed.text
            records = {record["name"]: record for record in strict_json(listed.text)}
            assert set(records) == {
                "arch-list", "infinite", "deep-metrics", "odd-metrics", "deep-config",
                "fifo-metrics", "fifo-config",
            }  # fmt: skip
            assert records["infinite"]["regime"] == {"lr_g": None}
            assert records["arch-list"]["problems"] == ["config.json: train.arch is a list"]
            assert records["fifo-metrics"]["problems"] == [
                "metrics.jsonl is not a regular file (a named pipe)"
            ]
            for name in ("deep-metrics", "odd-metrics"):
                drawn = http.get(f"/api/runs/{name}/losses.png")
                assert drawn.status_code == 200, drawn.text
                assert Image.open(io.BytesIO(drawn.content)).size == (960, 540)
            none = http.get("/api/runs/fifo-metrics/losses.png")
            assert none.status_code == 404 and "no losses" in none.json()["error"]
    finally:
        _release_readers(pipes)
