"""Audio stages of paper 3.4.2: scan, category (hook), quality filters without weights (volume,
clipping, bandwidth, SNR, VAD silence ratio <= 0.2), 15 s duration control and transcription (hook).

Clips without an audio stream (``has_audio`` False) pass the audio stages untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from skyreels_v4.data import audio_measures as measures
from skyreels_v4.data.manifest import Row, new_row
from skyreels_v4.data.media import probe, read_audio
from skyreels_v4.data.stage import StageContext, StageKind, StageResult, drop_row, load_hook, register_stage
from skyreels_v4.data.video_stages import clip_id_for
from skyreels_v4.errors import FileFormatError

__all__ = [
    "CATEGORIES",
    "AudioCategoryConfig",
    "AudioChunksConfig",
    "AudioQualityConfig",
    "AudioScanConfig",
    "TranscribeConfig",
]

CATEGORIES = ("sfx", "music", "speech", "singing")


def _audio(row: Row, context: StageContext, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    rate = int(sample_rate or row.get("sample_rate") or 16000)
    return read_audio(context.source_path(row["source"]), row["start_s"], row["end_s"], sample_rate=rate)[
        0
    ], rate


@dataclass(frozen=True, kw_only=True)
class AudioScanConfig:
    extensions: tuple[str, ...] = (".wav", ".flac", ".mp3", ".ogg", ".m4a")


@register_stage("scan_audio", StageKind.SOURCE, AudioScanConfig)
def scan_audio(config: AudioScanConfig, context: StageContext) -> list[Row]:
    """One row per audio file under the input folder (the pure-audio pipeline)."""
    rows = []
    extensions = {e.lower() for e in config.extensions}
    for path in sorted(context.input_dir.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in extensions:
            continue
        relative = path.relative_to(context.input_dir).as_posix()
        try:
            info = probe(path)
        except FileFormatError as error:
            row = new_row(id=clip_id_for(relative), source=relative, start_s=0.0, end_s=0.0)
            rows.append(drop_row(row, "scan_audio", f"unreadable: {error.problem}"))
            continue
        rows.append(
            new_row(
                id=clip_id_for(relative),
                source=relative,
                start_s=0.0,
                end_s=info.duration_s,
                has_audio=info.has_audio,
                sample_rate=info.sample_rate,
            )
        )
    return rows


@dataclass(frozen=True, kw_only=True)
class AudioCategoryConfig:
    classifier: Any = "skyreels_v4.data.hooks:SpectralAudioClassifier"


@register_stage("audio_category", StageKind.MAP, AudioCategoryConfig)
def audio_category(row: Row, config: AudioCategoryConfig, context: StageContext) -> StageResult:
    """Sound effects / music / speech / singing, from the classifier hook (Qwen3-Omni in the paper)."""
    if not row.get("has_audio", True):
        return StageResult()
    audio, rate = _audio(row, context)
    category = load_hook(config.classifier).classify(audio, rate)
    if category not in CATEGORIES:
        raise ValueError(
            f"audio classifier {config.classifier!r}: expected one of {CATEGORIES}, got {category!r}"
        )
    return StageResult(values={"category": category})


@dataclass(frozen=True, kw_only=True)
class AudioQualityConfig:
    """Thresholds; ``vad_categories`` are the categories whose silence ratio is limited (speech
    and singing: silero-vad measures speech, so music or effects would always look silent)."""

    min_volume_db: float = -60.0
    max_clipping_ratio: float = 0.01
    min_snr_db: float = 10.0
    min_bandwidth_hz: float = 0.0
    max_silence_ratio: float = 0.2
    vad_categories: tuple[str, ...] = ("speech", "singing")
    require_audio: bool = False


@register_stage("audio_quality", StageKind.MAP, AudioQualityConfig)
def audio_quality(row: Row, config: AudioQualityConfig, context: StageContext) -> StageResult:
    if not row.get("has_audio", True):
        return StageResult(drop="no_audio" if config.require_audio else None)
    audio, rate = _audio(row, context)
    values: dict[str, Any] = {
        "mean_volume_db": measures.mean_volume_db(audio),
        "clipping_ratio": measures.clipping_ratio(audio),
        "bandwidth_hz": measures.bandwidth_hz(audio, rate),
        "snr_db": measures.snr_db(audio, rate),
    }
    checks = [
        (values["mean_volume_db"] >= config.min_volume_db, f"quiet(volume<{config.min_volume_db:g}dB)"),
        (values["clipping_ratio"] <= config.max_clipping_ratio, f"clipping>{config.max_clipping_ratio:g}"),
        (values["snr_db"] >= config.min_snr_db, f"noisy(snr<{config.min_snr_db:g}dB)"),
        (values["bandwidth_hz"] >= config.min_bandwidth_hz, f"bandwidth<{config.min_bandwidth_hz:g}Hz"),
    ]
    for ok, reason in checks:
        if not ok:
            return StageResult(values=values, drop=reason)
    values["speech_ratio"] = measures.speech_fraction(audio, rate)
    values["silence_ratio"] = 1.0 - values["speech_ratio"]
    if row.get("category") in config.vad_categories and values["silence_ratio"] > config.max_silence_ratio:
        return StageResult(values=values, drop=f"silent(vad_silence>{config.max_silence_ratio:g})")
    return StageResult(values=values)


@dataclass(frozen=True, kw_only=True)
class AudioChunksConfig:
    """Duration control: clips longer than ``chunk_s`` become ``chunk_s`` pieces (a last piece
    shorter than ``min_s`` is dropped); clips shorter than ``chunk_s`` are concatenated, in id
    order and per category, into groups of at most ``chunk_s`` written under ``<output>/concat``."""

    chunk_s: float = 15.0
    min_s: float = 1.0


@register_stage("audio_chunks", StageKind.TABLE, AudioChunksConfig)
def audio_chunks(rows: list[Row], config: AudioChunksConfig, context: StageContext) -> list[Row]:
    from skyreels_v4.world.media import write_wav

    out: list[Row] = []
    short: dict[str, list[Row]] = {}
    for row in rows:
        length = row["end_s"] - row["start_s"]
        if row.get("concat_of") or abs(length - config.chunk_s) < 1e-6:
            out.append(row)
        elif length > config.chunk_s:
            start, n = row["start_s"], 0
            while start < row["end_s"] - 1e-6:
                end = min(start + config.chunk_s, row["end_s"])
                child = {
                    **row,
                    "id": f"{row['id']}/c{n:03d}",
                    "start_s": start,
                    "end_s": end,
                    "chunk_of": row["id"],
                }
                out.append(
                    child if end - start >= config.min_s else drop_row(child, "audio_chunks", "short_tail")
                )
                start, n = end, n + 1
        else:
            short.setdefault(str(row.get("category", "unknown")), []).append(row)
    for category, group in sorted(short.items()):
        batches: list[list[Row]] = [[]]
        for row in sorted(group, key=lambda r: r["id"]):
            total = sum(r["end_s"] - r["start_s"] for r in batches[-1])
            if batches[-1] and total + row["end_s"] - row["start_s"] > config.chunk_s + 1e-6:
                batches.append([])
            batches[-1].append(row)
        for batch in batches:
            if len(batch) == 1:
                out.append(batch[0])
                continue
            rate = int(batch[0].get("sample_rate") or 16000)
            audio = np.concatenate([_audio(r, context, rate)[0] for r in batch])
            name = f"concat/{category}_{batch[0]['id'].replace('/', '_')}.wav"
            write_wav(context.output_dir / name, np.clip(audio, -1, 1)[None], rate)
            merged = {
                **batch[0],
                "id": f"concat/{category}/{batch[0]['id']}",
                "source": f"@output/{name}",
                "start_s": 0.0,
                "end_s": len(audio) / rate,
                "concat_of": ",".join(r["id"] for r in batch),
            }
            out.append(merged)
            out.extend(drop_row(r, "audio_chunks", f"concatenated_into:{merged['id']}") for r in batch)
    return out


@dataclass(frozen=True, kw_only=True)
class TranscribeConfig:
    """Transcription hook for speech and singing (Whisper through transformers:
    ``skyreels_v4.data.hf_hooks:WhisperTranscriber`` with ``kwargs: {model: DIR}``)."""

    transcriber: Any = None
    categories: tuple[str, ...] = ("speech", "singing")
    sample_rate: int = 16000


@register_stage("transcribe", StageKind.MAP, TranscribeConfig)
def transcribe(row: Row, config: TranscribeConfig, context: StageContext) -> StageResult:
    if config.transcriber is None or row.get("category") not in config.categories:
        return StageResult()
    audio, rate = _audio(row, context, config.sample_rate)
    return StageResult(
        values={"transcript": str(load_hook(config.transcriber).transcribe(audio, rate)).strip()}
    )
