"""In-context references (paper 3.3, eqs. 8-9): packing, positions, masks, dropping."""

from __future__ import annotations

import pytest
import torch
from einops import rearrange

from skyreels_av_rope import AudioTimeAlignment, audio_positions
from skyreels_inpaint_conditioning import (
    ReferencePackingError,
    pack_audio_references,
    pack_video_references,
)


def _refs() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    image = torch.randn(2, 4, 1, 6, 4, generator=gen)  # an image reference, 6 x 4 latent
    clip = torch.randn(2, 4, 3, 4, 8, generator=gen)  # a 3-latent-frame clip, 4 x 8 latent
    return [image, clip]


def test_packing_layout_and_padding() -> None:
    image, clip = _refs()
    packed = pack_video_references([image, clip], video_grid=(5, 6, 8), patch_size=(1, 2, 2))
    assert packed.latents.shape == (2, 4, 4, 6, 8)  # T_r = 1 + 3, padded to max(6, 4) x max(4, 8)
    torch.testing.assert_close(packed.latents[:, :, :1, :, :4], image)
    torch.testing.assert_close(packed.latents[:, :, 1:, :4, :], clip)
    assert packed.latents[:, :, :1, :, 4:].eq(0).all()
    assert packed.latents[:, :, 1:, 4:].eq(0).all()
    assert packed.valid_mask[:, :, 0, :, :4].all()
    assert not packed.valid_mask[:, :, 0, :, 4:].any()
    assert packed.valid_mask[:, :, 1:, :4].all()
    assert not packed.valid_mask[:, :, 1:, 4:].any()
    assert packed.grids == ((1, 3, 4), (3, 3, 4))
    z = packed.concat_input()
    assert z.shape == (2, 9, 4, 6, 8)
    torch.testing.assert_close(z[:, :4], packed.latents)
    torch.testing.assert_close(z[:, 4:8], packed.latents)
    torch.testing.assert_close(z[:, 8:], packed.valid_mask.float())


def test_positions_are_negative_ordered_and_spatially_preserved() -> None:
    packed = pack_video_references(_refs(), video_grid=(5, 6, 8), patch_size=(1, 2, 2))
    num_ref = packed.num_reference_tokens
    assert num_ref == (1 + 3) * 3 * 4
    assert packed.num_video_tokens == 5 * 3 * 4
    ref_t = packed.positions[:num_ref, 0]
    vid_t = packed.positions[num_ref:, 0]
    # Eq. 9: reference frames at t = -N_cond + i (N_cond = 4 latent frames), video at t = 0..4.
    assert ref_t.unique().tolist() == [-4.0, -3.0, -2.0, -1.0]
    assert bool((ref_t < 0).all())
    assert bool((torch.diff(ref_t) >= 0).all())
    assert vid_t.unique().tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert ref_t[:12].eq(-4).all()  # the image reference comes first, as given
    # Spatial indices preserved: same (h, w) pattern as the video's first frame.
    torch.testing.assert_close(packed.positions[:12, 1:], packed.positions[num_ref : num_ref + 12, 1:])


def test_masks_and_drop_index() -> None:
    packed = pack_video_references(_refs(), video_grid=(5, 6, 8), patch_size=(1, 2, 2))
    num_ref, num_vid = packed.num_reference_tokens, packed.num_video_tokens
    assert packed.loss_mask.shape == (2, num_ref + num_vid)
    assert packed.loss_mask[:, :num_ref].eq(0).all()
    assert packed.loss_mask[:, num_ref:].eq(1).all()
    # Key validity: image tokens with w-patch index >= 2 are pure padding, clip tokens with h >= 2.
    want = rearrange(packed.valid_mask, "b c t (h p) (w q) -> b (t h w) (c p q)", p=2, q=2).any(-1)
    assert packed.key_valid[:, :num_ref].equal(want)
    image_tokens = packed.key_valid[0, :12].view(3, 4)
    assert image_tokens[:, :2].all()
    assert not image_tokens[:, 2:].any()
    assert int((~packed.key_valid[0]).sum()) == 3 * 2 + 3 * 1 * 4  # 6 image + 12 clip padding tokens
    assert packed.key_valid[:, num_ref:].all()
    # Dropping the references recovers the generated tokens exactly.
    video_tokens = torch.randn(2, num_vid, 8)
    joint = torch.cat([torch.randn(2, num_ref, 8), video_tokens], dim=1)
    assert packed.drop_references(joint).equal(video_tokens)
    assert joint[:, packed.generated_index].equal(video_tokens)
    with pytest.raises(ReferencePackingError, match="tokens: expected"):
        packed.drop_references(video_tokens)


def test_patch_and_spatial_size_options() -> None:
    _image, clip = _refs()
    packed = pack_video_references([clip], video_grid=(4, 4, 8), patch_size=(1, 1, 1), spatial_size=(6, 10))
    assert packed.latents.shape == (2, 4, 3, 6, 10)
    assert packed.positions[: packed.num_reference_tokens, 0].unique().tolist() == [-3.0, -2.0, -1.0]
    odd = torch.randn(2, 4, 1, 5, 7)  # not a multiple of the 2x2 patch: padded up to 6 x 8
    packed = pack_video_references([odd], video_grid=(1, 2, 2))
    assert packed.latents.shape == (2, 4, 1, 6, 8)


def test_reference_errors() -> None:
    image, clip = _refs()
    with pytest.raises(
        ReferencePackingError, match=r"references\[1\]: expected batch and channels \(2, 4\).*\(2, 3\)"
    ):
        pack_video_references([image, clip[:, :3]], video_grid=(5, 6, 8))
    with pytest.raises(
        ReferencePackingError,
        match=r"references\[0\]: latent size \(6, 4\) does not fit spatial_size \(4, 8\)",
    ):
        pack_video_references([image], video_grid=(5, 6, 8), spatial_size=(4, 8))
    with pytest.raises(ReferencePackingError, match="t divisible by the temporal patch 2"):
        pack_video_references([clip], video_grid=(4, 6, 8), patch_size=(2, 2, 2))
    with pytest.raises(ReferencePackingError, match="video_grid: expected latent"):
        pack_video_references([clip], video_grid=(5, 5, 8))
    with pytest.raises(ReferencePackingError, match="non-empty sequence"):
        pack_video_references([], video_grid=(5, 6, 8))
    with pytest.raises(ReferencePackingError, match=r"expected shape \[B, C, t, h, w\]"):
        pack_video_references([image[0]], video_grid=(5, 6, 8))
    with pytest.raises(ReferencePackingError, match="dtype"):
        pack_video_references([image, clip.double()], video_grid=(5, 6, 8))


@pytest.mark.parametrize("alignment", [AudioTimeAlignment.RATIO, AudioTimeAlignment.TEMPORAL_CHANNELS_ONLY])
def test_audio_references(alignment: AudioTimeAlignment) -> None:
    gen = torch.Generator().manual_seed(1)
    refs = [torch.randn(2, 8, 5, generator=gen), torch.randn(2, 8, 3, generator=gen)]
    generated = audio_positions(218, alignment=alignment, num_video_latents=21)
    packed = pack_audio_references(refs, generated_positions=generated)
    assert packed.latents.shape == (2, 8, 8)
    assert packed.lengths == (5, 3)
    torch.testing.assert_close(packed.latents[:, :, 5:], refs[1])
    step = 21 / 218
    want_t = torch.arange(-8, 0, dtype=torch.float64) * step
    torch.testing.assert_close(packed.positions[:8, 0].double(), want_t, rtol=0, atol=1e-6)
    torch.testing.assert_close(packed.positions[8:], generated)
    if generated.shape[1] == 3:
        assert packed.positions[:8, 1:].eq(0).all()
    assert packed.loss_mask[:, :8].eq(0).all()
    assert packed.loss_mask[:, 8:].eq(1).all()
    assert packed.key_valid.all()
    audio_tokens = torch.randn(2, 218, 4)
    assert packed.drop_references(torch.cat([torch.randn(2, 8, 4), audio_tokens], 1)).equal(audio_tokens)


def test_audio_reference_errors() -> None:
    generated = audio_positions(10, alignment=AudioTimeAlignment.RATIO, num_video_latents=3)
    with pytest.raises(ReferencePackingError, match=r"references\[1\]: expected batch/channels \(1, 8\)"):
        pack_audio_references([torch.randn(1, 8, 4), torch.randn(1, 6, 4)], generated_positions=generated)
    with pytest.raises(ReferencePackingError, match="evenly increasing"):
        pack_audio_references([torch.randn(1, 8, 4)], generated_positions=generated.flip(0))
    with pytest.raises(ReferencePackingError, match=r"\[L_a >= 2, A\]"):
        pack_audio_references([torch.randn(1, 8, 4)], generated_positions=generated[:1])
