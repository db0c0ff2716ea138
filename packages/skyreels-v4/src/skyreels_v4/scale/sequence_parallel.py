"""Ulysses sequence parallelism applied from outside to a built joint transformer (paper 3.1,
eqs. 3-5 and 8; issue 15; docs/scale-out.md).

``apply_sequence_parallel(model, group)`` changes a ``JointAudioVideoTransformer`` in place, the way
torchtitan's ``parallelize`` does, so the model code in skyreels-mmdit-blocks stays single-device:

- every video block's joint self-attention kernel (eq. 3: ``[video; text]``) becomes a Ulysses
  all-to-all around the original kernel (``UlyssesJointAttention``); with video sparse attention in the
  base model (``video_attention=vsa``) the block's attention stage instead moves q, k, v and VSA's
  per-token gate to full-sequence / head-chunk layout, runs VSA on this rank's heads (its block
  selection is per head, so head chunks are independent) and moves the result back
  (``ulysses_vsa_attend``);
- every exchange's audio->video cross-attention kernel (eq. 5, audio queries reading video keys)
  becomes ``ulysses_cross_attention`` (``UlyssesVideoKeysAttention``); the video->audio direction
  (video queries on the shard, replicated audio keys) and the text cross-attention (eq. 4) need no
  communication and keep their kernels;
- ``model.forward`` becomes ``sequence_parallel_forward``: it embeds as before, reorders the video
  tokens to ``[generated ; references]`` (eq. 8's in-context tokens go last so that the generated
  ones, the only keys eq. 5 reads, are a prefix), shards them (zero padding at the global end),
  shards the RoPE tables built from global positions the same way, runs the blocks on the shard,
  applies the final layer on the shard and all-gathers only its small output (``C·pt·ph·pw``
  features per token instead of D).

Text and audio tokens are replicated on every rank: 256-512 text tokens and ~650 audio latents for
15 s against ~10^5-10^6 video tokens, so sharding them would save little memory and add two
collectives per block. The parameters that only see replicated tokens get, per rank, a gradient of
the replicated loss; under FSDP's mean reduction over ``dp_shard x sp`` every rank computes the loss
on the (replicated) gathered output undivided, and the mean of the per-rank gradients is the
single-process gradient (docs/sequence-parallel.md, "the loss"). Without FSDP, sum the gradients over
the group and divide by its size.

Masks: text padding is the replicated tokens' key-padding mask; the shard padding and any reference
tokens masked by ``video_key_mask`` are folded into one key-length when the valid keys form a prefix
(every backend runs it), else a dense key mask over the gathered sequence (``attention_fn``). The
time-local eq. 5 (``exchange_window``) builds its window masks from the global token times, as the
single-device model does, and lays them out like the sharded tokens: the audio queries get a dense mask
over the gathered video keys, each rank's video queries the rows of its own tokens.
Modulation vectors are per sample, so they need no change.

Shape legend: B batch, R reference tokens, L generated video tokens, N = R + L, P group size,
Ls = ceil(N / P), Lp = P·Ls, D width, H heads.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from skyreels_attention import AttentionKernel, DenseMask, KeyPaddingMask, attention
from skyreels_attention.sequence_parallel import (
    all_gather,
    all_to_all,
    gather_sequence,
    shard_length,
    shard_sequence,
    ulysses_attention,
    ulysses_cross_attention,
)
from skyreels_av_rope import cross_modal_time_rope
from skyreels_mmdit_blocks import (
    JointAudioVideoTransformer,
    JointOutput,
    key_mask_from_bool,
    time_window_mask,
    unpatchify_video,
)
from skyreels_mmdit_blocks.block_context import BlockContext, BlockState, Rotary
from skyreels_refiner_vsa import GridLayout, VideoRefiner, VideoSparseAttention, attention_stage_with

__all__ = [
    "ShardedKeys",
    "UlyssesJointAttention",
    "UlyssesVideoKeysAttention",
    "apply_sequence_parallel",
    "refiner_sequence_parallel_forward",
    "sequence_parallel_forward",
    "sequence_parallel_group",
    "ulysses_vsa_attend",
]


@dataclass(frozen=True, eq=False)
class ShardedKeys:
    """The mask the sequence-parallel forward passes through the blocks in place of an attention mask.

    local_len: Ls, the sharded tokens at the front of each local query/key tensor.
    valid_len: global count of valid sharded keys when they are a prefix of the sharded order.
    valid: bool ``[B, Lp]`` validity of the sharded keys (global order) when they are not a prefix.
    text_lengths: ``[B]`` valid replicated (text) keys; None = all of them (joint self-attention only).
    dense: bool ``[B or 1, 1, Lq, Lp]``: which sharded keys each (replicated) query may read, for eq. 5's
        time-local form (``exchange_window``); it replaces ``valid_len`` / ``valid`` (cross-attention only).
    """

    local_len: int
    valid_len: int | None
    valid: Tensor | None
    text_lengths: Tensor | None = None
    dense: Tensor | None = None


def _dense_attention(
    q: Tensor, k: Tensor, v: Tensor, *, mask: object, scale: float | None, keys: Tensor, backend: str | None
) -> Tensor:
    """Local attention for ``ulysses_*`` with an explicit bool mask over the keys in the order ulysses
    builds them when ``global_seq_len`` is None, ``[gathered sharded ; replicated]``: ``keys`` is
    ``[B, Lk]`` (per key) or ``[B or 1, 1, Lq, Lk]`` (per query and key)."""
    del mask  # ulysses passes None here: global_seq_len is None and no replicated_mask is given
    dense = keys if keys.ndim == 4 else keys[:, None, None, :]
    return attention(q, k, v, mask=DenseMask(dense), scale=scale, backend=backend)


class UlyssesJointAttention(nn.Module):
    """Drop-in for a video block's joint self-attention kernel: q/k/v ``[B, Ls + Lt, H, Dh]`` (this
    rank's shard, then the replicated text tokens) -> ``[B, Ls + Lt, H, Dh]``."""

    def __init__(self, group: dist.ProcessGroup, inner: AttentionKernel) -> None:
        super().__init__()
        if not isinstance(inner, AttentionKernel):
            raise TypeError(f"inner: expected an AttentionKernel, got {type(inner).__name__}")
        self.group = group
        self.inner = inner  # kept for its backend choice (and so the module can be unwrapped)

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, *, mask: object = None, scale: float | None = None
    ) -> Tensor:
        if not isinstance(mask, ShardedKeys):
            raise RuntimeError(
                "UlyssesJointAttention: mask must be the ShardedKeys of sequence_parallel_forward; got "
                f"{type(mask).__name__} (a sequence-parallel block was called outside the model's forward)"
            )
        backend = self.inner.config.backend
        n = mask.local_len
        replicated = {"replicated_q": q[:, n:], "replicated_k": k[:, n:], "replicated_v": v[:, n:]}
        if q.shape[1] == n:  # no replicated tokens at all
            replicated = {}
        if mask.valid is None:
            text = None if mask.text_lengths is None or not replicated else KeyPaddingMask(mask.text_lengths)
            out = ulysses_attention(
                q[:, :n], k[:, :n], v[:, :n], group=self.group, global_seq_len=mask.valid_len,
                replicated_mask=text, scale=scale, backend=backend, **replicated,
            )  # fmt: skip
        else:
            keys = mask.valid
            if replicated:
                text_len = q.shape[1] - n
                text_keys = torch.ones(keys.shape[0], text_len, dtype=torch.bool, device=keys.device)
                if mask.text_lengths is not None:
                    text_keys = torch.arange(text_len, device=keys.device)[None] < mask.text_lengths[:, None]
                keys = torch.cat([keys, text_keys], dim=1)
            fn = partial(_dense_attention, keys=keys, backend=backend)
            out = ulysses_attention(
                q[:, :n], k[:, :n], v[:, :n], group=self.group, scale=scale, attention_fn=fn, **replicated
            )
        if out.replicated_out is None:
            return out.out
        return torch.cat([out.out, out.replicated_out], dim=1)


class UlyssesVideoKeysAttention(nn.Module):
    """Drop-in for the kernel of eq. 5's audio->video direction: replicated audio queries
    ``[B, La, H, Dh]`` read the sharded video keys ``[B, Ls, H, Dh]``."""

    def __init__(self, group: dist.ProcessGroup, inner: AttentionKernel) -> None:
        super().__init__()
        if not isinstance(inner, AttentionKernel):
            raise TypeError(f"inner: expected an AttentionKernel, got {type(inner).__name__}")
        self.group = group
        self.inner = inner

    def forward(
        self, q: Tensor, k: Tensor, v: Tensor, *, mask: object = None, scale: float | None = None
    ) -> Tensor:
        if not isinstance(mask, ShardedKeys):
            raise RuntimeError(
                "UlyssesVideoKeysAttention: mask must be the ShardedKeys of sequence_parallel_forward; "
                f"got {type(mask).__name__}"
            )
        backend = self.inner.config.backend
        if mask.dense is not None:
            fn = partial(_dense_attention, keys=mask.dense, backend=backend)
            return ulysses_cross_attention(q, k, v, group=self.group, scale=scale, attention_fn=fn)
        if mask.valid is None:
            return ulysses_cross_attention(
                q, k, v, group=self.group, global_seq_len=mask.valid_len, scale=scale, backend=backend
            )
        fn = partial(_dense_attention, keys=mask.valid, backend=backend)
        return ulysses_cross_attention(q, k, v, group=self.group, scale=scale, attention_fn=fn)


def _ulysses_vsa_stage(
    block: nn.Module,
    vsa: VideoSparseAttention,
    layout: object,
    group: dist.ProcessGroup,
    latent: Tensor,
    text: Tensor,
    ctx: BlockContext,
) -> BlockState:
    """A VSA video block's attention stage on a sequence shard (``layout()``: this forward's grid)."""
    if not isinstance(ctx.joint_mask, ShardedKeys):
        raise RuntimeError(
            "a sequence-parallel VSA block needs the ShardedKeys of sequence_parallel_forward; got "
            f"{type(ctx.joint_mask).__name__} (the block was called outside the model's forward)"
        )
    attend = partial(ulysses_vsa_attend, vsa=vsa, layout=layout(), keys=ctx.joint_mask, group=group)
    return attention_stage_with(block, attend, latent, text, ctx)


def ulysses_vsa_attend(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    normed: Tensor,
    *,
    vsa: VideoSparseAttention,
    layout: GridLayout,
    keys: ShardedKeys,
    group: dist.ProcessGroup,
) -> Tensor:
    """Eq. 3's joint self-attention with VSA on the grid queries, for a sequence shard
    (``skyreels_refiner_vsa.JointAttend``).

    ``q, k, v [B, Ls + Lt, H, Dh]``: this rank's shard of the video tokens in the sharded order
    ``[grid (N) ; references (R) ; padding]``, then the replicated text tokens; ``normed [B, Ls, D]``:
    the shard's normed hidden states, whose gate VSA computes per token. One all-to-all moves q, k, v
    and the gate to ``[B, Lp, H / P, Dh]``; VSA runs the grid on this rank's heads, with the references
    and the text as its dense tokens (masked keys moved last and cut by a length, as on one device);
    a second all-to-all moves the video rows back and an all-gather joins the text rows' heads.
    """
    size, rank = dist.get_world_size(group), dist.get_rank(group)
    n_local = keys.local_len
    batch, _, heads, _ = q.shape
    local_heads = heads // size
    gate = vsa.gate_values(normed[:, :n_local]).to(q.dtype)
    stacked = torch.stack((q[:, :n_local], k[:, :n_local], v[:, :n_local], gate))
    q_all, k_all, v_all, gate_all = all_to_all(stacked, group=group, scatter_dim=3, gather_dim=2).unbind(0)
    refs, grid = layout.num_reference, layout.grid
    n = grid[0] * grid[1] * grid[2]
    padded = q_all.shape[1]
    if n + refs > padded:
        raise ValueError(
            f"VSA layout: {refs} references + grid {grid} exceed the {padded} sharded video tokens"
        )
    # Validity of the sharded keys (global order): grid keys must all be valid, as on one device.
    if keys.valid is not None:
        valid = keys.valid.to(q.device)
    else:
        positions = torch.arange(padded, device=q.device)[None]
        valid = (positions < (padded if keys.valid_len is None else keys.valid_len)).expand(batch, padded)
    if not bool(valid[:, :n].all()):
        raise ValueError("the joint mask masks grid keys; VSA can mask only reference and text keys")
    chunk = slice(rank * local_heads, (rank + 1) * local_heads)
    text_q, text_k, text_v = (x[:, n_local:, chunk] for x in (q, k, v))
    text_len = text_q.shape[1]
    text_valid = torch.ones(batch, text_len, dtype=torch.bool, device=q.device)
    if keys.text_lengths is not None:
        text_valid = torch.arange(text_len, device=q.device)[None] < keys.text_lengths.to(q.device)[:, None]
    pairs = ((q_all, text_q), (k_all, text_k), (v_all, text_v))
    dense_q, dense_k, dense_v = (torch.cat([x[:, n : n + refs], t], dim=1) for x, t in pairs)
    keep = torch.cat([valid[:, n : n + refs], text_valid], dim=1)
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)[:, :, None, None]
    dense_k = dense_k.gather(1, order.expand_as(dense_k))
    dense_v = dense_v.gather(1, order.expand_as(dense_v))
    has_dense = dense_q.shape[1] > 0
    out = vsa.attend(
        q_all[:, :n], k_all[:, :n], v_all[:, :n], grid=grid, gate=gate_all[:, :n],
        text_q=dense_q if has_dense else None, text_k=dense_k if has_dense else None,
        text_v=dense_v if has_dense else None, text_valid_lengths=keep.sum(dim=1) if has_dense else None,
    )  # fmt: skip
    rows = [out.video]
    if refs:
        rows.append(out.text[:, :refs])
    if padded > n + refs:  # padding rows: zero, so they pass no gradient
        rows.append(out.video.new_zeros(batch, padded - n - refs, *out.video.shape[2:]))
    video_rows = all_to_all(torch.cat(rows, dim=1), group=group, scatter_dim=1, gather_dim=2)
    if not text_len:
        return video_rows
    return torch.cat([video_rows, all_gather(out.text[:, refs:], group=group, dim=2)], dim=1)


def sequence_parallel_group(model: nn.Module) -> dist.ProcessGroup | None:
    """The group ``apply_sequence_parallel`` gave ``model``, or None."""
    return getattr(model, "_sequence_parallel_group", None)


def apply_sequence_parallel(
    model: JointAudioVideoTransformer | VideoRefiner, group: dist.ProcessGroup
) -> JointAudioVideoTransformer | VideoRefiner:
    """Shard the video tokens of ``model`` over ``group`` (Ulysses), in place; see the module docstring.

    ``model`` is the joint transformer or the refiner of paper 4.5 (``VideoRefiner``: VSA in every
    block, ``refiner_sequence_parallel_forward``). Every rank of ``group`` must call the model with the
    same inputs (the same batch). A group of size 1 leaves the model unchanged. The state dict is
    unchanged (the swapped kernels hold no weights).
    """
    if not isinstance(model, (JointAudioVideoTransformer, VideoRefiner)):
        raise TypeError(
            f"model must be a JointAudioVideoTransformer or a VideoRefiner; got {type(model).__name__}"
        )
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError(
            "apply_sequence_parallel needs torch.distributed initialised (torchrun / Lightning)"
        )
    if not isinstance(group, dist.ProcessGroup):
        raise TypeError(
            f"group must be a torch.distributed.ProcessGroup (from a mesh: mesh['sp'].get_group()); "
            f"got {type(group).__name__}"
        )
    if sequence_parallel_group(model) is not None:
        raise ValueError("model: sequence parallelism is already applied")
    size = dist.get_world_size(group)
    refiner = isinstance(model, VideoRefiner)
    heads = model.config.branch.num_heads if refiner else model.config.video.num_heads
    if heads % size:
        raise ValueError(
            f"sp group size {size} must divide the video heads ({heads}): Ulysses gives every rank "
            f"heads / sp of them"
        )
    if size == 1:
        return model
    # VSA blocks (the refiner's; the base model's with skyreels_v4.model.video_sparse) get the sharded
    # VSA stage as their own attention stage, so that FSDP2's registered stage methods wrap it.
    if refiner:
        _install_sharded_vsa_stages(
            model.branch.blocks, model.vsa, partial(getattr, model, "grid_layout"), group
        )
        model._sequence_parallel_group = group
        model.forward = types.MethodType(refiner_sequence_parallel_forward, model)
        return model
    if hasattr(model, "video_vsa"):
        from skyreels_v4.model.video_sparse import video_sparse_layout

        _install_sharded_vsa_stages(
            model.video.blocks, model.video_vsa, partial(video_sparse_layout, model), group
        )
    else:
        for block in model.video.blocks:
            block.attention = UlyssesJointAttention(group, block.attention)
    for exchange in model.exchanges:
        direction = exchange.audio_from_video
        direction.attention = UlyssesVideoKeysAttention(group, direction.attention)
    model._sequence_parallel_group = group
    model.forward = types.MethodType(sequence_parallel_forward, model)
    return model


def _install_sharded_vsa_stages(
    blocks: nn.ModuleList, vsas: nn.ModuleList, layout: Callable[[], GridLayout], group: dist.ProcessGroup
) -> None:
    for block, vsa in zip(blocks, vsas, strict=True):
        block.attention_stage = partial(_ulysses_vsa_stage, block, vsa, layout, group)


def _shard_rows(x: Tensor, group: dist.ProcessGroup) -> Tensor:
    """Shard a ``[.., N, d]`` table (RoPE cos/sin) along its row axis like the tokens."""
    return shard_sequence(x, group=group, dim=x.ndim - 2)


def _valid_keys(valid: Tensor, padded: int) -> tuple[int | None, Tensor | None]:
    """bool ``[B, N]`` -> (prefix length, None) when every row is the same prefix, else (None, [B, Lp])."""
    lengths = valid.sum(dim=1)
    prefix = torch.arange(valid.shape[1], device=valid.device)[None, :] < lengths[:, None]
    if torch.equal(prefix, valid) and bool((lengths == lengths[0]).all()) and int(lengths[0]) > 0:
        return int(lengths[0]), None
    return None, nn.functional.pad(valid, (0, padded - valid.shape[1]))


@dataclass(frozen=True, eq=False)
class _ShardedVideo:
    """A video branch's tokens on this rank, in the sharded order ``[generated ; references]``."""

    tokens: Tensor  # [B, Ls, D]: this rank's shard (zero padding at the global end)
    context: BlockContext  # the branch context with sharded RoPE rows and ShardedKeys as joint mask
    keys: Tensor | None  # bool [B, N] key validity in the sharded order; None = every key valid
    padded: int  # Lp = P·Ls
    generated: int  # L: the generated (grid) tokens, a prefix of the sharded order


def _shard_video(video: object, key_mask: Tensor | None, group: dist.ProcessGroup) -> _ShardedVideo:
    """Shard an embedded video branch's tokens (``BranchInputs``) over ``group``: the generated tokens
    first (eq. 8's references last), the RoPE rows likewise, and the joint self-attention's keys
    (reference masking, shard padding, text padding) as ``ShardedKeys``. Shared by the joint model and
    the refiner."""
    rv = video.num_reference
    num_tokens = video.latent.shape[1]
    size = dist.get_world_size(group)
    padded = size * shard_length(num_tokens, size)
    order = torch.cat([torch.arange(rv, num_tokens), torch.arange(rv)]).to(video.latent.device)
    tokens = shard_sequence(video.latent.index_select(1, order), group=group)
    rotary = video.context.rotary
    if rotary is not None:
        rotary = Rotary(*(_shard_rows(t.index_select(t.ndim - 2, order), group) for t in rotary))
    keys = None if key_mask is None else key_mask.index_select(1, order)
    if keys is None or bool(keys.all()):
        self_keys: tuple[int | None, Tensor | None] = (num_tokens, None)
    else:
        self_keys = _valid_keys(keys, padded)
    text_keys = video.context.text_mask
    context = replace(
        video.context,
        rotary=rotary,
        joint_mask=ShardedKeys(
            tokens.shape[1], *self_keys, text_lengths=None if text_keys is None else text_keys.valid_lengths
        ),
    )
    return _ShardedVideo(tokens, context, keys, padded, num_tokens - rv)


def sequence_parallel_forward(
    self: JointAudioVideoTransformer,
    video_latents: Tensor,
    audio_latents: Tensor,
    *,
    timestep: Tensor,
    text_tokens: Tensor,
    text_mask: Tensor | None = None,
    pooled_text: Tensor | None = None,
    guidance: Tensor | None = None,
    audio_timestep: Tensor | None = None,
    video_reference_latents: Tensor | None = None,
    audio_reference_latents: Tensor | None = None,
    video_positions: Tensor | None = None,
    audio_positions: Tensor | None = None,
    video_key_mask: Tensor | None = None,
    audio_key_mask: Tensor | None = None,
) -> JointOutput:
    """``JointAudioVideoTransformer.forward`` with the video tokens sharded over the model's group.

    Same arguments and result (replicated on every rank) as the single-device forward.
    """
    group = sequence_parallel_group(self)
    if group is None:
        raise RuntimeError("sequence_parallel_forward: call apply_sequence_parallel(model, group) first")
    cfg = self.config
    for name, value in (("video_latents", video_latents), ("audio_latents", audio_latents)):
        if not isinstance(value, Tensor) or value.ndim == 0:
            raise TypeError(f"{name} must be a batched torch.Tensor; got {type(value).__name__}")
    if video_latents.shape[0] != audio_latents.shape[0]:
        raise ValueError(
            f"video_latents and audio_latents must have one batch size; got "
            f"{video_latents.shape[0]} and {audio_latents.shape[0]}"
        )
    if guidance is not None and not (cfg.video.guidance_embedding or cfg.audio.guidance_embedding):
        raise ValueError("guidance was given but neither branch has a guidance embedding")

    video = self.video.embed(
        video_latents, timestep=timestep, text_tokens=text_tokens, text_mask=text_mask,
        pooled_text=pooled_text, guidance=guidance if cfg.video.guidance_embedding else None,
        reference_latents=video_reference_latents, positions=video_positions, latent_key_mask=video_key_mask,
    )  # fmt: skip
    if audio_positions is None:
        audio_positions = self._audio_positions(video, audio_latents, audio_reference_latents)
    audio = self.audio.embed(
        audio_latents, timestep=timestep if audio_timestep is None else audio_timestep,
        text_tokens=text_tokens, text_mask=text_mask, pooled_text=pooled_text,
        guidance=guidance if cfg.audio.guidance_embedding else None,
        reference_latents=audio_reference_latents, positions=audio_positions, latent_key_mask=audio_key_mask,
    )  # fmt: skip
    rv, ra = video.num_reference, audio.num_reference
    video_time_rope, audio_time_rope = cross_modal_time_rope(
        video.positions[..., rv:, :], audio.positions[..., ra:, :], rope=self.exchange_rope
    )
    shard = _shard_video(video, video_key_mask, group)
    tokens, context, keys, padded, generated = (
        shard.tokens, shard.context, shard.keys, shard.padded, shard.generated
    )  # fmt: skip
    local_len = tokens.shape[1]
    # Eq. 5 reads generated video tokens only: the references (and the padding) are never its keys.
    audio_exchange_keys: KeyPaddingMask | DenseMask | None
    if cfg.exchange_window is None:
        if keys is None or bool(keys[:, :generated].all()):
            exchange_keys = ShardedKeys(local_len, generated, None)
        else:
            exchange_keys = ShardedKeys(local_len, *_valid_keys(keys[:, :generated], padded))
        audio_exchange_keys = None
        if audio_key_mask is not None:
            audio_exchange_keys = key_mask_from_bool(audio_key_mask[:, ra:], name="audio_key_mask")
    else:
        exchange_keys, audio_exchange_keys = _time_window_masks(
            video.positions[..., rv:, 0],
            audio.positions[..., ra:, 0],
            window=float(cfg.exchange_window),
            video_keys=None if keys is None else keys[:, :generated],
            audio_keys=None if audio_key_mask is None else audio_key_mask[:, ra:],
            padded=padded,
            group=group,
        )
    video_time_rope = Rotary(
        *(
            _shard_rows(nn.functional.pad(t, (0, 0, 0, rv)), group)  # zero rows for the references
            for t in video_time_rope
        )
    )
    is_generated = shard_sequence(torch.arange(padded, device=tokens.device) < generated, group=group, dim=0)
    step = _Step(
        context, video_time_rope, exchange_keys, is_generated if rv else None, Rotary(*audio_time_rope)
    )

    v_latent, v_text, a_latent, a_text = tokens, video.text, audio.latent, audio.text
    next_video = next_audio = 0
    for k, (video_index, audio_index) in enumerate(cfg.exchange_pairs):
        for i in range(next_video, video_index):
            v_latent, v_text = self.video.run_block(i, v_latent, v_text, context)
        for i in range(next_audio, audio_index):
            a_latent, a_text = self.audio.run_block(i, a_latent, a_text, audio.context)
        args = (self, k, v_latent, v_text, a_latent, a_text, step, audio, audio_exchange_keys)
        if (
            video_index in self.video.checkpointed_blocks or audio_index in self.audio.checkpointed_blocks
        ) and torch.is_grad_enabled():
            v_latent, v_text, a_latent, a_text = checkpoint(_exchange_step, *args, use_reentrant=False)
        else:
            v_latent, v_text, a_latent, a_text = _exchange_step(*args)
        next_video, next_audio = video_index + 1, audio_index + 1
    for i in range(next_video, cfg.video.num_blocks):
        v_latent, v_text = self.video.run_block(i, v_latent, v_text, context)
    for i in range(next_audio, cfg.audio.num_blocks):
        a_latent, a_text = self.audio.run_block(i, a_latent, a_text, audio.context)

    features = self.video.final_layer(v_latent, video.context.conditioning)  # [B, Ls, C·pt·ph·pw]
    features = gather_sequence(features, group=group, global_seq_len=generated)  # generated come first
    return JointOutput(
        unpatchify_video(features, video.grid, cfg.video.patch_size), self.audio.finish(a_latent, audio)
    )


def refiner_sequence_parallel_forward(
    self: VideoRefiner,
    refiner_input: Tensor,
    *,
    timestep: Tensor,
    text_tokens: Tensor,
    text_mask: Tensor | None = None,
    pooled_text: Tensor | None = None,
    guidance: Tensor | None = None,
    reference_latents: Tensor | None = None,
    positions: Tensor | None = None,
    latent_key_mask: Tensor | None = None,
) -> Tensor:
    """``VideoRefiner.forward`` with the video tokens sharded over the refiner's group: the tokens and
    RoPE rows as in the joint model, every block's VSA on a head chunk (``ulysses_vsa_attend``), the
    final layer on the shard and an all-gather of its features. Same arguments and result (replicated
    on every rank) as the single-device forward."""
    group = sequence_parallel_group(self)
    if group is None:
        raise RuntimeError(
            "refiner_sequence_parallel_forward: call apply_sequence_parallel(refiner, group) first"
        )
    inputs = self.branch.embed(
        refiner_input, timestep=timestep, text_tokens=text_tokens, text_mask=text_mask,
        pooled_text=pooled_text, guidance=guidance, reference_latents=reference_latents,
        positions=positions, latent_key_mask=latent_key_mask,
    )  # fmt: skip
    shard = _shard_video(inputs, latent_key_mask, group)
    # The blocks' attention stages are the sharded VSA stages (apply_sequence_parallel).
    layout = GridLayout(inputs.num_reference, tuple(inputs.grid))
    latent, _ = self.run_blocks(shard.tokens, inputs.text, shard.context, layout)
    features = self.branch.final_layer(latent, inputs.context.conditioning)  # [B, Ls, C·pt·ph·pw]
    features = gather_sequence(features, group=group, global_seq_len=shard.generated)
    return unpatchify_video(features, inputs.grid, self.branch.config.patch_size)


def _time_window_masks(
    video_time: Tensor,
    audio_time: Tensor,
    *,
    window: float,
    video_keys: Tensor | None,
    audio_keys: Tensor | None,
    padded: int,
    group: dist.ProcessGroup,
) -> tuple[ShardedKeys, DenseMask]:
    """Eq. 5's time-local masks on the shard: the single-device ``time_window_mask`` pair built from the
    global times, then laid out as the sharded tokens are (generated first, references and padding
    after). Audio queries (replicated) read the gathered video keys: a ``ShardedKeys`` with a dense
    ``[B|1, 1, La, Lp]`` mask, False past the generated keys. Video queries of this shard read the
    replicated audio: the rows ``[B|1, 1, Ls, La]`` of this rank's tokens; rows of reference and padding
    tokens may read every audio key (their eq. 5 output is discarded)."""
    generated = video_time.shape[-1]
    audio_reads = time_window_mask(audio_time, video_time, window=window, key_mask=video_keys).mask
    audio_reads = nn.functional.pad(audio_reads, (0, padded - generated), value=False)
    video_reads = time_window_mask(video_time, audio_time, window=window, key_mask=audio_keys).mask
    video_reads = nn.functional.pad(video_reads, (0, 0, 0, padded - generated), value=True)
    local_rows = shard_sequence(video_reads, group=group, dim=2)
    return ShardedKeys(local_rows.shape[2], None, None, dense=audio_reads), DenseMask(local_rows)


@dataclass(frozen=True, eq=False)
class _Step:
    """What an exchange step needs about the sharded video tokens."""

    context: BlockContext
    video_time_rope: Rotary  # eq. 5 RoPE rows of this shard (zeros on references and padding)
    exchange_keys: ShardedKeys  # generated video keys eq. 5 may read
    is_generated: Tensor | None  # bool [Ls]: which local tokens eq. 5 updates (None: all)
    audio_time_rope: Rotary


def _exchange_step(
    model: JointAudioVideoTransformer,
    k: int,
    v_latent: Tensor,
    v_text: Tensor,
    a_latent: Tensor,
    a_text: Tensor,
    step: _Step,
    audio: object,
    audio_exchange_keys: KeyPaddingMask | DenseMask | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """The joint model's exchange step on a video shard: both attention stages, eq. 5, both MLPs."""
    video_index, audio_index = model.config.exchange_pairs[k]
    video_block, audio_block = model.video.blocks[video_index], model.audio.blocks[audio_index]
    v_state = video_block.attention_stage(v_latent, v_text, step.context)
    a_state = audio_block.attention_stage(a_latent, a_text, audio.context)
    ra = audio.num_reference
    new_video, new_audio = model.exchanges[k](
        v_state.latent,
        a_state.latent[:, ra:],
        video_rotary=step.video_time_rope,
        audio_rotary=step.audio_time_rope,
        video_key_mask=step.exchange_keys,
        audio_key_mask=audio_exchange_keys,
    )
    if step.is_generated is not None:  # reference tokens pass through eq. 5 untouched
        new_video = torch.where(step.is_generated[None, :, None], new_video, v_state.latent)
    if ra:
        new_audio = torch.cat([a_state.latent[:, :ra], new_audio], dim=1)
    v_latent, v_text = video_block.feed_forward_stage(v_state._replace(latent=new_video))
    a_latent, a_text = audio_block.feed_forward_stage(a_state._replace(latent=new_audio))
    return v_latent, v_text, a_latent, a_text
