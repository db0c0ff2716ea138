"""Task mixtures (paper 4.1, Table 1): validation, presets, seeded sampling frequencies, spec drawing."""

from __future__ import annotations

import pytest
import torch
from scipy import stats

from skyreels_inpaint_conditioning import (
    PAPER_STAGE_MIXTURES,
    ImageInpainting,
    TaskKind,
    TaskMixture,
    TaskMixtureError,
    TaskSampler,
    TextToVideo,
    TrainingTask,
    VideoEditing,
    VideoExtension,
    build_inpaint_condition,
)


def test_paper_presets() -> None:
    stage3 = PAPER_STAGE_MIXTURES["video_pretrain_stage3"].weights
    for task in ("image_inpainting", "image_to_video", "video_extension", "video_editing"):
        assert stage3[TrainingTask(task)] == 0.05
    assert stage3[TrainingTask.TEXT_TO_VIDEO] == pytest.approx(0.80)
    assert PAPER_STAGE_MIXTURES["video_pretrain_stage5"].weights == stage3  # "inpaint ratio unchanged"
    stage6 = PAPER_STAGE_MIXTURES["video_pretrain_stage6"].weights
    assert dict(stage6) == {
        TrainingTask.TEXT_TO_VIDEO: 0.6,
        TrainingTask.IMAGE_REFERENCE: 0.2,
        TrainingTask.VIDEO_REFERENCE: 0.2,
    }


@pytest.mark.parametrize("stage", ["video_pretrain_stage3", "video_pretrain_stage6"])
def test_empirical_frequencies_match_weights(stage: str) -> None:
    mixture = PAPER_STAGE_MIXTURES[stage]
    n = 20000
    draws = mixture.sample(n, generator=torch.Generator().manual_seed(0))
    observed = [sum(d is t for d in draws) for t in mixture.tasks]
    expected = [n * mixture.weights[t] for t in mixture.tasks]
    chi2, p_value = stats.chisquare(observed, expected)
    assert p_value > 1e-3, (observed, expected, chi2)
    # And a wrong hypothesis is rejected: the test has power.
    uniform = [n / len(observed)] * len(observed)
    assert stats.chisquare(observed, uniform).pvalue < 1e-6


def test_sampler_is_deterministic_and_resumable() -> None:
    mixture = PAPER_STAGE_MIXTURES["video_pretrain_stage3"]
    a, b = TaskSampler(mixture, seed=5), TaskSampler(mixture, seed=5)
    assert a.sample(50) == b.sample(50)
    state = a.state_dict()
    first = a.sample(20)
    a.load_state_dict(state)
    assert a.sample(20) == first
    assert TaskSampler(mixture, seed=6).sample(50) != TaskSampler(mixture, seed=5).sample(50)


def test_custom_mixture_from_strings() -> None:
    mix = TaskMixture(name="custom", weights={"interpolation": 0.5, "video_editing": 0.5})
    assert set(mix.tasks) == {TrainingTask.INTERPOLATION, TrainingTask.VIDEO_EDITING}


def test_mixture_errors() -> None:
    with pytest.raises(TaskMixtureError, match=r"summing to 1, got sum 0\.9"):
        TaskMixture(name="x", weights={"text_to_video": 0.9})
    with pytest.raises(TaskMixtureError, match="unknown task name 'txt2vid'; expected one of text_to_video"):
        TaskMixture(name="x", weights={"txt2vid": 1.0})
    with pytest.raises(
        TaskMixtureError, match=r"weights\['video_editing'\]: expected a finite probability >= 0"
    ):
        TaskMixture(name="x", weights={"text_to_video": 1.5, "video_editing": -0.5})
    with pytest.raises(TaskMixtureError, match="non-empty mapping"):
        TaskMixture(name="x", weights={})


def test_draw_spec_builds_valid_conditions(pooling_vae) -> None:
    sampler = TaskSampler(PAPER_STAGE_MIXTURES["video_pretrain_stage3"], seed=0)
    video = torch.zeros(1, 3, 17, 32, 32)
    image = torch.zeros(1, 3, 1, 32, 32)
    kept = set()
    for _ in range(30):
        spec = sampler.draw_spec(TrainingTask.VIDEO_EXTENSION, num_frames=17, height=32, width=32)
        assert isinstance(spec, VideoExtension)
        assert (spec.num_kept_frames - 1) % 4 == 0
        m = build_inpaint_condition(spec, vae=pooling_vae, source_video=video).latent_mask
        assert int(m[0, 0, :, 0, 0].sum()) == 1 + (spec.num_kept_frames - 1) // 4
        kept.add(spec.num_kept_frames)
    assert kept == {1, 5, 9, 13}
    for task in TrainingTask:
        if task is TrainingTask.IMAGE_INPAINTING:
            spec = sampler.draw_spec(task, num_frames=1, height=32, width=32)
            assert isinstance(spec, ImageInpainting)
            build_inpaint_condition(spec, vae=pooling_vae, source_video=image)
            continue
        spec = sampler.draw_spec(task, num_frames=17, height=32, width=32)
        if task in (TrainingTask.IMAGE_REFERENCE, TrainingTask.VIDEO_REFERENCE):
            assert isinstance(spec, TextToVideo)
        if task is TrainingTask.VIDEO_EDITING:
            assert isinstance(spec, VideoEditing)
            assert spec.keep_mask.shape == (17, 32, 32)
        if task.value in {k.value for k in TaskKind}:
            assert spec.kind is TaskKind(task.value)
        build_inpaint_condition(spec, vae=pooling_vae, source_video=video)
