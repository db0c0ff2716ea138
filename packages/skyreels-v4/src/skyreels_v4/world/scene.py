"""What a clip contains (background, objects, drone) and how it is drawn from a seed."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from skyreels_v4.world.config import WorldConfig
from skyreels_v4.world.palette import Background, Colour, Shape
from skyreels_v4.world.split import HELDOUT_PAIRS, WorldSplit, allowed_shapes


@dataclass(frozen=True, kw_only=True)
class WorldObject:
    """One moving object. Coordinates are canvas units: x right, y down, both in [0, 1].

    Attributes:
        colour, shape: its attributes (distinct colours within a clip).
        size: side of its bounding box, fraction of the canvas side.
        start: bounding-box centre ``(x, y)`` at time 0.
        velocity: ``(vx, vy)`` in canvas sides per second (constant between wall hits).
    """

    colour: Colour
    shape: Shape
    size: float
    start: tuple[float, float]
    velocity: tuple[float, float]


@dataclass(frozen=True, kw_only=True)
class Scene:
    """A clip's content. ``objects`` are listed in drawing order (later ones on top)."""

    background: Background
    objects: tuple[WorldObject, ...]
    has_bgm: bool


def clip_rng(seed: int, index: int, split: WorldSplit) -> np.random.Generator:
    """The random stream of clip ``index`` of ``split`` for dataset ``seed``.

    Built from a ``SeedSequence`` over ``(seed, split, index)``, so every clip is reproducible on
    its own, whatever order or batch it is generated in.
    """
    for name, value in (("seed", seed), ("index", index)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name}: expected a non-negative int, got {value!r}")
    sequence = np.random.SeedSequence(entropy=int(seed), spawn_key=(WorldSplit(split).stream, int(index)))
    return np.random.Generator(np.random.PCG64(sequence))


def sample_scene(config: WorldConfig, rng: np.random.Generator, split: WorldSplit) -> Scene:
    """Draw a scene: background, 1..max objects with distinct colours, motion, drone on/off."""
    split = WorldSplit(split)
    num_objects = int(rng.integers(config.min_objects, config.max_objects + 1))
    background = tuple(Background)[int(rng.integers(len(Background)))]
    colours = [tuple(Colour)[int(i)] for i in rng.permutation(len(Colour))[:num_objects]]
    shapes: list[Shape] = []
    if split is WorldSplit.HELDOUT:
        # The first object is a held-out pair; sorted so the choice does not depend on set order.
        pairs = sorted(HELDOUT_PAIRS, key=lambda p: (p[0].index, p[1].index))
        colour, shape = pairs[int(rng.integers(len(pairs)))]
        colours = [colour, *[c for c in colours if c is not colour][: num_objects - 1]]
        shapes.append(shape)
    for colour in colours[len(shapes) :]:
        options = allowed_shapes(colour, split)
        shapes.append(options[int(rng.integers(len(options)))])
    order = rng.permutation(num_objects)

    objects = []
    lo_angle = math.radians(config.min_axis_angle_deg)
    for i in order:
        size = float(rng.uniform(*config.object_size_range))
        start = tuple(float(v) for v in rng.uniform(size / 2, 1 - size / 2, size=2))
        speed = float(rng.uniform(*config.speed_range))
        angle = float(rng.uniform(lo_angle, math.pi / 2 - lo_angle))
        signs = rng.choice(np.array([-1.0, 1.0]), size=2)
        velocity = (float(signs[0] * speed * math.cos(angle)), float(signs[1] * speed * math.sin(angle)))
        objects.append(
            WorldObject(colour=colours[i], shape=shapes[i], size=size, start=start, velocity=velocity)
        )
    has_bgm = bool(rng.random() < config.bgm_probability)
    return Scene(background=background, objects=tuple(objects), has_bgm=has_bgm)
