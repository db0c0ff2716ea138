"""The joint training room: latent cache, bucket sampler, task conditioning, steps, resume, export."""

from __future__ import annotations

import csv

import lightning as L
import lightning_fit_worker
import pytest
import torch

from skyreels_inpaint_conditioning import TrainingTask
from skyreels_v4.errors import PreflightError, SkyReelsError
from skyreels_v4.text import EmbeddedTextEncoder, EmbeddedTextEncoderConfig
from skyreels_v4.training import (
    BucketBatchSampler,
    JointTask,
    JointTrainingModule,
    LatentCache,
    LatentCacheDataModule,
    build_latent_cache,
    collate_cache_items,
    parse_task_mixture,
    world_samples,
)
from skyreels_v4.vae import FrameAudioCodec, PixelShuffleVideoCodec
from skyreels_v4.world import WorldConfig

WORLD = WorldConfig(size=16, num_frames=9, sample_rate=16000)


@pytest.fixture(scope="module")
def components():
    return (
        PixelShuffleVideoCodec(temporal_factor=4, spatial_factor=4),
        FrameAudioCodec(sample_rate=16000, hop_length=256),
        EmbeddedTextEncoder(EmbeddedTextEncoderConfig(dim=32)),
    )


def _world_cache(out, components, *, length, seed, shard_size, text_encoder=None):
    video, audio, text = components
    build_latent_cache(
        world_samples(WORLD, length=length, seed=seed),
        out,
        video_vae=video,
        audio_vae=audio,
        text_encoder=text if text_encoder is None else text_encoder,
        shard_size=shard_size,
        progress=False,
    )
    return out


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory, components):
    return _world_cache(tmp_path_factory.mktemp("cache"), components, length=12, seed=0, shard_size=5)


def make_module(components, **changes) -> JointTrainingModule:
    video, audio, text = components
    args = dict(
        lightning_fit_worker.MODULE_ARGS,
        video_latent_channels=video.latent_channels,
        audio_latent_channels=audio.latent_channels,
        text_dim=text.dim,
    )
    args.update(changes)
    return JointTrainingModule(**args)


def test_cache_holds_the_encoded_clips(cache_dir, components):
    video, audio, text = components
    cache = LatentCache(cache_dir)
    assert len(cache) == 12
    assert cache.video_latent_channels == video.latent_channels
    assert cache.text_dim == 32
    assert len({item["shard"] for item in cache.items}) == 3  # 12 clips in shards of 5
    sample = next(iter(world_samples(WORLD, length=1, seed=0)))
    first = cache[0]
    torch.testing.assert_close(first["video_latents"], video.encode(sample.video[None])[0])
    torch.testing.assert_close(first["audio_latents"], audio.encode(sample.audio[None], 16000)[0])
    embedding = text.encode([sample.caption])
    n = int(embedding.mask[0].sum())
    torch.testing.assert_close(first["text_tokens"], embedding.tokens[0, :n])
    assert cache.items[0]["caption"] == sample.caption
    assert cache.items[0]["labels"]["shape_ids"][0] >= 0
    assert (16 // 4, 16 // 4) in cache.black_latents
    assert (cache_dir / "components" / "video_vae").is_dir()


def test_cache_items_read_their_own_rows_of_the_shard(cache_dir):
    # Items are read row by row from memory-mapped shards: equal to the whole shard's rows, copies
    # (editing one in place leaves the next read alone), and picklable for data-loader workers.
    import pickle

    from skyreels_v4.io import read_safetensors

    cache = LatentCache(cache_dir, max_open_shards=1)
    for position in range(len(cache)):
        item, entry = cache[position], cache.items[position]
        shard = read_safetensors(cache_dir / entry["shard"])
        row = int(entry["row"])
        n = int(shard["text_mask"][row].sum())
        assert torch.equal(item["video_latents"], shard["video_latents"][row])
        assert torch.equal(item["audio_latents"], shard["audio_latents"][row])
        assert torch.equal(item["text_tokens"], shard["text_tokens"][row, :n])
    assert len(cache._handles) == 1  # the LRU of open shard files
    first = cache[0]
    expected = first["video_latents"].clone()
    first["video_latents"].zero_()
    assert torch.equal(cache[0]["video_latents"], expected)
    clone = pickle.loads(pickle.dumps(cache))
    assert torch.equal(clone[3]["audio_latents"], cache[3]["audio_latents"])


def test_a_nan_in_a_cache_shard_is_named_when_its_row_is_read(cache_dir, tmp_path):
    import shutil

    from skyreels_v4.errors import FileFormatError, NonFiniteError
    from skyreels_v4.io import read_safetensors, save_safetensors

    copy = tmp_path / "cache"
    shutil.copytree(cache_dir, copy)
    entry = LatentCache(copy).items[7]
    shard = read_safetensors(copy / entry["shard"])
    shard["audio_latents"][int(entry["row"]), 0, 1] = float("inf")
    save_safetensors(copy / entry["shard"], shard)
    cache = LatentCache(copy)
    neighbour = next(i for i, e in enumerate(cache.items) if e["shard"] == entry["shard"] and i != 7)
    cache[neighbour]  # the other rows of that shard still read
    with pytest.raises(NonFiniteError) as caught:
        cache[7]
    for word in (entry["shard"], "'audio_latents'", f"row {entry['row']}"):
        assert word in str(caught.value)
    del shard["audio_latents"]
    save_safetensors(copy / entry["shard"], shard)
    with pytest.raises(FileFormatError, match=r"cannot read 'audio_latents'"):
        LatentCache(copy)[7]
    (copy / entry["shard"]).write_bytes(b"\x08" + bytes(7))  # truncated
    with pytest.raises(FileFormatError, match=entry["shard"]):
        LatentCache(copy)[7]


def test_bucket_sampler_is_deterministic_and_resumes_mid_epoch(cache_dir):
    cache = LatentCache(cache_dir)
    sampler = BucketBatchSampler(cache, batch_size=3, seed=5)
    epoch0 = list(sampler)
    epoch1 = list(sampler)
    assert sorted(i for b in epoch0 for i in b) == list(range(12))
    assert epoch0 != epoch1  # reshuffled per epoch
    assert list(BucketBatchSampler(cache, batch_size=3, seed=5)) == epoch0
    resumed = BucketBatchSampler(cache, batch_size=3, seed=5)
    iterator = iter(resumed)
    next(iterator)
    state = resumed.state_dict()
    fresh = BucketBatchSampler(cache, batch_size=3, seed=5)
    fresh.load_state_dict(state)
    assert list(fresh) == epoch0[1:]
    with pytest.raises(SkyReelsError, match="seed"):
        BucketBatchSampler(cache, batch_size=3, seed=6).load_state_dict(state)


def test_an_epoch_taken_whole_without_exhausting_the_iterator_is_over(cache_dir):
    # Lightning takes len(sampler) batches and never asks for one more: the next epoch must not be empty.
    cache = LatentCache(cache_dir)
    reference = BucketBatchSampler(cache, batch_size=3, seed=5)
    epochs = [list(reference) for _ in range(3)]
    sampler = BucketBatchSampler(cache, batch_size=3, seed=5)
    for epoch in epochs:
        iterator = iter(sampler)
        assert [next(iterator) for _ in range(len(sampler))] == epoch


def test_bucket_sampler_shards_over_data_parallel_replicas(cache_dir):
    cache = LatentCache(cache_dir)
    whole = list(BucketBatchSampler(cache, batch_size=2, seed=5))  # 6 batches
    shards = [list(BucketBatchSampler(cache, batch_size=2, seed=5, num_replicas=4, rank=r)) for r in range(4)]
    assert [len(s) for s in shards] == [1, 1, 1, 1]  # 6 batches cut to 4: every replica takes one step
    assert [s[0] for s in shards] == whole[:4]
    assert [
        list(BucketBatchSampler(cache, batch_size=2, seed=5, num_replicas=2, rank=r)) for r in (0, 1)
    ] == [
        whole[0::2],
        whole[1::2],
    ]
    state = BucketBatchSampler(cache, batch_size=2, seed=5, num_replicas=2, rank=1).state_dict()
    with pytest.raises(SkyReelsError, match="2 data-parallel replicas, this run has 1"):
        BucketBatchSampler(cache, batch_size=2, seed=5).load_state_dict(state)
    for bad in ({"num_replicas": 0}, {"num_replicas": 2, "rank": 2}, {"rank": -1}, {"num_replicas": True}):
        with pytest.raises(SkyReelsError, match=r"num_replicas|rank"):
            BucketBatchSampler(cache, batch_size=2, seed=5, **bad)
    with pytest.raises(SkyReelsError, match="7 data-parallel replicas but the cache"):
        list(BucketBatchSampler(cache, batch_size=2, seed=5, num_replicas=7, rank=0))


def test_data_module_refuses_lightnings_distributed_sampler(cache_dir):
    from types import SimpleNamespace

    data = LatentCacheDataModule(cache_dir=str(cache_dir), batch_size=2)
    assert data.data_parallel() == (1, 0)
    data.trainer = SimpleNamespace(
        world_size=2,
        _accelerator_connector=SimpleNamespace(use_distributed_sampler=True),
        strategy=SimpleNamespace(distributed_sampler_kwargs={"num_replicas": 2, "rank": 1}),
    )
    with pytest.raises(PreflightError, match="use_distributed_sampler: must be false"):
        data.train_dataloader()
    data.trainer._accelerator_connector.use_distributed_sampler = False
    assert data.data_parallel() == (2, 1)
    assert len(list(data.train_dataloader().batch_sampler)) == 3


def test_data_parallel_replicas_draw_their_own_numbers(components):
    """Replica 0 (and one process) keeps the (seed, step) draws; replica 1 draws its own; the ranks of
    one sp group (same replica) draw the same numbers."""
    from types import SimpleNamespace

    module = make_module(components)
    plain = module._generator(7).initial_seed()
    assert plain == 3 * 1_000_003 + 7

    def on_replica(rank: int) -> int:
        module._trainer = SimpleNamespace(
            world_size=4,
            strategy=SimpleNamespace(distributed_sampler_kwargs={"num_replicas": 3, "rank": rank}),
        )
        return module._generator(7).initial_seed()

    assert on_replica(0) == plain and on_replica(1) != plain and on_replica(1) == on_replica(1)
    assert on_replica(2) not in (plain, on_replica(1))
    module._trainer = None


def test_task_mixture_validation():
    mixture = parse_task_mixture({"t2av": 2, "v2a": 1, "video_editing": 1})
    assert mixture[JointTask.T2AV] == pytest.approx(0.5)
    assert mixture[TrainingTask.VIDEO_EDITING] == pytest.approx(0.25)
    for bad in ({}, {"t2x": 1.0}, {"t2av": -1.0}, {"t2av": float("nan")}, {"t2av": 0.0}):
        with pytest.raises(SkyReelsError, match="tasks"):
            parse_task_mixture(bad)


def _batch(cache_dir, size=3):
    cache = LatentCache(cache_dir)
    return collate_cache_items([cache[i] for i in range(size)]), cache


def test_v2a_gives_the_clean_video_and_no_video_loss(cache_dir, components):
    batch, cache = _batch(cache_dir)
    module = make_module(components)
    module.empty_prompt, module.black_latents = cache.empty_prompt, cache.black_latents
    prepared = module.prepare_batch(batch, generator=torch.Generator().manual_seed(0), task=JointTask.V2A)
    assert torch.equal(prepared["video"], batch["video_latents"])
    assert bool(prepared["condition"].video_given.all())
    assert float(prepared["video_loss_mask"].sum()) == 0
    assert float(prepared["audio_loss_mask"].min()) == 1
    # x0 prediction: the targets are the clean latents.
    assert torch.equal(prepared["audio_target"], batch["audio_latents"])


def test_image_to_video_conditions_the_first_latent_frame(cache_dir, components):
    batch, cache = _batch(cache_dir)
    module = make_module(components)
    module.empty_prompt, module.black_latents = cache.empty_prompt, cache.black_latents
    module.frame_geometry = (4, 4)
    prepared = module.prepare_batch(
        batch, generator=torch.Generator().manual_seed(1), task=TrainingTask.IMAGE_TO_VIDEO
    )
    mask = prepared["condition"].latent_mask
    assert bool(mask[:, :, 0].eq(1).all()) and bool(mask[:, :, 1:].eq(0).all())
    conditional = prepared["condition"].conditional_latents
    assert torch.equal(conditional[:, :, 0], batch["video_latents"][:, :, 0])
    black = cache.black_latents[(4, 4)]
    assert torch.equal(conditional[0, :, 1], black)
    assert float(prepared["video_loss_mask"][:, :, 0].sum()) == 0


def test_draws_are_a_function_of_the_generator(cache_dir, components):
    batch, cache = _batch(cache_dir)
    module = make_module(components)
    module.empty_prompt, module.black_latents = cache.empty_prompt, cache.black_latents
    a = module.prepare_batch(batch, generator=torch.Generator().manual_seed(7))
    b = module.prepare_batch(batch, generator=torch.Generator().manual_seed(7))
    c = module.prepare_batch(batch, generator=torch.Generator().manual_seed(8))
    assert (
        a["task"] == b["task"] and torch.equal(a["video"], b["video"]) and torch.equal(a["audio"], b["audio"])
    )
    assert not torch.equal(a["video"], c["video"])


def test_preflight_rejects_a_cache_of_other_latents(cache_dir, components):
    data = LatentCacheDataModule(cache_dir=str(cache_dir), batch_size=2)
    module = make_module(components, audio_latent_channels=128)
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False)
    with pytest.raises(PreflightError, match="audio_latent_channels"):
        trainer.fit(module, data)
    with pytest.raises(PreflightError, match="batch_size"):
        LatentCacheDataModule(cache_dir=str(cache_dir), batch_size=100)
    with pytest.raises(PreflightError, match="cache_dir"):
        LatentCacheDataModule(cache_dir=str(cache_dir / "missing"), batch_size=2)


def _fit(components, cache_dir, root, max_steps, ckpt_path=None, **trainer_options):
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger

    torch.manual_seed(0)
    module = make_module(components)
    data = LatentCacheDataModule(cache_dir=str(cache_dir), batch_size=3, shuffle_seed=1)
    trainer = L.Trainer(
        max_steps=max_steps,
        accelerator="cpu",
        logger=CSVLogger(str(root), name="logs", version=0),
        log_every_n_steps=1,
        callbacks=[
            ModelCheckpoint(dirpath=str(root / "ckpt"), save_last=True, every_n_train_steps=1, save_top_k=0)
        ],
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        **trainer_options,
    )
    trainer.fit(module, data, ckpt_path=ckpt_path)
    with open(root / "logs" / "version_0" / "metrics.csv", newline="") as handle:
        losses = {
            int(r["step"]): float(r["train/loss"]) for r in csv.DictReader(handle) if r.get("train/loss")
        }
    return module, losses


def test_resume_continues_the_uninterrupted_run_exactly(tmp_path, cache_dir, components):
    # 4 batches per epoch: stop at step 6 (mid-epoch 1), resume to 9.
    _, full = _fit(components, cache_dir, tmp_path / "full", 9)
    _fit(components, cache_dir, tmp_path / "cut", 6)
    module, resumed = _fit(
        components, cache_dir, tmp_path / "cut", 9, ckpt_path=str(tmp_path / "cut" / "ckpt" / "last.ckpt")
    )
    assert len(full) == 9
    for step in range(6, 9):
        assert resumed[step] == full[step], step
    assert module.ema is not None


def test_training_learns_and_exports_a_pipeline(tmp_path, cache_dir, components):
    from skyreels_v4.pipeline import GenerationRequest, SamplingConfig, SkyReelsV4Pipeline

    module, losses = _fit(components, cache_dir, tmp_path, 24)
    first, last = sum(losses[s] for s in range(4)) / 4, sum(losses[s] for s in range(20, 24)) / 4
    assert last < 0.8 * first, (first, last)
    video, audio, text = components
    transformer = module.export_transformer()
    shadow = module.ema[0]
    assert torch.equal(next(transformer.parameters()), shadow)
    pipe = SkyReelsV4Pipeline(
        transformer=transformer,
        video_vae=video,
        audio_vae=audio,
        text_encoder=text,
        sampling=SamplingConfig(num_steps=2),
    )
    pipe.save_pretrained(tmp_path / "model")
    loaded = SkyReelsV4Pipeline.from_pretrained(tmp_path / "model")
    assert loaded.transformer.prediction.value == "x0"
    request = GenerationRequest(
        prompt="A red circle bounces inside a black box.", num_frames=9, height=16, width=16
    )
    a = pipe(request, progress=False)
    b = loaded(request, progress=False)
    assert torch.equal(a.video_latents, b.video_latents)
    assert torch.isfinite(a.audio).all()


def test_model_overrides_video_patch_and_pooled_text():
    from skyreels_v4.training.module import build_transformer_config

    overrides = {"dim": 128, "num_heads": 4, "video_rope_axes": [8, 12, 12], "video_patch_size": [1, 1, 1]}
    config = build_transformer_config(
        preset="tiny", video_latent_channels=192, audio_latent_channels=256, text_dim=32, overrides=overrides
    )
    assert config.video.patch_size == (1, 1, 1) and config.audio.patch_size == (1,)  # video branch only
    full = build_transformer_config(
        preset="full", video_latent_channels=16, audio_latent_channels=64, overrides={"pooled_text_dim": None}
    )
    assert full.video.pooled_text_dim is None and full.audio.pooled_text_dim is None
    with pytest.raises(SkyReelsError, match=r"unknown keys \['patch'\].*video_patch_size"):
        build_transformer_config(
            preset="tiny", video_latent_channels=192, audio_latent_channels=256, overrides={"patch": 1}
        )


@pytest.mark.parametrize("prediction", ["velocity", "x0", "noise", "x0_skip"])
def test_prediction_targets_convert_back_to_the_velocity(prediction):
    from skyreels_v4.model import PredictionType, prediction_target, prediction_to_velocity

    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(5, 3, 2, 4, 4, generator=g) * 0.5, torch.randn(5, 3, 2, 4, 4, generator=g)
    sigma = torch.tensor([0.02, 0.3, 0.5, 0.9, 0.99])
    s = sigma.view(-1, 1, 1, 1, 1)
    x = (1 - s) * x0 + s * eps
    kind = PredictionType(prediction)
    target = prediction_target(kind, x0, eps, x, sigma)
    velocity = prediction_to_velocity(kind, target, x, sigma)
    torch.testing.assert_close(velocity, eps - x0, rtol=1e-4, atol=1e-4)


def test_x0_skip_passes_the_input_through_at_low_noise_and_has_unit_variance_targets():
    from skyreels_v4.model import SKIP_DATA_STD, PredictionType, prediction_target, prediction_to_velocity

    g = torch.Generator().manual_seed(1)
    x0 = torch.randn(200_000, generator=g) * SKIP_DATA_STD
    eps = torch.randn(200_000, generator=g)
    for value in (0.05, 0.3, 0.7, 0.95, 1.0):
        sigma = torch.full((1,), value)
        x = (1 - value) * x0 + value * eps
        target = prediction_target(PredictionType.X0_SKIP, x0[None], eps[None], x[None], sigma)
        # EDM's design: the network's target has unit variance at every noise level (data std d).
        assert abs(float(target.std()) - 1.0) < 0.02, (value, float(target.std()))
    # A zero network output is x̂0 = c_skip·x: the input itself as σ -> 0, nothing at σ = 1.
    x = torch.randn(1, 8, generator=g)
    for value, expected in ((1e-4, x), (1.0, torch.zeros_like(x))):
        sigma = torch.full((1,), value)
        x0_hat = x - value * prediction_to_velocity(PredictionType.X0_SKIP, torch.zeros_like(x), x, sigma)
        torch.testing.assert_close(x0_hat, expected, rtol=1e-3, atol=1e-3)


def test_the_module_targets_follow_its_prediction_type(cache_dir, components):
    from skyreels_v4.model import prediction_to_velocity

    batch, cache = _batch(cache_dir)
    for prediction in ("x0", "x0_skip", "velocity"):
        module = make_module(components, prediction=prediction)
        module.empty_prompt, module.black_latents = cache.empty_prompt, cache.black_latents
        generator = torch.Generator().manual_seed(3)
        prepared = module.prepare_batch(batch, generator=generator, task=JointTask.T2AV)
        # The same draws for every type: the targets convert to one velocity ε - x0.
        velocity = prediction_to_velocity(
            module.prediction, prepared["video_target"], prepared["video"], prepared["video_sigma"]
        )
        if prediction == "x0":
            reference = velocity
        torch.testing.assert_close(velocity, reference, rtol=1e-4, atol=1e-4)
        assert module.export_transformer().prediction.value == prediction  # the folder says how to convert


@pytest.fixture(scope="module")
def pooled_cache_dir(tmp_path_factory, components):
    encoder = EmbeddedTextEncoder(EmbeddedTextEncoderConfig(dim=32, pooled_dim=16))
    out = tmp_path_factory.mktemp("pooled_cache")
    return _world_cache(out, components, length=4, seed=1, shard_size=4, text_encoder=encoder)


def test_pooled_text_reaches_the_model_and_drops_to_the_empty_prompts(pooled_cache_dir, components):
    batch, cache = _batch(pooled_cache_dir, size=4)
    assert batch["pooled_text"].shape == (4, 16) and cache.empty_pooled.shape == (16,)
    overrides = {"num_dual_blocks": 1, "num_single_blocks": 1, "num_refiner_blocks": 1, "pooled_text_dim": 16}
    for dropout, expected in ((0.0, batch["pooled_text"]), (1.0, cache.empty_pooled.expand(4, 16))):
        module = make_module(components, model_overrides=overrides, text_dropout=dropout)
        module.empty_prompt, module.empty_pooled = cache.empty_prompt, cache.empty_pooled
        module.black_latents = cache.black_latents
        prepared = module.prepare_batch(
            batch, generator=torch.Generator().manual_seed(0), task=JointTask.T2AV
        )
        assert torch.equal(prepared["condition"].pooled_text, expected)
        assert torch.isfinite(module.training_step(batch, 0))
    # A batch with pooled text and dropout but no empty pooled vector: a typed error, not a silent zero.
    module = make_module(components, model_overrides=overrides, text_dropout=1.0)
    module.empty_prompt, module.black_latents = cache.empty_prompt, cache.black_latents
    with pytest.raises(SkyReelsError, match="empty-prompt pooled"):
        module.prepare_batch(batch, generator=torch.Generator().manual_seed(0), task=JointTask.T2AV)


@pytest.mark.parametrize("model_pooled", [None, 8])
def test_preflight_compares_the_pooled_width_with_the_cache(
    pooled_cache_dir, cache_dir, components, model_pooled
):
    overrides = {"num_dual_blocks": 1, "num_single_blocks": 1, "num_refiner_blocks": 1}
    overrides["pooled_text_dim"] = model_pooled
    module = make_module(components, model_overrides=overrides)
    trainer = L.Trainer(max_steps=1, accelerator="cpu", logger=False, enable_checkpointing=False)
    data = LatentCacheDataModule(cache_dir=str(pooled_cache_dir), batch_size=2)
    with pytest.raises(PreflightError, match="pooled_text_dim"):
        trainer.fit(module, data)
    if model_pooled is not None:  # a model that wants pooled text, a cache without it
        data = LatentCacheDataModule(cache_dir=str(cache_dir), batch_size=2)
        with pytest.raises(PreflightError, match="pooled_text_dim"):
            trainer.fit(make_module(components, model_overrides=overrides), data)


def test_learning_rate_schedule_warms_up_then_decays_to_the_floor():
    from skyreels_v4.training.module import learning_rate_factor

    def f(step, decay=100):
        return learning_rate_factor(step, warmup_steps=10, decay_steps=decay, floor=0.1)

    assert [f(s) for s in (0, 4, 9)] == pytest.approx([0.1, 0.5, 1.0])
    assert f(10) == pytest.approx(1.0) and f(60) == pytest.approx(0.55)  # half-way: (1 + 0.1) / 2
    assert f(110) == pytest.approx(0.1) and f(10_000) == pytest.approx(0.1)  # held at the floor
    assert all(f(s) >= f(s + 1) for s in range(10, 200))
    assert f(500, decay=0) == 1.0  # no decay: constant after the warm-up


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        ({"lr_decay_steps": -1}, "lr_decay_steps"),
        ({"lr_decay_steps": 2.5}, "lr_decay_steps"),
        ({"warmup_steps": True}, "warmup_steps"),
        ({"min_learning_rate_ratio": 1.5}, "min_learning_rate_ratio"),
    ],
)
def test_bad_schedule_settings_are_typed_errors(components, change, needle):
    with pytest.raises(SkyReelsError, match=needle):
        make_module(components, **change)


def test_the_optimizer_follows_the_schedule(components):
    module = make_module(components, warmup_steps=2, lr_decay_steps=4, min_learning_rate_ratio=0.25)
    configured = module.configure_optimizers()
    optimizer, scheduler = configured["optimizer"], configured["lr_scheduler"]["scheduler"]
    rates = []
    for _ in range(8):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    # Warm-up 2 steps, then cos over 4 steps from 1 to 0.25: 0.25 + 0.375 (1 + cos(pi k / 4)).
    expected = [0.5, 1.0, 1.0, 0.890165, 0.625, 0.359835, 0.25, 0.25]
    assert rates == pytest.approx([2e-3 * e for e in expected], rel=1e-5)


def test_bf16_mixed_training_clips_gradients_with_an_unfused_optimizer(tmp_path, cache_dir, components):
    # Lightning's mixed-precision plugin refuses to clip the gradients of a fused optimizer, so a run
    # that clips under bf16-mixed gets the default AdamW; the same run in fp32 gets the fused one.
    torch.manual_seed(0)  # _fit's initial weights
    start = [p.detach().clone() for p in make_module(components).transformer.parameters()]
    fused, losses = {}, {}
    for precision in ("bf16-mixed", "32-true"):
        module, losses[precision] = _fit(
            components, cache_dir, tmp_path / precision, 3, precision=precision, gradient_clip_val=1.0
        )
        fused[precision] = bool(module.trainer.optimizers[0].param_groups[0]["fused"])
        after = module.transformer.parameters()
        moved = sum(not torch.equal(a, b) for a, b in zip(start, after, strict=True))
        assert moved > len(start) // 2, (precision, moved, len(start))
    assert fused == {"bf16-mixed": False, "32-true": True}
    # The same batches from the same weights: bf16 autocast changes the losses by its rounding only
    # (measured: at most 0.2 %).
    assert sorted(losses["bf16-mixed"]) == sorted(losses["32-true"]) == [0, 1, 2]
    for step, loss in losses["32-true"].items():
        assert losses["bf16-mixed"][step] == pytest.approx(loss, rel=0.01), step


def test_onset_weights_follow_the_closed_form():
    """Silence, a tone from token 4 to token 7, silence: the change is at tokens 4 and 8, widened to
    3..5 and 7..9, divided by its mean; a steady clip weighs 1 everywhere."""
    from skyreels_v4.training import onset_weights

    z = torch.zeros(2, 3, 12)
    z[0, :, 4:8] = torch.tensor([3.0, 0.0, 4.0]).view(3, 1)  # |change| = 5 at tokens 4 and 8
    z[1] = 0.7  # constant
    weights = onset_weights(z, 2.0)
    change = torch.zeros(12)
    change[[3, 4, 5, 7, 8, 9]] = 5.0
    expected = 1 + 2.0 * change / change.mean()
    torch.testing.assert_close(weights[0, 0], expected)
    assert torch.equal(weights[1], torch.ones(1, 12))
    assert torch.equal(onset_weights(z, 0.0), torch.ones(2, 1, 12))
    # A single token has no change; a latent of another rank is refused.
    assert torch.equal(onset_weights(torch.rand(1, 3, 1), 1.0), torch.ones(1, 1, 1))
    with pytest.raises(SkyReelsError, match="onset_weights"):
        onset_weights(torch.rand(3, 12), 1.0)


def test_the_audio_onset_weight_weighs_the_audio_loss(cache_dir, components):
    """The prepared audio loss mask carries the onset weights, and the audio loss is the weighted mean
    of the squared error; 0 leaves the plain mean."""
    from skyreels_v4.training import onset_weights

    batch, cache = _batch(cache_dir)
    losses = {}
    for strength in (0.0, 3.0):
        torch.manual_seed(0)
        module = make_module(components, audio_onset_weight=strength, text_dropout=0.0)
        module.empty_prompt, module.black_latents = cache.empty_prompt, cache.black_latents
        prepared = module.prepare_batch(batch, generator=torch.Generator().manual_seed(4), task=JointTask.V2A)
        mask = prepared["audio_loss_mask"]
        expected_mask = onset_weights(batch["audio_latents"], strength)
        torch.testing.assert_close(mask.expand_as(expected_mask), expected_mask)
        with torch.no_grad():
            out = module.compute_loss(prepared)
            _, out_a = module.denoiser.network(
                prepared["video"],
                prepared["audio"],
                video_sigma=prepared["video_sigma"],
                audio_sigma=prepared["audio_sigma"],
                condition=prepared["condition"],
            )
        error = (out_a - prepared["audio_target"]).square()
        weight = expected_mask.expand_as(error)
        torch.testing.assert_close(out["audio_loss"], (weight * error).sum() / weight.sum())
        losses[strength] = float(out["audio_loss"])
    assert float(onset_weights(batch["audio_latents"], 3.0).max()) > 2  # the clips do have onsets
    assert losses[0.0] != losses[3.0]
    with pytest.raises(SkyReelsError, match="audio_onset_weight"):
        make_module(components, audio_onset_weight=-1.0)
