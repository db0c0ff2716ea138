"""A 44.1 kHz waveform VAE (1024x downsampling by default) and its losses.

Depends only on torch and safetensors. Layouts: waveforms ``[B, channels, samples]``, latents
``[B, C, L]``. See docs/audio-vae.md for the design and the measured results.
"""

from skyreels_audio_vae.adversarial import (
    AdversarialLoss,
    discriminator_loss,
    feature_matching_loss,
    generator_adversarial_loss,
)
from skyreels_audio_vae.bottleneck import DiagonalGaussian, ScaleParameterization
from skyreels_audio_vae.checkpoint import load_audio_vae, save_audio_vae
from skyreels_audio_vae.chunked import (
    chunk_windows,
    chunked_decode,
    chunked_encode,
    decoder_receptive_radius,
    encoder_receptive_radius,
)
from skyreels_audio_vae.codec import WaveformDecoder, WaveformEncoder
from skyreels_audio_vae.conv_blocks import DecoderBlock, EncoderBlock, ResidualUnit
from skyreels_audio_vae.discriminators import (
    AudioDiscriminator,
    DiscriminatorConfig,
    DiscriminatorOutput,
    PeriodDiscriminator,
    STFTDiscriminator,
)
from skyreels_audio_vae.finite_checks import (
    FiniteChecks,
    NonFiniteInputError,
    check_finite,
    finite_checks,
    get_finite_checks,
    set_finite_checks,
)
from skyreels_audio_vae.latent_statistics import LatentStatistics, estimate_latent_statistics
from skyreels_audio_vae.mel import MelScale, MelSpectrogram, hz_to_mel, mel_filterbank, mel_to_hz
from skyreels_audio_vae.model import (
    AudioVAE,
    AudioVAEConfig,
    AudioVAEOutput,
    AudioVAEPreset,
    audio_vae_preset,
)
from skyreels_audio_vae.objective import AudioVAELoss, AudioVAELossConfig
from skyreels_audio_vae.oobleck import (
    OobleckNaming,
    WeightImportReport,
    infer_oobleck_config,
    load_oobleck_weights,
    oobleck_module_names,
)
from skyreels_audio_vae.snake import Snake, snake_reference
from skyreels_audio_vae.spectral_losses import (
    MelLossConfig,
    MultiResolutionSTFTLoss,
    MultiResolutionSTFTLossConfig,
    MultiScaleMelLoss,
    STFTLossTerms,
    stft_magnitude,
)
from skyreels_audio_vae.time_alignment import (
    Rounding,
    audio_latent_index_for_frame,
    audio_latent_times,
    audio_samples_for_frames,
    crop_to_hop_multiple,
    num_audio_latents_for_frames,
    num_audio_latents_for_samples,
    num_audio_samples_for_frames,
    num_frames_for_audio_latents,
    pad_to_hop_multiple,
)

__all__ = [
    "AdversarialLoss",
    "AudioDiscriminator",
    "AudioVAE",
    "AudioVAEConfig",
    "AudioVAELoss",
    "AudioVAELossConfig",
    "AudioVAEOutput",
    "AudioVAEPreset",
    "DecoderBlock",
    "DiagonalGaussian",
    "DiscriminatorConfig",
    "DiscriminatorOutput",
    "EncoderBlock",
    "FiniteChecks",
    "LatentStatistics",
    "MelLossConfig",
    "MelScale",
    "MelSpectrogram",
    "MultiResolutionSTFTLoss",
    "MultiResolutionSTFTLossConfig",
    "MultiScaleMelLoss",
    "NonFiniteInputError",
    "OobleckNaming",
    "PeriodDiscriminator",
    "ResidualUnit",
    "Rounding",
    "STFTDiscriminator",
    "STFTLossTerms",
    "ScaleParameterization",
    "Snake",
    "WaveformDecoder",
    "WaveformEncoder",
    "WeightImportReport",
    "audio_latent_index_for_frame",
    "audio_latent_times",
    "audio_samples_for_frames",
    "audio_vae_preset",
    "check_finite",
    "chunk_windows",
    "chunked_decode",
    "chunked_encode",
    "crop_to_hop_multiple",
    "decoder_receptive_radius",
    "discriminator_loss",
    "encoder_receptive_radius",
    "estimate_latent_statistics",
    "feature_matching_loss",
    "finite_checks",
    "generator_adversarial_loss",
    "get_finite_checks",
    "hz_to_mel",
    "infer_oobleck_config",
    "load_audio_vae",
    "load_oobleck_weights",
    "mel_filterbank",
    "mel_to_hz",
    "num_audio_latents_for_frames",
    "num_audio_latents_for_samples",
    "num_audio_samples_for_frames",
    "num_frames_for_audio_latents",
    "oobleck_module_names",
    "pad_to_hop_multiple",
    "save_audio_vae",
    "set_finite_checks",
    "snake_reference",
    "stft_magnitude",
]
