"""Configuration of the two-branch joint audio-video transformer (paper section 3.1)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from skyreels_av_rope import AudioTimeAlignment, RotaryConfig, audio_rotary_config
from skyreels_mmdit_blocks.av_cross_attention import AVExchangeOrder
from skyreels_mmdit_blocks.branch_config import MMDiTBranchConfig, Modality

__all__ = ["JointAudioVideoTransformerConfig", "uniform_depth_mapping"]


def uniform_depth_mapping(num_video_blocks: int, num_audio_blocks: int) -> tuple[tuple[int, int], ...]:
    """``min(Nv, Na)`` exchange points spread evenly over both depths; ``(i, i)`` for equal depths.

    Exchange ``k`` follows video block ``ceil((k+1)·Nv/K) - 1`` and audio block ``ceil((k+1)·Na/K) - 1``.
    """
    k_total = min(num_video_blocks, num_audio_blocks)
    return tuple(
        (
            math.ceil((k + 1) * num_video_blocks / k_total) - 1,
            math.ceil((k + 1) * num_audio_blocks / k_total) - 1,
        )
        for k in range(k_total)
    )


@dataclass(frozen=True, kw_only=True)
class JointAudioVideoTransformerConfig:
    """Video and audio branches of equal width D run in lockstep with eq. 5's exchange.

    Attributes:
        video, audio: the branch configs (same width, heads, text width and pooled-text width).
        exchange_order: paper order (audio reads video, then video reads the updated audio) or parallel.
        depth_mapping: ``(video_block, audio_block)`` pairs, strictly increasing in both; the exchange
            runs inside that pair of blocks, between attention and feed-forward. None: one exchange per
            depth for equal depths, else ``uniform_depth_mapping``.
        audio_alignment: how audio positions relate to video time (skyreels-av-rope). ``RATIO`` (the
            paper) and ``TEMPORAL_CHANNELS_ONLY`` are computed from each clip; ``SECONDS`` needs
            explicit positions in ``forward``. The audio branch's ``rope`` must match the policy.
        av_rope: RoPE of the exchange, applied by time only; None = one time axis over the whole
            head dim with the video RoPE's theta.
        exchange_window: None (the paper): every audio token may read every video token in eq. 5 and
            back. A number w > 0 makes the exchange time-local: an audio token reads only the video
            tokens whose time is within w of its own (in video latent frames, the exchange's RoPE
            time), and a video token only the audio tokens within w of it
            (docs/decisions/0013-time-local-exchange.md).
    """

    video: MMDiTBranchConfig
    audio: MMDiTBranchConfig
    exchange_order: AVExchangeOrder = AVExchangeOrder.SEQUENTIAL
    depth_mapping: tuple[tuple[int, int], ...] | None = None
    audio_alignment: AudioTimeAlignment = AudioTimeAlignment.RATIO
    av_rope: RotaryConfig | None = None
    exchange_window: float | None = None

    def __post_init__(self) -> None:
        v, a = self.video, self.audio
        if not isinstance(v, MMDiTBranchConfig) or v.modality is not Modality.VIDEO:
            raise TypeError(f"video must be an MMDiTBranchConfig with modality VIDEO; got {v!r}")
        if not isinstance(a, MMDiTBranchConfig) or a.modality is not Modality.AUDIO:
            raise TypeError(f"audio must be an MMDiTBranchConfig with modality AUDIO; got {a!r}")
        if not isinstance(self.exchange_order, AVExchangeOrder):
            raise TypeError(f"exchange_order must be an AVExchangeOrder; got {self.exchange_order!r}")
        if not isinstance(self.audio_alignment, AudioTimeAlignment):
            raise TypeError(f"audio_alignment must be an AudioTimeAlignment; got {self.audio_alignment!r}")
        for name in ("dim", "num_heads", "text_dim", "pooled_text_dim"):
            if getattr(v, name) != getattr(a, name):
                raise ValueError(
                    f"video.{name} and audio.{name} must be equal (paper 3.1: no projection between them); "
                    f"got {getattr(v, name)} and {getattr(a, name)}"
                )
        if self.audio_alignment is not AudioTimeAlignment.SECONDS:
            expected = audio_rotary_config(self.audio_alignment, v.rope)
            if a.rope != expected:
                raise ValueError(
                    f"audio.rope must be {expected} for audio_alignment={self.audio_alignment.name}; "
                    f"got {a.rope}"
                )
        if self.av_rope is not None and (
            not isinstance(self.av_rope, RotaryConfig) or self.av_rope.head_dim != v.head_dim
        ):
            raise ValueError(
                f"av_rope must be a RotaryConfig covering head dim {v.head_dim}; got {self.av_rope!r}"
            )
        window = self.exchange_window
        if window is not None and (
            isinstance(window, bool) or not isinstance(window, (int, float)) or not 0 < window < math.inf
        ):
            raise ValueError(f"exchange_window must be None or a finite number > 0; got {window!r}")
        pairs = self.exchange_pairs
        previous = (-1, -1)
        for pair in pairs:
            if (
                not isinstance(pair, tuple)
                or len(pair) != 2
                or not (previous[0] < pair[0] < v.num_blocks and previous[1] < pair[1] < a.num_blocks)
            ):
                raise ValueError(
                    "depth_mapping must be (video_block, audio_block) pairs, strictly increasing in both, in "
                    f"[0, {v.num_blocks}) x [0, {a.num_blocks}); got {self.depth_mapping!r}"
                )
            previous = pair

    @property
    def exchange_pairs(self) -> tuple[tuple[int, int], ...]:
        """The depth mapping actually used."""
        if self.depth_mapping is not None:
            return tuple(tuple(p) for p in self.depth_mapping)
        return uniform_depth_mapping(self.video.num_blocks, self.audio.num_blocks)

    @property
    def exchange_rope(self) -> RotaryConfig:
        """The exchange's RoPE (``av_rope`` or its default)."""
        return self.av_rope or RotaryConfig(axes_dims=(self.video.head_dim,), theta=self.video.rope.theta)
