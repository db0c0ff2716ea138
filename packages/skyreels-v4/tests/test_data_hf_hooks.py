"""transformers hooks of the data pipeline (Whisper, CLIP) on tiny random checkpoints built here.

Each hook is checked against the plain library call on the same checkpoint (an fp32 reference that
does its own preprocessing where that is simple), and wired through the pipeline stages that use it."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

WORDS = ["a", "photo", "of", "cat", "dog", "car", "tree", "red", "blue", "hello", "world"]


def _word_tokenizer(specials: list[str], **kwargs):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: n for n, token in enumerate(specials + WORDS)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token=specials[0]))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, **kwargs), vocab


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from tokenizers import processors
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    folder = tmp_path_factory.mktemp("tiny_clip")
    tokenizer, vocab = _word_tokenizer(
        ["<|endoftext|>", "<|startoftext|>", "<pad>"],
        bos_token="<|startoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<pad>",
        unk_token="<|endoftext|>",
        model_max_length=16,
    )
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single="<|startoftext|> $A <|endoftext|>",
        special_tokens=[("<|startoftext|>", 1), ("<|endoftext|>", 0)],
    )
    text = dict(
        vocab_size=len(vocab),
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        max_position_embeddings=16,
        bos_token_id=1,
        eos_token_id=0,
        pad_token_id=2,
    )
    vision = dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    config = CLIPConfig(
        text_config=text, vision_config={**vision, "image_size": 32, "patch_size": 8}, projection_dim=8
    )
    torch.manual_seed(0)
    CLIPModel(config).eval().save_pretrained(folder)
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(folder)
    return folder


def _reference_image_embeddings(folder, images: np.ndarray) -> np.ndarray:
    """32x32 images need no resize or crop: pixels = (x / 255 - mean) / std, then the model."""
    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(folder).eval()
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073])[:, None, None]
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711])[:, None, None]
    pixels = (torch.from_numpy(images).permute(0, 3, 1, 2).double() / 255 - mean) / std
    with torch.no_grad():
        out = model.get_image_features(pixel_values=pixels.float())
    out = out if isinstance(out, torch.Tensor) else out.pooler_output
    return torch.nn.functional.normalize(out, dim=-1).numpy()


def test_clip_embeddings_match_the_model(tiny_clip):
    from skyreels_v4.data.hf_hooks import CLIPEmbedder

    hook = CLIPEmbedder(model=str(tiny_clip))
    frames = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    reference = _reference_image_embeddings(tiny_clip, frames)
    np.testing.assert_allclose(hook.embed_frames(frames), reference, atol=1e-5)
    mean = reference.mean(0) / np.linalg.norm(reference.mean(0))
    np.testing.assert_allclose(hook.embed(frames), mean, atol=1e-5)
    np.testing.assert_allclose(hook.embed(frames[1]), reference[1], atol=1e-5)  # one [H, W, 3] image

    from transformers import CLIPModel

    model = CLIPModel.from_pretrained(tiny_clip).eval()
    ids = torch.tensor(
        [[1, 3 + WORDS.index("cat"), 0, 2], [1, 3 + WORDS.index("red"), 3 + WORDS.index("car"), 0]]
    )
    with torch.no_grad():
        text = model.get_text_features(input_ids=ids, attention_mask=(ids != 2).long())
    text = torch.nn.functional.normalize(
        text if isinstance(text, torch.Tensor) else text.pooler_output, dim=-1
    ).numpy()
    np.testing.assert_allclose(hook.embed_texts(["cat", "red car"]), text, atol=1e-5)
    np.testing.assert_allclose(hook.similarity(frames, ["cat", "red car"]), text @ mean, atol=1e-5)


def test_clip_category_matching_and_stored_embeddings_through_the_stages(tiny_clip, tmp_path):
    from PIL import Image

    from skyreels_v4.data.manifest import new_row
    from skyreels_v4.data.stage import StageContext, build_config, resolve_stage

    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    for n, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / f"img{n}.png")
    context = StageContext(input_dir=tmp_path, output_dir=tmp_path / "out")
    hook = {"target": "skyreels_v4.data.hf_hooks:CLIPEmbedder", "kwargs": {"model": str(tiny_clip)}}
    categories = {"cat": "a photo of a cat", "car": "a photo of a red car", "tree": "a photo of a tree"}
    stage = resolve_stage("match_category")
    config = build_config(stage, {"categories": categories, "matcher": hook})
    from skyreels_v4.data.hf_hooks import CLIPEmbedder

    direct = CLIPEmbedder(model=str(tiny_clip))
    for n, image in enumerate(images):
        result = stage.fn(new_row(id=f"img{n}", source=f"img{n}.png", start_s=0, end_s=0), config, context)
        expected = direct.similarity(image, list(categories.values()))
        assert result.values["concept"] == list(categories)[int(np.argmax(expected))]
        assert result.values["concept_similarity"] == pytest.approx(float(expected.max()), abs=1e-5)
        assert result.drop is None
    strict = build_config(stage, {"categories": categories, "matcher": hook, "min_similarity": 1.01})
    result = stage.fn(new_row(id="img0", source="img0.png", start_s=0, end_s=0), strict, context)
    assert result.drop == "no_category(similarity<1.01)"

    # image_quality stores the CLIP embedding; cluster_balance / dedup read it back unchanged
    quality = resolve_stage("image_quality")
    qconfig = build_config(quality, {"embedder": hook, "min_short_side": 16})
    values = quality.fn(new_row(id="img0", source="img0.png", start_s=0, end_s=0), qconfig, context).values
    from skyreels_v4.data.dedup import decode_embedding

    np.testing.assert_allclose(
        decode_embedding({"id": "img0", **values}, "t"), direct.embed(images[0]), atol=1e-6
    )


def test_clip_hook_refuses_bad_input(tiny_clip, tmp_path):
    from skyreels_v4.data.hf_hooks import CLIPEmbedder
    from skyreels_v4.errors import FileFormatError, SkyReelsError

    with pytest.raises(FileFormatError, match=r"config\.json"):
        CLIPEmbedder(model=str(tmp_path / "missing"))
    hook = CLIPEmbedder(model=str(tiny_clip))
    with pytest.raises(SkyReelsError, match=r"frames: expected RGB uint8.*float32"):
        hook.embed(np.zeros((2, 32, 32, 3), np.float32))
    with pytest.raises(SkyReelsError, match="texts"):
        hook.embed_texts("cat")


@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory):
    from transformers import (
        GenerationConfig,
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
    )

    folder = tmp_path_factory.mktemp("tiny_whisper")
    specials = ["<|endoftext|>", "<|startoftranscript|>", "<|en|>", "<|transcribe|>", "<|notimestamps|>"]
    tokenizer, vocab = _word_tokenizer(
        specials,
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
        additional_special_tokens=specials[1:],
    )
    config = WhisperConfig(
        vocab_size=len(vocab),
        num_mel_bins=80,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        d_model=16,
        encoder_ffn_dim=32,
        decoder_ffn_dim=32,
        max_source_positions=1500,
        max_target_positions=32,
        decoder_start_token_id=1,
        bos_token_id=0,
        eos_token_id=0,
        pad_token_id=0,
        begin_suppress_tokens=None,
        suppress_tokens=None,
    )
    torch.manual_seed(0)
    model = WhisperForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig(
        decoder_start_token_id=1,
        eos_token_id=0,
        pad_token_id=0,
        lang_to_id={"<|en|>": 2},
        task_to_id={"transcribe": 3},
        no_timestamps_token_id=4,
        is_multilingual=True,
        max_length=32,
    )
    model.save_pretrained(folder)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _reference_transcript(folder, audio16k: np.ndarray) -> str:
    from transformers import AutoTokenizer, WhisperFeatureExtractor, WhisperForConditionalGeneration

    model = WhisperForConditionalGeneration.from_pretrained(folder).eval()
    features = WhisperFeatureExtractor.from_pretrained(folder)(
        audio16k, sampling_rate=16000, return_tensors="pt"
    )
    with torch.no_grad():
        tokens = model.generate(features.input_features, language="en", task="transcribe", max_new_tokens=8)
    return AutoTokenizer.from_pretrained(folder).batch_decode(tokens, skip_special_tokens=True)[0].strip()


def test_whisper_transcripts_match_the_model(tiny_whisper):
    from skyreels_v4.data.hf_hooks import WhisperTranscriber, resample_mono

    hook = WhisperTranscriber(model=str(tiny_whisper), language="en", task="transcribe", max_new_tokens=8)
    rng = np.random.default_rng(0)
    audio = (0.1 * rng.standard_normal(16000 * 2)).astype(np.float32)
    text = hook.transcribe(audio, 16000)
    assert text == _reference_transcript(tiny_whisper, audio)
    assert text and set(text.split()) <= set(WORDS)  # the random model still says words of its vocabulary
    # audio at another rate is resampled first
    low = audio[::2].copy()
    assert hook.transcribe(low, 8000) == _reference_transcript(tiny_whisper, resample_mono(low, 8000, 16000))
    # longer than Whisper's 30 s window: one transcript per window, joined
    long = (0.1 * rng.standard_normal(16000 * 31)).astype(np.float32)
    windows = hook.transcribe_windows(long, 16000)
    assert windows == [
        _reference_transcript(tiny_whisper, long[: 16000 * 30]),
        _reference_transcript(tiny_whisper, long[16000 * 30 :]),
    ]


def test_whisper_through_the_transcribe_stage_and_bad_input(tiny_whisper, tmp_path):
    from skyreels_v4.data.hf_hooks import WhisperTranscriber
    from skyreels_v4.data.manifest import new_row
    from skyreels_v4.data.stage import StageContext, build_config, resolve_stage
    from skyreels_v4.errors import FileFormatError, NonFiniteError, SkyReelsError
    from skyreels_v4.world.media import write_wav

    audio = (0.1 * np.random.default_rng(0).standard_normal(16000 * 2)).astype(np.float32)
    write_wav(tmp_path / "speech.wav", audio[None], 16000)
    stage = resolve_stage("transcribe")
    config = build_config(
        stage,
        {
            "transcriber": {
                "target": "skyreels_v4.data.hf_hooks:WhisperTranscriber",
                "kwargs": {"model": str(tiny_whisper), "language": "en", "max_new_tokens": 8},
            }
        },
    )
    context = StageContext(input_dir=tmp_path, output_dir=tmp_path / "out")
    row = new_row(
        id="speech", source="speech.wav", start_s=0.0, end_s=2.0, sample_rate=16000, category="speech"
    )
    hook = WhisperTranscriber(model=str(tiny_whisper), language="en", max_new_tokens=8)
    from skyreels_v4.data.media import read_audio

    decoded = read_audio(tmp_path / "speech.wav", 0.0, 2.0, sample_rate=16000)[0]
    assert stage.fn(row, config, context).values == {"transcript": hook.transcribe(decoded, 16000)}
    assert stage.fn({**row, "category": "music"}, config, context).values == {}  # only speech and singing

    with pytest.raises(FileFormatError, match=r"config\.json"):
        WhisperTranscriber(model=str(tmp_path))
    with pytest.raises(NonFiniteError, match="audio"):
        hook.transcribe(np.array([0.0, np.nan], np.float32), 16000)
    with pytest.raises(SkyReelsError, match=r"audio: expected mono"):
        hook.transcribe(np.zeros((2, 100), np.float32), 16000)
    with pytest.raises(SkyReelsError, match="sample_rate"):
        hook.transcribe(audio, 0)
