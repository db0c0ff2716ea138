"""HFTextEncoder on tiny random T5 / CLIP checkpoints built in tmp_path (paper 3.1)."""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from skyreels_v4.errors import FileFormatError, NonFiniteError  # noqa: E402
from skyreels_v4.text import FinalNorm, HFTextEncoder, HFTextEncoderConfig, load_text_encoder  # noqa: E402
from skyreels_v4.text.hf import PooledOutput  # noqa: E402

WORDS = ["a", "red", "blue", "circle", "square", "bounces", "inside", "box", "."]


def _tokenizer(specials: list[str], template: str, **kwargs) -> transformers.PreTrainedTokenizerFast:
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {t: i for i, t in enumerate([*specials, *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=kwargs["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(s, vocab[s]) for s in specials if s in template]
    )
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, **kwargs)


def _t5_folder(tmp_path):
    tok = _tokenizer(
        ["<pad>", "</s>", "<unk>"], "$A </s>", pad_token="<pad>", eos_token="</s>", unk_token="<unk>"
    )
    torch.manual_seed(0)
    cfg = transformers.T5Config(
        vocab_size=len(tok), d_model=16, d_kv=4, d_ff=32, num_layers=3, num_heads=4,
        relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
    )  # fmt: skip
    model = transformers.T5EncoderModel(cfg).eval()
    folder = tmp_path / "t5"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder, model, tok


def _clip_folder(tmp_path):
    specials = ["<pad>", "<|startoftext|>", "<|endoftext|>", "<unk>"]
    tok = _tokenizer(
        specials, "<|startoftext|> $A <|endoftext|>",
        pad_token="<pad>", bos_token="<|startoftext|>", eos_token="<|endoftext|>", unk_token="<unk>",
    )  # fmt: skip
    torch.manual_seed(1)
    cfg = transformers.CLIPTextConfig(
        vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=3, num_attention_heads=4,
        max_position_embeddings=32, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )  # fmt: skip
    model = transformers.CLIPTextModel(cfg).eval()
    folder = tmp_path / "clip"
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder, model, tok


def _reference(model, tok, prompts, max_length):
    batch = tok(prompts, padding="longest", truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch, output_hidden_states=True)
    return batch["attention_mask"].bool(), out


def test_t5_layers_match_transformers(tmp_path) -> None:
    folder, model, tok = _t5_folder(tmp_path)
    prompts = ["a red circle bounces inside a box .", "blue square", ""]
    mask, ref = _reference(model, tok, prompts, 64)
    enc = HFTextEncoder.from_hf(folder, HFTextEncoderConfig(max_length=64))
    out = enc.encode(prompts)
    assert enc.frozen and enc.dim == 16 and out.pooled is None
    assert torch.equal(out.mask, mask) and out.lengths.tolist() == [9, 3, 1]
    m = mask[..., None]
    torch.testing.assert_close(out.tokens, ref.last_hidden_state * m)
    # hidden_layer=k, no final norm: transformers' hidden_states[k] for k < num_layers.
    for k in (0, 1, 2):
        raw = HFTextEncoder.from_hf(
            folder, HFTextEncoderConfig(hidden_layer=k, final_norm=FinalNorm.NONE)
        ).encode(prompts)
        torch.testing.assert_close(raw.tokens, ref.hidden_states[k] * m)
    # The trap: T5's last hidden_states entry is already normed; our (-1, NONE) is the raw last layer.
    last_raw = HFTextEncoder.from_hf(folder, HFTextEncoderConfig(final_norm=FinalNorm.NONE)).encode(prompts)
    torch.testing.assert_close(ref.hidden_states[-1], ref.last_hidden_state)
    assert not torch.allclose(last_raw.tokens, out.tokens, atol=1e-3)
    torch.testing.assert_close(model.encoder.final_layer_norm(last_raw.tokens) * m, out.tokens)


def test_t5_truncation_dtype_and_save_load(tmp_path) -> None:
    folder, _, _ = _t5_folder(tmp_path)
    enc = HFTextEncoder.from_hf(folder, HFTextEncoderConfig(max_length=4, hidden_layer=-2))
    out = enc.encode(["a red circle bounces inside a box ."])
    assert out.tokens.shape == (1, 4, 16)
    saved = enc.save_pretrained(tmp_path / "enc")
    data = json.loads((saved / "config.json").read_text())
    assert data["class"] == "HFTextEncoder" and data["config"]["hidden_layer"] == -2
    assert (saved / "model" / "model.safetensors").is_file()
    loaded = load_text_encoder(saved)
    assert isinstance(loaded, HFTextEncoder) and loaded.config == enc.config
    assert loaded.encode(["a red circle bounces inside a box ."]).equal(out)
    half = load_text_encoder(saved, dtype=torch.bfloat16)
    assert half.encode(["red"]).tokens.dtype == torch.bfloat16
    # An absolute model_dir points at an existing checkpoint instead of a copy.
    (tmp_path / "link").mkdir()
    (tmp_path / "link" / "config.json").write_text(
        json.dumps({**data, "config": {**data["config"], "model_dir": str(folder)}})
    )
    assert load_text_encoder(tmp_path / "link").encode(["a red circle bounces inside a box ."]).equal(out)


def test_clip_pooled_and_hidden_layers(tmp_path) -> None:
    folder, model, tok = _clip_folder(tmp_path)
    prompts = ["a red circle", "blue square bounces inside a box"]
    mask, ref = _reference(model, tok, prompts, 32)
    enc = HFTextEncoder.from_hf(folder, HFTextEncoderConfig(max_length=32, pooled=PooledOutput.POOLER))
    out = enc.encode(prompts)
    assert enc.pooled_dim == 16 and out.pooled.shape == (2, 16)
    torch.testing.assert_close(out.pooled, ref.pooler_output)
    torch.testing.assert_close(out.tokens, ref.last_hidden_state * mask[..., None])
    # CLIP's last hidden_states entry is before the final norm (unlike T5): (-1, NONE) equals it.
    raw = HFTextEncoder.from_hf(folder, HFTextEncoderConfig(max_length=32, final_norm=FinalNorm.NONE)).encode(
        prompts
    )
    torch.testing.assert_close(raw.tokens, ref.hidden_states[-1] * mask[..., None])
    penultimate = HFTextEncoder.from_hf(
        folder, HFTextEncoderConfig(max_length=32, hidden_layer=-2, final_norm=FinalNorm.NONE)
    )
    torch.testing.assert_close(penultimate.encode(prompts).tokens, ref.hidden_states[-2] * mask[..., None])


def test_errors(tmp_path) -> None:
    folder, _, _ = _t5_folder(tmp_path)
    with pytest.raises(ValueError, match=r"hidden_layer: expected -4\.\.3"):
        HFTextEncoder.from_hf(folder, HFTextEncoderConfig(hidden_layer=4))
    with pytest.raises(ValueError, match="pooled"):
        HFTextEncoder.from_hf(folder, HFTextEncoderConfig(pooled=PooledOutput.POOLER))
    with pytest.raises(FileFormatError, match="cannot load"):
        HFTextEncoder.from_hf(tmp_path / "missing")
    clip_folder, _, _ = _clip_folder(tmp_path)
    with pytest.raises(ValueError, match="max_length: expected <= 32"):
        HFTextEncoder.from_hf(clip_folder, HFTextEncoderConfig(max_length=77))
    enc = HFTextEncoder.from_hf(folder)
    with pytest.raises(ValueError, match="text-only"):
        enc.encode(["a"], images=[[torch.zeros(3, 4, 4)]])
    with torch.no_grad():
        enc.model.encoder.final_layer_norm.weight[0] = float("nan")
    with pytest.raises(NonFiniteError, match="HFTextEncoder"):
        enc.encode(["a red circle"])
    saved = HFTextEncoder.from_hf(folder).save_pretrained(tmp_path / "enc")
    (saved / "model" / "config.json").unlink()
    with pytest.raises(FileFormatError, match=r"holds no Hugging Face config\.json"):
        load_text_encoder(saved)


def test_missing_weights_are_an_error_not_a_random_init(tmp_path) -> None:
    from safetensors.torch import load_file, save_file

    folder, _, _ = _t5_folder(tmp_path)
    weights = load_file(folder / "model.safetensors")
    dropped = sorted(k for k in weights if "block.1." in k)[0]
    del weights[dropped]
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(FileFormatError, match="lacks 1 weights"):
        HFTextEncoder.from_hf(folder)
