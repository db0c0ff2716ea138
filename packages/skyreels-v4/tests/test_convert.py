"""``convert_hunyuan`` / ``skyreels-v4 convert``: a pipeline folder from a HunyuanVideo checkpoint.

Tiny random checkpoints (diffusers and official names) and tiny saved components, built in tmp_path.
"""

from __future__ import annotations

import json
import re

import pytest
import torch
from diffusers import AutoencoderKLHunyuanVideo, HunyuanVideoTransformer3DModel
from safetensors.torch import save_file
from torch import nn

from skyreels_mmdit_blocks import CheckpointFormat, MMDiTBranch, export_hunyuan_state_dict
from skyreels_v4.errors import ConfigMismatchError, FileFormatError, SkyReelsError
from skyreels_v4.model import SkyReelsV4Transformer
from skyreels_v4.model.convert import convert_hunyuan, main, transformer_from_hunyuan
from skyreels_v4.pipeline import SkyReelsV4Pipeline
from skyreels_v4.text import EmbeddedTextEncoder, EmbeddedTextEncoderConfig
from skyreels_v4.vae import DiffusersVideoVae, FrameAudioCodec

TINY_HUNYUAN = {  # the same tiny transformer as test_hunyuan_parity.py
    "in_channels": 4,
    "out_channels": 4,
    "num_attention_heads": 2,
    "attention_head_dim": 16,
    "num_layers": 2,
    "num_single_layers": 2,
    "num_refiner_layers": 1,
    "mlp_ratio": 4.0,
    "patch_size": 2,
    "patch_size_t": 1,
    "guidance_embeds": True,
    "text_embed_dim": 16,
    "pooled_projection_dim": 8,
    "rope_axes_dim": (4, 6, 6),
}


def randomize(module: nn.Module, seed: int, std: float = 0.1) -> nn.Module:
    """Every parameter ~ N(0, std²) (norm gains near 1), so no layer is inert."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in sorted(module.named_parameters()):
            noise = torch.randn(param.shape, generator=generator) * std
            gain = param.ndim == 1 and name.endswith("weight") and "norm" in name
            param.copy_(noise + 1.0 if gain else noise)
    return module


@pytest.fixture(autouse=True)
def _one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def parts(tmp_path_factory):
    root = tmp_path_factory.mktemp("parts")
    torch.manual_seed(0)
    hunyuan = randomize(HunyuanVideoTransformer3DModel(**TINY_HUNYUAN), seed=3).eval()
    hunyuan.save_pretrained(root / "hunyuan")
    vae = AutoencoderKLHunyuanVideo(
        latent_channels=4, block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4
    )
    DiffusersVideoVae(vae).save_pretrained(root / "video_vae")
    FrameAudioCodec(sample_rate=4000, hop_length=16).save_pretrained(root / "audio_vae")
    EmbeddedTextEncoder(EmbeddedTextEncoderConfig(dim=16, pooled_dim=8, num_layers=1)).save_pretrained(
        root / "text_encoder"
    )
    # A video VAE whose latents do not fit the checkpoint (8 channels instead of 4).
    wrong = AutoencoderKLHunyuanVideo(
        latent_channels=8, block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=4
    )
    DiffusersVideoVae(wrong).save_pretrained(root / "wrong_vae")
    return root, hunyuan


def _video_forward(model: SkyReelsV4Transformer, hunyuan: HunyuanVideoTransformer3DModel) -> float:
    """max |ours - diffusers| of one text-to-video forward (the I and M channels hold random values:
    their patch-embedding columns are zero, so they must not matter)."""
    generator = torch.Generator().manual_seed(5)
    noise = torch.randn(1, 4, 2, 4, 6, generator=generator)
    extra = torch.randn(1, 5, 2, 4, 6, generator=generator)
    text = torch.randn(1, 6, 16, generator=generator)
    pooled = torch.randn(1, 8, generator=generator)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0]])
    t, g = torch.tensor([700.0]), torch.tensor([5000.0])
    with torch.no_grad():
        expected = hunyuan(noise, t, text, mask, pooled, guidance=g, return_dict=False)[0]
        ours = model(
            torch.cat([noise, extra], dim=1),
            torch.randn(1, model.audio_latent_channels, 7, generator=generator),
            timestep=t,
            text_tokens=text,
            text_mask=mask.bool(),
            pooled_text=pooled,
            guidance=g,
        ).video
    return (ours - expected).abs().max().item()


def test_convert_writes_a_loadable_pipeline_folder(parts, tmp_path):
    root, hunyuan = parts
    out = convert_hunyuan(
        root / "hunyuan",
        out=tmp_path / "pipe",
        video_vae=root / "video_vae",
        audio_vae=root / "audio_vae",
        text_encoder=root / "text_encoder",
        max_shard_size="200KB",
    )
    assert sorted(p.name for p in out.iterdir()) == [
        "audio_vae",
        "model_index.json",
        "scheduler",
        "text_encoder",
        "transformer",
        "video_vae",
    ]
    shards = sorted(p.name for p in (out / "transformer").glob("model-*.safetensors"))
    assert len(shards) > 1 and (out / "transformer" / "model.safetensors.index.json").is_file()
    index = json.loads((out / "model_index.json").read_text())
    assert index["transformer"] == ["skyreels_v4.model", "SkyReelsV4Transformer"]
    assert index["video_vae"] == ["skyreels_v4.vae", "DiffusersVideoVae"]
    assert index["text_encoder"] == ["skyreels_v4.text", "EmbeddedTextEncoder"]

    pipe = SkyReelsV4Pipeline.from_pretrained(out)
    model = pipe.transformer
    assert model.config.video.in_channels == 2 * 4 + 1
    assert model.audio_latent_channels == 16  # the audio VAE's channels size the audio branch
    assert model.config.audio.dim == model.config.video.dim
    assert model.config.audio.num_blocks == model.config.video.num_blocks
    assert pipe.sampling.embedded_guidance == 6.0 and pipe.sampling.video_guidance == 1.0
    # New layers start at zero: the I/M patch-embedding columns, eq. 5 exchanges' outputs.
    assert model.video.patch_embed.proj.weight[:, 4:].abs().max() == 0
    zero = [
        name
        for name, param in model.named_parameters()
        if (name.startswith("exchanges.") or ".text_cross_attention." in name) and ".out." in name
    ]
    assert len(zero) == 2 * 2 * len(model.exchanges) + 2 * 2  # eq. 5 both ways; eq. 4 in 2 single blocks
    assert all(model.get_parameter(name).abs().max() == 0 for name in zero)
    # The converted model reproduces the checkpoint's text-to-video forward.
    assert _video_forward(model, hunyuan) < 1e-5
    assert not list(tmp_path.glob(".pipe*"))


def test_official_names_convert_to_the_same_video_branch(parts, tmp_path):
    root, hunyuan = parts
    reference, _ = transformer_from_hunyuan(root / "hunyuan", audio_latent_channels=16)
    branch = MMDiTBranch(
        type(reference.config.video)(
            **{
                **{
                    f: getattr(reference.config.video, f) for f in reference.config.video.__dataclass_fields__
                },
                "in_channels": 4,
                "text_cross_attention_blocks": (),
            }
        )
    )
    state = {k: v for k, v in reference.video.state_dict().items() if ".text_cross_attention." not in k}
    state["patch_embed.proj.weight"] = state["patch_embed.proj.weight"][:, :4]
    branch.load_state_dict(state)
    official = tmp_path / "official"
    official.mkdir()
    save_file(export_hunyuan_state_dict(branch, CheckpointFormat.OFFICIAL), official / "model.safetensors")
    with pytest.raises(FileFormatError, match="rope"):  # no config.json, head dim 16: RoPE unknown
        transformer_from_hunyuan(official)
    model, report = transformer_from_hunyuan(
        official, audio_latent_channels=16, rope=reference.config.video.rope
    )
    assert report.source_format is CheckpointFormat.OFFICIAL
    ours, theirs = reference.video.state_dict(), model.video.state_dict()
    different = [k for k in ours if ".text_cross_attention." not in k and not torch.equal(ours[k], theirs[k])]
    assert different == []
    assert _video_forward(model, hunyuan) < 1e-5


def test_overrides_and_dtype(parts):
    root, _ = parts
    model, _ = transformer_from_hunyuan(
        root / "hunyuan",
        audio_latent_channels=8,
        overrides={"audio": {"num_single_blocks": 1}, "exchange_order": "parallel"},
        dtype=torch.bfloat16,
    )
    assert model.config.audio.num_single_blocks == 1 and model.audio_latent_channels == 8
    assert model.config.exchange_order.value == "parallel"
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    with pytest.raises(ValueError, match=r"overrides: unknown key audio\.depth"):
        transformer_from_hunyuan(root / "hunyuan", overrides={"audio": {"depth": 3}})
    with pytest.raises(ConfigMismatchError, match="overrides/checkpoint"):
        transformer_from_hunyuan(root / "hunyuan", overrides={"video": {"num_single_blocks": 3}})


def test_the_audio_branch_is_seeded(parts):
    root, _ = parts
    a, _ = transformer_from_hunyuan(root / "hunyuan", seed=1)
    b, _ = transformer_from_hunyuan(root / "hunyuan", seed=1)
    c, _ = transformer_from_hunyuan(root / "hunyuan", seed=2)
    key = "audio.single_blocks.0.qkv_mlp_in.weight"
    assert torch.equal(a.state_dict()[key], b.state_dict()[key])
    assert not torch.equal(a.state_dict()[key], c.state_dict()[key])


def test_cli_converts(parts, tmp_path, capsys):
    root, _ = parts
    code = main(
        [
            "--hunyuan",
            str(root / "hunyuan"),
            "--video-vae",
            str(root / "video_vae"),
            "--out",
            str(tmp_path / "out"),
            "--set",
            "audio.num_dual_blocks=1",
        ]
    )
    assert code == 0, capsys.readouterr().err
    index = json.loads((tmp_path / "out" / "model_index.json").read_text())
    assert index["audio_vae"] == [None, None] and index["text_encoder"] == [None, None]
    model = SkyReelsV4Transformer.from_pretrained(tmp_path / "out" / "transformer")
    assert model.config.audio.num_dual_blocks == 1 and model.audio_latent_channels == 64
    # The absent components load as None; a task names the one it needs.
    pipe = SkyReelsV4Pipeline.from_pretrained(tmp_path / "out")
    assert pipe.audio_vae is None and pipe.text_encoder is None and pipe.video_vae is not None
    with pytest.raises(SkyReelsError, match=r"text_encoder: this pipeline has no text_encoder"):
        pipe("a red ball", task="t2v", height=16, width=16, num_frames=1, progress=False)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--hunyuan", "{tmp}/nowhere"], "nowhere"),
        (["--hunyuan", "{root}/video_vae"], "not a HunyuanVideo transformer|no .safetensors"),
        (
            ["--hunyuan", "{root}/hunyuan", "--video-vae", "{root}/wrong_vae"],
            "video_vae: .* 8 latent channels",
        ),
        (["--hunyuan", "{root}/hunyuan", "--video-vae", "{root}/nothing"], "video_vae"),
        (["--hunyuan", "{root}/hunyuan", "--audio-vae", "{root}/video_vae"], "config.json|class"),
        (
            [
                "--hunyuan",
                "{root}/hunyuan",
                "--audio-vae",
                "{root}/audio_vae",
                "--audio-latent-channels",
                "4",
            ],
            "audio_latent_channels: 4",
        ),
        (["--hunyuan", "{root}/hunyuan", "--set", "video.nonsense=1"], "unknown key"),
        (["--hunyuan", "{root}/hunyuan", "--set", "noequals"], "KEY=JSON"),
        (["--hunyuan", "{root}/hunyuan", "--set", "audio.dim=5"], "dim"),
        (["--hunyuan", "{root}/hunyuan", "--max-shard-size", "lots"], "max_shard_size"),
    ],
)
def test_cli_user_errors_exit_2_with_one_line_and_leave_nothing(parts, tmp_path, capsys, args, message):
    root, _ = parts
    work = tmp_path / "work"
    work.mkdir()
    argv = [a.format(root=root, tmp=tmp_path) for a in args] + ["--out", str(work / "out")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("skyreels-v4 convert: error:"), err
    assert re.search(message, err), err
    assert list(work.iterdir()) == []


def test_cli_refuses_an_existing_out_and_argparse_errors(parts, tmp_path, capsys):
    root, _ = parts
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    assert main(["--hunyuan", str(root / "hunyuan"), "--out", str(tmp_path / "out")]) == 2
    assert "exists" in capsys.readouterr().err
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"
    assert main(["--hunyuan", str(root / "hunyuan")]) == 2  # --out missing
    assert "--out" in capsys.readouterr().err
    assert main(["--help"]) == 0


def test_python_api_errors_name_the_argument(parts, tmp_path):
    root, _ = parts
    with pytest.raises(FileFormatError, match="checkpoint"):
        convert_hunyuan(tmp_path / "missing", out=tmp_path / "o")
    wide, unpooled = tmp_path / "te32", tmp_path / "te_nopool"
    EmbeddedTextEncoder(EmbeddedTextEncoderConfig(dim=32, pooled_dim=8, num_layers=1)).save_pretrained(wide)
    EmbeddedTextEncoder(EmbeddedTextEncoderConfig(dim=16, num_layers=1)).save_pretrained(unpooled)
    with pytest.raises(ConfigMismatchError, match=r"text_encoder: .* 32-wide"):
        convert_hunyuan(root / "hunyuan", out=tmp_path / "o", text_encoder=wide)
    with pytest.raises(ConfigMismatchError, match="pooled"):
        convert_hunyuan(root / "hunyuan", out=tmp_path / "o", text_encoder=unpooled)
    with pytest.raises(ValueError, match="audio_latent_channels"):
        transformer_from_hunyuan(root / "hunyuan", audio_latent_channels=0)
    assert not (tmp_path / "o").exists()
