"""The two-branch joint audio-video transformer (paper section 3.1, ARCHITECTURE.md section 4).

For each depth the video and audio blocks run in lockstep; inside the blocks paired by the depth
mapping, between attention and feed-forward (ARCHITECTURE.md 4):

    v' = video_block.attention_stage(v)         (self-attention with text, then eq. 4)
    a' = audio_block.attention_stage(a)
    a'' = a' + CrossAttn(q=a', kv=v')            (eq. 5, audio reads video)
    v'' = v' + CrossAttn(q=v', kv=a'')           (video reads the updated audio; or a' if PARALLEL)
    v, a = feed_forward_stage(v''), feed_forward_stage(a'')

Only the generated tokens take part in the exchange; in-context reference tokens (eq. 8) pass through
it untouched and are dropped from the output by index. A generated token masked as a key of its own
branch (``video_key_mask`` / ``audio_key_mask`` False) is not read by the other modality either.
The exchange's RoPE uses each token's time only: video tokens at their latent frame, audio tokens at
``k · T_v / T_a`` (paper: 21/218). With ``exchange_window`` set, eq. 5 is also time-local: each token
reads only the other modality's tokens within that many latent frames of its own time.
Both exchange directions start at zero, so the video output of a joint model whose video branch holds
text-to-video weights equals that branch's output exactly.

Shape legend: B batch, Lv/La video/audio tokens, Rv/Ra reference tokens, D width.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from skyreels_attention import DenseMask, KeyPaddingMask
from skyreels_av_rope import (
    AudioTimeAlignment,
    RotaryEmbedding,
    audio_positions,
    cross_modal_time_rope,
    temporal_ratio,
)
from skyreels_mmdit_blocks.av_cross_attention import (
    AudioVideoCrossAttention,
    key_mask_from_bool,
    time_window_mask,
)
from skyreels_mmdit_blocks.block_context import Rotary
from skyreels_mmdit_blocks.branch import BranchInputs, MMDiTBranch
from skyreels_mmdit_blocks.joint_config import JointAudioVideoTransformerConfig

__all__ = ["JointAudioVideoTransformer", "JointOutput", "JointReferenceOutput"]


class JointOutput(NamedTuple):
    """Velocities: video ``[B, C_v, T, H, W]``, audio ``[B, C_a, La]`` (references excluded)."""

    video: torch.Tensor
    audio: torch.Tensor


class JointReferenceOutput(NamedTuple):
    """``JointOutput`` plus the final layer's features on the video reference tokens ``[B, Rv, C·p]``
    (``forward(..., return_video_reference=True)``)."""

    video: torch.Tensor
    audio: torch.Tensor
    video_reference: torch.Tensor


class JointAudioVideoTransformer(nn.Module):
    """Video branch + audio branch + one ``AudioVideoCrossAttention`` per depth-mapping pair."""

    def __init__(self, config: JointAudioVideoTransformerConfig) -> None:
        super().__init__()
        if not isinstance(config, JointAudioVideoTransformerConfig):
            raise TypeError(f"config must be a JointAudioVideoTransformerConfig; got {type(config).__name__}")
        self.config = config
        self.video = MMDiTBranch(config.video)
        self.audio = MMDiTBranch(config.audio)
        self.exchanges = nn.ModuleList(
            AudioVideoCrossAttention(
                dim=config.video.dim,
                num_heads=config.video.num_heads,
                order=config.exchange_order,
                attention=config.video.attention,
            )
            for _ in config.exchange_pairs
        )
        self.exchange_rope = RotaryEmbedding(config.exchange_rope)

    def set_activation_checkpointing(
        self, video: bool | Iterable[int], audio: bool | Iterable[int] | None = None
    ) -> None:
        """Choose the checkpointed blocks per branch (see ``MMDiTBranch.set_activation_checkpointing``;
        ``audio=None`` means the same choice as ``video``). A pair of blocks joined by an exchange is
        checkpointed as one unit (both attention stages, eq. 5, both feed-forwards) when either of
        its blocks is chosen."""
        self.video.set_activation_checkpointing(video)
        self.audio.set_activation_checkpointing(video if audio is None else audio)

    def forward(
        self,
        video_latents: torch.Tensor,
        audio_latents: torch.Tensor,
        *,
        timestep: torch.Tensor,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor | None = None,
        pooled_text: torch.Tensor | None = None,
        guidance: torch.Tensor | None = None,
        audio_timestep: torch.Tensor | None = None,
        video_reference_latents: torch.Tensor | None = None,
        audio_reference_latents: torch.Tensor | None = None,
        video_positions: torch.Tensor | None = None,
        audio_positions: torch.Tensor | None = None,
        video_key_mask: torch.Tensor | None = None,
        audio_key_mask: torch.Tensor | None = None,
        return_video_reference: bool = False,
    ) -> JointOutput | JointReferenceOutput:
        """Velocities for both modalities.

        Args:
            video_latents: ``[B, C_v, T, H, W]`` (e.g. Concat(V, I, M), eq. 7).
            audio_latents: ``[B, C_a, La]``.
            timestep: ``[B]`` flow-matching timestep ``1000·σ`` (both branches unless ``audio_timestep``).
            text_tokens, text_mask, pooled_text: shared text conditioning (paper 3.1, one encoder),
                as in ``MMDiTBranch.forward``; each branch embeds it with its own layers.
            guidance: ``[B]``, given to every branch with a guidance embedding (and only if one has).
            audio_timestep: ``[B]``, a separate timestep for the audio branch.
            video_reference_latents, audio_reference_latents: in-context references (eq. 8).
            video_positions, audio_positions: RoPE position overrides (references first); audio
                positions are required under ``audio_alignment=SECONDS``.
            video_key_mask, audio_key_mask: bool ``[B, R + L]`` latent key masks (``MMDiTBranch``):
                False = never attended as a key, neither by its own branch nor, for generated
                tokens, by the other modality in eq. 5.
            return_video_reference: also return the final layer's output on the video reference tokens
                (``JointReferenceOutput``), for reference tokens that are denoised rather than given.
        """
        cfg = self.config
        for name, value in (("video_latents", video_latents), ("audio_latents", audio_latents)):
            if not isinstance(value, torch.Tensor) or value.ndim == 0:
                raise TypeError(f"{name} must be a batched torch.Tensor; got {type(value).__name__}")
        if video_latents.shape[0] != audio_latents.shape[0]:
            raise ValueError(
                f"video_latents and audio_latents must have one batch size; got "
                f"{video_latents.shape[0]} and {audio_latents.shape[0]}"
            )
        if guidance is not None and not (cfg.video.guidance_embedding or cfg.audio.guidance_embedding):
            raise ValueError("guidance was given but neither branch has a guidance embedding")
        video = self.video.embed(
            video_latents,
            timestep=timestep,
            text_tokens=text_tokens,
            text_mask=text_mask,
            pooled_text=pooled_text,
            guidance=guidance if cfg.video.guidance_embedding else None,
            reference_latents=video_reference_latents,
            positions=video_positions,
            latent_key_mask=video_key_mask,
        )
        if audio_positions is None:
            audio_positions = self._audio_positions(video, audio_latents, audio_reference_latents)
        audio = self.audio.embed(
            audio_latents,
            timestep=timestep if audio_timestep is None else audio_timestep,
            text_tokens=text_tokens,
            text_mask=text_mask,
            pooled_text=pooled_text,
            guidance=guidance if cfg.audio.guidance_embedding else None,
            reference_latents=audio_reference_latents,
            positions=audio_positions,
            latent_key_mask=audio_key_mask,
        )
        video_rotary, audio_rotary = cross_modal_time_rope(
            video.positions[..., video.num_reference :, :],
            audio.positions[..., audio.num_reference :, :],
            rope=self.exchange_rope,
        )
        rotaries = (Rotary(*video_rotary), Rotary(*audio_rotary))
        # Eq. 5 sees generated tokens only, so its key masks drop the reference prefix (embed has
        # validated both as bool [B, R + L]). Built once here: choosing the mask type is a host sync.
        generated_keys = (
            None if video_key_mask is None else video_key_mask[:, video.num_reference :],
            None if audio_key_mask is None else audio_key_mask[:, audio.num_reference :],
        )
        if cfg.exchange_window is None:
            exchange_masks = (
                key_mask_from_bool(generated_keys[0], name="video_key_mask"),
                key_mask_from_bool(generated_keys[1], name="audio_key_mask"),
            )
        else:  # time-local eq. 5: [B|1, 1, La, Lv] for the audio queries, its transpose for the video's
            video_time = video.positions[..., video.num_reference :, 0]
            audio_time = audio.positions[..., audio.num_reference :, 0]
            window = float(cfg.exchange_window)
            exchange_masks = (
                time_window_mask(audio_time, video_time, window=window, key_mask=generated_keys[0]),
                time_window_mask(video_time, audio_time, window=window, key_mask=generated_keys[1]),
            )

        v_latent, v_text, a_latent, a_text = video.latent, video.text, audio.latent, audio.text
        next_video = next_audio = 0
        for k, (video_index, audio_index) in enumerate(cfg.exchange_pairs):
            for i in range(next_video, video_index):
                v_latent, v_text = self.video.run_block(i, v_latent, v_text, video.context)
            for i in range(next_audio, audio_index):
                a_latent, a_text = self.audio.run_block(i, a_latent, a_text, audio.context)
            step_args = (k, v_latent, v_text, a_latent, a_text, video, audio, rotaries, exchange_masks)
            checkpointed = (
                video_index in self.video.checkpointed_blocks or audio_index in self.audio.checkpointed_blocks
            )
            if checkpointed and torch.is_grad_enabled():
                v_latent, v_text, a_latent, a_text = checkpoint(
                    self._exchange_step, *step_args, use_reentrant=False
                )
            else:
                v_latent, v_text, a_latent, a_text = self._exchange_step(*step_args)
            next_video, next_audio = video_index + 1, audio_index + 1
        for i in range(next_video, cfg.video.num_blocks):
            v_latent, v_text = self.video.run_block(i, v_latent, v_text, video.context)
        for i in range(next_audio, cfg.audio.num_blocks):
            a_latent, a_text = self.audio.run_block(i, a_latent, a_text, audio.context)
        output = JointOutput(self.video.finish(v_latent, video), self.audio.finish(a_latent, audio))
        if return_video_reference:
            return JointReferenceOutput(*output, self.video.finish_references(v_latent, video))
        return output

    def _exchange_step(
        self,
        k: int,
        v_latent: torch.Tensor,
        v_text: torch.Tensor,
        a_latent: torch.Tensor,
        a_text: torch.Tensor,
        video: BranchInputs,
        audio: BranchInputs,
        rotaries: tuple[Rotary, Rotary],
        exchange_masks: tuple[KeyPaddingMask | DenseMask | None, KeyPaddingMask | DenseMask | None],
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Exchange ``k``: both paired blocks' attention stages, eq. 5, both feed-forward stages."""
        video_index, audio_index = self.config.exchange_pairs[k]
        video_block, audio_block = self.video.blocks[video_index], self.audio.blocks[audio_index]
        v_state = video_block.attention_stage(v_latent, v_text, video.context)
        a_state = audio_block.attention_stage(a_latent, a_text, audio.context)
        rv, ra = video.num_reference, audio.num_reference
        new_video, new_audio = self.exchanges[k](
            v_state.latent[:, rv:],
            a_state.latent[:, ra:],
            video_rotary=rotaries[0],
            audio_rotary=rotaries[1],
            video_key_mask=exchange_masks[0],
            audio_key_mask=exchange_masks[1],
        )
        if rv:
            new_video = torch.cat([v_state.latent[:, :rv], new_video], dim=1)
        if ra:
            new_audio = torch.cat([a_state.latent[:, :ra], new_audio], dim=1)
        v_latent, v_text = video_block.feed_forward_stage(v_state._replace(latent=new_video))
        a_latent, a_text = audio_block.feed_forward_stage(a_state._replace(latent=new_audio))
        return v_latent, v_text, a_latent, a_text

    def _audio_positions(
        self, video: BranchInputs, audio_latents: torch.Tensor, audio_reference_latents: torch.Tensor | None
    ) -> torch.Tensor:
        """Audio positions on the video's latent time axis: ``k · T_v / T_a`` (paper 3.1), references at
        ``(k - R_a) · T_v / T_a`` just before the clip (spaced like the clip's audio)."""
        alignment = self.config.audio_alignment
        if alignment is AudioTimeAlignment.SECONDS:
            raise ValueError(
                "audio_positions must be given when audio_alignment=SECONDS (they depend on fps and hop)"
            )
        if not isinstance(audio_latents, torch.Tensor) or audio_latents.ndim != 3:
            got = (
                tuple(audio_latents.shape) if isinstance(audio_latents, torch.Tensor) else type(audio_latents)
            )
            raise ValueError(f"audio_latents must be [B, C, La]; got {got}")
        patch = self.config.audio.patch_size[0]
        num_audio = audio_latents.shape[2] // patch
        num_video = video.grid.t
        positions = audio_positions(
            num_audio, alignment=alignment, num_video_latents=num_video, device=audio_latents.device
        )
        if audio_reference_latents is None:
            return positions
        if (
            not isinstance(audio_reference_latents, torch.Tensor)
            or audio_reference_latents.ndim != 3
            or audio_reference_latents.shape[-1] < patch
        ):
            got = (
                tuple(audio_reference_latents.shape)
                if isinstance(audio_reference_latents, torch.Tensor)
                else type(audio_reference_latents).__name__
            )
            raise ValueError(
                f"audio_reference_latents must be [B, C, La_ref] with La_ref >= {patch}; got {got}"
            )
        num_reference = audio_reference_latents.shape[-1] // patch
        references = audio_positions(
            num_reference,
            alignment=alignment,
            num_video_latents=num_video,
            clip_num_audio_tokens=num_audio,
            t_offset=-num_reference * temporal_ratio(num_video, num_audio),
            device=audio_latents.device,
        )
        return torch.cat([references, positions], dim=0)
