"""``skyreels-v4 generate`` end to end on the tiny model folder: files in (png, mp4, wav), a playable mp4
out whose streams, frame count, rate and sample rate are checked by decoding it; ``--help`` lists every
task with an example."""

from __future__ import annotations

import pytest
import torch

from skyreels_v4.pipeline.cli import main
from skyreels_v4.pipeline.request import Task

pytestmark = pytest.mark.usefixtures("one_thread")

P = "A cat jumps. <sfx>A thud.</sfx>"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    import av
    import soundfile

    from skyreels_v4.world.media import write_mp4

    root = tmp_path_factory.mktemp("inputs")
    frames = (torch.rand(9, 32, 32, 3, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    sound = (torch.rand(1, 9 * 1000, generator=torch.Generator().manual_seed(1)) * 0.4 - 0.2).numpy()
    write_mp4(root / "clip.mp4", frames.numpy(), 16.0, sound, 16000)
    write_mp4(root / "prefix.mp4", frames[:5].numpy(), 16.0, sound[:, :5000], 16000)
    mask = torch.zeros(32, 32, 3, dtype=torch.uint8)
    mask[:, :16] = 255  # white = keep
    for name, picture in (("first.png", frames[0]), ("last.png", frames[-1]), ("mask.png", mask)):
        with av.open(str(root / name), mode="w", format="image2") as container:
            stream = container.add_stream("png", rate=1)
            stream.width, stream.height, stream.pix_fmt = 32, 32, "rgb24"
            container.mux(stream.encode(av.VideoFrame.from_ndarray(picture.numpy(), format="rgb24")))
            container.mux(stream.encode(None))
    soundfile.write(root / "voice.wav", sound[0, :4000], 16000)
    return root


RUNS = {
    "t2av": ([], 9, True),
    "i2v": (["--task", "i2v", "--image", "{f}/first.png"], 9, False),
    "interpolate": (
        ["--task", "interpolate", "--image", "{f}/first.png", "--last-image", "{f}/last.png"],
        9,
        True,
    ),
    "v2a": (["--task", "v2a", "--video", "{f}/clip.mp4"], 9, True),
    "a2v": (["--task", "a2v", "--audio", "{f}/voice.wav", "--frames", "5"], 5, True),
    "extend": (["--task", "extend", "--video", "{f}/prefix.mp4", "--frames", "13"], 13, True),
    "edit": (["--task", "edit", "--video", "{f}/clip.mp4", "--edit-mask", "{f}/mask.png"], 9, True),
    "references": (
        [
            "--prompt",
            "@image_1 meets @video_1, voice @audio_1. <dialogue>Hi.</dialogue>",
            "--reference-image",
            "{f}/first.png",
            "--reference-video",
            "{f}/prefix.mp4",
            "--reference-audio",
            "{f}/voice.wav",
        ],
        9,
        True,
    ),
    "low_memory": (["--offload", "block", "--int8"], 9, True),
    "bfloat16": (["--dtype", "bfloat16", "--offload", "model"], 9, True),
    "long": (["--total-frames", "17", "--window-frames", "9", "--overlap-frames", "5"], 17, True),
}


@pytest.mark.parametrize("name", sorted(RUNS))
def test_cli_generates_a_checked_mp4(name, tiny_folder, files, tmp_path, mp4_probe, capsys):
    extra, frames, has_audio = RUNS[name]
    out = tmp_path / "clip.mp4"
    args = ["--model", str(tiny_folder), "--prompt", P, "--out", str(out), "--steps", "1", "--quiet", "--wav"]
    args += [a.replace("{f}", str(files)) for a in extra]
    assert main(args) == 0, capsys.readouterr().err
    info = mp4_probe(out)
    assert info["frames"] == frames and info["size"] == (32, 32) and info["fps"] == pytest.approx(16.0)
    assert info["has_audio"] is has_audio
    if has_audio:
        assert info["audio_rate"] == 16000 and abs(info["audio_samples"] - frames * 1000) <= 2048
        assert (tmp_path / "clip.wav").is_file()
    if name == "v2a":  # the given video is kept: the new mp4 re-encodes the same frames
        source = mp4_probe(files / "clip.mp4")["pixels"].astype(float)
        assert abs(info["pixels"].astype(float) - source).mean() < 10  # a second H.264 generation of noise
    assert "wrote" in capsys.readouterr().out


def test_cli_t2a_writes_a_wav(tiny_folder, tmp_path):
    import soundfile

    out = tmp_path / "sound.wav"
    assert (
        main(["--model", str(tiny_folder), "--task", "t2a", "--prompt", P, "--out", str(out), "--quiet"]) == 0
    )
    data, rate = soundfile.read(out)
    assert rate == 16000 and len(data) == 9000


def test_cli_help_lists_every_task_with_an_example(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    text = capsys.readouterr().out
    for task in Task:
        assert task.value in text
    assert text.count("skyreels-v4 generate --model M") >= 9
    for flag in (
        "--image",
        "--last-image",
        "--video",
        "--audio",
        "--edit-mask",
        "--reference-image",
        "--reference-video",
        "--reference-audio",
        "--steps",
        "--video-guidance",
        "--audio-guidance",
        "--seed",
        "--solver",
        "--device",
        "--dtype",
        "--wav",
        "--offload",
        "--int8",
    ):
        assert flag in text
