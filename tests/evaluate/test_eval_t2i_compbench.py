"""T2I-CompBench: prompt parsing, file errors, naming, and each category scored end to end on tiny judges."""

from __future__ import annotations

import json
import math

import pytest
from PIL import Image

from t2ir1.evaluate import run
from t2ir1.evaluate.base import BenchmarkFileError
from t2ir1.evaluate.harness import IMAGES_DIR, SCORES_JSONL
from t2ir1.evaluate.judges import BlipVqaJudge, ClipJudge
from t2ir1.evaluate.phrases import rule_noun_phrases, spatial_triple
from t2ir1.evaluate.t2i_compbench import read_prompt_lines

PROMPTS = {
    "color_val.txt": ["a red cat and a blue dog", "a green car\tignored second field"],
    "shape_val.txt": ["a round clock and a square bench"],
    "texture_val.txt": ["a wooden bench and a metallic car"],
    "spatial_val.txt": ["a cat on the left of a dog", "a bird on side of a clock"],
    "non_spatial_val.txt": ["a dog chasing a cat"],
    "complex_val.txt": ["The red cat sat on top of the blue car", "a white dog jumps"],
    "complex_val_spatial.txt": ["The red cat sat on top of the blue car"],
    "complex_val_action.txt": ["a white dog jumps"],
}


def test_noun_phrases_and_spatial_triples():
    assert rule_noun_phrases("a green bench and a red car.") == ["a green bench", "a red car"]
    assert rule_noun_phrases("A bathroom with green tile and a red shower curtain") == [
        "A bathroom",
        "green tile",
        "a red shower curtain",
    ]
    assert spatial_triple("a balloon on the top of a giraffe") == ("balloon", "on the top of", "giraffe")
    assert spatial_triple("a bird on side of a clock") == ("bird", "on side of", "clock")
    assert spatial_triple("a wooden table next to a small dog") == ("table", "next to", "dog")
    assert spatial_triple("a dog chasing a cat") is None


def test_prompt_file_errors(tmp_path):
    path = tmp_path / "color_val.txt"
    path.write_text("a red cat\n\n\tonly a second field\n")
    with pytest.raises(BenchmarkFileError, match=r"color_val\.txt:3: the first tab-separated field is empty"):
        read_prompt_lines(path)
    with pytest.raises(BenchmarkFileError, match="does not exist"):
        read_prompt_lines(tmp_path / "shape_val.txt")


def test_t2i_compbench_end_to_end_on_tiny_models(eval_cfg, judges, tmp_path):
    data = tmp_path / "dataset"
    data.mkdir()
    for name, lines in PROMPTS.items():
        (data / name).write_text("\n".join(lines) + "\n")
    out = tmp_path / "run"
    overrides = (
        "benchmark=t2i_compbench",
        f"benchmark.prompts_dir={data}",
        "benchmark.n_per_prompt=2",
        f"benchmark.blip.model_path={judges['blip']}",
        f"benchmark.clip.model_path={judges['clip']}",
        f"benchmark.detector.model_path={judges['gdino']}",
        "benchmark.detector.box_threshold=0.0",
        "benchmark.min_spatial_score=0.0",
        f"out_dir={out}",
    )
    summary = run(eval_cfg(*overrides))
    assert list(summary["categories"]) == ["color", "shape", "texture", "spatial", "non_spatial", "complex"]
    assert summary["categories"]["color"]["n"] == 4 and summary["categories"]["complex"]["n"] == 4
    # the official naming: {prompt}_{n:06d}.png, n counting across the category's prompts
    assert (out / IMAGES_DIR / "color" / "samples" / "a green car_000003.png").is_file()
    assert (out / IMAGES_DIR / "spatial" / "samples" / "a bird on side of a clock_000002.png").is_file()
    rows = {
        (r["row"]["key"], r["row"]["sample"]): r["row"]
        for r in map(json.loads, (out / SCORES_JSONL).read_text().splitlines())
    }

    # colour: the product over the two noun phrases of BLIP's yes-probability, recomputed directly
    blip = BlipVqaJudge(judges["blip"])
    blip.setup("cpu")
    image = Image.open(
        out / IMAGES_DIR / "color" / "samples" / "a red cat and a blue dog_000001.png"
    ).convert("RGB")
    p = blip.yes_probability([image, image], ["a red cat?", "a blue dog?"]).tolist()
    row = rows[("color/00000", 1)]
    assert set(row["phrases"]) == {"a red cat", "a blue dog"}
    assert row["score"] == pytest.approx(p[0] * p[1], abs=1e-6)

    # non-spatial: CLIP cosine of image and prompt
    clip = ClipJudge(judges["clip"])
    clip.setup("cpu")
    image = Image.open(
        out / IMAGES_DIR / "non_spatial" / "samples" / "a dog chasing a cat_000000.png"
    ).convert("RGB")
    assert rows[("non_spatial/00000", 0)]["score"] == pytest.approx(
        clip.cosine([image], ["a dog chasing a cat"]).item(), abs=1e-5
    )

    # spatial: 0.25 * conf1 + 0.25 * conf2 + position / 2 <= 1, objects parsed from the prompt
    spatial = rows[("spatial/00000", 0)]
    assert spatial["relation"] == ["cat", "on the left of", "dog"] and 0.0 <= spatial["score"] <= 1.0

    # complex: the spatial-list prompt averages attribute and spatial; the action-list one attribute and action
    first, second = rows[("complex/00000", 0)], rows[("complex/00001", 0)]
    assert first["score"] == pytest.approx((first["attribute"] + first["spatial"]) / 2)
    assert second["score"] == pytest.approx((second["attribute"] + second["action"]) / 2)
    assert all(not math.isnan(r["score"]) for r in rows.values())

    again = run(eval_cfg(*overrides, "score.rescore=true"))
    assert again["categories"] == summary["categories"]
