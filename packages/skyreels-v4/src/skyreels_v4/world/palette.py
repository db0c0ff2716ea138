"""The fixed vocabulary of the procedural world: background colours, object colours, shapes.

The integer id of a member is its position in the enum (``Colour.RED.index == 0``); datasets and
metrics exchange labels as these ids (``-1`` pads a missing object). The numbers are part of the
world's specification (docs/world.md): changing one changes every dataset and metric result.
"""

from __future__ import annotations

import operator
from enum import Enum


class Background(str, Enum):
    """Plain canvas colours. ``rgb`` is in 8-bit units."""

    BLACK = "black"
    GRAY = "gray"
    NAVY = "navy"

    @property
    def rgb(self) -> tuple[int, int, int]:
        return _BACKGROUND_RGB[self]

    @property
    def index(self) -> int:
        return _BACKGROUND_ORDER.index(self)

    @classmethod
    def from_index(cls, index: int) -> Background:
        return _from_index(_BACKGROUND_ORDER, index, "background id")


class Colour(str, Enum):
    """Object colours. ``rgb`` is in 8-bit units."""

    RED = "red"
    GREEN = "green"
    BLUE = "blue"
    YELLOW = "yellow"
    MAGENTA = "magenta"
    CYAN = "cyan"
    WHITE = "white"
    ORANGE = "orange"

    @property
    def rgb(self) -> tuple[int, int, int]:
        return _COLOUR_RGB[self]

    @property
    def index(self) -> int:
        return _COLOUR_ORDER.index(self)

    @classmethod
    def from_index(cls, index: int) -> Colour:
        return _from_index(_COLOUR_ORDER, index, "colour id")


class Shape(str, Enum):
    """Object shapes; each one sounds at its own pitch when it hits a wall."""

    CIRCLE = "circle"
    SQUARE = "square"
    TRIANGLE = "triangle"

    @property
    def pitch_hz(self) -> float:
        return _SHAPE_PITCH_HZ[self]

    @property
    def index(self) -> int:
        return _SHAPE_ORDER.index(self)

    @classmethod
    def from_index(cls, index: int) -> Shape:
        return _from_index(_SHAPE_ORDER, index, "shape id")


_BACKGROUND_RGB = {
    Background.BLACK: (10, 10, 10),
    Background.GRAY: (110, 110, 110),
    Background.NAVY: (20, 25, 70),
}
_COLOUR_RGB = {
    Colour.RED: (220, 40, 40),
    Colour.GREEN: (40, 200, 60),
    Colour.BLUE: (50, 80, 230),
    Colour.YELLOW: (230, 220, 50),
    Colour.MAGENTA: (210, 60, 200),
    Colour.CYAN: (60, 210, 220),
    Colour.WHITE: (235, 235, 235),
    Colour.ORANGE: (240, 140, 30),
}
_SHAPE_PITCH_HZ = {Shape.CIRCLE: 440.0, Shape.SQUARE: 660.0, Shape.TRIANGLE: 880.0}

_BACKGROUND_ORDER = tuple(Background)
_COLOUR_ORDER = tuple(Colour)
_SHAPE_ORDER = tuple(Shape)

#: RGB of every object colour, in id order (8 rows of 8-bit values).
COLOUR_RGB: tuple[tuple[int, int, int], ...] = tuple(c.rgb for c in _COLOUR_ORDER)
#: RGB of every background, in id order.
BACKGROUND_RGB: tuple[tuple[int, int, int], ...] = tuple(b.rgb for b in _BACKGROUND_ORDER)
#: Tone pitch of every shape, in id order.
SHAPE_PITCH_HZ: tuple[float, ...] = tuple(s.pitch_hz for s in _SHAPE_ORDER)


def _from_index(order: tuple, index: int, what: str):
    if isinstance(index, bool):
        raise TypeError(f"{what}: expected an int, got bool")
    try:
        index = operator.index(index)
    except TypeError:
        raise TypeError(f"{what}: expected an int, got {type(index).__name__}") from None
    if not 0 <= index < len(order):
        raise ValueError(f"{what}: expected 0..{len(order) - 1}, got {index}")
    return order[index]
