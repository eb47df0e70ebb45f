"""The device-resident batch sampler: crops, flips, captions, epochs, resume and shards."""

import numpy as np
import pytest
import torch

from stackgan_cli.data.sampler import DeviceBatchSampler

N, LOAD, SIZE, DIM = 20, 76, 64, 4


def coded_split():
    """Images whose pixels spell (image index, row, column); embedding (i, j) = 10 i + j."""
    images = np.zeros((N, LOAD, LOAD, 3), dtype=np.uint8)
    images[..., 0] = np.arange(N)[:, None, None]
    images[..., 1] = np.arange(LOAD)[None, :, None]
    images[..., 2] = np.arange(LOAD)[None, None, :]
    embeddings = (10 * np.arange(N)[:, None] + np.arange(10)[None, :]).astype(np.float32)
    embeddings = np.repeat(embeddings[:, :, None], DIM, axis=2)
    return images, embeddings


def make(batch=4, seed=0, rank=0, world=1, **kwargs):
    images, embeddings = coded_split()
    return DeviceBatchSampler(
        images,
        embeddings,
        image_size=SIZE,
        batch_size=batch,
        device="cpu",
        seed=seed,
        rank=rank,
        world_size=world,
        **kwargs,
    )


def decode(images, text):
    """Per sample: (image index, row offset, column offset, flipped, caption index)."""
    pixels = ((images + 1.0) * 127.5).round().to(torch.int64)  # (B, 3, S, S)
    out = []
    for b in range(images.size(0)):
        index = pixels[b, 0]
        assert torch.all(index == index[0, 0])
        rows = pixels[b, 1][:, 0]
        cols = pixels[b, 2][0, :]
        assert torch.equal(rows, rows[0] + torch.arange(SIZE))
        assert torch.all(pixels[b, 1] == rows[:, None])
        assert torch.all(pixels[b, 2] == cols[None, :])
        flipped = bool(cols[0] > cols[-1])
        left = int(cols.min())
        assert torch.equal(cols.flip(0) if flipped else cols, left + torch.arange(SIZE))
        i = int(index[0, 0])
        code = int(text[b, 0].item())
        assert torch.all(text[b] == code) and code // 10 == i
        out.append((i, int(rows[0]), left, flipped, code % 10))
    return out


def test_batches_are_random_crops_flips_and_captions_of_a_permutation():
    sampler = make(batch=4)
    assert sampler.steps_per_epoch == N // 4
    seen = []
    for _ in range(sampler.steps_per_epoch):
        batch = sampler.next_batch()
        images, text = batch.images, batch.text
        assert images.shape == (4, 3, SIZE, SIZE) and images.dtype == torch.float32
        assert images.min() >= -1.0 and images.max() <= 1.0
        assert text.shape == (4, DIM)
        seen += decode(images, text)
    indices = [s[0] for s in seen]
    assert sorted(indices) == list(range(N))  # one epoch: every image once
    assert all(0 <= s[1] <= LOAD - SIZE and 0 <= s[2] <= LOAD - SIZE for s in seen)
    assert {s[3] for s in seen} == {True, False}
    assert len({s[4] for s in seen}) > 1
    assert (sampler.epoch, sampler.step) == (1, 0)
    # The next epoch draws a new plan.
    batch = sampler.next_batch()
    assert [s[0] for s in decode(batch.images, batch.text)] != indices[:4]
    assert batch.wrong is None  # only WrongImageSampler draws wrong images


def test_drop_last_and_memory_format():
    sampler = make(batch=6)
    assert sampler.steps_per_epoch == 3  # 20 images, batches of 6: the last 2 are dropped
    images = sampler.next_batch().images
    assert images.is_contiguous()
    images = make(batch=6, channels_last=True).next_batch().images
    assert images.is_contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="fewer than one batch"):
        make(batch=21)


def test_state_dict_replays_the_rest_of_an_epoch_and_the_next():
    reference = make(batch=4, seed=3)
    batches = [reference.next_batch() for _ in range(12)]  # 2.4 epochs

    for cut in (0, 2, 5, 7):
        first = make(batch=4, seed=3)
        for _ in range(cut):
            first.next_batch()
        state = first.state_dict()
        second = make(batch=4, seed=99)  # the seed is overridden by the state
        second.load_state_dict(state)
        assert (second.epoch, second.step) == divmod(cut, 5)
        for k in range(cut, 12):
            batch = second.next_batch()
            assert torch.equal(batch.images, batches[k].images)
            assert torch.equal(batch.text, batches[k].text)


def test_ranks_take_disjoint_shards_of_the_same_plan():
    ranks = [make(batch=2, seed=5, rank=r, world=2) for r in range(2)]
    assert ranks[0].steps_per_epoch == N // 4
    seen = [[], []]
    for _ in range(ranks[0].steps_per_epoch):
        for r, sampler in enumerate(ranks):
            batch = sampler.next_batch()
            seen[r] += [s[0] for s in decode(batch.images, batch.text)]
    assert not set(seen[0]) & set(seen[1])
    assert sorted(seen[0] + seen[1]) == list(range(N))


def test_state_maps_to_another_world_size():
    two = make(batch=2, seed=1, rank=0, world=2)
    two.next_batch()
    two.next_batch()  # 8 samples of the epoch consumed globally
    one = make(batch=2, seed=1)
    one.load_state_dict(two.state_dict())
    assert (one.epoch, one.step) == (0, 4)
