"""The README's main job end to end at toy size: train, export, generate, score, report; rerun resumes."""

from __future__ import annotations

import json

import pytest
import torch

from skyreels_v4.errors import SkyReelsError
from skyreels_v4.training import quickstart

ARGS = [
    "--minutes",
    "0.03",
    "--num-train-clips",
    "8",
    "--batch-size",
    "4",
    "--num-eval-clips",
    "2",
    "--size",
    "16",
    "--frames",
    "9",
    "--steps",
    "2",
    "--train-images",  # the presets add 2048+ images; the images test below adds a few
    "0",
]


def test_quickstart_writes_model_samples_and_report(tmp_path, capsys):
    out = tmp_path / "qs"
    assert quickstart.main(["--out", str(out), *ARGS]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] >= 1
    for split in ("seen_pairs", "heldout_pairs"):
        rows = metrics[split]
        assert set(rows) == {"ground_truth", "t2av", "v2a"}
        # The rendered clips are the ceiling: every prompted colour is found in them.
        assert rows["ground_truth"]["adherence/colour_accuracy"] == 1.0
        for task in ("t2av", "v2a"):
            value = rows[task]["adherence/colour_accuracy"]
            assert value is None or 0.0 <= value <= 1.0
        assert (out / "samples" / split / "t2av_00.mp4").stat().st_size > 0
        assert (out / "samples" / split / "montage.png").stat().st_size > 0
    report = (out / "report.md").read_text()
    assert "Held-out colour-shape pairs" in report and "| t2av |" in report
    assert (out / "loss_curves.png").exists()

    from skyreels_v4.pipeline import SkyReelsV4Pipeline

    pipeline = SkyReelsV4Pipeline.from_pretrained(out / "model")
    # The presets' phase-free audio codec (docs/decisions/0012-spectrogram-audio-codec.md).
    assert type(pipeline.audio_vae).__name__ == "SpectrogramAudioCodec"
    assert pipeline.audio_vae.compression == pytest.approx(1 / 3)
    assert pipeline.transformer.config.audio.in_channels == 257
    assert all(torch.isfinite(p).all() for p in pipeline.transformer.parameters())
    # The presets' pooled prompt vector: the encoder makes it, both branches' adaLN take it.
    assert pipeline.text_encoder.pooled_dim == 32
    assert pipeline.transformer.config.video.pooled_text_dim == 32
    assert pipeline.transformer.config.video.patch_size == (1, 1, 1)  # the presets' --video-patch 1

    # Rerunning the same command resumes from the last checkpoint instead of starting over.
    steps = metrics["steps"]
    assert quickstart.main(["--out", str(out), *ARGS]) == 0
    assert json.loads((out / "metrics.json").read_text())["steps"] >= steps


def _minutes(minutes: str) -> list[str]:
    args = list(ARGS)
    args[args.index("--minutes") + 1] = minutes
    return args


def test_a_moved_run_folder_keeps_resuming_from_its_newest_checkpoint(tmp_path):
    """A run folder moved (or copied) elsewhere resumes, saves its progress over ``last.ckpt`` (not into
    a ``last-v1.ckpt`` beside a stale one, which the next rerun would resume instead), atomically."""
    first = tmp_path / "first"
    assert quickstart.main(["--out", str(first), *ARGS]) == 0
    moved = tmp_path / "moved"
    first.rename(moved)
    steps = []
    for minutes in ("0.1", "0.2"):
        assert quickstart.main(["--out", str(moved), *_minutes(minutes)]) == 0
        done = json.loads((moved / "metrics.json").read_text())["steps"]
        assert sorted(p.name for p in (moved / "checkpoints").iterdir()) == ["last.ckpt"]
        checkpoint = torch.load(moved / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
        assert checkpoint["global_step"] == done  # the rerun's progress is what the next rerun resumes
        steps.append(done)
    assert steps[1] >= steps[0] > 0


def test_max_steps_stops_at_that_step_and_a_rerun_with_more_continues(tmp_path):
    out = tmp_path / "qs"
    for budget in (2, 5):  # minutes to spare: the step budget ends both runs
        assert quickstart.main(["--out", str(out), *_minutes("5"), "--max-steps", str(budget)]) == 0
        assert json.loads((out / "metrics.json").read_text())["steps"] == budget
        checkpoint = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False, map_location="cpu")
        assert checkpoint["global_step"] == budget
    assert json.loads((out / "quickstart_settings.json").read_text()).get("max_steps") is None  # not identity


@pytest.mark.parametrize(
    ("flag", "value", "needle"),
    [
        ("--minutes", "0", "--minutes"),
        ("--max-steps", "0", "--max-steps"),
        ("--max-steps", "-3", "--max-steps"),
        ("--frames", "10", "--frames"),
        ("--train-frames", "8", "--train-frames"),
        ("--train-frames", "1", "--train-frames"),
        ("--size", "12", "--size"),
        ("--max-objects", "9", "--max-objects"),
        ("--learning-rate", "nan", "--learning-rate"),
        ("--num-eval-clips", "1", "--num-eval-clips"),
        ("--train-images", "-1", "--train-images"),
        ("--train-shift", "0", "--train-shift"),
        ("--train-shift", "inf", "--train-shift"),
        ("--pooled-text", "-1", "--pooled-text"),
        ("--model-dim", "100", "--model-dim"),
        ("--model-dim", "0", "--model-dim"),
        ("--lr-decay-steps", "-5", "--lr-decay-steps"),
        ("--ema-decay", "1", "--ema-decay"),
        ("--ema-decay", "-0.5", "--ema-decay"),
        ("--ema-decay", "nan", "--ema-decay"),
        ("--audio-weight", "0", "--audio-weight"),
        ("--audio-weight", "nan", "--audio-weight"),
        ("--audio-guidance", "-1", "--audio-guidance"),
        ("--video-guidance", "nan", "--video-guidance"),
        ("--exchange-window", "0", "--exchange-window"),
        ("--frame-position", "17", "--frame-position"),
        ("--frame-position", "-1", "--frame-position"),
        ("--audio-onset-weight", "-1", "--audio-onset-weight"),
        ("--audio-phase", "17", "--audio-phase"),
        ("--audio-phase", "-1", "--audio-phase"),
        ("--audio-onset-weight", "nan", "--audio-onset-weight"),
        ("--exchange-window", "nan", "--exchange-window"),
        ("--video-codec", "tiny --video-temporal-factor 2", "--video-temporal-factor"),
        ("--task-weights", "t2av", "--task-weights"),
        ("--task-weights", "t2av=1,t2av=2", "--task-weights"),
        ("--task-weights", "t2av=x", "--task-weights"),
        ("--task-weights", "sing=1", "sing"),
        ("--task-weights", "t2av=-1", "--task-weights"),
        ("--task-weights", "t2av=0", "--task-weights"),
    ],
)
def test_quickstart_rejects_bad_settings_before_any_work(tmp_path, capsys, flag, value, needle):
    out = tmp_path / "qs"
    assert quickstart.main(["--out", str(out), flag, *value.split()]) == 2
    assert needle in capsys.readouterr().err
    assert not out.exists()


def test_ablation_switches_reach_the_model_and_the_report(tmp_path):
    out = tmp_path / "ablation"
    switches = ["--no-av-cross-attention", "--audio-alignment", "temporal_channels_only"]
    switches += ["--exchange-order", "parallel"]
    assert quickstart.main(["--out", str(out), *ARGS, "--num-eval-clips", "2", *switches]) == 0
    config = json.loads((out / "model" / "transformer" / "config.json").read_text())["transformer"]
    assert config["depth_mapping"] == []  # no block exchanges: the branches never see each other
    assert config["audio_alignment"] == "temporal_channels_only"
    assert config["exchange_order"] == "parallel"
    title = (out / "report.md").read_text().splitlines()[0]
    assert "no audio-video cross-attention" in title and "parallel exchange" in title


def test_rerun_with_other_model_settings_is_refused_before_any_work(tmp_path, capsys):
    out = tmp_path / "qs"
    out.mkdir()
    settings = {"num_train_clips": 8, "size": 24, "frames": 9, "max_objects": 2, "learning_rate": 1e-3}
    settings |= {"batch_size": 4, "seed": 0, "video_codec": "pixel", "no_av_cross_attention": False}
    settings |= {"audio_alignment": "ratio", "exchange_order": "sequential"}
    (out / quickstart.SETTINGS_FILE).write_text(json.dumps(settings))
    assert quickstart.main(["--out", str(out), *ARGS]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "size 24 -> 16" in err and "another --out" in err
    assert sorted(p.name for p in out.iterdir()) == [quickstart.SETTINGS_FILE]  # nothing else written
    (out / quickstart.SETTINGS_FILE).write_text("{not json")
    assert quickstart.main(["--out", str(out), *ARGS]) == 2
    assert quickstart.SETTINGS_FILE in capsys.readouterr().err


def test_an_unknown_prediction_type_is_an_argparse_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        quickstart.main(["--out", str(tmp_path / "qs"), "--prediction", "eps"])
    assert exit_info.value.code == 2 and "--prediction" in capsys.readouterr().err


def test_images_and_switches_reach_the_cache_the_module_and_the_identity(tmp_path):
    """--train-images adds one-frame clips to the training cache (their own bucket) and trains them as
    T2I; --prediction and --train-shift reach the model; all three are part of the run's identity."""
    from skyreels_v4.model import SkyReelsV4Transformer
    from skyreels_v4.training.cache import LatentCache

    out = tmp_path / "qs"
    flags = ["--train-images", "4", "--prediction", "x0_skip", "--train-shift", "3", "--pooled-text", "0"]
    flags += ["--video-patch", "2", "--lr-decay-steps", "7", "--audio-codec", "dct", "--audio-weight", "2.5"]
    flags += ["--exchange-window", "1.5", "--video-temporal-factor", "2", "--frame-position", "3"]
    flags += ["--audio-onset-weight", "2", "--audio-phase", "2", "--model-dim", "64"]
    flags += ["--timestep-sharing", "independent", "--ema-decay", "0.9"]
    assert quickstart.main(["--out", str(out), *ARGS, *flags]) == 0
    cache = LatentCache(out / "cache_train")
    frames = sorted({int(cache[i]["video_latents"].shape[1]) for i in range(len(cache))})
    assert len(cache) == 8 + 4 and frames == [1, 5]  # images: 1 latent frame; 9-frame clips: 5 (factor 2)
    transformer = SkyReelsV4Transformer.from_pretrained(out / "model" / "transformer")
    assert transformer.prediction.value == "x0_skip" and transformer.config.video.pooled_text_dim is None
    assert transformer.config.video.patch_size == (1, 2, 2) and transformer.config.exchange_window == 1.5
    assert transformer.config.audio.in_channels == 256  # the DCT codec: one channel per coefficient
    assert json.loads((out / "model" / "audio_vae" / "config.json").read_text())["class"] == "FrameAudioCodec"
    hparams = torch.load(out / "checkpoints" / "last.ckpt", weights_only=False)["hyper_parameters"]
    assert hparams["image_tasks"] == {"t2v": 1.0} and hparams["lr_decay_steps"] == 7
    assert hparams["audio_weight"] == 2.5 and hparams["audio_onset_weight"] == 2.0
    assert hparams["timestep_sharing"] == "independent" and hparams["ema_decay"] == 0.9
    assert hparams["timestep_sampler"]["shift"] == {"shift": 3.0}
    saved = json.loads((out / quickstart.SETTINGS_FILE).read_text())
    assert (saved["train_images"], saved["prediction"], saved["train_shift"]) == (4, "x0_skip", 3.0)
    assert (saved["pooled_text"], saved["video_patch"], saved["lr_decay_steps"]) == (0, 2, 7)
    assert (saved["audio_codec"], saved["audio_weight"], saved["exchange_window"]) == ("dct", 2.5, 1.5)
    title = (out / "report.md").read_text().splitlines()[0]
    assert "exchange within 1.5 latent frames" in title and "video temporal factor 2" in title
    assert "frame position (3 frequencies)" in title and "audio onset weight 2" in title
    assert saved["audio_onset_weight"] == 2.0 and saved["audio_phase"] == 2
    assert saved["timestep_sharing"] == "independent" and saved["ema_decay"] == 0.9
    assert "EMA decay 0.9" in title
    assert "audio time phase (2 frequencies)" in title and "independent timesteps per modality" in title
    assert transformer.config.audio.time_phase_frequencies == 2
    assert transformer.config.video.dim == 64 and transformer.config.video.num_heads == 2
    assert saved["model_dim"] == 64 and "model width 64" in title
    assert quickstart.identity_for(["--out", str(out), *ARGS, *flags]) == saved  # what a benchmark builds
    assert transformer.config.video.time_phase_frequencies == 0
    assert saved["video_temporal_factor"] == 2 and saved["frame_position"] == 3
    assert transformer.config.video.frame_position_frequencies == 3
    assert transformer.config.audio.frame_position_frequencies == 0
    assert quickstart.main(["--out", str(out), *ARGS, "--train-images", "8"]) == 2  # another run: refused


def test_training_clips_can_be_shorter_than_the_generated_ones(tmp_path):
    """--train-frames caches shorter training (and validation) clips; the model folder and the scored
    clips keep --frames. Equal to --frames it is the same run as without the flag."""
    import av

    from skyreels_v4.training.cache import LatentCache

    out = tmp_path / "qs"
    args = [*ARGS, "--frames", "13", "--train-frames", "5"]
    assert quickstart.main(["--out", str(out), *args]) == 0
    for name in ("cache_train", "cache_val"):
        cache = LatentCache(out / name)
        assert {int(cache[i]["video_latents"].shape[1]) for i in range(len(cache))} == {2}  # 1 + 4 frames
    assert json.loads((out / "model" / "model_index.json").read_text())["defaults"]["num_frames"] == 13
    clip = next((out / "samples" / "heldout_pairs").glob("t2av_*.mp4"))
    with av.open(str(clip)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 13
    assert json.loads((out / quickstart.SETTINGS_FILE).read_text())["train_frames"] == 5
    assert "clips of 5 frames" in (out / "report.md").read_text()
    same = tmp_path / "same"
    assert quickstart.main(["--out", str(same), *ARGS, "--max-steps", "1"]) == 0
    assert quickstart.main(["--out", str(same), *ARGS, "--max-steps", "1", "--train-frames", "9"]) == 0
    assert json.loads((same / quickstart.SETTINGS_FILE).read_text())["train_frames"] is None


def test_a_task_mixture_is_the_same_run_however_it_is_spelled(tmp_path):
    """The run identity compares a mixture by its weights: reordered or respaced pairs resume the run;
    other weights are refused."""
    parser = quickstart._parser()

    def settings(mixture):
        args = ["--out", str(tmp_path), "--task-weights", mixture]
        parsed = parser.parse_args(args, quickstart.QuickstartSettings())
        return quickstart._apply_preset(parsed)

    saved = quickstart._identity(settings("t2av=0.5,v2a=0.5"))
    (tmp_path / quickstart.SETTINGS_FILE).write_text(json.dumps(saved))
    quickstart._check_same_run(settings("v2a=0.50, t2av=0.5"), tmp_path)  # no error: the same mixture
    with pytest.raises(SkyReelsError, match=r"task_weights 't2av=0\.5,v2a=0\.5' -> 't2av=0\.6,v2a=0\.4'"):
        quickstart._check_same_run(settings("t2av=0.6,v2a=0.4"), tmp_path)


def test_guidance_defaults_come_from_the_preset_and_flags_override_them():
    def resolved(*argv: str) -> tuple[float, float]:
        settings = quickstart._parser().parse_args(list(argv), namespace=quickstart.QuickstartSettings())
        settings = quickstart._apply_preset(settings)
        return settings.video_guidance, settings.audio_guidance

    assert resolved() == (3.0, 3.0)
    assert resolved("--preset", "evidence") == (3.0, 6.0)
    assert resolved("--preset", "evidence", "--audio-guidance", "3") == (3.0, 3.0)
    assert resolved("--video-guidance", "1.5") == (1.5, 3.0)


def test_a_settings_file_from_before_a_switch_existed_resumes_with_its_old_behaviour(tmp_path):
    """A key missing from a saved settings file means the behaviour before the key existed (e.g. no
    frame position): such a run resumes with the switch off and is refused with it on."""
    parser = quickstart._parser()

    def settings(*flags):
        parsed = parser.parse_args(["--out", str(tmp_path), *flags], quickstart.QuickstartSettings())
        return quickstart._apply_preset(parsed)

    saved = quickstart._identity(settings())
    del saved["frame_position"]
    (tmp_path / quickstart.SETTINGS_FILE).write_text(json.dumps(saved))
    quickstart._check_same_run(settings(), tmp_path)  # no error
    with pytest.raises(SkyReelsError, match=r"frame_position 0 -> 4"):
        quickstart._check_same_run(settings("--frame-position", "4"), tmp_path)
