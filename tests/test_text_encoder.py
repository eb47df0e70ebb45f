"""The text encoder: prompt normalisation, training, determinism, robustness, baselines."""

from __future__ import annotations

import io
import math
import pickle
import zlib
from itertools import product

import numpy as np
import pytest
import torch

from stackgan_cli.errors import StackGANError
from stackgan_cli.text import (
    MAX_TOKENS,
    TextEncoder,
    TextEncoderConfig,
    normalize_prompt,
    train_text_encoder,
)
from stackgan_cli.text import tokenize as tokenize_module
from stackgan_cli.text.baselines import (
    mean_embedding_cosine,
    nearest_caption_cosine,
    nearest_caption_indices,
)
from stackgan_cli.text.tokenize import word_set

REPORT_KEYS = {
    "test_cosine",
    "baseline_mean_embedding_cosine",
    "baseline_nearest_caption_cosine",
    "train_pairs",
    "test_pairs",
    "seconds",
}
COLOURS = ("red", "green", "blue", "yellow", "purple", "orange")
SHAPES = ("circle", "square", "triangle", "star")
BACKGROUNDS = ("gray", "beige", "white", "black")
TEMPLATES = (
    "a {c} {s} on a {b} background",
    "this is a {c} {s}",
    "the picture shows a {c} {s} on {b}",
    "a {b} background with a {c} {s} on it",
    "one {c} {s}",
    "the {s} in this image is {c}",
    "a simple drawing of a {c} {s}",
    "the {c} object is a {s}",
    "there is a {s} colored {c}",
    "a single {c} {s} and nothing else",
)
DIM = 128


def _word_vector(word: str) -> np.ndarray:
    return np.random.default_rng(zlib.crc32(word.encode())).standard_normal(DIM)


def _stand_in(caption: str) -> np.ndarray:
    """Like the shapes dataset's stand-in embeddings: a normalised sum of word vectors."""
    total = sum(_word_vector(w) for w in caption.split())
    return (total * 4.61 / np.linalg.norm(total)).astype(np.float32)


def _synthetic(test_classes: set[tuple[str, str]]):
    """Tiny shapes-like set: 10 captions per image, class-disjoint train/test split."""
    splits = {"train": ([], []), "test": ([], [])}
    for index, (colour, shape) in enumerate(product(COLOURS, SHAPES)):
        for copy in range(3):
            background = BACKGROUNDS[(index + copy) % len(BACKGROUNDS)]
            captions = [t.format(c=colour, s=shape, b=background) for t in TEMPLATES]
            split = "test" if (colour, shape) in test_classes else "train"
            splits[split][0].append(captions)
            splits[split][1].append(np.stack([_stand_in(c) for c in captions]))
    return {name: (caps, np.stack(embs)) for name, (caps, embs) in splits.items()}


TEST_CLASSES = {(colour, SHAPES[i % len(SHAPES)]) for i, colour in enumerate(COLOURS)}


@pytest.fixture(scope="module")
def synthetic():
    return _synthetic(TEST_CLASSES)


@pytest.fixture(scope="module")
def trained(synthetic):
    """(encoder, report) trained once on the tiny synthetic set."""
    (train_caps, train_embs), (test_caps, test_embs) = synthetic["train"], synthetic["test"]
    return train_text_encoder(train_caps, train_embs, test_caps, test_embs, progress=False)


def _cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return torch.nn.functional.cosine_similarity(a, b, dim=-1).item()


# --- normalize_prompt -----------------------------------------------------------------------


def test_normalize_prompt_nfkc_case_and_whitespace():
    assert normalize_prompt("  A\tRED\n\n bird  ") == "a red bird"
    assert normalize_prompt("ＲＥＤ ﬁnch") == "red finch"  # full-width letters, fi ligature
    assert normalize_prompt("Un oiseau ROUGE, élégant 鳥") == "un oiseau rouge, élégant 鳥"


@pytest.mark.parametrize("text", ["", "   ", "\t\n", "\u3000"])
def test_normalize_prompt_empty_is_an_error(text):
    with pytest.raises(StackGANError, match="empty"):
        normalize_prompt(text)


def test_normalize_prompt_truncates_long_prompts_with_a_warning(monkeypatch):
    warnings: list[str] = []
    monkeypatch.setattr(tokenize_module, "warn", warnings.append)
    long = " ".join(f"word{i}," for i in range(MAX_TOKENS))  # 2 tokens per item
    result = normalize_prompt(long)
    assert len(warnings) == 1 and str(MAX_TOKENS) in warnings[0]
    assert len(tokenize_module.split_tokens(result, max_tokens=10**6)) == MAX_TOKENS
    assert result.startswith("word0, word1,")

    warnings.clear()
    assert normalize_prompt("a short prompt") == "a short prompt"
    assert warnings == []


def test_token_ids_are_stable_and_in_range():
    ids = tokenize_module.token_ids("bird", 1 << 14)
    assert ids == tokenize_module.token_ids("bird", 1 << 14)
    assert all(0 <= i < 1 << 14 for i in ids)
    assert len(ids) == 10  # "<bird>": itself, 4 trigrams, 3 four-grams, 2 five-grams


# --- baselines ------------------------------------------------------------------------------


def _brute_force_scores(train: list[str], test: list[str]) -> list[list[float]]:
    """TF-IDF cosine (up to each query's own norm) of every (test, train) caption pair."""
    documents = [word_set(c) for c in train]
    frequency: dict[str, int] = {}
    for words in documents:
        for w in words:
            frequency[w] = frequency.get(w, 0) + 1
    idf = {w: math.log((1 + len(train)) / (1 + f)) + 1 for w, f in frequency.items()}
    norms = [math.sqrt(sum(idf[w] ** 2 for w in words)) or 1.0 for words in documents]
    return [
        [
            sum(idf[w] ** 2 for w in word_set(q) & d) / n
            for d, n in zip(documents, norms, strict=True)
        ]
        for q in test
    ]


def test_nearest_caption_matches_brute_force(monkeypatch):
    from stackgan_cli.text import baselines

    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(150)]
    weights = 1.0 / np.arange(1, 151)  # Zipf-like: a few frequent words, many rare ones
    weights /= weights.sum()

    def sentence() -> str:
        return " ".join(rng.choice(words, size=int(rng.integers(1, 12)), p=weights))

    train = [sentence() for _ in range(400)]
    test = [sentence() for _ in range(50)] + ["nothing known"]
    # Small blocks and few dense words, so every code path (tiles, sparse part) is exercised.
    monkeypatch.setattr(baselines, "_TRAIN_BLOCK", 64)
    monkeypatch.setattr(baselines, "_TEST_BLOCK", 16)
    monkeypatch.setattr(baselines, "_FREQUENT_WORDS", 8)
    found = nearest_caption_indices(train, test).tolist()
    for scores, index in zip(_brute_force_scores(train, test), found, strict=True):
        assert scores[index] == pytest.approx(max(scores), abs=1e-6)
    assert found[-1] == 0  # no word in common with anything: the first caption


def test_nearest_caption_ties_go_to_the_first():
    train = ["a blue fish", "the red bird", "red bird", "Red, bird!"]
    assert nearest_caption_indices(train, ["red bird", "bird red"]).tolist() == [2, 2]


def test_baseline_cosines():
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    test = torch.tensor([[1.0, 1.0], [2.0, 0.0]])
    assert mean_embedding_cosine(train, test) == pytest.approx((1.0 + math.sqrt(0.5)) / 2)
    cosine = nearest_caption_cosine(["red bird", "blue fish"], train, ["a blue fish", "red"], test)
    assert cosine == pytest.approx((math.sqrt(0.5) + 1.0) / 2)


# --- training and the trained encoder -------------------------------------------------------


def test_report_has_exactly_the_contract_keys(trained, synthetic):
    _, report = trained
    assert set(report) == REPORT_KEYS
    assert report["train_pairs"] == len(synthetic["train"][0]) * 10
    assert report["test_pairs"] == len(synthetic["test"][0]) * 10
    assert report["seconds"] > 0
    assert all(-1.0 <= report[k] <= 1.0 for k in REPORT_KEYS if "cosine" in k)


def test_encoder_beats_both_baselines_on_unseen_classes(trained):
    _, report = trained
    best_baseline = max(
        report["baseline_mean_embedding_cosine"], report["baseline_nearest_caption_cosine"]
    )
    assert report["test_cosine"] > best_baseline + 0.05, report
    assert report["test_cosine"] > 0.9, report


def test_encode_shape_dtype_and_no_grad(trained):
    encoder, _ = trained
    out = encoder.encode(["a red circle", "a blue star on a beige background"])
    assert out.shape == (2, DIM) and out.dtype == torch.float32 and out.device.type == "cpu"
    assert not out.requires_grad and torch.isfinite(out).all()
    assert encoder.encode("a red circle").shape == (1, DIM)
    assert encoder.encode([]).shape == (0, DIM)


def test_encode_rejects_empty_prompts(trained):
    encoder, _ = trained
    with pytest.raises(StackGANError, match="empty"):
        encoder.encode(["a red circle", "   "])


def test_encode_is_deterministic_and_survives_a_save_load_round_trip(trained, tmp_path):
    encoder, _ = trained
    prompts = ["a red circle on a gray background", "ONE  green  Star", "a blue ☃ on 鳥"]
    first = encoder.encode(prompts)
    assert torch.equal(first, encoder.encode(prompts))
    # A sentence's vector does not depend on the other sentences of the call.
    assert torch.equal(encoder.encode(prompts[1:])[1], first[2])

    path = tmp_path / "text_encoder.pt"
    torch.save(encoder.to_dict(), path)
    loaded = TextEncoder.from_dict(torch.load(path, weights_only=True))
    assert torch.equal(loaded.encode(prompts), first)


def test_to_dict_holds_only_plain_values(trained):
    encoder, _ = trained

    def check(value):
        if isinstance(value, dict):
            for key, item in value.items():
                assert isinstance(key, str)
                check(item)
        else:
            assert isinstance(value, torch.Tensor | str | int | float | bool), type(value)

    data = encoder.to_dict()
    check(data)
    assert pickle.loads(pickle.dumps(data))["config"] == encoder.config.to_dict()


def test_from_dict_rejects_other_dicts(trained):
    encoder, _ = trained
    with pytest.raises(StackGANError, match="not a StackGAN text encoder"):
        TextEncoder.from_dict({"weights": torch.zeros(1)})
    data = encoder.to_dict() | {"format_version": 99}
    with pytest.raises(StackGANError, match="version"):
        TextEncoder.from_dict(data)
    data = encoder.to_dict()
    data["config"] = data["config"] | {"surprise": 1}
    with pytest.raises(StackGANError, match="unknown keys"):
        TextEncoder.from_dict(data)


def test_typos_and_unknown_words_stay_close_to_the_intended_sentence(trained):
    encoder, _ = trained
    correct, typo, unknown_word, unrelated = encoder.encode(
        [
            "a red circle on a gray background",
            "a red cirlce on a grey backgruond",
            "a red circle on a gray background, zqxvbnm",
            "the green object is a triangle",
        ]
    )
    for variant in (typo, unknown_word):
        assert torch.isfinite(variant).all()
        assert _cosine(variant, correct) > _cosine(variant, unrelated) + 0.1
    exotic = encoder.encode(["a red ☃☃ circle 鳥 ∑ on ﬁ gray"])
    assert torch.isfinite(exotic).all()


def test_word_order_matters(trained):
    encoder, _ = trained
    a, b = encoder.encode(
        ["a red circle on a blue background", "a blue circle on a red background"]
    )
    assert not torch.allclose(a, b, atol=1e-4)


def test_training_is_reproducible_and_keeps_global_rng(synthetic):
    (train_caps, train_embs), (test_caps, test_embs) = synthetic["train"], synthetic["test"]
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    first, _ = train_text_encoder(
        train_caps[:20], train_embs[:20], test_caps[:3], test_embs[:3], epochs=2, progress=False
    )
    assert torch.equal(torch.rand(1), expected_next)  # the caller's random stream is untouched
    second, _ = train_text_encoder(
        train_caps[:20], train_embs[:20], test_caps[:3], test_embs[:3], epochs=2, progress=False
    )
    for (name, a), (_, b) in zip(
        first.state_dict().items(), second.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


@pytest.mark.parametrize("shown", [True, False])
def test_progress_bar_only_when_asked(synthetic, monkeypatch, shown):
    from rich.console import Console

    from stackgan_cli import console
    from stackgan_cli.text import training

    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, width=100)
    monkeypatch.setattr(console, "err", terminal)
    monkeypatch.setattr(training, "task_progress", console.task_progress)
    (train_caps, train_embs), (test_caps, test_embs) = synthetic["train"], synthetic["test"]
    train_text_encoder(
        train_caps[:8], train_embs[:8], test_caps[:2], test_embs[:2], epochs=1, progress=shown
    )
    assert ("training the text encoder" in screen.getvalue()) is shown


def test_training_checks_its_inputs(synthetic):
    (train_caps, train_embs), (test_caps, test_embs) = synthetic["train"], synthetic["test"]
    with pytest.raises(ValueError, match="images"):
        train_text_encoder(train_caps[:5], train_embs[:4], test_caps, test_embs, progress=False)
    with pytest.raises(ValueError, match="differ in size"):
        train_text_encoder(
            train_caps[:5], train_embs[:5], test_caps, test_embs[..., :10], progress=False
        )


def test_untrained_encoder_round_trips_exactly_after_rounding():
    encoder = TextEncoder(TextEncoderConfig(out_dim=16, buckets=256, conv_dim=8, mlp_dim=8))
    encoder.round_weights_()
    loaded = TextEncoder.from_dict(encoder.to_dict())
    assert torch.equal(loaded.encode(["any text at all"]), encoder.encode(["any text at all"]))


# --- real data ------------------------------------------------------------------------------


def _read_raw_split(root, split):
    folder = root / "birds" / split
    with open(folder / "filenames.pickle", "rb") as f:
        keys = pickle.load(f, encoding="latin1")
    with open(folder / "char-CNN-RNN-embeddings.pickle", "rb") as f:
        embeddings = np.stack(pickle.load(f, encoding="latin1")).astype(np.float32)
    captions = [
        (root / "birds" / "text_c10" / f"{key}.txt").read_text(encoding="utf-8").splitlines()[:10]
        for key in keys
    ]
    return captions, embeddings


@pytest.mark.slow
def test_cub_mini_encoder_beats_both_baselines(shared_data):
    root = shared_data / "cub-mini"
    train_caps, train_embs = _read_raw_split(root, "train")
    test_caps, test_embs = _read_raw_split(root, "test")
    encoder, report = train_text_encoder(
        train_caps, train_embs, test_caps, test_embs, epochs=8, progress=False
    )
    assert set(report) == REPORT_KEYS
    assert report["train_pairs"] == 2750 and report["test_pairs"] == 2680
    best_baseline = max(
        report["baseline_mean_embedding_cosine"], report["baseline_nearest_caption_cosine"]
    )
    assert report["test_cosine"] > best_baseline + 0.05, report
    assert encoder.encode(["this bird has a red crown and black wings"]).shape == (1, 1024)
