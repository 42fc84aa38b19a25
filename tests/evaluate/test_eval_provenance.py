"""Provenance: judge identities without loading, and compare's refusal / loud warnings (no models needed)."""

from __future__ import annotations

import copy
import json

import pytest

from t2ir1.evaluate.provenance import file_hashes, model_provenance, sha256_text
from t2ir1.evaluate.report import compare_table

BASE = {
    "benchmark": "dpg",
    "categories": {"global": {"score": 80.0, "n": 4}, "entity": {"score": 70.0, "n": 4}},
    "overall": 75.0,
    "use_cot": True,
    "provenance": {
        "benchmark": "dpg",
        "files": {"/data/dpg_bench.csv": "ab" * 32},
        "judge": {"vqa": {"model": "Salesforce/blip-vqa-base", "kind": "blip_vqa", "revision": "abc123"}},
        "protocol": {"n_per_prompt": 4, "use_cot": True, "seed": 0, "cfg_weight": 5.0, "batch_size": 4},
        "scoring": {"question_template": "{question} Please answer 'Yes' or 'No' only."},
        "t2ir1_version": "0.1.0",
    },
}


def _runs(tmp_path, *edits):
    folders = []
    for index, edit in enumerate(edits):
        result = copy.deepcopy(BASE)
        result["run"] = f"run{index}"
        edit(result)
        folder = tmp_path / f"run{index}"
        folder.mkdir()
        (folder / "results.json").write_text(json.dumps(result))
        folders.append(folder)
    return folders


def test_compare_accepts_cot_and_speed_differences_silently(tmp_path):
    def baseline(r):
        r["use_cot"] = r["provenance"]["protocol"]["use_cot"] = False
        r["provenance"]["protocol"]["batch_size"] = 16

    table = compare_table(_runs(tmp_path, lambda r: None, baseline))
    assert "WARNING" not in table
    assert "| run0 | yes |" in table and "| run1 | no |" in table


def test_compare_refuses_different_judges(tmp_path):
    def other_judge(r):
        r["provenance"]["judge"]["vqa"]["model"] = "Qwen/Qwen2.5-VL-7B-Instruct"

    runs = _runs(tmp_path, lambda r: None, other_judge)
    with pytest.raises(
        ValueError,
        match=r"judge\.vqa\.model: run0='Salesforce/blip-vqa-base', run1='Qwen/Qwen2.5-VL-7B-Instruct'",
    ):
        compare_table(runs)
    table = compare_table(runs, allow_mismatch=True)
    assert "**WARNING: these runs are not directly comparable**" in table and "judge.vqa.model" in table


def test_compare_warns_on_protocol_and_missing_provenance(tmp_path):
    def cfg3(r):
        r["provenance"]["protocol"]["cfg_weight"] = 3.0

    table = compare_table(_runs(tmp_path, lambda r: None, cfg3, lambda r: r.pop("provenance")))
    assert "- protocol differs in cfg_weight: run0=5.0, run1=3.0" in table
    assert "no provenance recorded for ['run2']" in table


def test_model_provenance_and_file_hashes(tmp_path):
    folder = tmp_path / "judge"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "model.safetensors").write_bytes(b"1234")
    info = model_provenance(str(folder), kind="x")
    assert info["config_sha256"] == sha256_text("{}") and info["kind"] == "x"
    assert info["files_fingerprint"] == sha256_text("config.json 2\nmodel.safetensors 4")[:16]
    # a hub id that is not in the local cache: no network call, no revision
    assert model_provenance("nobody/not-a-cached-model")["revision"] is None
    hashes = file_hashes([folder / "config.json", tmp_path / "absent.csv"])
    assert hashes == {str(folder / "config.json"): sha256_text("{}")}
