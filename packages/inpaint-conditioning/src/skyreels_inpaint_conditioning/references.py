"""In-context references (paper section 3.3, eqs. 8-9): pack, position, mask and later drop them.

Shape legend: B batch, C latent channels, t_i/h_i/w_i one reference's latent grid, T_r total reference
latent frames, H_r/W_r the common (padded) reference size, L_r reference tokens, L_v generated video
tokens, L_a generated audio tokens, A position axes.

Video: each reference latent (image ``t_i = 1`` or clip) is zero-padded at the bottom/right to one
spatial size, so its pixel (0, 0) stays at spatial index (0, 0) ("spatial indices are preserved"), and
the references are concatenated along time -> ``Z_cond [B, C, T_r, H_r, W_r]``. After patching, the
token sequence ``[Z_cond; Z_video]`` (eq. 8) gets positions from ``skyreels_av_rope``: each reference
its own run of negative temporal indices ending at -1 (eq. 9), the video ``t = 0 .. T-1``. Reference
tokens never enter the loss; padding-only tokens are masked as attention keys; after the transformer,
``generated`` (a slice) drops the reference tokens again.

Audio: reference latents ``[B, C, L_i]`` are concatenated along time and prepended to the generated
audio tokens. The paper gives no audio positions; here the references continue the generated audio's
own time axis backwards (token j of N reference tokens sits at ``(j - N) * step``, ``step`` = spacing
of the generated audio positions), the audio analogue of eq. 9 under any alignment policy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import Tensor

from skyreels_av_rope import reference_positions, video_grid_positions
from skyreels_inpaint_conditioning.errors import ReferencePackingError

__all__ = ["PackedAudioReferences", "PackedVideoReferences", "pack_audio_references", "pack_video_references"]


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


@dataclass(frozen=True, kw_only=True, eq=False)
class PackedVideoReferences:
    """Video references packed for eq. 8, plus what attention, loss and output need.

    Attributes:
        latents: ``Z_cond [B, C, T_r, H_r, W_r]``, zeros in the padding.
        valid_mask: bool ``[B, 1, T_r, H_r, W_r]``, True on real reference cells.
        grids: post-patch ``(t, h, w)`` of each reference (its padded size).
        patch_size: ``(p_t, p_h, p_w)`` of the video patch embedding.
        positions: float32 ``[L_r + L_v, 3]`` ``(t, h, w)``; references first, then the video grid.
        key_valid: bool ``[B, L_r + L_v]``; False for reference tokens made only of padding.
        loss_mask: float32 ``[B, L_r + L_v]``; 0 on every reference token (and its padding), 1 on video.
        generated: ``slice(L_r, L_r + L_v)``: the generated video tokens of the joint sequence.
    """

    latents: Tensor
    valid_mask: Tensor
    grids: tuple[tuple[int, int, int], ...]
    patch_size: tuple[int, int, int]
    positions: Tensor
    key_valid: Tensor
    loss_mask: Tensor
    generated: slice

    @property
    def num_reference_tokens(self) -> int:
        """``L_r``."""
        return self.generated.start

    @property
    def num_video_tokens(self) -> int:
        """``L_v``."""
        return self.generated.stop - self.generated.start

    @property
    def generated_index(self) -> Tensor:
        """Long ``[L_v]``: indices of the generated tokens in the joint sequence."""
        return torch.arange(self.generated.start, self.generated.stop, device=self.positions.device)

    def concat_input(self) -> Tensor:
        """``Concat(Z, Z, valid) -> [B, 2C + 1, T_r, H_r, W_r]`` for the video patch embedding of eq. 7.

        A reference is a clean, fully known latent: it fills V and I, and M is 1 on real cells (0 on
        padding), so the same patch embedding serves references and the generated video.
        """
        valid = self.valid_mask.to(self.latents.dtype)
        return torch.cat([self.latents, self.latents, valid], dim=1)

    def drop_references(self, tokens: Tensor) -> Tensor:
        """``[B, L_r + L_v, ...] -> [B, L_v, ...]``: keep the generated video tokens."""
        expected = self.generated.stop
        if tokens.ndim < 2 or tokens.shape[1] != expected:
            raise ReferencePackingError(
                f"tokens: expected [B, {expected}, ...] (references + video), got {tuple(tokens.shape)}"
            )
        return tokens[:, self.generated]


def _check_patch(patch_size: tuple[int, int, int]) -> tuple[int, int, int]:
    if (
        not isinstance(patch_size, tuple)
        or len(patch_size) != 3
        or any(isinstance(p, bool) or not isinstance(p, int) or p < 1 for p in patch_size)
    ):
        raise ReferencePackingError(
            f"patch_size: expected (p_t, p_h, p_w) of positive ints, got {patch_size!r}"
        )
    return patch_size


def pack_video_references(
    references: Sequence[Tensor],
    *,
    video_grid: tuple[int, int, int],
    patch_size: tuple[int, int, int] = (1, 2, 2),
    spatial_size: tuple[int, int] | None = None,
) -> PackedVideoReferences:
    """Pad references to one spatial size, concatenate along time, and build positions and masks.

    Args:
        references: N latents ``[B, C, t_i, h_i, w_i]`` (VAE latents of images or clips), in the order
            the prompt refers to them; ``t_i`` divisible by ``p_t``.
        video_grid: latent ``(T, h, w)`` of the generated video, divisible by the patch size.
        patch_size: the video patch embedding's ``(p_t, p_h, p_w)`` (HunyuanVideo: (1, 2, 2)).
        spatial_size: latent ``(H_r, W_r)`` to pad to; default: the largest reference, rounded up
            to the patch size. Must be a multiple of the patch and at least every reference's size.
    """
    pt, ph, pw = _check_patch(patch_size)
    if isinstance(references, Tensor) or not isinstance(references, Sequence) or len(references) == 0:
        raise ReferencePackingError("references: expected a non-empty sequence of [B, C, t, h, w] tensors")
    first = references[0]
    for n, ref in enumerate(references):
        if not isinstance(ref, Tensor) or ref.ndim != 5:
            shape = tuple(ref.shape) if isinstance(ref, Tensor) else type(ref).__name__
            raise ReferencePackingError(f"references[{n}]: expected shape [B, C, t, h, w], got {shape}")
        if ref.shape[:2] != first.shape[:2]:
            raise ReferencePackingError(
                f"references[{n}]: expected batch and channels {tuple(first.shape[:2])} like references[0], "
                f"got {tuple(ref.shape[:2])}"
            )
        if ref.dtype != first.dtype or ref.device != first.device:
            raise ReferencePackingError(
                f"references[{n}]: expected dtype {first.dtype} on {first.device} like references[0], "
                f"got {ref.dtype} on {ref.device}"
            )
        if ref.shape[2] % pt:
            raise ReferencePackingError(
                f"references[{n}]: expected t divisible by the temporal patch {pt}, got t={ref.shape[2]}"
            )
    if len(video_grid) != 3 or any(v < 1 or v % p for v, p in zip(video_grid, (pt, ph, pw))):
        raise ReferencePackingError(
            f"video_grid: expected latent (T, h, w) divisible by the patch {patch_size}, got {video_grid!r}"
        )
    if spatial_size is None:
        spatial_size = (
            _round_up(max(r.shape[3] for r in references), ph),
            _round_up(max(r.shape[4] for r in references), pw),
        )
    height, width = spatial_size
    if height % ph or width % pw:
        raise ReferencePackingError(
            f"spatial_size: expected a multiple of the patch ({ph}, {pw}), got {spatial_size}"
        )
    padded, valid = [], []
    for n, ref in enumerate(references):
        h_i, w_i = ref.shape[3:]
        if h_i > height or w_i > width:
            raise ReferencePackingError(
                f"references[{n}]: latent size ({h_i}, {w_i}) does not fit spatial_size {tuple(spatial_size)}"
            )
        # Pad bottom/right only: spatial indices of real content are preserved (paper 3.3).
        padded.append(F.pad(ref, (0, width - w_i, 0, height - h_i)))
        cells = torch.zeros(ref.shape[0], 1, ref.shape[2], height, width, dtype=torch.bool, device=ref.device)
        cells[:, :, :, :h_i, :w_i] = True
        valid.append(cells)
    latents = torch.cat(padded, dim=2)
    valid_mask = torch.cat(valid, dim=2)

    grids = tuple((r.shape[2] // pt, height // ph, width // pw) for r in references)
    ref_positions = reference_positions(grids, device=latents.device)
    t, h, w = video_grid
    vid_positions = video_grid_positions(t // pt, h // ph, w // pw, device=latents.device)
    num_ref, num_vid = ref_positions.shape[0], vid_positions.shape[0]

    # A token is a real key if any latent cell of its patch is real content.
    ref_token_valid = rearrange(
        valid_mask, "b c (t p) (h q) (w r) -> b (t h w) (c p q r)", p=pt, q=ph, r=pw
    ).any(dim=-1)
    batch = latents.shape[0]
    key_valid = torch.cat(
        [ref_token_valid, torch.ones(batch, num_vid, dtype=torch.bool, device=latents.device)], 1
    )
    loss_mask = torch.cat(
        [
            torch.zeros(batch, num_ref, device=latents.device),
            torch.ones(batch, num_vid, device=latents.device),
        ],
        1,
    )
    return PackedVideoReferences(
        latents=latents,
        valid_mask=valid_mask,
        grids=grids,
        patch_size=patch_size,
        positions=torch.cat([ref_positions, vid_positions], dim=0),
        key_valid=key_valid,
        loss_mask=loss_mask,
        generated=slice(num_ref, num_ref + num_vid),
    )


@dataclass(frozen=True, kw_only=True, eq=False)
class PackedAudioReferences:
    """Audio references prepended to the generated audio tokens.

    Attributes:
        latents: ``[B, C, N]`` the references concatenated along time (N = sum of their lengths).
        lengths: each reference's length ``L_i``.
        positions: float32 ``[N + L_a, A]``: references (negative times), then the generated audio's.
        key_valid: bool ``[B, N + L_a]``; all True (audio references need no padding).
        loss_mask: float32 ``[B, N + L_a]``; 0 on references, 1 on generated audio.
        generated: ``slice(N, N + L_a)``.
    """

    latents: Tensor
    lengths: tuple[int, ...]
    positions: Tensor
    key_valid: Tensor
    loss_mask: Tensor
    generated: slice

    @property
    def num_reference_tokens(self) -> int:
        """``N``."""
        return self.generated.start

    def drop_references(self, tokens: Tensor) -> Tensor:
        """``[B, N + L_a, ...] -> [B, L_a, ...]``."""
        if tokens.ndim < 2 or tokens.shape[1] != self.generated.stop:
            raise ReferencePackingError(
                f"tokens: expected [B, {self.generated.stop}, ...] (references + audio), "
                f"got {tuple(tokens.shape)}"
            )
        return tokens[:, self.generated]


def pack_audio_references(
    references: Sequence[Tensor], *, generated_positions: Tensor
) -> PackedAudioReferences:
    """Concatenate audio reference latents and give them positions before the generated audio.

    Args:
        references: M latents ``[B, C, L_i]`` from the audio VAE.
        generated_positions: ``[L_a, A]`` positions of the generated audio tokens (from
            ``skyreels_av_rope.audio_positions`` under any policy); evenly spaced in time, ``L_a >= 2``.
            Column 0 is time; other columns are copied from the first generated token.
    """
    if isinstance(references, Tensor) or not isinstance(references, Sequence) or len(references) == 0:
        raise ReferencePackingError("references: expected a non-empty sequence of [B, C, L] tensors")
    first = references[0]
    for n, ref in enumerate(references):
        if not isinstance(ref, Tensor) or ref.ndim != 3:
            shape = tuple(ref.shape) if isinstance(ref, Tensor) else type(ref).__name__
            raise ReferencePackingError(f"references[{n}]: expected shape [B, C, L], got {shape}")
        if ref.shape[:2] != first.shape[:2] or ref.dtype != first.dtype or ref.device != first.device:
            raise ReferencePackingError(
                f"references[{n}]: expected batch/channels {tuple(first.shape[:2])}, "
                f"{first.dtype} on {first.device} "
                f"like references[0], got {tuple(ref.shape[:2])}, {ref.dtype} on {ref.device}"
            )
    gen = generated_positions
    if not isinstance(gen, Tensor) or gen.ndim != 2 or gen.shape[0] < 2:
        shape = tuple(gen.shape) if isinstance(gen, Tensor) else type(gen).__name__
        raise ReferencePackingError(f"generated_positions: expected [L_a >= 2, A], got {shape}")
    step = gen[1, 0] - gen[0, 0]
    spacing = gen[1:, 0] - gen[:-1, 0]
    if not bool(step > 0) or not torch.allclose(spacing, step.expand_as(spacing), rtol=1e-4, atol=1e-6):
        raise ReferencePackingError("generated_positions: expected evenly increasing times in column 0")
    latents = torch.cat(list(references), dim=2)
    num_ref, num_gen = latents.shape[2], gen.shape[0]
    # Continue the generated audio's time axis backwards (the audio analogue of eq. 9).
    ref_positions = gen[:1].expand(num_ref, -1).clone()
    offsets = torch.arange(-num_ref, 0, device=gen.device, dtype=torch.float64)
    ref_positions[:, 0] = (gen[0, 0].double() + offsets * step.double()).to(gen.dtype)
    batch, device = latents.shape[0], latents.device
    return PackedAudioReferences(
        latents=latents,
        lengths=tuple(int(r.shape[2]) for r in references),
        positions=torch.cat([ref_positions, gen], dim=0),
        key_valid=torch.ones(batch, num_ref + num_gen, dtype=torch.bool, device=device),
        loss_mask=torch.cat(
            [torch.zeros(batch, num_ref, device=device), torch.ones(batch, num_gen, device=device)], 1
        ),
        generated=slice(num_ref, num_ref + num_gen),
    )
