"""LoRA fine-tuning (skyreels_v4.training.lora): adapters only get gradients, the merged weight is
``W + (alpha / r) · B A``, merged folders and adapter folders reproduce the wrapped model, typed errors."""

from __future__ import annotations

import copy
import json

import pytest
import torch

pytest.importorskip("peft")

from skyreels_v4.errors import ConfigMismatchError, FileFormatError, SkyReelsError
from skyreels_v4.model import JointDenoiser, ModelCondition, SkyReelsV4Transformer
from skyreels_v4.training import build_transformer_config
from skyreels_v4.training.lora import (
    ADAPTER_CONFIG,
    ADAPTER_WEIGHTS,
    LoRAConfig,
    LoRATrainingModule,
    apply_lora,
    load_lora_adapter,
    lora_targets,
    merge_lora,
    save_lora_adapter,
)

OVERRIDES = {"num_dual_blocks": 1, "num_single_blocks": 1, "num_refiner_blocks": 1}
AUDIO_TARGETS = (
    r"audio\.dual_blocks\.\d+\.(latent_attn\.qkv|latent_out)",
    r"audio\.single_blocks\.\d+\.(qkv_mlp_in|attn_mlp_out)",
    r"exchanges\.\d+\.audio_from_video\.(q|kv|out)",
)
CONFIG = LoRAConfig(target_modules=AUDIO_TARGETS, rank=4, alpha=8.0)


def _config(**changes):
    args = dict(
        preset="tiny", video_latent_channels=4, audio_latent_channels=8, text_dim=32, overrides=OVERRIDES
    )
    args.update(changes)
    return build_transformer_config(**args)


@pytest.fixture(scope="module")
def base() -> SkyReelsV4Transformer:
    torch.manual_seed(0)
    model = SkyReelsV4Transformer(_config())
    with torch.no_grad():  # zero-initialised layers would make every comparison trivially equal
        for parameter in model.parameters():
            if not bool(parameter.any()):
                parameter.normal_(0.0, 0.05)
    return model.eval()


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    b, t, h, w = 2, 2, 4, 4
    video = torch.randn(b, 4, t, h, w, generator=g)
    audio = torch.randn(b, 8, 6, generator=g)
    condition = ModelCondition(
        text_tokens=torch.randn(b, 5, 32, generator=g),
        text_mask=torch.ones(b, 5, dtype=torch.bool),
        conditional_latents=torch.zeros(b, 4, t, h, w),
        latent_mask=torch.zeros(b, 1, t, h, w),
        condition_noise=torch.randn(b, 4, t, h, w, generator=g),
        video_given=torch.zeros(b, dtype=torch.bool),
        audio_given=torch.zeros(b, dtype=torch.bool),
    )
    sigma = torch.tensor([0.3, 0.8])
    return video, audio, dict(video_sigma=sigma, audio_sigma=sigma, condition=condition)


def _forward(model, seed: int = 0):
    video, audio, kwargs = _inputs(seed)
    return JointDenoiser(model, check_finite=False).network(video, audio, **kwargs)


def _wrapped(base, *, randomise_b: bool = True):
    model = apply_lora(copy.deepcopy(base), CONFIG)
    if randomise_b:  # B starts at zero (the wrapped model equals the base); give it values
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():
            for name, parameter in model.named_parameters():
                if "lora_B" in name:
                    parameter.copy_(0.05 * torch.randn(parameter.shape, generator=g))
    return model


def test_wrapped_model_starts_equal_to_the_base(base):
    model = _wrapped(base, randomise_b=False)
    for a, b in zip(_forward(base), _forward(model)):  # x W + 0: equal up to float rounding
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_only_adapter_parameters_get_gradients(base):
    model = _wrapped(base).train()
    targets = lora_targets(base, AUDIO_TARGETS)
    assert targets and all(t.startswith(("audio.", "exchanges.")) for t in targets)
    out_video, out_audio = _forward(model)
    (out_video.square().mean() + out_audio.square().mean()).backward()
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert with_grad == trainable
    assert trainable and all("lora_A" in n or "lora_B" in n for n in trainable)
    # one A and one B per targeted layer, and every one of them receives a non-zero gradient
    assert len(trainable) == 2 * len(targets)
    assert all(float(p.grad.abs().sum()) > 0 for n, p in model.named_parameters() if "lora_A" in n)
    assert sum(p.numel() for p in model.parameters() if not p.requires_grad) == sum(
        p.numel() for p in base.parameters()
    )


def test_merged_weight_is_base_plus_scaled_BA(base):
    model = _wrapped(base)
    name = "audio.dual_blocks.0.latent_attn.qkv"
    layer = model.get_submodule(name)
    a, b = layer.lora_A["default"].weight.detach().clone(), layer.lora_B["default"].weight.detach().clone()
    expected = base.get_submodule(name).weight.detach().double() + (b.double() @ a.double()) * (8.0 / 4)
    merged = merge_lora(model)
    assert set(merged.state_dict()) == set(base.state_dict())
    torch.testing.assert_close(merged.get_submodule(name).weight.double(), expected, rtol=1e-6, atol=1e-6)
    targets = set(lora_targets(base, AUDIO_TARGETS))
    for key, value in base.state_dict().items():
        layer_name = key.rsplit(".", 1)[0]
        if layer_name not in targets:
            assert torch.equal(merged.state_dict()[key], value), key
        elif key.endswith(".weight"):
            assert not torch.equal(merged.state_dict()[key], value), key


def test_merged_folder_loads_and_gives_the_wrapped_output(base, tmp_path):
    model = _wrapped(base)
    wrapped_out = _forward(model)
    merge_lora(copy.deepcopy(model)).save_pretrained(tmp_path / "merged")
    loaded = SkyReelsV4Transformer.from_pretrained(tmp_path / "merged")
    for ours, theirs in zip(wrapped_out, _forward(loaded)):
        torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
    # and it is not the base model
    assert not torch.allclose(_forward(base)[1], wrapped_out[1], atol=1e-4)


def test_adapter_folder_round_trip(base, tmp_path):
    model = _wrapped(base)
    save_lora_adapter(model, tmp_path / "adapter", CONFIG)
    data = json.loads((tmp_path / "adapter" / ADAPTER_CONFIG).read_text())
    assert data["r"] == 4 and data["lora_alpha"] == 8.0
    assert data["skyreels_v4"]["lora"]["target_modules"] == list(AUDIO_TARGETS)
    from skyreels_v4.io import safetensors_keys

    keys = safetensors_keys(tmp_path / "adapter" / ADAPTER_WEIGHTS)
    assert keys and all("lora_A" in k or "lora_B" in k for k in keys)
    restored = load_lora_adapter(copy.deepcopy(base), tmp_path / "adapter")
    for ours, theirs in zip(_forward(model), _forward(restored)):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    # an adapter trained on another architecture is refused
    other = SkyReelsV4Transformer(_config(audio_latent_channels=16))
    with pytest.raises(ConfigMismatchError, match="different transformer config"):
        load_lora_adapter(other, tmp_path / "adapter")
    (tmp_path / "adapter" / ADAPTER_CONFIG).write_text("{not json")
    with pytest.raises(FileFormatError, match=ADAPTER_CONFIG):
        load_lora_adapter(copy.deepcopy(base), tmp_path / "adapter")


def test_module_trains_adapters_only_and_exports_either_form(base, tmp_path):
    base.save_pretrained(tmp_path / "base")
    module = LoRATrainingModule(
        lora=CONFIG.to_dict(),
        export="adapter",
        preset="tiny",
        video_latent_channels=4,
        audio_latent_channels=8,
        text_dim=32,
        model_overrides=OVERRIDES,
        prediction="velocity",
        video_weight=0.0,
        init_from=str(tmp_path / "base"),
    )
    (optimizer,) = [module.configure_optimizers()]
    optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
    assert optimised == {id(p) for n, p in module.transformer.named_parameters() if "lora_" in n}
    module.export_model(tmp_path / "adapter")
    assert (tmp_path / "adapter" / ADAPTER_WEIGHTS).is_file()
    module.export_kind = type(module.export_kind)("merged")
    module.export_model(tmp_path / "merged")
    loaded = SkyReelsV4Transformer.from_pretrained(tmp_path / "merged")
    for ours, theirs in zip(_forward(base), _forward(loaded)):  # B = 0: merged == base
        torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"target_modules": (r"video\.nothing_here",)}, "matches no linear layer"),
        ({"target_modules": ("(",)}, "not a regular expression"),
        ({"target_modules": ()}, "target_modules"),
        ({"rank": 0}, "lora.rank"),
        ({"alpha": float("nan")}, "lora.alpha"),
        ({"dropout": 1.0}, "lora.dropout"),
    ],
)
def test_bad_lora_settings_are_named(base, changes, match):
    def build():
        apply_lora(copy.deepcopy(base), LoRAConfig(**{"target_modules": AUDIO_TARGETS, **changes}))

    with pytest.raises(SkyReelsError, match=match):
        build()


def test_module_needs_a_model_folder_and_known_keys(tmp_path):
    with pytest.raises(SkyReelsError, match="init_from"):
        LoRATrainingModule(lora={"target_modules": ["x"]}, video_latent_channels=4, audio_latent_channels=8)
    with pytest.raises(SkyReelsError, match="unknown keys"):
        LoRAConfig.parse({"target_modules": ["x"], "rnak": 4})
    with pytest.raises(SkyReelsError, match="export"):
        LoRATrainingModule(
            lora={"target_modules": ["x"]},
            export="both",
            video_latent_channels=4,
            audio_latent_channels=8,
            init_from=str(tmp_path),
        )


def _module_with_adapters(folder) -> LoRATrainingModule:
    torch.manual_seed(0)  # the adapters' A initialisation
    module = LoRATrainingModule(
        lora=CONFIG.to_dict(), export="adapter", preset="tiny", video_latent_channels=4,
        audio_latent_channels=8, text_dim=32, model_overrides=OVERRIDES, ema_decay=0.9,
        init_from=str(folder),
    )  # fmt: skip
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():  # B = 0 at init would make the adapter trivially equal
        for name, parameter in module.transformer.named_parameters():
            if "lora_B" in name:
                parameter.copy_(torch.randn(parameter.shape, generator=g) * 0.1)
    module.ema = [p.detach().clone() for p in module.transformer.parameters()]
    return module


def _sharded_export_worker(rank: int, world: int, folder: str) -> None:
    import torch.distributed as dist

    from skyreels_v4.scale.parallelize import MixedPrecision, ParallelDims, build_device_mesh, parallelize

    dist.init_process_group("gloo", init_method=f"file://{folder}/init", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        module = _module_with_adapters(f"{folder}/base")
        mesh = build_device_mesh(ParallelDims(dp_shard=world))
        parallelize(module.transformer, mesh, mixed_precision=MixedPrecision.FP32)
        module.ema = [p.detach().clone() for p in module.transformer.parameters()]  # sharded shadows
        written = module.export_model(f"{folder}/sharded_adapter")
        assert (written is None) == (rank != 0)  # rank 0 writes, the others only took part
    finally:
        dist.destroy_process_group()


def test_sharded_module_exports_the_same_adapter(base, tmp_path):
    """FSDP2 over 2 gloo ranks: ``export_model`` gathers the shards (collective) and rank 0 writes the
    adapter the unsharded module writes, tensor for tensor."""
    import torch.multiprocessing as mp
    from safetensors.torch import load_file

    base.save_pretrained(tmp_path / "base")
    _module_with_adapters(tmp_path / "base").export_model(tmp_path / "plain_adapter")
    mp.spawn(_sharded_export_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    want = load_file(tmp_path / "plain_adapter" / ADAPTER_WEIGHTS)
    got = load_file(tmp_path / "sharded_adapter" / ADAPTER_WEIGHTS)
    assert sorted(got) == sorted(want) and any(bool(v.any()) for v in want.values())
    assert all(torch.equal(got[name], want[name]) for name in want)
