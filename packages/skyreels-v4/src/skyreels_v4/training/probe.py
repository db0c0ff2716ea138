"""Where along the noise scale does a trained model fail? One network call per noise level on held-out
clips (docs/training.md "Measured so far" reads its numbers).

For each held-out world clip, the pipeline prepares the clip's t2av request exactly as generation does
(prompt encoding, eq. 7's condition, the seeded noise ε), the clip's latents ``x0`` are noised to
``x_σ = (1-σ)·x0 + σ·ε`` and the model's clean estimate ``x̂0 = x_σ - σ·u`` is read off its velocity
``u``. Per σ it reports, per modality:

- ``x0_mse``: mean squared error of ``x̂0`` against ``x0`` (latent units); at σ = 1 the best possible
  value is the conditional variance: a model that predicts the conditional mean gets it;
- ``noise_sensitivity``: the fraction of a change of the noise that reaches the estimate, the energy
  ratio ``E[(x̂0(ε₁) - x̂0(ε₂))²] / E[(x_σ(ε₁) - x_σ(ε₂))²]`` for two noise draws. 0: ``x̂0`` ignores
  which noise it was given, as the ideal estimate (the conditional mean) does once the noise carries
  no information (σ = 1) and, nearly, wherever the clean signal dominates; 1: the estimate moves with
  the noise as the input itself does (``x̂0 = x_σ``). High values at σ near 1 mean the model reads
  structure into pure noise, and sampling starts from that.
- ``audio_video_dependence`` (v2a, the clip's video given as the condition): how much the audio
  estimate depends on *when* things happen in the video, the energy ratio
  ``E[(â0(v) - â0(v reversed in time))²] / E[â0(v)²]`` for the same noisy audio input. 0: the audio
  ignores the video's timing (its sync can only be at chance); the ground truth's audio changes
  completely when the video is reversed, so a model that has learnt sync moves well above 0.
- ``audio_video_content_dependence``: the same ratio with the video replaced by another clip's video
  (same split, seed ``seed + 7919``). Near 0 as well: the audio ignores the video altogether (it
  reads the prompt only).
- ``audio_video_locality`` (v2a): where in time the audio estimate reads the video. The audio tokens
  are grouped by the video latent frame their time falls in; for each group, the gradient of a fixed
  random projection of the group's estimate with respect to the video latents is split by latent
  frame, and the column is the share of its energy on the latent frames within one of the group's
  own, averaged over the groups and clips. 1: each moment of the audio reads only the co-timed video
  (what sync needs); ``audio_video_locality_uniform`` is the share an evenly spread reading would
  give. None where the estimate does not depend on the video at all.

``skyreels-v4 probe --model DIR --out DIR`` writes ``probe.json`` and ``probe.png`` (one row per σ:
the middle frame of ``x̂0`` for each clip, ground truth last).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from skyreels_v4.io import atomic_path, atomic_write_json
from skyreels_v4.world import ProceduralAVDataset, WorldConfig, WorldSplit

__all__ = ["denoising_probe", "latent_frame_of_audio_tokens", "main"]

DEFAULT_SIGMAS = (0.2, 0.5, 0.8, 0.9, 0.95, 0.98, 1.0)


@torch.no_grad()
def denoising_probe(
    pipe: Any,
    *,
    world: WorldConfig,
    sigmas: Sequence[float] = DEFAULT_SIGMAS,
    num_clips: int = 8,
    seed: int = 0,
    split: WorldSplit | str = WorldSplit.HELDOUT,
    picture: str | os.PathLike[str] | None = None,
) -> dict[str, dict[str, float]]:
    """Per σ (as a string key): ``video_x0_mse``, ``audio_x0_mse``, ``video_noise_sensitivity``,
    ``audio_noise_sensitivity``, ``audio_video_dependence``, ``audio_video_content_dependence`` and
    ``audio_video_locality`` (+ ``_uniform``) (module docstring), over ``num_clips`` clips of ``world``
    (``split``)."""
    from skyreels_v4.model import JointDenoiser
    from skyreels_v4.pipeline import GenerationRequest
    from skyreels_v4.pipeline.pipeline import crop_or_pad

    if not isinstance(world, WorldConfig):
        raise TypeError(f"world: expected a WorldConfig, got {type(world).__name__}")
    if isinstance(num_clips, bool) or not isinstance(num_clips, int) or num_clips < 1:
        raise ValueError(f"num_clips: expected a positive int, got {num_clips!r}")
    sigmas = [float(s) for s in sigmas]
    if not sigmas or not all(math.isfinite(s) and 0.0 < s <= 1.0 for s in sigmas):
        raise ValueError(f"sigmas: expected values in (0, 1], got {sigmas!r}")
    data = ProceduralAVDataset(world, length=num_clips, seed=seed, split=WorldSplit(split))
    others = ProceduralAVDataset(world, length=num_clips, seed=seed + 7919, split=WorldSplit(split))
    denoiser = JointDenoiser(pipe.transformer)
    sums: dict[float, dict[str, float]] = {s: {} for s in sigmas}
    frames: dict[float, list[np.ndarray]] = {s: [] for s in sigmas}
    truth: list[np.ndarray] = []
    for index in range(num_clips):
        item = data[index]
        request = GenerationRequest(
            prompt=item["caption"],
            task="t2av",
            seed=seed + index,
            num_frames=world.num_frames,
            height=world.size,
            width=world.size,
            fps=world.fps,
        )
        prepared = pipe.prepare(request)
        device = prepared.video_noise.device
        x0 = {
            "video": pipe.video_vae.encode(item["video"][None].to(device)).float(),
            "audio": pipe.audio_vae.encode(item["audio"][None].to(device), world.sample_rate).float(),
        }
        x0["audio"] = crop_or_pad(x0["audio"], prepared.audio_noise.shape[-1])
        generator = torch.Generator().manual_seed(seed + 10_000 + index)
        noises = [
            {"video": prepared.video_noise, "audio": prepared.audio_noise},
            {name: torch.randn(x0[name].shape, generator=generator).to(device) for name in x0},
        ]
        truth.append(_middle_frame(pipe, x0["video"]))
        v2a_conditions = [
            pipe.prepare(
                GenerationRequest(
                    prompt=item["caption"], task="v2a", seed=seed + index, video=video, fps=world.fps
                )
            ).condition
            for video in (item["video"], item["video"].flip(1), others[index]["video"])
        ]
        for s in sigmas:
            estimates = []
            for noise in noises:
                x = {name: (1 - s) * x0[name] + s * noise[name] for name in x0}
                sigma = torch.full((1,), s, device=device)
                u_video, u_audio = denoiser.raw(
                    x["video"], x["audio"], video_sigma=sigma, audio_sigma=sigma, condition=prepared.condition
                )
                estimates.append({"video": x["video"] - s * u_video, "audio": x["audio"] - s * u_audio})
            for name in x0:
                errors = [float((e[name] - x0[name]).square().mean()) for e in estimates]
                moved = float((estimates[0][name] - estimates[1][name]).square().mean())
                given = float((s * (noises[0][name] - noises[1][name])).square().mean())
                totals = sums[s]
                totals[f"{name}_x0_mse"] = totals.get(f"{name}_x0_mse", 0.0) + sum(errors) / 2
                totals[f"{name}_moved"] = totals.get(f"{name}_moved", 0.0) + moved
                totals[f"{name}_given"] = totals.get(f"{name}_given", 0.0) + given
            frames[s].append(_middle_frame(pipe, estimates[0]["video"]))
            # v2a: the same noisy audio, conditioned on the clip's video and on it reversed in time.
            x_audio = (1 - s) * x0["audio"] + s * noises[0]["audio"]
            # The as-is estimate comes with its gradients (one forward for both uses).
            as_is, shares, counted, uniform = _time_locality(
                denoiser,
                v2a_conditions[0],
                x_audio,
                s,
                num_frames=world.num_frames,
                generator=torch.Generator().manual_seed(seed + index),
            )
            given = [as_is]
            for condition in v2a_conditions[1:]:
                _, u_audio = denoiser.raw(
                    condition.conditional_latents,
                    x_audio,
                    video_sigma=torch.zeros(1, device=device),
                    audio_sigma=torch.full((1,), s, device=device),
                    condition=condition,
                )
                given.append(x_audio - s * u_audio)
            totals["v2a_moved"] = totals.get("v2a_moved", 0.0) + float((given[0] - given[1]).square().mean())
            totals["v2a_swapped"] = totals.get("v2a_swapped", 0.0) + float(
                (given[0] - given[2]).square().mean()
            )
            totals["v2a_energy"] = totals.get("v2a_energy", 0.0) + float(given[0].square().mean())
            totals["v2a_shares"] = totals.get("v2a_shares", 0.0) + shares
            totals["v2a_counted"] = totals.get("v2a_counted", 0.0) + counted
            totals["v2a_uniform"] = totals.get("v2a_uniform", 0.0) + uniform
    results = {}
    for s in sigmas:
        totals = {k: v / num_clips for k, v in sums[s].items()}
        row = {}
        for name in ("video", "audio"):
            row[f"{name}_x0_mse"] = totals[f"{name}_x0_mse"]
            row[f"{name}_noise_sensitivity"] = totals[f"{name}_moved"] / totals[f"{name}_given"]
        row["audio_video_dependence"] = totals["v2a_moved"] / max(totals["v2a_energy"], 1e-30)
        row["audio_video_content_dependence"] = totals["v2a_swapped"] / max(totals["v2a_energy"], 1e-30)
        counted = totals["v2a_counted"]
        row["audio_video_locality"] = totals["v2a_shares"] / counted if counted > 0 else None
        row["audio_video_locality_uniform"] = totals["v2a_uniform"]
        results[f"{s:g}"] = row
    if picture is not None:
        rows = [np.concatenate(frames[s], axis=1) for s in sigmas] + [np.concatenate(truth, axis=1)]
        _save_picture(picture, rows, [f"σ={s:g}" for s in sigmas] + ["x0"])
    return results


def latent_frame_of_audio_tokens(num_audio: int, num_latent_frames: int, num_frames: int) -> torch.Tensor:
    """``[num_audio]`` long: the video latent frame holding each audio token's centre time.

    Audio token ``k`` spans ``[k, k+1) / num_audio`` of the clip; video frame ``f`` spans
    ``[f, f+1) / num_frames``; latent frame 0 holds frame 0 and latent frame ``j >= 1`` holds frames
    ``r(j-1)+1 .. rj`` (the causal video VAE, ``r = (num_frames - 1) / (num_latent_frames - 1)``).
    """
    for name, value in (
        ("num_audio", num_audio),
        ("num_latent_frames", num_latent_frames),
        ("num_frames", num_frames),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected a positive int, got {value!r}")
    if num_latent_frames == 1:
        return torch.zeros(num_audio, dtype=torch.long)
    if (num_frames - 1) % (num_latent_frames - 1):
        raise ValueError(
            f"num_frames - 1 ({num_frames - 1}) must be a multiple of num_latent_frames - 1 "
            f"({num_latent_frames - 1}) (a causal video VAE)"
        )
    ratio = (num_frames - 1) // (num_latent_frames - 1)
    frame = ((torch.arange(num_audio, dtype=torch.float64) + 0.5) * num_frames / num_audio).floor().long()
    return ((frame + ratio - 1) // ratio).clamp(0, num_latent_frames - 1)


def _time_locality(
    denoiser: Any,
    condition: Any,
    x_audio: torch.Tensor,
    sigma: float,
    *,
    num_frames: int,
    generator: torch.Generator,
) -> tuple[torch.Tensor, float, int, float]:
    """(the v2a audio estimate ``x̂0``; the sum over audio groups of the share of each group's gradient
    energy on the latent frames within one of its own; the number of groups with any gradient; the
    share an even reading gives, averaged over the groups) for ``audio_video_locality``."""
    video = condition.conditional_latents.detach().clone().requires_grad_(True)
    given = dataclasses.replace(condition, conditional_latents=video)
    device = x_audio.device
    with torch.enable_grad():
        _, u_audio = denoiser.raw(
            video,
            x_audio,
            video_sigma=torch.zeros(1, device=device),
            audio_sigma=torch.full((1,), sigma, device=device),
            condition=given,
        )
        estimate = x_audio - sigma * u_audio
        num_latent = video.shape[2]
        groups = latent_frame_of_audio_tokens(estimate.shape[-1], num_latent, num_frames)
        weights = torch.randn(estimate.shape, generator=generator).to(device)
        present = groups.unique().tolist()
        shares, counted, uniform = 0.0, 0, 0.0
        for g in present:
            tokens = (groups == g).nonzero().flatten().to(device)
            projection = (estimate[..., tokens] * weights[..., tokens]).sum()
            if not projection.requires_grad:  # the estimate does not depend on the video at all
                continue
            (grad,) = torch.autograd.grad(projection, video, retain_graph=True, allow_unused=True)
            if grad is None:
                continue
            per_frame = grad.double().square().sum(dim=(0, 1, 3, 4))
            total = float(per_frame.sum())
            if total > 0:
                shares += float(per_frame[max(g - 1, 0) : g + 2].sum()) / total
                counted += 1
        for g in present:
            uniform += (min(g + 1, num_latent - 1) - max(g - 1, 0) + 1) / num_latent / len(present)
    return estimate.detach(), shares, counted, uniform


def _middle_frame(pipe: Any, video_latents: torch.Tensor) -> np.ndarray:
    video = pipe.video_vae.decode(video_latents).float()
    frame = video[0, :, video.shape[2] // 2].clamp(-1, 1)
    return ((frame + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().numpy()


def _save_picture(path: str | os.PathLike[str], rows: list[np.ndarray], labels: list[str]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    height, width = rows[0].shape[:2]
    figure = Figure(figsize=(max(3.0, width / 40 + 1), len(rows) * (height / 40 + 0.25)), dpi=100)
    FigureCanvasAgg(figure)
    for r, (pixels, label) in enumerate(zip(rows, labels, strict=True)):
        ax = figure.add_subplot(len(rows), 1, r + 1)
        ax.imshow(pixels, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    with atomic_path(path, ".png") as temp:
        figure.savefig(temp, format="png", bbox_inches="tight")


def _sigma_list(text: str) -> list[float]:
    problem = f"expected comma-separated numbers in (0, 1], got {text!r}"
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(problem) from None
    if not values or not all(math.isfinite(v) and 0 < v <= 1 for v in values):
        raise argparse.ArgumentTypeError(problem)
    return values


def main(argv: Sequence[str] | None = None) -> int:
    from skyreels_v4.cli import positive_int
    from skyreels_v4.pipeline import SkyReelsV4Pipeline
    from skyreels_v4.training.evaluate import world_for_pipeline

    parser = argparse.ArgumentParser(
        prog="skyreels-v4 probe",
        description="Clean-estimate error of a trained model at each noise level on held-out world clips.",
    )
    parser.add_argument("--model", required=True, help="pipeline folder (e.g. outputs/quickstart/model)")
    parser.add_argument("--out", required=True, help="folder for probe.json and probe.png")
    parser.add_argument(
        "--sigmas", type=_sigma_list, default=list(DEFAULT_SIGMAS), help="noise levels (default: %(default)s)"
    )
    parser.add_argument("--clips", type=positive_int, default=8, help="held-out clips (default: %(default)s)")
    parser.add_argument("--size", type=positive_int, default=None, help="frame side (default: the model's)")
    parser.add_argument("--frames", type=positive_int, default=None, help="frames (default: the model's)")
    parser.add_argument("--max-objects", type=positive_int, default=2, help="objects per clip (default: 2)")
    parser.add_argument("--split", choices=[s.value for s in WorldSplit], default=WorldSplit.HELDOUT.value)
    parser.add_argument("--seed", type=int, default=0, help="world and noise seed (default: %(default)s)")
    args = parser.parse_args(argv)
    pipe = SkyReelsV4Pipeline.from_pretrained(args.model)
    world = world_for_pipeline(
        pipe, max_objects=args.max_objects, size=args.size, frames=args.frames, name=f"--model {args.model}"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = denoising_probe(
        pipe,
        world=world,
        sigmas=args.sigmas,
        num_clips=args.clips,
        seed=args.seed,
        split=args.split,
        picture=out / "probe.png",
    )
    atomic_write_json(out / "probe.json", results)
    print(
        "sigma  video_x0_mse  video_noise_sens  audio_x0_mse  audio_noise_sens  av_order_dep  "
        "av_content_dep  av_locality (uniform)"
    )
    for s, row in results.items():
        locality = row["audio_video_locality"]
        print(
            f"{s:>5}  {row['video_x0_mse']:12.4f}  {row['video_noise_sensitivity']:16.3f}  "
            f"{row['audio_x0_mse']:12.4f}  {row['audio_noise_sensitivity']:16.3f}  "
            f"{row['audio_video_dependence']:12.2e}  {row['audio_video_content_dependence']:14.2e}  "
            f"{'-' if locality is None else format(locality, '.3f'):>11} "
            f"({row['audio_video_locality_uniform']:.3f})"
        )
    print(f"wrote {out / 'probe.json'} and {out / 'probe.png'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
