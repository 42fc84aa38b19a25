"""The lr_scheduler group: the original's linear decay to 0 over trainer.max_steps, constant, cosine (hand-worked lrs)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate

CONF = Path(__file__).resolve().parents[1] / "conf"


def _lrs(option: str, steps: list[int], extra: tuple[str, ...] = ()) -> list[float]:
    """The lr seen by the optimiser step `s` (after s scheduler steps) for each s in `steps`."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"lr_scheduler={option}", "trainer.max_steps=1600", *extra])
    optimizer = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-6)
    scheduler = instantiate(cfg.lr_scheduler)(optimizer)
    seen, out = 0, []
    for step in steps:
        while seen < step:
            optimizer.step()
            scheduler.step()
            seen += 1
        out.append(optimizer.param_groups[0]["lr"])
    return out


def test_linear_is_the_originals_decay_to_zero_over_max_steps():
    # HF linear: lr(s) = 1e-6 * (1600 - s) / 1600
    lr0, lr800, lr1599 = _lrs("linear", [0, 800, 1599])
    assert lr0 == pytest.approx(1e-6)
    assert lr800 == pytest.approx(0.5e-6)
    assert lr1599 == pytest.approx(1e-6 / 1600)  # 6.25e-10, not the constant preset's 1e-6


def test_linear_warmup_then_decay():
    # 100 warm-up steps: lr(50) = 0.5e-6; then (1600 - s) / 1500
    lr50, lr100, lr850 = _lrs("linear", [50, 100, 850], ("lr_scheduler.num_warmup_steps=100",))
    assert lr50 == pytest.approx(0.5e-6)
    assert lr100 == pytest.approx(1e-6)
    assert lr850 == pytest.approx(0.5e-6)


def test_constant_is_the_default_and_holds_lr():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train")
    assert cfg.lr_scheduler._target_.endswith("get_constant_schedule_with_warmup")
    assert _lrs("constant", [0, 800, 1599]) == pytest.approx([1e-6, 1e-6, 1e-6])


def test_cosine_half_way_is_half():
    lr0, lr800, lr1600 = _lrs("cosine", [0, 800, 1600])
    assert lr0 == pytest.approx(1e-6)
    assert lr800 == pytest.approx(0.5e-6)
    assert lr1600 == pytest.approx(0.0, abs=1e-15)


def test_paper_preset_uses_the_linear_schedule():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name="train", overrides=["experiment=t2i_r1_paper"])
    assert cfg.lr_scheduler._target_ == "transformers.get_linear_schedule_with_warmup"
    assert cfg.lr_scheduler.num_warmup_steps == 0
    assert cfg.lr_scheduler.num_training_steps == cfg.trainer.max_steps == 1600
