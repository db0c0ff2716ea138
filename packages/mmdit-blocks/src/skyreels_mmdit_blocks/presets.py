"""Named joint-model configurations: ``tiny`` (tests, CPU quickstart), ``small`` (one GPU), ``full``.

``full`` is HunyuanVideo-13B-sized per branch (D 3072, 24 heads x 128, 20 dual + 40 single blocks,
MLP ratio 4, patch (1, 2, 2), RoPE (16, 56, 56) theta 256, 2 refiner blocks, text 4096-d, pooled
768-d) so that a HunyuanVideo checkpoint loads into its video branch; the video branch reads
Concat(V, I, M) = 16 + 16 + 1 = 33 channels (eq. 7) and adds eq. 4's text cross-attention to its
single-stream blocks. The audio branch has the same architecture (paper 3.1) over 64-channel audio
latents (skyreels-audio-vae ``base``), a time-only RoPE over the whole head dim (``RATIO`` policy) and
no guidance embedding (it is trained from scratch with ordinary classifier-free guidance).

``tiny`` and ``small`` take no pooled text: SkyReels-V4 conditions on one multimodal LLM encoder.
Change any field with ``dataclasses.replace``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from skyreels_av_rope import AudioTimeAlignment, RotaryConfig, audio_rotary_config
from skyreels_mmdit_blocks.branch_config import MMDiTBranchConfig, Modality
from skyreels_mmdit_blocks.joint_config import JointAudioVideoTransformerConfig

__all__ = ["PRESET_NAMES", "PresetName", "joint_preset"]

PresetName = Literal["tiny", "small", "full"]
PRESET_NAMES: tuple[str, ...] = ("tiny", "small", "full")


def _joint(
    *,
    dim: int,
    num_heads: int,
    num_dual: int,
    num_single: int,
    video_rope: RotaryConfig,
    video_latent_channels: int,
    audio_latent_channels: int,
    text_dim: int,
    pooled_text_dim: int | None,
    video_guidance: bool,
    num_refiner_blocks: int,
) -> JointAudioVideoTransformerConfig:
    video = MMDiTBranchConfig(
        modality=Modality.VIDEO,
        in_channels=2 * video_latent_channels + 1,  # Concat(V, I, M), eq. 7
        out_channels=video_latent_channels,
        patch_size=(1, 2, 2),
        dim=dim,
        num_heads=num_heads,
        num_dual_blocks=num_dual,
        num_single_blocks=num_single,
        text_dim=text_dim,
        pooled_text_dim=pooled_text_dim,
        rope=video_rope,
        guidance_embedding=video_guidance,
        num_refiner_blocks=num_refiner_blocks,
        # eq. 4: "crucial ... in later model stages" -> the single-stream blocks.
        text_cross_attention_blocks=tuple(range(num_dual, num_dual + num_single)),
    )
    audio = replace(
        video,
        modality=Modality.AUDIO,
        in_channels=audio_latent_channels,
        out_channels=audio_latent_channels,
        patch_size=(1,),
        rope=audio_rotary_config(AudioTimeAlignment.RATIO, video_rope),
        guidance_embedding=False,
        text_cross_attention_blocks=(),
    )
    return JointAudioVideoTransformerConfig(
        video=video, audio=audio, audio_alignment=AudioTimeAlignment.RATIO
    )


def joint_preset(name: PresetName) -> JointAudioVideoTransformerConfig:
    """The named configuration (see the module docstring)."""
    if name == "tiny":
        return _joint(
            dim=64,
            num_heads=4,
            num_dual=2,
            num_single=2,
            video_rope=RotaryConfig(axes_dims=(4, 6, 6), theta=256.0),
            video_latent_channels=4,
            audio_latent_channels=16,
            text_dim=32,
            pooled_text_dim=None,
            video_guidance=False,
            num_refiner_blocks=1,
        )
    if name == "small":
        return _joint(
            dim=768,
            num_heads=12,
            num_dual=4,
            num_single=12,
            video_rope=RotaryConfig(axes_dims=(8, 28, 28), theta=256.0),
            video_latent_channels=16,
            audio_latent_channels=64,
            text_dim=2048,
            pooled_text_dim=None,
            video_guidance=False,
            num_refiner_blocks=2,
        )
    if name == "full":
        return _joint(
            dim=3072,
            num_heads=24,
            num_dual=20,
            num_single=40,
            video_rope=RotaryConfig(axes_dims=(16, 56, 56), theta=256.0),
            video_latent_channels=16,
            audio_latent_channels=64,
            text_dim=4096,
            pooled_text_dim=768,
            video_guidance=True,
            num_refiner_blocks=2,
        )
    raise ValueError(f"name must be one of {PRESET_NAMES}; got {name!r}")
