"""``skyreels-v4 generate``: a prompt (and media files) in, an .mp4 with sound out (paper 3.1-3.3).

User errors print one line ``skyreels-v4 generate: error: --arg: expected ..., got ...`` and exit 2;
no output file is left behind (the output is written atomically, and only after generation).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from skyreels_v4.pipeline.pipeline import SkyReelsV4Pipeline

PROG = "skyreels-v4 generate"

EXAMPLES = """\
tasks (--task), each with an example (pixel inputs must already have the output size, e.g. 64x64):
  t2av         text to video with sound (default)
               %(prog)s --model M --prompt "A dog barks. <sfx>Barking.</sfx>" --out dog.mp4
  t2v / t2a    text to video only / sound only (t2a writes audio: --out sound.wav)
               %(prog)s --model M --task t2a --prompt "<bgm>Soft piano.</bgm>" --out piano.wav
  i2v / i2av   first frame given (png/jpg at the output size)
               %(prog)s --model M --task i2av --image first.png --prompt "..." --out clip.mp4
  interpolate  first and last frames given
               %(prog)s --model M --task interpolate --image a.png --last-image b.png --prompt "." --out c.mp4
  extend       continue a clip (its frames and, with --audio or its own sound, its audio)
               %(prog)s --model M --task extend --video start.mp4 --frames 65 --prompt "..." --out longer.mp4
  edit         regenerate where the mask is black (png, white = keep), keep the rest
               %(prog)s --model M --task edit --video src.mp4 --edit-mask mask.png --prompt "..." --out e.mp4
  v2a          sound for a given video (the video is kept untouched)
               %(prog)s --model M --task v2a --video silent.mp4 --prompt "<sfx>Rain.</sfx>" --out rain.mp4
  a2v          video for a given sound (lip-sync, dance)
               %(prog)s --model M --task a2v --audio speech.wav --prompt "A man talks." --out talk.mp4
references (any task): @image_N / @video_N / @audio_N in the prompt, files in order of N
  %(prog)s --model M --prompt "@image_1 sings like @audio_1." --reference-image face.png \\
      --reference-audio voice.wav --out song.mp4
multi-shot: "[shot 1: 2s] ... [shot 2: 3s] ..." lines in the prompt set the length (or must match --frames)
long clips: --total-frames N --window-frames W --overlap-frames O (chained extension)
efficient path (paper 4.5, needs a refiner/ in the model folder): the base model generates at
  --height x --width, the refiner upsamples (and interpolates frames) to --refine HxW; pixel inputs
  are then given at HxW
  %(prog)s --model M --prompt "..." --height 32 --width 32 --refine 64x64 --out sharp.mp4
  with high-res keyframes generated jointly by the base model (a model trained with them):
  %(prog)s ... --refine 64x64 --keyframes 0,2 --out sharp.mp4
"""

# Request / sampling field -> the flag that sets it (messages name the field first).
FLAGS = {
    "prompt": "--prompt",
    "negative_prompt": "--negative-prompt",
    "task": "--task",
    "num_frames": "--frames",
    "height": "--height",
    "width": "--width",
    "height/width": "--height/--width",
    "fps": "--fps",
    "image": "--image",
    "last_image": "--last-image",
    "video": "--video",
    "audio": "--audio",
    "audio_sample_rate": "--audio",
    "edit_mask": "--edit-mask",
    "reference_images": "--reference-image",
    "reference_videos": "--reference-video",
    "reference_audios": "--reference-audio",
    "references": "--reference-image/--reference-video/--reference-audio",
    "seed": "--seed",
    "num_steps": "--steps",
    "video_guidance": "--video-guidance",
    "audio_guidance": "--audio-guidance",
    "shift": "--shift",
    "solver": "--solver",
    "video_rescale": "--video-rescale",
    "audio_rescale": "--audio-rescale",
    "video_guidance_interval": "--video-guidance-interval",
    "audio_guidance_interval": "--audio-guidance-interval",
    "duration": "--prompt",
    "path": "--out",
    "total_frames": "--total-frames",
    "window_frames": "--window-frames",
    "overlap_frames": "--overlap-frames",
    "max_resident": "--offload",
    "refine_to": "--refine",
    "refiner": "--refine",
    "keyframes": "--keyframes",
}


class UsageError(Exception):
    """A user error already phrased as ``--flag: problem``."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(2)


def build_parser() -> argparse.ArgumentParser:
    from skyreels_v4.pipeline.memory import OffloadMode
    from skyreels_v4.pipeline.request import Task

    parser = _Parser(
        prog=PROG,
        description="Generate a video with sound (or sound for a video) with a SkyReels-V4 model folder.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", required=True, help="model folder (model_index.json + components)")
    parser.add_argument("--prompt", required=True, help="structured caption (docs/prompts.md)")
    parser.add_argument("--out", required=True, help="output .mp4 (or .wav for t2a)")
    parser.add_argument("--task", default="t2av", choices=[t.value for t in Task])
    parser.add_argument("--negative-prompt", default="", help="guidance negative (default: empty prompt)")
    media = parser.add_argument_group("media (pixel inputs must have the output size; no resizing)")
    media.add_argument("--image", help="first frame (png/jpg)")
    media.add_argument("--last-image", help="last frame for interpolate (png/jpg)")
    media.add_argument("--video", help="source video (mp4): extend / edit / v2a")
    media.add_argument("--audio", help="source audio (wav): a2v / extend")
    media.add_argument("--edit-mask", help="png, white = keep, black = regenerate (edit)")
    media.add_argument("--reference-image", action="append", default=[], help="@image_N (repeatable)")
    media.add_argument("--reference-video", action="append", default=[], help="@video_N (repeatable)")
    media.add_argument("--reference-audio", action="append", default=[], help="@audio_N (repeatable)")
    size = parser.add_argument_group("size (default: the model folder's)")
    size.add_argument("--frames", type=int, help="number of frames (1 + 4k for a 4x causal VAE)")
    size.add_argument("--height", type=int)
    size.add_argument("--width", type=int)
    size.add_argument("--fps", type=float)
    size.add_argument("--refine", metavar="HxW", help="refine to this output size (the folder's refiner)")
    size.add_argument(
        "--keyframes",
        metavar="I,J,...",
        help="with --refine: latent frames the base model also generates at the refined size (paper 4.5)",
    )
    size.add_argument("--total-frames", type=int, help="long clip: total frames (chained extension)")
    size.add_argument("--window-frames", type=int, help="long clip: frames per window")
    size.add_argument("--overlap-frames", type=int, help="long clip: context frames carried over")
    sampling = add_sampling_arguments(parser)
    sampling.add_argument("--seed", type=int, default=0)
    run = parser.add_argument_group("device")
    run.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    run.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    run.add_argument("--offload", default="none", choices=[m.value for m in OffloadMode])
    run.add_argument("--int8", action="store_true", help="torchao int8 weight-only transformer")
    parser.add_argument("--wav", action="store_true", help="also write the audio next to the mp4")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser


def add_sampling_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """The sampling flags (``--steps``, ``--video-guidance``, ``--audio-guidance``, their ``-rescale``
    and ``-interval``, ``--shift``, ``--solver``), each defaulting to the model folder's scheduler
    config; shared by ``generate`` and ``evaluate``. Returns the group, for a command's own flags."""
    from skyreels_flow_matching import Solver

    sampling = parser.add_argument_group("sampling (default: the model folder's scheduler config)")
    sampling.add_argument("--steps", type=int, help="denoising steps")
    sampling.add_argument("--video-guidance", type=float, help="video guidance scale (1 = off)")
    sampling.add_argument("--audio-guidance", type=float, help="audio guidance scale (1 = off)")
    sampling.add_argument("--video-rescale", type=float, help="video guidance rescale in [0, 1]")
    sampling.add_argument("--audio-rescale", type=float, help="audio guidance rescale in [0, 1]")
    for modality in ("video", "audio"):
        sampling.add_argument(
            f"--{modality}-guidance-interval",
            metavar="LO,HI",
            help=f"guide the {modality} only at steps with LO <= sigma <= HI (default 0,1: every step)",
        )
    sampling.add_argument("--shift", type=float, help="sigma shift of the sampling grid")
    sampling.add_argument("--solver", choices=[s.value for s in Solver])
    return sampling


def _interval(flag: str, text: str | None) -> tuple[float, float] | None:
    """``"LO,HI"`` -> ``(LO, HI)``; the range itself is checked by ``SamplingConfig``."""
    if text is None:
        return None
    parts = text.split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        return (float(parts[0]), float(parts[1]))
    except ValueError:
        raise ValueError(f"{flag}: expected two numbers LO,HI (e.g. 0.5,1), got {text!r}") from None


def sampling_from_args(base: Any, args: argparse.Namespace) -> Any:
    """``base`` (a ``SamplingConfig``) with the flags of ``add_sampling_arguments`` that were given.
    A rejected value raises ``ValueError`` naming its flag (``--video-guidance: expected ...``)."""
    from dataclasses import replace

    from skyreels_flow_matching import Solver

    changes = {
        "num_steps": args.steps,
        "video_guidance": args.video_guidance,
        "audio_guidance": args.audio_guidance,
        "shift": args.shift,
        "solver": None if args.solver is None else Solver(args.solver),
        "video_rescale": args.video_rescale,
        "audio_rescale": args.audio_rescale,
        "video_guidance_interval": _interval("--video-guidance-interval", args.video_guidance_interval),
        "audio_guidance_interval": _interval("--audio-guidance-interval", args.audio_guidance_interval),
    }
    try:
        return replace(base, **{k: v for k, v in changes.items() if v is not None})
    except (ValueError, TypeError) as error:
        raise ValueError(_flagged(error)) from None


def _read(flag: str, path: str | None, kind: str) -> Any:
    if path is None:
        return None
    from skyreels_v4.errors import FileFormatError
    from skyreels_v4.io.media import read_audio_file, read_image_file, read_video_file

    target = Path(path)
    suffixes = {
        "image": (".png", ".jpg", ".jpeg"),
        "video": (".mp4", ".mov", ".mkv", ".webm"),
        "audio": (".wav",),
    }
    if target.suffix.lower() not in suffixes[kind]:
        raise UsageError(f"{flag}: expected a {'/'.join(suffixes[kind])} file, got {path!r}")
    try:
        if kind == "image":
            return read_image_file(target)
        if kind == "video":
            return read_video_file(target)
        return read_audio_file(target)
    except FileFormatError as error:
        raise UsageError(f"{flag}: {error}") from None


def _own_audio(path: Path) -> tuple[Any, int] | None:
    """The audio stream of a source clip (extension continues it), or None when it has none."""
    from skyreels_v4.errors import FileFormatError
    from skyreels_v4.io.media import read_audio_file

    try:
        return read_audio_file(path)
    except FileFormatError:
        return None


def _request(args: argparse.Namespace) -> Any:
    from skyreels_v4.pipeline.request import GenerationRequest
    from skyreels_v4.vae import resample_waveform

    image = _read("--image", args.image, "image")
    last_image = _read("--last-image", args.last_image, "image")
    video_read = _read("--video", args.video, "video")
    audio_read = _read("--audio", args.audio, "audio")
    if args.task == "extend" and audio_read is None and video_read is not None:
        audio_read = _own_audio(Path(args.video))
    mask_image = _read("--edit-mask", args.edit_mask, "image")
    references = {
        "reference_images": tuple(_read("--reference-image", p, "image") for p in args.reference_image),
        "reference_videos": tuple(_read("--reference-video", p, "video")[0] for p in args.reference_video),
    }
    waves = [_read("--reference-audio", p, "audio") for p in args.reference_audio]
    rate = audio_read[1] if audio_read is not None else (waves[0][1] if waves else None)
    references["reference_audios"] = tuple(
        wave if wave_rate == rate else resample_waveform(wave, wave_rate, rate) for wave, wave_rate in waves
    )
    refine_to = None
    if args.refine is not None:
        parts = args.refine.lower().split("x")
        if len(parts) != 2 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise UsageError(f"--refine: expected HEIGHTxWIDTH such as 128x128, got {args.refine!r}")
        refine_to = (int(parts[0]), int(parts[1]))
    keyframes: tuple[int, ...] = ()
    if args.keyframes is not None:
        parts = [p.strip() for p in args.keyframes.split(",")]
        if not parts or not all(p.isdigit() for p in parts):
            raise UsageError(
                f"--keyframes: expected latent frame indices such as 0,4,8, got {args.keyframes!r}"
            )
        keyframes = tuple(int(p) for p in parts)
    fps = args.fps
    if video_read is not None and fps is None:
        fps = video_read[1]  # the source's own rate
    return GenerationRequest(
        prompt=args.prompt,
        task=args.task,
        negative_prompt=args.negative_prompt,
        num_frames=args.frames,
        height=args.height,
        width=args.width,
        fps=fps,
        image=image,
        last_image=last_image,
        video=None if video_read is None else video_read[0],
        audio=None if audio_read is None else audio_read[0],
        audio_sample_rate=rate,
        edit_mask=None if mask_image is None else mask_image.mean(0) >= 0,
        seed=args.seed,
        refine_to=refine_to,
        keyframes=keyframes,
        **references,
    )


def _flagged(error: BaseException) -> str:
    """``name: problem`` -> ``--flag: problem`` when the name is a request or sampling field."""
    from skyreels_v4.errors import PromptError, ReferenceError_

    text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    head, sep, rest = text.partition(": ")
    name = head.split("[")[0].split(".")[-1].strip()
    if sep and name in FLAGS:
        return f"{FLAGS[name]}: {rest}"
    if isinstance(error, ReferenceError_) or head.startswith("@"):
        return f"--prompt/{FLAGS['references']}: {text}"
    if isinstance(error, PromptError):
        return f"--prompt: {text}"
    return text


def _run(
    args: argparse.Namespace,
    on_load: Callable[[SkyReelsV4Pipeline], None] | None = None,
    writes: bool = True,
) -> int:
    import torch

    from skyreels_v4.errors import FileFormatError
    from skyreels_v4.pipeline.pipeline import SkyReelsV4Pipeline

    out = Path(args.out)
    want = ".wav" if args.task == "t2a" else ".mp4"
    if out.suffix.lower() != want:
        raise UsageError(f"--out: expected a {want} file for task {args.task!r}, got {args.out!r}")
    if not out.parent.is_dir():
        raise UsageError(f"--out: expected a file in an existing folder, got {args.out!r}")
    try:
        device = torch.device(args.device)
    except (RuntimeError, TypeError):
        raise UsageError(
            f"--device: expected a torch device such as cpu or cuda:0, got {args.device!r}"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device: expected an available device, got {args.device!r} (no CUDA here)")
    long = (args.total_frames, args.window_frames, args.overlap_frames)
    if any(v is not None for v in long) and any(v is None for v in long):
        raise UsageError(
            "--total-frames: expected --total-frames, --window-frames and --overlap-frames together"
        )
    dtype = getattr(torch, args.dtype)
    try:
        pipe = SkyReelsV4Pipeline.from_pretrained(args.model, dtype=dtype, device="cpu")
    except FileFormatError as error:
        raise UsageError(f"--model: {error}") from None
    if args.int8:
        pipe.quantize_int8()
    pipe.enable_offload(args.offload, device=device)
    if on_load is not None:
        on_load(pipe)
    sampling = sampling_from_args(pipe.sampling, args)
    request = _request(args)
    if args.total_frames is not None:
        clip = pipe.generate_long(
            request,
            total_frames=args.total_frames,
            window_frames=args.window_frames,
            overlap_frames=args.overlap_frames,
            sampling=sampling,
            progress=not args.quiet,
        )
        output = clip.output
    else:
        output = pipe(request, sampling=sampling, progress=not args.quiet)
    if writes:
        path = output.save(out, wav=args.wav)
        print(f"wrote {path} ({output.duration_s:.2f} s)")
    return 0


def main(
    argv: list[str] | None = None,
    *,
    on_load: Callable[[SkyReelsV4Pipeline], None] | None = None,
    writes: bool = True,
) -> int:
    """``skyreels-v4 generate``. ``on_load(pipe)`` runs once the folder is loaded (e.g. to apply
    sequence parallelism, ``skyreels_v4.scale.generate``); ``writes=False`` generates without writing
    (the other ranks of a distributed run)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            return _run(args, on_load, writes)
    except UsageError as error:
        message = str(error)
    except (ValueError, TypeError) as error:  # typed errors of the request, prompt, sampling or pipeline
        message = _flagged(error)
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
