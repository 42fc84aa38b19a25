"""generate.py: reasoning then image, N per prompt, no-CoT baseline, grid + PNGs + JSONL, resumable."""

from __future__ import annotations

import json

import pytest
import torch
from hydra import compose, initialize_config_dir
from workflow_runs import CONF

from t2ir1.generate import PromptSourceError, generate_samples, read_prompts, run


def compose_generate(out_dir, *overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("generate", overrides=[f"out_dir={out_dir}", "generation.max_new_tokens=8", *overrides])


def test_generate_writes_pngs_jsonl_grid_and_resumes(tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# two prompts\na red cube\n\ntwo blue balls\n")
    out = tmp_path / "gen"
    rows = run(compose_generate(out, f"prompts={prompts}", "n_per_prompt=2", "generation.batch_size=1"))
    assert [(r["prompt"], r["sample"]) for r in rows] == [("a red cube", 0), ("a red cube", 1), ("two blue balls", 0), ("two blue balls", 1)]
    assert all((out / r["path"]).is_file() and r["cot"] for r in rows)
    assert (out / "grid.png").is_file()
    lines = (out / "generations.jsonl").read_text().splitlines()
    assert len(lines) == 4

    # resume: one image lost -> only that prompt is generated again, identically (seed = f(seed, prompt))
    lost = out / rows[3]["path"]
    before = lost.read_bytes()
    lost.unlink()
    untouched = (out / rows[0]["path"]).stat().st_mtime_ns
    rows_again = run(compose_generate(out, f"prompts={prompts}", "n_per_prompt=2", "generation.batch_size=2"))
    assert lost.read_bytes() == before
    assert (out / rows[0]["path"]).stat().st_mtime_ns == untouched
    assert [r["cot"] for r in rows_again] == [r["cot"] for r in rows]
    assert len((out / "generations.jsonl").read_text().splitlines()) == 5  # one new line, for the regenerated image


def test_no_cot_baseline(tmp_path):
    rows = run(compose_generate(tmp_path / "gen", "prompts=a green cup", "n_per_prompt=1", "use_cot=false", "grid.enabled=false"))
    assert rows[0]["cot"] is None
    assert not (tmp_path / "gen" / "grid.png").exists()


def test_generate_samples_is_batch_independent_and_greedy_is_deterministic(test_cache):
    from t2ir1.policy.tiny import load_tiny_policy

    policy = load_tiny_policy(test_cache / "models")
    kwargs = dict(n_per_prompt=2, max_new_tokens=6, seed=3)
    together = generate_samples(policy, ["a red cube", "two blue balls"], batch_size=2, **kwargs)
    alone = generate_samples(policy, ["two blue balls"], batch_size=1, **kwargs)
    assert [s.cot for s in together[2:]] == [s.cot for s in alone]
    assert all(torch.equal(a.image_tokens, b.image_tokens) for a, b in zip(together[2:], alone, strict=False))
    assert together[0].image.size == (policy.image_size, policy.image_size)
    greedy = dict(n_per_prompt=2, max_new_tokens=6, text_temperature=0.0, image_temperature=0.0)
    g1 = generate_samples(policy, ["a red cube"], seed=1, **greedy)
    g2 = generate_samples(policy, ["a red cube"], seed=2, **greedy)
    assert g1[0].cot == g1[1].cot == g2[0].cot  # temperature 0: no randomness left


def test_read_prompts(tmp_path):
    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text(json.dumps({"prompt": "a cat"}) + "\n" + json.dumps({"prompt": "a cat"}) + "\n" + json.dumps({"prompt": "a dog"}) + "\n")
    assert read_prompts(str(jsonl)) == ["a cat", "a dog"]
    assert read_prompts("just one prompt") == ["just one prompt"]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "x"}\n')
    with pytest.raises(PromptSourceError, match="bad.jsonl:1"):
        read_prompts(str(bad))
