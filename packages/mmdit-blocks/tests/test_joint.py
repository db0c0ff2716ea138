"""The joint audio-video transformer: zero-init equivalence, gradients, checkpointing, references,
key masks in the exchange, bf16 autocast."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from skyreels_av_rope import AudioTimeAlignment, RotaryConfig, audio_positions, temporal_ratio
from skyreels_mmdit_blocks import (
    AVExchangeOrder,
    JointAudioVideoTransformer,
    JointAudioVideoTransformerConfig,
    JointReferenceOutput,
    Modality,
    VideoGrid,
    infer_hunyuan_branch_config,
    joint_preset,
    load_hunyuan_video_weights,
    uniform_depth_mapping,
    unpatchify_video,
)

AUDIO_CHANNELS, AUDIO_LEN = 6, 10


@pytest.fixture
def joint_config(hunyuan_model, hunyuan_state_dict) -> JointAudioVideoTransformerConfig:
    """Video branch = the tiny HunyuanVideo with Concat(V, I, M) input and eq. 4 in the single blocks."""
    video = infer_hunyuan_branch_config(hunyuan_state_dict, config_json=dict(hunyuan_model.config))
    video = replace(video, in_channels=9, text_cross_attention_blocks=(2, 3))
    audio = replace(
        video,
        modality=Modality.AUDIO,
        in_channels=AUDIO_CHANNELS,
        out_channels=AUDIO_CHANNELS,
        patch_size=(1,),
        rope=RotaryConfig(axes_dims=(16,), theta=256.0),
        guidance_embedding=False,
        text_cross_attention_blocks=(),
    )
    return JointAudioVideoTransformerConfig(video=video, audio=audio)


def _joint_inputs(inputs, seed=0):
    g = torch.Generator().manual_seed(seed)
    video = torch.cat(
        [inputs.latents, torch.randn(inputs.latents.shape[0], 5, *inputs.latents.shape[2:], generator=g)], 1
    )
    audio = torch.randn(inputs.latents.shape[0], AUDIO_CHANNELS, AUDIO_LEN, generator=g)
    kwargs = {
        "timestep": inputs.timestep,
        "text_tokens": inputs.text,
        "text_mask": inputs.text_mask,
        "pooled_text": inputs.pooled,
        "guidance": inputs.guidance,
    }
    return video, audio, kwargs


def test_zero_init_joint_model_reproduces_the_video_model(
    joint_config, hunyuan_model, hunyuan_state_dict, our_branch, make_inputs, randomize
):
    model = JointAudioVideoTransformer(joint_config).eval()
    randomize(model.audio, seed=11)  # the audio branch is trained from scratch: anything
    report = load_hunyuan_video_weights(model.video, hunyuan_state_dict)
    assert report.ok and report.widened == ("patch_embed.proj.weight",)
    inputs = make_inputs(shape=(3, 6, 10), lengths=(7, 4))
    video, audio, kwargs = _joint_inputs(inputs)
    with torch.no_grad():
        out = model(video, audio, **kwargs)
        plain = inputs.ours(our_branch)
        reference = inputs.diffusers(hunyuan_model)
    assert torch.equal(out.video, plain)
    assert (out.video - reference).abs().max().item() <= 1e-5
    assert out.audio.shape == audio.shape
    # Once the exchange has weights, the video reads the audio (so the equality above can fail).
    randomize(model.exchanges, seed=12, std=0.1)
    with torch.no_grad():
        moved = model(video, audio, **kwargs).video
        other_audio = model(video, torch.randn_like(audio), **kwargs).video
    assert (moved - plain).abs().max() > 1e-4
    assert (other_audio - moved).abs().max() > 1e-4


def test_default_audio_positions_are_scaled_onto_video_time(joint_config, make_inputs, randomize):
    model = randomize(JointAudioVideoTransformer(joint_config).eval(), seed=13)
    for layer in model.exchanges:  # zero exchange: the audio branch alone
        torch.nn.init.zeros_(layer.audio_from_video.out.weight)
        torch.nn.init.zeros_(layer.audio_from_video.out.bias)
    inputs = make_inputs(shape=(3, 4, 4), lengths=(7, 4))
    video, audio, kwargs = _joint_inputs(inputs)
    audio_kwargs = {k: v for k, v in kwargs.items() if k != "guidance"}
    with torch.no_grad():
        joint_audio = model(video, audio, **kwargs).audio
        ratio = audio_positions(AUDIO_LEN, alignment=AudioTimeAlignment.RATIO, num_video_latents=3)
        assert ratio[1, 0].item() == pytest.approx(3 / AUDIO_LEN)
        expected = model.audio(audio, positions=ratio, **audio_kwargs)
        unscaled = model.audio(audio, **audio_kwargs)  # the branch's own unit-step default
    assert (joint_audio - expected).abs().max().item() <= 1e-5
    assert (joint_audio - unscaled).abs().max() > 1e-4


@pytest.mark.parametrize("which", ["hunyuan-like", "tiny-preset"])
def test_every_trainable_parameter_gets_a_gradient(which, joint_config, make_inputs, randomize):
    config = joint_config if which == "hunyuan-like" else joint_preset("tiny")
    model = JointAudioVideoTransformer(config)
    if which == "hunyuan-like":
        inputs = make_inputs(shape=(2, 4, 4), lengths=(7, 3))
        video, audio, kwargs = _joint_inputs(inputs)
    else:
        video, audio = torch.randn(2, 9, 2, 4, 4), torch.randn(2, 16, 8)
        kwargs = {
            "timestep": torch.tensor([10.0, 900.0]),
            "text_tokens": torch.randn(2, 5, 32),
            "text_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]),
        }
    for randomized in (False, True):
        if randomized:
            randomize(model, seed=14, std=0.1)
        model.zero_grad(set_to_none=True)
        out = model(video, audio, **kwargs)
        (out.video.square().mean() + out.audio.square().mean()).backward()
        no_grad = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
        assert no_grad == []
        if randomized:  # with no zero-initialised layer left, every gradient is non-zero
            zero = [n for n, p in model.named_parameters() if p.grad.abs().max() == 0]
            assert zero == []


def test_activation_checkpointing_gives_the_same_outputs_and_gradients(randomize, monkeypatch):
    import skyreels_mmdit_blocks.branch as branch_module
    import skyreels_mmdit_blocks.joint as joint_module

    calls = []

    def counting(fn, *args, **kwargs):
        calls.append(fn)
        return torch.utils.checkpoint.checkpoint(fn, *args, **kwargs)

    monkeypatch.setattr(branch_module, "checkpoint", counting)
    monkeypatch.setattr(joint_module, "checkpoint", counting)
    base = joint_preset("tiny")  # 4 blocks per branch, an exchange at every depth
    config = replace(base, depth_mapping=((1, 1), (3, 3)))  # blocks 0 and 2 run outside exchanges
    model = randomize(JointAudioVideoTransformer(config), seed=15)
    video, audio = torch.randn(2, 9, 2, 4, 4), torch.randn(2, 16, 8)
    kwargs = {"timestep": torch.tensor([10.0, 900.0]), "text_tokens": torch.randn(2, 5, 32)}
    results = []
    # none; every block (2 lone blocks x 2 branches + 2 exchange units); blocks 0 and 3 of both
    # branches (lone block 0 of each + the exchange unit holding blocks 3)
    for enabled, expected_calls in ((False, 0), (True, 6), ([0, 3], 3)):
        calls.clear()
        model.set_activation_checkpointing(enabled)
        model.zero_grad(set_to_none=True)
        out = model(video, audio, **kwargs)
        (out.video.sum() + out.audio.square().sum()).backward()
        assert len(calls) == expected_calls
        results.append((out, {n: p.grad.clone() for n, p in model.named_parameters()}))
    (plain, plain_grads), *checkpointed = results
    for ckpt, ckpt_grads in checkpointed:
        assert torch.allclose(plain.video, ckpt.video, atol=1e-6)
        assert torch.allclose(plain.audio, ckpt.audio, atol=1e-6)
        for name, grad in plain_grads.items():
            assert torch.allclose(grad, ckpt_grads[name], atol=1e-6), name
    with pytest.raises(ValueError, match=r"indices in \[0, 4\); got \[7\]"):
        model.set_activation_checkpointing([7])


def test_reference_tokens_pass_through_and_are_dropped(randomize):
    model = randomize(JointAudioVideoTransformer(joint_preset("tiny")).eval(), seed=16)
    video, audio = torch.randn(2, 9, 2, 4, 4), torch.randn(2, 16, 8)
    video_refs, audio_refs = torch.randn(2, 9, 1, 4, 4), torch.randn(2, 16, 3)
    kwargs = {"timestep": torch.tensor([10.0, 900.0]), "text_tokens": torch.randn(2, 5, 32)}
    with torch.no_grad():
        plain = model(video, audio, **kwargs)
        with_refs = model(
            video, audio, video_reference_latents=video_refs, audio_reference_latents=audio_refs, **kwargs
        )
        # References nobody may attend to: the generated tokens must come out exactly as without them,
        # which holds only if the output keeps the generated tokens and drops the prepended ones.
        hidden = model(
            video,
            audio,
            video_reference_latents=video_refs,
            audio_reference_latents=audio_refs,
            video_key_mask=torch.arange(4 + 8)[None, :].expand(2, -1) >= 4,
            audio_key_mask=torch.arange(3 + 8)[None, :].expand(2, -1) >= 3,
            **kwargs,
        )
    assert with_refs.video.shape == video[:, :4].shape and with_refs.audio.shape == audio.shape
    assert (hidden.video - plain.video).abs().max().item() <= 1e-5
    assert (hidden.audio - plain.audio).abs().max().item() <= 1e-5
    assert (with_refs.video - plain.video).abs().max() > 1e-4  # visible references do condition


def test_reference_outputs_are_the_final_layer_on_the_reference_tokens(randomize):
    """A reference identical to the (one-frame) video, at the video's own positions, is the same token
    as the video token it copies; with eq. 5's video-from-audio projection at zero (references skip the
    exchange) its returned features unpatchify to exactly the video output."""
    model = randomize(JointAudioVideoTransformer(joint_preset("tiny")).eval(), seed=17)
    with torch.no_grad():
        for exchange in model.exchanges:
            exchange.video_from_audio.out.weight.zero_()
            if exchange.video_from_audio.out.bias is not None:
                exchange.video_from_audio.out.bias.zero_()
    video, audio = torch.randn(2, 9, 1, 4, 4), torch.randn(2, 16, 8)
    grid = torch.stack(
        torch.meshgrid(torch.zeros(1), torch.arange(2.0), torch.arange(2.0), indexing="ij"), -1
    )
    positions = grid.reshape(-1, 3).repeat(2, 1)  # the reference's 4 tokens sit where the video's do
    kwargs = {"timestep": torch.tensor([10.0, 900.0]), "text_tokens": torch.randn(2, 5, 32)}
    with torch.no_grad():
        out = model(
            video,
            audio,
            video_reference_latents=video.clone(),
            video_positions=positions,
            return_video_reference=True,
            **kwargs,
        )
        plain = model(
            video, audio, video_reference_latents=video.clone(), video_positions=positions, **kwargs
        )
    assert isinstance(out, JointReferenceOutput) and not isinstance(plain, JointReferenceOutput)
    assert torch.equal(out.video, plain.video) and torch.equal(out.audio, plain.audio)
    assert out.video_reference.shape == (2, 4, 4 * 1 * 2 * 2)
    as_video = unpatchify_video(out.video_reference, VideoGrid(1, 2, 2), (1, 2, 2))
    assert (as_video - out.video).abs().max().item() <= 1e-5
    assert out.video.abs().max().item() > 1e-2


def test_depth_mapping_for_branches_of_different_depth(randomize):
    assert uniform_depth_mapping(60, 60)[:3] == ((0, 0), (1, 1), (2, 2))
    assert uniform_depth_mapping(4, 2) == ((1, 0), (3, 1))
    assert uniform_depth_mapping(3, 6) == ((0, 1), (1, 3), (2, 5))
    base = joint_preset("tiny")
    config = replace(base, audio=replace(base.audio, num_dual_blocks=1, num_single_blocks=1))
    assert config.exchange_pairs == ((1, 0), (3, 1))
    model = randomize(JointAudioVideoTransformer(config), seed=17)
    assert len(model.exchanges) == 2
    out = model(
        torch.randn(1, 9, 2, 4, 4),
        torch.randn(1, 16, 8),
        timestep=torch.tensor([5.0]),
        text_tokens=torch.randn(1, 5, 32),
    )
    (out.video.sum() + out.audio.sum()).backward()
    assert all(p.grad is not None for p in model.parameters())


def test_parallel_order_is_wired_through(randomize):
    """Same weights, other order: different outputs (the per-direction semantics are tested at the
    module level in test_av_cross_attention.py)."""
    config = joint_preset("tiny")
    seq = randomize(JointAudioVideoTransformer(config).eval(), seed=18)
    par = JointAudioVideoTransformer(replace(config, exchange_order=AVExchangeOrder.PARALLEL)).eval()
    par.load_state_dict(seq.state_dict())
    args = (torch.randn(1, 9, 2, 4, 4), torch.randn(1, 16, 8))
    kwargs = {"timestep": torch.tensor([5.0]), "text_tokens": torch.randn(1, 5, 32)}
    with torch.no_grad():
        a, b = seq(*args, **kwargs), par(*args, **kwargs)
    assert (a.video - b.video).abs().max() > 1e-5 and (
        a.audio - b.audio
    ).abs().max() > 1e-5  # depth > 1 mixes
    assert a.video.shape == b.video.shape


def test_bad_inputs_raise_with_the_argument_named():
    config = joint_preset("tiny")
    model = JointAudioVideoTransformer(config)
    video, audio = torch.randn(2, 9, 2, 4, 4), torch.randn(2, 16, 8)
    kwargs = {"timestep": torch.tensor([5.0, 6.0]), "text_tokens": torch.randn(2, 5, 32)}
    with pytest.raises(ValueError, match="one batch size"):
        model(video, audio[:1], **{**kwargs})
    with pytest.raises(ValueError, match=r"video_latents must have 9 channels; got 8"):
        model(video[:, :8], audio, **kwargs)
    with pytest.raises(ValueError, match=r"timestep must have shape \[2\]"):
        model(video, audio, **{**kwargs, "timestep": torch.tensor([5.0])})
    with pytest.raises(ValueError, match=r"text_tokens must be \[2, Lt, 32\]"):
        model(video, audio, **{**kwargs, "text_tokens": torch.randn(2, 5, 31)})
    with pytest.raises(ValueError, match="neither branch has a guidance embedding"):
        model(video, audio, guidance=torch.tensor([1.0, 1.0]), **kwargs)
    with pytest.raises(ValueError, match="right-padded"):
        model(video, audio, text_mask=torch.tensor([[1, 0, 1, 1, 1], [1, 1, 1, 1, 1]]), **kwargs)
    with pytest.raises(ValueError, match=r"positions must be \[8, 3\]"):
        model(video, audio, video_positions=torch.zeros(7, 3), **kwargs)
    with pytest.raises(ValueError, match="latent_key_mask must be a bool tensor"):
        model(video, audio, video_key_mask=torch.ones(2, 8), **kwargs)
    seconds = JointAudioVideoTransformer(replace(config, audio_alignment=AudioTimeAlignment.SECONDS))
    with pytest.raises(ValueError, match="audio_positions must be given"):
        seconds(video, audio, **kwargs)


def test_bad_configs_raise():
    config = joint_preset("tiny")
    with pytest.raises(ValueError, match=r"video\.dim and audio\.dim must be equal"):
        replace(config, audio=replace(config.audio, dim=128, rope=RotaryConfig(axes_dims=(32,))))
    with pytest.raises(ValueError, match=r"audio\.rope must be"):
        replace(config, audio=replace(config.audio, rope=config.video.rope))
    with pytest.raises(ValueError, match="strictly increasing"):
        replace(config, depth_mapping=((1, 1), (1, 2)))
    with pytest.raises(ValueError, match="num_single_blocks must be at least 1"):
        replace(config.video, num_single_blocks=0)
    with pytest.raises(ValueError, match=r"rope.axes_dims must sum to the head dim 16"):
        replace(config.video, rope=RotaryConfig(axes_dims=(4, 4, 4)))
    with pytest.raises(
        ValueError, match=r"text_cross_attention_blocks must be a tuple of block indices in \[0, 4\)"
    ):
        replace(config.video, text_cross_attention_blocks=(4,))


def _tiny_inputs(batch=2, seed=0):
    """Tiny-preset inputs: video grid (2, 2, 2) = 8 tokens, 8 audio tokens, one reference of each."""
    g = torch.Generator().manual_seed(seed)
    return {
        "video_latents": torch.randn(batch, 9, 2, 4, 4, generator=g),
        "audio_latents": torch.randn(batch, 16, 8, generator=g),
        "timestep": torch.tensor([700.0, 40.0][:batch]),
        "text_tokens": torch.randn(batch, 5, 32, generator=g),
        "text_mask": torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]][:batch]),
        "video_reference_latents": torch.randn(batch, 9, 1, 4, 4, generator=g),  # 4 reference tokens
        "audio_reference_latents": torch.randn(batch, 16, 3, generator=g),  # 3 reference tokens
    }


@pytest.mark.parametrize("order", list(AVExchangeOrder))
@pytest.mark.parametrize("masked", ["audio", "video"])
def test_exchange_never_reads_a_masked_key(order, masked, randomize):
    """A generated token masked as a key of its own branch is not read by the other modality (eq. 5):
    changing only that token leaves the other modality's output unchanged; without the mask it moves."""
    config = replace(joint_preset("tiny"), exchange_order=order)
    model = randomize(JointAudioVideoTransformer(config).eval(), seed=19, std=0.1)
    inputs = _tiny_inputs()
    changed = {k: v.clone() for k, v in inputs.items()}
    video_keys = torch.ones(2, 4 + 8, dtype=torch.bool)
    audio_keys = torch.ones(2, 3 + 8, dtype=torch.bool)
    if masked == "audio":  # generated audio token 5 (after 3 reference tokens)
        audio_keys[:, 3 + 5] = False
        changed["audio_latents"][..., 5] += 5.0
        other = "video"
    else:  # generated video token 5 = (t 1, h 0, w 1) of the 2 x 2 x 2 grid (after 4 reference tokens)
        video_keys[:, 4 + 5] = False
        changed["video_latents"][:, :, 1, 0:2, 2:4] += 5.0
        other = "audio"
    masks = {"video_key_mask": video_keys, "audio_key_mask": audio_keys}
    with torch.no_grad():
        base = getattr(model(**inputs, **masks), other)
        moved = getattr(model(**changed, **masks), other)
        base_unmasked = getattr(model(**inputs), other)
        moved_unmasked = getattr(model(**changed), other)
    assert (moved - base).abs().max().item() <= 1e-6
    assert (moved_unmasked - base_unmasked).abs().max() > 1e-3


@pytest.mark.parametrize(
    ("order", "checkpointing", "device"),
    [
        (AVExchangeOrder.SEQUENTIAL, False, "cpu"),
        (AVExchangeOrder.PARALLEL, True, "cpu"),
        pytest.param(
            AVExchangeOrder.SEQUENTIAL,
            False,
            "cuda",
            marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
        ),
    ],
)
def test_bf16_autocast_forward_and_backward(order, checkpointing, device, randomize):
    """Lightning's bf16-mixed: fp32 weights under ``torch.autocast(bf16)``; references, key masks
    (a hidden reference token and a masked generated token) and text padding all on."""
    config = replace(joint_preset("tiny"), exchange_order=order)
    model = randomize(JointAudioVideoTransformer(config), seed=20, std=0.1).to(device)
    model.set_activation_checkpointing(checkpointing)
    inputs = {k: v.to(device) for k, v in _tiny_inputs().items()}
    video_keys = torch.ones(2, 4 + 8, dtype=torch.bool, device=device)
    video_keys[1, 0] = False
    audio_keys = torch.ones(2, 3 + 8, dtype=torch.bool, device=device)
    audio_keys[0, 3 + 6] = False
    inputs.update(video_key_mask=video_keys, audio_key_mask=audio_keys)
    with torch.no_grad():
        expected = model(**inputs)
    with torch.autocast(device, dtype=torch.bfloat16):
        out = model(**inputs)
    assert out.video.dtype == out.audio.dtype == torch.bfloat16
    for got, want in ((out.video, expected.video), (out.audio, expected.audio)):
        assert torch.isfinite(got).all()
        assert (got.float() - want).abs().max().item() <= 5e-2 * want.abs().max().item()
    (out.video.float().square().mean() + out.audio.float().square().mean()).backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None]
    assert no_grad == []
    assert all(p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all() for p in model.parameters())


def test_reference_audio_positions_use_the_av_rope_placement(randomize):
    """The joint model places an audio reference with ``audio_positions(clip_num_audio_tokens=...)``:
    R tokens at (k - R)·T_v/T_a, spaced like the clip's audio (not by the reference's own count)."""
    model = randomize(JointAudioVideoTransformer(joint_preset("tiny")).eval(), seed=21)
    inputs = _tiny_inputs(batch=1)
    video = model.video.embed(
        inputs["video_latents"],
        timestep=inputs["timestep"],
        text_tokens=inputs["text_tokens"],
        reference_latents=inputs["video_reference_latents"],
    )
    positions = model._audio_positions(video, inputs["audio_latents"], inputs["audio_reference_latents"])
    ratio = temporal_ratio(2, 8)  # T_v = 2 latent frames, T_a = 8 audio tokens
    expected = (torch.arange(-3, 8, dtype=torch.float64) * ratio).to(torch.float32)[:, None]
    assert torch.equal(positions, expected)
    reference = audio_positions(
        3,
        alignment=AudioTimeAlignment.RATIO,
        num_video_latents=2,
        clip_num_audio_tokens=8,
        t_offset=-3 * ratio,
    )
    assert torch.equal(positions[:3], reference)


def test_time_local_exchange_wiring(randomize):
    """``exchange_window``: every exchange gets the window masks built from the tokens' exchange times
    (generated tokens only, combined with the key masks); a window wider than the clip is the global
    exchange, a narrow one changes the outputs."""
    config = joint_preset("tiny")
    glob = randomize(JointAudioVideoTransformer(config).eval(), seed=21, std=0.1)
    wide = JointAudioVideoTransformer(replace(config, exchange_window=100.0)).eval()
    narrow = JointAudioVideoTransformer(replace(config, exchange_window=0.3)).eval()
    wide.load_state_dict(glob.state_dict())
    narrow.load_state_dict(glob.state_dict())
    inputs = _tiny_inputs()
    video_keys = torch.ones(2, 4 + 8, dtype=torch.bool)
    video_keys[0, 4 + 2] = False
    audio_keys = torch.ones(2, 3 + 8, dtype=torch.bool)
    audio_keys[1, 3 + 6] = False
    masks = {"video_key_mask": video_keys, "audio_key_mask": audio_keys}
    seen = []
    narrow.exchanges[0].register_forward_hook(
        lambda m, args, kwargs, out: seen.append(kwargs), with_kwargs=True
    )
    with torch.no_grad():
        a, b, c = glob(**inputs, **masks), wide(**inputs, **masks), narrow(**inputs, **masks)
    assert (a.video - b.video).abs().max().item() <= 1e-5 and (a.audio - b.audio).abs().max().item() <= 1e-5
    assert (a.audio - c.audio).abs().max() > 1e-3 and (a.video - c.video).abs().max() > 1e-3
    # Tiny grid: 2 latent frames x 2 x 2 tokens (t = 0, 0, 0, 0, 1, 1, 1, 1); 8 audio tokens at k * 2 / 8.
    video_t = [0.0] * 4 + [1.0] * 4
    audio_t = [k * 2 / 8 for k in range(8)]
    expected_audio_reads = torch.tensor([[abs(x - y) <= 0.3 for y in video_t] for x in audio_t])
    for b in range(2):
        got = seen[0]["video_key_mask"].mask[b, 0]
        assert torch.equal(got, expected_audio_reads & video_keys[b, 4:][None, :])
        got = seen[0]["audio_key_mask"].mask[b, 0]
        assert torch.equal(got, expected_audio_reads.T & audio_keys[b, 3:][None, :])
    with pytest.raises(ValueError, match="exchange_window must be None or a finite number > 0; got 0"):
        replace(config, exchange_window=0)
