"""QwenVLTextEncoder on a tiny random Qwen2.5-VL + tokenizer + image processor built offline (paper 3.1)."""

from __future__ import annotations

import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from skyreels_v4.errors import NonFiniteError, PromptError, ReferenceError_, SkyReelsError  # noqa: E402
from skyreels_v4.text import FinalNorm, QwenVLTextEncoder, QwenVLTextEncoderConfig, load_text_encoder  # noqa: E402

SPECIALS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
    "<|video_pad|>",
]  # fmt: skip
WORDS = ["system", "user", "describe", "the", "video", "a", "red", "circle", "blue", "square", "bounces", "."]
CONFIG = QwenVLTextEncoderConfig(system_prompt="describe the video")


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    vocab = {t: i for i, t in enumerate([*SPECIALS, *WORDS, "[UNK]"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="<|endoftext|>", eos_token="<|im_end|>",
        additional_special_tokens=SPECIALS,
    )  # fmt: skip
    config = transformers.Qwen2_5_VLConfig(
        text_config={
            "hidden_size": 64, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
            "head_dim": 16, "intermediate_size": 128, "vocab_size": len(vocab), "bos_token_id": 0,
            "eos_token_id": 2,
            "rope_parameters": {"rope_type": "default", "mrope_section": [2, 3, 3], "rope_theta": 1e4},
        },
        vision_config={
            "depth": 2, "hidden_size": 32, "num_heads": 2, "out_hidden_size": 64, "intermediate_size": 64,
            "window_size": 112, "fullatt_block_indexes": [1],
        },
        image_token_id=vocab["<|image_pad|>"], video_token_id=vocab["<|video_pad|>"],
        vision_start_token_id=vocab["<|vision_start|>"], vision_end_token_id=vocab["<|vision_end|>"],
    )  # fmt: skip
    torch.manual_seed(0)
    model = transformers.Qwen2_5_VLForConditionalGeneration(config).eval()
    folder = tmp_path_factory.mktemp("qwen")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    Qwen2VLImageProcessorPil().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def encoder(qwen_dir):
    return QwenVLTextEncoder.from_hf(qwen_dir, CONFIG)


def _by_hand(encoder, text: str, **vision) -> transformers.modeling_outputs.ModelOutput:
    """Run the backbone on prefix + text + suffix ourselves (no cropping helpers)."""
    ids = encoder.tokenizer(
        CONFIG.prefix + text + CONFIG.suffix, add_special_tokens=False, return_tensors="pt"
    )
    with torch.no_grad():
        return encoder.model(**ids, output_hidden_states=True, **vision)


def _variant(encoder, **changes) -> QwenVLTextEncoder:
    """Another configuration over the same loaded modules (no reload)."""
    config = QwenVLTextEncoderConfig(system_prompt="describe the video", **changes)
    return QwenVLTextEncoder(encoder.model, encoder.tokenizer, encoder.image_processor, config)


def _image(seed: int, h: int = 56, w: int = 56) -> torch.Tensor:
    return torch.rand(3, h, w, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_crop_matches_hand_slicing(encoder) -> None:
    prefix_len = len(encoder.tokenizer(CONFIG.prefix, add_special_tokens=False)["input_ids"])
    assert (
        encoder.prefix_length == prefix_len == 8
    )  # <|im_start|> system describe the video <|im_end|> <|im_start|> user
    out = encoder.encode(["a red circle bounces"])
    ref = _by_hand(encoder, "a red circle bounces")
    assert out.tokens.shape == (1, 5, 64) and out.mask.all() and encoder.dim == 64 and out.pooled is None
    torch.testing.assert_close(out.tokens[0], ref.last_hidden_state[0, prefix_len:])


def test_hidden_layer_choice(encoder) -> None:
    ref = _by_hand(encoder, "blue square")
    p = encoder.prefix_length
    for k in (0, 2):
        raw = _variant(encoder, hidden_layer=k, final_norm=FinalNorm.NONE)
        torch.testing.assert_close(raw.encode(["blue square"]).tokens[0], ref.hidden_states[k][0, p:])
    last_raw = _variant(encoder, final_norm=FinalNorm.NONE).encode(["blue square"])
    # The trap: hidden_states[-1] is after the final norm; the raw last layer is not.
    torch.testing.assert_close(ref.hidden_states[-1], ref.last_hidden_state)
    torch.testing.assert_close(
        encoder.model.language_model.norm(last_raw.tokens[0]), ref.last_hidden_state[0, p:]
    )
    assert not torch.allclose(last_raw.tokens[0], ref.last_hidden_state[0, p:], atol=1e-3)


def test_batch_padding_and_truncation(encoder) -> None:
    prompts = ["a red circle bounces .", "blue", ""]
    out = encoder.encode(prompts)
    assert out.lengths.tolist() == [6, 2, 1] and not out.tokens[1, 2:].any()
    for i, prompt in enumerate(prompts):
        alone = encoder.encode([prompt])
        torch.testing.assert_close(out.tokens[i, : alone.length], alone.tokens[0], rtol=1e-4, atol=1e-5)
    short = _variant(encoder, max_length=3)
    cut = short.encode(prompts)
    assert cut.lengths.tolist() == [3, 2, 1]
    torch.testing.assert_close(cut.tokens[0], out.tokens[0, :3], rtol=1e-4, atol=1e-5)


def test_image_tokens_inline_and_appended(encoder) -> None:
    img_a, img_b = _image(1), _image(2, 70, 50)
    out_a = encoder.encode(["a red circle @image_1 bounces"], images=[[img_a]])
    out_b = encoder.encode(["a red circle @image_1 bounces"], images=[[img_b]])
    pixel_values, grid = encoder.image_inputs(img_a)
    n = int(grid.prod()) // 4
    block = "<|vision_start|>" + "<|image_pad|>" * n + "<|vision_end|>"
    ref = _by_hand(
        encoder, f"a red circle @image_1{block} bounces", pixel_values=pixel_values, image_grid_thw=grid[None]
    )
    p = encoder.prefix_length
    torch.testing.assert_close(out_a.tokens[0], ref.last_hidden_state[0, p:])
    # Causal: tokens before the image block do not see it; the ones after do.
    before = 5  # a red circle @ image_1 ([UNK])
    torch.testing.assert_close(out_a.tokens[0, :before], out_b.tokens[0, :before])
    assert not torch.allclose(out_a.tokens[0, -2:], out_b.tokens[0, -2:], atol=1e-3)
    text_only = encoder.encode(["a red circle bounces"])
    appended = encoder.encode(["a red circle bounces"], images=[[img_a]])
    assert appended.length == text_only.length + n + 2
    torch.testing.assert_close(appended.tokens[0, :4], text_only.tokens[0, :4])
    # The image processor's own pixels: a [-1, 1] tensor maps to [0, 1] before CLIP normalisation.
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    direct = Qwen2VLImageProcessorPil()(images=[(img_a + 1) / 2], return_tensors="pt", do_rescale=False)
    torch.testing.assert_close(pixel_values, direct["pixel_values"])


def test_video_packing_and_effect(encoder) -> None:
    frame = _image(3)
    pixel_values, grid = encoder.image_inputs(frame)
    static, vgrid = encoder.video_inputs(torch.stack([frame, frame], dim=1))
    assert vgrid.tolist() == [1, *grid[1:].tolist()] and torch.equal(static, pixel_values)
    other = _image(4)
    two, _ = encoder.video_inputs(torch.stack([frame, other], dim=1))
    shape = (-1, 3, 2, 14, 14)
    per_other, _ = encoder.image_inputs(other)
    assert torch.equal(two.reshape(shape)[:, :, 0], pixel_values.reshape(shape)[:, :, 0])
    assert torch.equal(two.reshape(shape)[:, :, 1], per_other.reshape(shape)[:, :, 0])
    odd, ogrid = encoder.video_inputs(torch.stack([frame, other, frame], dim=1))
    assert ogrid[0] == 2 and torch.equal(odd[len(odd) // 2 :], static)
    clip_a = torch.stack([frame, other, frame], dim=1)
    out_a = encoder.encode(["the video @video_1 ."], videos=[[clip_a]])
    out_b = encoder.encode(["the video @video_1 ."], videos=[[torch.stack([other, frame, other], dim=1)]])
    assert out_a.length == 4 + 2 * 4 + 2 + 2  # text, 2 temporal x 4 merged tokens, start/end, ". <|im_end|>"
    assert not torch.allclose(out_a.tokens[0, -2:], out_b.tokens[0, -2:], atol=1e-3)


def test_errors_name_the_argument(encoder) -> None:
    with pytest.raises(ReferenceError_, match=r"prompts\[0\]: @image_2 refers to image 2, but 1 images"):
        encoder.encode(["a @image_2"], images=[[_image(1)]])
    with pytest.raises(PromptError, match=r"prompts\[1\].*<\|image_pad\|>"):
        encoder.encode(["a", "b <|image_pad|>"])
    with pytest.raises(ValueError, match=r"images\[0\]\[0\]: expected shape \[3, H, W\]"):
        encoder.encode(["a"], images=[[torch.zeros(1, 3, 56, 56)]])
    with pytest.raises(NonFiniteError, match=r"images\[0\]\[0\]"):
        encoder.encode(["a"], images=[[torch.full((3, 56, 56), float("nan"))]])
    with pytest.raises(ValueError, match=r"videos\[0\]\[0\]: expected values in \[-1, 1\]"):
        encoder.encode(["a"], videos=[[torch.full((3, 2, 56, 56), 3.0)]])
    with pytest.raises(ValueError, match="prefix_template"):
        QwenVLTextEncoderConfig(prefix_template="no system slot")
    # A template whose last word merges with the prompt cannot be cropped by its own token count.
    merging = _variant(encoder, prefix_template="<|im_start|>{system}<|im_end|><|im_start|>user bl")
    with pytest.raises(SkyReelsError, match=r"prefix_template: its tokens change .*prompts\[0\]"):
        merging.encode(["ue square"])


def test_save_load_dtype_and_registry(tmp_path, encoder) -> None:
    saved = encoder.save_pretrained(tmp_path / "enc")
    data = json.loads((saved / "config.json").read_text())
    assert data["class"] == "QwenVLTextEncoder" and data["config"]["system_prompt"] == "describe the video"
    assert (saved / "model" / "preprocessor_config.json").is_file()
    loaded = load_text_encoder(saved)
    assert isinstance(loaded, QwenVLTextEncoder) and loaded.config == encoder.config and loaded.frozen
    image = _image(5)
    assert loaded.encode(["red @image_1"], images=[[image]]).equal(
        encoder.encode(["red @image_1"], images=[[image]])
    )
    half = load_text_encoder(saved, dtype=torch.bfloat16, device="cpu")
    out = half.encode(["red @image_1"], images=[[image]])
    assert out.tokens.dtype == torch.bfloat16 and out.tokens.device.type == "cpu"
    torch.testing.assert_close(out.tokens.float(), encoder.encode(["red @image_1"], images=[[image]]).tokens,
                               rtol=0.1, atol=0.1)  # fmt: skip
