"""Train the embedded :class:`TinyVideoAutoencoder` on the procedural world and report held-out PSNR.

Run ``python -m skyreels_v4.vae.train_video --out DIR --size 32 --steps N``. Training is seeded and
deterministic on CPU: a fixed pool of training clips (``WorldSplit.TRAIN``) is rendered once, every step
draws a batch of frame groups from it with a seeded generator, and the loss is ``MSE + 0.1 * L1`` on
pixels (a plain autoencoder; no KL term is needed since the latents are normalised afterwards with
per-channel statistics measured on the training pool). PSNR is measured on clips of
``WorldSplit.HELDOUT`` drawn from a different seed, through the public ``encode``/``decode``.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from skyreels_v4.io import atomic_write_json
from skyreels_v4.vae.tiny_video import TinyVideoAutoencoder, TinyVideoAutoencoderConfig
from skyreels_v4.vae.video_codec import VideoCodec, atomic_folder
from skyreels_v4.world import ProceduralAVDataset, WorldConfig, WorldSplit

__all__ = ["TinyVideoTrainingResult", "evaluate_video_psnr", "main", "train_tiny_video_autoencoder"]

EVAL_SEED_OFFSET = 1_000_003


@dataclass(frozen=True, kw_only=True)
class TinyVideoTrainingResult:
    """What training produced: the model (eval mode), held-out PSNR in dB, seconds of training."""

    model: TinyVideoAutoencoder
    psnr_db: float
    train_seconds: float
    final_loss: float


def _clips(world: WorldConfig, count: int, seed: int, split: WorldSplit) -> Tensor:
    dataset = ProceduralAVDataset(world, length=count, seed=seed, split=split)
    return torch.stack([dataset[i]["video"] for i in range(count)])  # [N, 3, F, H, W]


@torch.no_grad()
def evaluate_video_psnr(codec: VideoCodec, clips: Tensor) -> float:
    """PSNR in dB (data range 2) of ``decode(encode(clips))`` over all of ``clips`` ``[N, 3, F, H, W]``."""
    mse = 0.0
    for clip in clips.split(1):
        reconstruction = codec.decode(codec.encode(clip)).to(clip)
        mse += float(F.mse_loss(reconstruction, clip, reduction="sum"))
    mse /= clips.numel()
    return float("inf") if mse == 0 else 10.0 * torch.log10(torch.tensor(4.0 / mse)).item()


def train_tiny_video_autoencoder(
    config: TinyVideoAutoencoderConfig,
    world_config: WorldConfig,
    steps: int,
    *,
    out: str | os.PathLike[str] | None = None,
    seed: int = 0,
    num_train_clips: int = 32,
    num_eval_clips: int = 4,
    groups_per_batch: int = 32,
    learning_rate: float = 2e-3,
    progress: bool = True,
) -> TinyVideoTrainingResult:
    """Train from scratch for ``steps`` Adam steps (cosine-decayed ``learning_rate``); see module docstring.

    If ``out`` is given the trained model is saved there atomically (``save_pretrained`` + ``training.json``).
    """
    from tqdm.auto import tqdm

    if not isinstance(config, TinyVideoAutoencoderConfig):
        raise TypeError(f"config: expected a TinyVideoAutoencoderConfig, got {type(config).__name__}")
    if not isinstance(world_config, WorldConfig):
        raise TypeError(f"world_config: expected a WorldConfig, got {type(world_config).__name__}")
    for name, value in (
        ("steps", steps),
        ("num_train_clips", num_train_clips),
        ("num_eval_clips", num_eval_clips),
        ("groups_per_batch", groups_per_batch),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
    if not 0 < learning_rate < float("inf"):
        raise ValueError(f"learning_rate: expected a finite number > 0, got {learning_rate!r}")
    if world_config.size % config.spatial_factor:
        raise ValueError(
            f"world_config.size: expected a multiple of spatial_factor={config.spatial_factor}, "
            f"got {world_config.size}"
        )

    torch.manual_seed(seed)
    model = TinyVideoAutoencoder(config)
    model._check_num_frames(world_config.num_frames, "world_config.num_frames")
    groups = model.frames_to_groups(_clips(world_config, num_train_clips, seed, WorldSplit.TRAIN))
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: 0.5 * (1 + torch.cos(torch.tensor(step / steps * torch.pi)).item())
    )
    start = time.perf_counter()
    loss_value = float("nan")
    model.train()
    bar = tqdm(range(steps), desc="tiny video AE", disable=not progress)
    for _ in bar:
        batch = groups[torch.randint(0, groups.shape[0], (groups_per_batch,), generator=generator)]
        reconstruction = model.decode_groups(model.encode_groups(batch))
        loss = F.mse_loss(reconstruction, batch) + 0.1 * F.l1_loss(reconstruction, batch)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        loss_value = float(loss.detach())
        if not torch.isfinite(loss):
            from skyreels_v4.errors import NonFiniteError

            raise NonFiniteError(
                f"train_tiny_video_autoencoder: loss became {loss_value} (lower learning_rate)"
            )
        bar.set_postfix(loss=f"{loss_value:.5f}")
    train_seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        latents = torch.cat([model.encode_groups(part) for part in groups.split(256)])
        mean = latents.mean(dim=(0, 2, 3))
        std = latents.std(dim=(0, 2, 3)).clamp_min(1e-5)
    model.set_latent_statistics(mean, std)
    eval_clips = _clips(world_config, num_eval_clips, seed + EVAL_SEED_OFFSET, WorldSplit.HELDOUT)
    psnr = evaluate_video_psnr(model, eval_clips)
    result = TinyVideoTrainingResult(
        model=model, psnr_db=psnr, train_seconds=train_seconds, final_loss=loss_value
    )
    if out is not None:
        with atomic_folder(out) as temp:
            model._write_folder(temp)
            atomic_write_json(
                temp / "training.json",
                {
                    "steps": steps,
                    "seed": seed,
                    "world": {k: v for k, v in asdict(world_config).items()},
                    "num_train_clips": num_train_clips,
                    "groups_per_batch": groups_per_batch,
                    "learning_rate": learning_rate,
                    "final_loss": loss_value,
                    "heldout_psnr_db": psnr,
                    "heldout_clips": num_eval_clips,
                    "heldout_split": WorldSplit.HELDOUT.value,
                    "heldout_seed": seed + EVAL_SEED_OFFSET,
                    "train_seconds": train_seconds,
                },
            )
    return result


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: train, save to ``--out``, print held-out PSNR; optionally write a side-by-side picture."""
    parser = argparse.ArgumentParser(
        prog="python -m skyreels_v4.vae.train_video", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", required=True, type=Path, help="folder to write the trained codec into")
    parser.add_argument("--size", type=int, default=32, help="world canvas side in pixels (multiple of sf)")
    parser.add_argument("--frames", type=int, default=33, help="frames per clip (1 + 4k)")
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--spatial-factor", type=int, default=4)
    parser.add_argument("--latent-channels", type=int, default=8)
    parser.add_argument("--hidden-channels", type=int, default=64)
    parser.add_argument("--train-clips", type=int, default=32)
    parser.add_argument("--batch-groups", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--picture", type=Path, default=None, help="PNG: original vs reconstruction frames")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    config = TinyVideoAutoencoderConfig(
        spatial_factor=args.spatial_factor,
        latent_channels=args.latent_channels,
        hidden_channels=args.hidden_channels,
    )
    world = WorldConfig(size=args.size, num_frames=args.frames, fps=16.0)
    result = train_tiny_video_autoencoder(
        config,
        world,
        args.steps,
        out=args.out,
        seed=args.seed,
        num_train_clips=args.train_clips,
        groups_per_batch=args.batch_groups,
        learning_rate=args.lr,
        progress=not args.no_progress,
    )
    print(
        f"held-out PSNR {result.psnr_db:.2f} dB after {args.steps} steps in {result.train_seconds:.1f} s "
        f"(size {args.size}, {args.frames} frames, sf {args.spatial_factor}, C {args.latent_channels}); "
        f"saved to {args.out}"
    )
    if args.picture is not None:
        from skyreels_v4.vae.picture import write_reconstruction_picture

        clip = _clips(world, 1, args.seed + EVAL_SEED_OFFSET, WorldSplit.HELDOUT)
        write_reconstruction_picture(result.model, clip, args.picture)
        print(f"wrote {args.picture}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
