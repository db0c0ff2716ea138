"""Per task, M on the latent grid equals the paper's formula (section 3.2); task errors."""

from __future__ import annotations

import pytest
import torch

from skyreels_inpaint_conditioning import (
    ClipShape,
    CombinedTask,
    ConditioningShapeError,
    ImageInpainting,
    ImageToVideo,
    MaskValueError,
    StartEndInterpolation,
    TaskKind,
    TaskParameterError,
    TaskSpec,
    TextToVideo,
    VideoEditing,
    VideoExtension,
    build_inpaint_condition,
    reduce_pixel_mask_to_latent_loop,
)

F, H, W = 17, 32, 48  # latent grid T=5, h=4, w=6
T = 5


def latent_mask(task, vae, video: torch.Tensor) -> torch.Tensor:
    return build_inpaint_condition(task, vae=vae, source_video=video).latent_mask


def paper_mask(t_condition: list[int]) -> torch.Tensor:
    """M[t] = 1 for t in t_condition, else 0, broadcast over (h, w)."""
    m = torch.zeros(2, 1, T, 4, 6)
    m[:, :, t_condition] = 1
    return m


def test_text_to_video_is_all_zero(pooling_vae, random_video) -> None:
    torch.testing.assert_close(latent_mask(TextToVideo(), pooling_vae, random_video), paper_mask([]))


def test_image_to_video_first_latent(pooling_vae, random_video) -> None:
    torch.testing.assert_close(latent_mask(ImageToVideo(), pooling_vae, random_video), paper_mask([0]))


@pytest.mark.parametrize(
    ("k", "kept_latents"),
    [(1, 1), (2, 1), (4, 1), (5, 2), (8, 2), (9, 3), (13, 4), (16, 4)],
)
def test_extension_maps_pixel_k_to_latent_prefix(
    pooling_vae, random_video, k: int, kept_latents: int
) -> None:
    # Paper: M[t < k'] = 1 with k' = 1 + (k - 1) // 4 latent frames (a group counts only when whole).
    assert kept_latents == 1 + (k - 1) // 4
    got = latent_mask(VideoExtension(num_kept_frames=k), pooling_vae, random_video)
    torch.testing.assert_close(got, paper_mask(list(range(kept_latents))))


def test_interpolation_first_and_last(pooling_vae, random_video) -> None:
    got = latent_mask(StartEndInterpolation(), pooling_vae, random_video)
    torch.testing.assert_close(got, paper_mask([0, T - 1]))
    # Longer end clips condition more latent frames at the end.
    got = latent_mask(StartEndInterpolation(num_end_frames=8), pooling_vae, random_video)
    torch.testing.assert_close(got, paper_mask([0, T - 2, T - 1]))


def test_editing_mask_is_reduced_conservatively(pooling_vae, random_video) -> None:
    gen = torch.Generator().manual_seed(7)
    per_frame = torch.rand(F, H, W, generator=gen) < 0.995  # sparse holes
    per_frame[:, :8, :8] = True  # one latent column fully kept in every frame
    got = latent_mask(VideoEditing(keep_mask=per_frame), pooling_vae, random_video)
    want = reduce_pixel_mask_to_latent_loop(per_frame[None, None].expand(2, 1, F, H, W))
    torch.testing.assert_close(got, want)
    assert got[:, :, :, 0, 0].eq(1).all()
    assert 0 < int(got.sum()) < got.numel()

    fixed = torch.ones(H, W)
    fixed[10:20, 20:30] = 0  # touches latent rows 1-2, columns 2-3
    got = latent_mask(VideoEditing(keep_mask=fixed), pooling_vae, random_video)
    want = torch.ones(2, 1, T, 4, 6)
    want[:, :, :, 1:3, 2:4] = 0
    torch.testing.assert_close(got, want)


def test_image_inpainting_one_frame(pooling_vae) -> None:
    image = torch.zeros(1, 3, 1, 16, 16)
    keep = torch.ones(16, 16, dtype=torch.bool)
    keep[9, 2] = False
    got = latent_mask(ImageInpainting(keep_mask=keep), pooling_vae, image)
    assert got[0, 0, 0].tolist() == [[1.0, 1.0], [0.0, 1.0]]


def test_combined_is_union_on_pixels(pooling_vae, random_video) -> None:
    keep = torch.zeros(H, W, dtype=torch.bool)
    keep[:, :16] = True  # left two latent columns kept in every frame
    task = CombinedTask(parts=(VideoExtension(num_kept_frames=5), VideoEditing(keep_mask=keep)))
    got = latent_mask(task, pooling_vae, random_video)
    want = paper_mask([0, 1])
    want[:, :, :, :, :2] = 1
    torch.testing.assert_close(got, want)
    assert task.label == "video_extension+video_editing"
    assert task.kind is TaskKind.COMBINED

    # Interpolation + editing: start/end whole, the kept region in between.
    task = CombinedTask(parts=(StartEndInterpolation(), VideoEditing(keep_mask=keep)))
    got = latent_mask(task, pooling_vae, random_video)
    want = paper_mask([0, T - 1])
    want[:, :, :, :, :2] = 1
    torch.testing.assert_close(got, want)

    # Union on pixels, not on latents: two halves of one latent group make a condition together.
    first_half = torch.zeros(F, H, W, dtype=torch.bool)
    first_half[:7] = True  # frames 0..6: latent 0, 1 whole, latent 2 half (5, 6)
    second_half = torch.zeros(F, H, W, dtype=torch.bool)
    second_half[7:9] = True  # frames 7, 8 complete latent 2
    task = CombinedTask(parts=(VideoEditing(keep_mask=first_half), VideoEditing(keep_mask=second_half)))
    torch.testing.assert_close(latent_mask(task, pooling_vae, random_video), paper_mask([0, 1, 2]))


def test_task_errors(pooling_vae, random_video) -> None:
    with pytest.raises(
        TaskParameterError, match=r"num_kept_frames: expected 1 <= num_kept_frames <= 16.*got 17"
    ):
        latent_mask(VideoExtension(num_kept_frames=17), pooling_vae, random_video)
    with pytest.raises(TaskParameterError, match=r"num_kept_frames.*got 0"):
        latent_mask(VideoExtension(num_kept_frames=0), pooling_vae, random_video)
    with pytest.raises(TaskParameterError, match=r"num_end_frames.*would not condition it.*got 1"):
        latent_mask(StartEndInterpolation(num_end_frames=1), pooling_vae, random_video)
    with pytest.raises(TaskParameterError, match=r"num_start_frames.*got 13"):
        latent_mask(StartEndInterpolation(num_start_frames=13), pooling_vae, random_video)
    with pytest.raises(ConditioningShapeError, match=r"keep_mask: expected shape \[32, 48\].*got \[32, 40\]"):
        latent_mask(VideoEditing(keep_mask=torch.ones(32, 40)), pooling_vae, random_video)
    with pytest.raises(ConditioningShapeError, match=r"keep_mask: expected shape \[17, 32, 48\]"):
        latent_mask(VideoEditing(keep_mask=torch.ones(9, 32, 48)), pooling_vae, random_video)
    with pytest.raises(ConditioningShapeError, match=r"\[H, W\] or \[F, H, W\]"):
        VideoEditing(keep_mask=torch.ones(1, 2, 32, 48))
    with pytest.raises(MaskValueError, match="keep_mask: expected a binary mask"):
        VideoEditing(keep_mask=torch.full((32, 48), 0.3))
    with pytest.raises(ConditioningShapeError, match="image inpainting needs a one-frame clip"):
        latent_mask(ImageInpainting(keep_mask=torch.ones(32, 48)), pooling_vae, random_video)
    with pytest.raises(TaskParameterError, match="nothing is left to generate"):
        latent_mask(VideoEditing(keep_mask=torch.ones(32, 48)), pooling_vae, random_video)
    with pytest.raises(TaskParameterError, match="at least two TaskSpec"):
        CombinedTask(parts=(TextToVideo(),))
    with pytest.raises(TaskParameterError, match="image-to-video needs at least 5 frames"):
        latent_mask(ImageToVideo(), pooling_vae, random_video[:, :, :1])


class _LastFrames(TaskSpec):
    """A task of a user's own: keep the last four pixel frames (one latent frame)."""

    kind = TaskKind.INTERPOLATION

    def mask_for(self, clip: ClipShape) -> torch.Tensor:
        mask = clip.no_frame_kept()
        mask[-clip.temporal_factor :] = True
        return mask


def test_a_task_of_ones_own_goes_through_the_same_pipeline(pooling_vae, random_video) -> None:
    got = latent_mask(_LastFrames(), pooling_vae, random_video)
    torch.testing.assert_close(got, paper_mask([T - 1]))
    combined = latent_mask(CombinedTask(parts=(ImageToVideo(), _LastFrames())), pooling_vae, random_video)
    torch.testing.assert_close(combined, paper_mask([0, T - 1]))
