"""Peak memory of one generation in each low-memory mode of the pipeline, against the default.

    python benchmarks/pipeline_memory.py                          # `small` transformer, CPU
    python benchmarks/pipeline_memory.py --preset tiny --steps 2  # quick
    python benchmarks/pipeline_memory.py --device cuda            # CUDA peak (the offload modes' point)

The parent saves one model folder (seeded random weights, the pipeline's folder layout). Every mode runs
in a fresh subprocess: load the folder, apply the mode (none / model offload / block offload / int8
weights), reset the peak counters (``5`` into ``/proc/self/clear_refs``;
``torch.cuda.reset_peak_memory_stats``), generate one clip, report the host peak (``VmHWM``), the host
memory after setup (``VmRSS``) and, on CUDA, ``max_memory_allocated``.
Outputs are compared with the default's latents (relative L2 error).

On a CPU-only machine compute and storage are the same memory, so the offload modes cannot lower the
host peak (they are reported to show their overhead); int8 weights lower it.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = ("none", "model", "block", "int8")


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def _build_folder(folder: Path, preset: str) -> int:
    import torch

    from skyreels_v4.model import SkyReelsV4Transformer, transformer_preset
    from skyreels_v4.pipeline import GenerationDefaults, SamplingConfig, SkyReelsV4Pipeline
    from skyreels_v4.text import EmbeddedTextEncoder, EmbeddedTextEncoderConfig
    from skyreels_v4.vae import FrameAudioCodec, PixelShuffleVideoCodec

    torch.manual_seed(0)
    video_vae = PixelShuffleVideoCodec(temporal_factor=4, spatial_factor=8)
    audio_vae = FrameAudioCodec(sample_rate=16000, hop_length=256)
    config = transformer_preset(
        preset,
        video_latent_channels=video_vae.latent_channels,
        audio_latent_channels=audio_vae.latent_channels,
    )
    transformer = SkyReelsV4Transformer(config).eval()
    text_encoder = EmbeddedTextEncoder(EmbeddedTextEncoderConfig(dim=config.video.text_dim))
    pipe = SkyReelsV4Pipeline(
        transformer=transformer,
        video_vae=video_vae,
        audio_vae=audio_vae,
        text_encoder=text_encoder,
        sampling=SamplingConfig(num_steps=2),
        defaults=GenerationDefaults(num_frames=17, height=64, width=64, fps=16.0),
    )
    pipe.save_pretrained(folder)
    return sum(p.numel() * p.element_size() for p in transformer.parameters())


def _child(folder: Path, mode: str, device: str, steps: int, latents: Path) -> dict:
    import torch

    from skyreels_v4.pipeline import GenerationRequest, SamplingConfig, SkyReelsV4Pipeline

    torch.set_num_threads(max(1, torch.get_num_threads()))
    pipe = SkyReelsV4Pipeline.from_pretrained(folder)
    if mode == "int8":
        pipe.quantize_int8()
    pipe.enable_offload({"int8": "none"}.get(mode, mode), device=device)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    Path("/proc/self/clear_refs").write_text("5")
    setup_kb = _status_kb("VmRSS")
    start = time.perf_counter()
    request = GenerationRequest(prompt="A red circle bounces. <sfx>A blip.</sfx>", seed=0)
    out = pipe(request, sampling=SamplingConfig(num_steps=steps), progress=False)
    seconds = time.perf_counter() - start
    torch.save({"video": out.video_latents, "audio": out.audio_latents}, latents)
    report = {
        "mode": mode,
        "device": device,
        "rss_after_setup_mb": setup_kb / 1024,
        "peak_rss_mb": _status_kb("VmHWM") / 1024,
        "seconds": seconds,
    }
    if device.startswith("cuda"):
        report["cuda_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="small", choices=["tiny", "small"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--steps", type=int, default=2)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--child", nargs=2, metavar=("FOLDER", "MODE"), help=argparse.SUPPRESS)
    parser.add_argument("--latents", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        folder, mode = args.child
        print(json.dumps(_child(Path(folder), mode, args.device, args.steps, Path(args.latents))))
        return 0

    import torch

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "model"
        weights = _build_folder(folder, args.preset)
        print(f"{args.preset} transformer: {weights / 2**20:.1f} MB of fp32 weights; device {args.device}")
        for mode in args.modes:
            latents = Path(tmp) / f"{mode}.pt"
            command = [sys.executable, __file__, "--child", str(folder), mode, "--device", args.device]
            command += ["--steps", str(args.steps), "--latents", str(latents)]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode:
                print(done.stderr[-2000:], file=sys.stderr)
                return done.returncode
            row = json.loads(done.stdout.strip().splitlines()[-1])
            result = torch.load(latents, weights_only=True)
            if rows:
                base = torch.load(Path(tmp) / f"{rows[0]['mode']}.pt", weights_only=True)
                row["rel_error"] = max(
                    float((result[k] - base[k]).norm() / base[k].norm()) for k in ("video", "audio")
                )
            else:
                row["rel_error"] = 0.0
            rows.append(row)
    base = rows[0]
    print(
        f"{'mode':<6} {'peak RSS MB':>12} {'x none':>7} {'RSS after setup MB':>19} {'s':>6} {'rel err':>8}",
        end="",
    )
    print(f" {'CUDA peak MB':>13} {'x none':>7}" if "cuda_peak_mb" in base else "")
    for row in rows:
        line = (
            f"{row['mode']:<6} {row['peak_rss_mb']:>12.1f} {row['peak_rss_mb'] / base['peak_rss_mb']:>7.2f} "
            f"{row['rss_after_setup_mb']:>19.1f} {row['seconds']:>6.2f} {row['rel_error']:>8.1e}"
        )
        if "cuda_peak_mb" in row:
            line += f" {row['cuda_peak_mb']:>13.1f} {row['cuda_peak_mb'] / base['cuda_peak_mb']:>7.2f}"
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
