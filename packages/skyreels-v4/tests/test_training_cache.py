"""`skyreels-v4 cache` and the latent cache: folders of mp4/wav + captions.jsonl, the procedural world,
the combined structured prompt (same embedding as the pipeline), resume, settings fingerprint,
typed errors that name the file, nothing half-written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from skyreels_v4.errors import (
    ConfigMismatchError,
    FileFormatError,
    NonFiniteError,
    PreflightError,
    PromptError,
)
from skyreels_v4.io import read_safetensors
from skyreels_v4.io.media import read_audio_file, read_video_file
from skyreels_v4.pipeline import GenerationRequest
from skyreels_v4.pipeline.prompting import plan_prompt
from skyreels_v4.text import EmbeddedTextEncoder, EmbeddedTextEncoderConfig
from skyreels_v4.training.cache import (
    CACHE_INDEX,
    CACHE_PROGRESS,
    CacheSample,
    ExistingCache,
    LatentCache,
    build_latent_cache,
    collate_cache_items,
    prompt_text,
    world_samples,
)
from skyreels_v4.training.cache_cli import main as cache_main
from skyreels_v4.vae import FrameAudioCodec, PixelShuffleVideoCodec
from skyreels_v4.world import ProceduralAVDataset, WorldConfig, WorldSplit
from skyreels_v4.world.media import write_mp4, write_wav

WORLD = WorldConfig(size=16, num_frames=9, sample_rate=16000, fps=16.0)
# Segments written before the visual description: the combined prompt reorders them (paper 3.1).
SCRAMBLED = (
    "<bgm>A low drone.</bgm> <sfx>A 440 Hz blip on each bounce.</sfx> "
    "A red circle bounces inside a black box."
)


@pytest.fixture(scope="module")
def components():
    return (
        PixelShuffleVideoCodec(temporal_factor=4, spatial_factor=4),
        FrameAudioCodec(sample_rate=16000, hop_length=256),
        EmbeddedTextEncoder(EmbeddedTextEncoderConfig(dim=32)),
    )


def _build(samples, out, components, **kwargs):
    video, audio, text = components
    kwargs.setdefault("shard_size", 2)
    return build_latent_cache(
        samples, out, video_vae=video, audio_vae=audio, text_encoder=text, progress=False, **kwargs
    )


def _clip(sample_id: str, caption: str, seed: int = 0) -> CacheSample:
    g = torch.Generator().manual_seed(seed)
    return CacheSample(
        id=sample_id,
        video=torch.rand(3, 9, 16, 16, generator=g) * 2 - 1,
        audio=torch.rand(1, 9000, generator=g) * 0.2 - 0.1,
        sample_rate=16000,
        fps=16.0,
        caption=caption,
    )


def write_clip_folder(folder: Path, count: int = 3) -> Path:
    """Rendered world clips: clip 0 as mp4 with its sound inside, the others as mp4 + a separate wav."""
    folder.mkdir(parents=True, exist_ok=True)
    data = ProceduralAVDataset(WorldConfig(size=16, num_frames=10, sample_rate=16000), length=count, seed=4)
    lines = []
    for i in range(count):
        item = data[i]
        frames = (
            ((item["video"].permute(1, 2, 3, 0).numpy() + 1) * 127.5).round().clip(0, 255).astype(np.uint8)
        )
        audio = item["audio"].numpy()
        row = {"id": f"clip{i}", "video": f"clips/{i}.mp4", "caption": item["caption"]}
        if i == 0:
            write_mp4(folder / "clips" / "0.mp4", frames, 16.0, audio, 16000)
        else:
            write_mp4(folder / "clips" / f"{i}.mp4", frames, 16.0)
            write_wav(folder / "clips" / f"{i}.wav", audio, 16000)
            row["audio"] = f"clips/{i}.wav"
        lines.append(json.dumps(row))
    (folder / "captions.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def test_cached_text_is_the_pipeline_prompt_embedding(tmp_path, tiny_pipe):
    components = (tiny_pipe.video_vae, tiny_pipe.audio_vae, tiny_pipe.text_encoder)
    plain = "A red circle bounces inside a black box. <sfx>A 440 Hz blip on each bounce.</sfx>"
    out = _build([_clip("a", SCRAMBLED), _clip("b", plain, 1)], tmp_path / "c", components)
    cache = LatentCache(out)
    assert prompt_text(SCRAMBLED) == plan_prompt(SCRAMBLED).text != SCRAMBLED
    assert cache.items[0]["prompt"] == plan_prompt(SCRAMBLED).text
    assert cache.items[0]["caption"] == SCRAMBLED
    for position, caption in ((0, SCRAMBLED), (1, plain)):
        prepared = tiny_pipe.prepare(GenerationRequest(prompt=caption, num_frames=9, height=16, width=16))
        condition = prepared.condition
        expected = condition.text_tokens[0, : int(condition.text_mask[0].sum())]
        torch.testing.assert_close(cache[position]["text_tokens"], expected, rtol=0, atol=1e-6)
    # The raw caption (tags first) embeds differently: the test above can fail.
    raw = tiny_pipe.text_encoder.encode([SCRAMBLED])
    assert raw.tokens.shape[1] != cache[0]["text_tokens"].shape[0] or not torch.allclose(
        raw.tokens[0], cache[0]["text_tokens"]
    )
    # The negative of guidance / text dropout is the pipeline's empty prompt.
    negative = prepared.negative
    torch.testing.assert_close(
        cache.empty_prompt[: int(negative.text_mask[0].sum())],
        negative.text_tokens[0, : int(negative.text_mask[0].sum())],
    )


def test_cache_command_on_a_folder_of_mp4_and_wav(tmp_path, components, capsys):
    folder = write_clip_folder(tmp_path / "clips")
    out = tmp_path / "cache"
    argv = ["--input", str(folder), "--output", str(out), "--shard-size", "2", "--no-progress"]
    assert cache_main(argv) == 0
    assert "3 clips in 1 buckets, 2 shards" in capsys.readouterr().out
    cache = LatentCache(out)
    video_vae, audio_vae, text = components
    # 10 decoded frames are cut to 9 = 1 + 2*4 (the codec's temporal factor); audio to 9 frames' time.
    for position, (video_file, audio_file) in enumerate(
        [("0.mp4", "0.mp4"), ("1.mp4", "1.wav"), ("2.mp4", "2.wav")]
    ):
        frames, fps = read_video_file(folder / "clips" / video_file)
        wave, rate = read_audio_file(folder / "clips" / audio_file)
        assert frames.shape[1] == 10 and fps == 16.0
        item = cache[position]
        torch.testing.assert_close(item["video_latents"], video_vae.encode(frames[None, :, :9])[0])
        expected = audio_vae.encode(wave[None, :, :9000], rate)[0]
        torch.testing.assert_close(item["audio_latents"], expected[..., : item["audio_latents"].shape[-1]])
        assert item["audio_latents"].shape[-1] == audio_vae.num_latents_for_frames(9, 16.0)
        caption = json.loads((folder / "captions.jsonl").read_text().splitlines()[position])["caption"]
        embedding = text.encode([prompt_text(caption)])
        torch.testing.assert_close(item["text_tokens"], embedding.tokens[0, : int(embedding.mask[0].sum())])
    assert not (out / CACHE_PROGRESS).exists()
    # The same command again: the finished cache is kept as it is.
    stamp = (out / CACHE_INDEX).stat().st_mtime_ns
    assert cache_main(argv) == 0
    assert (out / CACHE_INDEX).stat().st_mtime_ns == stamp
    # Other settings on the same folder are refused, naming what differs; --overwrite starts over.
    with pytest.raises(ConfigMismatchError, match="shard_size"):
        cache_main([*argv[:-2], "3", "--no-progress"])
    assert cache_main([*argv[:-2], "3", "--no-progress", "--overwrite"]) == 0
    assert len(LatentCache(out).buckets[0]["shards"]) == 1


class _Interrupt(Exception):
    pass


def test_interrupted_build_resumes_to_the_uninterrupted_cache(tmp_path, components):
    length = 7
    full = _build(world_samples(WORLD, length=length, seed=2), tmp_path / "full", components)

    def stopping(done):
        for n, sample in enumerate(world_samples(WORLD, length=length, seed=2, skip=done)):
            if n == 5:
                raise _Interrupt
            yield sample

    partial = tmp_path / "partial"
    with pytest.raises(_Interrupt):
        _build(stopping, partial, components)
    assert not (partial / CACHE_INDEX).exists()
    progress = json.loads((partial / CACHE_PROGRESS).read_text())
    assert [s["file"] for s in progress["shards"]] == ["shard-00000.safetensors", "shard-00001.safetensors"]

    asked: list[frozenset[str]] = []

    def resumed(done):
        asked.append(done)
        return world_samples(WORLD, length=length, seed=2, skip=done)

    _build(resumed, partial, components)
    assert asked == [frozenset(f"world-train-2-{i}" for i in range(4))]  # finished clips not rendered
    a, b = json.loads((full / CACHE_INDEX).read_text()), json.loads((partial / CACHE_INDEX).read_text())
    assert a == b
    for shard in sorted(p.name for p in full.glob("shard-*.safetensors")):
        left, right = read_safetensors(full / shard), read_safetensors(partial / shard)
        assert left.keys() == right.keys()
        for key in left:
            assert torch.equal(left[key], right[key]), (shard, key)
    # A different world seed is a different source: refused.
    with pytest.raises(ConfigMismatchError, match="source"):
        _build(world_samples(WORLD, length=length, seed=3), partial, components, source={"seed": 3})


def test_buckets_and_pooled_text(tmp_path, components):
    big = CacheSample(
        id="big",
        video=torch.zeros(3, 5, 32, 16),
        audio=torch.zeros(1, 5000),
        sample_rate=16000,
        fps=16.0,
        caption="A black box.",
    )
    out = _build([_clip("a", "A cat."), big, _clip("b", "A dog.", 2)], tmp_path / "c", components)
    cache = LatentCache(out)
    assert [cache.bucket_of(i) for i in range(3)] == [0, 0, 1]
    assert {(b["frames"], b["height"], b["width"]) for b in cache.buckets.values()} == {
        (9, 16, 16),
        (5, 32, 16),
    }
    batch = collate_cache_items([cache[0], cache[1]])
    assert batch["video_latents"].shape == (2, 192, 3, 4, 4)
    assert "pooled_text" not in batch  # the embedded encoder has no pooled output


# -- bad input: typed errors naming the file, nothing half-written -------------------------------------


def _listing(folder: Path, rows: list) -> None:
    text = "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows)
    (folder / "captions.jsonl").write_text(text + "\n", encoding="utf-8")


def _bad_folder(tmp_path: Path, case: str) -> tuple[Path, type[Exception], list[str]]:
    folder = write_clip_folder(tmp_path / "clips", count=2)
    good = [json.loads(line) for line in (folder / "captions.jsonl").read_text().splitlines()]
    listing = str(folder / "captions.jsonl")
    if case == "missing captions":
        (folder / "captions.jsonl").unlink()
        return folder, FileFormatError, [listing, "missing"]
    if case == "caption for a missing file":
        _listing(folder, [*good, {"id": "x", "video": "clips/nope.mp4", "caption": "A cat."}])
        return folder, FileFormatError, [listing, "line 3", "nope.mp4", "missing file"]
    if case == "missing audio file":
        _listing(folder, [{**good[1], "audio": "clips/none.wav"}])
        return folder, FileFormatError, ["line 1", "none.wav"]
    if case == "unreadable media":
        (folder / "clips" / "1.mp4").write_bytes(b"not a video at all" * 10)
        return folder, FileFormatError, [str(folder / "clips" / "1.mp4"), "cannot decode"]
    if case == "nan audio":
        wave = np.full((1, 10000), np.nan, dtype=np.float32)
        soundfile.write(folder / "clips" / "1.wav", wave.T, 16000, subtype="FLOAT")
        return folder, NonFiniteError, [str(folder / "clips" / "1.wav"), "NaN"]
    if case == "bad json":
        _listing(folder, [good[0], "{not json"])
        return folder, FileFormatError, [listing, "line 2", "JSON"]
    if case == "duplicate id":
        _listing(folder, [good[0], {**good[1], "id": good[0]["id"]}])
        return folder, FileFormatError, ["line 2", "repeats line 1"]
    if case == "no caption":
        _listing(folder, [{**good[0], "caption": ""}])
        return folder, FileFormatError, ["line 1", "'caption'"]
    if case == "malformed caption":
        _listing(folder, [{**good[0], "caption": "A dog <sfx>barks"}])
        return folder, PromptError, [listing, "line 1", "<sfx> is never closed"]
    if case == "bad times":
        _listing(folder, [{**good[0], "start_s": 1.0, "end_s": 0.5}])
        return folder, FileFormatError, ["line 1", "start_s < end_s"]
    raise AssertionError(case)


BAD_CASES = [
    "missing captions",
    "caption for a missing file",
    "missing audio file",
    "unreadable media",
    "nan audio",
    "bad json",
    "duplicate id",
    "no caption",
    "malformed caption",
    "bad times",
]


@pytest.mark.parametrize("case", BAD_CASES)
def test_bad_folders_raise_typed_errors_naming_the_file(tmp_path, case):
    folder, error, words = _bad_folder(tmp_path, case)
    out = tmp_path / "cache"
    with pytest.raises(error) as caught:
        cache_main(["--input", str(folder), "--output", str(out), "--no-progress"])
    for word in words:
        assert word in str(caught.value), (word, str(caught.value))
    assert not (out / CACHE_INDEX).exists()
    leftovers = [p.name for p in out.rglob("*") if p.name.startswith(".")] if out.exists() else []
    assert leftovers == []


def test_bad_samples_and_arguments(tmp_path, components):
    nan = _clip("n", "A cat.")
    nan.video[0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteError, match=r"'n'.*video"):
        _build([nan], tmp_path / "a", components)
    odd = CacheSample(
        id="o",
        video=torch.zeros(3, 8, 16, 16),
        audio=torch.zeros(1, 8000),
        sample_rate=16000,
        fps=16.0,
        caption="A cat.",
    )
    with pytest.raises(ValueError, match=r"'o'.*1 \+ k\*4 frames.*got 8 frames"):
        _build([odd], tmp_path / "b", components)
    with pytest.raises(PromptError, match=r"'p'.*caption"):
        _build([_clip("p", "x < y")], tmp_path / "c", components)
    with pytest.raises(TypeError, match="existing"):
        _build([_clip("q", "A cat.")], tmp_path / "d", components, existing="resume")
    with pytest.raises(PreflightError, match="--video-vae"):
        cache_main(["--world", "2", "--output", str(tmp_path / "e"), "--video-vae", str(tmp_path / "none")])
    for path in (tmp_path / "a", tmp_path / "b", tmp_path / "c"):
        assert not (path / CACHE_INDEX).exists()
    assert ExistingCache("overwrite") is ExistingCache.OVERWRITE


def test_world_command_and_one_line_errors(tmp_path, capsys):
    from skyreels_v4.cli import main as cli_main

    out = tmp_path / "world"
    argv = ["cache", "--world", "3", "--output", str(out), "--world-size", "16", "--world-frames", "9"]
    assert cli_main([*argv, "--no-progress"]) == 0
    cache = LatentCache(out)
    assert len(cache) == 3 and cache.items[0]["labels"]["num_objects"] >= 1
    first = next(iter(world_samples(WORLD, length=1, seed=0, split=WorldSplit.TRAIN)))
    torch.testing.assert_close(
        cache[0]["video_latents"],
        PixelShuffleVideoCodec(temporal_factor=4, spatial_factor=4).encode(first.video[None])[0],
    )
    capsys.readouterr()
    assert cli_main(["cache", "--world", "0", "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--world" in err[0] and "'0'" in err[0]
    assert cli_main(["cache", "--input", str(tmp_path / "nowhere"), "--output", str(out)]) == 2
    assert "nowhere" in capsys.readouterr().err


def test_named_audio_codecs_of_the_cache_command():
    from skyreels_v4.training.cache_cli import load_cache_components
    from skyreels_v4.vae import FrameAudioCodec, SpectrogramAudioCodec

    for name, kind, channels in (
        ("frame", FrameAudioCodec, 256),
        ("spectrogram", SpectrogramAudioCodec, 257),
    ):
        _, audio, _ = load_cache_components(video_vae="pixel", audio_vae=name, text_encoder="embedded")
        assert type(audio) is kind and audio.latent_channels == channels and audio.sample_rate == 16000
