"""The training-time sparsity ramp of VSA: linear from 0 (dense) to the target over a number of steps.

A dense checkpoint adapted to VSA starts at sparsity 0 (every block kept, so the fine stage is dense
attention and, with the zero-initialised gate, the model is unchanged) and drops blocks gradually.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SparsityRamp"]


@dataclass(frozen=True, kw_only=True)
class SparsityRamp:
    """``sparsity(step) = target · min(1, max(0, step - start) / steps)``.

    Attributes:
        target: final sparsity in [0, 1) (VSA trains to e.g. 0.875 or 0.9).
        steps: optimizer steps to go from 0 to ``target`` (0 = the target at once).
        start: step at which the ramp begins (dense before it).
    """

    target: float
    steps: int
    start: int = 0

    def __post_init__(self) -> None:
        if (
            isinstance(self.target, bool)
            or not isinstance(self.target, int | float)
            or not 0 <= self.target < 1
        ):
            raise ValueError(f"target must be a sparsity in [0, 1), got {self.target!r}")
        for name in ("steps", "start"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{name} must be a non-negative int, got {value!r}")

    def __call__(self, step: int) -> float:
        """The sparsity to use at optimizer step ``step`` (>= 0)."""
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"step must be a non-negative int, got {step!r}")
        if self.steps == 0:
            return float(self.target) if step >= self.start else 0.0
        return float(self.target) * min(1.0, max(0, step - self.start) / self.steps)
