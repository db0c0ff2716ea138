"""FLOP accounting of the efficiency strategy: analytic VSA FLOPs == FlopCounterMode on real tensors."""

from __future__ import annotations

import math

import pytest
import torch

from skyreels_mmdit_blocks import joint_preset
from skyreels_refiner_vsa import cube_tiling, video_sparse_attention
from skyreels_refiner_vsa.efficiency import (
    EfficiencyScenario,
    VideoFormat,
    count_branch_flops,
    efficiency_table,
    flop_counter,
    main,
    vsa_attention_flops,
)


@pytest.mark.parametrize(("grid", "text", "keep"), [((5, 6, 7), 0, 2), ((5, 6, 7), 9, 1), ((4, 8, 8), 70, 3)])
def test_analytic_vsa_flops_match_the_flop_counter(make_inputs, grid, text, keep):
    x = make_inputs(grid, text=text, batch=2, heads=2, head_dim=16, dtype=torch.float32)
    x.pop("gate")
    counter = flop_counter()
    with counter:
        video_sparse_attention(**x, tiling=cube_tiling(grid), keep=keep, backend="torch")
    expected = vsa_attention_flops(
        batch=2, num_video=math.prod(grid), num_dense=text, heads=2, head_dim=16, keep=keep
    )
    assert counter.get_total_flops() == expected


def test_dense_branch_count_separates_the_joint_attention():
    config = joint_preset("tiny").video
    flops = count_branch_flops(config, (3, 8, 8), text_tokens=5)
    length = 3 * 4 * 4 + 5
    assert flops.attention == config.num_blocks * 4 * config.num_heads * config.head_dim * length**2
    assert flops.other > 0


def test_video_formats_give_the_papers_latent_grids():
    assert VideoFormat(width=1920, height=1080, fps=32, seconds=15).latent_shape() == (121, 136, 240)
    assert VideoFormat(width=848, height=480, fps=16, seconds=15).latent_shape() == (61, 60, 106)
    assert VideoFormat(width=832, height=480, fps=16, seconds=81 / 16 - 1 / 16).pixel_frames == 81


def test_strategy_table_on_the_tiny_preset():
    scenario = EfficiencyScenario(
        target=VideoFormat(width=256, height=256, fps=32, seconds=2),
        low_res=VideoFormat(width=128, height=128, fps=16, seconds=2),
        num_keyframes=2,
        text_tokens=16,
        sparsity=0.875,
    )
    rows = {
        row["stage"].split(",")[0].split(":")[0]: row
        for row in efficiency_table(scenario, joint_preset("tiny").video)
    }
    direct, base = rows["direct generation (target format)"]["flops"], rows["base"]["flops"]
    dense, sparse = (r["flops"] for r in efficiency_table(scenario, joint_preset("tiny").video)[2:4])
    assert sparse.attention < dense.attention / 4 and sparse.other > dense.other  # + gates
    assert base.total < direct.total
    assert rows["strategy = base + refiner (VSA)"]["flops"].total == base.total + sparse.total


def test_command_prints_a_table(capsys):
    assert main(["--preset", "tiny", "--keyframes", "2", "--steps", "50", "50", "10"]) == 0
    out = capsys.readouterr().out
    assert "| direct generation (target format) | 987,360 |" in out and "50 base + 10 refiner steps" in out
