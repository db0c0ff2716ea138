"""`VideoSparseAttention`: VSA as a module, with its zero-initialised gate and a backend chosen once.

    gate = Linear(D, D)(normed hidden states)          (zero-initialised: a dense model is unchanged)
    out  = gate ⊙ out_coarse + out_fine                 (VSA, arXiv 2505.13389; paper section 4.5)

The module owns the gate projection and the current sparsity (set by a training ramp, see
``SparsityRamp``); the attention itself is ``video_sparse_attention``. Queries, keys and values
come from the caller's projections (the refiner's MMDiT blocks), with RoPE already applied.

Shape legend: B batch, N grid tokens, Lt text tokens, H heads, Dh head dim, D = H·Dh.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import get_args

from einops import rearrange
from torch import Tensor, nn

from skyreels_attention import AttentionConfig
from skyreels_attention.block_sparse import (
    BlockSparseBackendError,
    BlockSparseBackendName,
    get_block_sparse_backend,
)
from skyreels_refiner_vsa.selection import keep_block_count
from skyreels_refiner_vsa.sparse_attention import VSAOutput, video_sparse_attention
from skyreels_refiner_vsa.tiling import DEFAULT_CUBE, cube_tiling

__all__ = ["VSAConfig", "VideoSparseAttention"]


@dataclass(frozen=True, kw_only=True)
class VSAConfig:
    """How VSA selects blocks and which kernels run it.

    Attributes:
        sparsity: fraction of video key blocks skipped, in [0, 1): ``K = ceil((1 - s) · nB)``. The
            module starts at this value; a training ramp changes it with ``set_sparsity``.
        top_k: a fixed ``K`` instead (then ``sparsity`` must be None).
        cube: cube shape (t, h, w); its volume is the block size and must be a power of two >= 16
            (the flex and triton kernels' tiles). VSA: (4, 4, 4).
        backend: block-sparse backend of the fine stage: None (automatic per device: "cpp" >
            "gather" on CPU, "triton" > "flex" > "torch" on CUDA), "cpp" (our C++ CPU kernel, fp32,
            forward and backward), "gather" (selected blocks through SDPA's fused kernel; forward
            and backward), "torch" (fp32 reference, any device, with backward),
            "flex" (compiled flex_attention; forward only on CPU), "triton" (our kernel; CUDA, or
            CPU under TRITON_INTERPRET=1).
        dense: backend of the dense attention of the text queries.
    """

    sparsity: float | None = 0.875
    top_k: int | None = None
    cube: tuple[int, int, int] = DEFAULT_CUBE
    backend: BlockSparseBackendName | None = None
    dense: AttentionConfig = field(default_factory=AttentionConfig)

    def __post_init__(self) -> None:
        if (self.sparsity is None) == (self.top_k is None):
            raise ValueError(
                "give exactly one of sparsity and top_k, "
                f"got sparsity={self.sparsity!r}, top_k={self.top_k!r}"
            )
        keep_block_count(1, sparsity=self.sparsity, top_k=self.top_k)  # validates the value
        cube = tuple(self.cube)
        if len(cube) != 3 or any(isinstance(c, bool) or not isinstance(c, int) or c < 1 for c in cube):
            raise ValueError(f"cube must be three positive ints, got {self.cube!r}")
        volume = cube[0] * cube[1] * cube[2]
        if volume < 16 or volume & (volume - 1):
            raise ValueError(
                f"cube volume must be a power of two >= 16 (the block size), got {cube} = {volume}"
            )
        object.__setattr__(self, "cube", cube)
        if self.backend is not None and self.backend not in get_args(BlockSparseBackendName):
            raise ValueError(
                f"backend must be one of {get_args(BlockSparseBackendName)}, got {self.backend!r}"
            )
        if not isinstance(self.dense, AttentionConfig):
            raise TypeError(
                f"dense must be a skyreels_attention.AttentionConfig, got {type(self.dense).__name__}"
            )


class VideoSparseAttention(nn.Module):
    """VSA over a video grid, jointly with dense text tokens, with the gate on the normed hidden states.

    Args:
        dim: width D = heads · head dim (the gate is ``Linear(D, D)``).
        num_heads: H.
        config: block selection and backends. The backend must be able to run on this machine
            (checked here, once); a call it cannot run (e.g. flex backward on CPU) raises.
    """

    def __init__(self, *, dim: int, num_heads: int, config: VSAConfig | None = None) -> None:
        super().__init__()
        config = VSAConfig() if config is None else config
        if not isinstance(config, VSAConfig):
            raise TypeError(f"config must be a VSAConfig, got {type(config).__name__}")
        for name, value in (("dim", dim), ("num_heads", num_heads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if dim % num_heads:
            raise ValueError(f"dim must be divisible by num_heads, got dim={dim}, num_heads={num_heads}")
        reasons = (
            [] if config.backend is None else get_block_sparse_backend(config.backend).environment_reasons()
        )
        if reasons:
            raise BlockSparseBackendError(
                f"VSA backend {config.backend!r} cannot run on this machine:", {config.backend: reasons}
            )
        self.config = config
        self.num_heads = num_heads
        self.gate = nn.Linear(dim, dim)
        nn.init.zeros_(self.gate.weight)
        nn.init.zeros_(self.gate.bias)
        self.sparsity: float | None = config.sparsity

    def set_sparsity(self, sparsity: float) -> None:
        """Use ``sparsity`` from now on (the training ramp); only for sparsity-configured modules."""
        if self.config.top_k is not None:
            raise ValueError(
                f"this VSA keeps a fixed top_k={self.config.top_k}; set_sparsity needs a sparsity config"
            )
        keep_block_count(1, sparsity=sparsity)  # validates
        self.sparsity = float(sparsity)

    def keep_blocks(self, num_blocks: int) -> int:
        """``K`` for a grid of ``num_blocks`` blocks at the current setting."""
        return keep_block_count(num_blocks, sparsity=self.sparsity, top_k=self.config.top_k)

    def forward(
        self,
        video_q: Tensor,
        video_k: Tensor,
        video_v: Tensor,
        *,
        grid: tuple[int, int, int],
        gate_input: Tensor,
        text_q: Tensor | None = None,
        text_k: Tensor | None = None,
        text_v: Tensor | None = None,
        text_valid_lengths: Tensor | None = None,
        scale: float | None = None,
    ) -> VSAOutput:
        """Attention of the grid tokens (sparse) and the text tokens (dense).

        Args:
            video_q, video_k, video_v: ``[B, N, H, Dh]`` in grid (t-major) order, N = t·h·w.
            grid: ``(t, h, w)``.
            gate_input: ``[B, N, D]`` the normed hidden states of the video tokens (the input of
                their q/k/v projection).
            text_q, text_k, text_v: ``[B, Lt, H, Dh]`` tokens that stay dense (text, and any
                in-context reference tokens placed before it), or None.
            text_valid_lengths: ``[B]`` integer tensor in ``[0, Lt]``, text keys at or past it are
                padding (range checked unless skyreels-attention's value checks are off).
            scale: softmax scale (default 1/sqrt(Dh)).

        Returns:
            ``VSAOutput(video [B, N, H, Dh], text [B, Lt, H, Dh] | None)``.
        """
        if not isinstance(gate_input, Tensor) or gate_input.shape != (
            *video_q.shape[:2],
            self.gate.in_features,
        ):
            got = tuple(gate_input.shape) if isinstance(gate_input, Tensor) else type(gate_input).__name__
            raise ValueError(
                f"gate_input must be [B, N, D] = {(*video_q.shape[:2], self.gate.in_features)}, got {got}"
            )
        return self.attend(
            video_q,
            video_k,
            video_v,
            grid=grid,
            gate=self.gate_values(gate_input),
            text_q=text_q,
            text_k=text_k,
            text_v=text_v,
            text_valid_lengths=text_valid_lengths,
            scale=scale,
        )

    def gate_values(self, gate_input: Tensor) -> Tensor:
        """The gate ``[B, N, H, Dh]`` of ``gate_input [B, N, D]`` (per token: it can be computed on a
        sequence shard and moved with the queries, as sequence parallelism does)."""
        return rearrange(self.gate(gate_input), "b n (h d) -> b n h d", h=self.num_heads)

    def attend(
        self,
        video_q: Tensor,
        video_k: Tensor,
        video_v: Tensor,
        *,
        grid: tuple[int, int, int],
        gate: Tensor,
        text_q: Tensor | None = None,
        text_k: Tensor | None = None,
        text_v: Tensor | None = None,
        text_valid_lengths: Tensor | None = None,
        scale: float | None = None,
    ) -> VSAOutput:
        """``forward`` with the gate already computed (``gate_values``), for any subset of the heads:
        ``video_q`` and ``gate`` may hold ``H / P`` of them (Ulysses gives each rank a head chunk; the
        block selection is per head, so the chunks are independent)."""
        if not isinstance(gate, Tensor) or gate.shape != video_q.shape:
            got = tuple(gate.shape) if isinstance(gate, Tensor) else type(gate).__name__
            raise ValueError(f"gate must be [B, N, H, Dh] like video_q {tuple(video_q.shape)}, got {got}")
        tiling = cube_tiling(grid, cube=self.config.cube, device=video_q.device)
        return video_sparse_attention(
            video_q,
            video_k,
            video_v,
            tiling=tiling,
            keep=self.keep_blocks(tiling.num_blocks),
            gate=gate.to(video_q.dtype),
            text_q=text_q,
            text_k=text_k,
            text_v=text_v,
            text_valid_lengths=text_valid_lengths,
            scale=scale,
            backend=self.config.backend,
            dense_backend=self.config.dense.backend,
        )

    def extra_repr(self) -> str:
        selection = (
            f"top_k={self.config.top_k}" if self.config.top_k is not None else f"sparsity={self.sparsity}"
        )
        return f"{selection}, cube={self.config.cube}, backend={self.config.backend or 'auto'}"
