"""Weight-free metrics on the procedural world (docs/metrics.md): object adherence, audio-video
synchronisation with its chance level, and pitch adherence, as torchmetrics ``Metric`` classes,
plus the detectors they are built from."""

from skyreels_v4.metrics.adherence import ObjectAdherence
from skyreels_v4.metrics.bounces import BounceConfig, axis_reversals, detect_bounces
from skyreels_v4.metrics.events import EventMatch, match_events, nearest_offsets
from skyreels_v4.metrics.onsets import OnsetConfig, band_activity, band_amplitude, detect_onsets
from skyreels_v4.metrics.pitch import PitchAdherence, PitchConfig, cents, tone_pitches
from skyreels_v4.metrics.segmentation import (
    REFERENCE_RGB,
    classify_pixels,
    connected_components,
    largest_component,
    reference_connected_components,
)
from skyreels_v4.metrics.sync import AudioVideoSync, SyncConfig
from skyreels_v4.metrics.tracking import ClipTracks, TrackingConfig, classify_shape, track_clip

__all__ = [
    "REFERENCE_RGB",
    "AudioVideoSync",
    "BounceConfig",
    "ClipTracks",
    "EventMatch",
    "ObjectAdherence",
    "OnsetConfig",
    "PitchAdherence",
    "PitchConfig",
    "SyncConfig",
    "TrackingConfig",
    "axis_reversals",
    "band_activity",
    "band_amplitude",
    "cents",
    "classify_pixels",
    "classify_shape",
    "connected_components",
    "detect_bounces",
    "detect_onsets",
    "largest_component",
    "match_events",
    "nearest_offsets",
    "reference_connected_components",
    "tone_pitches",
    "track_clip",
]
