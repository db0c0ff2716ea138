"""The train / held-out split of colour-shape pairs, used to measure compositional generalisation.

Four of the 24 colour-shape pairs never appear in training clips. Each held-out colour and each
held-out shape still appears in training in other pairs, so a model that binds attributes
compositionally can draw them; one that memorises pairs cannot. The list is part of the world's
specification (docs/world.md) and must not change.
"""

from __future__ import annotations

from enum import Enum

from skyreels_v4.world.palette import Colour, Shape


class WorldSplit(str, Enum):
    """Which colour-shape pairs a clip may contain.

    ``TRAIN``: no held-out pair. ``HELDOUT``: at least one held-out pair (the other objects are
    unrestricted). ``ALL``: any pair.
    """

    TRAIN = "train"
    HELDOUT = "heldout"
    ALL = "all"

    @property
    def stream(self) -> int:
        """Distinct random stream per split, so the same seed gives unrelated clips per split."""
        return tuple(WorldSplit).index(self)


#: The colour-shape pairs that training clips never contain (fixed; docs/world.md).
HELDOUT_PAIRS: frozenset[tuple[Colour, Shape]] = frozenset(
    {
        (Colour.RED, Shape.TRIANGLE),
        (Colour.GREEN, Shape.CIRCLE),
        (Colour.BLUE, Shape.SQUARE),
        (Colour.ORANGE, Shape.TRIANGLE),
    }
)


def is_heldout(colour: Colour, shape: Shape) -> bool:
    """True when ``(colour, shape)`` is one of :data:`HELDOUT_PAIRS`."""
    return (Colour(colour), Shape(shape)) in HELDOUT_PAIRS


def allowed_shapes(colour: Colour, split: WorldSplit) -> tuple[Shape, ...]:
    """Shapes a ``colour`` object may take in a training clip (all shapes otherwise)."""
    if WorldSplit(split) is WorldSplit.TRAIN:
        return tuple(s for s in Shape if (colour, s) not in HELDOUT_PAIRS)
    return tuple(Shape)
