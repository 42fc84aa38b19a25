"""GenEval: metadata format and errors, the relation rule, the six tag rules, and a tiny end-to-end run."""

from __future__ import annotations

import json

import pytest

from t2ir1.evaluate import run
from t2ir1.evaluate.base import BenchmarkFileError
from t2ir1.evaluate.geneval import evaluate_metadata, group_detections, read_metadata, relative_position
from t2ir1.evaluate.harness import IMAGES_DIR, SCORES_JSONL
from t2ir1.rewards.compositional import Detection

# One row per tag, in GenEval's real format (prompts/evaluation_metadata.jsonl).
ROWS = [
    {"tag": "single_object", "include": [{"class": "cat", "count": 1}], "prompt": "a photo of a cat"},
    {
        "tag": "two_object",
        "include": [{"class": "cat", "count": 1}, {"class": "dog", "count": 1}],
        "prompt": "a photo of a cat and a dog",
    },
    {
        "tag": "counting",
        "include": [{"class": "dog", "count": 2}],
        "exclude": [{"class": "dog", "count": 3}],
        "prompt": "a photo of two dogs",
    },
    {
        "tag": "colors",
        "include": [{"class": "cat", "count": 1, "color": "red"}],
        "prompt": "a photo of a red cat",
    },
    {
        "tag": "position",
        "include": [{"class": "dog", "count": 1}, {"class": "cat", "count": 1, "position": ["left of", 0]}],
        "prompt": "a photo of a cat left of a dog",
    },
    {
        "tag": "color_attr",
        "include": [
            {"class": "cat", "count": 1, "color": "red"},
            {"class": "dog", "count": 1, "color": "blue"},
        ],
        "prompt": "a photo of a red cat and a blue dog",
    },
]


def write_metadata(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def det(label, box, score=0.9):
    return Detection(label, tuple(float(v) for v in box), score)


def test_read_metadata_and_errors_name_file_and_line(tmp_path):
    rows = read_metadata(write_metadata(tmp_path / "meta.jsonl", ROWS))
    assert [r["tag"] for r in rows] == [
        "single_object",
        "two_object",
        "counting",
        "colors",
        "position",
        "color_attr",
    ]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        json.dumps(ROWS[0]) + "\n" + '{"tag": "colors", "include": [{"class": "cat"}], "prompt": "x"}\n'
    )
    with pytest.raises(BenchmarkFileError, match=r"bad\.jsonl:2: include\[0\]\.count"):
        read_metadata(bad)
    bad.write_text(json.dumps(ROWS[0]) + "\n\n{not json\n")
    with pytest.raises(BenchmarkFileError, match=r"bad\.jsonl:3: not valid JSON"):
        read_metadata(bad)
    bad.write_text(
        json.dumps({**ROWS[4], "include": [{"class": "cat", "count": 1, "position": ["left of", 0]}]}) + "\n"
    )
    with pytest.raises(BenchmarkFileError, match=r"bad\.jsonl:1: include\[0\]\.position"):
        read_metadata(bad)
    with pytest.raises(BenchmarkFileError, match="does not exist"):
        read_metadata(tmp_path / "missing.jsonl")


def test_relative_position_by_hand():
    # A centred at (10, 50), B at (90, 50), both 20 wide: offset (-80, 0); shrink 0.1 * (20 + 20) = 4 -> (-76, 0);
    # normalised by |offset| = 80 -> dx = -0.95 < -0.5: "left of"
    assert relative_position((0, 40, 20, 60), (80, 40, 100, 60), 0.1) == {"left of"}
    assert relative_position((80, 40, 100, 60), (0, 40, 20, 60), 0.1) == {"right of"}
    # A above B (smaller y): offset (0, -80) -> "above"
    assert relative_position((40, 0, 60, 20), (40, 80, 60, 100), 0.1) == {"above"}
    # diagonal, offset (-60, -60): shrunk (-56, -56) / 84.85 = -0.66 each -> both relations
    assert relative_position((0, 0, 20, 20), (60, 60, 80, 80), 0.1) == {"left of", "above"}
    # overlapping centres within the margin: no relation
    assert relative_position((0, 0, 50, 50), (5, 0, 55, 50), 0.1) == set()


def test_the_six_tag_rules():
    def colors(mapping):
        return lambda classname, objs: [mapping[o.box] for o in objs]

    cat, dog, dog2, dog3 = (0, 40, 20, 60), (80, 40, 100, 60), (40, 0, 60, 20), (40, 80, 60, 100)
    none = colors({})
    single, two, counting, color, position, attr = ROWS
    assert evaluate_metadata(single, {"cat": [det("cat", cat)]}, none)[0]
    assert not evaluate_metadata(single, {}, none)[0]
    assert evaluate_metadata(two, {"cat": [det("cat", cat)], "dog": [det("dog", dog)]}, none)[0]
    assert not evaluate_metadata(two, {"cat": [det("cat", cat)]}, none)[0]
    two_dogs = [det("dog", dog), det("dog", dog2)]
    assert evaluate_metadata(counting, {"dog": two_dogs}, none)[0]
    ok, reasons = evaluate_metadata(counting, {"dog": [*two_dogs, det("dog", dog3)]}, none)
    assert not ok and reasons == ["expected dog<3, found 3"]  # the exclude clause
    assert evaluate_metadata(color, {"cat": [det("cat", cat)]}, colors({cat: "red"}))[0]
    assert not evaluate_metadata(color, {"cat": [det("cat", cat)]}, colors({cat: "blue"}))[0]
    assert evaluate_metadata(position, {"cat": [det("cat", cat)], "dog": [det("dog", dog)]}, none)[0]
    ok, reasons = evaluate_metadata(position, {"cat": [det("cat", dog)], "dog": [det("dog", cat)]}, none)
    assert not ok and "expected cat left of target" in reasons[0]
    ok, reasons = evaluate_metadata(position, {"cat": [det("cat", cat)]}, none)
    assert not ok and reasons == ["expected dog>=1, found 0", "no target for cat to be left of"]
    both = {"cat": [det("cat", cat)], "dog": [det("dog", dog)]}
    assert evaluate_metadata(attr, both, colors({cat: "red", dog: "blue"}))[0]
    assert not evaluate_metadata(attr, both, colors({cat: "red", dog: "red"}))[0]


def test_group_detections_threshold_order_and_nms():
    found = [
        det("dog", (0, 0, 10, 10), 0.5),
        det("dog", (1, 0, 11, 10), 0.8),
        det("dog", (50, 50, 60, 60), 0.4),
        det("cat", (0, 0, 5, 5), 0.2),
    ]
    grouped = group_detections(found, threshold=0.3, max_objects=16, max_overlap=0.5)
    # cat is below the threshold; the two overlapping dogs (IoU 9/11 = 0.82 > 0.5) merge into the 0.8 one
    assert list(grouped) == ["dog"] and [d.score for d in grouped["dog"]] == [0.8, 0.4]
    assert [d.score for d in group_detections(found, 0.3, 16, 1.0)["dog"]] == [
        0.8,
        0.5,
        0.4,
    ]  # GenEval: no NMS
    assert [d.score for d in group_detections(found, 0.3, 1, 1.0)["dog"]] == [0.8]  # max_objects


def test_geneval_end_to_end_on_tiny_models(eval_cfg, judges, tmp_path):
    meta = write_metadata(tmp_path / "evaluation_metadata.jsonl", ROWS)
    out = tmp_path / "run"
    overrides = (
        "benchmark=geneval",
        f"benchmark.metadata={meta}",
        "benchmark.n_per_prompt=2",
        f"benchmark.grounding_dino.model_path={judges['gdino']}",
        "benchmark.grounding_dino.box_threshold=0.0",
        "benchmark.threshold=0.0",
        "benchmark.counting_threshold=0.0",
        f"benchmark.clip.model_path={judges['clip']}",
        f"out_dir={out}",
    )
    summary = run(eval_cfg(*overrides))
    assert list(summary["categories"]) == [
        "single_object",
        "two_object",
        "counting",
        "colors",
        "position",
        "color_attr",
    ]
    assert all(c["n"] == 2 for c in summary["categories"].values())
    # GenEval's layout: metadata.jsonl beside samples/, holding the prompt's own line
    assert json.loads((out / IMAGES_DIR / "00004" / "metadata.jsonl").read_text()) == ROWS[4]
    assert (out / IMAGES_DIR / "00005" / "samples" / "0001.png").is_file()
    rows = [json.loads(line)["row"] for line in (out / SCORES_JSONL).read_text().splitlines()]
    assert all(r["score"] in (0.0, 1.0) and r["score"] == float(r["correct"]) for r in rows)
    # overall = mean over the six tags of the fraction correct
    expected = sum(c["score"] for c in summary["categories"].values()) / 6
    assert summary["overall"] == pytest.approx(expected)
    again = run(eval_cfg(*overrides, "score.rescore=true"))
    rescored = [json.loads(line)["row"] for line in (out / SCORES_JSONL).read_text().splitlines()]
    assert rescored == rows and again["overall"] == summary["overall"]


# ----------------------------------------------------------------------------- Mask2Former
def test_mask_box_and_grey_masked_crop():
    import numpy as np
    import torch
    from PIL import Image

    from t2ir1.evaluate.judges import mask_box, masked_crop

    pixels = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)
    image = Image.fromarray(pixels)
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[1, 1] = mask[1, 2] = mask[2, 1] = True  # an L of three pixels
    assert mask_box(mask) == (1.0, 1.0, 3.0, 3.0)  # x from 1 to 2, y from 1 to 2, max exclusive
    assert mask_box(torch.zeros(4, 4, dtype=torch.bool)) is None
    crop = np.asarray(masked_crop(image, (1.0, 1.0, 3.0, 3.0), mask))
    assert crop.shape == (2, 2, 3)
    assert (
        (crop[0, 0] == pixels[1, 1]).all()
        and (crop[0, 1] == pixels[1, 2]).all()
        and (crop[1, 0] == pixels[2, 1]).all()
    )
    assert (crop[1, 1] == 128).all()  # outside the mask: GenEval's grey
    assert (np.asarray(masked_crop(image, (1.0, 1.0, 3.0, 3.0), None)) == pixels[1:3, 1:3]).all()


def test_mask2former_instances_by_hand():
    import torch

    from t2ir1.evaluate.judges import Mask2FormerDetector

    detector = Mask2FormerDetector("unused", score_floor=0.2, label_aliases={"tv": "tv monitor"})
    detector.id2label = {0: "cat", 1: "dog", 2: "tv monitor"}
    segmentation = torch.tensor([[0, 0, -1, 1], [0, 0, -1, 1], [2, 2, 2, -1], [3, -1, -1, -1]])
    segments = [
        {"id": 0, "label_id": 0, "score": 0.6},  # cat, 2x2 top left
        {"id": 1, "label_id": 1, "score": 0.95},  # dog, right column
        {"id": 2, "label_id": 2, "score": 0.5},  # the aliased tv
        {"id": 3, "label_id": 0, "score": 0.1},  # a cat below the score floor
    ]
    found = detector.instances(segmentation, segments, ["cat", "dog", "tv monitor"])
    assert [(d.label, d.box, d.score) for d in found] == [
        ("dog", (3.0, 0.0, 4.0, 2.0), 0.95),
        ("cat", (0.0, 0.0, 2.0, 2.0), 0.6),
        ("tv monitor", (0.0, 2.0, 3.0, 3.0), 0.5),
    ]
    assert int(found[1].attributes["mask"].sum()) == 4
    assert [d.label for d in detector.instances(segmentation, segments, ["dog"])] == [
        "dog"
    ]  # other classes dropped


def test_geneval_with_mask2former_end_to_end(eval_cfg, judges, tmp_path):
    meta = write_metadata(tmp_path / "evaluation_metadata.jsonl", ROWS[:3])
    out = tmp_path / "run"
    common = (
        "benchmark=geneval",
        f"benchmark.metadata={meta}",
        "benchmark.n_per_prompt=1",
        "benchmark.detector=mask2former",
        f"benchmark.mask2former.model_path={judges['mask2former']}",
        "benchmark.mask2former.local_files_only=true",
        f"benchmark.clip.model_path={judges['clip']}",
        f"out_dir={out}",
    )
    strict = run(eval_cfg(*common))
    prov = strict["provenance"]["judge"]
    assert prov["detector"]["name"] == "mask2former" and prov["detector"]["kind"] == "mask2former"
    # GenEval's own thresholds for Mask2Former: 0.3, counting 0.9, no NMS
    assert prov["thresholds"] == {"score": 0.3, "counting": 0.9, "max_overlap": 1.0}
    # the random tiny model's confidences (~0.14) never pass 0.3: nothing is detected, every image is wrong
    assert strict["overall"] == 0.0
    loose = run(
        eval_cfg(*common, "generate=false", "benchmark.threshold=0.0", "benchmark.counting_threshold=0.0")
    )
    rows = [json.loads(line)["row"] for line in (out / SCORES_JSONL).read_text().splitlines()][-3:]
    assert all(set(r["detections"]) <= {"cat", "dog"} for r in rows)
    assert any(r["detections"] for r in rows)  # at threshold 0 the random model's instances count
    assert loose["categories"]["single_object"]["score"] == float("cat" in rows[0]["detections"])
