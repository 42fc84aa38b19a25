"""GenEval++ and Imagine-Bench: checklist, answer parsing, per-image scores, and both end to end
against a scripted OpenAI-compatible judge on 127.0.0.1 (hand-worked expected tables)."""

from __future__ import annotations

import json

import pytest
from chat_server import scripted_chat

from t2ir1.evaluate import run
from t2ir1.evaluate.base import BenchmarkFileError
from t2ir1.evaluate.echo4o import geneval_pp_checklist, imagine_score, parse_correct, parse_imagine
from t2ir1.evaluate.harness import IMAGES_DIR, build_benchmark

GENEVAL_PP = [
    {"tag": "color_attr", "include": [{"class": "bus", "count": 1, "color": "brown"}, {"class": "truck", "count": 1, "color": "green"}], "prompt": "A photo of a brown bus and a green truck"},
    {"tag": "counting", "include": [{"class": "clock", "count": 3, "region": "left"}], "exclude": [{"class": "clock", "count": 4}], "prompt": "A photo of three clocks on the left"},
    {"tag": "counting", "include": [{"class": "cup", "count": 2, "size": "large", "color": "blue"}], "prompt": "A photo of two large blue cups"},
]  # fmt: skip
IMAGINE = [
    {"id": 1, "instruction": "A photo of a monkey with deep ocean blue fur.", "note": "blue fur", "type": "COLOR"},
    {"id": 7, "instruction": "A glass teapot made of ice.", "note": "ice material", "type": "MATERIAL"},
    {"id": 9, "instruction": "A cat and a dog made of clouds.", "note": "two cloud animals", "type": "Multi-Object"},
    {"id": 12, "instruction": "A car from the year 3000.", "note": "futuristic car", "type": "TIME"},
]  # fmt: skip


def test_checklist_by_hand():
    assert geneval_pp_checklist(GENEVAL_PP[0]) == (
        "This image should contain:\n- brown-colored 1 bus present in the image.\n- green-colored 1 truck present in the image."
    )
    assert geneval_pp_checklist(GENEVAL_PP[1]) == (
        "This image should contain:\n- 3 clocks located in the left part of the image.\n- No more than 3 clocks should appear."
    )
    assert geneval_pp_checklist(GENEVAL_PP[2]).endswith("- blue-colored large 2 cups present in the image.")


def test_answer_parsing():
    assert parse_correct('```json\n{"correct": 1, "reason": "all there"}\n```') == 1.0
    assert parse_correct('Verdict: {"correct": "0", "reason": "two clocks"}') == 0.0
    assert parse_correct('{"correct": 2}') is None and parse_correct("correct: 1") is None
    assert parse_correct('{"correct": true}') is None  # a bool is not the 0/1 the protocol asks for
    assert parse_imagine("Fantasy Fulfillment: 8\nReason: x\nIdentity Preservation: 6\nReason: y\n**Aesthetic Quality**: 7") == {
        "fantasy_fulfillment": 8.0, "identity_preservation": 6.0, "aesthetic_quality": 7.0}  # fmt: skip
    assert parse_imagine("Fantasy Fulfillment: 8\nIdentity Preservation: 6") is None
    assert parse_imagine("Fantasy Fulfillment: 11\nIdentity Preservation: 6\nAesthetic Quality: 7") is None
    assert imagine_score(8, 6, 7) == pytest.approx(0.8 * 6 + 0.2 * 7)  # 6.2


def test_file_errors(tmp_path, eval_cfg):
    meta = tmp_path / "Geneval++.jsonl"
    meta.write_text(json.dumps(GENEVAL_PP[0]) + "\n{broken\n")
    cfg = eval_cfg("benchmark=geneval_pp", f"benchmark.metadata={meta}")
    with pytest.raises(BenchmarkFileError, match=r"Geneval\+\+\.jsonl:2: not valid JSON"):
        build_benchmark(cfg.benchmark)[0].load_items()
    meta.write_text(json.dumps(GENEVAL_PP[0]) + "\n")
    txt = tmp_path / "Geneval++.txt"
    txt.write_text("A photo of something else\n")
    cfg = eval_cfg("benchmark=geneval_pp", f"benchmark.metadata={meta}", f"benchmark.prompts={txt}")
    with pytest.raises(BenchmarkFileError, match=r"Geneval\+\+\.txt:1: .* differs"):
        build_benchmark(cfg.benchmark)[0].load_items()
    imagine = tmp_path / "Imagine.jsonl"
    imagine.write_text(json.dumps({**IMAGINE[0], "type": "SMELL"}) + "\n")
    cfg = eval_cfg("benchmark=imagine", f"benchmark.metadata={imagine}")
    with pytest.raises(BenchmarkFileError, match=r"Imagine\.jsonl:1: type 'SMELL'"):
        build_benchmark(cfg.benchmark)[0].load_items()


def _geneval_pp_judge(system: str, user: str) -> str:
    if "brown bus" in user:
        return '```json\n{"correct": 1, "reason": "both there"}\n```'
    if "three clocks" in user:
        return '{"correct": 0, "reason": "two clocks"}'
    return "I cannot evaluate this image."


def test_geneval_pp_end_to_end(eval_cfg, tmp_path):
    meta, txt = tmp_path / "Geneval++.jsonl", tmp_path / "Geneval++.txt"
    meta.write_text("".join(json.dumps(r) + "\n" for r in GENEVAL_PP))
    txt.write_text("".join(r["prompt"] + "\n" for r in GENEVAL_PP))
    out = tmp_path / "run"
    with scripted_chat(_geneval_pp_judge) as (url, seen):
        summary = run(
            eval_cfg(
                "benchmark=geneval_pp",
                f"benchmark.judge.base_url={url}",
                "benchmark.judge.max_retries=0",
                f"benchmark.metadata={meta}",
                f"benchmark.prompts={txt}",
                f"out_dir={out}",
            )
        )
    assert sorted(p.name for p in (out / IMAGES_DIR).glob("*.png")) == ["1.png", "2.png", "3.png"]
    assert len(seen) == 3 and seen[0]["model"] == "gpt-4.1" and seen[0]["temperature"] == 0.0
    user = seen[1]["messages"][1]["content"][0]["text"]
    assert user == (
        "Instruction:\nA photo of three clocks on the left\n\nExpectation checklist:\nThis image should contain:\n"
        "- 3 clocks located in the left part of the image.\n- No more than 3 clocks should appear."
    )
    # color_attr: 1/1; counting: 0/1 (the unreadable answer is left out); overall = (1 + 0) / 2
    cats = summary["categories"]
    assert (
        cats["color_attr"]["score"] == 1.0 and cats["counting"]["score"] == 0.0 and cats["counting"]["n"] == 2
    )
    assert summary["overall"] == pytest.approx(0.5)
    assert summary["notes"]["unparsed judge answers"] == 1
    assert summary["provenance"]["judge"]["judge"] == {
        "kind": "openai_compatible", "endpoint": url, "model": "gpt-4.1", "temperature": 0.0}  # fmt: skip


def _imagine_judge(system: str, user: str) -> str:
    scores = {"monkey": (8, 6, 7), "teapot": (9, 9, 5), "cat and a dog": (4, 10, 10)}
    for key, (ff, ip, aq) in scores.items():
        if key in user:
            return f"Fantasy Fulfillment: {ff}\nReason: a.\nIdentity Preservation: {ip}\nReason: b.\nAesthetic Quality: {aq}\nReason: c."
    return "Fantasy Fulfillment: 5\nReason: no more scores"


def test_imagine_end_to_end_and_quirk(eval_cfg, tmp_path):
    meta = tmp_path / "Imagine.jsonl"
    meta.write_text("".join(json.dumps(r) + "\n" for r in IMAGINE))
    out = tmp_path / "run"
    with scripted_chat(_imagine_judge) as (url, seen):
        overrides = (
            "benchmark=imagine",
            f"benchmark.judge.base_url={url}",
            "benchmark.judge.max_retries=0",
            f"benchmark.metadata={meta}",
            f"out_dir={out}",
        )
        summary = run(eval_cfg(*overrides))
        # per image: COLOR 0.8*6 + 0.2*7 = 6.2; MATERIAL 0.8*9 + 0.2*5 = 8.2; Multi-Object 0.8*4 + 0.2*10 = 5.2; TIME unreadable
        cats = summary["categories"]
        assert cats["Attribute shift"]["score"] == pytest.approx(6.2)
        assert cats["Hybridization"]["score"] == pytest.approx(8.2)
        assert cats["Multi-Object"]["score"] == pytest.approx(5.2)
        assert cats["Spatiotemporal"]["n"] == 1 and summary["notes"]["unparsed judge answers"] == 1
        # (3 * 6.2 + 2 * 8.2 + 2 * 5.2) / (3 + 2 + 2), Spatiotemporal absent
        assert summary["overall"] == pytest.approx(45.4 / 7)
        assert 'EXPLANATION: "blue fur"' in seen[0]["messages"][1]["content"][0]["text"]
        # the official overall leaves Multi-Object out: (3 * 6.2 + 2 * 8.2) / 5
        quirk = run(eval_cfg(*overrides, "benchmark.reference_quirks=true"))
        assert quirk["overall"] == pytest.approx(7.0)
