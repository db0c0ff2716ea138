"""Describe a scene: a structured caption (paper section 3.4.3) and its attribute labels as data.

The caption follows the paper's standardised order with special tokens: the visual description,
then the sound effects in ``<sfx></sfx>`` and, when the drone plays, ``<bgm></bgm>``::

    A red circle and a blue square bounce inside a black box. <sfx>A 440 Hz blip each time the
    circle hits a wall, a 660 Hz blip for the square.</sfx>
"""

from __future__ import annotations

import numpy as np

from skyreels_v4.world.palette import Shape
from skyreels_v4.world.scene import Scene

BGM_TEXT = "A quiet low drone plays throughout."


def _article(word: str) -> str:
    # "an" before a vowel sound: "an orange", "an 880 Hz" (eight).
    return "an" if word[0] in "aeiou8" else "a"


def _with_article(phrase: str) -> str:
    return f"{_article(phrase)} {phrase}"


def _pitch_words(shape: Shape) -> str:
    return f"{shape.pitch_hz:g} Hz blip"


def caption(scene: Scene) -> str:
    """The structured caption of ``scene`` (objects named in scene order)."""
    names = [_with_article(f"{obj.colour.value} {obj.shape.value}") for obj in scene.objects]
    if len(names) == 1:
        subject, verb = names[0], "bounces"
    else:
        subject, verb = ", ".join(names[:-1]) + " and " + names[-1], "bounce"
    visual = f"{subject[0].upper()}{subject[1:]} {verb} inside {_with_article(scene.background.value)} box."

    counts: dict[Shape, int] = {}
    for obj in scene.objects:
        counts[obj.shape] = counts.get(obj.shape, 0) + 1
    clauses = []
    for i, (shape, count) in enumerate(counts.items()):
        blip = _with_article(_pitch_words(shape))
        if i == 0:
            who = f"the {shape.value}" if count == 1 else f"a {shape.value}"
            clauses.append(f"{blip[0].upper()}{blip[1:]} each time {who} hits a wall")
        else:
            who = f"the {shape.value}" if count == 1 else f"each {shape.value}"
            clauses.append(f"{blip} for {who}")
    text = f"{visual} <sfx>{', '.join(clauses)}.</sfx>"
    if scene.has_bgm:
        text += f" <bgm>{BGM_TEXT}</bgm>"
    return text


def label_ids(scene: Scene, max_objects: int) -> dict[str, np.ndarray]:
    """Attribute labels of ``scene`` as ids (:mod:`skyreels_v4.world.palette` order).

    Returns:
        ``colour_ids [max_objects]`` and ``shape_ids [max_objects]`` int64 (``-1`` pads absent
        objects), ``background_id []`` int64, ``num_objects []`` int64, ``has_bgm []`` bool.
    """
    if len(scene.objects) > max_objects:
        raise ValueError(
            f"max_objects: expected >= {len(scene.objects)} (the scene's objects), got {max_objects}"
        )
    colours = np.full(max_objects, -1, dtype=np.int64)
    shapes = np.full(max_objects, -1, dtype=np.int64)
    for n, obj in enumerate(scene.objects):
        colours[n] = obj.colour.index
        shapes[n] = obj.shape.index
    return {
        "colour_ids": colours,
        "shape_ids": shapes,
        "background_id": np.asarray(scene.background.index, dtype=np.int64),
        "num_objects": np.asarray(len(scene.objects), dtype=np.int64),
        "has_bgm": np.asarray(scene.has_bgm),
    }
