"""Flow-matching objective, timestep samplers, ODE solvers and guidance."""

__all__: list[str] = []
