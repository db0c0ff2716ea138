"""Refiner training triples: the degradation, determinism, keyframes, masks."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from skyreels_refiner_vsa import interpolated_num_frames, upsample_latents
from skyreels_v4.errors import PreflightError
from skyreels_v4.refiner import ProceduralRefinerTriples, RefinerTripleDataModule, downsample_latents


def _dataset(**overrides):
    args = {
        "length": 8,
        "seed": 0,
        "latent_channels": 4,
        "high_res_shape": (9, 16, 16),
        "keyframe_indices": (0, 8),
        "text_tokens": 8,
        "text_dim": 32,
        "inpaint_probability": 0.5,
    }
    return ProceduralRefinerTriples(**{**args, **overrides})


def test_downsampling_keeps_every_other_frame_and_averages_2x2():
    x = torch.randn(2, 3, 9, 8, 6)
    low = downsample_latents(x)
    assert low.shape == (2, 3, 5, 4, 3)
    torch.testing.assert_close(low[:, :, 2, 1, 0], x[:, :, 4, 2:4, 0:2].mean(dim=(-1, -2)))
    # Frame interpolation inverts the time part exactly on the frames it keeps.
    up = upsample_latents(downsample_latents(x, space_factor=1), (interpolated_num_frames(5, 2), 8, 6))
    torch.testing.assert_close(up[:, :, ::2], x[:, :, ::2])
    with pytest.raises(ValueError, match="must have T - 1 divisible by 2"):
        downsample_latents(torch.zeros(1, 1, 8, 4, 4))


def test_items_are_deterministic_and_consistent():
    data = _dataset()
    a, b = data[3], _dataset()[3]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(data[3]["high_res"], data[4]["high_res"])
    assert a["high_res"].shape == (4, 9, 16, 16) and a["low_res"].shape == (4, 5, 8, 8)
    torch.testing.assert_close(a["low_res"], downsample_latents(a["high_res"]))
    torch.testing.assert_close(a["keyframes"], a["high_res"][:, [0, 8]])
    assert a["keep_mask"].shape == (1, 9, 16, 16) and set(a["keep_mask"].unique().tolist()) <= {0.0, 1.0}
    valid = int(a["text_mask"].sum())
    assert 4 <= valid <= 8 and torch.count_nonzero(a["text_tokens"][valid:]) == 0
    boxes = [bool(data[i]["keep_mask"].any()) for i in range(8)]
    assert any(boxes) and not all(boxes)  # inpainting with probability 0.5


def test_datamodule_batches():
    dm = RefinerTripleDataModule(num_train=8, num_val=4, batch_size=4)
    batch = next(iter(dm.train_dataloader()))
    assert batch["high_res"].shape == (4, 4, 9, 16, 16) and batch["keyframe_indices"].tolist() == [[0, 8]] * 4
    val = next(iter(dm.val_dataloader()))
    assert not torch.equal(val["high_res"], batch["high_res"])


def _trainer(world: int, rank: int, *, distributed_sampler: bool = False) -> SimpleNamespace:
    """What ``data_parallel_of`` reads from a Lightning trainer."""
    return SimpleNamespace(
        world_size=world,
        _accelerator_connector=SimpleNamespace(use_distributed_sampler=distributed_sampler),
        strategy=SimpleNamespace(distributed_sampler_kwargs={"num_replicas": world, "rank": rank}),
    )


def test_datamodule_shards_train_and_validation_over_replicas():
    items = {}
    for rank in (0, 1):
        dm = RefinerTripleDataModule(num_train=8, num_val=5, batch_size=2)
        dm.trainer = _trainer(2, rank)
        train = [b["index"] for b in dm.train_dataloader()]
        val = [b["index"] for b in dm.val_dataloader()]
        assert len(train) == 2 and len(val) == 1  # 5 val clips: 2 per replica, as many steps each
        items[rank] = (torch.cat(train).tolist(), torch.cat(val).tolist())
    assert sorted(items[0][0] + items[1][0]) == list(range(8))
    assert sorted(items[0][1] + items[1][1]) == [0, 1, 2, 3]  # in order, position r, r + 2
    dm = RefinerTripleDataModule(num_train=8, num_val=4, batch_size=2)
    dm.trainer = _trainer(2, 0, distributed_sampler=True)
    with pytest.raises(
        PreflightError, match="use_distributed_sampler: must be false with RefinerTripleDataModule"
    ):
        dm.train_dataloader()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"high_res_shape": (8, 16, 16)}, "must have odd T and even H, W"),
        ({"keyframe_indices": (0, 9)}, r"keyframe_indices must be distinct frames in \[0, 9\)"),
        ({"inpaint_probability": 1.5}, r"inpaint_probability must lie in \[0, 1\]"),
    ],
)
def test_bad_arguments(overrides, message):
    with pytest.raises(ValueError, match=message):
        _dataset(**overrides)
