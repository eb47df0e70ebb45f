"""AttnGAN from training to generation: the family, its files, the word batches, the official
release layout (generator, DAMSM encoders folder, captions.pickle) and `generate --attention`.

The networks themselves are tested against the official tables in test_attngan_networks.py.
One module-scoped run trains a tiny AttnGAN for one epoch on a tiny dataset after a tiny
(untrained) DAMSM: its Inception trunk is the real one, so each step costs a few tenths of a
second on the CPU.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from training_helpers import load, run_cli, write_tiny_prepared
from typer.testing import CliRunner

from stackgan_cli.cli import app
from stackgan_cli.damsm_file import load_damsm, save_damsm_file
from stackgan_cli.data.sampler import DeviceBatchSampler
from stackgan_cli.families.attngan import AttnGAN
from stackgan_cli.generator_file import load_generator_file
from stackgan_cli.models import (
    AttnGANDiscriminator,
    AttnGANGenerator,
    DAMSMImageEncoder,
    DAMSMTextEncoder,
    ModelConfig,
)
from stackgan_cli.models.losses import attngan_discriminator_loss, attngan_generator_loss
from stackgan_cli.text.damsm_text import DAMSMText
from stackgan_cli.text.words import (
    WordVocabulary,
    caption_tokens,
    read_captions_pickle,
)
from stackgan_cli.training.step import DiscriminatorView

DAMSM_CFG = dataclasses.replace(ModelConfig.preset("birds-attngan"), text_dim=16, word_dim=8)
TINY_ATTN = ["--gf-dim", "4", "--df-dim", "4", "--z-dim", "8", "--condition-dim", "4"]
TINY_G_CFG = dataclasses.replace(
    DAMSM_CFG, gf_dim=4, df_dim=4, z_dim=8, condition_dim=4, r_num=1, branch_num=3
)


def tiny_captions() -> list[str]:
    return [
        f"{split} bird {i} caption {j}"
        for split, n in (("train", 16), ("test", 4))
        for i in range(n)
        for j in range(10)
    ]


def make_damsm_text(seed: int = 0) -> DAMSMText:
    torch.manual_seed(seed)
    vocabulary = WordVocabulary.build(tiny_captions())
    return DAMSMText(DAMSMTextEncoder(DAMSM_CFG, len(vocabulary)), vocabulary, DAMSM_CFG)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A tiny DAMSM file and a one-epoch tiny AttnGAN run on the tiny dataset."""
    root = tmp_path_factory.mktemp("attngan")
    home = root / "home"
    damsm = root / "damsm.pt"
    torch.manual_seed(0)
    save_damsm_file(damsm, make_damsm_text(), DAMSMImageEncoder(DAMSM_CFG), dataset="tiny", epoch=0)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STACKGAN_HOME", str(home))
        write_tiny_prepared(home / "datasets" / "tiny" / "prepared")
        args = attngan_args(root / "run", damsm, "--out", str(root / "attn.pt"))
        run_cli(args)
    return {
        "root": root,
        "home": home,
        "damsm": damsm,
        "run": root / "run",
        "out": root / "attn.pt",
    }


def attngan_args(run: Path, damsm: Path, *extra: str, epochs: int = 1) -> list[str]:
    return [
        "train", "--arch", "attngan", "--damsm", str(damsm), "--dataset", "tiny",
        "--epochs", str(epochs), "--batch-size", "4", *TINY_ATTN, "--run-dir", str(run),
        "--sample-every", "1", *extra,
    ]  # fmt: skip


# --- words ------------------------------------------------------------------------------------


def test_captions_are_tokenised_as_the_official_code_does():
    assert caption_tokens("This Bird, has\ufffd\ufffdred wings.") == [
        "this", "bird", "has", "red", "wings",
    ]  # fmt: skip
    assert caption_tokens("café crème au lait") == ["caf", "crme", "au", "lait"]  # non-ASCII out
    assert caption_tokens(" ,; ") == []


def test_a_vocabulary_starts_with_end_and_drops_unknown_words():
    vocabulary = WordVocabulary.build(["a red bird", "a blue bird"])
    assert vocabulary.words == ("<end>", "a", "red", "bird", "blue")
    assert vocabulary.encode("A RED zebra bird") == ([1, 2, 3], ["zebra"])


def test_captions_pickle_in_the_official_layout_is_read(tmp_path):
    words = {0: "<end>", 1: "red", 2: "bird"}
    data = [[[1, 2], [2]], [[2, 1]], words, {w: i for i, w in words.items()}]
    path = tmp_path / "captions.pickle"
    path.write_bytes(pickle.dumps(data, protocol=2))
    captions = read_captions_pickle(path)
    assert captions.vocabulary.words == ("<end>", "red", "bird")
    assert captions.train == [[1, 2], [2]] and captions.test == [[2, 1]]


def test_a_captions_pickle_that_names_code_is_refused_without_running_it(tmp_path):
    class Payload:
        def __reduce__(self):
            return (Path.touch, (tmp_path / "pwned",))

    path = tmp_path / "captions.pickle"
    path.write_bytes(pickle.dumps([Payload(), [], {0: "<end>"}, {}], protocol=2))
    with pytest.raises(Exception, match="not an AttnGAN captions.pickle"):
        read_captions_pickle(path)
    assert not (tmp_path / "pwned").exists()


def test_each_prompt_is_encoded_alone():
    text = make_damsm_text()
    alone = text.encode(["train bird 3"])
    together = text.encode(["test caption 1 bird 2 caption", "train bird 3"])
    assert together.words.shape[2] == 6 and together.lengths.tolist() == [6, 3]
    torch.testing.assert_close(together.sentence[1:], alone.sentence, rtol=0, atol=0)
    torch.testing.assert_close(together.words[1:, :, :3], alone.words, rtol=0, atol=0)
    assert together.words[1, :, 3:].abs().max() == 0  # padding stays zero


# --- the word batches ------------------------------------------------------------------------


def test_batches_carry_at_most_18_words_in_order_sorted_longest_first():
    n, captions, longest = 12, 10, 30
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, longest + 1, (n, captions))
    tokens = np.zeros((n, captions, longest), dtype=np.int64)
    for i in range(n):
        for k in range(captions):
            tokens[i, k, : lengths[i, k]] = 1000 * i + 100 * k + np.arange(1, lengths[i, k] + 1)
    sampler = DeviceBatchSampler(
        rng.integers(0, 256, (n, 76, 76, 3), dtype=np.uint8),
        rng.standard_normal((n, captions, 4)).astype(np.float32),
        image_size=64,
        batch_size=6,
        device="cpu",
        seed=1,
        words=(tokens, lengths),
        class_ids=np.arange(n) % 4,
    )
    for _ in range(4):
        batch = sampler.next_batch()
        kept = (~batch.token_mask).sum(1)
        assert kept.tolist() == sorted(kept.tolist(), reverse=True)  # longest first
        assert kept.max() <= 18 and batch.tokens.shape[1] == kept.max()
        for row, count in zip(batch.tokens, kept.tolist(), strict=True):
            ids = row[:count]
            image, caption = int(ids[0]) // 1000, (int(ids[0]) % 1000) // 100
            full = lengths[image, caption]
            assert count == min(full, 18)
            assert torch.all(ids[1:] > ids[:-1])  # the original order
            assert set(ids.tolist()) <= set(tokens[image, caption, :full].tolist())
            assert row[count:].abs().sum() == 0


# --- the family's training parts equal the official losses ------------------------------------


def test_the_training_step_terms_are_the_official_losses():
    torch.manual_seed(0)
    netD = AttnGANDiscriminator(TINY_G_CFG, 64).train()
    real, fake = torch.rand(4, 3, 64, 64) * 2 - 1, torch.rand(4, 3, 64, 64) * 2 - 1
    sentence = torch.randn(4, TINY_G_CFG.text_dim)
    from stackgan_cli.families.base import RealView
    from stackgan_cli.models.losses import BCE

    family = AttnGAN(TINY_G_CFG)
    view = DiscriminatorView(
        netD, family.encoder(netD), autocast=lambda: torch.autocast("cpu", enabled=False)
    )
    state = {k: v.clone() for k, v in netD.state_dict().items()}
    ours, parts = family.discriminator_loss(view, RealView(real), fake, sentence, BCE)
    netD.load_state_dict(state)
    official, official_parts = attngan_discriminator_loss(
        netD, real, fake, sentence, return_parts=True
    )
    torch.testing.assert_close(ours, official, rtol=0, atol=0)
    torch.testing.assert_close(parts["wrong"], official_parts["D_cond_wrong"], rtol=0, atol=0)


def test_the_generator_damsm_terms_are_the_official_ones():
    torch.manual_seed(0)
    image_encoder = DAMSMImageEncoder(DAMSM_CFG).eval()
    netsD = [AttnGANDiscriminator(TINY_G_CFG, s).train() for s in (64, 128, 256)]
    fakes = [torch.rand(2, 3, s, s) * 2 - 1 for s in (64, 128, 256)]
    text = make_damsm_text().encode(["train bird 3 caption 4", "test bird"])
    class_ids = torch.tensor([0, 1])
    family = AttnGAN(TINY_G_CFG, damsm=_Bundle(image_encoder), damsm_weight=5.0)
    from stackgan_cli.families.attngan import TrainingText
    from stackgan_cli.families.base import GeneratorOutput

    output = GeneratorOutput(
        images=fakes, mu=None, logvar=None, extras={"text": TrainingText(text, class_ids)}
    )
    terms = family.generator_terms(output)
    _, parts = attngan_generator_loss(
        netsD, image_encoder, fakes, text.words, text.sentence, text.lengths, class_ids,
        return_parts=True,
    )  # fmt: skip
    torch.testing.assert_close(terms["damsm_words"], parts["G_damsm_words"], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(
        terms["damsm_sentence"], parts["G_damsm_sentence"], rtol=1e-6, atol=1e-6
    )


def test_damsm_weight_zero_skips_the_image_encoder_pass():
    torch.manual_seed(0)
    image_encoder = DAMSMImageEncoder(DAMSM_CFG).eval()
    passes = []
    image_encoder.register_forward_hook(lambda *args: passes.append(1))
    text = make_damsm_text().encode(["train bird 3 caption 4", "test bird"])
    from stackgan_cli.families.attngan import TrainingText
    from stackgan_cli.families.base import GeneratorOutput

    output = GeneratorOutput(
        images=[torch.rand(2, 3, 64, 64) * 2 - 1],
        mu=None,
        logvar=None,
        extras={"text": TrainingText(text, torch.tensor([0, 1]))},
    )
    weighted = AttnGAN(TINY_G_CFG, damsm=_Bundle(image_encoder), damsm_weight=5.0)
    assert set(weighted.generator_terms(output)) == {"damsm_words", "damsm_sentence"}
    assert len(passes) == 1
    off = AttnGAN(TINY_G_CFG, damsm=_Bundle(image_encoder), damsm_weight=0.0)
    assert off.generator_term_names == () and off.generator_terms(output) == {}
    assert len(passes) == 1


class _Bundle:
    def __init__(self, image_encoder):
        self.image_encoder = image_encoder
        self.text = None


# --- training, files, generation -------------------------------------------------------------


def test_a_run_logs_the_damsm_terms_and_writes_every_branch(trained):
    records = [
        json.loads(line) for line in (trained["run"] / "metrics.jsonl").read_text().splitlines()
    ]
    last = records[-1]
    for name in ("errD", "errG", "kl", "G_damsm_words", "G_damsm_sentence", "D2_uncond_fake"):
        assert np.isfinite(last[name]), name
    config = json.loads((trained["run"] / "config.json").read_text())
    assert config["train"]["arch"] == "attngan" and config["train"]["batch_size"] == 4
    assert config["model"]["text_dim"] == DAMSM_CFG.text_dim
    assert config["train"]["kl_coeff"] == 1.0 and config["train"]["ema"] == 0.999
    assert (trained["run"] / "samples" / "epoch_0001.png").is_file()


def test_the_generator_file_carries_its_damsm_text_encoder(trained):
    bundle = load_generator_file(trained["out"])
    assert isinstance(bundle.family, AttnGAN) and bundle.family.output_sizes() == (64, 128, 256)
    assert isinstance(bundle.text_encoder, DAMSMText)
    assert bundle.text_encoder.vocabulary == make_damsm_text().vocabulary
    assert "AttnGAN generator (64/128/256 px)" in bundle.describe()


def test_generate_from_any_sentence_with_attention_figures(trained, tmp_path, monkeypatch):
    monkeypatch.setenv("STACKGAN_HOME", str(trained["home"]))
    out = tmp_path / "samples"
    result = CliRunner().invoke(
        app,
        ["generate", "a train bird caption", "bird zebra 3", "-n", "2", "--ckpt",
         str(trained["out"]), "--seed", "3", "--out", str(out), "--attention", "--show-stages"],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "words outside the vocabulary are left out: 'a', 'zebra'" in " ".join(
        result.stderr.split()
    )
    names = sorted(p.name for p in out.iterdir())
    assert "00_01_attention.png" in names and "01_00_64.png" in names and "grid.png" in names
    from PIL import Image

    with Image.open(out / "00_00_attention.png") as figure:
        # two attending stages, the 256 px image and its three words, captioned
        assert figure.width > 4 * 256 and figure.height > 2 * 256


def test_an_image_depends_on_its_prompt_alone(trained, tmp_path, monkeypatch):
    # The official mask is tiled across the batch: generation must not let captions of other
    # lengths in the same batch change an image.
    monkeypatch.setenv("STACKGAN_HOME", str(trained["home"]))
    args = ["-n", "2", "--ckpt", str(trained["out"]), "--seed", "5"]
    run_cli(["generate", "train bird 3", *args, "--out", str(tmp_path / "alone")])
    run_cli(
        [
            "generate",
            "test caption 1 bird 2",
            "train bird 3",
            *args,
            "--out",
            str(tmp_path / "mixed"),
        ]
    )
    for k in range(2):
        alone = (tmp_path / "alone" / f"00_0{k}.png").read_bytes()
        assert alone == (tmp_path / "mixed" / f"01_0{k}.png").read_bytes()


def test_resume_continues_an_attngan_run_exactly(trained, tmp_path, monkeypatch):
    monkeypatch.setenv("STACKGAN_HOME", str(trained["home"]))
    straight, split = tmp_path / "straight", tmp_path / "split"
    run_cli(attngan_args(straight, trained["damsm"], epochs=2))
    run_cli(attngan_args(split, trained["damsm"], epochs=1))
    run_cli(["resume", str(split), "--epochs", "2"])
    a, b = load(straight / "checkpoints" / "last.pt"), load(split / "checkpoints" / "last.pt")
    assert a["global_step"] == b["global_step"] == 8
    for key in ("generator", "discriminators", "optimizer_g", "generator_average"):
        tensors_a, tensors_b = _tensors(a[key]), _tensors(b[key])
        assert tensors_a and len(tensors_a) == len(tensors_b), key
        assert all(torch.equal(x, y) for x, y in zip(tensors_a, tensors_b, strict=True)), key
    losses = [
        [{k: v for k, v in r.items() if k not in ("time", "images_per_s")} for r in records]
        for records in (_records(straight), _records(split))
    ]
    assert losses[0] == losses[1] and [r["step"] for r in losses[0]] == [4, 8]


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _tensors(tree):
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, dict):
        return [t for key in sorted(tree) for t in _tensors(tree[key])]
    if isinstance(tree, (list, tuple)):
        return [t for item in tree for t in _tensors(item)]
    return []


def test_attngan_needs_a_damsm(tiny_dataset, tmp_path):
    result = run_cli(
        ["train", "--arch", "attngan", "--dataset", "tiny", "--run-dir", str(tmp_path / "r")],
        code=2,
    )
    assert "--damsm" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "r").exists()


def test_text_options_that_do_not_suit_the_family_are_one_line_errors(trained, tmp_path):
    npy = tmp_path / "e.npy"
    np.save(npy, np.zeros(16, dtype=np.float32))
    for extra, needle in (
        (["--embedding-file", str(npy)], "--embedding-file"),
        (["--text-encoder", str(trained["out"])], "--text-encoder"),
    ):
        result = run_cli(["generate", "bird", "--ckpt", str(trained["out"]), *extra], code=1)
        assert needle in result.output and "DAMSM" in result.output


# --- the official release layout -------------------------------------------------------------


def _legacy_save(obj, path: Path) -> None:
    torch.save(obj, path, _use_new_zipfile_serialization=False)


def _official_state(module: torch.nn.Module) -> dict:
    """A state dict as torch <= 0.3 wrote it: no num_batches_tracked entries."""
    return {k: v for k, v in module.state_dict().items() if not k.endswith("num_batches_tracked")}


@pytest.fixture(scope="module")
def official_release(tmp_path_factory):
    """bird_AttnGAN2.pth, DAMSMencoders/bird/{text,image}_encoder200.pth and captions.pickle
    in the official formats, at tiny widths."""
    root = tmp_path_factory.mktemp("official")
    torch.manual_seed(1)
    text = make_damsm_text(seed=1)
    generator = AttnGANGenerator(TINY_G_CFG).eval()
    _legacy_save(_official_state(generator), root / "bird_AttnGAN2.pth")
    folder = root / "DAMSMencoders" / "bird"
    folder.mkdir(parents=True)
    _legacy_save(_official_state(text.encoder), folder / "text_encoder200.pth")
    words = dict(enumerate(text.vocabulary.words))
    data = [[[1, 2]], [[2]], words, {w: i for i, w in words.items()}]
    (root / "captions.pickle").write_bytes(pickle.dumps(data, protocol=2))
    return {"root": root, "generator": generator, "text": text, "folder": folder}


def test_the_released_layout_generates_in_one_command(official_release, tmp_path, isolated_cache):
    release = official_release
    out = tmp_path / "out"
    run_cli(
        ["generate", "train bird 3", "-n", "2", "--seed", "0", "--out", str(out),
         "--ckpt", str(release["root"] / "bird_AttnGAN2.pth"), "--damsm", str(release["folder"]),
         "--vocabulary", str(release["root"] / "captions.pickle")]
    )  # fmt: skip
    bundle = load_generator_file(release["root"] / "bird_AttnGAN2.pth")
    assert bundle.source == "official" and bundle.cfg.gf_dim == 4 and bundle.cfg.r_num == 1
    for key, value in release["generator"].state_dict().items():
        if not key.endswith("num_batches_tracked"):
            assert torch.equal(bundle.generator.state_dict()[key], value), key
    # The same images as our own generator with those weights and that text encoder.
    features = release["text"].encode(["train bird 3"])
    noise = AttnGAN(TINY_G_CFG).draw_noise(2, 0)
    with torch.no_grad():
        images = AttnGAN(TINY_G_CFG).sample(
            release["generator"], features[torch.zeros(2, dtype=torch.long)], noise
        )
    from PIL import Image

    from stackgan_cli.imaging import to_pixels

    with Image.open(out / "00_01.png") as written:
        assert np.array_equal(np.asarray(written), to_pixels(images[-1])[1])


def test_official_files_without_their_damsm_or_vocabulary_are_one_line_errors(
    official_release, isolated_cache
):
    release = official_release
    ckpt = str(release["root"] / "bird_AttnGAN2.pth")
    result = run_cli(["generate", "bird", "--ckpt", ckpt], code=1)
    assert "--damsm DAMSMencoders/bird --vocabulary captions.pickle" in " ".join(
        result.output.split()
    )
    result = run_cli(
        ["generate", "bird", "--ckpt", ckpt, "--damsm", str(release["folder"])], code=1
    )
    assert "--vocabulary captions.pickle" in result.output
    # A vocabulary of another size than the encoder's embedding table.
    words = {0: "<end>", 1: "bird"}
    other = release["root"] / "other.pickle"
    other.write_bytes(pickle.dumps([[], [], words, {"<end>": 0, "bird": 1}], protocol=2))
    result = run_cli(
        [
            "generate",
            "bird",
            "--ckpt",
            ckpt,
            "--damsm",
            str(release["folder"]),
            "--vocabulary",
            str(other),
        ],
        code=1,
    )
    assert "not trained together" in result.output and "Traceback" not in result.output


def test_an_official_attngan_discriminator_is_not_taken_for_a_generator(tmp_path, isolated_cache):
    path = tmp_path / "netD2.pth"
    _legacy_save(_official_state(AttnGANDiscriminator(TINY_G_CFG, 256)), path)
    result = run_cli(["generate", "bird", "--ckpt", str(path)], code=1)
    assert "is a discriminator, not a generator" in result.output


def test_a_damsm_file_round_trips(trained):
    bundle = load_damsm(trained["damsm"])
    assert bundle.source == "stackgan" and bundle.dataset == "tiny"
    assert bundle.text.vocabulary == make_damsm_text().vocabulary
    assert load_damsm(trained["damsm"], image_encoder=False).image_encoder is None


def test_interpolation_and_serve_work_for_attngan_files(trained, tmp_path, monkeypatch):
    monkeypatch.setenv("STACKGAN_HOME", str(trained["home"]))
    out = tmp_path / "interp"
    run_cli(
        ["generate", "--interpolate", "train bird 3", "test caption 2 bird", "--steps", "3",
         "-n", "2", "--ckpt", str(trained["out"]), "--seed", "1", "--out", str(out)]
    )  # fmt: skip
    assert (out / "interpolation.png").is_file()
    from stackgan_cli.serve.generation import LoadedGenerator

    loaded = LoadedGenerator.load(trained["out"], device="cpu")
    assert loaded.describe()["family"] == "attngan" and loaded.sizes == (64, 128, 256)
    result = loaded.generate(["train bird 3"], n=2, seed=1, size=128, stages=True)
    assert result.images.shape == (1, 2, 3, 128, 128) and result.smaller[0].shape[-1] == 64


@pytest.mark.parametrize("branches", ["1", "2"])
def test_smaller_trees_train_and_generate(trained, tmp_path, monkeypatch, branches):
    monkeypatch.setenv("STACKGAN_HOME", str(trained["home"]))
    out = tmp_path / "attn.pt"
    run_cli(
        attngan_args(tmp_path / "run", trained["damsm"], "--branches", branches, "--out", str(out))
    )
    bundle = load_generator_file(out)
    assert bundle.family.output_sizes() == (64, 128)[: int(branches)]
    run_cli(["generate", "train bird", "-n", "1", "--ckpt", str(out), "--out", str(tmp_path / "g")])


def test_serve_loads_the_released_layout(official_release, isolated_cache):
    from stackgan_cli.serve.generation import LoadedGenerator

    release = official_release
    loaded = LoadedGenerator.load(
        release["root"] / "bird_AttnGAN2.pth",
        device="cpu",
        damsm=release["folder"],
        vocabulary=release["root"] / "captions.pickle",
    )
    assert loaded.describe()["source"] == "official"
    assert loaded.generate(["train bird 3"], n=1, seed=0).images.shape == (1, 1, 3, 256, 256)
