"""Recipes for every stage of the paper's Table 1 (recipes/train/): the full-scale YAMLs parse and build
on the meta device at the preset's size; the tiny YAMLs run the whole schedule with the documented
commands (each stage starting from the previous stage's exported folder, the joint stage from the
merged video + audio pretrain models, then LoRA); a SIGKILL mid-run of the joint tiny recipe resumes
bit for bit; the stage geometry and image tasks are checked."""

from __future__ import annotations

import functools
import importlib.util
import itertools
import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from skyreels_inpaint_conditioning import TrainingTask
from skyreels_mmdit_blocks import joint_preset, parameter_counts
from skyreels_v4.errors import ConfigMismatchError, PreflightError, SkyReelsError
from skyreels_v4.model import SkyReelsV4Transformer
from skyreels_v4.runs import RecipeCLI
from skyreels_v4.scale.lightning import SkyReelsParallelStrategy, resolve_dims
from skyreels_v4.training import (
    JointTrainingModule,
    LatentCache,
    build_transformer_config,
    collate_cache_items,
)
from skyreels_v4.training.stages import StageDataModule, StageTrainingModule, merge_branches
from skyreels_v4.training.train import main

ROOT = Path(__file__).resolve().parents[3]
RECIPES = ROOT / "recipes" / "train"
TESTS = Path(__file__).resolve().parent
VIDEO_STAGES = [
    "t2i_stage1",
    "t2v_stage2",
    "inpaint_stage3",
    "mixed_stage4",
    "mixed_stage5",
    "multimodal_stage6",
]
JOINT_STAGES = ["joint_pretrain", "sft_stage1", "sft_stage2"]
STAGES = [*VIDEO_STAGES, "audio_pretrain", *JOINT_STAGES]
TINY_STEPS = 2


class _ParseOnly(RecipeCLI):
    """The recipe CLI's parser and type checks (unknown keys are errors), nothing instantiated or run."""

    def instantiate_classes(self) -> None:
        pass

    def _run_subcommand(self, subcommand: str) -> None:
        pass


@functools.cache
def _parser(module_class: type, first: Path) -> Any:
    return _ParseOnly(module_class, StageDataModule, args=["fit", "--config", str(first)]).parser


def parse(path: Path, module_class: type = StageTrainingModule) -> dict:
    """The recipe as the CLI resolves it (one parser per module class: building one takes seconds)."""
    parser = _parser(
        module_class, path if module_class is not StageTrainingModule else RECIPES / "t2i_stage1.yaml"
    )
    return parser.parse_args(["fit", "--config", str(path)])["fit"].as_dict()


def export_dir(config: dict) -> str:
    (export,) = [c for c in config["trainer"]["callbacks"] if c["class_path"].endswith("stages.ExportModel")]
    return export["init_args"]["dirpath"]


def test_every_stage_has_a_full_and_a_tiny_recipe():
    names = {p.stem for p in RECIPES.glob("*.yaml")}
    assert names == {*STAGES, *(f"{s}_tiny" for s in STAGES), "lora_tiny"}


@pytest.fixture(scope="module")
def full_parameter_count() -> int:
    """The full preset's size with the recipes' text width (Qwen2.5-VL-7B's 3584 instead of the preset's
    4096): per branch, the two layers that read text tokens (the token refiner's input projection and
    its pooled-text MLP, 4096 -> 3072 weights) are narrower; nothing else changes."""
    preset = parameter_counts(joint_preset("full")).total
    return preset - 2 * 2 * (4096 - 3584) * 3072


def _build_on_meta(stage: str, **changes: Any) -> StageTrainingModule:
    config = parse(RECIPES / f"{stage}.yaml")
    # the previous stage's folder is not here
    model = {**config["model"], "init_from": None, **changes}
    with torch.device("meta"):
        return StageTrainingModule(**model)


FULL_CONFIG = dict(preset="full", video_latent_channels=16, audio_latent_channels=64, text_dim=3584)


def test_full_recipe_builds_on_meta_at_the_preset_size(full_parameter_count):
    module = _build_on_meta("t2i_stage1")
    parameters = list(module.transformer.parameters())
    assert all(p.is_meta for p in parameters)
    assert sum(p.numel() for p in parameters) == full_parameter_count
    assert module.transformer.config == build_transformer_config(**FULL_CONFIG)


@pytest.mark.parametrize("stage", STAGES)
def test_every_full_recipe_parses_and_builds_on_meta(stage):
    """Every stage: the CLI accepts the YAML, its transformer config is the full preset's (so its size is
    the one asserted above), and its module builds on the meta device with the YAML's arguments (two
    blocks deep here: building all 60 blocks takes seconds; ``-m slow`` builds every one in full)."""
    config = parse(RECIPES / f"{stage}.yaml")
    model = config["model"]
    assert model["preset"] == "full" and model["model_overrides"] is None
    assert build_transformer_config(**FULL_CONFIG) == build_transformer_config(
        preset=model["preset"],
        video_latent_channels=model["video_latent_channels"],
        audio_latent_channels=model["audio_latent_channels"],
        text_dim=model["text_dim"],
    )
    shallow = {"num_dual_blocks": 1, "num_single_blocks": 1}
    module = _build_on_meta(stage, model_overrides=shallow)
    assert module.transformer.config.video.dim == 3072
    assert all(p.is_meta for p in module.transformer.parameters())
    # the tiny version mirrors the stage: tasks, loss weights, chaining; only sizes differ
    tiny = parse(RECIPES / f"{stage}_tiny.yaml")
    for key in ("tasks", "image_tasks", "video_weight", "audio_weight", "timestep_sharing", "text_dropout"):
        assert tiny["model"][key] == model[key], key
    for recipe in (config, tiny):
        assert (recipe["model"]["init_from"] is None) == (stage in ("t2i_stage1", "audio_pretrain"))
    # At scale: FSDP2 (+ Ulysses SP) through the strategy, batches sharded by the bucket sampler.
    trainer = config["trainer"]
    assert trainer["use_distributed_sampler"] is False
    assert trainer["strategy"]["class_path"] == "skyreels_v4.scale.lightning.SkyReelsParallelStrategy"
    strategy = SkyReelsParallelStrategy(**trainer["strategy"]["init_args"])
    assert resolve_dims(trainer["devices"], **strategy._layout).world_size == trainer["devices"]
    assert 24 % strategy._layout["sp"] == 0  # the full preset's video heads


@pytest.mark.slow  # ~3 s per stage on 2 idle cores, 10-20 s on busy ones
@pytest.mark.parametrize("stage", STAGES)
def test_every_full_recipe_builds_full_depth_on_meta(stage, full_parameter_count):
    module = _build_on_meta(stage)
    assert sum(p.numel() for p in module.transformer.parameters()) == full_parameter_count


def test_stages_chain_through_init_from():
    """Each stage's model.init_from is the folder the previous stage's ExportModel writes (full and
    tiny), and the joint stage starts from the documented merge of stage 6 and the audio pretrain."""
    for suffix in ("", "_tiny"):
        configs = {s: parse(RECIPES / f"{s}{suffix}.yaml") for s in STAGES}
        for previous, stage in itertools.pairwise([*VIDEO_STAGES, *JOINT_STAGES]):
            source = configs[stage]["model"]["init_from"]
            if stage == "joint_pretrain":
                header = (RECIPES / f"{stage}{suffix}.yaml").read_text()
                merge = re.search(r"merge-branches --video (\S+) \\\n#\s+--audio (\S+) --out (\S+)", header)
                assert merge, "the joint recipe documents the merge command"
                assert merge.group(1) == export_dir(configs["multimodal_stage6"])
                assert merge.group(2) == export_dir(configs["audio_pretrain"])
                assert merge.group(3) == source
            else:
                assert source == export_dir(configs[previous]), stage
    lora = parse(RECIPES / "lora_tiny.yaml", _lora_module())
    assert lora["model"]["init_from"] == export_dir(parse(RECIPES / "sft_stage2_tiny.yaml"))


def _lora_module():
    pytest.importorskip("peft")
    from skyreels_v4.training.lora import LoRATrainingModule

    return LoRATrainingModule


@pytest.fixture(scope="module")
def schedule(tmp_path_factory):
    """The whole tiny schedule, run with the documented commands (+ a step limit) in a fresh folder."""
    root = tmp_path_factory.mktemp("schedule")
    before = os.getcwd()
    os.chdir(root)
    runs = {}
    threads = torch.get_num_threads()
    steps = ["--trainer.max_steps", str(TINY_STEPS)]
    try:
        torch.set_num_threads(1)
        assert main(["tiny-cache", "--out", "outputs/train/tiny/cache"]) == 0
        for stage in STAGES:
            if stage == "joint_pretrain":
                merge = re.search(
                    r"skyreels-v4 train (merge-branches --video \S+) \\\n#\s+(--audio \S+ --out \S+)",
                    (RECIPES / "joint_pretrain_tiny.yaml").read_text(),
                )
                assert main(" ".join(merge.groups()).split()) == 0
            runs[stage] = main(["fit", "--config", str(RECIPES / f"{stage}_tiny.yaml"), *steps])
        if _has_peft():
            runs["lora"] = main(["lora", "fit", "--config", str(RECIPES / "lora_tiny.yaml"), *steps])
    finally:
        os.chdir(before)
        torch.set_num_threads(threads)
    return root, runs


def _has_peft() -> bool:
    try:
        import peft  # noqa: F401
    except ImportError:
        return False
    return True


def _state(folder: Path) -> dict[str, torch.Tensor]:
    return SkyReelsV4Transformer.from_pretrained(folder).state_dict()


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_tiny_schedule_runs_every_stage_and_exports_it(schedule):
    root, runs = schedule
    for stage in STAGES:
        cli = runs[stage]
        assert cli.trainer.global_step == TINY_STEPS, stage
        folder = root / "outputs" / "train" / "tiny" / stage / "model"
        exported = _state(folder)
        # the folder holds the module's EMA weights (ExportModel, weights: ema)
        expected = cli.model.export_transformer(use_ema=True).state_dict()
        assert _equal(exported, expected), stage
        assert all(bool(torch.isfinite(v).all()) for v in exported.values())
        assert bool(torch.isfinite(cli.trainer.callback_metrics["train/loss"])), stage


def test_each_stage_starts_from_the_previous_stage_weights(schedule):
    root, _ = schedule
    for stage in [s for s in STAGES if s not in ("t2i_stage1", "audio_pretrain")]:
        config = parse(RECIPES / f"{stage}_tiny.yaml")
        source = root / config["model"]["init_from"]
        module = StageTrainingModule(**dict(config["model"], init_from=str(source)))
        assert _equal(module.transformer.state_dict(), _state(source)), stage
        fresh = StageTrainingModule(**dict(config["model"], init_from=None))
        assert not _equal(fresh.transformer.state_dict(), _state(source)), "the guard: weights differ"
    # the first stages of each branch start from random weights: stage 2 moved away from stage 1
    tiny = root / "outputs" / "train" / "tiny"
    assert not _equal(_state(tiny / "t2i_stage1" / "model"), _state(tiny / "t2v_stage2" / "model"))


def test_joint_stage_starts_from_the_merged_branches(schedule, tmp_path):
    root, _ = schedule
    tiny = root / "outputs" / "train" / "tiny"
    merged = _state(tiny / "joint_init" / "model")
    video, audio = _state(tiny / "multimodal_stage6" / "model"), _state(tiny / "audio_pretrain" / "model")
    for key, value in merged.items():
        source = audio if key.startswith("audio.") else video
        assert torch.equal(value, source[key]), key
    assert any(not torch.equal(video[k], audio[k]) for k in merged if k.startswith("audio."))
    other = SkyReelsV4Transformer(
        build_transformer_config(
            preset="tiny", video_latent_channels=192, audio_latent_channels=256, text_dim=32
        )
    )
    other.save_pretrained(tmp_path / "other")
    with pytest.raises(ConfigMismatchError, match="audio_folder"):
        merge_branches(tiny / "multimodal_stage6" / "model", tmp_path / "other", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_lora_recipe_changes_only_its_targets(schedule):
    root, runs = schedule
    if "lora" not in runs:
        pytest.skip("peft is not installed")
    tiny = root / "outputs" / "train" / "tiny"
    base, merged = _state(tiny / "sft_stage2" / "model"), _state(tiny / "lora" / "model")
    patterns = parse(RECIPES / "lora_tiny.yaml", _lora_module())["model"]["lora"]["target_modules"]
    changed = {k for k in base if not torch.equal(base[k], merged[k])}
    assert changed, "the adapters trained"
    for key in changed:
        assert key.endswith(".weight") and any(re.fullmatch(p, key[: -len(".weight")]) for p in patterns), key
    assert not any(k.startswith("video.") for k in changed)
    cli = runs["lora"]
    assert cli.model.hparams.video_weight == 0.0
    assert float(cli.trainer.callback_metrics["train/video_loss"]) >= 0.0


def test_single_frame_batches_draw_image_tasks(schedule):
    root, _ = schedule
    cache = LatentCache(root / "outputs" / "train" / "tiny" / "cache" / "mixed")
    by_frames: dict[int, list[int]] = {}
    for position in range(len(cache)):
        by_frames.setdefault(int(cache[position]["video_latents"].shape[1]), []).append(position)
    images = collate_cache_items([cache[i] for i in by_frames[1][:2]])
    videos = collate_cache_items([cache[i] for i in by_frames[3][:2]])
    args = dict(
        preset="tiny",
        video_latent_channels=192,
        audio_latent_channels=256,
        text_dim=32,
        model_overrides={"num_dual_blocks": 1, "num_single_blocks": 1, "num_refiner_blocks": 1},
        tasks={"image_to_video": 1.0},
        text_dropout=0.0,
    )
    module = StageTrainingModule(image_tasks={"image_inpainting": 1.0}, **args)
    module.black_latents, module.frame_geometry = dict(cache.black_latents), (4, 4)
    g = torch.Generator().manual_seed(0)
    assert module.prepare_batch(images, generator=g)["task"] is TrainingTask.IMAGE_INPAINTING
    assert module.prepare_batch(videos, generator=g)["task"] is TrainingTask.IMAGE_TO_VIDEO
    plain = JointTrainingModule(**args)  # why image_tasks exists: a video task on an image fails
    plain.black_latents, plain.frame_geometry = dict(cache.black_latents), (4, 4)
    with pytest.raises(ValueError, match="num_frames"):
        plain.prepare_batch(images, generator=torch.Generator().manual_seed(0))
    with pytest.raises(SkyReelsError, match="image_tasks"):
        StageTrainingModule(image_tasks={"video_extension": 1.0}, **args)


def test_stage_geometry_is_checked_before_work(schedule, tmp_path, monkeypatch):
    root, _ = schedule
    caches = root / "outputs" / "train" / "tiny" / "cache"
    monkeypatch.chdir(tmp_path)
    # the T2I stage refuses a cache holding videos, before writing anything
    with pytest.raises(PreflightError, match=r"data.video_sizes allows shorter sides \[\]"):
        main(
            [
                "fit",
                "--config",
                str(RECIPES / "t2i_stage1_tiny.yaml"),
                "--data.cache_dir",
                str(caches / "mixed"),
            ]
        )
    assert not (tmp_path / "outputs").exists()
    for changes, match in (
        ({"durations_s": (1.0, 2.0)}, "data.durations_s allows"),
        ({"fps": 24.0}, "data.fps is 24"),
        ({"video_sizes": [32]}, "data.video_sizes allows"),
        ({"image_sizes": [32]}, "data.image_sizes allows"),
    ):
        data = StageDataModule(cache_dir=str(caches / "mixed"), batch_size=2, **changes)
        with pytest.raises(PreflightError, match=match):
            data.check_buckets()
    for bad, match in (({"durations_s": (2.0, 1.0)}, "durations_s"), ({"video_sizes": [0]}, "video_sizes")):
        with pytest.raises(SkyReelsError, match=match):
            StageDataModule(cache_dir=str(caches / "mixed"), batch_size=2, **bad)
    data = StageDataModule(cache_dir=str(caches / "videos"), batch_size=2)
    module = StageTrainingModule(
        preset="tiny", video_latent_channels=192, audio_latent_channels=128, text_dim=32
    )
    with pytest.raises(PreflightError, match="audio_latent_channels"):
        data.preflight(module)


def _resume_recipes() -> Any:
    """tests/test_resume_recipes.py (its YAML edits and child-process runner), loaded by path."""
    spec = importlib.util.spec_from_file_location("_resume_recipes", TESTS / "test_resume_recipes.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# -- kill -9 mid-run of the joint tiny recipe -------------------------------------------------------
KILL_STEPS = [3, 4]  # batch 4 of 16 clips = 4 batches per epoch; checkpoints every 2 steps


def test_sigkill_mid_epoch_and_at_epoch_boundary_resumes_bit_for_bit(schedule):
    from concurrent.futures import ThreadPoolExecutor

    helpers = _resume_recipes()
    MAX_STEPS, _common, _losses, _run_chain = (
        helpers.MAX_STEPS,
        helpers._common,
        helpers._losses,
        helpers._run_chain,
    )
    root, _ = schedule
    tiny = root / "outputs" / "train" / "tiny"
    jobs = {}
    for kind, kill in (("whole", None), ("killed", KILL_STEPS)):
        config = yaml.safe_load((RECIPES / "joint_pretrain_tiny.yaml").read_text())
        config["model"]["init_from"] = str(tiny / "joint_init" / "model")
        config["data"].update(cache_dir=str(tiny / "cache" / "videos"), batch_size=4)
        out = root / f"resume_{kind}"
        path = root / f"resume_{kind}.yaml"
        path.write_text(yaml.safe_dump(_common(config, out, kill)))
        jobs[kind] = (path, out, 1 if kill is None else len(kill) + 1)
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {
            k: pool.submit(_run_chain, "skyreels_v4.training.train", p, n) for k, (p, _, n) in jobs.items()
        }
        codes = {k: f.result() for k, f in futures.items()}
    whole, killed = jobs["whole"][1], jobs["killed"][1]
    assert codes == {"whole": [0], "killed": [-9, -9, 0]}
    # the second kill is at the first batch of an epoch (Lightning labels it epoch 2 here, in the
    # uninterrupted run as well: the label skips a value with this loader; the data order does not)
    assert " batch 0" in (killed / "killed_at_4").read_text(), "an epoch boundary"
    reference, resumed = _losses(whole / "losses.jsonl"), _losses(killed / "losses.jsonl")
    assert sorted(reference) == list(range(1, MAX_STEPS + 1))
    assert len({r["loss"] for r in reference.values()}) == MAX_STEPS, "the guard: losses differ per step"
    assert {s: r["loss"] for s, r in resumed.items()} == {s: r["loss"] for s, r in reference.items()}
    a = torch.load(whole / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == MAX_STEPS - 1  # the last checkpoint (every 2 steps)
    for key, value in a["state_dict"].items():
        assert torch.equal(value, b["state_dict"][key]), key
    assert json.loads((killed / "run.json").read_text())["resumed_from"].endswith("last.ckpt")
