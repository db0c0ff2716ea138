"""Saved-activation memory of a ``JointAudioVideoTransformer`` training step, from its layer shapes.

Planner part of issue 15 (paper section 3.1 model: dual/single-stream blocks, eq. 4 text
cross-attention, eq. 5 audio-video exchange). What autograd keeps between forward and backward is
counted op by op from the block code (mmdit-blocks): every LayerNorm keeps its input and two fp32
statistics per token, ``modulate`` keeps the normed tokens, every Linear its input, GELU/SiLU their
input, a gate multiplication the gated tensor, the attention kernel q, k, v, the output and an
fp32 log-sum-exp per query and head (flash-style kernels: no ``L x L`` matrix), and the per-head
RMSNorm keeps float32 copies (its input cast and its normed output; in float32 the cast is the
projection output itself, kept whole). Weights are not counted: under FSDP2 the gathered weights are
freed after forward and gathered again in backward.

With activation checkpointing a checkpointed unit (one block, or the two blocks joined by an
exchange and the exchange itself) keeps only its input tokens; in backward one unit at a time is
recomputed, so ``peak`` adds the largest unit's activations once.

Checked against measured memory (CPU, torch.profiler) in tests/test_scale_plan.py: within 15 %.

Shape legend: B batch, Lv/La video/audio tokens per device, T text tokens, D width, M MLP width,
H heads.
"""

from __future__ import annotations

from dataclasses import dataclass

from skyreels_mmdit_blocks import JointAudioVideoTransformerConfig, MMDiTBranchConfig, mlp_hidden_dim

__all__ = ["ActivationMemory", "activation_memory"]


class _Tally:
    """Bytes of saved tensors; ``c`` elements are in the compute dtype, ``f`` elements in float32."""

    def __init__(self, compute_bytes: int, *, dim: int, heads: int) -> None:
        self.cb = compute_bytes
        self.dim = dim
        self.heads = heads
        self.bytes = 0

    def c(self, elements: int) -> None:
        self.bytes += self.cb * elements

    def f(self, elements: int) -> None:
        self.bytes += 4 * elements

    def layer_norm(self, n: int) -> None:
        """Input tokens + fp32 mean and rstd."""
        self.c(n * self.dim)
        self.f(2 * n)

    def projection_kept_by_norm(self, elements: int) -> None:
        """A projection read by HeadRMSNorm stays alive only in float32 (its ``.float()`` is a view)."""
        if self.cb == 4:
            self.c(elements)

    def head_rms_norm(self, n: int) -> None:
        """fp32 rsqrt per head; the normed output (and in low precision the fp32 input copy)."""
        self.f(n * self.heads)
        self.f(n * self.dim if self.cb == 4 else 2 * n * self.dim)

    def attention(self, nq: int, nk: int) -> None:
        """q, out over nq queries; k, v over nk keys; fp32 log-sum-exp per query and head."""
        self.c(2 * nq * self.dim + 2 * nk * self.dim)
        self.f(nq * self.heads)


def _dual_block(t: _Tally, lat: int, txt: int, mlp: int, *, text_xattn: bool) -> None:
    d = t.dim
    for n in (lat, txt):
        t.layer_norm(n)  # block input
        t.c(2 * n * d)  # LN output (modulate), modulated tokens (qkv Linear)
        t.projection_kept_by_norm(3 * n * d)
        t.head_rms_norm(n)
        t.head_rms_norm(n)
        t.c(n * d)  # output projection, kept by the gate multiplication
        t.layer_norm(n)  # feed-forward input
        t.c(2 * n * d)  # LN output, modulated tokens (fc1)
        t.c(2 * n * mlp)  # fc1 output (GELU), GELU output (fc2)
        t.c(n * d)  # fc2 output (gate)
    t.attention(lat + txt, lat + txt)
    t.c((lat + txt) * d)  # merged heads, read by both output projections
    if text_xattn:
        _text_cross_attention(t, lat, txt, input_tokens=lat)


def _single_block(t: _Tally, lat: int, txt: int, mlp: int, *, text_xattn: bool) -> None:
    d, n = t.dim, lat + txt
    t.layer_norm(n)  # cat(latent, text)
    t.c(2 * n * d)  # LN output, modulated tokens
    t.c(n * (3 * d + mlp))  # qkv + MLP projection, kept whole (GELU reads its MLP part)
    t.head_rms_norm(n)
    t.head_rms_norm(n)
    t.attention(n, n)
    t.c(n * (d + mlp))  # cat(attention, GELU) read by the output Linear
    t.c(n * d)  # output Linear result (gate)
    if text_xattn:
        _text_cross_attention(t, lat, txt, input_tokens=n)


def _text_cross_attention(t: _Tally, lat: int, txt: int, *, input_tokens: int) -> None:
    """Eq. 4: latent queries read the (block-invariant) text context."""
    d = t.dim
    t.layer_norm(input_tokens)  # its input is a slice of the block's token storage
    t.c(lat * d)  # LN output (q Linear)
    t.projection_kept_by_norm(lat * d)
    t.head_rms_norm(lat)
    t.projection_kept_by_norm(2 * txt * d)
    t.head_rms_norm(txt)
    t.attention(lat, txt)
    t.c(lat * d)  # merged heads (output Linear)


def _exchange(t: _Tally, video: int, audio: int) -> None:
    """Eq. 5, both directions (audio reads video, video reads the updated audio)."""
    d = t.dim
    for query, context, query_input_new in ((audio, video, True), (video, audio, False)):
        if query_input_new:
            t.layer_norm(query)
        else:
            t.f(2 * query)  # the video tokens were kept already by the first direction's context LN
        t.c(query * d)  # q Linear input
        t.projection_kept_by_norm(query * d)
        t.head_rms_norm(query)
        t.layer_norm(context)
        t.c(context * d)  # kv Linear input
        t.projection_kept_by_norm(2 * context * d)
        t.head_rms_norm(context)
        t.attention(query, context)
        t.c(query * d)  # merged heads (output Linear)


def _refiner_block(t: _Tally, txt: int, mlp: int) -> None:
    d = t.dim
    t.layer_norm(txt)
    t.c(txt * d)  # qkv Linear input
    t.attention(txt, txt)
    t.c(2 * txt * d)  # merged heads, output projection (gate)
    t.layer_norm(txt)
    t.c(txt * d + 2 * txt * mlp + txt * d)  # fc1 input, fc1 output, SiLU output, fc2 output (gate)


def _head(t: _Tally, n: int) -> None:
    t.layer_norm(n)
    t.c(2 * n * t.dim)  # LN output, modulated tokens (proj)


@dataclass(frozen=True)
class ActivationMemory:
    """Bytes per device for one micro-batch.

    stored: kept from the end of forward until backward (the quantity checkpointing reduces).
    largest_unit: activations of the largest checkpointable unit (recomputed in backward).
    peak: checkpointed, stored + largest_unit (backward recomputes one unit at a time); otherwise
        stored (backward frees each unit's activations as it creates their gradients).
    """

    stored: int
    largest_unit: int
    peak: int


def _branch_unit_bytes(cb: int, config: MMDiTBranchConfig, index: int, lat: int, txt: int, batch: int) -> int:
    t = _Tally(cb, dim=config.dim, heads=config.num_heads)
    mlp = mlp_hidden_dim(config.dim, config.mlp_ratio)
    xattn = index in config.text_cross_attention_blocks
    if index < config.num_dual_blocks:
        _dual_block(t, lat, txt, mlp, text_xattn=xattn)
    else:
        _single_block(t, lat, txt, mlp, text_xattn=xattn)
    return batch * t.bytes


def activation_memory(
    config: JointAudioVideoTransformerConfig,
    *,
    video_tokens: int,
    audio_tokens: int,
    text_tokens: int,
    batch: int = 1,
    compute_bytes: int = 2,
    checkpointing: bool = False,
    video_input_elements: int = 0,
    audio_input_elements: int = 0,
) -> ActivationMemory:
    """Saved-activation bytes of one forward of ``config`` on one device.

    ``video_tokens`` / ``audio_tokens``: tokens on this device (references included; under sequence
    parallelism the video shard, ``ceil(Lv / sp)``). ``compute_bytes``: 2 for bf16/fp16, 4 for fp32.
    ``*_input_elements``: latent elements per sample read by the patch embeddings (kept by them).
    """
    if compute_bytes not in (2, 4):
        raise ValueError(f"compute_bytes must be 2 or 4; got {compute_bytes!r}")
    for name, value in (
        ("video_tokens", video_tokens),
        ("audio_tokens", audio_tokens),
        ("text_tokens", text_tokens),
        ("batch", batch),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "batch" else 0):
            raise ValueError(
                f"{name} must be a {'positive' if name == 'batch' else 'non-negative'} int; got {value!r}"
            )
    v, a = config.video, config.audio
    d, heads = v.dim, v.num_heads
    cb = compute_bytes

    fixed = _Tally(cb, dim=d, heads=heads)
    fixed.c(video_input_elements + audio_input_elements + text_tokens * v.text_dim)
    # fp32 RoPE tables (cos, sin: half a head each): each branch's own, then the exchange's (eq. 5).
    fixed.f(2 * v.head_dim * (video_tokens + audio_tokens))
    for branch, tokens in ((v, video_tokens), (a, audio_tokens)):
        mlp = mlp_hidden_dim(branch.dim, branch.mlp_ratio)
        for _ in range(branch.num_refiner_blocks if branch.text_embedding.value == "refiner" else 0):
            _refiner_block(fixed, text_tokens, mlp)
        _head(fixed, tokens)
    fixed_bytes = batch * fixed.bytes

    units: list[tuple[int, int]] = []  # (full activations, checkpointed inputs)
    pairs = dict(config.exchange_pairs)
    paired_audio = set(pairs.values())
    video_in = batch * cb * (video_tokens + text_tokens) * d
    audio_in = batch * cb * (audio_tokens + text_tokens) * d
    for i in range(v.num_blocks):
        full = _branch_unit_bytes(cb, v, i, video_tokens, text_tokens, batch)
        if i in pairs:
            j = pairs[i]
            ex = _Tally(cb, dim=d, heads=heads)
            _exchange(ex, video_tokens, audio_tokens)
            full += batch * ex.bytes + _branch_unit_bytes(cb, a, j, audio_tokens, text_tokens, batch)
            units.append((full, video_in + audio_in))
        else:
            units.append((full, video_in))
    for j in range(a.num_blocks):
        if j not in paired_audio:
            units.append((_branch_unit_bytes(cb, a, j, audio_tokens, text_tokens, batch), audio_in))

    largest = max(full for full, _ in units)
    if checkpointing:
        stored = fixed_bytes + sum(inputs for _, inputs in units)
    else:
        stored = fixed_bytes + sum(full for full, _ in units)
    return ActivationMemory(
        stored=stored, largest_unit=largest, peak=stored + largest if checkpointing else stored
    )
