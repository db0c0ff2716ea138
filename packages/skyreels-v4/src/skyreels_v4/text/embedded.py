"""The embedded default text encoder: small, self-contained, deterministic (paper 3.1 at toy scale).

The full model's shared encoder is a frozen multimodal LLM; the ``tiny`` preset, trained on the
procedural world (``skyreels_v4.world``), needs no external files. This encoder is

* ``EmbeddedTokenizer``: NFKC + lowercase, split into structured-caption tags (``<sfx>``, ``</bgm>``,
  ...), runs of letters, single digits and single other characters. Pieces in a fixed vocabulary
  (the world's colours, shapes, backgrounds and caption words, digits, punctuation, the paper's tags)
  get their own id; any other piece is hashed (BLAKE2b, not Python's salted ``hash``) into a fixed
  number of buckets, so every text tokenizes, always the same way. Numbers are spelled digit by
  digit, so "440 Hz" and "660 Hz" differ in two tokens.
* ``EmbeddedTextEncoder``: token embedding + sinusoidal or learned positions + a few pre-norm
  transformer layers + a projection to ``dim``; an optional pooled output (masked mean, projected).
  Weights come from a seeded generator (same seed -> bit-identical weights on any machine) and are
  frozen by default.
"""

from __future__ import annotations

import enum
import hashlib
import math
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from skyreels_v4.errors import FileFormatError
from skyreels_v4.io import read_safetensors, save_safetensors
from skyreels_v4.text.base import TextEncoder, config_from_dict, config_to_dict
from skyreels_v4.text.embeddings import TextEmbeddings

__all__ = [
    "EmbeddedTextEncoder",
    "EmbeddedTextEncoderConfig",
    "EmbeddedTokenizer",
    "PositionEncoding",
    "default_vocabulary",
]

WEIGHTS_NAME = "model.safetensors"
PAD, EOS = "<pad>", "<eos>"

#: The structured-caption tags of paper 3.4.3 (each opening and closing form is one token).
CAPTION_TAGS = ("text", "sfx", "dialogue", "singing", "bgm")

# Words of the procedural world's captions (skyreels_v4.world.captions) besides the palette names,
# plus the reference words of multimodal prompts ("@image_1").
_CAPTION_WORDS = (
    "a an the and or of with in on at to for each time times hits hit wall walls inside box bounces bounce "
    "blip blips hz quiet low drone plays throughout sound sounds music speech circle circles square squares "
    "triangle triangles image video audio reference shot no silence"
)
_PUNCTUATION = ".,!?;:'\"-()@_/%+"

_PIECE = re.compile(r"</?[^\W\d_]+>|[^\W\d_]+|\d|\S")


def default_vocabulary() -> tuple[str, ...]:
    """The fixed vocabulary: tags, digits, punctuation, the world's palette names and caption words."""
    from skyreels_v4.world.captions import BGM_TEXT
    from skyreels_v4.world.palette import Background, Colour, Shape

    pieces: list[str] = []
    for tag in CAPTION_TAGS:
        pieces += [f"<{tag}>", f"</{tag}>"]
    pieces += [str(d) for d in range(10)]
    pieces += list(_PUNCTUATION)
    words = [m.value for m in (*Colour, *Background, *Shape)]
    words += _CAPTION_WORDS.split() + _PIECE.findall(BGM_TEXT.lower())
    for word in words:
        if word not in pieces:
            pieces.append(word)
    return tuple(pieces)


class EmbeddedTokenizer:
    """Deterministic tokenizer for any text: fixed vocabulary + hashed buckets for everything else.

    Ids: 0 = ``<pad>``, 1 = ``<eos>`` (closes every prompt, so even "" has one token), then the
    vocabulary, then ``hash_buckets`` buckets.
    """

    def __init__(self, vocabulary: Sequence[str], *, hash_buckets: int) -> None:
        vocab = list(vocabulary)
        if len(set(vocab)) != len(vocab):
            raise ValueError("vocabulary: expected unique pieces, got duplicates")
        if PAD in vocab or EOS in vocab:
            raise ValueError(f"vocabulary: {PAD!r} and {EOS!r} are reserved, got them in the list")
        if hash_buckets < 1:
            raise ValueError(f"hash_buckets: expected >= 1, got {hash_buckets}")
        self.vocabulary = (PAD, EOS, *vocab)
        self.hash_buckets = hash_buckets
        self._ids = {piece: i for i, piece in enumerate(self.vocabulary)}

    @property
    def pad_id(self) -> int:
        return 0

    @property
    def eos_id(self) -> int:
        return 1

    @property
    def vocab_size(self) -> int:
        """Embedding rows: vocabulary (with pad and eos) plus hash buckets."""
        return len(self.vocabulary) + self.hash_buckets

    @staticmethod
    def pieces(text: str) -> list[str]:
        """Split ``text`` into pieces (NFKC, lowercase; whitespace only separates)."""
        return _PIECE.findall(unicodedata.normalize("NFKC", text).lower())

    def piece_id(self, piece: str) -> int:
        known = self._ids.get(piece)
        if known is not None:
            return known
        digest = hashlib.blake2b(piece.encode("utf-8"), digest_size=8).digest()
        return len(self.vocabulary) + int.from_bytes(digest, "little") % self.hash_buckets

    def encode(self, text: str, *, max_length: int) -> list[int]:
        """Token ids of ``text`` ending in ``<eos>``, truncated to ``max_length`` (eos kept)."""
        ids = [self.piece_id(p) for p in self.pieces(text)][: max_length - 1]
        return [*ids, self.eos_id]


class PositionEncoding(str, enum.Enum):
    """How token positions enter: fixed sinusoids (no parameters) or a learned table."""

    SINUSOIDAL = "sinusoidal"
    LEARNED = "learned"


@dataclass(frozen=True, kw_only=True)
class EmbeddedTextEncoderConfig:
    """``dim``: output width (the tiny preset's text_dim is 32). ``pooled_dim``: None for no pooled output."""

    dim: int = 32
    width: int = 64
    num_layers: int = 2
    num_heads: int = 4
    mlp_ratio: int = 2
    max_length: int = 64
    hash_buckets: int = 256
    pooled_dim: int | None = None
    positions: PositionEncoding = PositionEncoding.SINUSOIDAL
    seed: int = 0
    vocabulary: tuple[str, ...] = field(default_factory=default_vocabulary)

    def __post_init__(self) -> None:
        for name in ("dim", "width", "num_heads", "mlp_ratio", "max_length", "hash_buckets"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: expected a positive int, got {value!r}")
        if isinstance(self.num_layers, bool) or not isinstance(self.num_layers, int) or self.num_layers < 0:
            raise ValueError(f"num_layers: expected an int >= 0, got {self.num_layers!r}")
        if self.width % self.num_heads:
            raise ValueError(f"width: expected a multiple of num_heads ({self.num_heads}), got {self.width}")
        if self.pooled_dim is not None and (isinstance(self.pooled_dim, bool) or self.pooled_dim < 1):
            raise ValueError(f"pooled_dim: expected a positive int or None, got {self.pooled_dim!r}")
        if not isinstance(self.positions, PositionEncoding):
            raise TypeError(f"positions: expected a PositionEncoding, got {self.positions!r}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise TypeError(f"seed: expected an int, got {self.seed!r}")
        if not all(isinstance(p, str) and p for p in self.vocabulary):
            raise ValueError("vocabulary: expected non-empty strings")


def sinusoidal_positions(length: int, width: int) -> torch.Tensor:
    """``[length, width]`` float32 sin/cos table (Vaswani et al.), sin in the first half of the features."""
    half = width // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float64) / max(half, 1))
    angles = torch.arange(length, dtype=torch.float64)[:, None] * freqs[None, :]
    table = torch.cat([angles.sin(), angles.cos()], dim=1)
    if width % 2:
        table = F.pad(table, (0, 1))
    return table.to(torch.float32)


class _Block(nn.Module):
    """Pre-norm self-attention (padded keys masked) + GELU MLP, both residual."""

    def __init__(self, width: int, num_heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(width)
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.norm2 = nn.LayerNorm(width)
        self.fc1 = nn.Linear(width, mlp_ratio * width)
        self.fc2 = nn.Linear(mlp_ratio * width, width)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(b, n, 3, self.num_heads, d // self.num_heads).unbind(2)
        attn = F.scaled_dot_product_attention(
            q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=key_mask[:, None, None, :]
        )
        x = x + self.proj(attn.transpose(1, 2).reshape(b, n, d))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class EmbeddedTextEncoder(TextEncoder):
    """The self-contained default encoder (text only). See the module docstring."""

    config_class = EmbeddedTextEncoderConfig

    def __init__(
        self,
        config: EmbeddedTextEncoderConfig | None = None,
        *,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        config = EmbeddedTextEncoderConfig() if config is None else config
        if not isinstance(config, EmbeddedTextEncoderConfig):
            raise TypeError(f"config: expected EmbeddedTextEncoderConfig, got {type(config).__name__}")
        self.config = config
        self.tokenizer = EmbeddedTokenizer(config.vocabulary, hash_buckets=config.hash_buckets)
        w = config.width
        self.token_embedding = nn.Embedding(self.tokenizer.vocab_size, w)
        if config.positions is PositionEncoding.LEARNED:
            self.position_embedding = nn.Parameter(torch.empty(config.max_length, w))
        else:
            self.register_buffer(
                "position_table", sinusoidal_positions(config.max_length, w), persistent=False
            )
        self.blocks = nn.ModuleList(
            _Block(w, config.num_heads, config.mlp_ratio) for _ in range(config.num_layers)
        )
        self.norm_out = nn.LayerNorm(w)
        self.proj_out = nn.Linear(w, config.dim)
        self.proj_pooled = None if config.pooled_dim is None else nn.Linear(w, config.pooled_dim)
        self.reset_parameters()
        self.to(device=device, dtype=dtype)
        self.freeze()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Seeded initialisation: one CPU float32 generator walks the parameters in name order.

        Embeddings ~ N(0, 1) (distinct words are far apart); linear weights ~ N(0, 1/fan_in), the
        residual branches' output projections further scaled by 1/sqrt(2 * num_layers) (GPT-2) so that a
        token's own identity is not averaged away by random attention; biases 0; LayerNorms identity;
        learned positions ~ N(0, 0.1^2).
        """
        generator = torch.Generator(device="cpu").manual_seed(self.config.seed)
        residual_scale = 1.0 / math.sqrt(2 * max(self.config.num_layers, 1))
        for name, param in sorted(self.named_parameters(), key=lambda item: item[0]):
            if name == "token_embedding.weight":
                value = torch.randn(param.shape, generator=generator)
            elif name == "position_embedding":
                value = 0.1 * torch.randn(param.shape, generator=generator)
            elif ("norm" in name) and name.endswith("weight"):
                value = torch.ones(param.shape)
            elif name.endswith("bias"):
                value = torch.zeros(param.shape)
            else:
                value = torch.randn(param.shape, generator=generator) / math.sqrt(param.shape[1])
                if name.endswith(("proj.weight", "fc2.weight")) and name.startswith("blocks."):
                    value = value * residual_scale
            param.copy_(value.to(param.dtype))

    # -- TextEncoder ----------------------------------------------------------------------------

    @property
    def dim(self) -> int:
        return self.config.dim

    @property
    def pooled_dim(self) -> int | None:
        return self.config.pooled_dim

    @property
    def max_length(self) -> int:
        return self.config.max_length

    def token_ids(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ids [B, L] int64, mask [B, L] bool)`` right-padded to the longest prompt."""
        rows = [self.tokenizer.encode(p, max_length=self.config.max_length) for p in prompts]
        length = max(len(r) for r in rows)
        ids = torch.full((len(rows), length), self.tokenizer.pad_id, dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        return ids, ids != self.tokenizer.pad_id

    def _encode(
        self,
        prompts: list[str],
        images: list[list[torch.Tensor]] | None,
        videos: list[list[torch.Tensor]] | None,
    ) -> TextEmbeddings:
        ids, mask = self.token_ids(prompts)
        ids, mask = ids.to(self.device), mask.to(self.device)
        length = ids.shape[1]
        x = self.token_embedding(ids)
        if self.config.positions is PositionEncoding.LEARNED:
            x = x + self.position_embedding[:length]
        else:
            x = x + self.position_table[:length].to(x.dtype)
        for block in self.blocks:
            x = block(x, mask)
        x = self.norm_out(x)
        tokens = self.proj_out(x) * mask[..., None]
        pooled = None
        if self.proj_pooled is not None:
            weights = mask[..., None].to(x.dtype)
            pooled = self.proj_pooled((x * weights).sum(1) / weights.sum(1))
        return TextEmbeddings(tokens=tokens, mask=mask, pooled=pooled)

    def _config_dict(self) -> dict[str, Any]:
        return config_to_dict(self.config)

    def _save_files(self, folder: Path) -> None:
        save_safetensors(folder / WEIGHTS_NAME, self.state_dict(), metadata={"format": "pt"})

    @classmethod
    def _load(
        cls,
        folder: Path,
        config_data: dict[str, Any],
        config_path: Path,
        *,
        dtype: torch.dtype | None,
        device: torch.device | str | None,
    ) -> EmbeddedTextEncoder:
        config = config_from_dict(EmbeddedTextEncoderConfig, config_data, path=config_path)
        path = folder / WEIGHTS_NAME
        state = read_safetensors(path, check_finite=True)
        dtypes = {t.dtype for t in state.values()}
        stored = dtypes.pop() if len(dtypes) == 1 else torch.float32
        encoder = cls(config, dtype=dtype or stored, device=device)
        expected = encoder.state_dict()
        missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        if missing or unexpected:
            raise FileFormatError(
                path, f"weights do not match config.json: missing {missing}, unexpected {unexpected}"
            )
        for name, tensor in state.items():
            if tuple(tensor.shape) != tuple(expected[name].shape):
                raise FileFormatError(
                    path,
                    f"tensor {name!r}: expected shape {tuple(expected[name].shape)}, "
                    f"got {tuple(tensor.shape)}",
                )
        encoder.load_state_dict(state)
        return encoder
