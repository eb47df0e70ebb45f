"""``stackgan runs``: records of hand-made and real run directories, the table, JSON, chart."""

import json
import os
import time
from pathlib import Path

import pytest
from PIL import Image
from rich.console import Console
from typer.testing import CliRunner

from stackgan_cli.cli import app
from stackgan_cli.errors import StackGANError
from stackgan_cli.reports import format_regime, format_seconds, runs_table
from stackgan_cli.runs import collect_runs, read_run
from stackgan_cli.runs.plot import _PANEL_HEIGHT, PALETTE, PANELS, draw_runs, smooth
from stackgan_cli.runs.records import KEYS, regime
from stackgan_cli.training.config import TrainConfig


def _metrics(
    steps: int, *, d: float = 1.4, g: float = 0.7, per_epoch: int = 2, every: int = 1
) -> list[dict]:
    return [
        {
            "epoch": (step - 1) // per_epoch + 1,
            "step": step,
            "errD": d - 0.05 * step,
            "errG": g + 0.1 * step,
            "kl": 0.01 * step,
            "time": 1.5 * step,
        }
        for step in range(every, every * steps + 1, every)
    ]


def make_run(
    root: Path,
    name: str,
    *,
    age: float = 0.0,
    train: dict | None = None,
    metrics: list[dict] | None = None,
    model: dict | None = None,
) -> Path:
    """A run directory as ``stackgan train`` leaves it: config.json and metrics.jsonl (and
    files dated ``age`` seconds ago)."""
    run_dir = root / name
    (run_dir / "samples").mkdir(parents=True)
    settings = TrainConfig(dataset="shapes", run_dir=str(run_dir)).to_dict() | (train or {})
    config = {
        "train": settings,
        "model": model or {"gf_dim": 16, "df_dim": 16},
        "dataset": {"name": "shapes", "source": "shapes", "fingerprint": "0" * 64},
        "written": "2026-01-01T00:00:00",
    }
    (run_dir / "config.json").write_text(json.dumps(config))
    lines = [json.dumps(record) for record in metrics or []]
    (run_dir / "metrics.jsonl").write_text("".join(line + "\n" for line in lines))
    stamp = time.time() - age
    for path in (run_dir / "config.json", run_dir / "metrics.jsonl", run_dir):
        os.utime(path, (stamp, stamp))
    return run_dir


def _report(path: Path, ckpt: Path, fid: float, *, mode: str = "generated", size: int = 64) -> Path:
    report = {
        "format": "stackgan-evaluation",
        "mode": mode,
        "metrics": {"inception_score": {"value": 1.5, "std": 0.1}, "fid": {"value": fid}},
        "protocol": {"resolution": size},
        "checkpoint": {"path": str(ckpt)},
        "times": {"finished_at": "2026-01-02T00:00:00+00:00"},
    }
    path.write_text(json.dumps(report))
    return path


def test_records_newest_first_with_regime_progress_and_losses(tmp_path):
    make_run(tmp_path, "old", age=300, train={"epochs": 4}, metrics=_metrics(3))
    make_run(
        tmp_path,
        "new",
        age=10,
        # seed, device, epochs, log_every, amp... are bookkeeping, not the regime
        train={
            "epochs": 30,
            "batch_size": 16,
            "lr_g": 1e-3,
            "seed": 7,
            "device": "cpu",
            "log_every": 1,
            "amp": False,
            "kl_coeff": 2,
        },
        metrics=_metrics(4),
    )
    records = collect_runs(tmp_path)
    assert [r["name"] for r in records] == ["new", "old"]
    new = records[0]
    assert list(new) == list(KEYS)
    assert new["regime"] == {"batch_size": 16, "lr_g": 1e-3}  # kl_coeff 2 == 2.0: default
    assert (new["family"], new["stage"], new["model"]) == ("v1", 1, "v1 stage 1")
    assert new["dataset"] == "shapes"
    assert (new["epochs_done"], new["epochs_planned"], new["steps"]) == (2, 30, 4)
    assert new["time_s"] == 6.0
    assert new["d_loss"] == pytest.approx(1.2)
    assert new["g_loss"] == pytest.approx(1.1)
    assert new["kl"] == pytest.approx(0.04)
    assert new["problems"] == [] and new["evaluation"] is None
    assert records[1]["regime"] == {}
    assert (records[1]["epochs_done"], records[1]["epochs_planned"]) == (2, 4)


def test_regime_is_generic_over_train_config_fields():
    defaults = TrainConfig().to_dict()
    assert regime(defaults) == {}
    assert regime(defaults | {"fast_layers": False, "out": "x.pt", "stage": 2}) == {}
    assert regime(defaults | {"lr_decay_every": 100, "unknown_new_option": 3}) == {
        "lr_decay_every": 100
    }
    # A v2 run is compared with the v2 recipe (batch 24, parameter average 0.999).
    v2 = TrainConfig.for_arch("v2").to_dict()
    assert regime(v2) == {} and regime(v2 | {"batch_size": 64}) == {"batch_size": 64}
    assert regime(v2 | {"ema": 0.0, "color_coeff": 50.0}) == {"ema": 0.0, "color_coeff": 50.0}
    assert format_regime({"batch_size": 16, "lr_g": 0.001}) == "batch-size 16, lr-g 0.001"
    assert format_regime({}) == "defaults"
    assert format_seconds(75.2) == "1:15" and format_seconds(3725) == "1:02:05"


def test_v2_runs_are_labelled_by_branches(tmp_path):
    make_run(tmp_path, "tree", train={"arch": "v2", "branches": 3}, metrics=_metrics(1))
    make_run(tmp_path, "one", train={"arch": "v2", "branches": 1}, metrics=_metrics(1))
    make_run(tmp_path, "s2", train={"stage": 2}, metrics=_metrics(1))
    labels = {
        r["name"]: (r["family"], r["stage"], r["branches"], r["model"])
        for r in collect_runs(tmp_path)
    }
    assert labels == {
        "tree": ("v2", None, 3, "v2 3 branches"),
        "one": ("v2", None, 1, "v2 1 branch"),
        "s2": ("v1", 2, None, "v1 stage 2"),
    }


def test_latest_evaluation_of_the_runs_generator(tmp_path):
    runs = tmp_path / "runs"
    out = tmp_path / "s1.pt"
    run_dir = make_run(runs, "run", train={"out": str(out)}, metrics=_metrics(2))
    (run_dir / "generator.pt").write_bytes(b"x")
    (run_dir / "samples" / "epoch_0002.png").write_bytes(b"png")
    (run_dir / "samples" / "epoch_0010.png").write_bytes(b"png")
    first = _report(run_dir / "generator.eval.json", run_dir / "generator.pt", fid=300.0)
    os.utime(first, (time.time() - 100, time.time() - 100))
    # The --out copy's report counts; a report of another generator and a real-image report
    # in the run folder do not.
    _report(tmp_path / "s1.eval.json", out, fid=250.0)
    _report(run_dir / "other.eval.json", tmp_path / "elsewhere.pt", fid=1.0)
    _report(run_dir / "real.eval.json", run_dir / "generator.pt", fid=2.0, mode="real")
    record = read_run(run_dir)
    assert record["evaluation"]["path"] == str(tmp_path / "s1.eval.json")
    assert record["evaluation"]["metrics"] == {"inception_score": 1.5, "fid": 250.0}
    assert record["generator"] == str(run_dir / "generator.pt")
    assert record["sample"] == str(run_dir / "samples" / "epoch_0010.png")
    (tmp_path / "s1.eval.json").unlink()
    assert read_run(run_dir)["evaluation"]["metrics"]["fid"] == 300.0
    # evaluate --size 128 of the --out copy writes s1.128px.eval.json beside it.
    small = _report(tmp_path / "s1.128px.eval.json", out, fid=200.0, size=128)
    evaluation = read_run(run_dir)["evaluation"]
    assert evaluation["path"] == str(small) and evaluation["size"] == 128


def test_damaged_and_partial_runs_are_listed_with_what_is_known(tmp_path):
    make_run(tmp_path, "empty-metrics", metrics=[])
    torn = make_run(tmp_path, "torn", metrics=_metrics(2))
    with open(torn / "metrics.jsonl", "a") as handle:
        handle.write('[1, 2]\n"text"\n{"epoch": 3, "step": 6, "errD": NaN, "errG": 0.5, "ti')
    broken = make_run(tmp_path, "broken-config", metrics=_metrics(1))
    (broken / "config.json").write_text('{"train": {"stage": 1,')
    no_train = make_run(tmp_path, "no-train", metrics=[{"epoch": "x", "errD": "high"}])
    (no_train / "config.json").write_text("[1, 2, 3]")
    (tmp_path / "bare").mkdir()
    (tmp_path / "binary").mkdir()
    (tmp_path / "binary" / "config.json").write_bytes(b"\xff\xfe\x00garbage")
    (tmp_path / "a-file.txt").write_text("not a run")
    (tmp_path / ".hidden").mkdir()

    records = {r["name"]: r for r in collect_runs(tmp_path)}
    assert set(records) == {"empty-metrics", "torn", "broken-config", "no-train", "bare", "binary"}
    assert records["empty-metrics"]["problems"] == ["metrics.jsonl holds no records yet"]
    assert records["empty-metrics"]["epochs_planned"] == 600
    assert records["torn"]["problems"] == [] and records["torn"]["steps"] == 2
    assert records["broken-config"]["problems"] == ["config.json is unreadable (JSONDecodeError)"]
    assert records["broken-config"]["steps"] == 1 and records["broken-config"]["model"] is None
    assert records["no-train"]["problems"] == ["config.json has no training settings"]
    assert records["no-train"]["d_loss"] is None and records["no-train"]["epochs_done"] is None
    assert records["bare"]["problems"] == ["config.json is missing", "metrics.jsonl is missing"]
    assert records["binary"]["problems"][0].startswith("config.json is unreadable")
    json.dumps(list(records.values()), allow_nan=False)  # strict JSON whatever the files hold

    table = _render(runs_table(list(records.values())))
    assert "config.json is missing; metrics.jsonl is missing" in table


def test_missing_or_non_folder_dir_is_an_error(tmp_path):
    with pytest.raises(StackGANError, match="does not exist"):
        collect_runs(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(StackGANError, match="is not a folder"):
        collect_runs(tmp_path / "file")


def _render(table) -> str:
    console = Console(width=200, record=True, file=open(os.devnull, "w"))
    console.print(table)
    return console.export_text()


def _invoke(*args, **env):
    return CliRunner().invoke(app, ["runs", *map(str, args)], env={"COLUMNS": "200", **env})


def test_cli_table_json_and_errors(tmp_path):
    run_dir = make_run(
        tmp_path,
        "stage1-shapes-demo",
        train={"batch_size": 16, "epochs": 30},
        metrics=_metrics(6),
        model={"gf_dim": 8, "df_dim": 8},
    )
    _report(run_dir / "generator.eval.json", run_dir / "generator.pt", fid=123.456, size=256)

    result = _invoke(tmp_path)
    assert result.exit_code == 0, result.output
    row = next(line for line in result.stdout.splitlines() if "stage1-shapes-demo" in line)
    for text in ("v1 stage 1", "shapes", "batch-size 16", "3/30", "D 1.100", "IS 1.50"):
        assert text in row
    for text in ("gf 8 df 8", "0:09", "G 1.300", "KL 0.060", "FID 123.46", "at 256 px"):
        assert text in result.stdout

    result = _invoke(tmp_path, "--json")
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert records == collect_runs(tmp_path)
    assert list(records[0]) == list(KEYS)

    empty = tmp_path / "empty"
    empty.mkdir()
    result = _invoke(empty)
    assert result.exit_code == 0 and "no runs yet" in result.stderr
    assert json.loads(_invoke(empty, "--json").stdout) == []

    result = _invoke(tmp_path / "missing")
    assert result.exit_code == 1
    assert result.stderr.strip().count("\n") == 0
    assert "does not exist" in result.stderr and "Traceback" not in result.output


def _colour_pixels(image: Image.Image, colour, box) -> int:
    crop = image.crop(box)
    return sum(count for count, value in crop.getcolors(1 << 20) if value == colour)


def test_plot_draws_each_runs_d_and_g_curves(tmp_path):
    runs = tmp_path / "runs"
    make_run(runs, "a", age=20, metrics=_metrics(40))
    make_run(runs, "b", age=10, metrics=_metrics(2, d=2.6, g=0.5, every=20))
    make_run(runs, "c", age=0, metrics=[])  # listed in the legend, no curve
    out = tmp_path / "chart" / "losses.png"
    result = _invoke(runs, "--plot", out)
    assert result.exit_code == 0, result.output
    assert str(out) in result.stderr
    image = Image.open(out).convert("RGB")
    width = image.width
    order = [r["name"] for r in collect_runs(runs)]
    assert order == ["c", "b", "a"]
    for panel, _ in enumerate(PANELS):
        box = (71, panel * _PANEL_HEIGHT + 31, width - 31, (panel + 1) * _PANEL_HEIGHT - 41)
        # Each run with losses draws a curve inside both panels, in its table-order colour.
        assert _colour_pixels(image, PALETTE[order.index("a")], box) > 200
        assert _colour_pixels(image, PALETTE[order.index("b")], box) > 100
        assert _colour_pixels(image, PALETTE[order.index("c")], box) == 0
    # Run b (steps 20 and 40 of run a's 1..40) starts half-way along the step axis; its D loss
    # falls (the curve goes down the image) and its G loss rises.
    b = PALETTE[order.index("b")]
    for panel, falling in ((0, True), (1, False)):
        top = panel * _PANEL_HEIGHT
        points = [
            (x, y)
            for x in range(71, width - 31)
            for y in range(top + 31, top + _PANEL_HEIGHT - 41)
            if image.getpixel((x, y)) == b
        ]
        first, last = min(points), max(points)
        assert abs(first[0] - (70 + 19 / 39 * (width - 100))) < 6
        assert (first[1] < last[1]) == falling


def test_plot_of_no_runs_and_smoothing():
    image = draw_runs([])
    assert image.size[0] > 0
    assert smooth([1.0, 2.0]) == [1.0, 2.0]  # short series are drawn as they are
    noisy = [float(i % 2) for i in range(300)]
    smoothed = smooth(noisy)
    assert max(smoothed[100:]) - min(smoothed[100:]) < 0.25
    assert smoothed[0] == 0.0  # bias-corrected: starts at the first value


@pytest.mark.slow
def test_a_real_tiny_training_run(shapes_dataset, tmp_path):
    run_dir = tmp_path / "runs" / "tiny"
    train = CliRunner().invoke(
        app,
        [
            "train",
            "--stage",
            "1",
            "--dataset",
            "shapes",
            "--epochs",
            "1",
            "--batch-size",
            "16",
            "--gf-dim",
            "4",
            "--df-dim",
            "4",
            "--z-dim",
            "8",
            "--condition-dim",
            "8",
            "--log-every",
            "1",
            "--sample-every",
            "1",
            "--device",
            "cpu",
            "--run-dir",
            str(run_dir),
        ],
    )
    assert train.exit_code == 0, train.output
    result = _invoke(tmp_path / "runs", "--json")
    assert result.exit_code == 0, result.output
    (record,) = json.loads(result.stdout)
    assert record["name"] == "tiny" and record["model"] == "v1 stage 1"
    assert record["dataset"] == "shapes" and record["problems"] == []
    assert record["regime"] == {"batch_size": 16}
    assert (record["epochs_done"], record["epochs_planned"]) == (1, 1)
    assert record["steps"] > 0 and record["time_s"] > 0
    assert all(isinstance(record[key], float) for key in ("d_loss", "g_loss", "kl"))
    assert record["model_config"]["gf_dim"] == 4
    assert record["sample"].endswith("epoch_0001.png") and record["losses_plot"]
