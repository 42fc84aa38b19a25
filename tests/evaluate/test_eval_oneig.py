"""OneIG-Bench (EN): file readers, text and diversity math by hand, and the benchmark end to end
against a scripted judge (alignment with dependencies, OCR), DreamSim absent -> not computed."""

from __future__ import annotations

import json

import pytest
import torch
from chat_server import scripted_chat

from t2ir1.evaluate import run
from t2ir1.evaluate.base import BenchmarkFileError
from t2ir1.evaluate.harness import IMAGES_DIR, SCORES_JSONL
from t2ir1.evaluate.oneig import (
    mean_pairwise_distance,
    normalize_text,
    read_question_sets,
    reference_text,
    text_measures,
    text_score,
)

CSV = """category,id,prompt_en,type,prompt_length,class
Anime_Stylization,000,"1girl, anime, red hair","T, P",short,
General_Object,000,"A cozy boho bedroom for a toddler girl.",T,short,
Text_Rendering,000,"A poster that reads ""Hello World"" and ""Open 24 hours"".",T,short,
Knowledge_Reasoning,000,"The life cycle of a frog.",T,short,
"""
QD = {
    "anime": {"000": {"question": json.dumps({"1": "Is there a girl?", "2": "Does the girl have red hair?"}),
                      "dependency": json.dumps({"1": [0], "2": [1]})}},
    "object": {"000": {"question": json.dumps({"1": "Is there a bedroom?", "2": "Is the bedroom boho style?", "3": "Is the bed cozy?"}),
                       "dependency": json.dumps({"1": [0], "2": [1], "3": [0]})}},
    "human": {},
}  # fmt: skip
TEXT = """,id,prompt_en,text_content
0,000,"A poster","['Hello World', 'Open 24 hours']"
"""


def write_files(tmp_path):
    (tmp_path / "OneIG-Bench.csv").write_text(CSV, encoding="utf-8")
    qd = tmp_path / "Q_D"
    qd.mkdir()
    for name, content in QD.items():
        (qd / f"{name}.json").write_text(json.dumps(content), encoding="utf-8")
    (tmp_path / "text_content.csv").write_text(TEXT, encoding="utf-8")
    return (
        f"benchmark.csv_path={tmp_path / 'OneIG-Bench.csv'}",
        f"benchmark.qd_dir={qd}",
        f"benchmark.text_csv={tmp_path / 'text_content.csv'}",
    )


def test_text_math_by_hand():
    reference = reference_text("['Hello World', 'Open 24 hours']")
    assert normalize_text(reference) == "Hello World Open 24 hours"
    assert normalize_text('  Café, "24/7"!\n') == "Café 247"
    # one letter missing: distance 1, not exact, 4 of 5 reference words matched
    assert text_measures(reference, "Hello World! Open 24 hour") == {
        "ed": 1.0,
        "cr": 0.0,
        "matched_words": 4,
        "reference_words": 5,
    }
    assert text_measures(reference, "No text recognized")["ed"] == len("Hello World Open 24 hours")
    # 1 - min(100, ED) * (1 - CR) * (1 - WAC) / 100
    assert text_score(1.0, 0.0, 0.8) == pytest.approx(1 - 1 * 1 * 0.2 / 100)
    assert text_score(250.0, 0.5, 0.0) == pytest.approx(1 - 100 * 0.5 / 100)


def test_mean_pairwise_distance_by_hand():
    e = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0], [-1.0, 0.0]])
    # 1 - cos over the 6 pairs: (0,1) 1, (0,2) 0, (0,3) 2, (1,2) 1, (1,3) 1, (2,3) 2 -> 7 / 6
    assert mean_pairwise_distance(e) == pytest.approx(7 / 6)
    assert mean_pairwise_distance(e[:1]) != mean_pairwise_distance(e[:1])  # NaN for one image


def test_question_set_errors(tmp_path):
    qd = tmp_path / "Q_D"
    qd.mkdir()
    (qd / "object.json").write_text(
        json.dumps({"000": {"question": '{"1": "Is there a cat?"}', "dependency": '{"1": [2]}'}})
    )
    with pytest.raises(
        BenchmarkFileError, match=r"object\.json \[000\]: question 1 depends on unknown question\(s\) \[2\]"
    ):
        read_question_sets(qd, "object")
    with pytest.raises(BenchmarkFileError, match="anime.json does not exist"):
        read_question_sets(qd, "anime")


def _judge(system: str, user: str) -> str:
    if user.startswith("Transcribe"):
        return "Hello World! Open 24 hour"
    answers = {"Is there a girl?": "No", "Does the girl have red hair?": "Yes",
               "Is there a bedroom?": "Yes.", "Is the bedroom boho style?": "yes, it is", "Is the bed cozy?": "No."}  # fmt: skip
    return next(a for q, a in answers.items() if user.startswith(q))


def test_oneig_end_to_end(eval_cfg, tmp_path, judges):
    files = write_files(tmp_path)
    out = tmp_path / "run"
    with scripted_chat(_judge) as (url, seen):
        base = (
            "benchmark=oneig",
            "benchmark/judge=openai",
            f"benchmark.judge.base_url={url}",
            "benchmark.judge.max_retries=0",
            *files,
            f"out_dir={out}",
        )
        summary = run(eval_cfg(*base, f"benchmark.diversity.weights_dir={tmp_path / 'no-dreamsim'}"))
        # 4 tiles x (2 anime + 3 object questions) + 4 transcriptions; reasoning prompts ask nothing
        assert len(seen) == 4 * 5 + 4
        cats = summary["categories"]
        # anime: girl "no" zeroes "red hair" -> 0; object: (1 + 1 + 0) / 3 per tile; alignment = mean over prompts
        assert cats["alignment/anime"]["score"] == 0.0
        assert cats["alignment/object"]["score"] == pytest.approx(2 / 3)
        assert cats["alignment"]["score"] == pytest.approx(1 / 3) and cats["alignment"]["n"] == 2
        # text: every tile ED 1, CR 0, WAC 4/5 -> 1 - 1 * 1 * 0.2 / 100
        assert cats["text/ED"]["score"] == 1.0 and cats["text/WAC"]["score"] == pytest.approx(0.8)
        assert cats["text"]["score"] == pytest.approx(0.998)
        # DreamSim weights absent, reasoning and style without a maintained package: not computed, never 0
        for dimension in ("diversity", "reasoning", "style"):
            assert cats[dimension]["score"] is None
            assert summary["notes"][dimension].startswith("not computed")
        assert "lacks" in summary["notes"]["diversity"]
        # official layout: grids/<class>/<id>.png beside the singles
        assert (out / IMAGES_DIR / "grids" / "text" / "000.png").is_file()
        assert (out / IMAGES_DIR / "singles" / "reasoning" / "000_3.png").is_file()

        # the CLIP stand-in backend computes a per-prompt diversity from the same tiles
        clip = run(
            eval_cfg(
                *base,
                "generate=false",
                "benchmark.diversity.backend=clip",
                f"benchmark.diversity.clip_model_path={judges['clip']}",
                "benchmark.diversity.local_files_only=true",
            )
        )
    from PIL import Image

    from t2ir1.evaluate.judges import ClipJudge

    reference = ClipJudge(judges["clip"], local_files_only=True)
    reference.setup("cpu")
    values = []
    for cls in ("anime", "object", "text", "reasoning"):
        tiles = [
            Image.open(out / IMAGES_DIR / "singles" / cls / f"000_{k}.png").convert("RGB") for k in range(4)
        ]
        values.append(mean_pairwise_distance(reference.image_features(tiles)))
    assert clip["categories"]["diversity"]["score"] == pytest.approx(sum(values) / 4, abs=1e-5)
    assert clip["categories"]["alignment"]["score"] == pytest.approx(1 / 3)
    rows = [json.loads(line)["row"] for line in (out / SCORES_JSONL).read_text().splitlines()]
    assert {r["key"] for r in rows} >= {"anime_000", "object_000", "text_000", "reasoning_000"}
