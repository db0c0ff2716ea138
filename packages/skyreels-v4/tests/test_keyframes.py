"""Paper 4.5's joint prediction: high-res keyframes denoised in one sequence with the low-res clip.

- packing: keyframes ride after the clip as whole low-res frames and come back bit for bit;
- the transformer sees a keyframe as a reference-like token at its fractional low-res position: a
  "keyframe" that is a copy of clip frame j at the clip's own size sits exactly on frame j's tokens,
  so (with eq. 5's video-from-audio projection at zero; references skip the exchange) its prediction
  equals the clip's frame j prediction — which checks the positions, the token plumbing and the
  unpacking together;
- the denoiser keeps the padding cells at 0 and the keyframes' velocity is the network's.
"""

from __future__ import annotations

import pytest
import torch

from skyreels_v4.errors import SkyReelsError
from skyreels_v4.model import (
    JointDenoiser,
    KeyframeLayout,
    ModelCondition,
    PredictionType,
    SkyReelsV4Transformer,
    keyframe_token_positions,
    pack_keyframes,
    transformer_preset,
    unpack_keyframes,
)

C = 4


def _layout(**changes) -> KeyframeLayout:
    args = dict(frame_indices=(0, 2), height=8, width=8, base_frames=3, base_height=4, base_width=6)
    return KeyframeLayout(**{**args, **changes})


def test_pack_and_unpack_round_trip_with_padding():
    layout = _layout()
    assert layout.count == 2 and layout.slots == 6  # 2·8·8 = 128 cells in frames of 4·6 = 24
    g = torch.Generator().manual_seed(0)
    video, keyframes = torch.randn(2, C, 3, 4, 6, generator=g), torch.randn(2, C, 2, 8, 8, generator=g)
    packed = pack_keyframes(video, keyframes, layout, fill=7.0)
    assert packed.shape == (2, C, 3 + 6, 4, 6)
    assert bool((packed[:, :, 3:].reshape(2, C, -1)[..., 128:] == 7.0).all())
    back_video, back_keyframes = unpack_keyframes(packed, layout)
    assert torch.equal(back_video, video) and torch.equal(back_keyframes, keyframes)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"frame_indices": (0, 0)}, "distinct latent frame indices"),
        ({"frame_indices": (3,)}, r"in \[0, 3\)"),
        ({"frame_indices": ()}, "frame_indices"),
        ({"height": 0}, "keyframes.height: expected a positive int"),
        ({"base_width": True}, "keyframes.base_width"),
    ],
)
def test_bad_layouts_are_named(changes, message):
    with pytest.raises(SkyReelsError, match=message):
        _layout(**changes)


def test_pack_and_unpack_refuse_other_shapes():
    layout = _layout()
    with pytest.raises(SkyReelsError, match=r"keyframes: expected \(1, 4, 2, 8, 8\)"):
        pack_keyframes(torch.zeros(1, C, 3, 4, 6), torch.zeros(1, C, 1, 8, 8), layout)
    with pytest.raises(SkyReelsError, match="video: expected the layout's grid"):
        pack_keyframes(torch.zeros(1, C, 2, 4, 6), torch.zeros(1, C, 2, 8, 8), layout)
    with pytest.raises(SkyReelsError, match=r"expected 3 \+ 6 latent frames"):
        unpack_keyframes(torch.zeros(1, C, 8, 4, 6), layout)
    with pytest.raises(SkyReelsError, match="temporal patch of 1"):
        keyframe_token_positions(layout, (2, 2, 2))
    with pytest.raises(SkyReelsError, match=r"keyframes\.base_width: expected a multiple of the patch 4"):
        keyframe_token_positions(layout, (1, 2, 4))


def test_keyframe_positions_sit_on_the_low_res_grid():
    positions = keyframe_token_positions(_layout(), (1, 2, 2))
    # Keyframe 1 (frame 2): 4x4 tokens on a 2x3 grid: rows (y + 0.5)·0.5 - 0.5, cols (x + 0.5)·0.75 - 0.5.
    second = positions[16:32].reshape(4, 4, 3)
    assert bool((second[..., 0] == 2).all())
    assert torch.allclose(second[:, 0, 1], torch.tensor([-0.25, 0.25, 0.75, 1.25]))
    assert torch.allclose(second[0, :, 2], torch.tensor([-0.125, 0.625, 1.375, 2.125]))
    assert torch.equal(positions[32:], keyframe_token_positions(_layout(), (1, 2, 2))[32:])
    assert positions.shape == (32 + 3 * 2 * 3, 3)


def _model(seed: int) -> SkyReelsV4Transformer:
    torch.manual_seed(seed)
    model = SkyReelsV4Transformer(
        transformer_preset("tiny", video_latent_channels=C, audio_latent_channels=8),
        prediction=PredictionType.X0,
    ).eval()
    with torch.no_grad():
        for p in model.parameters():  # give the zero-initialised layers values, except eq. 5's v <- a
            if not bool(p.any()):
                p.normal_(std=0.05)
        for exchange in model.exchanges:
            exchange.video_from_audio.out.weight.zero_()
            if exchange.video_from_audio.out.bias is not None:
                exchange.video_from_audio.out.bias.zero_()
    return model


def _condition(b: int, conditional: torch.Tensor, mask: torch.Tensor, noise: torch.Tensor, **extra):
    g = torch.Generator().manual_seed(5)
    return ModelCondition(
        text_tokens=torch.randn(b, 5, 32, generator=g),
        text_mask=torch.ones(b, 5, dtype=torch.bool),
        conditional_latents=conditional,
        latent_mask=mask,
        condition_noise=noise,
        video_given=torch.zeros(b, dtype=torch.bool),
        audio_given=torch.zeros(b, dtype=torch.bool),
        **extra,
    )


def test_a_keyframe_copy_of_a_clip_frame_is_predicted_like_that_frame():
    model = _model(3)
    denoiser = JointDenoiser(model)
    g = torch.Generator().manual_seed(1)
    b, t, h, w = 2, 3, 4, 4
    video = torch.randn(b, C, t, h, w, generator=g)
    audio = torch.randn(b, 8, 12, generator=g)
    conditional = torch.randn(b, C, t, h, w, generator=g)
    mask = torch.zeros(b, 1, t, h, w)
    mask[:, :, 0, :2] = 1  # a partly kept first frame: I and M must travel with the keyframe too
    layout = KeyframeLayout(
        frame_indices=(1, 0), height=h, width=w, base_frames=t, base_height=h, base_width=w
    )
    pick = [1, 0]
    packed = pack_keyframes(video, video[:, :, pick], layout)
    condition = _condition(
        b,
        pack_keyframes(conditional, conditional[:, :, pick], layout),
        pack_keyframes(mask, mask[:, :, pick], layout, fill=1.0),
        pack_keyframes(video, video[:, :, pick], layout),
        keyframes=layout,
    )
    sigma = torch.tensor([0.3, 0.8])
    with torch.no_grad():
        out_video, _ = denoiser.network(
            packed, audio, video_sigma=sigma, audio_sigma=sigma, condition=condition
        )
        clip, keyframes = unpack_keyframes(out_video, layout)
        assert (keyframes - clip[:, :, pick]).abs().max().item() <= 1e-5
        assert clip.abs().max().item() > 1e-2
        # Without the keyframes the clip's prediction is another one (the keyframes are attended to).
        plain, _ = denoiser.network(
            video,
            audio,
            video_sigma=sigma,
            audio_sigma=sigma,
            condition=_condition(b, conditional, mask, video),
        )
        assert (plain - clip).abs().max().item() > 1e-4


def test_the_denoiser_keeps_padding_at_zero_and_refuses_references():
    model = _model(4)
    denoiser = JointDenoiser(model)
    g = torch.Generator().manual_seed(2)
    b = 1
    video = torch.randn(b, C, 3, 4, 4, generator=g)
    layout = KeyframeLayout(frame_indices=(2,), height=4, width=6, base_frames=3, base_height=4, base_width=4)
    keyframes = torch.randn(b, C, 1, 4, 6, generator=g)  # 24 cells -> 2 slots of 16, 8 padded
    state = pack_keyframes(video, keyframes, layout)
    black = torch.zeros(b, C, 3, 4, 4)
    condition = _condition(
        b,
        pack_keyframes(black, torch.zeros_like(keyframes), layout),
        pack_keyframes(torch.zeros(b, 1, 3, 4, 4), torch.zeros(b, 1, 1, 4, 6), layout, fill=1.0),
        pack_keyframes(video, keyframes, layout),
        keyframes=layout,
    )
    sigma = torch.tensor([0.5])
    with torch.no_grad():
        u_video, _ = denoiser(
            state, torch.randn(b, 8, 12), video_sigma=sigma, audio_sigma=sigma, condition=condition
        )
        raw, _ = denoiser.raw(
            state, torch.randn(b, 8, 12), video_sigma=sigma, audio_sigma=sigma, condition=condition
        )
    flat = u_video[:, :, 3:].reshape(b, C, -1)
    assert bool((flat[..., 24:] == 0).all())  # padding: kept at I = 0 with noise 0
    assert torch.equal(flat[..., :24], raw[:, :, 3:].reshape(b, C, -1)[..., :24])  # keyframes: the network's
    assert flat[..., :24].abs().max().item() > 1e-3
    with pytest.raises(
        SkyReelsError, match="keyframes: joint keyframes do not combine with video references"
    ):
        denoiser.network(
            state,
            torch.randn(b, 8, 12),
            video_sigma=sigma,
            audio_sigma=sigma,
            condition=_condition(
                b,
                condition.conditional_latents,
                condition.latent_mask,
                condition.condition_noise,
                keyframes=layout,
                video_positions=torch.zeros(10, 3),
            ),
        )


# -- training: the cache keeps full-size keyframe latents, the module trains the joint prediction ----


@pytest.fixture(scope="module")
def keyframe_cache(tmp_path_factory):
    from skyreels_v4.text import EmbeddedTextEncoder, EmbeddedTextEncoderConfig
    from skyreels_v4.training import build_latent_cache, world_samples
    from skyreels_v4.vae import FrameAudioCodec, PixelShuffleVideoCodec
    from skyreels_v4.world import WorldConfig

    world = WorldConfig(size=32, num_frames=9, sample_rate=16000)
    video = PixelShuffleVideoCodec(temporal_factor=4, spatial_factor=4)
    out = tmp_path_factory.mktemp("keyframe-cache")
    build_latent_cache(
        world_samples(world, length=4, seed=0),
        out,
        video_vae=video,
        audio_vae=FrameAudioCodec(sample_rate=16000, hop_length=256),
        text_encoder=EmbeddedTextEncoder(EmbeddedTextEncoderConfig(dim=32)),
        progress=False,
        keyframe_scale=2,
    )
    return out, world, video


def test_the_cache_holds_the_clip_at_1_over_s_and_every_full_size_latent(keyframe_cache):
    from skyreels_v4.pipeline.refine import resize_pixels
    from skyreels_v4.training import LatentCache
    from skyreels_v4.world import ProceduralAVDataset

    folder, world, codec = keyframe_cache
    cache = LatentCache(folder)
    assert cache.keyframe_scale == 2
    item = cache[1]
    clip = ProceduralAVDataset(world, length=4, seed=0)[1]["video"]
    assert torch.equal(item["keyframe_latents"], codec.encode(clip[None])[0])  # [C, 3, 8, 8]
    assert torch.equal(item["video_latents"], codec.encode(resize_pixels(clip, (16, 16))[None])[0])
    assert item["video_latents"].shape[-2:] == (4, 4) and item["keyframe_latents"].shape[-2:] == (8, 8)
    assert {(8, 8), (4, 4)} <= set(cache.black_latents)


def test_the_module_trains_the_joint_keyframe_prediction(keyframe_cache):
    from skyreels_v4.training import JointTrainingModule, LatentCache, collate_cache_items

    folder, _, _ = keyframe_cache
    cache = LatentCache(folder)
    torch.manual_seed(0)
    module = JointTrainingModule(
        video_latent_channels=cache.video_latent_channels,
        audio_latent_channels=cache.audio_latent_channels,
        text_dim=cache.text_dim,
        model_overrides={"num_dual_blocks": 1, "num_single_blocks": 1, "num_refiner_blocks": 1},
        tasks={"t2av": 1.0},
        text_dropout=0.0,
        keyframe_probability=1.0,
        keyframe_count=2,
    )
    module.black_latents = dict(cache.black_latents)
    batch = collate_cache_items([cache[i] for i in range(4)])
    prepared = module.prepare_batch(batch, generator=torch.Generator().manual_seed(3))
    layout = prepared["condition"].keyframes
    assert layout is not None and layout.count == 2 and (layout.height, layout.width) == (8, 8)
    assert prepared["video"].shape[2] == 3 + layout.slots  # 2·8·8 = 128 cells = 8 frames of 4·4
    _, target_keyframes = unpack_keyframes(prepared["video_target"], layout)
    assert torch.equal(target_keyframes, batch["keyframe_latents"][:, :, list(layout.frame_indices)])
    _, keyframe_mask = unpack_keyframes(prepared["video_loss_mask"], layout)
    assert bool((keyframe_mask == 1).all())
    # Validation and tasks without generated video never pack keyframes.
    plain = module.prepare_batch(batch, generator=torch.Generator().manual_seed(3), keyframes=False)
    assert plain["condition"].keyframes is None and plain["video"].shape[2] == 3
    # The keyframes' own loss falls when the model is fitted to this step (it reads their tokens).
    optimizer = torch.optim.Adam(module.transformer.parameters(), lr=3e-3)

    def keyframe_loss() -> torch.Tensor:
        out, _ = module.denoiser.network(
            prepared["video"],
            prepared["audio"],
            video_sigma=prepared["video_sigma"],
            audio_sigma=prepared["audio_sigma"],
            condition=prepared["condition"],
        )
        return (unpack_keyframes(out, layout)[1] - target_keyframes).square().mean()

    with torch.no_grad():
        first = float(keyframe_loss())
    for _ in range(25):
        optimizer.zero_grad()
        module.compute_loss(prepared)["loss"].backward()
        optimizer.step()
    with torch.no_grad():
        assert float(keyframe_loss()) < 0.5 * first
    del batch["keyframe_latents"]
    with pytest.raises(SkyReelsError, match="keyframe_probability: the batch has no keyframe_latents"):
        module.prepare_batch(batch, generator=torch.Generator().manual_seed(3))
    with pytest.raises(SkyReelsError, match="keyframe_count"):
        JointTrainingModule(video_latent_channels=4, audio_latent_channels=8, keyframe_count=0)


def test_the_cache_command_takes_a_keyframe_scale(tmp_path):
    from skyreels_v4.training import LatentCache
    from skyreels_v4.training.cache_cli import main

    common = ["--world", "2", "--world-size", "16", "--world-frames", "5", "--no-progress"]
    assert main([*common, "--output", str(tmp_path / "c"), "--keyframe-scale", "2"]) == 0
    cache = LatentCache(tmp_path / "c")
    assert cache.keyframe_scale == 2 and cache[0]["video_latents"].shape[-2:] == (2, 2)
    with pytest.raises(SkyReelsError, match="keyframe_scale: expected an int >= 2"):
        main([*common, "--output", str(tmp_path / "d"), "--keyframe-scale", "1"])
