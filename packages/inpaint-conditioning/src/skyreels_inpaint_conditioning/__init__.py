"""One channel-concat formulation (V | I | M) for every generation and editing task, plus in-context references."""

__all__: list[str] = []
