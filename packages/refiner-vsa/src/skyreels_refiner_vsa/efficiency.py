"""FLOPs of the paper's efficiency strategy against direct generation (paper sections 1 and 4.5).

Direct: the video branch denoises 1080p / 32 fps / 15 s latents at once. Strategy: the base model
denoises a low-res full sequence jointly with high-res keyframes, then the refiner (VSA in every
self-attention) denoises the 1080p / 32 fps latents conditioned on them.

Counting: the branches run under ``FakeTensorMode`` (meta storage: no memory, no compute; the plain
meta device is refused by skyreels-attention's backends) inside ``torch.utils.flop_counter.
FlopCounterMode``, which counts every matmul and convolution. It has no formula for CPU SDPA
(``_scaled_dot_product_flash_attention_for_cpu``), so we give it the standard one,
``4·B·H·Lq·Lk·D``. VSA cannot run on fake tensors (the block-sparse op checks its index on the
host), so the refiner is counted as its dense branch with the joint self-attention FLOPs replaced by
``vsa_attention_flops`` (analytic, tested equal to FlopCounterMode on real tensors) and the gate
projections added. Not counted: elementwise ops, softmax, norms (as FlopCounterMode), the audio
branch and the audio-video exchange (the same audio in both plans), the text encoder and the VAE.

    python -m skyreels_refiner_vsa.efficiency            # the table of docs/refiner-vsa.md

Shape legend: B batch, N grid tokens, Lt dense (text) tokens, H heads, Dh head dim, S block size.
"""

from __future__ import annotations

import argparse
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils.flop_counter import FlopCounterMode

from skyreels_mmdit_blocks import MMDiTBranch, MMDiTBranchConfig, joint_preset
from skyreels_refiner_vsa.selection import keep_block_count

__all__ = [
    "BranchFlops",
    "EfficiencyScenario",
    "VideoFormat",
    "count_branch_flops",
    "efficiency_table",
    "main",
    "vsa_attention_flops",
]

_JOINT_ATTENTION = re.compile(r"^MMDiTBranch\.(dual|single)_blocks\.\d+\.attention$")


def _cpu_sdpa_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    """FlopCounterMode formula for CPU SDPA: QK^T and PV matmuls, ``2·B·H·Lq·Lk·(D + Dv)``."""
    b, h, lq, d = query_shape
    lk, dv = key_shape[2], value_shape[3]
    return 2 * b * h * lq * lk * (d + dv)


def flop_counter() -> FlopCounterMode:
    """A FlopCounterMode that also counts CPU SDPA."""
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _cpu_sdpa_flops}
    return FlopCounterMode(display=False, depth=None, custom_mapping=mapping)


@dataclass(frozen=True, kw_only=True)
class VideoFormat:
    """A clip: pixel size, frame rate, duration. Latents: causal 4x time, 8x space, patch (1, 2, 2)."""

    width: int
    height: int
    fps: float
    seconds: float

    @property
    def pixel_frames(self) -> int:
        """``1 + 4k`` frames covering the duration (the causal VAE's valid lengths)."""
        return 4 * math.ceil(self.seconds * self.fps / 4) + 1

    def latent_shape(self, *, patch: tuple[int, int, int] = (1, 2, 2)) -> tuple[int, int, int]:
        """``(T, h, w)`` latent grid, space rounded up to the patch (1080 -> 135 -> 136)."""
        t = 1 + (self.pixel_frames - 1) // 4
        h = math.ceil(math.ceil(self.height / 8) / patch[1]) * patch[1]
        w = math.ceil(math.ceil(self.width / 8) / patch[2]) * patch[2]
        return (t, h, w)

    def token_grid(self, *, patch: tuple[int, int, int] = (1, 2, 2)) -> tuple[int, int, int]:
        t, h, w = self.latent_shape(patch=patch)
        return (t // patch[0], h // patch[1], w // patch[2])


@dataclass(frozen=True, kw_only=True)
class EfficiencyScenario:
    """The plans compared. Keyframe count, low resolution and steps are our assumptions (the paper
    gives none); change them on the command line."""

    target: VideoFormat = field(
        default_factory=lambda: VideoFormat(width=1920, height=1080, fps=32, seconds=15)
    )
    low_res: VideoFormat = field(
        default_factory=lambda: VideoFormat(width=848, height=480, fps=16, seconds=15)
    )
    num_keyframes: int = 8
    text_tokens: int = 256
    sparsity: float = 0.875
    block_size: int = 64


@dataclass(frozen=True)
class BranchFlops:
    """FLOPs of one forward pass: ``attention`` = the joint self-attention, ``other`` = the rest."""

    attention: int
    other: int

    @property
    def total(self) -> int:
        return self.attention + self.other


def count_branch_flops(
    config: MMDiTBranchConfig,
    latent_shape: tuple[int, int, int],
    *,
    text_tokens: int,
    reference_shape: tuple[int, int, int] | None = None,
) -> BranchFlops:
    """One dense forward of a video branch on fake tensors, counted by FlopCounterMode.

    ``latent_shape`` / ``reference_shape``: ``(T, h, w)`` latents (references are prepended tokens,
    used here for the base model's high-res keyframes).
    """
    counter = flop_counter()
    with FakeTensorMode():
        branch = MMDiTBranch(config)
        latents = torch.empty(1, config.in_channels, *latent_shape)
        references = None if reference_shape is None else torch.empty(1, config.in_channels, *reference_shape)
        extra = {}
        if config.pooled_text_dim is not None:
            extra["pooled_text"] = torch.empty(1, config.pooled_text_dim)
        if config.guidance_embedding:
            extra["guidance"] = torch.empty(1)
        with counter:
            branch(
                latents,
                timestep=torch.empty(1),
                text_tokens=torch.empty(1, text_tokens, config.text_dim),
                reference_latents=references,
                **extra,
            )
    counts = counter.get_flop_counts()
    attention = sum(sum(ops.values()) for name, ops in counts.items() if _JOINT_ATTENTION.match(name))
    return BranchFlops(attention=attention, other=counter.get_total_flops() - attention)


def vsa_attention_flops(
    *, batch: int, num_video: int, num_dense: int, heads: int, head_dim: int, keep: int, block_size: int = 64
) -> int:
    """FLOPs of one ``VideoSparseAttention`` call without its gate (matmuls only, as FlopCounterMode).

    fine: every video query block against its ``K' + F`` selected blocks of S keys (block-granular,
    the work of a block-sparse kernel); coarse: pooled blocks against pooled blocks; dense: the
    ``num_dense`` text/reference queries against every key. Each is ``4·B·H·Dh·queries·keys``.
    """
    n_video_blocks = -(-num_video // block_size)
    n_key_blocks = -(-(num_video + num_dense) // block_size)
    first_forced = num_video // block_size if num_dense else n_key_blocks
    forced = n_key_blocks - first_forced
    selected = min(keep, min(first_forced, n_video_blocks)) + forced
    unit = 4 * batch * heads * head_dim
    fine = unit * (n_video_blocks * block_size) * (selected * block_size)
    coarse = unit * n_video_blocks * n_video_blocks
    dense = unit * num_dense * (num_video + num_dense)
    return fine + coarse + dense


def refiner_flops(config: MMDiTBranchConfig, scenario: EfficiencyScenario) -> tuple[BranchFlops, BranchFlops]:
    """(dense refiner, VSA refiner) forward FLOPs at the target format."""
    c = config.out_channels
    wide = replace(config, in_channels=3 * c + 1)  # Concat(V, I, M, U)
    dense = count_branch_flops(wide, scenario.target.latent_shape(), text_tokens=scenario.text_tokens)
    n = math.prod(scenario.target.token_grid(patch=config.patch_size))
    keep = keep_block_count(-(-n // scenario.block_size), sparsity=scenario.sparsity)
    per_block = vsa_attention_flops(
        batch=1,
        num_video=n,
        num_dense=scenario.text_tokens,
        heads=config.num_heads,
        head_dim=config.head_dim,
        keep=keep,
        block_size=scenario.block_size,
    )
    gates = 2 * n * config.dim * config.dim  # Linear(D, D) on the grid tokens, per block
    sparse = BranchFlops(
        attention=config.num_blocks * per_block, other=dense.other + config.num_blocks * gates
    )
    return dense, sparse


def efficiency_table(scenario: EfficiencyScenario, config: MMDiTBranchConfig) -> list[dict[str, object]]:
    """One row per plan/stage with tokens and per-forward FLOPs (see ``main`` for the table)."""
    target_tokens = math.prod(scenario.target.token_grid(patch=config.patch_size))
    low_tokens = math.prod(scenario.low_res.token_grid(patch=config.patch_size))
    _, h, w = scenario.target.latent_shape(patch=config.patch_size)
    keyframe_tokens = scenario.num_keyframes * (h // config.patch_size[1]) * (w // config.patch_size[2])
    direct = count_branch_flops(config, scenario.target.latent_shape(), text_tokens=scenario.text_tokens)
    base = count_branch_flops(
        config,
        scenario.low_res.latent_shape(),
        text_tokens=scenario.text_tokens,
        reference_shape=(scenario.num_keyframes, h, w) if scenario.num_keyframes else None,
    )
    dense_refiner, vsa_refiner = refiner_flops(config, scenario)
    strategy = BranchFlops(base.attention + vsa_refiner.attention, base.other + vsa_refiner.other)
    return [
        {"stage": "direct generation (target format)", "tokens": target_tokens, "flops": direct},
        {
            "stage": "base: low-res sequence + high-res keyframes",
            "tokens": low_tokens + keyframe_tokens,
            "flops": base,
        },
        {"stage": "refiner, dense attention", "tokens": target_tokens, "flops": dense_refiner},
        {
            "stage": f"refiner, VSA sparsity {scenario.sparsity}",
            "tokens": target_tokens,
            "flops": vsa_refiner,
        },
        {"stage": "strategy = base + refiner (VSA)", "tokens": None, "flops": strategy},
    ]


def _markdown(rows: list[dict[str, object]], direct: BranchFlops, steps: tuple[int, int, int]) -> str:
    lines = [
        "| stage | video tokens | joint attention PFLOP | rest PFLOP | total PFLOP | direct / this |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        flops: BranchFlops = row["flops"]  # type: ignore[assignment]
        tokens = "" if row["tokens"] is None else f"{row['tokens']:,}"
        lines.append(
            f"| {row['stage']} | {tokens} | {flops.attention / 1e15:,.1f} | {flops.other / 1e15:,.1f} | "
            f"{flops.total / 1e15:,.1f} | {direct.total / flops.total:.2f}x |"
        )
    direct_steps, base_steps, refiner_steps = steps
    base, vsa = rows[1]["flops"], rows[3]["flops"]
    total_direct = direct_steps * direct.total
    total_plan = base_steps * base.total + refiner_steps * vsa.total  # type: ignore[union-attr]
    lines.append(
        f"\nWith {direct_steps} direct steps vs {base_steps} base + {refiner_steps} refiner steps: "
        f"{total_direct / 1e18:,.1f} vs {total_plan / 1e18:,.1f} EFLOP, "
        f"{total_direct / total_plan:.2f}x fewer."
    )
    return "\n".join(lines)


def _positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _nonnegative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}")
    return value


def _sparsity(text: str) -> float:
    """argparse type: a fraction in [0, 1)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a number in [0, 1), got {text!r}")
    return value


def _size(text: str) -> tuple[int, int]:
    """argparse type: ``WIDTHxHEIGHT``, positive integers."""
    parts = text.lower().split("x")
    if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(
            f"expected WIDTHxHEIGHT with positive integers (e.g. 848x480), got {text!r}"
        )
    return int(parts[0]), int(parts[1])


def main(argv: Sequence[str] | None = None) -> int:
    """Print the per-forward FLOP table of direct generation vs the strategy (markdown)."""
    parser = argparse.ArgumentParser(
        prog="python -m skyreels_refiner_vsa.efficiency", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--preset", default="full", choices=["tiny", "small", "full"])
    parser.add_argument("--sparsity", type=_sparsity, default=0.875)
    parser.add_argument(
        "--keyframes", type=_nonnegative_int, default=8, help="high-res keyframes the base model predicts"
    )
    parser.add_argument(
        "--low-res", type=_size, default=(848, 480), help="WIDTHxHEIGHT of the base model's full sequence"
    )
    parser.add_argument("--text-tokens", type=_nonnegative_int, default=256)
    parser.add_argument(
        "--steps", type=_positive_int, nargs=3, default=[50, 50, 50], metavar=("DIRECT", "BASE", "REFINER")
    )
    args = parser.parse_args(argv)
    width, height = args.low_res
    scenario = EfficiencyScenario(
        low_res=VideoFormat(width=width, height=height, fps=16, seconds=15),
        num_keyframes=args.keyframes,
        text_tokens=args.text_tokens,
        sparsity=args.sparsity,
    )
    config = joint_preset(args.preset).video
    rows = efficiency_table(scenario, config)
    print(
        f"Video branch, preset {args.preset!r} (D {config.dim}, {config.num_heads} heads, "
        f"{config.num_dual_blocks} dual + {config.num_single_blocks} single blocks); target "
        f"{scenario.target.width}x{scenario.target.height} {scenario.target.fps:g} fps "
        f"{scenario.target.seconds:g} s = "
        f"latents {scenario.target.latent_shape()}; low-res {width}x{height} {scenario.low_res.fps:g} fps; "
        f"{args.keyframes} keyframes; {args.text_tokens} text tokens. One forward pass each:\n"
    )
    print(_markdown(rows, rows[0]["flops"], tuple(args.steps)))  # type: ignore[arg-type]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
