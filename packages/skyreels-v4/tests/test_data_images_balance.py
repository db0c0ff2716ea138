"""Balancing and image stages of paper 3.4.2 with asserted values: target proportions as data, exact
and near duplicates, resolution / aspect filters, embedding-cluster balancing, category matching."""

from __future__ import annotations

import base64
import math
from collections import Counter

import numpy as np
import pytest

from skyreels_v4.data.manifest import new_row
from skyreels_v4.data.stage import StageContext, build_config, resolve_stage
from skyreels_v4.errors import FileFormatError, NonFiniteError, SkyReelsError


def _run_table(name, rows, params, tmp_path):
    stage = resolve_stage(name)
    return stage.fn(rows, build_config(stage, params), StageContext(input_dir=tmp_path, output_dir=tmp_path))


def _labelled(counts):
    rows = []
    for label, count in counts.items():
        rows += [
            new_row(id=f"{label}{n:03d}", source="x", start_s=0, end_s=1, motion_label=label)
            for n in range(count)
        ]
    return rows


@pytest.mark.parametrize(
    ("counts", "targets"),
    [
        ({"static": 10, "slow": 40, "fast": 25}, {"static": 0.2, "slow": 0.5, "fast": 0.3}),
        ({"slow": 7, "fast": 100}, {"slow": 1, "fast": 1}),  # proportions are normalised
        ({"slow": 33, "fast": 17, "static": 5}, {"slow": 0.6, "fast": 0.4}),  # static is not a target
    ],
)
def test_balance_meets_the_target_proportions(tmp_path, counts, targets):
    out = _run_table(
        "balance", _labelled(counts), {"targets": targets, "label_column": "motion_label"}, tmp_path
    )
    assert sorted(r["id"] for r in out) == sorted(r["id"] for r in _labelled(counts))  # nothing lost
    kept = Counter(r["balance_label"] for r in out if r["kept"])
    total = sum(targets.values())
    size = min(counts[k] / (v / total) for k, v in targets.items())  # the largest balanced set
    for label, target in targets.items():
        assert kept[label] == math.floor(target / total * size + 1e-9), (label, kept)
        assert kept[label] <= counts[label]
    share = {k: kept[k] / sum(kept[t] for t in targets) for k in targets}
    for label, target in targets.items():  # within rounding of one clip per label
        assert abs(share[label] - target / total) <= len(targets) / sum(kept[t] for t in targets)
    for row in out:
        if not row["kept"]:
            assert (
                row["drop_reason"] == f"over_target:{row['balance_label']}" and row["dropped_by"] == "balance"
            )
    # labels outside the targets pass (unlabeled: keep), or are dropped when asked
    if "static" in counts and "static" not in targets:
        assert kept["static"] == counts["static"]
        strict = _run_table(
            "balance",
            _labelled(counts),
            {"targets": targets, "label_column": "motion_label", "unlabeled": "drop"},
            tmp_path,
        )
        assert {r["drop_reason"] for r in strict if r["balance_label"] == "static"} == {"unlabeled:static"}


def test_balance_is_stable_and_matches_caption_keywords(tmp_path):
    captions = ["A dog runs on the beach", "Two dogs play", "A cat sleeps", "A red car drives", "A doggy bag"]
    rows = [
        new_row(id=f"c{n}", source="x", start_s=0, end_s=1, caption=c) for n, c in enumerate(captions * 4)
    ]
    rows = [{**r, "id": f"c{n:02d}"} for n, r in enumerate(rows)]
    params = {
        "targets": {"animal": 0.5, "vehicle": 0.5},
        "keywords": {"animal": ["dog", "dogs", "cat"], "vehicle": ["car"]},
    }
    out = _run_table("balance", rows, params, tmp_path)
    labels = {r["id"]: r["balance_label"] for r in out}
    assert [labels[f"c{n:02d}"] for n in range(5)] == ["animal", "animal", "animal", "vehicle", None]
    kept = Counter(r["balance_label"] for r in out if r["kept"])
    assert kept == {"animal": 4, "vehicle": 4, None: 4}  # 12 animals, 4 cars -> 4 + 4; "doggy" is no dog
    again = _run_table("balance", list(reversed(rows)), params, tmp_path)
    assert sorted(r["id"] for r in again if r["kept"]) == sorted(r["id"] for r in out if r["kept"])


def test_balance_refuses_bad_targets_and_missing_columns(tmp_path):
    stage = resolve_stage("balance")
    for params, match in [
        ({"targets": {}, "label_column": "x"}, "targets"),
        ({"targets": {"a": float("nan")}, "label_column": "x"}, "targets"),
        ({"targets": {"a": -1.0}, "label_column": "x"}, "targets"),
        ({"targets": {"a": 1.0}}, "exactly one of label_column and keywords"),
        ({"targets": {"a": 1.0}, "keywords": {"a": "dog"}}, r"keywords\['a'\]"),
    ]:
        with pytest.raises(SkyReelsError, match=match):
            build_config(stage, params)
    with pytest.raises(SkyReelsError, match=r"label_column 'motion_label'.*motion"):
        _run_table(
            "balance",
            [new_row(id="a", source="x", start_s=0, end_s=1)],
            {"targets": {"a": 1.0}, "label_column": "motion_label"},
            tmp_path,
        )


# ---- images ------------------------------------------------------------------------------------


def _texture(seed, height, width):
    from skyreels_v4.data.testmedia import _texture

    return _texture(seed, height, width)


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    """Images with known truth, through scan_images -> image_quality -> image_dedup."""
    from PIL import Image

    from skyreels_v4.data import run_pipeline

    folder = tmp_path_factory.mktemp("images")
    base = _texture(1, 96, 128)
    Image.fromarray(base).save(folder / "a.png")
    Image.fromarray(base).save(folder / "a_exact.png")  # same pixels, another file
    Image.fromarray(base).save(folder / "a_jpeg.jpg", quality=85)  # near duplicate: lossy copy
    Image.fromarray(base[::2, ::2].copy()).save(folder / "a_small.png")  # near duplicate, smaller
    Image.fromarray(_texture(2, 96, 128)).save(folder / "b.png")
    Image.fromarray(_texture(3, 40, 128)).save(folder / "narrow.png")  # short side 40 < 48
    Image.fromarray(_texture(4, 64, 256)).save(folder / "wide.png")  # aspect 4 > 3
    (folder / "broken.png").write_bytes(b"not a png")
    pipeline = folder.parent / "images.yaml"
    pipeline.write_text(
        "stages:\n  - stage: scan_images\n  - stage: image_quality\n    params: {min_short_side: 48}\n"
        "  - stage: image_dedup\n"
    )
    out = tmp_path_factory.mktemp("images_out")
    rows = run_pipeline(pipeline, input_dir=folder, output_dir=out, progress=False)
    return {r["id"]: r for r in rows}


def test_image_filters_and_duplicates(image_run):
    rows = image_run
    decisions = {k: (r["kept"], r["dropped_by"], r["drop_reason"]) for k, r in rows.items()}
    assert decisions["b"] == (True, None, None)
    # of a duplicate group the largest image is kept, ties broken by id
    assert decisions["a"] == (True, None, None)
    assert decisions["a_exact"] == (False, "image_dedup", "exact_duplicate_of:a")
    assert decisions["a_jpeg"] == (False, "image_dedup", "near_duplicate_of:a")
    assert decisions["a_small"] == (False, "image_dedup", "near_duplicate_of:a")
    assert decisions["narrow"] == (False, "image_quality", "short_side<48")
    assert decisions["wide"] == (False, "image_quality", "aspect")
    assert decisions["broken"][:2] == (False, "image_quality")
    assert decisions["broken"][2].startswith("unreadable")
    assert (rows["wide"]["width"], rows["wide"]["height"], rows["wide"]["aspect"]) == (256, 64, 4.0)
    assert rows["a"]["pixel_sha256"] == rows["a_exact"]["pixel_sha256"] != rows["a_jpeg"]["pixel_sha256"]


def _embedded(vectors):
    return [
        new_row(
            id=f"i{n:02d}",
            source=f"i{n:02d}.png",
            start_s=0,
            end_s=0,
            embedding=base64.b64encode(np.asarray(v, np.float32).tobytes()).decode("ascii"),
        )
        for n, v in enumerate(vectors)
    ]


def test_cluster_balance_caps_every_cluster_to_the_smallest(tmp_path):
    rng = np.random.default_rng(0)
    centres = np.array([[10.0, 0, 0], [0, 10.0, 0], [0, 0, 10.0]])
    sizes = [9, 5, 3]
    points = np.concatenate(
        [c + 0.1 * rng.standard_normal((s, 3)) for c, s in zip(centres, sizes, strict=True)]
    )
    rows = _embedded(points)
    out = _run_table("cluster_balance", rows, {"num_clusters": 3}, tmp_path)
    truth = {f"i{n:02d}": int(np.argmax(points[n])) for n in range(len(points))}
    clusters: dict[int, set[int]] = {}
    for row in out:
        clusters.setdefault(row["cluster"], set()).add(truth[row["id"]])
    assert all(len(v) == 1 for v in clusters.values()) and len(clusters) == 3  # k-means found the blobs
    kept = Counter(truth[r["id"]] for r in out if r["kept"])
    assert kept == {0: 3, 1: 3, 2: 3}
    assert {r["drop_reason"].split(":")[0] for r in out if not r["kept"]} == {"over_cluster_share"}
    assert sum(not r["kept"] for r in out) == 6 + 2


def test_category_matching_with_a_matcher(tmp_path):
    """A deterministic matcher (similarity = mean colour channel) labels solid images exactly."""
    from PIL import Image

    for name, colour in {
        "r": (250, 10, 10),
        "g": (10, 250, 10),
        "b": (10, 10, 250),
        "grey": (90, 90, 90),
    }.items():
        Image.fromarray(np.full((32, 32, 3), colour, np.uint8)).save(tmp_path / f"{name}.png")
    stage = resolve_stage("match_category")
    config = build_config(
        stage,
        {
            "categories": {"red": "red", "green": "green", "blue": "blue"},
            "matcher": "tests_channel_matcher:ChannelMatcher",
            "min_similarity": 0.5,
        },
    )
    context = StageContext(input_dir=tmp_path, output_dir=tmp_path)
    results = {
        name: stage.fn(new_row(id=name, source=f"{name}.png", start_s=0, end_s=0), config, context)
        for name in ("r", "g", "b", "grey")
    }
    assert {k: v.values["concept"] for k, v in results.items() if k != "grey"} == {
        "r": "red",
        "g": "green",
        "b": "blue",
    }
    assert results["r"].values["concept_similarity"] == pytest.approx(250 / 255)
    assert results["grey"].drop == "no_category(similarity<0.5)"
    with pytest.raises(SkyReelsError, match="matcher"):
        build_config(stage, {"categories": {"red": "red"}})
    with pytest.raises(SkyReelsError, match="categories"):
        build_config(stage, {"categories": {"red": ""}, "matcher": "x:y"})


class ChannelMatcher:
    """similarity(text) = the mean of the colour channel the text names, in [0, 1]."""

    def similarity(self, frames, texts):
        means = np.asarray(frames, np.float64).mean(axis=(0, 1, 2)) / 255
        return np.array([means[["red", "green", "blue"].index(t)] for t in texts])


class NanMatcher:
    def similarity(self, frames, texts):
        return np.full(len(texts), np.nan)


@pytest.fixture(autouse=True)
def _matchers_importable(monkeypatch):
    import sys
    import types

    module = types.ModuleType("tests_channel_matcher")
    module.ChannelMatcher, module.NanMatcher = ChannelMatcher, NanMatcher
    monkeypatch.setitem(sys.modules, "tests_channel_matcher", module)


def test_image_and_table_stages_refuse_bad_input(tmp_path):
    from PIL import Image

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(tmp_path / "x.png")
    context = StageContext(input_dir=tmp_path, output_dir=tmp_path)
    stage = resolve_stage("match_category")
    config = build_config(
        stage, {"categories": {"red": "red"}, "matcher": "tests_channel_matcher:NanMatcher"}
    )
    with pytest.raises(NonFiniteError, match="clip 'x'"):
        stage.fn(new_row(id="x", source="x.png", start_s=0, end_s=0), config, context)
    row = new_row(id="x", source="x.png", start_s=0, end_s=0)
    with pytest.raises(SkyReelsError, match=r"clip 'x' has no column 'pixel_sha256'.*image_quality"):
        _run_table("image_dedup", [{**row, "width": 1, "height": 1}], {}, tmp_path)
    with pytest.raises(SkyReelsError, match=r"clip 'x' has no column 'embedding'.*image_quality"):
        _run_table("cluster_balance", [row], {}, tmp_path)
    with pytest.raises(SkyReelsError, match=r"'embedding' of clip 'x': expected base64"):
        _run_table("cluster_balance", [{**row, "embedding": "%%%"}], {}, tmp_path)
    nan = base64.b64encode(np.array([np.nan, 1.0], np.float32).tobytes()).decode()
    with pytest.raises(NonFiniteError, match=r"'embedding' of clip 'x'"):
        _run_table("cluster_balance", [{**row, "embedding": nan}], {}, tmp_path)
    with pytest.raises(SkyReelsError, match=r"clip 'x' has no column 'phash' or 'embedding'.*fingerprint"):
        _run_table("dedup", [row], {}, tmp_path)
    from skyreels_v4.data.images import read_image

    (tmp_path / "bad.png").write_bytes(b"junk")
    with pytest.raises(FileFormatError, match=r"bad\.png"):
        read_image(tmp_path / "bad.png")
