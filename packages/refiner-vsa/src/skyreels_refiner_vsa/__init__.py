"""Video Sparse Attention and the super-resolution / frame-interpolation refiner."""

__all__: list[str] = []
