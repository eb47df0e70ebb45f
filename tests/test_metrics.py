"""IS, FID and diversity maths, the sample schedule and the real-image crops (no network)."""

import math

import numpy as np
import pytest
import torch

from stackgan_cli.evaluation.metrics import (
    feature_statistics,
    frechet_distance,
    inception_score,
    mean_pairwise_distance,
)
from stackgan_cli.evaluation.real_stats import diversity_groups, real_image_batches
from stackgan_cli.evaluation.sampling import caption_schedule, diversity_schedule
from stackgan_cli.imaging import to_uint8


def _logits(probabilities: torch.Tensor) -> torch.Tensor:
    """Logits whose softmax is ``probabilities`` (zeros become 1e-30, negligible)."""
    return probabilities.clamp_min(1e-30).log()


def test_inception_score_of_identical_predictions_is_one():
    p = torch.softmax(torch.randn(1, 50, generator=torch.Generator().manual_seed(0)), dim=1)
    mean, std = inception_score(_logits(p.repeat(200, 1)), splits=10, seed=0)
    assert mean == pytest.approx(1.0, abs=1e-9)
    assert std == pytest.approx(0.0, abs=1e-9)


@pytest.mark.parametrize("k", [1, 2, 7, 20])
def test_inception_score_of_k_equiprobable_one_hot_classes_is_k(k):
    labels = torch.arange(k * 30) % k
    one_hot = torch.nn.functional.one_hot(labels, num_classes=1008).double()
    mean, std = inception_score(_logits(one_hot), splits=1, seed=0)
    assert mean == pytest.approx(k, rel=1e-9)
    assert std == 0.0


def test_inception_score_splits_are_shuffled_reproducibly():
    # Sorted by class, unshuffled splits would each hold one class (IS 1); shuffled ones mix.
    labels = torch.arange(400) // 100
    logits = _logits(torch.nn.functional.one_hot(labels, num_classes=10).double())
    mean, std = inception_score(logits, splits=4, seed=3)
    assert 3.0 < mean <= 4.0 + 1e-9 and std > 0
    assert inception_score(logits, splits=4, seed=3) == (mean, std)


def test_inception_score_rejects_more_splits_than_samples():
    with pytest.raises(ValueError):
        inception_score(torch.zeros(3, 10), splits=4, seed=0)


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_a_shift():
    features = torch.randn(500, 16, generator=torch.Generator().manual_seed(1))
    stats = feature_statistics(features)
    assert stats.count == 500
    assert frechet_distance(stats, stats) == pytest.approx(0.0, abs=1e-6)
    previous = 0.0
    for size in (0.1, 0.5, 1.0, 3.0):
        shift = torch.full((16,), size)
        fid = frechet_distance(stats, feature_statistics(features + shift))
        # Same covariance: FID is exactly the squared distance between the means.
        assert fid == pytest.approx(16 * size**2, rel=1e-4)
        assert fid > previous
        previous = fid


def test_fid_grows_with_a_change_of_spread():
    features = torch.randn(2000, 8, generator=torch.Generator().manual_seed(2))
    base = feature_statistics(features)
    wider = frechet_distance(base, feature_statistics(features * 2))
    # Gaussians N(0, I) and N(0, 4I) in 8-d: FID = 8 * (1 + 4 - 2 * 2) = 8 (up to sampling).
    assert wider == pytest.approx(8.0, rel=0.05)


@pytest.mark.parametrize("n", [5, 30, 63])
def test_fid_low_rank_path_equals_torch_fidelity(n):
    gen = torch.Generator().manual_seed(n)
    real = feature_statistics(torch.randn(300, 64, generator=gen) * 2)
    fake_features = torch.randn(n, 64, generator=gen) + 0.3
    fake = feature_statistics(fake_features)
    reference = frechet_distance(real, fake)  # torch-fidelity's D x D computation
    assert frechet_distance(real, fake, fake_features) == pytest.approx(reference, rel=1e-6)
    same = frechet_distance(fake, fake, fake_features)
    assert same == pytest.approx(0.0, abs=1e-6 * np.trace(fake.sigma))


def test_mean_pairwise_distance():
    collapsed = torch.ones(3, 8, 5)
    assert mean_pairwise_distance(collapsed) == (0.0, 0.0)
    # k one-hot vectors scaled by s: every pair is s * sqrt(2) apart.
    groups = torch.stack([torch.eye(4) * 1.0, torch.eye(4) * 3.0])
    mean, std = mean_pairwise_distance(groups)
    assert mean == pytest.approx(2 * math.sqrt(2))
    assert std == pytest.approx(math.sqrt(2))
    with pytest.raises(ValueError):
        mean_pairwise_distance(torch.ones(2, 1, 5))


def test_caption_schedule_uses_every_caption_of_every_image_once_per_ten_passes():
    images, captions = caption_schedule(num_images=7, num_samples=70)
    pairs = set(zip(images.tolist(), captions.tolist(), strict=True))
    assert len(pairs) == 70
    # A short run still covers every image.
    images, captions = caption_schedule(num_images=7, num_samples=9)
    assert set(images.tolist()) == set(range(7))
    assert captions.tolist() == [0] * 7 + [1] * 2


def test_diversity_schedule_repeats_spread_captions():
    images, captions = diversity_schedule(num_images=100, captions=10, per_caption=8)
    assert len(images) == 80
    assert len(set(zip(images[::8].tolist(), captions[::8].tolist(), strict=True))) == 10
    assert (images.reshape(10, 8) == images.reshape(10, 8)[:, :1]).all()
    # One test image: its ten captions are still ten distinct conditions.
    images, captions = diversity_schedule(num_images=1, captions=10, per_caption=2)
    assert set(images.tolist()) == {0} and len(set(captions.tolist())) == 10


def test_diversity_groups_are_distinct_images():
    groups = diversity_groups(200)
    assert groups.shape == (10, 8)
    assert len(np.unique(groups)) == 80
    assert diversity_groups(12).shape == (1, 8)
    assert diversity_groups(5).shape == (1, 5)
    assert diversity_groups(1) is None


def test_to_uint8_matches_the_official_conversion():
    x = torch.tensor([-1.5, -1.0, 0.0, 0.999, 1.0, 2.0])
    assert to_uint8(x).tolist() == [0, 0, 127, 254, 255, 255]


def test_real_images_are_centre_crops():
    images = np.zeros((3, 76, 76, 3), dtype=np.uint8)
    images[:, 6:70, 6:70] = 200
    images[1, 6, 6] = 7
    batches = list(real_image_batches(images, 64, np.arange(3), batch_size=2))
    assert [tuple(b.shape) for b in batches] == [(2, 3, 64, 64), (1, 3, 64, 64)]
    joined = torch.cat(batches)
    assert joined.dtype == torch.uint8
    assert joined[1, :, 0, 0].tolist() == [7, 7, 7]
    assert (joined[0] == 200).all() and (joined[2] == 200).all()
