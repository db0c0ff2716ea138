"""A table of bad inputs across the Python API (GenerationRequest, the pipeline call, SamplingConfig,
GenerationOutput.save, from_pretrained on missing/corrupt folders) and the CLI: each raises a typed
error (or exits 2 with one line) whose message names the argument, and leaves no file behind."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch

from skyreels_v4.errors import FileFormatError, NonFiniteError, PromptError, ReferenceError_, SkyReelsError
from skyreels_v4.pipeline import GenerationRequest, SamplingConfig
from skyreels_v4.pipeline.cli import main as cli_main

pytestmark = pytest.mark.usefixtures("one_thread")

P = "A cat jumps. <sfx>A thud.</sfx>"
IMG = torch.zeros(3, 32, 32)
CLIP = torch.zeros(3, 9, 32, 32)
WAVE = torch.zeros(1, 8000)


def _req(**kw):
    return lambda pipe: GenerationRequest(**{"prompt": P, **kw})


def _call(**kw):
    return lambda pipe: pipe.prepare(GenerationRequest(**{"prompt": P, **kw}))


def _nan_image():
    image = IMG.clone()
    image[0, 0, 0] = float("nan")
    return image


REQUEST_AND_CALL = [
    ("prompt-type", _req(prompt=5), TypeError, "prompt"),
    ("negative-type", _req(negative_prompt=None), TypeError, "negative_prompt"),
    ("task-unknown", _req(task="x2y"), SkyReelsError, "task"),
    ("frames-zero", _req(num_frames=0), SkyReelsError, "num_frames"),
    ("height-negative", _req(height=-1), SkyReelsError, "height"),
    ("width-bool", _req(width=True), SkyReelsError, "width"),
    ("fps-zero", _req(fps=0), SkyReelsError, "fps"),
    ("fps-nan", _req(fps=float("nan")), SkyReelsError, "fps"),
    ("seed-negative", _req(seed=-1), SkyReelsError, "seed"),
    ("i2v-no-image", _req(task="i2v"), SkyReelsError, "image"),
    ("t2av-unused-image", _req(image=IMG), SkyReelsError, "image"),
    ("image-2d", _req(task="i2v", image=torch.zeros(32, 32)), SkyReelsError, "image"),
    ("image-int", _req(task="i2v", image=torch.zeros(3, 32, 32, dtype=torch.uint8)), SkyReelsError, "image"),
    ("image-nan", _req(task="i2v", image=_nan_image()), NonFiniteError, "image"),
    ("image-range", _req(task="i2v", image=IMG + 5), SkyReelsError, "image"),
    ("video-3d", _req(task="v2a", video=IMG), SkyReelsError, "video"),
    ("audio-no-rate", _req(task="a2v", audio=WAVE), SkyReelsError, "audio_sample_rate"),
    (
        "audio-3ch",
        _req(task="a2v", audio=torch.zeros(3, 800), audio_sample_rate=16000),
        SkyReelsError,
        "audio",
    ),
    (
        "audio-nan",
        _req(task="a2v", audio=torch.full((1, 800), float("nan")), audio_sample_rate=16000),
        NonFiniteError,
        "audio",
    ),
    ("audio-peak", _req(task="a2v", audio=WAVE + 2, audio_sample_rate=16000), SkyReelsError, "audio"),
    ("rate-without-audio", _req(audio_sample_rate=16000), SkyReelsError, "audio_sample_rate"),
    ("mask-float", _req(task="edit", video=CLIP, edit_mask=torch.zeros(32, 32)), SkyReelsError, "edit_mask"),
    (
        "mask-all-kept",
        _req(task="edit", video=CLIP, edit_mask=torch.ones(32, 32, dtype=torch.bool)),
        SkyReelsError,
        "edit_mask",
    ),
    (
        "mask-shape",
        _req(task="edit", video=CLIP, edit_mask=torch.zeros(16, 16, dtype=torch.bool)),
        SkyReelsError,
        "edit_mask",
    ),
    ("references-tensor", _req(reference_images=IMG), TypeError, "reference_images"),
    (
        "reference-video-3d",
        _req(prompt="@video_1", reference_videos=(IMG,)),
        SkyReelsError,
        r"reference_videos\[0\]",
    ),
    ("frames-not-causal", _call(num_frames=8), SkyReelsError, "num_frames"),
    ("height-not-cell", _call(height=30), SkyReelsError, "height"),
    ("image-size", _call(task="i2v", image=torch.zeros(3, 16, 16), height=32), SkyReelsError, "image"),
    ("missing-reference", _call(prompt="@image_1 runs."), ReferenceError_, "@image_1"),
    ("unused-reference", _call(reference_images=(IMG,)), ReferenceError_, r"images\[0\]"),
    (
        "wrong-kind-reference",
        _call(prompt="@audio_1 sings.", reference_images=(IMG,)),
        ReferenceError_,
        "@audio_1",
    ),
    ("unclosed-tag", _call(prompt="A <sfx>thud"), PromptError, "prompt"),
    (
        "multishot-vs-frames",
        _call(prompt="[shot 1: 2s] A door.\n[shot 2: 2s] A cat.", num_frames=9),
        PromptError,
        "num_frames",
    ),
    ("v2a-other-length", _call(task="v2a", video=CLIP, num_frames=5), SkyReelsError, "num_frames"),
    ("extend-not-longer", _call(task="extend", video=CLIP, num_frames=9), SkyReelsError, "num_frames"),
    (
        "reference-size",
        _call(prompt="@image_1 runs.", reference_images=(torch.zeros(3, 30, 30),)),
        SkyReelsError,
        "@image_1",
    ),
    ("request-type", lambda pipe: pipe.prepare("A cat."), TypeError, "request"),
    (
        "sampling-type",
        lambda pipe: pipe(GenerationRequest(prompt=P), sampling={"num_steps": 2}),
        TypeError,
        "sampling",
    ),
    ("steps-zero", lambda pipe: SamplingConfig(num_steps=0), ValueError, "num_steps"),
    ("solver-string", lambda pipe: SamplingConfig(solver="euler"), TypeError, "solver"),
    ("shift-zero", lambda pipe: SamplingConfig(shift=0), ValueError, "shift"),
    ("guidance-huge", lambda pipe: SamplingConfig(video_guidance=100), ValueError, "video_guidance"),
    ("rescale-range", lambda pipe: SamplingConfig(audio_rescale=2), ValueError, "audio_rescale"),
    (
        "negative-refs-string",
        lambda pipe: SamplingConfig(negative_references="drop"),
        TypeError,
        "negative_references",
    ),
    ("embedded-negative", lambda pipe: SamplingConfig(embedded_guidance=-1), ValueError, "embedded_guidance"),
    ("offload-mode", lambda pipe: pipe.enable_offload("disk", device="cpu"), SkyReelsError, "mode"),
]


@pytest.mark.parametrize("case", REQUEST_AND_CALL, ids=[c[0] for c in REQUEST_AND_CALL])
def test_python_api_bad_inputs(case, tiny_pipe, tmp_path, monkeypatch):
    _, action, error, name = case
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error, match=name):
        action(tiny_pipe)
    assert list(tmp_path.iterdir()) == []


@pytest.fixture(scope="module")
def small_output(tiny_pipe):
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return tiny_pipe(
            GenerationRequest(prompt=P, seed=1), sampling=SamplingConfig(num_steps=1), progress=False
        )
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("target", ["clip.avi", "clip"])
def test_save_rejects_unknown_suffixes(small_output, tmp_path, target):
    with pytest.raises(SkyReelsError, match="path"):
        small_output.save(tmp_path / target)
    assert list(tmp_path.iterdir()) == []


def _break_index(root: Path) -> None:
    (root / "model_index.json").write_text("{ not json")


def _wrong_class(root: Path) -> None:
    (root / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))


def _no_scheduler(root: Path) -> None:
    shutil.rmtree(root / "scheduler")


def _no_index(root: Path) -> None:
    (root / "model_index.json").unlink()


def _truncate_weights(root: Path) -> None:
    shard = sorted((root / "transformer").glob("*.safetensors"))[0]
    shard.write_bytes(shard.read_bytes()[:100])


def _bad_defaults(root: Path) -> None:
    index = json.loads((root / "model_index.json").read_text())
    index["defaults"]["frames"] = 3
    (root / "model_index.json").write_text(json.dumps(index))


FOLDERS = [
    ("corrupt-index", _break_index, "model_index.json"),
    ("wrong-class", _wrong_class, "model_index.json"),
    ("no-index", _no_index, "model_index.json"),
    ("no-scheduler", _no_scheduler, "scheduler"),
    ("truncated-weights", _truncate_weights, "safetensors"),
    ("bad-defaults", _bad_defaults, "defaults"),
]


@pytest.mark.parametrize("case", FOLDERS, ids=[c[0] for c in FOLDERS])
def test_from_pretrained_on_corrupt_folders(case, tiny_folder, tmp_path):
    from skyreels_v4.pipeline import SkyReelsV4Pipeline

    _, damage, name = case
    root = shutil.copytree(tiny_folder, tmp_path / "model")
    damage(root)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    with pytest.raises(FileFormatError, match=name):
        SkyReelsV4Pipeline.from_pretrained(root)
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before


def test_from_pretrained_on_a_missing_folder(tmp_path):
    from skyreels_v4.pipeline import SkyReelsV4Pipeline

    with pytest.raises(FileFormatError, match="nowhere"):
        SkyReelsV4Pipeline.from_pretrained(tmp_path / "nowhere")
    assert list(tmp_path.iterdir()) == []


# --- CLI ----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def media(tmp_path_factory):
    import soundfile

    from skyreels_v4.world.media import write_mp4

    root = tmp_path_factory.mktemp("media")
    frames = (torch.rand(9, 32, 32, 3, generator=torch.Generator().manual_seed(0)) * 255).to(torch.uint8)
    write_mp4(root / "clip.mp4", frames.numpy(), 16.0)
    write_mp4(root / "small.mp4", frames[:1, :16, :16].numpy(), 16.0)
    import av

    for name, picture in (("face.png", frames[0]), ("tiny.png", frames[0, :16, :16])):
        with av.open(str(root / name), mode="w", format="image2") as container:
            stream = container.add_stream("png", rate=1)
            stream.width, stream.height, stream.pix_fmt = picture.shape[1], picture.shape[0], "rgb24"
            container.mux(stream.encode(av.VideoFrame.from_ndarray(picture.numpy(), format="rgb24")))
            container.mux(stream.encode(None))
    soundfile.write(root / "voice.wav", torch.zeros(8000).numpy(), 16000)
    (root / "notes.txt").write_text("not an image")
    return root


CLI = [
    ("frames", ["--frames", "8"], "--frames"),
    ("model-missing", ["--model", "{tmp}/nowhere"], "--model"),
    ("image-missing", ["--task", "i2v", "--image", "{tmp}/none.png"], "--image"),
    ("image-suffix", ["--task", "i2v", "--image", "{media}/notes.txt"], "--image"),
    ("image-size", ["--task", "i2v", "--image", "{media}/tiny.png", "--height", "32"], "--image"),
    ("image-missing-for-task", ["--task", "i2v"], "--image"),
    ("out-suffix", ["--out", "{tmp}/clip.avi"], "--out"),
    ("out-folder", ["--out", "{tmp}/no/such/clip.mp4"], "--out"),
    ("t2a-needs-wav", ["--task", "t2a"], "--out"),
    ("steps", ["--steps", "0"], "--steps"),
    ("guidance", ["--video-guidance", "99"], "--video-guidance"),
    ("device", ["--device", "warp-drive"], "--device"),
    ("reference-missing", ["--prompt", "@image_1 runs."], "--prompt"),
    ("reference-unused", ["--reference-image", "{media}/face.png"], "--reference-image"),
    ("prompt-tag", ["--prompt", "A <sfx>thud"], "--prompt"),
    ("long-partial", ["--total-frames", "33"], "--total-frames"),
    (
        "long-window",
        ["--total-frames", "33", "--window-frames", "8", "--overlap-frames", "5"],
        "--window-frames",
    ),
    ("mask-unused", ["--edit-mask", "{media}/face.png"], "--edit-mask"),
    ("video-size", ["--task", "v2a", "--video", "{media}/small.mp4", "--height", "32"], "--height"),
    ("audio-suffix", ["--task", "a2v", "--audio", "{media}/clip.mp4"], "--audio"),
    ("solver", ["--solver", "rk45"], "--solver"),
    ("task", ["--task", "x2y"], "--task"),
    ("frames-not-int", ["--frames", "many"], "--frames"),
]


@pytest.mark.parametrize("case", CLI, ids=[c[0] for c in CLI])
def test_cli_bad_inputs(case, tiny_folder, media, tmp_path, capsys):
    _, extra, flag = case
    args = ["--model", str(tiny_folder), "--prompt", P, "--out", str(tmp_path / "clip.mp4"), "--steps", "1"]
    extra = [a.replace("{tmp}", str(tmp_path)).replace("{media}", str(media)) for a in extra]
    for i in range(0, len(extra), 2):  # later flags override the defaults above
        if extra[i] in args:
            args[args.index(extra[i]) + 1] = extra[i + 1]
        else:
            args += extra[i : i + 2]
    try:
        code = cli_main(args)
    except SystemExit as stop:  # argparse's own errors (choices, types)
        code = stop.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("skyreels-v4 generate: error: "), err
    assert re.search(re.escape(flag), err[0]), err[0]
    assert list(tmp_path.iterdir()) == []
