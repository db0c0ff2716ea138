"""transformers adapters for the data pipeline's model hooks (paper 3.4.2): Whisper transcription and
CLIP-style embeddings.

* :class:`WhisperTranscriber` implements :class:`~skyreels_v4.data.hooks.Transcriber` with
  ``WhisperForConditionalGeneration``: mono audio is resampled to the feature extractor's rate,
  cut into windows of at most 30 s (Whisper's short form: no timestamps needed), each window
  decoded greedily, and the texts joined with spaces.
* :class:`CLIPEmbedder` implements :class:`~skyreels_v4.data.hooks.ClipEmbedder` (image embeddings for
  deduplication and cluster balancing: the L2-normalised mean of the frames' normalised image
  embeddings) and :class:`~skyreels_v4.data.hooks.TextImageMatcher` (cosine similarity between a
  clip's embedding and text prompts, for category matching).

Both load a local checkpoint folder (``model``: a ``from_pretrained`` directory) with
``local_files_only=True``: nothing is downloaded. A hook is built once per process by
:func:`~skyreels_v4.data.stage.load_hook`, so the weights load once per worker.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from skyreels_v4.errors import FileFormatError, NonFiniteError, SkyReelsError

__all__ = ["CLIPEmbedder", "WhisperTranscriber", "resample_mono"]


def _checkpoint(model: str | Path, what: str) -> Path:
    path = Path(model)
    if not (path / "config.json").is_file():
        raise FileFormatError(path, f"model: expected a local {what} checkpoint folder with config.json")
    return path


def _device(device: str) -> Any:
    import torch

    try:
        return torch.device(device)
    except RuntimeError as error:
        raise SkyReelsError(f"device: expected a torch device such as 'cpu', got {device!r}") from error


def _mono(audio: Any, sample_rate: Any) -> np.ndarray:
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise SkyReelsError(f"sample_rate: expected a positive int, got {sample_rate!r}")
    array = np.asarray(audio)
    if array.ndim != 1 or not np.issubdtype(array.dtype, np.floating):
        raise SkyReelsError(
            f"audio: expected mono float samples of shape [S], got {array.dtype} {tuple(array.shape)}"
        )
    if not np.isfinite(array).all():
        raise NonFiniteError("audio: the samples hold NaN or inf values")
    return array.astype(np.float32, copy=False)


def resample_mono(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Polyphase resampling of mono float audio from ``rate`` to ``target`` Hz (scipy)."""
    if rate == target:
        return audio
    from math import gcd

    from scipy.signal import resample_poly

    g = gcd(int(rate), int(target))
    return resample_poly(audio, int(target) // g, int(rate) // g).astype(np.float32)


class WhisperTranscriber:
    """Whisper through transformers (``WhisperForConditionalGeneration`` + its feature extractor and
    tokenizer from the same folder). ``language`` (e.g. ``"en"``) and ``task`` (``"transcribe"`` or
    ``"translate"``) are passed to ``generate`` when given; None lets the checkpoint decide (a
    multilingual checkpoint then detects the language)."""

    def __init__(
        self,
        *,
        model: str,
        language: str | None = None,
        task: str | None = None,
        max_new_tokens: int = 128,
        window_s: float = 30.0,
        device: str = "cpu",
    ) -> None:
        from transformers import AutoTokenizer, WhisperFeatureExtractor, WhisperForConditionalGeneration

        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise SkyReelsError(f"max_new_tokens: expected a positive int, got {max_new_tokens!r}")
        if not 0 < float(window_s) <= 30.0:
            raise SkyReelsError(f"window_s: expected seconds in (0, 30] (Whisper's window), got {window_s!r}")
        path = _checkpoint(model, "Whisper")
        self.device = _device(device)
        self.model = WhisperForConditionalGeneration.from_pretrained(path, local_files_only=True)
        self.model = self.model.to(self.device).eval()
        self.features = WhisperFeatureExtractor.from_pretrained(path, local_files_only=True)
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.language, self.task = language, task
        self.max_new_tokens = max_new_tokens
        self.window_s = float(window_s)

    @property
    def sample_rate(self) -> int:
        return int(self.features.sampling_rate)

    def transcribe_windows(self, audio: np.ndarray, sample_rate: int) -> list[str]:
        """The text of each window of at most ``window_s`` seconds (an empty list for empty audio)."""
        import torch

        samples = resample_mono(_mono(audio, sample_rate), int(sample_rate), self.sample_rate)
        step = round(self.window_s * self.sample_rate)
        windows = [samples[i : i + step] for i in range(0, len(samples), step)]
        if not windows:
            return []
        inputs = self.features(windows, sampling_rate=self.sample_rate, return_tensors="pt")
        kwargs: dict[str, Any] = {"max_new_tokens": self.max_new_tokens}
        if self.language is not None:
            kwargs["language"] = self.language
        if self.task is not None:
            kwargs["task"] = self.task
        with torch.no_grad():
            tokens = self.model.generate(inputs.input_features.to(self.device, self.model.dtype), **kwargs)
        if not isinstance(tokens, torch.Tensor):  # a dict-like output when asked for scores
            tokens = tokens["sequences"]
        return [text.strip() for text in self.tokenizer.batch_decode(tokens, skip_special_tokens=True)]

    def transcribe(self, audio: np.ndarray, sample_rate: int) -> str:
        return " ".join(text for text in self.transcribe_windows(audio, sample_rate) if text)


class CLIPEmbedder:
    """CLIP through transformers (``CLIPModel`` + ``CLIPProcessor`` from one folder).

    ``embed(frames)`` -> ``[D]``: every frame's projected image embedding, L2-normalised, averaged,
    normalised again. ``embed_texts(texts)`` -> ``[T, D]`` normalised. ``similarity(frames, texts)``
    -> ``[T]`` cosine similarities. Any checkpoint with ``get_image_features`` /
    ``get_text_features`` (SigLIP, ...) loads the same way through ``model_class``."""

    def __init__(
        self,
        *,
        model: str,
        device: str = "cpu",
        batch_size: int = 32,
        model_class: str = "CLIPModel",
        processor_class: str = "CLIPProcessor",
    ) -> None:
        import transformers

        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise SkyReelsError(f"batch_size: expected a positive int, got {batch_size!r}")
        path = _checkpoint(model, "CLIP")
        try:
            model_type = getattr(transformers, model_class)
            processor_type = getattr(transformers, processor_class)
        except AttributeError as error:
            raise SkyReelsError(f"model_class/processor_class: not in transformers ({error})") from error
        self.device = _device(device)
        self.model = model_type.from_pretrained(path, local_files_only=True).to(self.device).eval()
        self.processor = processor_type.from_pretrained(path, local_files_only=True)
        self.batch_size = batch_size

    @staticmethod
    def _features(output: Any) -> Any:
        import torch

        # transformers 5 returns a ModelOutput whose pooler_output is the projected embedding
        features = output if isinstance(output, torch.Tensor) else output.pooler_output
        return torch.nn.functional.normalize(features.float(), dim=-1)

    def embed_frames(self, frames: np.ndarray) -> np.ndarray:
        """One normalised embedding per frame ``[F, D]`` for RGB frames ``[F, H, W, 3]`` (or one image)."""
        import torch

        array = np.asarray(frames)
        array = array[None] if array.ndim == 3 else array
        if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8 or len(array) == 0:
            raise SkyReelsError(
                f"frames: expected RGB uint8 [F, H, W, 3] (or [H, W, 3]), got {array.dtype} "
                f"{tuple(np.asarray(frames).shape)}"
            )
        out = []
        with torch.no_grad():
            for start in range(0, len(array), self.batch_size):
                batch = list(array[start : start + self.batch_size])
                pixels = self.processor(images=batch, return_tensors="pt")["pixel_values"]
                out.append(self._features(self.model.get_image_features(pixel_values=pixels.to(self.device))))
        vectors = torch.cat(out).cpu().numpy().astype(np.float32)
        if not np.isfinite(vectors).all():
            raise NonFiniteError("CLIPEmbedder: the image embeddings hold NaN or inf values")
        return vectors

    def embed(self, frames: np.ndarray) -> np.ndarray:
        mean = self.embed_frames(frames).mean(axis=0)
        return (mean / max(float(np.linalg.norm(mean)), 1e-8)).astype(np.float32)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        import torch

        if isinstance(texts, str) or not texts or not all(isinstance(t, str) and t.strip() for t in texts):
            raise SkyReelsError(f"texts: expected a non-empty list of non-empty strings, got {texts!r}")
        tokens = self.processor(text=list(texts), return_tensors="pt", padding=True, truncation=True)
        with torch.no_grad():
            features = self._features(
                self.model.get_text_features(
                    input_ids=tokens["input_ids"].to(self.device),
                    attention_mask=tokens["attention_mask"].to(self.device),
                )
            )
        vectors = features.cpu().numpy().astype(np.float32)
        if not np.isfinite(vectors).all():
            raise NonFiniteError("CLIPEmbedder: the text embeddings hold NaN or inf values")
        return vectors

    def similarity(self, frames: np.ndarray, texts: Sequence[str]) -> np.ndarray:
        return (self.embed_texts(texts) @ self.embed(frames)).astype(np.float32)
