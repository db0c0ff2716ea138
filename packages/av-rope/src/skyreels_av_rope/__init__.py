"""Rotary position embeddings for video (t, h, w) and audio tokens, aligned in time."""

__all__: list[str] = []
