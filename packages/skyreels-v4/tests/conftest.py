"""Shared fixtures: a tiny generation pipeline (seeded tiny transformer, exactly invertible codecs, the
embedded text encoder), 9 frames of 32x32 at 16 fps, 16 kHz audio, 2 solver steps; and an mp4 probe.

The pipeline tests run with one intra-op thread: the tiny model's ops are ~1 ms each and two threads
fighting other processes for 2 cores made them 20x slower."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

TINY_FRAMES, TINY_SIZE, TINY_FPS, TINY_RATE = 9, 32, 16.0, 16000


@pytest.fixture
def one_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def build_tiny_pipeline(**sampling_changes: Any):
    """A fresh tiny pipeline (weights seeded, so two builds are identical)."""
    from skyreels_v4.model import SkyReelsV4Transformer, transformer_preset
    from skyreels_v4.pipeline import GenerationDefaults, SamplingConfig, SkyReelsV4Pipeline
    from skyreels_v4.text import EmbeddedTextEncoder, EmbeddedTextEncoderConfig
    from skyreels_v4.vae import FrameAudioCodec, PixelShuffleVideoCodec

    torch.manual_seed(0)
    video_vae = PixelShuffleVideoCodec(temporal_factor=4, spatial_factor=4)
    audio_vae = FrameAudioCodec(sample_rate=TINY_RATE, hop_length=256)
    text_encoder = EmbeddedTextEncoder(EmbeddedTextEncoderConfig(dim=32))
    config = transformer_preset(
        "tiny",
        video_latent_channels=video_vae.latent_channels,
        audio_latent_channels=audio_vae.latent_channels,
    )
    transformer = SkyReelsV4Transformer(config).eval()
    # Zero-initialised layers (gates, output projections, new conditioning paths) would make the tiny
    # model an identity and every comparison trivially equal: give them small random values.
    with torch.no_grad():
        for parameter in transformer.parameters():
            if not bool(parameter.any()):
                parameter.normal_(0.0, 0.05)
    sampling = {"num_steps": 2, "video_guidance": 3.0, "audio_guidance": 2.0, "shift": 3.0}
    sampling.update(sampling_changes)
    return SkyReelsV4Pipeline(
        transformer=transformer,
        video_vae=video_vae,
        audio_vae=audio_vae,
        text_encoder=text_encoder,
        sampling=SamplingConfig(**sampling),
        defaults=GenerationDefaults(num_frames=TINY_FRAMES, height=TINY_SIZE, width=TINY_SIZE, fps=TINY_FPS),
    )


@pytest.fixture(scope="session")
def tiny_pipe():
    return build_tiny_pipeline()


@pytest.fixture(scope="session")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory, tiny_pipe) -> Path:
    """The tiny pipeline saved as a model folder (model_index.json + one subfolder per component)."""
    return tiny_pipe.save_pretrained(tmp_path_factory.mktemp("tiny_model") / "model")


def probe_mp4(path: Path) -> dict[str, Any]:
    """Decode an mp4 with PyAV: frame count, size, frame rate, audio rate/channels/samples, duration."""
    import av
    import numpy as np

    info: dict[str, Any] = {"frames": 0, "audio_samples": 0, "audio_rate": None}
    with av.open(str(path)) as container:
        info["has_video"] = bool(container.streams.video)
        info["has_audio"] = bool(container.streams.audio)
        if info["has_video"]:
            stream = container.streams.video[0]
            info["fps"] = float(stream.average_rate)
            info["codec"] = stream.codec_context.name
            pictures = [f.to_ndarray(format="rgb24") for f in container.decode(stream)]
            info["frames"] = len(pictures)
            info["size"] = pictures[0].shape[:2]
            info["pixels"] = np.stack(pictures)
    with av.open(str(path)) as container:
        if container.streams.audio:
            stream = container.streams.audio[0]
            info["audio_rate"] = int(stream.rate)
            info["audio_channels"] = stream.codec_context.channels
            info["audio_codec"] = stream.codec_context.name
            info["audio_samples"] = sum(f.samples for f in container.decode(stream))
    return info


@pytest.fixture
def mp4_probe() -> Callable[[Path], dict[str, Any]]:
    return probe_mp4


@pytest.fixture
def tiny_pipeline_factory() -> Callable[..., Any]:
    """``factory(**sampling_changes)`` -> a fresh tiny pipeline (for tests that change it)."""
    return build_tiny_pipeline
