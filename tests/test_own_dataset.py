"""One's own folder of images and captions, end to end: prepare, DAMSM, StackGAN, generate.

The folder (in each of the two layouts `stackgan prepare PATH` reads) has no char-CNN-RNN
embeddings, so StackGAN-v1 and v2 train on the sentence features of a DAMSM trained on it
(`train --damsm FILE`). The DAMSM's trunk is the full Inception-v3 with random weights in
torchvision's layout, so its runs are short: a dozen 48 x 32 images, one epoch, one view.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from training_helpers import TINY, load, run_cli, write_inception_weights

from stackgan_cli import paths
from stackgan_cli.damsm_file import load_damsm
from stackgan_cli.generator_file import load_generator_file
from stackgan_cli.text.damsm_sentences import DAMSMSentenceEncoder

COLOURS = {"red": (200, 30, 30), "blue": (30, 30, 200), "green": (30, 160, 30), "grey": (128,) * 3}
TINY_DAMSM = ["--text-dim", "16", "--word-dim", "8", "--batch-size", "4", "--trunk-views", "1"]


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("weights")
    return write_inception_weights(folder / "inception_v3_google-test.pth")


def _picture(path: Path, colour: tuple[int, ...], k: int) -> None:
    pixels = np.full((32, 48, 3), 240, dtype=np.uint8)
    pixels[4 + k : 24 + k, 10 + 2 * k : 34 + 2 * k] = colour
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)


def metadata_folder(root: Path) -> Path:
    """Four classes of three images, captions in metadata.jsonl (a list or one string)."""
    rows = []
    for colour, rgb in COLOURS.items():
        for k in range(3):
            name = f"pictures/{colour}_{k}.png"
            _picture(root / name, rgb, k)
            text = (
                [f"a {colour} square on white", f"the square is {colour}"]
                if k
                else (f"a small {colour} box")
            )
            rows.append({"file_name": name, "text": text, "label": colour})
    (root / "metadata.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return root


def cub_folder(root: Path) -> Path:
    """The same pictures in CUB's layout: images/<class>/<name>.png, text/<class>/<name>.txt."""
    for colour, rgb in COLOURS.items():
        for k in range(3):
            _picture(root / "images" / colour / f"{colour}_{k}.png", rgb, k)
            text = root / "text" / colour / f"{colour}_{k}.txt"
            text.parent.mkdir(parents=True, exist_ok=True)
            text.write_text(f"a {colour} square on white\nthe square is {colour}\n")
    return root


@pytest.mark.parametrize("layout", [metadata_folder, cub_folder])
def test_a_folder_trains_a_damsm_then_stackgan_and_generates_from_any_sentence(
    layout, weights, tmp_path
):
    folder = layout(tmp_path / "my pictures")
    run_cli(["prepare", str(folder), "--name", "own", "--test-fraction", "0.25"])
    damsm = tmp_path / "damsm.pt"
    run_cli([
        "train", "--arch", "damsm", "--dataset", "own", "--epochs", "1", *TINY_DAMSM,
        "--inception-weights", str(weights), "--run-dir", str(tmp_path / "damsm-run"),
        "--out", str(damsm),
    ])  # fmt: skip

    # Without embeddings or a DAMSM, StackGAN has nothing to read: one line says what to do.
    refused = run_cli(["train", "--stage", "1", "--dataset", "own", *TINY], code=2)
    assert "--damsm" in refused.output and "Traceback" not in refused.output

    s1 = tmp_path / "s1.pt"
    run_cli([
        "train", "--stage", "1", "--dataset", "own", "--damsm", str(damsm), "--epochs", "1",
        "--batch-size", "3", *TINY, "--run-dir", str(tmp_path / "s1-run"), "--out", str(s1),
    ])  # fmt: skip
    stored = list((paths.prepared_dir("own").parent / "damsm_embeddings").glob("*/key.json"))
    assert len(stored) == 1
    train_features = np.load(stored[0].parent / "train.npy")
    assert train_features.shape == (9, 10, 16) and np.isfinite(train_features).all()

    bundle = load_generator_file(s1)
    assert isinstance(bundle.text_encoder, DAMSMSentenceEncoder)
    assert bundle.cfg.text_dim == 16 and bundle.dataset == "own"
    out = tmp_path / "generated"
    result = run_cli(["generate", "a green square on white", "-n", "2", "--ckpt", str(s1),
                      "--seed", "1", "--out", str(out)])  # fmt: skip
    assert (out / "grid.png").is_file()
    assert "Traceback" not in result.output
    config = json.loads((tmp_path / "s1-run" / "config.json").read_text())
    assert config["train"]["damsm_fingerprint"] == load_damsm(damsm).fingerprint
    # Evaluation conditions on the test captions through the file's DAMSM sentence encoder.
    report = tmp_path / "report.json"
    run_cli([
        "evaluate", "--ckpt", str(s1), "--r-precision", "--damsm", str(damsm), "--num-samples",
        "6", "--splits", "1", "--device", "cpu", "--out", str(report),
    ])  # fmt: skip
    r_precision = json.loads(report.read_text())["metrics"]["r_precision"]
    assert 0.0 <= r_precision["mean"] <= 1.0


def test_v2_trains_on_damsm_features_and_a_replaced_damsm_is_refused_on_resume(weights, tmp_path):
    folder = metadata_folder(tmp_path / "pictures")
    run_cli(["prepare", str(folder), "--name", "own", "--test-fraction", "0.25"])
    damsm = tmp_path / "damsm.pt"
    damsm_args = [
        "train", "--arch", "damsm", "--dataset", "own", "--epochs", "1", *TINY_DAMSM,
        "--inception-weights", str(weights), "--run-dir", str(tmp_path / "damsm-run"),
        "--out", str(damsm),
    ]  # fmt: skip
    run_cli(damsm_args)
    run = tmp_path / "v2-run"
    run_cli([
        "train", "--arch", "v2", "--dataset", "own", "--damsm", str(damsm), "--epochs", "1",
        "--batch-size", "3", *TINY, "--branches", "2", "--run-dir", str(run),
    ])  # fmt: skip
    assert load(run / "checkpoints" / "last.pt")["train_config"]["damsm"] == str(damsm)
    # Another DAMSM in the file's place (a second pre-training run with another seed).
    run_cli([*damsm_args[:-4], "--run-dir", str(tmp_path / "damsm-2"), "--out", str(damsm),
             "--seed", "7"])  # fmt: skip
    result = run_cli(["resume", str(run), "--epochs", "2"], code=1)
    assert "is not the DAMSM this run started with" in " ".join(result.output.split())
