"""The video and audio codecs of the composed model (paper section 3.1: a causal video VAE and an
audio VAE turn pixels and waveforms into the latents the two branches denoise). docs/vae.md.

Video codecs (:class:`VideoCodec`, satisfying ``skyreels_inpaint_conditioning.VideoVae``):
:class:`DiffusersVideoVae` (Wan 2.1 / HunyuanVideo VAEs from diffusers), :class:`TinyVideoAutoencoder`
(the embedded default, trained on the procedural world) and :class:`PixelShuffleVideoCodec`
(zero-training, exactly invertible); the tiny one is trained by ``skyreels_v4.vae.train_video``.
Audio codecs: :class:`AudioCodec` (over ``skyreels_audio_vae.AudioVAE``) and
:class:`FrameAudioCodec` (zero-training, exactly invertible) and :class:`SpectrogramAudioCodec`
(zero-training, phase-free magnitudes decoded by Griffin-Lim: what the quickstart's tiny model learns).
"""

from skyreels_v4.vae.audio_codec import AudioCodec, AudioCodecBase, load_audio_codec
from skyreels_v4.vae.diffusers_video import DiffusersVaeKind, DiffusersVideoVae, diffusers_vae_factors
from skyreels_v4.vae.frame_audio import FrameAudioCodec
from skyreels_v4.vae.pixel_shuffle import PixelShuffleVideoCodec
from skyreels_v4.vae.resample import convert_channels, resample_waveform
from skyreels_v4.vae.spectrogram_audio import SpectrogramAudioCodec
from skyreels_v4.vae.tiling import VideoTilingConfig, tile_windows
from skyreels_v4.vae.tiny_video import TinyVideoAutoencoder, TinyVideoAutoencoderConfig
from skyreels_v4.vae.video_codec import VIDEO_CODEC_CLASSES, VideoCodec, load_video_codec

__all__ = [
    "VIDEO_CODEC_CLASSES",
    "AudioCodec",
    "AudioCodecBase",
    "DiffusersVaeKind",
    "DiffusersVideoVae",
    "FrameAudioCodec",
    "PixelShuffleVideoCodec",
    "SpectrogramAudioCodec",
    "TinyVideoAutoencoder",
    "TinyVideoAutoencoderConfig",
    "VideoCodec",
    "VideoTilingConfig",
    "convert_channels",
    "diffusers_vae_factors",
    "load_audio_codec",
    "load_video_codec",
    "resample_waveform",
    "tile_windows",
]
