"""Make a small real-audio dataset for the audio VAE: espeak-ng speech plus tones, noise and chirps.

``python -m skyreels_v4.audio_vae.make_dataset --out outputs/data/audio_vae``

writes ``train/`` and ``heldout/`` folders of wav files and a ``manifest.json``. Speech is
synthesised by the espeak-ng program (at its native 22.05 kHz; the data module resamples): the
held-out split uses sentences never seen in training, spoken by one training voice and one voice
never used in training. Synthetic clips (44.1 kHz) are harmonic tones with vibrato, white/pink/
brown noise bursts, and linear/exponential chirps, drawn from a seeded generator (held-out clips
from a different seed). Nobody in this project recorded or wrote this audio, so a VAE that does
well on it has not been tuned to it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from skyreels_v4.audio_vae.audio_io import atomic_write, load_audio, write_wav

__all__ = ["SENTENCES", "espeak_available", "main", "make_dataset", "synthetic_clip"]

SYNTH_RATE = 44100

# Our own sentences: varied phonemes, lengths and prosody (questions, lists, numbers).
SENTENCES = (
    "A small boat drifted past the harbour lights just after midnight.",
    "Please bring three apples, two pears and a bag of walnuts.",
    "Would you believe that the old clock still keeps perfect time?",
    "The engineer measured the bridge twice before signing the report.",
    "Seven thousand birds gathered above the frozen lake.",
    "Turn left at the bakery, then walk until you see the blue door.",
    "Her violin sounded warm and bright in the empty concert hall.",
    "We should leave early, because the roads will be busy tomorrow.",
    "The library closes at nine on weekdays and at six on Sundays.",
    "Quiet voices echoed through the long stone corridor.",
    "Nobody expected the storm to arrive so quickly from the west.",
    "He fixed the bicycle chain with a spoon and a piece of wire.",
    "Fresh bread, strong coffee and a good book make a fine morning.",
    "The children counted the stars until they fell asleep.",
    "Is this the train that stops at every station along the coast?",
    "Thick fog covered the valley, hiding the farms and the river.",
    "Our neighbour grows tomatoes, beans and enormous sunflowers.",
    "The museum displays a map drawn more than four hundred years ago.",
    "Keep the receipt, in case the shoes do not fit.",
    "A sudden gust of wind scattered the papers across the square.",
    "The pilot announced that we would land twenty minutes early.",
    "Mix the flour and the butter slowly, then add a pinch of salt.",
    # held out from here on
    "The lighthouse keeper wrote a letter to his sister every Friday.",
    "Could you repeat the last number, please? I missed it.",
    "Bright green parrots argued loudly in the palm trees.",
    "The printer jammed again, so the meeting started without handouts.",
    "Snow melted from the rooftops as the afternoon grew warmer.",
    "Forty two people signed up for the chess tournament.",
    "Listen carefully: the password changes at noon.",
    "An orange cat slept on the warm bonnet of the car.",
)
NUM_TRAIN_SENTENCES = 22
TRAIN_VOICES = ("en-us", "en-gb+m3", "en-us+f3", "en-029+f2", "en-gb-scotland+m1", "en-gb-x-rp+f4")
HELDOUT_VOICES = ("en-us+m7",)


def espeak_available() -> bool:
    """Whether the ``espeak-ng`` program is on ``PATH``."""
    return shutil.which("espeak-ng") is not None


def _espeak(text: str, voice: str, *, speed: int, pitch: int, target: Path) -> None:
    command = ["espeak-ng", "-v", voice, "-s", str(speed), "-p", str(pitch), "-w"]
    atomic_write(target, lambda tmp: subprocess.run([*command, tmp, text], check=True, capture_output=True))


def _fade(signal: np.ndarray, seconds: float = 0.02) -> np.ndarray:
    n = min(int(seconds * SYNTH_RATE), signal.shape[-1] // 2)
    ramp = np.sin(np.linspace(0.0, np.pi / 2, n)) ** 2
    signal[..., :n] *= ramp
    signal[..., signal.shape[-1] - n :] *= ramp[::-1]
    return signal


def synthetic_clip(kind: str, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, object]]:
    """A ``[1, samples]`` float32 44.1 kHz clip of ``kind`` (tone, noise or chirp) and its description."""
    seconds = float(rng.uniform(1.5, 3.0))
    n = int(seconds * SYNTH_RATE)
    t = np.arange(n) / SYNTH_RATE
    amplitude = float(rng.uniform(0.2, 0.6))
    if kind == "tone":
        f0 = float(rng.uniform(80.0, 1200.0))
        harmonics = int(rng.integers(1, 6))
        vibrato = float(rng.uniform(0.0, 6.0))
        phase = 2 * np.pi * f0 * t + 0.01 * f0 / max(vibrato, 1e-3) * np.sin(2 * np.pi * vibrato * t)
        signal = sum(np.sin(k * phase) / k for k in range(1, harmonics + 1))
        info: dict[str, object] = {"f0_hz": f0, "harmonics": harmonics, "vibrato_hz": vibrato}
    elif kind == "noise":
        colour = str(rng.choice(["white", "pink", "brown"]))
        spectrum = np.fft.rfft(rng.standard_normal(n))
        freqs = np.maximum(np.fft.rfftfreq(n, 1 / SYNTH_RATE), 20.0)
        spectrum *= {"white": 1.0, "pink": freqs**-0.5, "brown": freqs**-1.0}[colour]
        signal = np.fft.irfft(spectrum, n)
        burst_rate = float(rng.uniform(0.5, 4.0))
        signal *= 0.55 + 0.45 * np.sin(2 * np.pi * burst_rate * t)  # amplitude bursts
        info = {"colour": colour, "burst_hz": burst_rate}
    elif kind == "chirp":
        f_start, f_end = float(rng.uniform(50.0, 400.0)), float(rng.uniform(4000.0, 16000.0))
        if rng.random() < 0.5:
            f_start, f_end = f_end, f_start
        sweep = str(rng.choice(["linear", "exponential"]))
        if sweep == "linear":
            phase = 2 * np.pi * (f_start * t + (f_end - f_start) * t**2 / (2 * seconds))
        else:
            k = (f_end / f_start) ** (1 / seconds)
            phase = 2 * np.pi * f_start * (k**t - 1) / np.log(k)
        signal = np.sin(phase)
        info = {"f_start_hz": f_start, "f_end_hz": f_end, "sweep": sweep}
    else:
        raise ValueError(f"kind: expected 'tone', 'noise' or 'chirp', got {kind!r}")
    signal = np.asarray(signal, dtype=np.float64)
    signal = amplitude * signal / max(np.abs(signal).max(), 1e-9)
    return _fade(signal[None, :]).astype(np.float32), {"kind": kind, "seconds": seconds, **info}


def make_dataset(
    out: str | os.PathLike[str],
    *,
    seed: int = 0,
    voices_per_sentence: int = 3,
    synthetic_per_kind: tuple[int, int] = (7, 3),
    speech: bool = True,
    max_sentences: int | None = None,
) -> dict[str, list[dict[str, object]]]:
    """Write ``out/train`` and ``out/heldout`` and return the manifest (also written as JSON)."""
    root = Path(out)
    if speech and not espeak_available():
        raise RuntimeError(
            "espeak-ng: the program is not installed (apt-get install espeak-ng), or pass speech=False"
        )
    manifest: dict[str, list[dict[str, object]]] = {"train": [], "heldout": []}
    rng = np.random.default_rng(seed)
    if speech:
        sentences = list(enumerate(SENTENCES))
        if max_sentences is not None:
            sentences = (
                sentences[: max_sentences // 2]
                + sentences[NUM_TRAIN_SENTENCES:][: max_sentences - max_sentences // 2]
            )
        for index, text in sentences:
            split = "train" if index < NUM_TRAIN_SENTENCES else "heldout"
            if split == "train":
                voices = [TRAIN_VOICES[(index + k) % len(TRAIN_VOICES)] for k in range(voices_per_sentence)]
            else:
                voices = [TRAIN_VOICES[index % len(TRAIN_VOICES)], *HELDOUT_VOICES]
            for voice in voices:
                speed, pitch = int(rng.integers(140, 190)), int(rng.integers(30, 70))
                name = f"speech_{index:02d}_{voice.replace('+', '_')}.wav"
                _espeak(text, voice, speed=speed, pitch=pitch, target=root / split / name)
                manifest[split].append(
                    {
                        "file": name,
                        "kind": "speech",
                        "text": text,
                        "voice": voice,
                        "speed": speed,
                        "pitch": pitch,
                    }
                )
    for split, count, split_seed in (
        ("train", synthetic_per_kind[0], seed),
        ("heldout", synthetic_per_kind[1], seed + 10_000),
    ):
        split_rng = np.random.default_rng(split_seed)
        for kind in ("tone", "noise", "chirp"):
            for k in range(count):
                clip, info = synthetic_clip(kind, split_rng)
                name = f"{kind}_{k:02d}.wav"
                write_wav(root / split / name, clip, SYNTH_RATE)
                manifest[split].append({"file": name, **info})
    text = json.dumps(manifest, indent=2) + "\n"
    atomic_write(root / "manifest.json", lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
    return manifest


from skyreels_v4.cli import nonnegative_int, positive_int  # noqa: E402
from skyreels_v4.runs.preflight import check_writable  # noqa: E402


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m skyreels_v4.audio_vae.make_dataset", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--out", required=True, help="output directory (train/, heldout/, manifest.json)")
    parser.add_argument("--seed", type=nonnegative_int, default=0)
    parser.add_argument("--voices-per-sentence", type=positive_int, default=3)
    parser.add_argument(
        "--synthetic-train", type=nonnegative_int, default=7, help="training clips per synthetic kind"
    )
    parser.add_argument(
        "--synthetic-heldout", type=nonnegative_int, default=3, help="held-out clips per synthetic kind"
    )
    parser.add_argument(
        "--no-speech", action="store_true", help="skip espeak-ng speech (synthetic clips only)"
    )
    parser.add_argument(
        "--max-sentences", type=positive_int, default=None, help="use fewer sentences (quick runs)"
    )
    args = parser.parse_args(argv)
    check_writable(args.out, "--out")
    manifest = make_dataset(
        args.out,
        seed=args.seed,
        voices_per_sentence=args.voices_per_sentence,
        synthetic_per_kind=(args.synthetic_train, args.synthetic_heldout),
        speech=not args.no_speech,
        max_sentences=args.max_sentences,
    )
    for split, items in manifest.items():
        seconds = (
            sum(
                load_audio(Path(args.out) / split / item["file"], sample_rate=SYNTH_RATE, channels=1).shape[
                    -1
                ]  # type: ignore[operator]
                for item in items
            )
            / SYNTH_RATE
        )
        kinds = sorted({str(item["kind"]) for item in items})
        print(
            f"{split}: {len(items)} clips, {seconds:.1f} s ({', '.join(kinds)}) -> {Path(args.out) / split}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
