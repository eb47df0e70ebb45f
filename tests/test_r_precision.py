"""R-precision: the metric on hand-built features, and ``stackgan evaluate --r-precision``
end to end on the tiny dataset with a tiny DAMSM (its Inception trunk is full size, so each
image code costs a few hundredths of a second; the DAMSM file is built once per module).

No test here provides Inception-score weights: ``evaluate --r-precision`` alone must not load
that network (a loader that fails the test stands in for it).
"""

import dataclasses
import json
import pickle
import socket

import numpy as np
import pytest
import torch
from torch import nn
from training_helpers import TINY_CFG, run_cli

from stackgan_cli.damsm_file import load_damsm, save_damsm_file
from stackgan_cli.data.prepared import load_prepared
from stackgan_cli.evaluation import runner
from stackgan_cli.evaluation.inception import URL_ENV, WEIGHTS_FILENAME
from stackgan_cli.evaluation.r_precision import (
    MISMATCHED,
    caption_ids,
    draw_mismatched,
    image_codes,
    r_precision,
    sentence_table,
    split_rates,
)
from stackgan_cli.evaluation.sampling import caption_schedule, generate_images
from stackgan_cli.generator_file import load_generator_file, save_generator_file
from stackgan_cli.models import (
    AttnGANGenerator,
    DAMSMImageEncoder,
    DAMSMTextEncoder,
    ModelConfig,
    Stage1Generator,
)
from stackgan_cli.runs import read_run
from stackgan_cli.text.damsm_text import DAMSMText
from stackgan_cli.text.words import WordVocabulary

DAMSM_CFG = dataclasses.replace(ModelConfig.preset("birds-attngan"), text_dim=16, word_dim=8)
REPORT_KEYS = {"mean", "std", "splits", "samples", "damsm"}


def _features(images=12, captions=10, dim=16, seed=0):
    return torch.randn(images, captions, dim, generator=torch.Generator().manual_seed(seed))


def _schedule(images, samples):
    return caption_schedule(images, samples)


# --- the metric -------------------------------------------------------------------------------


def test_codes_equal_to_their_caption_feature_score_one():
    sentences = _features()
    image_idx, caption_idx = _schedule(12, 60)
    codes = sentences[torch.from_numpy(image_idx), torch.from_numpy(caption_idx)]
    result = r_precision(
        codes, sentences, image_idx, caption_idx, class_ids=np.arange(12) % 4, splits=3, seed=0
    )
    assert result.mean == 1.0 and result.std == 0.0 and result.ties == 0
    assert result.samples == 60 and result.splits == 3 and result.hits.all()
    # Scaling a code changes no cosine.
    scaled = r_precision(
        codes * 7.5, sentences, image_idx, caption_idx, class_ids=None, splits=3, seed=0
    )
    assert scaled.mean == 1.0


def test_unrelated_codes_hit_about_once_in_a_hundred():
    sentences = _features(images=50, dim=32)
    image_idx, caption_idx = _schedule(50, 5000)
    codes = torch.randn(5000, 32, generator=torch.Generator().manual_seed(1))
    result = r_precision(
        codes, sentences, image_idx, caption_idx, class_ids=np.arange(50) % 10, splits=10, seed=0
    )
    # 1 / (1 + MISMATCHED) = 0.01; the binomial std over 5,000 samples is 0.0014.
    assert 0.005 < result.mean < 0.016, result.mean
    assert result.ties == 0


def test_a_tie_for_first_is_a_miss():
    same = torch.ones(6, 10, 8)  # every caption has the same feature: 100-way ties
    image_idx, caption_idx = _schedule(6, 12)
    result = r_precision(
        torch.ones(12, 8), same, image_idx, caption_idx, class_ids=None, splits=2, seed=0
    )
    assert result.mean == 0.0 and result.ties == 12 and not result.hits.any()
    # Zero vectors: every cosine is 0 (the norms are clamped), a tie again.
    zeros = r_precision(
        torch.zeros(12, 8), same, image_idx, caption_idx, class_ids=None, splits=2, seed=0
    )
    assert zeros.mean == 0.0 and zeros.ties == 12


def test_mismatched_captions_never_come_from_the_samples_class():
    classes = np.array([3, 1, 3, 2, 2, 2, 7, 1, 3, 5])
    image_idx = np.arange(200) % 10
    rng = np.random.default_rng(0)
    images, captions = draw_mismatched(image_idx, classes, 10, 10, rng)
    assert images.shape == captions.shape == (200, MISMATCHED)
    assert (classes[images] != classes[image_idx][:, None]).all()
    assert captions.min() == 0 and captions.max() == 9
    # Every other-class image is drawn (uniform over them): image 0 (class 3) sees all 7.
    assert set(images[image_idx == 0].ravel()) == {1, 3, 4, 5, 6, 7, 9}
    # Without class ids: any other image.
    images, _ = draw_mismatched(image_idx, None, 10, 10, rng)
    assert (images != image_idx[:, None]).all()
    assert set(images[image_idx == 4].ravel()) == set(range(10)) - {4}
    with pytest.raises(ValueError, match="more than one class"):
        draw_mismatched(image_idx[:3], np.zeros(10, dtype=np.int64), 10, 10, rng)


def test_the_metric_reproduces_for_a_seed():
    sentences = _features(images=20)
    image_idx, caption_idx = _schedule(20, 400)
    truth = sentences[torch.from_numpy(image_idx), torch.from_numpy(caption_idx)]
    codes = truth + 1.2 * torch.randn(400, 16, generator=torch.Generator().manual_seed(2))
    classes = np.arange(20) % 5

    def run(seed):
        return r_precision(
            codes, sentences, image_idx, caption_idx, class_ids=classes, splits=4, seed=seed
        )

    first, again, other = run(5), run(5), run(6)
    assert 0.0 < first.mean < 1.0
    assert np.array_equal(first.hits, again.hits) and first.split_rates == again.split_rates
    assert not np.array_equal(first.hits, other.hits)


def test_the_splits_are_plain_means_of_the_shuffled_hits():
    hits = np.array([1, 1, 1, 0, 0, 0, 0, 1, 1, 0, 1], dtype=bool)
    rates = split_rates(hits, 3, np.random.default_rng(0))
    shuffled = hits[np.random.default_rng(0).permutation(len(hits))].astype(float)
    expected = [part.mean() for part in np.array_split(shuffled, 3)]  # 4, 4 and 3 hits
    assert rates == pytest.approx(expected, abs=0)
    # Each rate is sum / size: all hits give exactly 1.0 (DM-GAN's sum / (size - 1) would not).
    assert split_rates(np.ones(3000, dtype=bool), 10, np.random.default_rng(0)) == (1.0,) * 10
    with pytest.raises(ValueError):
        split_rates(hits, 12, np.random.default_rng(0))

    sentences = _features()
    image_idx, caption_idx = _schedule(12, 30)
    codes = torch.randn(30, 16, generator=torch.Generator().manual_seed(3))
    codes[:12] = sentences[torch.arange(12), 0]  # the first pass hits, the rest mostly miss
    result = r_precision(codes, sentences, image_idx, caption_idx, class_ids=None, splits=4, seed=0)
    assert result.mean == pytest.approx(np.mean(result.split_rates))
    assert result.std == pytest.approx(np.std(result.split_rates))
    sizes = [len(part) for part in np.array_split(np.arange(30), 4)]
    assert sum(r * n for r, n in zip(result.split_rates, sizes, strict=True)) == pytest.approx(
        result.hits.sum()
    )
    assert result.hits[:12].all()


def _tiny_text(captions):
    torch.manual_seed(0)
    vocabulary = WordVocabulary.build(captions)
    return DAMSMText(DAMSMTextEncoder(DAMSM_CFG, len(vocabulary)), vocabulary, DAMSM_CFG)


def test_sentence_features_are_those_of_each_caption_encoded_alone():
    words = ["a", "small", "red", "bird", "with", "long", "black", "wings", "and", "beak"]
    rng = np.random.default_rng(0)
    captions = [
        [" ".join(rng.choice(words, size=rng.integers(1, 12))) for _ in range(10)] for _ in range(7)
    ]
    captions[2][3] = "zebra giraffe"  # no known word: id 0
    captions[4][1] = "A red, ZEBRA bird"  # the unknown word is left out
    text = _tiny_text(words)
    table, empty = sentence_table(text, captions)
    assert table.shape == (7, 10, 16) and empty == 1
    flat = [caption for row in captions for caption in row]
    ids, _ = caption_ids(text.vocabulary, flat)
    assert ids == [text.vocabulary.encode(c)[0] or [0] for c in flat]
    alone = text.encode_ids(ids).sentence.view(7, 10, 16)
    torch.testing.assert_close(table, alone, rtol=0, atol=1e-6)


def test_image_codes_read_uint8_images_in_minus_one_to_one():
    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.zeros(1))
            self.seen = None

        def forward(self, images):
            self.seen = images
            return images, images.flatten(1)[:, :4]

    probe = Probe()
    images = torch.tensor([0, 255, 127, 128], dtype=torch.uint8).view(1, 4, 1, 1).expand(2, 4, 1, 1)
    codes = image_codes(probe, images[:, :3])
    assert probe.seen.min() == -1.0 and probe.seen.max() == 1.0
    assert codes.shape == (2, 3) and codes.dtype == torch.float32


# --- stackgan evaluate --r-precision ------------------------------------------------------------


def _tiny_captions():
    # The captions of training_helpers.write_tiny_prepared (16 train, 4 test images).
    return [
        f"{split} bird {i} caption {j}"
        for split, n in (("train", 16), ("test", 4))
        for i in range(n)
        for j in range(10)
    ]


@pytest.fixture(scope="module")
def damsm_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("damsm") / "damsm.pt"
    text = _tiny_text(_tiny_captions())
    torch.manual_seed(0)
    save_damsm_file(path, text, DAMSMImageEncoder(DAMSM_CFG), dataset="tiny", epoch=0)
    return path


@pytest.fixture
def no_inception(monkeypatch):
    """Fail the test if the Inception-score network is loaded; a dead local URL in case a
    download is tried anyway."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setenv(URL_ENV, f"http://127.0.0.1:{port}/{WEIGHTS_FILENAME}")

    def refuse(*args, **kwargs):
        raise AssertionError("the Inception-score network was loaded")

    monkeypatch.setattr(runner, "load_inception", refuse)


def _v1_generator(path):
    torch.manual_seed(0)
    generator = Stage1Generator(TINY_CFG)
    for module in generator.modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            nn.init.kaiming_normal_(module.weight)
    save_generator_file(path, generator, TINY_CFG, family="v1-stage1", dataset="tiny", epoch=1)
    return path


def _check_record(record, samples, splits, damsm):
    assert REPORT_KEYS <= set(record)
    assert record["samples"] == samples and record["splits"] == splits
    assert record["damsm"] == str(damsm.resolve())
    assert 0.0 <= record["mean"] <= 1.0 and record["value"] == record["mean"]
    assert record["std"] >= 0.0 and record["mismatched"] == MISMATCHED
    return record["mean"]


def test_evaluate_r_precision_of_a_stackgan_v1_file(
    tiny_dataset, tmp_path, damsm_file, no_inception
):
    (tmp_path / "run").mkdir()
    ckpt = _v1_generator(tmp_path / "run" / "generator.pt")
    report = tmp_path / "run" / "generator.eval.json"  # the default --out
    result = run_cli(
        ["evaluate", "--ckpt", str(ckpt), "--r-precision", "--damsm", str(damsm_file),
         "--num-samples", "20", "--splits", "2", "--batch-size", "8", "--seed", "3",
         "--device", "cpu"]
    )  # fmt: skip
    assert "r_precision" in result.output and "Inception" not in result.output
    data = json.loads(report.read_text())
    assert set(data["metrics"]) == {"r_precision"}
    mean = _check_record(data["metrics"]["r_precision"], 20, 2, damsm_file)
    protocol = data["protocol"]
    assert protocol["inception"] is None and protocol["resolution"] == 64
    assert protocol["r_precision"]["mismatched_from"].startswith("random test images of other")
    assert "damsm_images_seconds" in data["times"]
    assert any("R-precision" in note for note in data["notes"])

    # The same number from the parts: the schedule's samples, the seed's noise and draws.
    bundle = load_generator_file(ckpt)
    test = load_prepared("tiny").split("test")
    damsm = load_damsm(damsm_file)
    schedule = caption_schedule(len(test), 20)
    images = generate_images(
        bundle, test, *schedule, seed=3, batch_size=20, device=torch.device("cpu")
    )
    codes = image_codes(damsm.image_encoder, torch.cat(list(images)))
    sentences, _ = sentence_table(damsm.text, test.captions)
    direct = r_precision(codes, sentences, *schedule, class_ids=test.class_ids, splits=2, seed=3)
    assert direct.mean == pytest.approx(mean, abs=1e-12)

    # `stackgan runs` reads it beside IS and FID (the mean, its "value").
    assert read_run(tmp_path / "run")["evaluation"]["metrics"] == {"r_precision": mean}
    data["metrics"]["r_precision"].pop("value")  # a {mean, std} entry alone is read too
    report.write_text(json.dumps(data))
    assert read_run(tmp_path / "run")["evaluation"]["metrics"] == {"r_precision": mean}
    print(f"v1 tiny R-precision {mean:.3f} +- {data['metrics']['r_precision']['std']:.3f}")


def test_r_precision_beside_the_inception_score_scores_the_same_images(
    tiny_dataset, tmp_path, damsm_file, inception_weights
):
    ckpt = _v1_generator(tmp_path / "g.pt")
    common = ["evaluate", "--ckpt", str(ckpt), "--r-precision", "--damsm", str(damsm_file),
              "--num-samples", "12", "--splits", "2", "--device", "cpu"]  # fmt: skip
    run_cli([*common, "--out", str(tmp_path / "alone.json")])
    run_cli(
        [*common, "--inception", "--no-diversity", "--inception-weights", str(inception_weights),
         "--batch-size", "5", "--out", str(tmp_path / "both.json")]
    )  # fmt: skip
    alone = json.loads((tmp_path / "alone.json").read_text())["metrics"]
    both = json.loads((tmp_path / "both.json").read_text())
    assert set(both["metrics"]) == {"inception_score", "r_precision"}
    assert both["protocol"]["inception"]["weights_file"] == inception_weights.name
    # Other batch size, the Inception network beside it: the same samples, the same hits.
    assert both["metrics"]["r_precision"]["mean"] == alone["r_precision"]["mean"]
    assert both["metrics"]["r_precision"]["std"] == alone["r_precision"]["std"]


def test_evaluate_r_precision_of_the_real_test_images(
    tiny_dataset, damsm_file, tmp_path, no_inception
):
    report = tmp_path / "real.json"
    run_cli(
        ["evaluate", "--real", "--dataset", "tiny", "--r-precision", "--damsm", str(damsm_file),
         "--splits", "2", "--resolution", "64", "--device", "cpu", "--out", str(report)]
    )  # fmt: skip
    data = json.loads(report.read_text())
    assert data["mode"] == "real" and set(data["metrics"]) == {"r_precision"}
    mean = _check_record(data["metrics"]["r_precision"], 4, 2, damsm_file)
    assert data["protocol"]["inception"] is None
    assert "own captions" in data["protocol"]["r_precision_captions"]
    print(f"real tiny R-precision {mean:.3f}")


def test_r_precision_option_errors(tmp_path, tiny_dataset):
    for args, needle in (
        (["--r-precision"], "--damsm"),
        (["--vocabulary", str(tmp_path / "captions.pickle")], "--damsm"),
    ):
        result = run_cli(["evaluate", *args], code=2)
        assert result.output.startswith("error:") and needle in result.output
        assert len(result.output.strip().splitlines()) == 1
    folder = tmp_path / "DAMSMencoders" / "bird"
    folder.mkdir(parents=True)
    result = run_cli(
        ["evaluate", "--real", "--dataset", "tiny", "--r-precision", "--damsm", str(folder)],
        code=1,
    )
    assert "--vocabulary captions.pickle" in " ".join(result.output.split())
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_evaluate_r_precision_of_an_attngan_file(tiny_dataset, tmp_path, damsm_file, no_inception):
    out = tmp_path / "attn.pt"
    run_cli(
        ["train", "--arch", "attngan", "--damsm", str(damsm_file), "--dataset", "tiny",
         "--epochs", "1", "--batch-size", "4", "--gf-dim", "4", "--df-dim", "4", "--z-dim", "8",
         "--condition-dim", "4", "--run-dir", str(tmp_path / "run"), "--out", str(out)]
    )  # fmt: skip
    report = tmp_path / "attn.json"
    run_cli(
        ["evaluate", "--ckpt", str(out), "--r-precision", "--damsm", str(damsm_file),
         "--num-samples", "8", "--splits", "2", "--device", "cpu", "--out", str(report)]
    )  # fmt: skip
    data = json.loads(report.read_text())
    assert data["checkpoint"]["family"] == "attngan" and data["protocol"]["resolution"] == 256
    mean = _check_record(data["metrics"]["r_precision"], 8, 2, damsm_file)
    print(f"attngan tiny R-precision {mean:.3f}")


def _legacy_save(module, path):
    """A state dict as the official torch <= 0.3 code wrote it (no num_batches_tracked)."""
    state = {k: v for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")}
    torch.save(state, path, _use_new_zipfile_serialization=False)


@pytest.mark.slow
def test_the_official_layout_scores_r_precision(tiny_dataset, tmp_path, no_inception):
    """bird_AttnGAN2.pth (no text encoder of its own), DAMSMencoders/bird and captions.pickle
    in the official formats, at tiny widths: the --damsm folder scores and conditions."""
    text = _tiny_text(_tiny_captions())
    folder = tmp_path / "DAMSMencoders" / "bird"
    folder.mkdir(parents=True)
    _legacy_save(text.encoder, folder / "text_encoder200.pth")
    torch.manual_seed(0)
    _legacy_save(DAMSMImageEncoder(DAMSM_CFG), folder / "image_encoder200.pth")
    words = dict(enumerate(text.vocabulary.words))
    pickled = [[[1, 2]], [[2]], words, {w: i for i, w in words.items()}]
    vocabulary = tmp_path / "captions.pickle"
    vocabulary.write_bytes(pickle.dumps(pickled, protocol=2))
    generator_cfg = dataclasses.replace(
        DAMSM_CFG, gf_dim=4, df_dim=4, z_dim=8, condition_dim=4, r_num=1, branch_num=3
    )
    ckpt = tmp_path / "bird_AttnGAN2.pth"
    _legacy_save(AttnGANGenerator(generator_cfg), ckpt)

    damsm = ["--r-precision", "--damsm", str(folder), "--vocabulary", str(vocabulary)]
    report = tmp_path / "official.json"
    run_cli(
        ["evaluate", "--ckpt", str(ckpt), "--dataset", "tiny", *damsm, "--num-samples", "8",
         "--splits", "2", "--device", "cpu", "--out", str(report)]
    )  # fmt: skip
    data = json.loads(report.read_text())
    assert data["checkpoint"]["source"] == "official"
    _check_record(data["metrics"]["r_precision"], 8, 2, folder)
    assert data["protocol"]["r_precision"]["damsm_source"] == "official"
    real = tmp_path / "real.json"
    run_cli(
        ["evaluate", "--real", "--dataset", "tiny", *damsm, "--splits", "2", "--device", "cpu",
         "--out", str(real)]
    )  # fmt: skip
    _check_record(json.loads(real.read_text())["metrics"]["r_precision"], 4, 2, folder)
    # Without its image encoder the folder cannot score R-precision: one line, exit 1.
    (folder / "image_encoder200.pth").unlink()
    result = run_cli(["evaluate", "--real", "--dataset", "tiny", *damsm, "--splits", "2"], code=1)
    assert "no image encoder" in result.output and "R-precision" in result.output
