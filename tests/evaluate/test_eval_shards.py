"""Sharded evaluation: disjoint prompt shards cover the items, per-rank files merge, and two gloo
processes give the same images, score rows and table as one process."""

from __future__ import annotations

import json

import pytest

from t2ir1.evaluate import run
from t2ir1.evaluate.base import EvalItem
from t2ir1.evaluate.harness import (
    GENERATIONS_JSONL,
    IMAGES_DIR,
    RESULTS_JSON,
    SCORES_JSONL,
    merge_rank_files,
    shard,
)


def test_shards_are_disjoint_and_cover():
    items = [EvalItem(key=str(i), prompt=f"p{i}", category="c", index=i) for i in range(7)]
    parts = [shard(items, r, 3) for r in range(3)]
    assert [[i.key for i in p] for p in parts] == [["0", "3", "6"], ["1", "4"], ["2", "5"]]
    assert sorted(i.key for p in parts for i in p) == sorted(i.key for i in items)
    assert shard(items, 0, 1) == items


def test_rank_files_merge(tmp_path):
    (tmp_path / SCORES_JSONL).write_text('{"a": 0}\n')
    (tmp_path / "scores.rank0.jsonl").write_text('{"b": 1}\n')
    (tmp_path / "scores.rank1.jsonl").write_text('{"c": 2}\n')
    (tmp_path / "generations.rank1.jsonl").write_text('{"g": 1}\n')
    merge_rank_files(tmp_path)
    assert (tmp_path / SCORES_JSONL).read_text().splitlines() == ['{"a": 0}', '{"b": 1}', '{"c": 2}']
    assert (tmp_path / GENERATIONS_JSONL).read_text() == '{"g": 1}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == [GENERATIONS_JSONL, SCORES_JSONL]


@pytest.mark.slow
def test_two_processes_match_one(eval_cfg, tmp_path):
    common = ("benchmark=shapeworld", "benchmark.num_records=null", "limit=5", "benchmark.n_per_prompt=2")
    one = run(eval_cfg(*common, f"out_dir={tmp_path / 'one'}"))
    two = run(eval_cfg(*common, "processes=2", f"out_dir={tmp_path / 'two'}"))
    images = sorted(
        p.relative_to(tmp_path / "one").as_posix() for p in (tmp_path / "one" / IMAGES_DIR).rglob("*.png")
    )
    assert len(images) == 10
    for rel in images:
        assert (tmp_path / "two" / rel).read_bytes() == (tmp_path / "one" / rel).read_bytes(), rel
    rows = {}
    for name in ("one", "two"):
        entries = [json.loads(line) for line in (tmp_path / name / SCORES_JSONL).read_text().splitlines()]
        rows[name] = {e["path"]: e["row"] for e in entries}
        assert len(rows[name]) == 10
        assert not list((tmp_path / name).glob("*.rank*.jsonl"))  # merged away
        assert len((tmp_path / name / GENERATIONS_JSONL).read_text().splitlines()) == 10
    assert rows["two"] == rows["one"]
    assert two["categories"] == one["categories"] and two["overall"] == one["overall"]
    saved = json.loads((tmp_path / "two" / RESULTS_JSON).read_text())
    assert saved["provenance"]["protocol"]["n_per_prompt"] == 2
