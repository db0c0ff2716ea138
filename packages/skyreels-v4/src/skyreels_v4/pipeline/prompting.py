"""From a request's prompt to what the pipeline encodes and packs (paper 3.1, 3.3, 3.4.3, appendix A).

``plan_prompt`` parses the prompt with ``skyreels_v4.prompts`` (structured tags, ``@image_N`` /
``@video_N`` / ``@audio_N`` references, multi-shot markup), resolves the references against the
request's ``reference_images`` / ``reference_videos`` / ``reference_audios`` (missing, unused or
wrong-kind references raise ``ReferenceError_``), orders them by first appearance in the prompt (the
order they are packed in, eq. 8-9), and builds the combined visual + acoustic text of 3.1 that the
shared text encoder reads. A multi-shot prompt also carries its total duration in seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from skyreels_v4.prompts import (
    MultiShotPrompt,
    ReferenceKind,
    SegmentOrder,
    StructuredCaption,
    combined_prompt,
    has_shot_markup,
    parse_multishot,
    parse_prompt,
    resolve_references,
)

__all__ = ["PromptPlan", "plan_prompt"]


@dataclass(frozen=True, kw_only=True, eq=False)
class PromptPlan:
    """Attributes:
    parsed: the structured caption or multi-shot prompt.
    text: the combined prompt the text encoder reads.
    visual_references: reference clips ``[3, F, H, W]`` (images as one-frame clips) in prompt order.
    visual_labels: ``@image_N`` / ``@video_N`` of each visual reference (same order).
    audio_references: reference waveforms ``[channels, samples]`` in prompt order.
    duration_s: the shots' total for a multi-shot prompt, else None.
    """

    parsed: StructuredCaption | MultiShotPrompt
    text: str
    visual_references: tuple[Tensor, ...]
    visual_labels: tuple[str, ...]
    audio_references: tuple[Tensor, ...]
    duration_s: float | None


def plan_prompt(
    prompt: str,
    *,
    reference_images: tuple[Tensor, ...] = (),
    reference_videos: tuple[Tensor, ...] = (),
    reference_audios: tuple[Tensor, ...] = (),
    order: SegmentOrder = SegmentOrder.STANDARD,
) -> PromptPlan:
    """Parse, resolve and combine (module docstring).

    Raises:
        PromptError: the prompt is malformed (tags, shot markup), naming the offset.
        ReferenceError_: references and supplied media do not match one to one.
    """
    parsed: StructuredCaption | MultiShotPrompt
    parsed = parse_multishot(prompt) if has_shot_markup(prompt) else parse_prompt(prompt)
    resolved = resolve_references(
        parsed, images=reference_images, videos=reference_videos, audios=reference_audios
    )
    visual, labels, audio = [], [], []
    for item in resolved:
        if item.kind is ReferenceKind.IMAGE:
            visual.append(item.item[:, None])
        elif item.kind is ReferenceKind.VIDEO:
            visual.append(item.item)
        else:
            audio.append(item.item)
            continue
        labels.append(f"@{item.kind.value}_{item.index}")
    return PromptPlan(
        parsed=parsed,
        text=combined_prompt(parsed, order=order),
        visual_references=tuple(visual),
        visual_labels=tuple(labels),
        audio_references=tuple(audio),
        duration_s=parsed.duration if isinstance(parsed, MultiShotPrompt) else None,
    )
