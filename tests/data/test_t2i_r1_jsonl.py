"""Loading the T2I-R1 JSONL prompt file: validation with file:line errors, and the real file."""

import json
from collections import Counter
from pathlib import Path

import pytest

from t2ir1.data.records import RecordError, SpatialInfo
from t2ir1.data.t2i_r1 import load_t2i_r1_jsonl

REAL_FILE = (
    Path(__file__).parents[2] / ".." / "shared" / "data" / "t2i-r1" / "geneval_and_t2i_data_final.jsonl"
)

ROWS = [
    {"prompt": "a photo of a car below a zebra", "nouns": ["car", "zebra"],
     "spatial_info": {"obj1": "car", "obj2": "zebra", "locality": "below"}, "task_type": "spatial"},
    {"prompt": "a photo of four coasters", "nouns": ["coaster"],
     "numeracy_info": [{"obj_name": "coaster", "num": 4}], "task_type": "numeracy"},
    {"prompt": "a photo of a purple elephant and a blue teddy bear", "nouns": ["elephant", "teddy bear"],
     "attr_nouns": ["purple elephant", "blue teddy bear"], "task_type": "color"},
]  # fmt: skip


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_loads_records_with_line_ids(tmp_path):
    # A blank line 3 is skipped but still counts: the third row is on line 4.
    lines = [json.dumps(ROWS[0]), json.dumps(ROWS[1]), "", json.dumps(ROWS[2])]
    records = load_t2i_r1_jsonl(_write(tmp_path / "p.jsonl", lines))
    assert [r.prompt_id for r in records] == ["t2i_r1/1", "t2i_r1/2", "t2i_r1/4"]
    assert records[0].spatial_info == SpatialInfo("car", "zebra", "below")
    assert records[1].numeracy_info[0].num == 4
    assert records[2].attr_nouns == ("purple elephant", "blue teddy bear")
    assert records[2].task_type == "color"


def test_bad_row_names_file_and_line(tmp_path):
    bad = dict(ROWS[0], task_type="spatiall")
    path = _write(tmp_path / "bad.jsonl", [json.dumps(ROWS[1]), json.dumps(bad)])
    with pytest.raises(RecordError, match=r"bad\.jsonl:2: field 'task_type' is 'spatiall'"):
        load_t2i_r1_jsonl(path)


def test_bad_locality_names_line(tmp_path):
    bad = dict(ROWS[0], spatial_info={"obj1": "car", "obj2": "zebra", "locality": "behind"})
    path = _write(tmp_path / "loc.jsonl", [json.dumps(ROWS[0]), json.dumps(ROWS[1]), json.dumps(bad)])
    with pytest.raises(RecordError, match=r"loc\.jsonl:3: spatial_info\.locality 'behind'"):
        load_t2i_r1_jsonl(path)


def test_malformed_json_names_file_and_line(tmp_path):
    path = _write(tmp_path / "broken.jsonl", [json.dumps(ROWS[0]), '{"prompt": "a cat", "task_type": '])
    with pytest.raises(RecordError, match=r"broken\.jsonl:2: not valid JSON"):
        load_t2i_r1_jsonl(path)


def test_missing_file_says_how_to_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data\.source\.path=") as info:
        load_t2i_r1_jsonl(tmp_path / "nope.jsonl")
    assert "nope.jsonl" in str(info.value)


def test_empty_file_is_an_error(tmp_path):
    with pytest.raises(RecordError, match="holds no prompts"):
        load_t2i_r1_jsonl(_write(tmp_path / "empty.jsonl", [""]))


def test_relative_path_resolves_against_cwd(tmp_path, monkeypatch):
    _write(tmp_path / "rel.jsonl", [json.dumps(ROWS[0])])
    monkeypatch.chdir(tmp_path)
    assert load_t2i_r1_jsonl("rel.jsonl")[0].prompt == ROWS[0]["prompt"]


def test_real_training_file():
    if not REAL_FILE.is_file():
        pytest.skip(f"T2I-R1 training file not present at {REAL_FILE.resolve()}")
    records = load_t2i_r1_jsonl(REAL_FILE)
    # REFERENCE §4: 7,223 rows and these per-task counts.
    assert len(records) == 7223
    assert Counter(r.task_type for r in records) == {
        "spatial": 2195, "numeracy": 1172, "color": 879, "complex": 700,
        "non": 700, "texture": 695, "shape": 682, "object": 200,
    }  # fmt: skip
    assert sum(1 for r in records if r.task_type == "complex" and r.spatial_info is not None) == 185
    assert len({r.prompt_id for r in records}) == 7223


def test_relative_path_under_hydra_resolves_against_launch_dir(tmp_path, monkeypatch):
    # Hydra may chdir into the run's output folder; the path stays relative to where the run started.
    from hydra.conf import HydraConf
    from hydra.core.hydra_config import HydraConfig
    from omegaconf import OmegaConf

    launch, output = tmp_path / "launch", tmp_path / "outputs"
    launch.mkdir()
    output.mkdir()
    _write(launch / "rel.jsonl", [json.dumps(ROWS[1])])
    hydra_cfg = OmegaConf.create({"hydra": OmegaConf.structured(HydraConf)})
    hydra_cfg.hydra.runtime.cwd = str(launch)
    HydraConfig.instance().set_config(hydra_cfg)
    monkeypatch.chdir(output)
    try:
        assert load_t2i_r1_jsonl("rel.jsonl")[0].prompt == ROWS[1]["prompt"]
    finally:
        HydraConfig.instance().cfg = None
    assert not HydraConfig.initialized()
