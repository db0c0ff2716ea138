"""TextEmbeddings, the embedded default encoder, the registry and the prompt cache (paper 3.1)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from skyreels_v4.errors import FileFormatError, NonFiniteError, PreflightError, SkyReelsError
from skyreels_v4.text import (
    EmbeddedTextEncoder,
    EmbeddedTextEncoderConfig,
    EmbeddedTokenizer,
    PositionEncoding,
    PromptEmbeddingCache,
    TextEmbeddings,
    TextEncoder,
    default_vocabulary,
    load_text_encoder,
    reference_digest,
)
from skyreels_v4.world import Background, Colour, Shape, WorldConfig, WorldSplit, caption, sample_scene


def _emb(lengths: list[int], dim: int = 4, pooled: int | None = None) -> TextEmbeddings:
    length = max(lengths)
    mask = torch.arange(length)[None, :] < torch.tensor(lengths)[:, None]
    tokens = torch.randn(len(lengths), length, dim) * mask[..., None]
    return TextEmbeddings(
        tokens=tokens, mask=mask, pooled=None if pooled is None else torch.randn(len(lengths), pooled)
    )


def _assert_close(a: TextEmbeddings, b: TextEmbeddings) -> None:
    """Same masks and (up to float reassociation from a different batch padding) the same values."""
    a, b = a.trim(), b.trim()
    assert torch.equal(a.mask, b.mask)
    torch.testing.assert_close(a.tokens, b.tokens, rtol=1e-5, atol=1e-5)


# -- TextEmbeddings ------------------------------------------------------------------------------


def test_embeddings_validate_layout() -> None:
    with pytest.raises(TypeError, match="mask"):
        TextEmbeddings(tokens=torch.zeros(1, 2, 4), mask=torch.ones(1, 2))
    with pytest.raises(ValueError, match="right padding"):
        TextEmbeddings(tokens=torch.zeros(1, 3, 4), mask=torch.tensor([[True, False, True]]))
    with pytest.raises(ValueError, match="at least one real token"):
        TextEmbeddings(tokens=torch.zeros(2, 2, 4), mask=torch.tensor([[True, False], [False, False]]))
    with pytest.raises(ValueError, match="shape"):
        TextEmbeddings(tokens=torch.zeros(1, 3, 4), mask=torch.ones(1, 2, dtype=torch.bool))
    with pytest.raises(TypeError, match="tokens"):
        TextEmbeddings(tokens=torch.zeros(1, 3, dtype=torch.long), mask=torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(ValueError, match="pooled"):
        TextEmbeddings(
            tokens=torch.zeros(2, 3, 4), mask=torch.ones(2, 3, dtype=torch.bool), pooled=torch.zeros(1, 5)
        )


def test_embeddings_cat_index_repeat_to() -> None:
    a, b = _emb([3, 1], pooled=5), _emb([5], pooled=5)
    both = a.cat(b)
    assert both.tokens.shape == (3, 5, 4) and both.lengths.tolist() == [3, 1, 5]
    assert torch.equal(both.tokens[:2, :3], a.tokens) and torch.equal(both.tokens[2], b.tokens[0])
    assert not both.tokens[:2, 3:].any() and not both.mask[:2, 3:].any()
    assert torch.equal(both.pooled, torch.cat([a.pooled, b.pooled]))
    assert both.index(2).equal(b) and both.index(-3).equal(a.index(0)) and both.index(1).trim().length == 1
    with pytest.raises(IndexError, match="i: expected"):
        both.index(3)
    rep = a.repeat(2)
    assert rep.lengths.tolist() == [3, 3, 1, 1] and torch.equal(rep.tokens[1], a.tokens[0])
    half = both.to(dtype=torch.float16)
    assert (
        half.tokens.dtype == torch.float16
        and half.pooled.dtype == torch.float16
        and half.mask.dtype == torch.bool
    )
    kwargs = both.transformer_kwargs()
    assert kwargs["text_tokens"] is both.tokens and kwargs["text_mask"] is both.mask
    with pytest.raises(ValueError, match="pooled"):
        a.cat(_emb([2]))
    with pytest.raises(ValueError, match="token dim"):
        a.cat(_emb([2], dim=8, pooled=5))


def test_embeddings_check_finite_names_rows() -> None:
    emb = _emb([2, 2])
    emb.tokens[1, 0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"rows \[1\]"):
        emb.check_finite("here")


# -- tokenizer -----------------------------------------------------------------------------------


def test_tokenizer_handles_any_text_deterministically() -> None:
    tok = EmbeddedTokenizer(default_vocabulary(), hash_buckets=64)
    text = "A red circle <sfx>A 440 Hz blip</sfx> @image_1 日本語 😀 Ünïcode"
    pieces = tok.pieces(text)
    assert pieces[:4] == ["a", "red", "circle", "<sfx>"]
    assert pieces[5:8] == ["4", "4", "0"] and "</sfx>" in pieces and "😀" in pieces
    ids = tok.encode(text, max_length=100)
    assert ids[-1] == tok.eos_id and all(0 < i < tok.vocab_size for i in ids)
    # Known words have their own ids, unknown ones land in the buckets, always the same bucket.
    known = len(tok.vocabulary)
    assert tok.piece_id("red") < known and tok.piece_id("<sfx>") < known and tok.piece_id("7") < known
    assert tok.piece_id("日本語") >= known and tok.piece_id("日本語") == tok.piece_id("日本語")
    assert tok.encode(text, max_length=100) == ids
    assert tok.encode("", max_length=8) == [tok.eos_id]
    assert len(tok.encode(text, max_length=5)) == 5 and tok.encode(text, max_length=5)[-1] == tok.eos_id


def test_vocabulary_covers_world_captions() -> None:
    vocab = set(default_vocabulary())
    for member in (*Colour, *Background, *Shape):
        assert member.value in vocab
    cfg = WorldConfig()
    rng = np.random.default_rng(0)
    for split in WorldSplit:
        for _ in range(30):
            text = caption(sample_scene(cfg, rng, split))
            unknown = [p for p in EmbeddedTokenizer.pieces(text) if p not in vocab]
            assert unknown == [], text


# -- encoder -------------------------------------------------------------------------------------


def test_encoder_shapes_mask_and_frozen() -> None:
    enc = EmbeddedTextEncoder(EmbeddedTextEncoderConfig(dim=32, max_length=16))
    assert enc.frozen and not enc.training and enc.dim == 32 and enc.pooled_dim is None
    out = enc.encode(["red circle", "", "word " * 40])
    assert out.tokens.shape == (3, 16, 32) and out.pooled is None
    assert out.lengths.tolist() == [3, 1, 16]
    assert not out.tokens[0, 3:].any() and not out.tokens.requires_grad
    # The same prompt gives the same embedding alone and inside a padded batch.
    alone = enc.encode(["red circle"])
    torch.testing.assert_close(alone.tokens[0], out.tokens[0, :3], rtol=1e-5, atol=1e-5)


def test_same_seed_bit_identical_other_seed_differs() -> None:
    a = EmbeddedTextEncoder(EmbeddedTextEncoderConfig(seed=3))
    b = EmbeddedTextEncoder(EmbeddedTextEncoderConfig(seed=3))
    c = EmbeddedTextEncoder(EmbeddedTextEncoderConfig(seed=4))
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["token_embedding.weight"], sc["token_embedding.weight"])


def test_embeddings_separate_colours_shapes_and_pitches() -> None:
    enc = EmbeddedTextEncoder()
    out = enc.encode(["a red circle bounces", "a blue square bounces"])
    cos = F.cosine_similarity(out.tokens[0], out.tokens[1], dim=-1)
    assert cos[1] < 0.6 and cos[2] < 0.6  # "red"/"blue", "circle"/"square"
    pitches = enc.encode(["a 440 hz blip", "a 660 hz blip", "a 440 hz blip"])
    cos = F.cosine_similarity(pitches.tokens[0], pitches.tokens[1], dim=-1)
    assert cos[1] < 0.8 and cos[2] < 0.8  # the digits that differ
    assert torch.equal(pitches.tokens[0], pitches.tokens[2])
    # The whole-prompt summaries differ clearly too.
    mean = pitches.tokens.sum(1) / pitches.lengths[:, None]
    assert (mean[0] - mean[1]).norm() > 0.1 * mean[0].norm()


def test_pooled_output_and_learned_positions() -> None:
    enc = EmbeddedTextEncoder(EmbeddedTextEncoderConfig(pooled_dim=12, positions=PositionEncoding.LEARNED))
    out = enc.encode(["red circle", "blue"])
    assert out.pooled.shape == (2, 12) and enc.pooled_dim == 12
    assert not torch.allclose(out.pooled[0], out.pooled[1])


def test_save_load_bit_exact_and_registry(tmp_path) -> None:
    config = EmbeddedTextEncoderConfig(dim=16, pooled_dim=8, seed=11, positions=PositionEncoding.LEARNED)
    enc = EmbeddedTextEncoder(config)
    enc.save_pretrained(tmp_path / "enc")
    data = json.loads((tmp_path / "enc" / "config.json").read_text())
    assert data["class"] == "EmbeddedTextEncoder" and data["config"]["positions"] == "learned"
    for loaded in (
        EmbeddedTextEncoder.from_pretrained(tmp_path / "enc"),
        load_text_encoder(tmp_path / "enc"),
        TextEncoder.from_pretrained(tmp_path / "enc"),
    ):
        assert isinstance(loaded, EmbeddedTextEncoder) and loaded.config == config and loaded.frozen
        state = loaded.state_dict()
        assert all(torch.equal(state[k], v) for k, v in enc.state_dict().items())
        assert loaded.encode(["a red circle"]).equal(enc.encode(["a red circle"]))
    half = load_text_encoder(tmp_path / "enc", dtype=torch.bfloat16)
    assert half.encode(["red"]).tokens.dtype == torch.bfloat16
    # Saving again replaces the folder; nothing temporary is left beside it.
    enc.save_pretrained(tmp_path / "enc")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["enc"]


def test_load_errors_name_the_file(tmp_path) -> None:
    enc = EmbeddedTextEncoder(EmbeddedTextEncoderConfig(dim=8, width=16, num_layers=1))
    folder = enc.save_pretrained(tmp_path / "enc")
    config_path = folder / "config.json"
    data = json.loads(config_path.read_text())

    data["class"] = "os.system"
    config_path.write_text(json.dumps(data))
    with pytest.raises(FileFormatError, match="not a known text-encoder adapter") as info:
        load_text_encoder(folder)
    assert info.value.path == config_path
    data["class"] = "EmbeddedTextEncoder"
    data["config"]["colour"] = 1
    config_path.write_text(json.dumps(data))
    with pytest.raises(FileFormatError, match="unknown EmbeddedTextEncoderConfig keys"):
        load_text_encoder(folder)
    del data["config"]["colour"]
    data["config"]["dim"] = 9
    config_path.write_text(json.dumps(data))
    with pytest.raises(FileFormatError, match=r"proj_out\.\w+.: expected shape"):
        load_text_encoder(folder)
    data["config"]["dim"] = 8
    config_path.write_text(json.dumps(data))
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(FileFormatError, match=r"model\.safetensors"):
        load_text_encoder(folder)
    with pytest.raises(FileFormatError, match="missing"):
        load_text_encoder(tmp_path / "nowhere")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    with pytest.raises(PreflightError, match="refusing"):
        enc.save_pretrained(tmp_path / "other")


def test_nan_weights_refused_on_load_and_in_outputs(tmp_path) -> None:
    enc = EmbeddedTextEncoder(EmbeddedTextEncoderConfig(dim=8, width=16, num_layers=1))
    with torch.no_grad():
        enc.proj_out.bias[0] = float("nan")
    with pytest.raises(NonFiniteError, match="EmbeddedTextEncoder"):
        enc.encode(["red"])
    enc.save_pretrained(tmp_path / "enc")
    with pytest.raises(NonFiniteError, match=r"proj_out\.bias"):
        load_text_encoder(tmp_path / "enc")


def test_input_validation() -> None:
    enc = EmbeddedTextEncoder(EmbeddedTextEncoderConfig(dim=8, width=16, num_layers=1))
    with pytest.raises(TypeError, match="single str"):
        enc.encode("red circle")
    with pytest.raises(ValueError, match="prompts: expected at least one"):
        enc.encode([])
    with pytest.raises(TypeError, match=r"prompts\[1\]: expected str, got int"):
        enc.encode(["a", 3])
    with pytest.raises(ValueError, match="text-only"):
        enc.encode(["a"], images=[[torch.zeros(3, 8, 8)]])
    # Empty reference lists are fine for a text-only encoder.
    assert enc.encode(["a"], images=[[]], videos=[[]]).batch_size == 1
    with pytest.raises(ValueError, match=r"images\[0\]\[0\]: expected shape \[3, H, W\]"):
        enc.encode(["a"], images=[[torch.zeros(4, 8, 8)]])
    with pytest.raises(ValueError, match=r"images: expected 1 entries"):
        enc.encode(["a"], images=[[], []])
    with pytest.raises(NonFiniteError, match=r"videos\[0\]\[1\]"):
        enc.encode(["a"], videos=[[torch.zeros(3, 2, 8, 8), torch.full((3, 2, 8, 8), float("nan"))]])
    with pytest.raises(ValueError, match=r"images\[0\]\[0\]: expected values in \[-1, 1\], got \[0, 255\]"):
        enc.encode(["a"], images=[[torch.linspace(0, 255, 3 * 64).reshape(3, 8, 8)]])
    with pytest.raises(ValueError, match="width: expected a multiple"):
        EmbeddedTextEncoderConfig(width=30, num_heads=4)


# -- cache ---------------------------------------------------------------------------------------


class _Counting(EmbeddedTextEncoder):
    calls: list[list[str]]

    def _encode(self, prompts, images, videos):
        self.calls.append(list(prompts))
        return super()._encode(prompts, images, videos)


def test_cache_hits_skip_the_encoder() -> None:
    enc = _Counting(EmbeddedTextEncoderConfig(dim=8, width=16, num_layers=1))
    enc.calls = []
    cache = PromptEmbeddingCache(capacity=8)
    first = cache.encode_cached(enc, ["a red circle", ""])
    assert enc.calls == [["a red circle", ""]] and (cache.hits, cache.misses) == (0, 2)
    second = cache.encode_cached(enc, ["a red circle", ""])
    assert enc.calls == [["a red circle", ""]] and (cache.hits, cache.misses) == (2, 2)
    assert second.equal(first)
    _assert_close(second, enc.encode(["a red circle", ""]))
    # A mixed request encodes only the new prompt (once, though it appears twice).
    mixed = cache.encode_cached(enc, ["blue square", "", "blue square"])
    assert enc.calls[-1] == ["blue square"] and (cache.hits, cache.misses) == (3, 4)
    _assert_close(mixed, enc.encode(["blue square", "", "blue square"]))
    # Another encoder instance with the same weights does not share entries.
    other = _Counting(EmbeddedTextEncoderConfig(dim=8, width=16, num_layers=1))
    other.calls = []
    cache.encode_cached(other, [""])
    assert other.calls == [[""]]


def test_cache_lru_eviction_and_reference_keys() -> None:
    enc = _Counting(EmbeddedTextEncoderConfig(dim=8, width=16, num_layers=1))
    enc.calls = []
    cache = PromptEmbeddingCache(capacity=2)
    for prompt in ("a", "b", "a", "c"):  # "b" is least recently used when "c" arrives
        cache.encode_cached(enc, [prompt])
    assert len(cache) == 2 and enc.calls == [["a"], ["b"], ["c"]]
    cache.encode_cached(enc, ["a"])
    cache.encode_cached(enc, ["b"])
    assert enc.calls[-1] == ["b"] and len(enc.calls) == 4
    image = torch.zeros(3, 4, 4)
    k1 = PromptEmbeddingCache.key(enc, "a", [image])
    k2 = PromptEmbeddingCache.key(enc, "a", [image + 0.5])
    assert k1 != k2 and k1 == PromptEmbeddingCache.key(enc, "a", [image.clone()])
    assert reference_digest(image) != reference_digest(image.to(torch.bfloat16))
    assert k1 != PromptEmbeddingCache.key(enc.to(torch.float64), "a", [image])


def test_cache_refuses_trainable_encoder() -> None:
    enc = EmbeddedTextEncoder(EmbeddedTextEncoderConfig(dim=8, width=16, num_layers=1))
    enc.requires_grad_(True)
    assert enc.encode(["a"]).tokens.requires_grad
    with pytest.raises(SkyReelsError, match="frozen"):
        PromptEmbeddingCache().encode_cached(enc, ["a"])
