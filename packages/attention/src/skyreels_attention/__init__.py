"""Pluggable attention backends, a Triton block-sparse kernel and Ulysses sequence parallelism."""

__all__: list[str] = []
