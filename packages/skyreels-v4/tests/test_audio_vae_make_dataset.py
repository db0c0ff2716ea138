"""The data-prep command: synthetic clips match their manifest; espeak-ng speech is real audio."""

import json

import numpy as np
import pytest
import soundfile as sf

from skyreels_v4.audio_vae.make_dataset import espeak_available, main, make_dataset, synthetic_clip


def test_synthetic_clips_match_their_description():
    rng = np.random.default_rng(3)
    tone, info = synthetic_clip("tone", rng)
    spectrum = np.abs(np.fft.rfft(tone[0]))
    freqs = np.fft.rfftfreq(tone.shape[-1], 1 / 44100)
    assert abs(freqs[spectrum.argmax()] - info["f0_hz"]) < 25.0  # the fundamental is the strongest line
    chirp, info = synthetic_clip("chirp", rng)
    head = chirp[0, 2000:6096] * np.hanning(4096)
    f_head = np.fft.rfftfreq(4096, 1 / 44100)[np.abs(np.fft.rfft(head)).argmax()]
    assert abs(np.log(f_head / info["f_start_hz"])) < np.log(1.6)
    noise, info = synthetic_clip("noise", rng)
    assert info["colour"] in ("white", "pink", "brown") and 0.19 < np.abs(noise).max() < 0.61
    with pytest.raises(ValueError, match="kind"):
        synthetic_clip("speech", rng)


def test_command_writes_splits_and_manifest_without_speech(tmp_path, capsys):
    assert (
        main(["--out", str(tmp_path), "--no-speech", "--synthetic-train", "1", "--synthetic-heldout", "1"])
        == 0
    )
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert sorted(p.name for p in (tmp_path / "train").iterdir()) == [
        "chirp_00.wav",
        "noise_00.wav",
        "tone_00.wav",
    ]
    assert [item["kind"] for item in manifest["heldout"]] == ["tone", "noise", "chirp"]
    # held-out clips come from a different seed than training clips
    train_tone, _ = sf.read(tmp_path / "train" / "tone_00.wav")
    heldout_tone, _ = sf.read(tmp_path / "heldout" / "tone_00.wav")
    assert train_tone.shape != heldout_tone.shape or not np.allclose(train_tone, heldout_tone)
    assert "train: 3 clips" in capsys.readouterr().out


@pytest.mark.skipif(
    not espeak_available(), reason="espeak-ng is not installed (scripts/setup.sh installs it)"
)
def test_espeak_speech_is_real_non_silent_audio(tmp_path):
    manifest = make_dataset(tmp_path, voices_per_sentence=1, synthetic_per_kind=(0, 0), max_sentences=2)
    assert [item["kind"] for item in manifest["train"]] == ["speech"]
    assert [item["voice"] for item in manifest["heldout"]][-1] == "en-us+m7"  # a voice never used in training
    train_texts = {item["text"] for item in manifest["train"]}
    assert not train_texts & {item["text"] for item in manifest["heldout"]}
    audio, rate = sf.read(tmp_path / "train" / manifest["train"][0]["file"])
    assert rate == 22050 and audio.shape[0] > rate  # more than a second of speech
    frames = audio[: len(audio) // 512 * 512].reshape(-1, 512)
    loud = np.sqrt((frames**2).mean(axis=1)) > 0.01
    assert 0.3 < loud.mean() < 1.0  # speech with pauses, not silence and not a constant tone


def test_missing_espeak_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr("skyreels_v4.audio_vae.make_dataset.espeak_available", lambda: False)
    with pytest.raises(RuntimeError, match="espeak-ng"):
        make_dataset(tmp_path)
