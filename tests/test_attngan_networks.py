"""The AttnGAN networks and the DAMSM encoders against the official layout (shape tables), the
official quirks they keep (the batch-tiled attention mask, the text encoder's outputs), the
DAMSM and adversarial losses re-derived from attngan-spec.md section 7 with plain loops, and the
official initialisation. Tiny widths throughout; the birds layouts are built on the meta device.
"""

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from reference_tables import assert_matches_table, read_table

from stackgan_cli.models import (
    AttnGANDiscriminator,
    AttnGANGenerator,
    DAMSMImageEncoder,
    DAMSMTextEncoder,
    ModelConfig,
    WordAttention,
)
from stackgan_cli.models.damsm import TRUNK_MODULES
from stackgan_cli.models.losses import (
    attngan_discriminator_loss,
    attngan_generator_loss,
    damsm_sentence_loss,
    damsm_word_loss,
    damsm_word_loss_batched,
    kl_loss,
)

BIRDS = ModelConfig.preset("birds-attngan")
TINY = dataclasses.replace(
    BIRDS, gf_dim=4, df_dim=4, text_dim=16, condition_dim=8, z_dim=8, word_dim=8
)
VOCAB = 30


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    """Tiny networks gain nothing from intra-op threads, which a busy machine contends."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def image_encoder() -> DAMSMImageEncoder:
    """A tiny-width image encoder (the full Inception trunk) in eval mode, with well-scaled
    trunk statistics: one batch-statistics pass with momentum 1."""
    torch.manual_seed(0)
    encoder = DAMSMImageEncoder(TINY, trunk_batchnorm_trains=True)
    bns = [m for m in encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for bn in bns:
        bn.momentum = 1.0
    with torch.no_grad():
        encoder.train()(torch.rand(2, 3, 299, 299) * 2 - 1)
    for bn in bns:
        bn.momentum = 0.1
    encoder.trunk_batchnorm_trains = False
    return encoder.eval()


def _randomize_bn(module: torch.nn.Module, seed: int = 1) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)


def _text(batch: int, lengths: list[int], cfg: ModelConfig = TINY, seed: int = 0):
    """Sentence (B, D), words (B, D, T) zero past each length, mask (B, T), noise, eps."""
    gen = torch.Generator().manual_seed(seed)
    num_words = max(lengths)
    sent = torch.randn(batch, cfg.text_dim, generator=gen)
    words = torch.randn(batch, cfg.text_dim, num_words, generator=gen)
    mask = torch.arange(num_words)[None, :] >= torch.tensor(lengths)[:, None]
    words = words.masked_fill(mask[:, None, :], 0.0)
    noise = torch.randn(batch, cfg.z_dim, generator=gen)
    eps = torch.randn(batch, cfg.condition_dim, generator=gen)
    return sent, words, mask, noise, eps


def _captions(lengths: list[int], total: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    captions = torch.zeros(len(lengths), total, dtype=torch.long)
    for i, n in enumerate(lengths):
        captions[i, :n] = torch.randint(1, VOCAB, (n,), generator=gen)
    return captions


# --- configuration and layouts --------------------------------------------------------------


def test_preset_and_config_fields():
    assert (BIRDS.gf_dim, BIRDS.df_dim, BIRDS.z_dim, BIRDS.condition_dim) == (32, 64, 100, 100)
    assert (BIRDS.r_num, BIRDS.text_dim, BIRDS.branch_num, BIRDS.word_dim) == (2, 256, 3, 300)
    assert ModelConfig.from_dict(TINY.to_dict()) == TINY
    # configurations saved before word_dim existed still load, with the default
    old = {k: v for k, v in ModelConfig.preset("birds").to_dict().items() if k != "word_dim"}
    assert ModelConfig.from_dict(old) == ModelConfig.preset("birds")
    assert ModelConfig.preset("birds").word_dim == 300


@pytest.mark.parametrize(
    "table, build",
    [
        ("G", lambda: AttnGANGenerator(BIRDS)),
        ("D64", lambda: AttnGANDiscriminator(BIRDS, 64)),
        ("D128", lambda: AttnGANDiscriminator(BIRDS, 128)),
        ("D256", lambda: AttnGANDiscriminator(BIRDS, 256)),
        ("text_encoder", lambda: DAMSMTextEncoder(BIRDS, 5450)),
        ("image_encoder", lambda: DAMSMImageEncoder(BIRDS)),
    ],
)
def test_layout_matches_official_table(table, build):
    with torch.device("meta"):
        model = build()
    assert_matches_table(model, read_table(f"shapes_attngan_{table}"))


def test_legacy_state_dicts_load_strictly():
    """Released files (torch <= 0.3) have no num_batches_tracked and no version metadata."""
    torch.manual_seed(0)
    for build in (lambda: AttnGANGenerator(TINY), lambda: AttnGANDiscriminator(TINY, 128)):
        source = build()
        _randomize_bn(source)
        legacy = {
            key: value.clone()
            for key, value in source.state_dict().items()
            if not key.endswith("num_batches_tracked")
        }
        assert len(legacy) < len(source.state_dict())
        assert not hasattr(legacy, "_metadata")
        target = build()
        target.load_state_dict(legacy, strict=True)
        for key, value in target.state_dict().items():
            if key.endswith("num_batches_tracked"):
                assert value.item() == 0
            else:
                assert torch.equal(value, source.state_dict()[key]), key


# --- generator and attention ------------------------------------------------------------------


def test_generator_outputs():
    torch.manual_seed(0)
    generator = AttnGANGenerator(TINY).eval()
    sent, words, mask, noise, eps = _text(3, [5, 3, 2])
    images, maps, mu, logvar = generator(sent, words, noise, mask=mask, eps=eps)
    assert [tuple(i.shape) for i in images] == [(3, 3, s, s) for s in (64, 128, 256)]
    assert [tuple(m.shape) for m in maps] == [(3, 5, s, s) for s in (64, 128)]
    assert mu.shape == logvar.shape == (3, TINY.condition_dim)
    assert all(i.abs().max() <= 1 for i in images)
    for attn in maps:  # a distribution over the words at every pixel
        torch.testing.assert_close(attn.sum(1), torch.ones(3, *attn.shape[2:]))
    # eps given: deterministic in eval mode; not given: drawn, in eval mode too
    again = generator(sent, words, noise, mask=mask, eps=eps)[0]
    assert all(torch.equal(a, b) for a, b in zip(images, again, strict=True))
    drawn = generator(sent, words, noise, mask=mask)[0]
    assert not torch.equal(drawn[0], images[0])
    with pytest.raises(ValueError, match="mask"):
        generator(sent, words, noise, mask=mask[:, :4], eps=eps)
    # c first: the first stage reads cat(c, z), c = eps * std + mu
    c_code = eps * torch.exp(0.5 * logvar) + mu
    h_code = generator.h_net1.fc(torch.cat((c_code, noise), 1))
    h_code = h_code.view(3, 16 * TINY.gf_dim, 4, 4)
    for name in ("upsample1", "upsample2", "upsample3", "upsample4"):
        h_code = getattr(generator.h_net1, name)(h_code)
    torch.testing.assert_close(generator.img_net1(h_code), images[0])


def _reference_attention(module, features, words, row_masks):
    """Spec 5 with loops: s(q, t) = h_q . U e_t, softmax over the unmasked words of the row
    mask chosen for pixel q of sample b, context_q = sum_t beta U e_t."""
    batch, channels, height, width = features.shape
    projected = torch.einsum("ct,btx->bcx", module.conv_context.weight[:, :, 0, 0], words)
    flat = features.reshape(batch, channels, -1)
    attn = torch.zeros(batch, words.size(2), height * width)
    for b in range(batch):
        for q in range(height * width):
            scores = flat[b, :, q] @ projected[b]
            scores = scores.masked_fill(row_masks(b, q), float("-inf"))
            attn[b, :, q] = torch.softmax(scores, 0)
    context = torch.bmm(projected, attn)
    return context.view(batch, channels, height, width), attn.view(batch, -1, height, width)


def test_word_attention_official_mask_tiling():
    """Pixel q of sample b is masked with sample (b * Q + q) mod B's words (spec 5)."""
    torch.manual_seed(0)
    batch, height, width = 3, 4, 4  # Q = 16, and 16 mod 3 != 0: the rows rotate
    queries = height * width
    attention = WordAttention(6, TINY.text_dim)
    features = torch.randn(batch, 6, height, width)
    _, words, mask, _, _ = _text(batch, [5, 3, 1])
    with torch.no_grad():
        context, attn = attention(features, words, mask)
        expected = _reference_attention(
            attention, features, words, lambda b, q: mask[(b * queries + q) % batch]
        )
    torch.testing.assert_close(context, expected[0])
    torch.testing.assert_close(attn, expected[1])
    # zeros exactly where the tiled mask says, positive elsewhere
    flat = attn.view(batch, -1, queries)
    for b in range(batch):
        for q in range(queries):
            used = mask[(b * queries + q) % batch]
            assert torch.all(flat[b, used, q] == 0)
            assert torch.all(flat[b, ~used, q] > 0)
    # so sample 2 (one word) attends to padding words at some pixels, sample 0 is masked at some
    assert torch.any(flat[2, 1:] > 0) and torch.any(flat[0, 1:] == 0)


def test_word_attention_per_sample_mask():
    torch.manual_seed(0)
    attention = WordAttention(6, TINY.text_dim, per_sample_mask=True)
    features = torch.randn(3, 6, 4, 4)
    _, words, mask, _, _ = _text(3, [5, 3, 1])
    with torch.no_grad():
        context, attn = attention(features, words, mask)
        expected = _reference_attention(attention, features, words, lambda b, q: mask[b])
    torch.testing.assert_close(context, expected[0])
    torch.testing.assert_close(attn, expected[1])
    assert torch.all(attn.permute(0, 2, 3, 1)[mask[:, None, None, :].expand(-1, 4, 4, -1)] == 0)
    # with equal lengths the two mappings agree
    official = WordAttention(6, TINY.text_dim)
    official.load_state_dict(attention.state_dict())
    same = torch.zeros(3, 5, dtype=torch.bool)
    same[:, 4] = True
    with torch.no_grad():
        assert torch.equal(official(features, words, same)[1], attention(features, words, same)[1])


def test_generator_mask_quirk_and_corrected_option():
    torch.manual_seed(0)
    official = AttnGANGenerator(TINY).eval()
    corrected = AttnGANGenerator(TINY, per_sample_mask=True).eval()
    corrected.load_state_dict(official.state_dict())
    lengths = [4, 4, 2, 1]  # B = 4 divides Q: pixel q of every sample gets mask[q mod 4]
    sent, words, mask, noise, eps = _text(4, lengths)
    with torch.no_grad():
        _, maps, _, _ = official(sent, words, noise, mask=mask, eps=eps)
        fixed_images, fixed_maps, _, _ = corrected(sent, words, noise, mask=mask, eps=eps)
    for attn in maps:
        flat = attn.flatten(2)  # (B, T, Q)
        pixel_mask = mask[torch.arange(flat.size(2)) % 4].t()  # (T, Q)
        for b in range(4):
            assert torch.equal(flat[b] == 0, pixel_mask)
    for attn in fixed_maps:
        assert torch.equal(
            attn.flatten(2) == 0, mask[:, :, None].expand(-1, -1, attn[0, 0].numel())
        )
    # sample 0 has no padding, yet the tiling masks words at some of its pixels
    with torch.no_grad():
        images = official(sent, words, noise, mask=mask, eps=eps)[0]
    assert not torch.allclose(images[2][0], fixed_images[2][0])
    # mask None: no masking at all, the two variants agree
    with torch.no_grad():
        a = official(sent, words, noise, mask=None, eps=eps)[0][-1]
        b = corrected(sent, words, noise, mask=None, eps=eps)[0][-1]
    assert torch.equal(a, b)


# --- discriminators -----------------------------------------------------------------------------


@pytest.mark.parametrize("size", [64, 128, 256])
def test_discriminator_heads(size):
    torch.manual_seed(0)
    netD = AttnGANDiscriminator(TINY, size).eval()
    _randomize_bn(netD)
    image = torch.rand(2, 3, size, size) * 2 - 1
    sent = torch.randn(2, TINY.text_dim)
    with torch.no_grad():
        cond, uncond = netD(image, sent)
        features = netD.encode(image)
        assert features.shape == (2, 8 * TINY.df_dim, 4, 4)
        # features first, then the tiled sentence
        joint = netD.COND_DNET.jointConv(
            torch.cat((features, sent[:, :, None, None].expand(-1, -1, 4, 4)), 1)
        )
        expected = torch.sigmoid(netD.COND_DNET.outlogits[0](joint).view(-1))
        torch.testing.assert_close(cond, expected)
        torch.testing.assert_close(
            uncond, torch.sigmoid(netD.UNCOND_DNET.outlogits[0](features).view(-1))
        )
        raw_cond, raw_uncond = netD(image, sent, logits=True)
    assert cond.shape == uncond.shape == (2,)
    torch.testing.assert_close(torch.sigmoid(raw_cond), cond)
    torch.testing.assert_close(torch.sigmoid(raw_uncond), uncond)
    with pytest.raises(ValueError, match=str(size)):
        netD(torch.zeros(2, 3, size // 2, size // 2), sent)


# --- text encoder -------------------------------------------------------------------------------


def test_text_encoder_outputs():
    torch.manual_seed(0)
    encoder = DAMSMTextEncoder(TINY, VOCAB).eval()
    lengths = [6, 4, 4, 1]
    captions = _captions(lengths, 9)  # padded beyond the longest caption
    words, sent = encoder(captions, torch.tensor(lengths))
    hidden = TINY.text_dim // 2
    assert words.shape == (4, TINY.text_dim, 6)  # T = max(cap_lens), not 9
    assert sent.shape == (4, TINY.text_dim)
    with torch.no_grad():
        for i, n in enumerate(lengths):
            assert torch.all(words[i, :, n:] == 0)
            # an independent run over the unpadded caption
            output, (h_n, _) = encoder.rnn(encoder.encoder(captions[i : i + 1, :n]))
            torch.testing.assert_close(words[i, :, :n], output[0].t())
            forward_final, backward_final = output[0, n - 1, :hidden], output[0, 0, hidden:]
            torch.testing.assert_close(sent[i], torch.cat((forward_final, backward_final)))
            torch.testing.assert_close(sent[i], h_n[:, 0].reshape(-1))
    # any order works: rows follow the captions
    order = [2, 0, 3, 1]
    w2, s2 = encoder(captions[order], [lengths[i] for i in order])
    torch.testing.assert_close(s2, sent[order])
    torch.testing.assert_close(w2, words[order])
    # dropout on the embedded words in train mode only; zero initial state by default
    w_train, _ = encoder.train()(captions, lengths)
    assert not torch.allclose(w_train, words)
    encoder.eval()
    zero = encoder.init_hidden(4)
    assert torch.equal(encoder(captions, lengths, zero)[1], sent)
    with torch.no_grad():
        assert encoder.encoder.weight.abs().max() <= 0.1


# --- image encoder ------------------------------------------------------------------------------


def test_image_encoder_structure_never_downloads(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("the image encoder must not download")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    encoder = DAMSMImageEncoder(TINY)
    names = [name for name, _ in encoder.named_children()]
    assert names == [*TRUNK_MODULES, "emb_features", "emb_cnn_code"]
    trainable = [name for name, p in encoder.named_parameters() if p.requires_grad]
    assert trainable == ["emb_features.weight", "emb_cnn_code.weight", "emb_cnn_code.bias"]
    assert encoder.emb_features.weight.abs().max() <= 0.1
    assert encoder.emb_cnn_code.weight.abs().max() <= 0.1
    bias = encoder.emb_cnn_code.bias
    assert bias.abs().max() <= 1 / math.sqrt(2048) and bias.abs().max() > 0  # torch default

    trunk_bns = [m for n in TRUNK_MODULES for m in getattr(encoder, n).modules()]
    encoder.train()
    assert encoder.training and encoder.emb_features.training
    assert not any(m.training for m in trunk_bns)  # a truly frozen trunk by default
    official = DAMSMImageEncoder(TINY, trunk_batchnorm_trains=True).train()
    assert all(m.training for n in TRUNK_MODULES for m in getattr(official, n).modules())
    assert not any(m.training for m in official.eval().modules())

    # load_backbone: torchvision's names; AuxLogits / fc ignored; old files lack the counters
    from torchvision.models import inception_v3

    backbone = inception_v3(weights=None, aux_logits=True, init_weights=False).state_dict()
    backbone = {k: v for k, v in backbone.items() if not k.endswith("num_batches_tracked")}
    assert any(k.startswith("AuxLogits.") for k in backbone) and "fc.weight" in backbone
    projection = encoder.emb_cnn_code.weight.clone()
    encoder.load_backbone(backbone)
    state = encoder.state_dict()
    for key, value in backbone.items():
        if key.split(".")[0] in TRUNK_MODULES:
            assert torch.equal(state[key], value), key
    assert torch.equal(encoder.emb_cnn_code.weight, projection)
    assert not any(p.requires_grad for n in TRUNK_MODULES for p in getattr(encoder, n).parameters())
    with pytest.raises(ValueError, match="unknown"):
        encoder.load_backbone({**backbone, "extra.weight": torch.zeros(1)})
    with pytest.raises(ValueError, match="missing"):
        encoder.load_backbone({k: v for k, v in backbone.items() if "Mixed_7c" not in k})


def test_image_encoder_forward(image_encoder):
    images = torch.rand(2, 3, 64, 64) * 2 - 1
    before = [b.clone() for b in image_encoder.buffers()]
    with torch.no_grad():
        features, code = image_encoder.train()(images)  # trunk stays in eval mode
        image_encoder.eval()
        resized = F.interpolate(images, size=(299, 299), mode="bilinear", align_corners=False)
        mixed_6e, pooled = image_encoder.trunk(resized)
    assert features.shape == (2, TINY.text_dim, 17, 17) and code.shape == (2, TINY.text_dim)
    assert mixed_6e.shape == (2, 768, 17, 17) and pooled.shape == (2, 2048)
    assert all(torch.equal(a, b) for a, b in zip(before, image_encoder.buffers(), strict=True))
    expected = image_encoder.project(mixed_6e, pooled)
    torch.testing.assert_close(features, expected[0])
    torch.testing.assert_close(code, expected[1])
    torch.testing.assert_close(expected[0], F.conv2d(mixed_6e, image_encoder.emb_features.weight))


# --- losses -------------------------------------------------------------------------------------


def _cosine(a, b):
    return (a @ b) / max(float(a.norm() * b.norm()), 1e-8)


def _cross_entropy_rows(scores):
    """Mean over rows of -log softmax(row)[own index]."""
    return sum(-(scores[i, i] - torch.logsumexp(scores[i], 0)) for i in range(len(scores))) / len(
        scores
    )


def _masked(scores, class_ids):
    scores = scores.clone()
    for i in range(len(scores)):
        for j in range(len(scores)):
            if i != j and class_ids is not None and class_ids[i] == class_ids[j]:
                scores[i, j] = float("-inf")
    return scores


def _reference_word_scores(features, words_emb, lengths, gamma1, gamma2, gamma3):
    """S[j, i] = gamma3 * log sum_t exp(gamma2 * cos(e_it, c_jit)) with the two-softmax region
    attention of spec 7, loop by loop."""
    batch = features.size(0)
    regions = features.flatten(2)  # (B, D, R)
    scores = torch.zeros(batch, batch)
    maps = []
    for i in range(batch):
        e = words_emb[i, :, : lengths[i]]  # (D, n)
        for j in range(batch):
            v = regions[j]  # (D, R)
            s = v.t() @ e  # (R, n)
            over_words = torch.softmax(s, dim=1)
            alpha = torch.softmax(gamma1 * over_words.t(), dim=1)  # (n, R)
            total = 0.0
            for t in range(lengths[i]):
                c_t = (alpha[t][None, :] * v).sum(1)
                total = total + torch.exp(gamma2 * _cosine(e[:, t], c_t))
            scores[j, i] = gamma3 * torch.log(total)
            if j == i:
                maps.append(alpha.view(1, lengths[i], *features.shape[2:]))
    return scores, maps


@pytest.mark.parametrize("class_ids", [None, [3, 1, 3, 2]])
def test_damsm_word_loss_matches_loop(class_ids):
    gen = torch.Generator().manual_seed(0)
    lengths = [5, 4, 2, 1]
    features = torch.randn(4, 8, 17, 17, generator=gen)
    words = torch.randn(4, 8, 5, generator=gen)
    scores, maps = _reference_word_scores(features, words, lengths, 4.0, 5.0, 10.0)
    scores = _masked(scores, class_ids)
    loss0, loss1, att_maps = damsm_word_loss(
        features, words, torch.tensor(lengths), class_ids, gamma1=4, gamma2=5, gamma3=10
    )
    torch.testing.assert_close(loss0, _cross_entropy_rows(scores))
    torch.testing.assert_close(loss1, _cross_entropy_rows(scores.t()))
    assert len(att_maps) == 4
    for got, want in zip(att_maps, maps, strict=True):
        torch.testing.assert_close(got, want)


@pytest.mark.parametrize("class_ids", [None, [3, 1, 3, 2, 1, 0]])
def test_the_batched_word_loss_agrees_with_the_official_loop_values_and_gradients(class_ids):
    gen = torch.Generator().manual_seed(1)
    lengths = torch.tensor([7, 7, 5, 3, 2, 1])
    features = torch.randn(6, 16, 17, 17, generator=gen, requires_grad=True)
    words = torch.randn(6, 16, 7, generator=gen)
    words[2, :, 5:] = 9.0  # padding holds values: they must not count
    words.requires_grad_(True)
    looped = damsm_word_loss(features, words, lengths, class_ids)[:2]
    batched = damsm_word_loss_batched(features, words, lengths, class_ids)
    for want, got in zip(looped, batched, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    grads = [torch.autograd.grad(sum(parts), (features, words)) for parts in (looped, batched)]
    for want, got in zip(*grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    assert grads[1][1][2, :, 5:].abs().max() == 0  # padding gets no gradient


def test_damsm_sentence_loss_matches_loop_and_class_masking():
    gen = torch.Generator().manual_seed(0)
    code = torch.randn(5, 8, generator=gen)
    sent = torch.randn(5, 8, generator=gen)
    scores = torch.tensor([[10.0 * _cosine(code[i], sent[j]) for j in range(5)] for i in range(5)])
    loss0, loss1 = damsm_sentence_loss(code, sent, None, gamma3=10)
    torch.testing.assert_close(loss0, _cross_entropy_rows(scores))
    torch.testing.assert_close(loss1, _cross_entropy_rows(scores.t()))

    class_ids = [7, 1, 7, 1, 2]  # 0 and 2 share a class, and 1 and 3
    masked = _masked(scores, class_ids)
    assert masked[0, 2] == masked[2, 0] == masked[1, 3] == float("-inf")
    m0, m1 = damsm_sentence_loss(code, sent, class_ids)
    torch.testing.assert_close(m0, _cross_entropy_rows(masked))
    torch.testing.assert_close(m1, _cross_entropy_rows(masked.t()))
    assert m0 < loss0  # fewer negatives
    for form in (np.array(class_ids), torch.tensor(class_ids)):
        assert torch.equal(damsm_sentence_loss(code, sent, form)[0], m0)
    # all classes different: the same as no masking
    assert torch.equal(damsm_sentence_loss(code, sent, [0, 1, 2, 3, 4])[0], loss0)


def test_discriminator_loss_formula_and_parts():
    torch.manual_seed(0)
    netD = AttnGANDiscriminator(TINY, 64).eval()
    _randomize_bn(netD)
    real = torch.rand(3, 3, 64, 64) * 2 - 1
    source = torch.randn(3, 3, 64, 64, requires_grad=True)
    fake = torch.tanh(source)
    sent = torch.randn(3, TINY.text_dim)
    err, parts = attngan_discriminator_loss(netD, real, fake, sent, return_parts=True)
    assert set(parts) == {
        "D_cond_real",
        "D_cond_fake",
        "D_cond_wrong",
        "D_uncond_real",
        "D_uncond_fake",
    }
    torch.testing.assert_close(
        err,
        (parts["D_uncond_real"] + parts["D_cond_real"]) / 2
        + (parts["D_uncond_fake"] + parts["D_cond_fake"] + parts["D_cond_wrong"]) / 3,
    )
    with torch.no_grad():
        real_f, fake_f = netD.encode(real), netD.encode(fake)

        def bce(p, y):
            return -(y * p.log() + (1 - y) * (1 - p).log()).mean()

        want = {
            "D_cond_real": bce(netD.COND_DNET(real_f, sent), 1),
            "D_cond_fake": bce(netD.COND_DNET(fake_f, sent), 0),
            # wrong pairs: image i with sentence i + 1
            "D_cond_wrong": bce(netD.COND_DNET(real_f[:2], sent[1:]), 0),
            "D_uncond_real": bce(netD.UNCOND_DNET(real_f), 1),
            "D_uncond_fake": bce(netD.UNCOND_DNET(fake_f), 0),
        }
    for name, value in want.items():
        torch.testing.assert_close(parts[name], value, msg=name)
    plain = attngan_discriminator_loss(netD, real, fake, sent)
    assert isinstance(plain, torch.Tensor) and torch.equal(plain, err)
    err.backward()
    assert source.grad is None  # the fake images are detached
    assert netD.COND_DNET.jointConv[0].weight.grad.abs().sum() > 0


def test_generator_loss_reaches_the_generator(image_encoder):
    torch.manual_seed(0)
    generator = AttnGANGenerator(TINY).train()
    netsD = [AttnGANDiscriminator(TINY, size).train() for size in (64, 128, 256)]
    lengths = [4, 2]
    sent, words, mask, noise, eps = _text(2, lengths)
    images, _, mu, logvar = generator(sent, words, noise, mask=mask, eps=eps)
    class_ids = [5, 6]
    err, parts = attngan_generator_loss(
        netsD, image_encoder, images, words, sent, torch.tensor(lengths), class_ids,
        gamma1=4, gamma2=5, gamma3=10, damsm_weight=5, return_parts=True,
    )  # fmt: skip
    assert set(parts) == {"G_adv", "G_damsm_words", "G_damsm_sentence"}
    torch.testing.assert_close(
        err, parts["G_adv"] + parts["G_damsm_words"] + parts["G_damsm_sentence"]
    )
    # the DAMSM terms read the last image only, weighted by damsm_weight
    with torch.no_grad():
        regions, code = image_encoder(images[-1])
        w0, w1, _ = damsm_word_loss(regions, words, lengths, class_ids)
        s0, s1 = damsm_sentence_loss(code, sent, class_ids)
    torch.testing.assert_close(parts["G_damsm_words"], 5 * (w0 + w1))
    torch.testing.assert_close(parts["G_damsm_sentence"], 5 * (s0 + s1))
    (err + kl_loss(mu, logvar)).backward()
    for name in ("h_net1.fc.0.weight", "h_net2.att.conv_context.weight", "img_net3.img.0.weight"):
        grad = dict(generator.named_parameters())[name].grad
        assert grad is not None and grad.abs().sum() > 0, name
    assert all(p.grad is None for p in image_encoder.parameters() if not p.requires_grad)


def test_official_initialisation():
    torch.manual_seed(0)
    generator = AttnGANGenerator(TINY)
    netD = AttnGANDiscriminator(TINY, 64)
    weight = generator.h_net2.att.conv_context.weight.flatten(1)  # (4, 16): orthonormal rows
    torch.testing.assert_close(weight @ weight.t(), torch.eye(4), atol=1e-5, rtol=0)
    fc = generator.h_net1.fc[0].weight  # (512, 16): orthonormal columns
    torch.testing.assert_close(fc.t() @ fc, torch.eye(fc.size(1)), atol=1e-5, rtol=0)
    assert torch.all(generator.ca_net.fc.bias == 0)
    bn = generator.h_net1.fc[1].requires_grad_(False)
    assert torch.all(bn.bias == 0) and 0.005 < float(bn.weight.std()) < 0.05
    assert abs(float(bn.weight.mean()) - 1) < 0.01
    # the 4x4 logit convs keep torch's default bias
    assert netD.UNCOND_DNET.outlogits[0].bias.abs().item() > 0
