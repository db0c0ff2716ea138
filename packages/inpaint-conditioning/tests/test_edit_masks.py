"""Random editing masks: binary keep masks, deterministic for a seed, with a non-empty edit."""

from __future__ import annotations

import pytest
import torch

from skyreels_inpaint_conditioning import EditMaskKind, TaskParameterError, random_edit_mask


@pytest.mark.parametrize("kind", list(EditMaskKind))
def test_deterministic_binary_nonempty(kind: EditMaskKind) -> None:
    masks = []
    for seed in (0, 0, 1):
        g = torch.Generator().manual_seed(seed)
        masks.append(random_edit_mask(num_frames=9, height=40, width=56, generator=g, kind=kind))
    a, b, c = masks
    assert a.dtype == torch.bool
    assert a.shape == (9, 40, 56)
    assert a.equal(b)
    assert not a.equal(c)  # another seed gives another mask
    assert bool((~a).any())  # something to edit
    assert bool(a.any())  # something kept


def test_kind_specific_structure() -> None:
    g = torch.Generator().manual_seed(3)
    box = random_edit_mask(num_frames=5, height=32, width=32, generator=g, kind="box")
    assert box.equal(box[:1].expand_as(box))  # static
    rows, cols = (~box[0]).nonzero().unbind(1)
    assert int((~box[0]).sum()) == (int(rows.max() - rows.min()) + 1) * (int(cols.max() - cols.min()) + 1)
    moving = random_edit_mask(num_frames=9, height=32, width=32, generator=g, kind=EditMaskKind.MOVING_BOX)
    sizes = (~moving).flatten(1).sum(1)
    assert sizes.unique().numel() == 1  # fixed box size in every frame
    span = random_edit_mask(num_frames=9, height=8, width=8, generator=g, kind="temporal_span")
    per_frame = span.flatten(1)
    assert bool((per_frame.all(1) | (~per_frame).all(1)).all())  # whole frames only
    edited = (~per_frame.all(1)).nonzero().flatten()
    assert edited.tolist() == list(range(int(edited.min()), int(edited.max()) + 1))  # contiguous
    out = random_edit_mask(num_frames=1, height=32, width=32, generator=g, kind="outpaint")
    rows, cols = out[0].nonzero().unbind(1)
    assert int(out[0].sum()) == (int(rows.max() - rows.min()) + 1) * (int(cols.max() - cols.min()) + 1)


def test_edit_mask_errors() -> None:
    g = torch.Generator().manual_seed(0)
    with pytest.raises(TaskParameterError, match="kind: expected one of box"):
        random_edit_mask(num_frames=5, height=8, width=8, generator=g, kind="lasso")
    with pytest.raises(TaskParameterError, match="temporal span edit needs at least 2 frames"):
        random_edit_mask(num_frames=1, height=8, width=8, generator=g, kind="temporal_span")
    # With kind=None a one-frame clip never gets a temporal span.
    for _ in range(20):
        assert random_edit_mask(num_frames=1, height=16, width=16, generator=g).shape == (1, 16, 16)


@pytest.mark.parametrize("num_frames", [5, 9, 17])
def test_temporal_spans_always_keep_a_latent_frame(num_frames: int) -> None:
    """Unaligned spans must not leave only part of every latent group kept (M would be all 0,
    turning an editing sample into text-to-video); seed 7 at F = 17 once kept only frame 16."""
    from skyreels_inpaint_conditioning import reduce_pixel_mask_to_latent

    for seed in range(400):
        g = torch.Generator().manual_seed(seed)
        keep = random_edit_mask(num_frames=num_frames, height=8, width=8, generator=g, kind="temporal_span")
        latent = reduce_pixel_mask_to_latent(keep[None, None])
        assert latent.any(), f"seed {seed}: kept frames {keep.flatten(1).all(1).nonzero().flatten().tolist()}"
        assert not keep.all()
