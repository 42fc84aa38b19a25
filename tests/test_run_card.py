"""The run card: prompts and sampling settings travel with checkpoints and exports (issue 14 point 3)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from safetensors.torch import load_file
from test_export import to_deepseek  # the hand-written DeepSeek layout of the tiny model
from transformers import AutoTokenizer
from workflow_runs import CONF, compose_train

from t2ir1.algos.settings import GRPOSettings
from t2ir1.export import main as export_main
from t2ir1.policy.janus import JanusPolicy
from t2ir1.policy.prompts import DEFAULT_REASONING_PROMPT, SYSTEM_PROMPT, load_reasoning_prompt
from t2ir1.policy.run_card import (
    CARD_FILE,
    CHECKPOINT_KEY,
    PAPER_SAMPLING,
    SETTINGS_FILE,
    RunCard,
    RunCardError,
    card_from_checkpoint,
    card_from_folder,
    card_from_settings,
    generation_settings,
)
from t2ir1.policy.tiny import TinyJanusSpec, tiny_checkpoint
from t2ir1.train import run

ORIGINAL = load_reasoning_prompt("t2i_r1")


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("models"), TinyJanusSpec())


def test_card_from_settings_keeps_training_and_evaluation_apart():
    settings = GRPOSettings(cfg_weight=1.0, max_new_tokens=40, text_temperature=0.7)
    card = card_from_settings(settings, ORIGINAL, evaluation={"cfg_weight": 5.0})
    assert card.training["cfg_weight"] == 1.0 and card.evaluation["cfg_weight"] == 5.0
    assert card.training["max_new_tokens"] == card.evaluation["max_new_tokens"] == 40
    assert card.evaluation["text_temperature"] == 0.7 and card.system_prompt == SYSTEM_PROMPT
    # by default a policy is evaluated as it was trained
    assert card_from_settings(settings, ORIGINAL).evaluation == card_from_settings(settings, ORIGINAL).training
    assert RunCard.from_dict(json.loads(json.dumps(card.to_dict()))) == card
    with pytest.raises(RunCardError, match="not a t2ir1 run card"):
        RunCard.from_dict({"cfg_weight": 5.0}, source="x.json")


def test_the_shipped_shapeworld_checkpoint_evaluates_at_cfg_1(caplog):
    """Was: eval.py sampled it at CFG 5 (7.5% held-out accuracy against 30% at its training CFG 1)."""
    from t2ir1.shapeworld import load_policy

    policy = load_policy()
    with caplog.at_level(logging.INFO, logger="t2ir1.policy.run_card"):
        settings = generation_settings({"cfg_weight": None, "max_new_tokens": None, "reasoning_prompt": None}, policy)
    assert settings["cfg_weight"] == 1.0 and settings["max_new_tokens"] == 40
    assert settings["reasoning_prompt"] == DEFAULT_REASONING_PROMPT and settings["system_prompt"] == SYSTEM_PROMPT
    assert "from the run card" in caplog.text and CARD_FILE in caplog.text
    # the user's explicit value wins over the card
    assert generation_settings({"cfg_weight": 5.0}, policy)["cfg_weight"] == 5.0
    # eval.py's composed defaults leave every sampling setting to the card
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        eval_cfg = compose("eval")
    assert all(eval_cfg.generation[key] is None for key in ("cfg_weight", "max_new_tokens", "reasoning_prompt"))


def test_a_model_without_card_gets_the_paper_defaults(tiny_dir):
    policy = JanusPolicy.from_pretrained(tiny_dir, local_files_only=True)
    assert card_from_folder(tiny_dir) is None
    settings = generation_settings({"cfg_weight": None, "reasoning_prompt": None, "batch_size": 4}, policy)
    assert settings["cfg_weight"] == PAPER_SAMPLING["cfg_weight"] == 5.0
    assert settings["reasoning_prompt"] == "default" and settings["batch_size"] == 4


def test_checkpoint_export_and_generate_carry_the_card(tmp_path, tiny_dir, caplog):
    """Train one step with the original prompt at CFG 1.5; the checkpoint, the export and generate.py agree."""
    cfg = compose_train(
        tmp_path / "run",
        "logger=csv",
        "trainer.max_steps=1",
        "algo.reasoning_prompt=t2i_r1",
        "algo.cfg_weight=1.5",
        f"paths.cache_dir={tiny_dir.parent.parent}",
    )
    cfg.model.cache_dir = str(tiny_dir.parent)
    run(cfg)
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    card = card_from_checkpoint(ckpt)
    assert card is not None and card.reasoning_prompt == ORIGINAL  # the text, not the name
    assert card.training["cfg_weight"] == card.evaluation["cfg_weight"] == 1.5
    assert card.training["max_new_tokens"] == 8  # workflow_runs.TINY_OVERRIDES
    assert CHECKPOINT_KEY in torch.load(ckpt, weights_only=True)
    # export: the card as JSON next to the weights
    out = tmp_path / "exported"
    assert export_main([str(ckpt), str(out), "--base", str(tiny_dir)]) == 0
    assert card_from_folder(out) == card
    # generate.py from the export and from the checkpoint: the card's settings are used
    from t2ir1.generate import run as generate_run

    for model_overrides in (
        ["model=janus_pro_1b", f"model.name_or_path={out}", "model.dtype=float32"],
        [f"ckpt_path={ckpt}", f"model.cache_dir={tiny_dir.parent}"],
    ):
        caplog.clear()
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            gen_cfg = compose(
                "generate",
                overrides=[f"out_dir={tmp_path / 'gen' / str(len(model_overrides))}", "n_per_prompt=1", "grid.enabled=false",
                           "generation.max_new_tokens=4", "prompts=a red cube", *model_overrides],
            )
        with caplog.at_level(logging.INFO, logger="t2ir1.policy.run_card"):
            rows = generate_run(gen_cfg)
        assert len(rows) == 1
        recorded = json.loads((Path(gen_cfg.out_dir) / SETTINGS_FILE).read_text())
        assert recorded["cfg_weight"] == 1.5 and recorded["reasoning_prompt"] == ORIGINAL and recorded["max_new_tokens"] == 4
        assert "generation settings from the run card" in caplog.text
        assert "'cfg_weight': 1.5" in caplog.text and "You are asked to generate" in caplog.text
        assert "max_new_tokens" not in caplog.text.split("from the run card", 1)[1].split("\n")[0]  # user's 4 wins


def test_converted_release_weights_are_evaluated_with_their_own_prompt(tmp_path, tiny_dir):
    """`convert-deepseek --reasoning-prompt t2i_r1` on a tiny DeepSeek-layout checkpoint built here."""
    src = tmp_path / "deepseek"
    src.mkdir()
    torch.save(to_deepseek(load_file(tiny_dir / "model.safetensors")), src / "pytorch_model.bin")
    AutoTokenizer.from_pretrained(tiny_dir).save_pretrained(src)
    dst = tmp_path / "converted"
    argv = ["convert-deepseek", str(src), str(dst), "--config-from", str(tiny_dir), "--reasoning-prompt", "t2i_r1"]
    assert export_main(argv) == 0
    card = card_from_folder(dst)
    assert card.reasoning_prompt == ORIGINAL and card.evaluation == {**PAPER_SAMPLING, "text_top_k": 50}
    policy = JanusPolicy.from_pretrained(dst, local_files_only=True)
    settings = generation_settings({"reasoning_prompt": None, "cfg_weight": None, "text_top_k": None}, policy)
    assert settings["reasoning_prompt"] == ORIGINAL and settings["cfg_weight"] == 5.0 and settings["text_top_k"] == 50
    # without the flag: no card, t2ir1's default wording (the README says to pass the flag)
    assert export_main(["convert-deepseek", str(src), str(tmp_path / "plain"), "--config-from", str(tiny_dir)]) == 0
    assert card_from_folder(tmp_path / "plain") is None


def test_eval_sampling_of_the_algo_config_goes_to_the_card():
    """A run may train at CFG 1 and ask to be evaluated at 5: algo.eval_sampling."""
    settings = GRPOSettings(cfg_weight=1.0, eval_sampling={"cfg_weight": 5.0})
    card = card_from_settings(settings, ORIGINAL)
    assert card.training["cfg_weight"] == 1.0 and card.evaluation["cfg_weight"] == 5.0
    with pytest.raises(RunCardError, match=r"algo.eval_sampling has unknown keys \['cfg'\]"):
        GRPOSettings(eval_sampling={"cfg": 5.0})
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["+algo.eval_sampling.cfg_weight=5.0", "algo.cfg_weight=1.0"])
    from hydra.utils import instantiate

    settings = instantiate(cfg.algo)
    assert card_from_settings(settings, ORIGINAL).evaluation["cfg_weight"] == 5.0
