"""skyreels_v4.runs and guards inside real Lightning runs: run identity, forks, corrupt checkpoints,
non-finite losses (stop without a checkpoint / skip), RNG capture, the resumable sampler."""

from __future__ import annotations

import json
import random
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import yaml

from skyreels_v4 import runs
from skyreels_v4.errors import ConfigMismatchError, FileFormatError, NonFiniteError, PreflightError
from skyreels_v4.guards import NonFiniteGuard, finite_checks, finite_checks_enabled
from skyreels_v4.refiner.train import main as refiner_main

RECIPE = Path(__file__).resolve().parents[3] / "recipes" / "refiner" / "tiny.yaml"


@pytest.fixture(autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _recipe(tmp_path: Path, out: Path, steps: int = 2, **data) -> Path:
    config = yaml.safe_load(RECIPE.read_text())
    config["trainer"].update(
        max_steps=steps, val_check_interval=2, limit_val_batches=1, default_root_dir=str(out),
        enable_model_summary=False, max_time=None,
    )  # fmt: skip
    config["trainer"]["logger"]["init_args"]["save_dir"] = str(out)
    config["trainer"]["callbacks"][0]["init_args"].update(
        dirpath=str(out / "checkpoints"), every_n_train_steps=1
    )
    config["data"].update({"num_train": 8, "num_val": 4, "batch_size": 4} | data)
    path = tmp_path / f"{out.name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def test_rng_capture_restores_every_generator():
    state = runs.capture_rng()
    expected = (random.random(), np.random.rand(), torch.rand(3))  # noqa: NPY002
    runs.restore_rng(state)
    got = (random.random(), np.random.rand(), torch.rand(3))  # noqa: NPY002
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])


def test_sampler_order_depends_only_on_seed_and_pass_and_resumes_mid_pass():
    sampler = runs.ResumableSampler(10, seed=3, per_epoch=8)
    first = list(sampler)
    second = list(sampler)
    assert len(first) == 8 and sorted(set(first)) == sorted(first) and first != second
    again = runs.ResumableSampler(10, seed=3, per_epoch=8)
    assert list(again) == first and [i.seed for i in again] != [i.seed for i in first]  # pass 1 now
    it = iter(runs.ResumableSampler(10, seed=3, per_epoch=8))
    head = [next(it) for _ in range(3)]
    resumed = iter(runs.ResumableSampler(10, seed=3, per_epoch=8))
    resumed.load_state_dict(it.state_dict())
    assert head + list(resumed) == first
    assert [i.seed for i in head] == [i.seed for i in first[:3]]


def test_replicas_deal_one_global_order_and_resume_only_on_the_same_size():
    single = list(runs.ResumableSampler(11, seed=5, per_epoch=8))
    shards = [runs.ResumableSampler(11, seed=5, per_epoch=8, num_replicas=2, rank=r) for r in (0, 1)]
    dealt = [list(sampler) for sampler in shards]
    assert [len(d) for d in dealt] == [4, 4] and len(shards[0]) == 4
    # Replica r reads positions r, r + 2, ... of the one-process pass, with the same per-item seeds.
    for rank, got in enumerate(dealt):
        assert got == single[rank::2] and [i.seed for i in got] == [i.seed for i in single[rank::2]]
    assert [list(s) for s in shards] != dealt  # the next pass has its own order
    it = iter(runs.ResumableSampler(11, seed=5, per_epoch=8, num_replicas=2, rank=1))
    head = [next(it)]
    resumed = iter(runs.ResumableSampler(11, seed=5, per_epoch=8, num_replicas=2, rank=1))
    resumed.load_state_dict(it.state_dict())
    assert head + list(resumed) == dealt[1]
    with pytest.raises(ValueError, match="saved by a run with 2 data-parallel replicas, this run has 1"):
        iter(runs.ResumableSampler(11, seed=5, per_epoch=8)).load_state_dict(it.state_dict())
    with pytest.raises(ValueError, match="saved by a run with 2 data-parallel replicas, this run has 1"):
        runs.ResumableSampler(11, seed=5, per_epoch=8).load_state_dict(shards[0].state_dict())
    with pytest.raises(ValueError, match="per_epoch: expected a multiple of num_replicas = 3"):
        runs.ResumableSampler(11, seed=5, per_epoch=8, num_replicas=3, rank=0)
    with pytest.raises(ValueError, match=r"rank: expected an int in \[0, 2\), got 2"):
        runs.ResumableSampler(11, seed=5, num_replicas=2, rank=2)


def test_dataloader_gives_every_replica_as_many_full_batches():
    data = list(range(11))
    loaders = [
        runs.dataloader(data, batch_size=2, seed=1, drop_last=True, num_replicas=2, rank=r) for r in (0, 1)
    ]
    batches = [[b.tolist() for b in loader] for loader in loaders]
    assert [len(b) for b in batches] == [2, 2]  # 11 items -> 8 usable = 2 steps x 2 replicas x 2
    read = [i for b in batches for batch in b for i in batch]
    assert len(read) == len(set(read)) == 8
    with pytest.raises(ValueError, match=r"dataset: expected at least 12 items \(2 per batch x 6"):
        runs.dataloader(data, batch_size=2, seed=1, drop_last=True, num_replicas=6, rank=0)


def test_rerun_with_another_config_is_refused_and_fork_starts_a_new_run(tmp_path):
    out = tmp_path / "run"
    refiner_main(["fit", "--config", str(_recipe(tmp_path, out))])
    run = json.loads((out / "run.json").read_text())
    assert "resumed_from" not in run and run["config"]["data.batch_size"] == 4
    # Same config, more steps: resumes the same run.
    refiner_main(["fit", "--config", str(_recipe(tmp_path, out, steps=3))])
    resumed = json.loads((out / "run.json").read_text())
    assert resumed["run_id"] == run["run_id"] and resumed["resumed_from"].endswith("last.ckpt")
    # A different learning rate in the same folder: refused, naming the key, before any work.
    before = (out / "checkpoints" / "last.ckpt").stat().st_mtime_ns
    with pytest.raises(ConfigMismatchError, match=r"model\.learning_rate.*--fork_from"):
        refiner_main(
            ["fit", "--config", str(_recipe(tmp_path, out, steps=4)), "--model.learning_rate", "0.5"]
        )
    assert (out / "checkpoints" / "last.ckpt").stat().st_mtime_ns == before
    # Fork: new folder, weights from the checkpoint, a new run id.
    fork = tmp_path / "fork"
    source = out / "checkpoints" / "last.ckpt"
    cli = refiner_main(
        ["fit", "--config", str(_recipe(tmp_path, fork, steps=1)), "--model.learning_rate", "0.0",
         "--fork_from", str(source), "--fork_state", "weights_and_optimizer"]
    )  # fmt: skip
    forked = json.loads((fork / "run.json").read_text())
    assert forked["forked_from"] == str(source) and forked["run_id"] != run["run_id"]
    weights = torch.load(source, weights_only=True)["state_dict"]
    for key, value in cli.model.state_dict().items():  # lr 0: still exactly the forked weights
        assert torch.equal(value, weights[key]), key


def test_corrupt_last_checkpoint_names_the_file_and_the_way_out(tmp_path):
    out = tmp_path / "run"
    recipe = _recipe(tmp_path, out)
    refiner_main(["fit", "--config", str(recipe)])
    last = out / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    with pytest.raises(FileFormatError, match=r"delete last\.ckpt") as info:
        refiner_main(["fit", "--config", str(recipe)])
    assert info.value.path == last


def test_output_folder_that_cannot_exist_fails_before_training(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(PreflightError, match="default_root_dir"):
        refiner_main(["fit", "--config", str(_recipe(tmp_path, tmp_path / "file" / "run"))])


class _Regression(L.LightningModule):
    """y = w·x; batch 2 (global step 2) holds a NaN."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.ones(1))

    def training_step(self, batch, batch_idx):
        return ((self.w * batch) ** 2).mean()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        data = torch.ones(5, 1)
        data[2] = float("nan")
        return torch.utils.data.DataLoader(data, batch_size=1)


def _fit(tmp_path, policy):
    module = _Regression()
    guard = NonFiniteGuard(policy)
    checkpoints = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=tmp_path / "ckpt", every_n_train_steps=1, save_last=True
    )
    trainer = L.Trainer(
        max_steps=5, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        callbacks=[guard, checkpoints], default_root_dir=tmp_path,
    )  # fmt: skip
    trainer.fit(module)
    return module, guard


def test_nonfinite_loss_stops_without_a_checkpoint_of_that_step(tmp_path):
    with pytest.raises(NonFiniteError, match=r"loss.*global step 2 \(epoch 0, batch index 2\)"):
        _fit(tmp_path, "stop")
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == 2 and torch.isfinite(saved["state_dict"]["w"]).all()


def test_nonfinite_batch_is_skipped_when_configured(tmp_path):
    module, guard = _fit(tmp_path, "skip")
    assert guard.skipped == [(2, 2)]
    assert torch.isfinite(module.w).all()
    # Four finite SGD steps on w·1: w <- w - 0.1·2w = 0.8 w each.
    assert module.w.item() == pytest.approx(0.8**4, rel=1e-6)


class _SqrtAtZero(L.LightningModule):
    """Loss sqrt(b) + a²: finite (0 at b·x = 0) with a NaN gradient of ``b`` (0 · inf) at the second step."""

    def __init__(self) -> None:
        super().__init__()
        self.a = torch.nn.Parameter(torch.ones(3))
        self.b = torch.nn.Parameter(torch.ones(2))

    def training_step(self, batch, batch_idx):
        b = self.b * batch[0]  # batch 1 is 0: d sqrt(b·0)/db = 0 · inf
        return b.sqrt().sum() + (self.a**2).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.tensor([[1.0], [0.0], [1.0]]), batch_size=1)


def test_a_nonfinite_gradient_is_named_before_the_step(tmp_path):
    trainer = L.Trainer(
        max_steps=3, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
        enable_checkpointing=False, callbacks=[NonFiniteGuard("stop")], default_root_dir=tmp_path,
    )  # fmt: skip
    module = _SqrtAtZero()
    expected = r"gradient of 'b': 2 NaN and 0 inf of 2 values at global step 1"
    with pytest.raises(NonFiniteError, match=expected):
        trainer.fit(module)
    assert torch.isfinite(module.b).all()  # the step that would have used it never ran


def test_all_finite_is_exact_when_the_sum_overflows():
    from skyreels_v4.io import all_finite

    big = torch.full((4,), 3e38)
    assert not torch.isfinite(big.sum()) and all_finite(big)  # the exact test decides
    assert all_finite(big.half().float()) is False  # 3e38 is inf in float16
    assert not all_finite(torch.tensor([1.0, float("nan")]))
    assert not all_finite(torch.tensor([float("-inf"), 2.0]))
    assert all_finite(torch.tensor([1, 2]))  # integers are finite
    assert all_finite(torch.empty(0))
    assert not all_finite(torch.tensor([complex(1, float("inf"))]))


def test_finite_checks_switch():
    import skyreels_attention as lower

    assert finite_checks_enabled()
    assert lower.get_finite_checks() is lower.FiniteChecks.CPU
    with finite_checks(False):
        assert not finite_checks_enabled()
        # one switch for the whole stack: the lower packages' entry-point checks are off too
        assert lower.get_finite_checks() is lower.FiniteChecks.OFF
        lower.check_finite(torch.tensor([float("nan")]), "x")  # passes: switched off
    assert finite_checks_enabled()
    assert lower.get_finite_checks() is lower.FiniteChecks.CPU
    with lower.finite_checks(lower.FiniteChecks.ALWAYS):
        with finite_checks(False):
            assert lower.get_finite_checks() is lower.FiniteChecks.OFF
        assert lower.get_finite_checks() is lower.FiniteChecks.ALWAYS  # restored exactly
    import skyreels_audio_vae
    import skyreels_flow_matching

    for package in (skyreels_flow_matching, skyreels_audio_vae):  # every lower package's own switch
        with finite_checks(False):
            assert package.get_finite_checks() is package.FiniteChecks.OFF
        assert package.get_finite_checks() is package.FiniteChecks.CPU


def test_adamw_is_fused_for_plain_cpu_parameters_and_matches_the_loop():
    torch.manual_seed(0)
    shapes = [(16, 8), (8,), (3, 4, 5)]
    params = [torch.nn.Parameter(torch.randn(s)) for s in shapes]
    start = [p.detach().clone() for p in params]
    reference = [torch.nn.Parameter(p.detach().clone()) for p in params]
    options = {"lr": 1e-2, "weight_decay": 0.01, "betas": (0.9, 0.99)}
    fast = runs.adamw(params, **options)
    loop = torch.optim.AdamW(reference, foreach=False, fused=False, **options)
    assert fast.param_groups[0]["fused"] is True
    for _ in range(5):
        grads = [torch.randn(s) for s in shapes]
        for p, q, g in zip(params, reference, grads):
            p.grad, q.grad = g.clone(), g.clone()
        fast.step()
        loop.step()
    for p, q, p0 in zip(params, reference, start):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7)
        # The steps ran: every value moved, on average by about lr per step of random sign (~0.02).
        assert bool((p != p0).all()) and float((p - p0).abs().mean()) > 1e-2

    # A checkpoint of the loop optimizer resumes with the loop (its groups' options are restored).
    again = runs.adamw([torch.nn.Parameter(q.detach().clone()) for q in reference], **options)
    again.load_state_dict(loop.state_dict())
    assert not again.param_groups[0]["fused"]


def test_adamw_keeps_the_default_where_fused_does_not_apply():
    class Marked(torch.Tensor):  # stands for a DTensor shard: any tensor subclass
        pass

    plain = torch.nn.Parameter(torch.randn(4))
    marked = torch.Tensor._make_subclass(Marked, torch.randn(4), True)
    assert runs.fused_adamw_supported([plain])
    assert not runs.fused_adamw_supported([plain, marked])
    assert not runs.fused_adamw_supported([torch.arange(3)])
    assert not runs.fused_adamw_supported([])
    assert not runs.adamw([plain, marked], lr=1e-3).param_groups[0]["fused"]
    assert runs.adamw([plain], lr=1e-3, foreach=True).param_groups[0]["foreach"] is True
    assert not runs.adamw([plain], lr=1e-3, foreach=True).param_groups[0]["fused"]


def test_adamw_is_not_fused_where_lightning_clips_under_mixed_precision():
    from types import SimpleNamespace

    plain = torch.nn.Parameter(torch.ones(3))
    cases = {
        ("bf16-mixed", 1.0): False,
        ("16-mixed", 0.5): False,
        ("bf16-mixed", None): True,
        ("bf16-mixed", 0.0): True,
        ("32-true", 1.0): True,
        ("bf16-true", 1.0): True,
    }
    for (precision, clip), fused in cases.items():
        trainer = SimpleNamespace(precision=precision, gradient_clip_val=clip)
        assert runs.clipping_in_mixed_precision(trainer) is (not fused), (precision, clip)
        assert bool(runs.adamw([plain], trainer=trainer, lr=1e-3).param_groups[0]["fused"]) is fused
    assert not runs.clipping_in_mixed_precision(None)
