"""A 44.1 kHz waveform VAE (1024x downsampling) and its losses."""

__all__: list[str] = []
