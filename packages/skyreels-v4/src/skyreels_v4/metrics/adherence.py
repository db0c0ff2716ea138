"""Object adherence: are the prompt's coloured shapes (and background) in the video?

Per clip, :func:`track_clip` lists the colours present and a shape for each (majority over the
frames where the object is whole). For the prompt's objects ``(colour_n, shape_n)``:

* colour accuracy: the colour is present;
* shape accuracy: multiset overlap of the prompt's shapes with the detected shapes,
  ``Σ_s min(#prompt s, #detected s)``, whatever their colours (binding is not required);
* object accuracy: the colour is present *and* has the prompted shape (attribute binding);
* count accuracy (per clip): as many colours present as prompt objects;
* background accuracy (per clip, when background ids are given): the most frequent background
  colour is the prompted one;
* clip accuracy (per clip): every object bound correctly and the count right.

Objects of one clip have distinct colours (the world's rule); prompts that repeat a colour are
rejected. Results are per-attribute sums divided at :meth:`compute`, so batching does not matter.
"""

from __future__ import annotations

import numpy as np
import torch
from torchmetrics import Metric

from skyreels_v4.metrics.inputs import check_ids, check_object_labels, check_video
from skyreels_v4.metrics.tracking import TrackingConfig, track_clip
from skyreels_v4.world.palette import Background, Shape

_COUNTERS = (
    "objects",
    "colour_correct",
    "shape_correct",
    "object_correct",
    "clips",
    "count_correct",
    "clip_correct",
    "backgrounds",
    "background_correct",
)


class ObjectAdherence(Metric):
    """Colour, shape, binding, count and background adherence (see the module docstring).

    ``update(video [B, 3, F, H, W] in [-1, 1], colour_ids [B, N], shape_ids [B, N],
    background_ids [B] | None)`` with ids from :mod:`skyreels_v4.world.palette` (``-1`` pads).
    ``compute()`` returns 0-d float64 tensors ``colour_accuracy``, ``shape_accuracy``,
    ``object_accuracy``, ``count_accuracy``, ``clip_accuracy``, ``background_accuracy``
    (NaN when no background ids were given).
    """

    full_state_update = False
    higher_is_better = True
    is_differentiable = False

    def __init__(self, tracking: TrackingConfig | None = None, **kwargs) -> None:
        super().__init__(**kwargs)
        if tracking is not None and not isinstance(tracking, TrackingConfig):
            raise TypeError(f"tracking: expected a TrackingConfig or None, got {type(tracking).__name__}")
        self.tracking = tracking or TrackingConfig()
        for name in _COUNTERS:
            self.add_state(name, default=torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(
        self,
        video: torch.Tensor,
        colour_ids: torch.Tensor,
        shape_ids: torch.Tensor,
        background_ids: torch.Tensor | None = None,
    ) -> None:
        video = check_video(video)
        batch = video.shape[0]
        colours, shapes = check_object_labels(colour_ids, shape_ids, batch)
        if background_ids is not None:
            background_ids = check_ids(
                background_ids, "background_ids", len(Background), batch, allow_padding=False
            )
        for b in range(batch):
            keep = colours[b] >= 0
            prompt_colours = colours[b][keep].numpy()
            prompt_shapes = shapes[b][keep].numpy()
            if np.unique(prompt_colours).size != prompt_colours.size:
                raise ValueError(
                    f"colour_ids: expected distinct colours per clip, got {prompt_colours.tolist()} "
                    f"in clip {b}"
                )
            tracks = track_clip(video[b], self.tracking)
            present_ids = np.flatnonzero(tracks.present)
            colour_ok = tracks.present[prompt_colours]
            bound_ok = colour_ok & (tracks.shapes[prompt_colours] == prompt_shapes)
            wanted = np.bincount(prompt_shapes, minlength=len(Shape))
            found = np.bincount(
                tracks.shapes[present_ids][tracks.shapes[present_ids] >= 0], minlength=len(Shape)
            )
            count_ok = present_ids.size == prompt_colours.size
            self.objects += float(prompt_colours.size)
            self.colour_correct += float(colour_ok.sum())
            self.shape_correct += float(np.minimum(wanted, found).sum())
            self.object_correct += float(bound_ok.sum())
            self.clips += 1.0
            self.count_correct += float(count_ok)
            self.clip_correct += float(count_ok and bool(bound_ok.all()))
            if background_ids is not None:
                self.backgrounds += 1.0
                self.background_correct += float(tracks.background == int(background_ids[b]))

    def compute(self) -> dict[str, torch.Tensor]:
        def ratio(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
            return num / den if den > 0 else torch.tensor(float("nan"), dtype=torch.float64)

        return {
            "colour_accuracy": ratio(self.colour_correct, self.objects),
            "shape_accuracy": ratio(self.shape_correct, self.objects),
            "object_accuracy": ratio(self.object_correct, self.objects),
            "count_accuracy": ratio(self.count_correct, self.clips),
            "clip_accuracy": ratio(self.clip_correct, self.clips),
            "background_accuracy": ratio(self.background_correct, self.backgrounds),
        }
