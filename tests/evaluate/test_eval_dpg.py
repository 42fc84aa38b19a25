"""DPG-Bench: CSV reading errors, the dependency rule and the official aggregation (hand-worked)."""

from __future__ import annotations

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
