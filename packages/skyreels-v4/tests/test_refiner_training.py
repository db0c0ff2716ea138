"""The refiner Lightning module: a few real training steps, the sparsity ramp, and the recipe's YAML."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.cli import LightningCLI

from skyreels_flow_matching import TimestepDistribution, TimestepSamplerConfig
from skyreels_refiner_vsa import SparsityRamp, VSAConfig
from skyreels_v4.refiner import RefinerLightningModule, RefinerTripleDataModule

RECIPE = Path(__file__).resolve().parents[3] / "recipes" / "refiner" / "tiny.yaml"


@pytest.fixture
def one_thread():
    """Tiny tensors: intra-op threads only add synchronisation (and stall on a shared CPU)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_training_steps_follow_the_ramp_and_reduce_the_loss(tmp_path, one_thread):
    torch.manual_seed(0)
    model = RefinerLightningModule(
        vsa=VSAConfig(sparsity=0.5), sparsity_ramp=SparsityRamp(target=0.5, steps=4), learning_rate=2e-3
    )
    data = RefinerTripleDataModule(
        num_train=4, num_val=4, batch_size=4, high_res_shape=(5, 8, 8), keyframe_indices=(0,)
    )
    batch = next(iter(data.train_dataloader()))
    sparsities = []
    original = model.refiner.set_sparsity
    model.refiner.set_sparsity = lambda s: (sparsities.append(s), original(s))[1]
    with torch.no_grad():
        torch.manual_seed(0)
        before = model.flow_matching_loss(batch).item()
    trainer = L.Trainer(
        max_steps=6, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, limit_val_batches=1, num_sanity_val_steps=0, default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(model, datamodule=data)
    assert sparsities == pytest.approx([0.0, 0.125, 0.25, 0.375, 0.5, 0.5])
    assert all(vsa.sparsity == 0.5 for vsa in model.refiner.vsa)
    with torch.no_grad():
        torch.manual_seed(0)
        after = model.flow_matching_loss(batch).item()
    assert after < 0.8 * before
    assert {"val/loss", "val/x0_mse", "val/interp_mse"} <= set(trainer.callback_metrics)


def test_module_argument_errors():
    with pytest.raises(TypeError, match="vsa: expected a VSAConfig"):
        RefinerLightningModule(vsa={"sparsity": 0.5})
    with pytest.raises(ValueError, match=r"sparsity_ramp needs vsa\.sparsity"):
        RefinerLightningModule(
            vsa=VSAConfig(sparsity=None, top_k=2), sparsity_ramp=SparsityRamp(target=0.5, steps=2)
        )


def test_recipe_yaml_maps_onto_the_module_and_data(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["train"])  # LightningCLI reads sys.argv too
    recipe = yaml.safe_load(RECIPE.read_text())
    assert recipe.pop("ckpt_path") == "last"  # a `fit` option; run=False parses no subcommand
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
