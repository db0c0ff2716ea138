"""Where the dense t2v sampling time goes, ours vs diffusers' HunyuanVideoPipeline: one 4-step sample
each under torch.profiler, grouped by what each op does.

    python -m benchmarks.profile_pipeline_speed [--shapes]

Same setup as the "t2v 4 steps + CFG" group of benchmarks/test_pipeline_speed.py (D 256, 2 + 2
blocks, 1152 video tokens, CFG 5, one thread): one warm-up sample, then one profiled sample per side.
Prints self CPU time in linear layers, attention and element-wise ops, and the top ops. The breakdown
quoted in docs/model.md ("Sampling speed") comes from this script; ``--shapes`` also prints the top
ops grouped by input shape (the per-call cost of the single-stream projection's bias copy quoted there).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

from benchmarks import test_pipeline_speed as bench

GROUPS = {
    "linear": ("aten::addmm", "aten::mm"),
    "attention": ("aten::_scaled_dot_product_flash_attention_for_cpu",),
    "element-wise": ("aten::mul", "aten::cat", "aten::copy_", "aten::pow", "aten::sum", "aten::add"),
}


class _TempFolders:
    """What the benchmark's fixture needs of pytest's ``tmp_path_factory``."""

    def mktemp(self, name: str) -> Path:
        folder = Path(tempfile.mkdtemp()) / name
        folder.mkdir()
        return folder


def _samplers():
    theirs, ours, prepared = bench.dense_setup.__wrapped__(_TempFolders())
    e = bench._embeddings()

    def diffusers_sample():
        with torch.no_grad():
            return theirs(
                prompt_embeds=e.tokens,
                pooled_prompt_embeds=e.pooled,
                prompt_attention_mask=e.mask.long(),
                negative_prompt_embeds=e.tokens,
                negative_pooled_prompt_embeds=e.pooled,
                negative_prompt_attention_mask=e.mask.long(),
                true_cfg_scale=5.0,
                height=bench.HEIGHT,
                width=bench.WIDTH,
                num_frames=bench.FRAMES,
                num_inference_steps=bench.STEPS,
                guidance_scale=6.0,
                latents=prepared.video_noise.clone(),
                output_type="latent",
            ).frames

    return {"diffusers": diffusers_sample, "ours": lambda: ours.sample(prepared, progress=False)}


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m benchmarks.profile_pipeline_speed")
    parser.add_argument("--shapes", action="store_true", help="also group the top ops by input shape")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    for name, sample in _samplers().items():
        sample()  # warm-up
        with profile(activities=[ProfilerActivity.CPU], record_shapes=args.shapes) as prof:
            sample()
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events) / 1e6
        print(f"== {name}: self CPU {total:.2f} s")
        for group, ops in GROUPS.items():
            seconds = sum(e.self_cpu_time_total for e in events if e.key in ops) / 1e6
            print(f"   {group:<13} {seconds:6.2f} s")
        print(events.table(sort_by="self_cpu_time_total", row_limit=10, max_name_column_width=48))
        if args.shapes:
            by_shape = prof.key_averages(group_by_input_shape=True)
            print(by_shape.table(sort_by="self_cpu_time_total", row_limit=12, max_shapes_column_width=80))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
