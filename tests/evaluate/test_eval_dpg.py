"""DPG-Bench: CSV reading errors, the dependency rule and the official aggregation (hand-worked)."""

from __future__ import annotations

import json

import pytest

from t2ir1.evaluate.base import BenchmarkFileError
from t2ir1.evaluate.dpg import apply_dependencies, read_dpg_questions, summarize_dpg

CSV = """item_id,proposition_id,dependency,category_broad,category_detailed,tuple,question_natural_language
a,1,0,entity,whole,entity - whole (cat),Is there a cat?
a,2,1,attribute,color,attribute - color (cat; black),Is the cat black?
a,3,"1,2",relation,spatial,relation - spatial (cat; sofa; on),Is the black cat on the sofa?
b,1,0,global,global,global - (photo),Is this a photo?
b,2,0,other,count,other - count (dog; 2),Are there two dogs?
"""


def _write(tmp_path, text):
    p = tmp_path / "dpg_bench.csv"
    p.write_text(text, encoding="utf-8")
    return p


def test_read_questions(tmp_path):
    qs = read_dpg_questions(_write(tmp_path, CSV))
    assert sorted(qs) == ["a", "b"]
    assert [q.parents for q in qs["a"]] == [(), (1,), (1, 2)]
    assert qs["a"][2].category == "relation"


def test_read_errors_name_file_and_line(tmp_path):
    with pytest.raises(BenchmarkFileError, match="does not exist"):
        read_dpg_questions(tmp_path / "nope.csv")
    bad = CSV.replace("b,2,0,other", "b,2,0,weird")
    with pytest.raises(BenchmarkFileError, match=r"dpg_bench.csv:6: category_broad 'weird'"):
        read_dpg_questions(_write(tmp_path, bad))
    orphan = CSV.replace('a,3,"1,2"', 'a,3,"1,7"')
    with pytest.raises(BenchmarkFileError, match=r"unknown id\(s\) \[7\]"):
        read_dpg_questions(_write(tmp_path, orphan))


def test_failed_parent_zeroes_children(tmp_path):
    qs = read_dpg_questions(_write(tmp_path, CSV))["a"]
    # judge says: no cat, but yes black cat, yes on the sofa -> children count 0
    assert apply_dependencies(qs, {1: 0.0, 2: 1.0, 3: 1.0}) == {1: 0.0, 2: 0.0, 3: 0.0}
    # cat yes, not black: question 3 depends on 2 -> 0
    assert apply_dependencies(qs, {1: 1.0, 2: 0.0, 3: 1.0}) == {1: 1.0, 2: 0.0, 3: 0.0}


def test_summarize_hand_worked(tmp_path):
    qs = read_dpg_questions(_write(tmp_path, CSV))
    answers = {
        # two tiles of item a: all yes (1, 1, 1) -> 1; parent fails (0, 0, 0 after rule) -> 0
        "a": [{1: 1.0, 2: 1.0, 3: 1.0}, {1: 0.0, 2: 1.0, 3: 1.0}],
        # two tiles of item b: (1, 0) -> 0.5 ; (1, 1) -> 1
        "b": [{1: 1.0, 2: 0.0}, {1: 1.0, 2: 1.0}],
    }
    out = summarize_dpg(qs, answers)
    # per prompt: a = (1 + 0) / 2 = 0.5, b = (0.5 + 1) / 2 = 0.75 -> overall 62.5
    # (without the dependency rule tile 2 of a would be 2/3 and a = 0.8333, overall 79.17)
    assert out["overall"] == pytest.approx(62.5)
    assert out["entity"] == pytest.approx(50.0)
    assert out["attribute"] == pytest.approx(50.0)
    assert out["relation"] == pytest.approx(50.0)
    assert out["global"] == pytest.approx(100.0)
    assert out["other"] == pytest.approx(50.0)
    with pytest.raises(KeyError, match="item b"):
        summarize_dpg(qs, {"a": answers["a"]})


# ----------------------------------------------------------------------------- end to end
def _bench_files(tmp_path):
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "a.txt").write_text("A black cat on a sofa.\n", encoding="utf-8")
    (prompts / "b.txt").write_text("A photo of two dogs.", encoding="utf-8")
    return prompts, _write(tmp_path, CSV)


def _scripted(system: str, user: str) -> str:
    # item a: no cat, yet "black" and "on the sofa" answered yes -> the dependency rule zeroes both
    # item b: a photo, but not two dogs
    answers = {"Is there a cat?": "No.", "Is the cat black?": "Yes", "Is the black cat on the sofa?": "**Yes**, it is",
               "Is this a photo?": "yes", "Are there two dogs?": "No, there is one dog."}  # fmt: skip
    return next(a for q, a in answers.items() if user.startswith(q))


def test_dpg_end_to_end_with_a_chat_judge(eval_cfg, tmp_path):
    from chat_server import scripted_chat
    from PIL import Image

    from t2ir1.evaluate import run
    from t2ir1.evaluate.harness import IMAGES_DIR, RESULTS_JSON

    prompts, csv_path = _bench_files(tmp_path)
    out = tmp_path / "run"
    with scripted_chat(_scripted) as (url, seen):
        overrides = (
            "benchmark=dpg",
            "benchmark/judge=openai",
            f"benchmark.judge.base_url={url}",
            "benchmark.judge.model=scripted-vlm",
            "benchmark.judge.max_retries=0",
            f"benchmark.prompts_dir={prompts}",
            f"benchmark.csv_path={csv_path}",
            f"out_dir={out}",
        )
        summary = run(eval_cfg(*overrides))
        # 2 prompts x 4 tiles, one request per (tile, question): 4 x 3 + 4 x 2
        assert len(seen) == 20
        assert (
            seen[0]["messages"][1]["content"][0]["text"]
            == "Is there a cat? Please answer 'Yes' or 'No' only."
        )
        # per prompt: a = 0 (every question zeroed or no), b = 1/2 -> overall (0 + 50) / 2
        assert summary["overall"] == pytest.approx(25.0)
        cats = summary["categories"]
        assert {c: v["score"] for c, v in cats.items()} == pytest.approx(
            {"global": 100.0, "entity": 0.0, "attribute": 0.0, "relation": 0.0, "other": 0.0}
        )
        assert cats["entity"]["n"] == 4 and cats["global"]["n"] == 4
        # singles and the official 2x2 grid, tile k at row k // 2, column k % 2
        singles = [Image.open(out / IMAGES_DIR / "singles" / f"a_{k}.png").convert("RGB") for k in range(4)]
        grid = Image.open(out / IMAGES_DIR / "grids" / "a.png").convert("RGB")
        w, h = singles[0].size
        assert grid.size == (2 * w, 2 * h)
        assert grid.crop((w, h, 2 * w, 2 * h)).tobytes() == singles[3].tobytes()
        assert grid.crop((w, 0, 2 * w, h)).tobytes() == singles[1].tobytes()
        # provenance: judge endpoint + model, file hashes, protocol
        prov = json.loads((out / RESULTS_JSON).read_text())["provenance"]
        assert prov["judge"]["vqa"]["endpoint"] == url and prov["judge"]["vqa"]["model"] == "scripted-vlm"
        assert str(csv_path) in prov["files"] and prov["protocol"]["n_per_prompt"] == 4

        # only the grids on disk (official layout): singles are cut back out and score the same
        for path in (out / IMAGES_DIR / "singles").glob("*.png"):
            path.unlink()
        again = run(eval_cfg(*overrides, "generate=false", "score.rescore=true"))
        assert again["overall"] == pytest.approx(25.0) and len(seen) == 40
        assert (
            Image.open(out / IMAGES_DIR / "singles" / "a_3.png").convert("RGB").tobytes()
            == singles[3].tobytes()
        )


def test_dpg_with_the_tiny_blip_judge(eval_cfg, tmp_path, judges):
    """The local BLIP route: every answer is P(yes) > 0.5, and the row score applies the dependency rule."""
    from t2ir1.evaluate import run
    from t2ir1.evaluate.harness import SCORES_JSONL

    prompts, csv_path = _bench_files(tmp_path)
    out = tmp_path / "run"
    summary = run(
        eval_cfg(
            "benchmark=dpg",
            f"benchmark.judge.model_path={judges['blip']}",
            "benchmark.judge.local_files_only=true",
            f"benchmark.prompts_dir={prompts}",
            f"benchmark.csv_path={csv_path}",
            "limit=1",
            f"out_dir={out}",
        )
    )
    rows = [json.loads(line)["row"] for line in (out / SCORES_JSONL).read_text().splitlines()]
    assert len(rows) == 4
    for row in rows:
        p_yes = [float(t.split("=")[1]) for t in row["judge_outputs"]]
        raw = [row["answers"][str(k)] for k in (1, 2, 3)]
        assert raw == [float(p > 0.5) for p in p_yes]
        kept = [raw[0], raw[1] * raw[0], raw[2] * raw[0] * raw[1]]  # question 3 depends on 1 and 2
        assert row["score"] == pytest.approx(sum(kept) / 3)
    assert summary["overall"] == pytest.approx(100 * sum(r["score"] for r in rows) / 4)
    assert summary["provenance"]["judge"]["vqa"]["kind"] == "blip_vqa"


@pytest.mark.slow
def test_dpg_from_the_command_line(tmp_path, model_cache):
    """`python eval.py benchmark=dpg ...` end to end in a fresh process (the scripted judge serves it)."""
    import subprocess
    import sys
    from pathlib import Path

    from chat_server import scripted_chat

    root = Path(__file__).resolve().parents[2]
    prompts, csv_path = _bench_files(tmp_path)
    out = tmp_path / "cli"
    with scripted_chat(_scripted) as (url, seen):
        command = [
            sys.executable, "eval.py", "benchmark=dpg", "benchmark/judge=openai", f"benchmark.judge.base_url={url}",
            "benchmark.judge.max_retries=0", f"benchmark.prompts_dir={prompts}", f"benchmark.csv_path={csv_path}",
            "model=tiny", f"paths.cache_dir={model_cache}", "device=cpu", "generation.max_new_tokens=6",
            f"out_dir={out}", f"out_root={tmp_path / 'hydra'}",
        ]  # fmt: skip
        done = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert len(seen) == 20
    result = json.loads((out / "results.json").read_text())
    assert result["overall"] == pytest.approx(25.0) and result["model"] == "tiny"
    assert (out / "images" / "grids" / "b.png").is_file()
