"""Hybrid dual/single-stream MMDiT blocks and the two-branch joint audio-video transformer."""

__all__: list[str] = []
