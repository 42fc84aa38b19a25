"""The harness on ShapeWorld-Bench with the tiny policy: layout, resume, cached and repeatable scores, compare."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from t2ir1.evaluate import run
from t2ir1.evaluate.harness import GENERATIONS_JSONL, IMAGES_DIR, RESULTS_JSON, SCORES_JSONL, build_benchmark
from t2ir1.evaluate.report import compare_table
from t2ir1.shapeworld.prompts import scene_for
from t2ir1.shapeworld.render import render


def _lines(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_generate_score_resume_and_repeat(eval_cfg, tmp_path):
    out = tmp_path / "run"
    cfg = eval_cfg("benchmark=shapeworld", "benchmark.num_records=null", "limit=3", "benchmark.n_per_prompt=2", f"out_dir={out}")
    first = run(cfg)
    images = sorted((out / IMAGES_DIR).rglob("*.png"))
    # 3 prompts x 2 images in GenEval's layout <key>/samples/<sample>.png
    assert [p.relative_to(out / IMAGES_DIR).as_posix() for p in images] == [
        f"{k:05d}/samples/{s:04d}.png" for k in range(3) for s in range(2)
    ]
    assert first["n_images"] == 6 and first["use_cot"] is True
    assert len(_lines(out / GENERATIONS_JSONL)) == 6
    assert all(isinstance(row["cot"], str) for row in _lines(out / GENERATIONS_JSONL))
    saved = json.loads((out / RESULTS_JSON).read_text())
    assert saved["categories"].keys() == first["categories"].keys()

    # resume: a deleted image is generated again, identical to the first time (per-prompt seeds)
    victim = out / IMAGES_DIR / "00001" / "samples" / "0001.png"
    before = victim.read_bytes()
    victim.unlink()
    second = run(cfg)
    assert victim.read_bytes() == before
    assert len(_lines(out / GENERATIONS_JSONL)) == 7  # only the missing image was written
    assert second["categories"] == first["categories"]

    # scoring again from scratch gives the same rows, and the cache holds one row per image
    cached = {e["path"]: e["row"] for e in _lines(out / SCORES_JSONL)}
    third = run(
        eval_cfg(
            "benchmark=shapeworld",
            "limit=3",
            "benchmark.n_per_prompt=2", "benchmark.num_records=null",
            f"out_dir={out}",
            "score.rescore=true",
        )
    )
    rescored = {e["path"]: e["row"] for e in _lines(out / SCORES_JSONL)}
    assert rescored == cached and len(rescored) == 6
    assert third["overall"] == first["overall"]


def test_perfect_images_score_one_and_blank_images_zero(eval_cfg, tmp_path):
    """Ground-truth renders of the held-out scenes are all correct; empty canvases are all wrong."""
    cfg = eval_cfg(
        "benchmark=shapeworld", "benchmark.num_records=null", "generate=false", "benchmark.n_per_prompt=1", f"out_dir={tmp_path / 'gt'}"
    )
    benchmark, _, _ = build_benchmark(cfg.benchmark)
    items = benchmark.load_items()
    # the held-out texts: 4 object, 40 two_object, 14 counting, 4 colors, 40 position, 40 color_attr
    assert len(items) == 142 and {i.category for i in items} == set(benchmark.categories)
    for item in items:
        path = benchmark.image_path(tmp_path / "gt" / IMAGES_DIR, item, 0)
        path.parent.mkdir(parents=True, exist_ok=True)
        render(scene_for(item.meta["record"], item.index)).save(path)
    summary = run(cfg)
    assert summary["overall"] == 1.0
    assert all(c["score"] == 1.0 for c in summary["categories"].values())

    blank = eval_cfg(
        "benchmark=shapeworld",
        "generate=false",
        "benchmark.n_per_prompt=1", "benchmark.num_records=null",
        "limit=6",
        f"out_dir={tmp_path / 'blank'}",
    )
    for item in items[:6]:
        path = benchmark.image_path(tmp_path / "blank" / IMAGES_DIR, item, 0)
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((64, 64, 3), 255, np.uint8)).save(path)
    assert run(blank)["overall"] == 0.0


def test_without_cot_and_compare(eval_cfg, tmp_path):
    runs = []
    for cot in ("true", "false"):
        out = tmp_path / f"cot-{cot}"
        summary = run(
            eval_cfg(
                "benchmark=shapeworld",
                "limit=2",
                "benchmark.n_per_prompt=1", "benchmark.num_records=null",
                f"use_cot={cot}",
                f"out_dir={out}",
            )
        )
        assert summary["use_cot"] is (cot == "true")
        runs.append(out)
    # no CoT: the generation log says so
    assert all(row["cot"] is None for row in _lines(runs[1] / GENERATIONS_JSONL))
    table = compare_table(runs)
    assert "WARNING" not in table  # CoT on/off is what the comparison is for, not a protocol mismatch
    lines = table.splitlines()
    assert lines[0] == "**shapeworld**"
    assert lines[2].startswith("| run | CoT | object |") and lines[2].endswith("| overall |")
    assert lines[4].startswith("| cot-true | yes |") and lines[5].startswith("| cot-false | no |")
    result = run(eval_cfg(f"compare=[{runs[0]},{runs[1]}]", f"compare_out={tmp_path / 'cmp.md'}"))
    assert result["table"] == table and (tmp_path / "cmp.md").read_text().strip() == table
