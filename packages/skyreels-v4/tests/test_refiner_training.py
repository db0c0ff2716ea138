"""The refiner Lightning module: real training steps, the sparsity ramp, checkpoints, the recipe's YAML."""

from __future__ import annotations

import io
import math
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.cli import LightningCLI

import skyreels_refiner_vsa.sparse_attention as vsa_function
import skyreels_v4.refiner.module as module_source
from skyreels_attention import AttentionConfig
from skyreels_flow_matching import ShiftConfig, ShiftRule, TimestepDistribution, TimestepSamplerConfig
from skyreels_refiner_vsa import SparsityRamp, VSAConfig, keep_block_count
from skyreels_v4.refiner import RefinerLightningModule, RefinerTripleDataModule

RECIPE = Path(__file__).resolve().parents[3] / "recipes" / "refiner" / "tiny.yaml"


@pytest.fixture
def one_thread():
    """Tiny tensors: intra-op threads only add synchronisation (and stall on a shared CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _trainer(tmp_path, max_steps: int, **kwargs) -> L.Trainer:
    return L.Trainer(
        max_steps=max_steps, accelerator="cpu", logger=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0, default_root_dir=tmp_path, **kwargs,
    )  # fmt: skip


def test_training_steps_follow_the_ramp_and_reduce_the_loss(tmp_path, one_thread, monkeypatch):
    torch.manual_seed(0)
    model = RefinerLightningModule(
        vsa=VSAConfig(sparsity=0.5), sparsity_ramp=SparsityRamp(target=0.5, steps=4), learning_rate=2e-3
    )
    # High-res (5, 16, 16) -> token grid (5, 8, 8) = 320 tokens = 5 full 64-token blocks (4 cubes and
    # a 1x8x8 slab); the text starts its own key block. At sparsity 0.5, K = ceil(2.5) = 3 of 5.
    data = RefinerTripleDataModule(
        num_train=4, num_val=4, batch_size=2, high_res_shape=(5, 16, 16), keyframe_indices=(0,)
    )
    batch = next(iter(data.train_dataloader()))
    sparsities = []
    original = model.refiner.set_sparsity
    model.refiner.set_sparsity = lambda s: (sparsities.append(s), original(s))[1]
    # Every block selection of every call: (current sparsity, video key blocks attended per row,
    # video key blocks in all).
    selections = []
    select = vsa_function.select_key_blocks

    def spy(logits, keep, *, num_video_tokens, num_key_tokens, block_size):
        index, counts = select(
            logits,
            keep,
            num_video_tokens=num_video_tokens,
            num_key_tokens=num_key_tokens,
            block_size=block_size,
        )
        video_blocks = math.ceil(num_video_tokens / block_size)
        attended = (index.long() < video_blocks).sum(-1)  # the index lists distinct blocks
        assert bool((counts == index.shape[-1]).all())
        selections.append((model.refiner.vsa[0].sparsity, attended.unique().tolist(), video_blocks))
        return index, counts

    monkeypatch.setattr(vsa_function, "select_key_blocks", spy)
    with torch.no_grad():
        torch.manual_seed(0)
        before = model.flow_matching_loss(batch).item()
    trainer = _trainer(tmp_path, 6, enable_checkpointing=False, limit_val_batches=1)
    trainer.fit(model, datamodule=data)
    assert sparsities == pytest.approx([0.0, 0.125, 0.25, 0.375, 0.5, 0.5])
    assert all(vsa.sparsity == 0.5 for vsa in model.refiner.vsa)
    # Dense at sparsity 0; at 0.5 two of the five video key blocks are really dropped in every row.
    assert {s for s, _, _ in selections} == {0.0, 0.125, 0.25, 0.375, 0.5}
    assert all(blocks == 5 for _, _, blocks in selections)
    for sparsity, attended, blocks in selections:
        assert attended == [keep_block_count(blocks, sparsity=sparsity)], sparsity
    assert [a for s, a, _ in selections if s == 0.5] and all(a == [3] for s, a, _ in selections if s == 0.5)
    with torch.no_grad():
        torch.manual_seed(0)
        after = model.flow_matching_loss(batch).item()
    assert after < 0.8 * before
    assert {"val/loss", "val/x0_mse", "val/interp_mse"} <= set(trainer.callback_metrics)


def test_checkpoint_of_a_real_run_reloads_with_load_from_checkpoint(tmp_path, one_thread):
    torch.manual_seed(0)
    model = RefinerLightningModule(
        vsa=VSAConfig(sparsity=0.5, cube=(2, 4, 4), backend="gather", dense=AttentionConfig(backend="sdpa")),
        sparsity_ramp=SparsityRamp(target=0.5, steps=4, start=1),
        sampler=TimestepSamplerConfig(
            distribution=TimestepDistribution.LOGIT_NORMAL,
            logit_mean=0.25,
            shift=ShiftConfig(rule=ShiftRule.TOKEN_SQRT, shift=2.0, base_num_tokens=64),
        ),
        validation_sigmas=(0.5,),
        black_latent=[0.5, -1.0, 2.0, 0.25],
    )
    initial = {name: value.clone() for name, value in model.state_dict().items()}
    data = RefinerTripleDataModule(
        num_train=2, num_val=2, batch_size=2, high_res_shape=(5, 8, 8), keyframe_indices=(0,)
    )
    trainer = _trainer(tmp_path, 1, limit_val_batches=0)
    trainer.fit(model, datamodule=data)
    path = tmp_path / "refiner.ckpt"
    trainer.save_checkpoint(path)

    loaded = RefinerLightningModule.load_from_checkpoint(path, weights_only=True)
    assert loaded.refiner.config == model.refiner.config
    assert loaded.refiner.config.vsa.cube == (2, 4, 4) and loaded.refiner.config.vsa.dense.backend == "sdpa"
    assert loaded.ramp == model.ramp == SparsityRamp(target=0.5, steps=4, start=1)
    assert loaded.sampler == model.sampler
    assert loaded.sampler.shift.rule is ShiftRule.TOKEN_SQRT
    assert loaded.validation_sigmas == (0.5,)
    assert torch.equal(loaded.black_latent, model.black_latent)
    assert dict(loaded.hparams) == dict(model.hparams)
    state, reloaded = model.state_dict(), loaded.state_dict()
    assert set(reloaded) == set(state)
    for name, value in state.items():
        assert torch.equal(reloaded[name], value), name
    # The step changed the weights, so equality above is the checkpoint's, not the initialisation's.
    assert any(not torch.equal(initial[name], value) for name, value in state.items())


def test_black_latent_fills_i_where_m_is_zero_and_nowhere_else():
    data = RefinerTripleDataModule(
        num_train=2, num_val=2, batch_size=2, high_res_shape=(5, 8, 8), keyframe_indices=(0, 3),
        inpaint_probability=1.0,
    )  # fmt: skip
    batch = next(iter(data.train_dataloader()))
    zero = RefinerLightningModule(vsa=VSAConfig(sparsity=0.5))._condition(batch)
    mask = zero.latent_mask
    assert 0 < int(mask.sum()) < mask.numel()  # keyframes and kept boxes condition, the rest not
    for black_latent, values in ((0.3, [0.3] * 4), ([0.5, -1.0, 2.0, 0.25], [0.5, -1.0, 2.0, 0.25])):
        module = RefinerLightningModule(vsa=VSAConfig(sparsity=0.5), black_latent=black_latent)
        assert module.hparams["black_latent"] == black_latent
        cond = module._condition(batch)
        black = torch.tensor(values).view(1, 4, 1, 1, 1)
        expected = torch.where(mask > 0, zero.conditional_latents, black)
        assert torch.equal(cond.conditional_latents, expected)
        assert bool((cond.conditional_latents != zero.conditional_latents).any())
        assert torch.equal(cond.latent_mask, mask) and torch.equal(cond.upsampled, zero.upsampled)


def test_token_sqrt_shift_gets_the_video_token_count(monkeypatch):
    """A token-count shift needs the sequence length: (5, 8, 8) latents, patch (1, 2, 2) -> 80 tokens."""
    calls = []
    sample = module_source.sample_training_sigmas
    monkeypatch.setattr(
        module_source,
        "sample_training_sigmas",
        lambda *a, **kw: (calls.append(kw["num_tokens"]), sample(*a, **kw))[1],
    )
    sampler = TimestepSamplerConfig(
        shift=ShiftConfig(rule=ShiftRule.TOKEN_SQRT, shift=2.0, base_num_tokens=20)
    )
    module = RefinerLightningModule(vsa=VSAConfig(sparsity=0.5), sampler=sampler)
    data = RefinerTripleDataModule(
        num_train=2, num_val=2, batch_size=2, high_res_shape=(5, 8, 8), keyframe_indices=(0,)
    )
    with torch.no_grad():
        loss = module.flow_matching_loss(next(iter(data.train_dataloader())))
    assert calls == [80] and bool(torch.isfinite(loss))


def test_training_draws_come_from_the_step_and_replica():
    """σ and ε of a training step depend on (seed, global step, data-parallel replica) only: not on
    the process's global RNG (a resumed run draws the same), and replicas draw their own."""
    from types import SimpleNamespace

    data = RefinerTripleDataModule(
        num_train=2, num_val=2, batch_size=2, high_res_shape=(5, 8, 8), keyframe_indices=(0,)
    )
    batch = next(iter(data.train_dataloader()))
    module = RefinerLightningModule(vsa=VSAConfig(sparsity=0.5), seed=3)
    assert module.hparams["seed"] == 3
    drawn = []
    original = module._predict
    module._predict = lambda b, c, noisy, sigma: (drawn.append((noisy, sigma)), original(b, c, noisy, sigma))[
        1
    ]

    def step(replica: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        module._trainer = (
            None
            if replica is None
            else SimpleNamespace(
                world_size=4,
                global_step=0,
                strategy=SimpleNamespace(distributed_sampler_kwargs={"num_replicas": 2, "rank": replica}),
            )
        )
        with torch.no_grad():
            module.training_step(batch, 0) if replica is None else module.flow_matching_loss(
                batch, module_source.step_generator(3, 0, module._trainer)
            )
        return drawn[-1]

    torch.manual_seed(0)
    first = step(None)
    torch.manual_seed(1)  # another global RNG state: the same draws
    second = step(None)
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    replica0, replica1 = step(0), step(1)
    assert torch.equal(replica0[1], first[1]) and torch.equal(replica0[0], first[0])
    assert not torch.equal(replica1[1], first[1]) and not torch.equal(replica1[0], first[0])
    module._trainer = None


def test_module_argument_errors():
    with pytest.raises(TypeError, match="vsa: expected a VSAConfig or its hparams dict, got list"):
        RefinerLightningModule(vsa=[0.5])
    with pytest.raises(ValueError, match=r"vsa: unknown keys \['bogus'\] for VSAConfig"):
        RefinerLightningModule(vsa={"sparsity": 0.5, "bogus": 1})
    with pytest.raises(ValueError, match=r"vsa.dense: unknown keys \['name'\] for AttentionConfig"):
        RefinerLightningModule(vsa={"sparsity": 0.5, "dense": {"name": "sdpa"}})
    with pytest.raises(ValueError, match="vsa: cube volume must be a power of two"):
        RefinerLightningModule(vsa={"sparsity": 0.5, "cube": [3, 3, 3]})
    with pytest.raises(ValueError, match=r"sampler.distribution: expected one of \['uniform'"):
        RefinerLightningModule(vsa=VSAConfig(sparsity=0.5), sampler={"distribution": "gaussian"})
    with pytest.raises(ValueError, match=r"sampler.shift.rule: expected one of \['fixed', 'token_sqrt'\]"):
        RefinerLightningModule(vsa=VSAConfig(sparsity=0.5), sampler={"shift": {"rule": "linear"}})
    with pytest.raises(ValueError, match=r"sparsity_ramp: unknown keys \['stop'\]"):
        RefinerLightningModule(vsa=VSAConfig(sparsity=0.5), sparsity_ramp={"target": 0.5, "stop": 3})
    with pytest.raises(TypeError, match="sparsity_ramp: expected a SparsityRamp or its hparams dict"):
        RefinerLightningModule(vsa=VSAConfig(sparsity=0.5), sparsity_ramp=0.5)
    with pytest.raises(ValueError, match=r"sparsity_ramp needs vsa\.sparsity"):
        RefinerLightningModule(
            vsa=VSAConfig(sparsity=None, top_k=2), sparsity_ramp=SparsityRamp(target=0.5, steps=2)
        )
    with pytest.raises(
        ValueError, match="black_latent: expected a scalar or C = 4 per-channel values, got 2"
    ):
        RefinerLightningModule(vsa=VSAConfig(sparsity=0.5), black_latent=[0.1, 0.2])
    for bad in ("0.1", True, math.nan, [0.0, 0.0, 0.0, math.inf]):
        with pytest.raises(
            TypeError, match="black_latent: expected a finite float or a list of finite floats"
        ):
            RefinerLightningModule(vsa=VSAConfig(sparsity=0.5), black_latent=bad)
    for bad in (-1, 1.5, True, "0"):
        with pytest.raises(ValueError, match="seed: expected a non-negative int"):
            RefinerLightningModule(vsa=VSAConfig(sparsity=0.5), seed=bad)


def test_configs_rebuild_from_their_hparams_dicts():
    vsa = VSAConfig(top_k=3, sparsity=None, cube=(2, 2, 4), dense=AttentionConfig(backend="reference"))
    sampler = TimestepSamplerConfig(distribution=TimestepDistribution.MODE, shift=ShiftConfig(shift=3.0))
    ramp = SparsityRamp(target=0.25, steps=7)
    module = RefinerLightningModule(vsa=vsa, sparsity_ramp=None, sampler=sampler)
    rebuilt = RefinerLightningModule(**{**module.hparams, "vsa": dict(module.hparams["vsa"])})
    assert rebuilt.refiner.config.vsa == vsa and rebuilt.sampler == sampler and rebuilt.ramp is None
    with_ramp = RefinerLightningModule(vsa={"sparsity": 0.5}, sparsity_ramp={"target": 0.25, "steps": 7})
    assert with_ramp.ramp == ramp and with_ramp.refiner.config.vsa == VSAConfig(sparsity=0.5)
    assert with_ramp.sampler == TimestepSamplerConfig()


def test_recipe_yaml_maps_onto_the_module_and_data(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["train"])  # LightningCLI reads sys.argv too
    recipe = yaml.safe_load(RECIPE.read_text())
    assert recipe.pop("ckpt_path") == "last"  # a `fit` option; run=False parses no subcommand
    assert recipe.pop("on_nonfinite") == "stop"  # read by skyreels_v4.runs, not by LightningCLI
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(recipe))
    cli = LightningCLI(
        RefinerLightningModule,
        RefinerTripleDataModule,
        args=["--config", str(config), "--trainer.logger=false", "--trainer.callbacks=[]"],
        run=False,
        save_config_callback=None,
    )
    assert isinstance(cli.model, RefinerLightningModule) and cli.model.ramp == SparsityRamp(
        target=0.5, steps=100
    )
    assert cli.model.refiner.config.vsa == VSAConfig(sparsity=0.5, cube=(4, 4, 4), backend=None)
    assert cli.datamodule.train_set.shape == (9, 16, 16)


def test_hyperparameters_load_with_weights_only():
    """Checkpoints must resume with torch.load(weights_only=True): hparams hold plain data only."""
    sampler = TimestepSamplerConfig(distribution=TimestepDistribution.LOGIT_NORMAL)
    model = RefinerLightningModule(vsa=VSAConfig(sparsity=0.5, backend="gather"), sampler=sampler)
    buffer = io.BytesIO()
    torch.save(dict(model.hparams), buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)
    assert loaded["sampler"]["distribution"] == TimestepDistribution.LOGIT_NORMAL.value
    assert loaded["vsa"]["cube"] == [4, 4, 4] and loaded["vsa"]["backend"] == "gather"
    assert loaded["black_latent"] == 0.0
