"""From a folder of mp4 files to the training cache (paper 3.4 -> 4): data run -> export/captions.jsonl
+ clips -> folder_samples -> build_latent_cache -> LatentCache, with the values checked on the way."""

from __future__ import annotations

import json
import textwrap

import pytest
import torch

from skyreels_v4.data import read_captions, run_pipeline
from skyreels_v4.data.testmedia import _write_sidecar, pan_texture, world_clip_with_offset
from skyreels_v4.world.media import write_mp4

PIPELINE = """
stages:
  - stage: scan_videos
  - stage: video_quality
    params: {{min_duration_s: 0.5}}
  - stage: caption
  - stage: cut_clips
    params: {{silent: {silent}}}
  - stage: write_captions
    params: {{silent: {silent}}}
"""


@pytest.fixture(scope="module")
def raw_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("raw")
    captions = {}
    for n in range(2):
        frames, audio, config = world_clip_with_offset(n, 0)
        write_mp4(
            folder / f"world{n}.mp4", frames[:33], config.fps, audio[:, : 33 * 1000], config.sample_rate
        )
        captions[f"world{n}"] = f"A small world scene number {n} <sfx>a bounce</sfx>"
    write_mp4(folder / "silent.mp4", pan_texture(0, 33, size=(64, 96)), 24.0)  # no audio stream
    captions["silent"] = "A camera pans over a colourful texture"
    for stem, caption in captions.items():
        _write_sidecar(folder / f"{stem}.json", caption)
    return folder


def _run(raw_folder, out, silent):
    pipeline = out.parent / f"{out.name}.yaml"
    pipeline.write_text(textwrap.dedent(PIPELINE.format(silent=silent)))
    return {r["id"]: r for r in run_pipeline(pipeline, input_dir=raw_folder, output_dir=out, progress=False)}


def _components():
    from skyreels_v4.text import EmbeddedTextEncoder, EmbeddedTextEncoderConfig
    from skyreels_v4.vae import FrameAudioCodec, PixelShuffleVideoCodec

    torch.manual_seed(0)
    return (
        PixelShuffleVideoCodec(temporal_factor=4, spatial_factor=4),
        FrameAudioCodec(sample_rate=16000, hop_length=256),
        EmbeddedTextEncoder(EmbeddedTextEncoderConfig(dim=32)),
    )


def test_mp4_folder_to_latent_cache(raw_folder, tmp_path):
    from skyreels_v4.io.media import read_video_file
    from skyreels_v4.training.cache import LatentCache, build_latent_cache, folder_samples

    rows = _run(raw_folder, tmp_path / "curated", "skip")
    export = tmp_path / "curated" / "export"
    entries = read_captions(export)
    # the silent clip is kept by the filters but left out of the cache listing (no audio to cache)
    assert rows["silent"]["kept"] and rows["silent"]["export_skipped"] == "no_audio"
    assert [e["id"] for e in entries] == ["world0", "world1"]
    for entry in entries:
        assert entry["video"] == f"clips/{entry['id']}.mp4" and (export / entry["video"]).is_file()
        assert entry["caption"] == rows[entry["id"]]["caption"]
        assert entry["caption"].endswith("<sfx>a bounce</sfx>")
        assert entry["start_s"] == 0.0 and entry["end_s"] == pytest.approx(33 / 16, abs=0.1)

    video_vae, audio_vae, text_encoder = _components()
    samples = list(folder_samples(export, num_frames=9))
    assert [s.id for s in samples] == ["world0", "world1"] and samples[0].fps == 16.0
    assert tuple(samples[0].video.shape) == (3, 9, 64, 64) and samples[0].sample_rate == 16000
    # the cut clip holds the source's frames (one H.264 re-encode apart)
    source, _ = read_video_file(raw_folder / "world0.mp4", end_s=9 / 16)
    assert float((samples[0].video - source).abs().mean()) < 0.03

    cache_dir = build_latent_cache(
        samples,
        tmp_path / "cache",
        video_vae=video_vae,
        audio_vae=audio_vae,
        text_encoder=text_encoder,
        progress=False,
    )
    cache = LatentCache(cache_dir)
    assert len(cache) == 2
    assert [item["caption"] for item in cache.items] == [e["caption"] for e in entries]
    first = cache[0]
    with torch.no_grad():
        expected = video_vae.encode(samples[0].video[None].float())[0]
        text = text_encoder.encode([entries[0]["caption"]])
    torch.testing.assert_close(first["video_latents"], expected)
    n = int(text.mask[0].sum())
    torch.testing.assert_close(first["text_tokens"], text.tokens[0, :n].float())
    assert first["audio_latents"].shape[-1] == audio_vae.num_latents_for_frames(9, 16.0)
    assert float(first["audio_latents"].abs().sum()) > 0  # the world clip's audio made it through


def test_silence_mode_caches_silent_footage(raw_folder, tmp_path):
    from skyreels_v4.training.cache import folder_samples

    _run(raw_folder, tmp_path / "curated", "silence")
    export = tmp_path / "curated" / "export"
    assert [e["id"] for e in read_captions(export)] == ["silent", "world0", "world1"]
    silent = next(s for s in folder_samples(export, num_frames=9) if s.id == "silent")
    assert silent.sample_rate == 16000 and float(silent.audio.abs().max()) < 1e-4
    assert tuple(silent.video.shape) == (3, 9, 64, 96)


def test_export_refuses_bad_settings_and_reads_bad_files(tmp_path):
    from skyreels_v4.data.export import ExportConfig
    from skyreels_v4.errors import FileFormatError

    for kwargs, match in [
        ({"mode": "copy"}, "mode: expected one of"),
        ({"silent": "drop"}, "silent: expected one of"),
        ({"mode": "reference", "silent": "silence"}, "reference"),
        ({"silence_rate": 0}, "silence_rate"),
        ({"folder": "../x"}, "folder"),
    ]:
        with pytest.raises(ValueError, match=match):
            ExportConfig(**kwargs)
    (tmp_path / "captions.jsonl").write_text(json.dumps({"id": "a", "video": "a.mp4"}) + "\n")
    with pytest.raises(
        FileFormatError, match=r"captions.jsonl.*line 1: missing keys \['caption', 'end_s', 'start_s'\]"
    ):
        read_captions(tmp_path)
    (tmp_path / "captions.jsonl").write_text("{not json\n")
    with pytest.raises(FileFormatError, match="line 1: not JSON"):
        read_captions(tmp_path)


class _BadHooks:
    """Hooks that return what a stage must refuse."""

    def cuts(self, path, start_s, end_s):
        return [0.5, float("nan")]

    def describe_video(self, path, start_s, end_s):
        return {"visual": 3}

    def describe_audio(self, path, start_s, end_s):
        return {}


def test_stages_refuse_bad_hook_output(raw_folder, monkeypatch):
    import sys
    import types

    from skyreels_v4.data.manifest import new_row
    from skyreels_v4.data.stage import StageContext, build_config, resolve_stage
    from skyreels_v4.errors import NonFiniteError

    module = types.ModuleType("tests_bad_hooks")
    module.BadHooks = _BadHooks
    monkeypatch.setitem(sys.modules, "tests_bad_hooks", module)
    context = StageContext(input_dir=raw_folder, output_dir=raw_folder)
    row = new_row(id="world0", source="world0.mp4", start_s=0.0, end_s=2.0)
    shots = resolve_stage("shots")
    with pytest.raises(NonFiniteError, match=r"stage 'shots'.*nan.*'world0'"):
        shots.fn(row, build_config(shots, {"detector": "tests_bad_hooks:BadHooks"}), context)
    caption = resolve_stage("caption")
    config = build_config(caption, {"video_captioner": "tests_bad_hooks:BadHooks"})
    with pytest.raises(TypeError, match=r"video_captioner 'tests_bad_hooks:BadHooks'.*'world0'"):
        caption.fn(row, config, context)


def test_a_nan_measured_value_stops_the_run_naming_stage_clip_and_value(raw_folder, tmp_path):
    from skyreels_v4.data import read_manifest
    from skyreels_v4.errors import NonFiniteError

    pipeline = tmp_path / "nan.yaml"
    pipeline.write_text(
        "stages:\n  - stage: scan_videos\n  - stage: overlays\n    params:\n"
        "      watermark: {target: 'skyreels_v4.data.hooks:FlatScore', kwargs: {value: .nan}}\n"
    )
    with pytest.raises(
        NonFiniteError, match=r"stage 'overlays': value 'watermark_score' of clip 'silent' is nan"
    ):
        run_pipeline(pipeline, input_dir=raw_folder, output_dir=tmp_path / "out", progress=False)
    rows = read_manifest(tmp_path / "out" / "manifest.parquet")  # the last good checkpoint, no NaN in it
    assert sorted(r["id"] for r in rows) == ["silent", "world0", "world1"]
    assert all("watermark_score" not in r for r in rows)
