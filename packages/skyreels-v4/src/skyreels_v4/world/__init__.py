"""The procedural audio-visual world: the embedded default dataset (docs/world.md).

Coloured shapes bounce inside a plain box; every wall hit sounds a short blip whose pitch is set
by the shape. Clips are deterministic for ``(config, seed, split, index)`` and come with a
structured caption, attribute labels and exact ground truth (positions, sub-frame hit times).
"""

from skyreels_v4.world.captions import BGM_TEXT, caption, label_ids
from skyreels_v4.world.clip import WorldClip, make_clip, render_scene
from skyreels_v4.world.config import WorldConfig
from skyreels_v4.world.dataset import ProceduralAVDataset
from skyreels_v4.world.media import write_mp4, write_wav
from skyreels_v4.world.montage import write_montage
from skyreels_v4.world.palette import (
    BACKGROUND_RGB,
    COLOUR_RGB,
    SHAPE_PITCH_HZ,
    Background,
    Colour,
    Shape,
)
from skyreels_v4.world.physics import Wall, WorldTruth, positions_at, simulate, wall_hits
from skyreels_v4.world.render_audio import blip, drone, render_audio
from skyreels_v4.world.render_video import reference_render_frame, render_frames, shape_signed_distance
from skyreels_v4.world.scene import Scene, WorldObject, clip_rng, sample_scene
from skyreels_v4.world.split import HELDOUT_PAIRS, WorldSplit, allowed_shapes, is_heldout

__all__ = [
    "BACKGROUND_RGB",
    "BGM_TEXT",
    "COLOUR_RGB",
    "HELDOUT_PAIRS",
    "SHAPE_PITCH_HZ",
    "Background",
    "Colour",
    "ProceduralAVDataset",
    "Scene",
    "Shape",
    "Wall",
    "WorldClip",
    "WorldConfig",
    "WorldObject",
    "WorldSplit",
    "WorldTruth",
    "allowed_shapes",
    "blip",
    "caption",
    "clip_rng",
    "drone",
    "is_heldout",
    "label_ids",
    "make_clip",
    "positions_at",
    "reference_render_frame",
    "render_audio",
    "render_frames",
    "render_scene",
    "sample_scene",
    "shape_signed_distance",
    "simulate",
    "wall_hits",
    "write_montage",
    "write_mp4",
    "write_wav",
]
