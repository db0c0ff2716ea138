"""``QwenVLTextEncoder``: Qwen2.5-VL as the shared multimodal text encoder (paper 3.1 and 3.3: the
MMLM reads the prompt together with reference images and video clips, "@image_1", "@video_1").

One prompt becomes one chat turn::

    <prefix: system prompt + user header> <content: prompt text with vision blocks> <suffix>

Each reference becomes ``<|vision_start|><|image_pad|> x N<|vision_end|>`` (``<|video_pad|>`` for
clips), inserted right after the prompt's first ``@image_k`` / ``@video_k`` mention, or appended
after the text when the prompt never mentions it. The model runs once; the hidden states of the
chosen layer (``skyreels_v4.text.layers``) are kept from the end of the prefix on: the crop is the
prefix's own token count, computed by tokenizing it and checked against the full sequence, never a
hard-coded ``crop_start``. ``max_length`` then truncates the kept tokens (the language model is
causal, so truncating after the forward equals truncating before it).

Pixels: reference tensors in [-1, 1] go through the checkpoint's own ``Qwen2VLImageProcessor`` (PIL
backend; torchvision is not needed). Video clips are processed frame by frame with the same
processor, then packed into Qwen's video layout (pairs of frames per temporal patch, an odd last
frame repeated); ``video_fps`` says how densely the given frames sample time.
"""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from skyreels_v4.errors import FileFormatError, PromptError, ReferenceError_, SkyReelsError
from skyreels_v4.text.base import TextEncoder, config_from_dict, config_to_dict
from skyreels_v4.text.embeddings import TextEmbeddings
from skyreels_v4.text.hf import MODEL_DIR, load_hf, load_hf_model, resolve_model_dir
from skyreels_v4.text.layers import FinalNorm, LayerCapture, resolve_hidden_layer

__all__ = ["DEFAULT_SYSTEM_PROMPT", "QwenVLTextEncoder", "QwenVLTextEncoderConfig"]

DEFAULT_SYSTEM_PROMPT = (
    "Read the description of a video with its sound, and any reference images or clips it mentions. "
    "Attend to the subjects and their look, the motion, the scene and camera, and every sound, "
    "line of speech and piece of music with the moment it happens."
)
CHATML_PREFIX = "<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\n"
CHATML_SUFFIX = "<|im_end|>"

_REFERENCE = re.compile(r"@(image|video)_(\d+)")


@dataclass(frozen=True, kw_only=True)
class QwenVLTextEncoderConfig:
    """How prompts become one chat turn and which hidden states are kept.

    ``prefix_template`` must contain ``{system}`` (replaced by ``system_prompt``); everything it
    produces is cropped off. ``max_length`` counts the kept tokens (text, vision and suffix).
    """

    hidden_layer: int = -1
    final_norm: FinalNorm = FinalNorm.APPLY
    max_length: int = 512
    system_prompt: str = DEFAULT_SYSTEM_PROMPT
    prefix_template: str = CHATML_PREFIX
    suffix: str = CHATML_SUFFIX
    video_fps: float = 2.0

    def __post_init__(self) -> None:
        if isinstance(self.hidden_layer, bool) or not isinstance(self.hidden_layer, int):
            raise TypeError(f"hidden_layer: expected an int, got {self.hidden_layer!r}")
        if isinstance(self.max_length, bool) or not isinstance(self.max_length, int) or self.max_length < 1:
            raise ValueError(f"max_length: expected a positive int, got {self.max_length!r}")
        if not isinstance(self.final_norm, FinalNorm):
            raise TypeError(f"final_norm: expected a FinalNorm, got {self.final_norm!r}")
        for name in ("system_prompt", "prefix_template", "suffix"):
            if not isinstance(getattr(self, name), str):
                raise TypeError(f"{name}: expected a str, got {type(getattr(self, name)).__name__}")
        if self.prefix_template.count("{system}") != 1:
            raise ValueError(
                f"prefix_template: expected exactly one '{{system}}', got {self.prefix_template!r}"
            )
        if not (
            isinstance(self.video_fps, (int, float)) and math.isfinite(self.video_fps) and self.video_fps > 0
        ):
            raise ValueError(f"video_fps: expected a positive number, got {self.video_fps!r}")

    @property
    def prefix(self) -> str:
        return self.prefix_template.replace("{system}", self.system_prompt)


class QwenVLTextEncoder(TextEncoder):
    """Qwen2.5-VL (``Qwen2_5_VLModel``, no LM head) + tokenizer + image processor (module docstring)."""

    supports_images = True
    supports_videos = True
    config_class = QwenVLTextEncoderConfig

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Any,
        image_processor: Any,
        config: QwenVLTextEncoderConfig | None = None,
    ) -> None:
        super().__init__()
        config = QwenVLTextEncoderConfig() if config is None else config
        if not isinstance(config, QwenVLTextEncoderConfig):
            raise TypeError(f"config: expected QwenVLTextEncoderConfig, got {type(config).__name__}")
        backbone = (
            getattr(model, "model", model)
            if type(model).__name__.endswith("ForConditionalGeneration")
            else model
        )
        if type(backbone).__name__ != "Qwen2_5_VLModel":
            raise TypeError(
                "model: expected Qwen2_5_VLModel or Qwen2_5_VLForConditionalGeneration, "
                f"got {type(model).__name__}"
            )
        self.config = config
        self.model = backbone
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        hf = backbone.config
        self._merge = int(hf.vision_config.spatial_merge_size)
        if int(image_processor.merge_size) != self._merge or int(image_processor.patch_size) != int(
            hf.vision_config.patch_size
        ):
            raise ValueError(
                f"image_processor: expected patch_size {hf.vision_config.patch_size} and "
                f"merge_size {self._merge} "
                f"(the model's), got {image_processor.patch_size} and {image_processor.merge_size}"
            )
        self._temporal_patch = int(image_processor.temporal_patch_size)
        ids = {
            "image": hf.image_token_id,
            "video": hf.video_token_id,
            "start": hf.vision_start_token_id,
            "end": hf.vision_end_token_id,
        }
        self._token_ids = ids
        self._token_text = {k: tokenizer.convert_ids_to_tokens(int(v)) for k, v in ids.items()}
        special = set(tokenizer.all_special_tokens) | set(self._token_text.values())
        special |= {t.content for t in getattr(tokenizer, "added_tokens_decoder", {}).values() if t.special}
        self._forbidden = sorted(s for s in special if s)
        self._layers: nn.ModuleList = backbone.language_model.layers
        self._norm: nn.Module = backbone.language_model.norm
        self._k = resolve_hidden_layer(config.hidden_layer, len(self._layers))
        self._prefix_ids: list[int] = tokenizer(config.prefix, add_special_tokens=False)["input_ids"]
        self._pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        self.model_dir: Path | None = None
        self.freeze()

    @classmethod
    def from_hf(
        cls,
        model_dir: str | os.PathLike[str],
        config: QwenVLTextEncoderConfig | None = None,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> QwenVLTextEncoder:
        """Open a Qwen2.5-VL checkpoint folder, e.g. ``Qwen/Qwen2.5-VL-7B-Instruct`` (LM head not loaded)."""
        import transformers
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        model_dir = Path(model_dir)
        hf_config = load_hf(transformers.AutoConfig, model_dir, "model config")
        if hf_config.model_type != "qwen2_5_vl":
            raise FileFormatError(
                model_dir / "config.json", f"expected model_type 'qwen2_5_vl', got {hf_config.model_type!r}"
            )
        model = load_hf_model(transformers.Qwen2_5_VLModel, model_dir, dtype=dtype)
        tokenizer = load_hf(transformers.AutoTokenizer, model_dir, "tokenizer")
        processor = load_hf(Qwen2VLImageProcessorPil, model_dir, "image processor (preprocessor_config.json)")
        encoder = cls(model.to(device), tokenizer, processor, config)
        encoder.model_dir = model_dir
        return encoder

    # -- TextEncoder ----------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return int(self.model.config.text_config.hidden_size)

    @property
    def pooled_dim(self) -> int | None:
        return None

    @property
    def max_length(self) -> int:
        return self.config.max_length

    @property
    def prefix_length(self) -> int:
        """Tokens cropped off the front of every sequence (system prompt + user header)."""
        return len(self._prefix_ids)

    # -- pixels ---------------------------------------------------------------------------------

    def _frames_to_patches(self, frames: list[torch.Tensor]) -> tuple[torch.Tensor, list[int]]:
        """Per-frame processor output ``[F, N, C, tp, p, p]`` (first temporal copy kept) and the grid."""
        unit = [((f.detach().to("cpu", torch.float32) + 1) / 2).clamp(0, 1) for f in frames]
        out = self.image_processor(images=unit, return_tensors="pt", do_rescale=False)
        grids = out["image_grid_thw"]
        if not bool((grids == grids[0]).all()):
            raise ValueError(f"videos: expected one grid for every frame, got {grids.tolist()}")
        _, gh, gw = (int(v) for v in grids[0])
        p = int(self.image_processor.patch_size)
        patches = out["pixel_values"].reshape(len(frames), gh * gw, 3, self._temporal_patch, p, p)
        return patches, [gh, gw]

    def image_inputs(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(pixel_values [N, C*tp*p*p], grid_thw [3])`` of one image ``[3, H, W]`` in [-1, 1]."""
        patches, (gh, gw) = self._frames_to_patches([image])
        return patches[0].reshape(gh * gw, -1), torch.tensor([1, gh, gw])

    def video_inputs(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(pixel_values_videos [T*N, C*tp*p*p], grid_thw [3])`` of one clip ``[3, F, H, W]`` in [-1, 1].

        Frames are grouped ``tp`` at a time (an incomplete last group repeats the last frame); inside a
        group the temporal patch axis holds the frames in order, as Qwen's video processor packs them.
        """
        frames = list(video.unbind(1))
        tp = self._temporal_patch
        while len(frames) % tp:
            frames.append(frames[-1])
        patches, (gh, gw) = self._frames_to_patches(frames)
        first = patches[:, :, :, 0]  # [F, N, C, p, p]: the processor repeats an image over tp
        grid_t = len(frames) // tp
        grouped = first.reshape(grid_t, tp, gh * gw, *first.shape[2:]).permute(0, 2, 3, 1, 4, 5)
        return grouped.reshape(grid_t * gh * gw, -1), torch.tensor([grid_t, gh, gw])

    # -- text -----------------------------------------------------------------------------------

    def _vision_block(self, kind: str, grid: torch.Tensor) -> str:
        count = int(grid.prod()) // (self._merge**2)
        t = self._token_text
        return t["start"] + t[kind] * count + t["end"]

    def build_content(
        self, prompt: str, image_grids: list[torch.Tensor], video_grids: list[torch.Tensor], *, where: str
    ) -> tuple[str, list[tuple[str, int]]]:
        """The user content with vision blocks, and the references in the order their blocks appear."""
        counts = {"image": len(image_grids), "video": len(video_grids)}
        grids = {"image": image_grids, "video": video_grids}
        placed: list[tuple[str, int]] = []
        pieces: list[str] = []
        last = 0
        for match in _REFERENCE.finditer(prompt):
            kind, number = match.group(1), int(match.group(2))
            if not 1 <= number <= counts[kind]:
                raise ReferenceError_(
                    f"{where}: {match.group(0)} refers to {kind} {number}, but {counts[kind]} {kind}s "
                    "were given for this prompt (numbering starts at 1)"
                )
            if (kind, number - 1) in placed:
                continue
            pieces += [prompt[last : match.end()], self._vision_block(kind, grids[kind][number - 1])]
            last = match.end()
            placed.append((kind, number - 1))
        pieces.append(prompt[last:])
        for kind in ("image", "video"):
            for j in range(counts[kind]):
                if (kind, j) not in placed:
                    pieces.append(self._vision_block(kind, grids[kind][j]))
                    placed.append((kind, j))
        return "".join(pieces), placed

    def _encode(
        self,
        prompts: list[str],
        images: list[list[torch.Tensor]] | None,
        videos: list[list[torch.Tensor]] | None,
    ) -> TextEmbeddings:
        prefix_ids = self._prefix_ids
        rows: list[list[int]] = []
        image_values, image_grids, video_values, video_grids = [], [], [], []
        for i, prompt in enumerate(prompts):
            for token in self._forbidden:
                if token in prompt:
                    raise PromptError(f"prompts[{i}]: expected plain text, got the special token {token!r}")
            ims = [self.image_inputs(x) for x in (images[i] if images else [])]
            vis = [self.video_inputs(x) for x in (videos[i] if videos else [])]
            content, order = self.build_content(
                prompt, [g for _, g in ims], [g for _, g in vis], where=f"prompts[{i}]"
            )
            ids = self.tokenizer(self.config.prefix + content + self.config.suffix, add_special_tokens=False)[
                "input_ids"
            ]
            if ids[: len(prefix_ids)] != prefix_ids:
                raise SkyReelsError(
                    f"prefix_template: its tokens change when the prompt follows (prompts[{i}]); end the "
                    "template at a token boundary such as a newline or a special token"
                )
            expected = sum(int(g.prod()) for _, g in ims) // self._merge**2
            if ids.count(int(self._token_ids["image"])) != expected:
                raise RuntimeError(f"prompts[{i}]: the tokenizer split the image placeholders")
            for kind, j in order:
                values, grid = (ims if kind == "image" else vis)[j]
                (image_values if kind == "image" else video_values).append(values)
                (image_grids if kind == "image" else video_grids).append(grid)
            rows.append(ids)

        device, vision_dtype = self.device, next(self.model.visual.parameters()).dtype
        length = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), length), self._pad_id, dtype=torch.long)
        attention = torch.zeros(len(rows), length, dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            attention[i, : len(row)] = 1
        kwargs: dict[str, Any] = {}
        if image_values:
            kwargs["pixel_values"] = torch.cat(image_values).to(device, vision_dtype)
            kwargs["image_grid_thw"] = torch.stack(image_grids).to(device)
        if video_values:
            kwargs["pixel_values_videos"] = torch.cat(video_values).to(device, vision_dtype)
            kwargs["video_grid_thw"] = torch.stack(video_grids).to(device)
            seconds = self._temporal_patch / float(self.config.video_fps)
            kwargs["second_per_grid_ts"] = torch.full((len(video_grids),), seconds, device=device)
        capture = LayerCapture(self._layers, self._k, stop=True)
        with capture.run():
            self.model(
                input_ids=input_ids.to(device), attention_mask=attention.to(device), use_cache=False, **kwargs
            )
        hidden = capture.value
        assert hidden is not None
        if self.config.final_norm is FinalNorm.APPLY:
            hidden = self._norm(hidden)

        start = len(prefix_ids)
        kept = [min(len(r) - start, self.config.max_length) for r in rows]
        if min(kept) < 1:
            raise RuntimeError("suffix and prompt produced no tokens after the prefix")
        tokens = hidden.new_zeros(len(rows), max(kept), hidden.shape[-1])
        mask = torch.zeros(len(rows), max(kept), dtype=torch.bool, device=hidden.device)
        for i, n in enumerate(kept):
            tokens[i, :n] = hidden[i, start : start + n]
            mask[i, :n] = True
        return TextEmbeddings(tokens=tokens, mask=mask)

    # -- files ----------------------------------------------------------------------------------

    def _config_dict(self) -> dict[str, Any]:
        return {**config_to_dict(self.config), "model_dir": MODEL_DIR}

    def _save_files(self, folder: Path) -> None:
        target = str(folder / MODEL_DIR)
        self.model.save_pretrained(target)
        self.tokenizer.save_pretrained(target)
        self.image_processor.save_pretrained(target)

    @classmethod
    def _load(
        cls,
        folder: Path,
        config_data: dict[str, Any],
        config_path: Path,
        *,
        dtype: torch.dtype | None,
        device: torch.device | str | None,
    ) -> QwenVLTextEncoder:
        data = dict(config_data)
        model_dir = resolve_model_dir(folder, data, config_path)
        config = config_from_dict(QwenVLTextEncoderConfig, data, path=config_path)
        return cls.from_hf(model_dir, config, dtype=dtype, device=device)
