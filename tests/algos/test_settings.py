"""GRPOSettings lives in t2ir1.algos; run configs saved before the move still load."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from t2ir1.algos.settings import GRPOSettings
from t2ir1.train import build_module
from t2ir1.validation import check_train_config

CONF = Path(__file__).resolve().parents[2] / "conf"
OLD_TARGET = "t2ir1.lit.module.GRPOSettings"


def test_algo_config_targets_the_algorithm_package():
    assert OmegaConf.load(CONF / "algo" / "bicot_grpo.yaml")._target_ == "t2ir1.algos.settings.GRPOSettings"


def test_run_config_saved_before_the_move_builds_the_same_module(tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=["model=tiny", "algo.group_size=3", "algo.beta=0", f"paths.output_dir={tmp_path}"],
        )
    # what <run>/.hydra/config.yaml held before GRPOSettings moved out of t2ir1/lit/
    cfg.algo._target_ = OLD_TARGET
    saved = tmp_path / ".hydra" / "config.yaml"
    saved.parent.mkdir()
    OmegaConf.save(cfg, saved)
    assert f"_target_: {OLD_TARGET}" in saved.read_text()

    old = OmegaConf.load(saved)
    check_train_config(old)
    module = build_module(old)
    assert isinstance(module.settings, GRPOSettings)
    assert module.settings.group_size == 3 and module.settings.beta == 0
    # field for field the settings the current target builds
    current = OmegaConf.load(saved)
    current.algo._target_ = "t2ir1.algos.settings.GRPOSettings"
    assert dataclasses.asdict(module.settings) == dataclasses.asdict(build_module(current).settings)


def test_old_path_still_checks_values():
    from t2ir1.lit.module import GRPOSettings as OldPath

    with pytest.raises(ValueError, match="algo.levels"):
        OldPath(levels=["pixel"])
