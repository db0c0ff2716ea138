"""Evaluate exported audio-VAE weights on held-out clips: SI-SNR, mel distance, MR-STFT distance.

``python -m skyreels_v4.audio_vae.evaluate --weights outputs/audio_vae_tiny/weights/init
--weights outputs/audio_vae_tiny/weights/final --data outputs/data/audio_vae/heldout``

Each clip is loaded at the model's rate and channel count, cropped to a whole number of latents
(the ``floor`` convention of ``skyreels_audio_vae.time_alignment``), encoded to the posterior mean
and decoded (chunked with overlap beyond ``--chunk-latents``). Metrics (``metrics.py``) are
computed per clip and averaged per kind (speech, tone, noise, chirp: from the folder's
``manifest.json`` or the file-name prefix) and over all clips. Prints a markdown table; ``--out``
also writes JSON.

``--chunk-agreement SECONDS`` also joins the held-out clips into one long clip (e.g. 15 s) and
compares chunked with whole-clip encode+decode (:func:`chunked_agreement`): the largest error
outside and inside the crossfade regions, relative to the clip's peak, and the largest activation
tensor each way (recorded with forward hooks).
"""

from __future__ import annotations

import argparse
import json
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

import torch

from skyreels_audio_vae import (
    AudioVAE,
    chunk_windows,
    chunked_decode,
    chunked_encode,
    crop_to_hop_multiple,
    load_audio_vae,
)
from skyreels_v4.audio_vae.audio_io import atomic_write, list_audio_files, load_audio, write_wav
from skyreels_v4.audio_vae.metrics import ReconstructionMetrics

__all__ = ["chunked_agreement", "evaluate_weights", "load_checked_audio_vae", "main"]


def load_checked_audio_vae(weights: str | os.PathLike[str]) -> AudioVAE:
    """``load_audio_vae`` with typed errors naming the folder, refusing NaN/inf weights."""
    from safetensors import SafetensorError

    from skyreels_v4.errors import FileFormatError
    from skyreels_v4.guards import check_finite_state

    if not Path(weights).is_dir():
        raise FileFormatError(weights, "expected an exported audio VAE weights folder, but it is missing")
    try:
        model = load_audio_vae(weights)
    except (OSError, ValueError, TypeError, KeyError, RuntimeError, SafetensorError) as error:
        first = " ".join(str(error).split())[:300]
        raise FileFormatError(
            weights, f"cannot load the audio VAE weights ({type(error).__name__}: {first})"
        ) from error
    check_finite_state(model.state_dict(), str(weights))
    return model


def _kinds(data: Path, files: list[Path]) -> dict[Path, str]:
    manifest_path = data.parent / "manifest.json"
    by_name: dict[str, str] = {}
    if manifest_path.is_file():
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        for items in manifest.values():
            by_name.update({item["file"]: item["kind"] for item in items})
    return {f: by_name.get(f.name, f.stem.split("_")[0]) for f in files}


@torch.no_grad()
def reconstruct(
    model: AudioVAE, waveform_BCT: torch.Tensor, *, chunk_latents: int, overlap_latents: int
) -> torch.Tensor:
    """Posterior-mean reconstruction of ``[B, channels, T]`` (T a multiple of the hop)."""
    if waveform_BCT.shape[-1] // model.hop_length <= chunk_latents:
        return model.decode(model.encode(waveform_BCT).mode())
    latents = chunked_encode(
        model, waveform_BCT, chunk_latents=chunk_latents, overlap_latents=overlap_latents
    ).mode()
    return chunked_decode(model, latents, chunk_latents=chunk_latents, overlap_latents=overlap_latents)


@torch.no_grad()
def chunked_agreement(
    model: AudioVAE, waveform_BCT: torch.Tensor, *, chunk_latents: int, overlap_latents: int
) -> dict[str, float]:
    """Whole-clip vs chunked encode (posterior mean) + decode of ``[B, channels, T]``.

    Returns the max |difference| of the latents and of the waveforms, outside and inside the blend
    regions, relative to the max |value| of the whole-clip result, plus the largest activation
    (elements) seen by any layer in each mode.
    """
    hop = model.hop_length
    num_latents = waveform_BCT.shape[-1] // hop
    sizes: list[int] = []
    leaves = [m for m in model.modules() if not list(m.children())]
    hooks = [m.register_forward_hook(lambda _m, _i, o: sizes.append(o.numel())) for m in leaves]
    try:
        whole_latents = model.encode(waveform_BCT).mode()
        whole_audio = model.decode(whole_latents)
        whole_peak = max(sizes)
        sizes.clear()
        kwargs = {"chunk_latents": chunk_latents, "overlap_latents": overlap_latents}
        chunked_latents = chunked_encode(model, waveform_BCT, **kwargs).mode()
        chunked_audio = chunked_decode(model, whole_latents, **kwargs)
        chunked_peak = max(sizes)
    finally:
        for hook in hooks:
            hook.remove()
    blend = torch.zeros(num_latents, dtype=torch.bool)
    for start, _ in chunk_windows(num_latents, **kwargs)[1:]:
        blend[start : start + overlap_latents] = True
    result = {"whole_peak_activation": float(whole_peak), "chunked_peak_activation": float(chunked_peak)}
    for name, whole, chunked, per_latent in (
        ("latent", whole_latents, chunked_latents, 1),
        ("audio", whole_audio, chunked_audio, hop),
    ):
        error = (chunked - whole).abs().amax(dim=(0, 1)) / whole.abs().max()
        mask = blend.repeat_interleave(per_latent)
        result[f"{name}_error_outside_blend"] = float(error[~mask].max())
        result[f"{name}_error_in_blend"] = float(error[mask].max()) if mask.any() else 0.0
    return result


def evaluate_weights(
    weights: str | os.PathLike[str],
    data: str | os.PathLike[str],
    *,
    chunk_latents: int = 128,
    overlap_latents: int = 16,
    write_audio: str | os.PathLike[str] | None = None,
) -> dict[str, dict[str, float]]:
    """``{kind or "all": {"clips", "si_snr_db", "mel_distance", "stft_distance"}}`` for one weights folder."""
    model = load_checked_audio_vae(weights).eval()
    cfg = model.config
    metrics = ReconstructionMetrics(sample_rate=cfg.sample_rate)
    files = list_audio_files(data)
    kinds = _kinds(Path(data), files)
    per_kind: dict[str, list[tuple[float, float, float]]] = defaultdict(list)
    for path in files:
        clip = crop_to_hop_multiple(
            load_audio(path, sample_rate=cfg.sample_rate, channels=cfg.audio_channels), model.hop_length
        )
        if clip.shape[-1] == 0:
            continue
        target = clip[None]
        recon = reconstruct(model, target, chunk_latents=chunk_latents, overlap_latents=overlap_latents)
        scores = metrics(recon, target)
        row = (float(scores.si_snr_db), float(scores.mel_distance), float(scores.stft_distance))
        per_kind[kinds[path]].append(row)
        per_kind["all"].append(row)
        if write_audio is not None:
            write_wav(Path(write_audio) / path.name, recon[0], cfg.sample_rate)
    if not per_kind:
        raise ValueError(f"data: no usable wav/flac clips in {data}")
    return {
        kind: {
            "clips": len(rows),
            "si_snr_db": sum(r[0] for r in rows) / len(rows),
            "mel_distance": sum(r[1] for r in rows) / len(rows),
            "stft_distance": sum(r[2] for r in rows) / len(rows),
        }
        for kind, rows in sorted(per_kind.items(), key=lambda kv: (kv[0] == "all", kv[0]))
    }


from skyreels_v4.cli import nonnegative_int, positive_float, positive_int  # noqa: E402
from skyreels_v4.errors import FileFormatError  # noqa: E402
from skyreels_v4.runs.preflight import check_writable  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m skyreels_v4.audio_vae.evaluate", description=(__doc__ or "").split("\n")[0]
    )
    parser.add_argument(
        "--weights", action="append", required=True, help="exported weights folder (repeatable)"
    )
    parser.add_argument("--data", required=True, help="folder of held-out wav/flac clips")
    parser.add_argument("--chunk-latents", type=positive_int, default=128)
    parser.add_argument("--overlap-latents", type=nonnegative_int, default=16)
    parser.add_argument("--out", default=None, help="also write the results as JSON here")
    parser.add_argument(
        "--write-audio", default=None, help="write reconstructions of the last --weights here"
    )
    parser.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads")
    parser.add_argument(
        "--chunk-agreement",
        type=positive_float,
        default=None,
        metavar="SECONDS",
        help="also compare chunked with whole-clip processing on the held-out clips joined to this length",
    )
    args = parser.parse_args(argv)
    if args.overlap_latents >= args.chunk_latents:
        raise ValueError(
            f"--overlap-latents: expected fewer than --chunk-latents={args.chunk_latents}, "
            f"got {args.overlap_latents}"
        )
    for weights in args.weights:
        if not Path(weights).is_dir():
            raise FileFormatError(
                weights, "--weights: expected an exported weights folder (config.json + safetensors)"
            )
    if not Path(args.data).is_dir():
        raise FileFormatError(args.data, "--data: expected a folder of wav/flac clips, but it is missing")
    if not list_audio_files(args.data):
        raise FileFormatError(args.data, "--data: expected wav/flac clips, found none")
    for flag, target in (("--out", args.out), ("--write-audio", args.write_audio)):
        if target is not None:
            check_writable(Path(target).parent if flag == "--out" else target, flag)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = {}
    for i, weights in enumerate(args.weights):
        write_audio = args.write_audio if i == len(args.weights) - 1 else None
        results[weights] = evaluate_weights(
            weights,
            args.data,
            chunk_latents=args.chunk_latents,
            overlap_latents=args.overlap_latents,
            write_audio=write_audio,
        )
    print("| weights | kind | clips | SI-SNR (dB) ↑ | mel distance ↓ | MR-STFT distance ↓ |")
    print("|---|---|---:|---:|---:|---:|")
    for weights, table in results.items():
        for kind, row in table.items():
            print(
                f"| {weights} | {kind} | {row['clips']} | {row['si_snr_db']:.2f} | "
                f"{row['mel_distance']:.3f} | {row['stft_distance']:.3f} |"
            )
    if args.chunk_agreement:
        print()
        print(
            "| weights | clip (s) | chunk / overlap (latents) | latent err. outside / in blend | "
            "audio err. outside / in blend | peak activation whole / chunked |"
        )
        print("|---|---:|---:|---:|---:|---:|")
        for weights in args.weights:
            model = load_checked_audio_vae(weights).eval()
            cfg = model.config
            clips = [
                load_audio(p, sample_rate=cfg.sample_rate, channels=cfg.audio_channels)
                for p in list_audio_files(args.data)
            ]
            joined = torch.cat(clips, dim=-1)
            target = int(args.chunk_agreement * cfg.sample_rate)
            joined = joined.repeat(1, -(-target // joined.shape[-1]))[:, :target]
            joined = crop_to_hop_multiple(joined, model.hop_length)[None]
            agreement = chunked_agreement(
                model, joined, chunk_latents=args.chunk_latents, overlap_latents=args.overlap_latents
            )
            results[weights]["chunk_agreement"] = agreement  # type: ignore[assignment]
            print(
                f"| {weights} | {joined.shape[-1] / cfg.sample_rate:.2f} | "
                f"{args.chunk_latents} / {args.overlap_latents} | "
                f"{agreement['latent_error_outside_blend']:.1e} / {agreement['latent_error_in_blend']:.1e} | "
                f"{agreement['audio_error_outside_blend']:.1e} / {agreement['audio_error_in_blend']:.1e} | "
                f"{agreement['whole_peak_activation']:.3g} / {agreement['chunked_peak_activation']:.3g} |"
            )
    if args.out:
        text = json.dumps(results, indent=2) + "\n"
        atomic_write(args.out, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
