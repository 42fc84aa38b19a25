"""Every option of every config group composes, and its node instantiates."""

from __future__ import annotations

import functools
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_object, instantiate
from omegaconf import DictConfig

CONF = Path(__file__).resolve().parents[1] / "conf"
# groups whose node is instantiated directly; the others are dicts of instantiable entries
DIRECT = {"data", "model", "algo", "reward", "trainer", "lr_scheduler"}
SKIP_GROUPS = {"hydra", "sweep", "benchmark", "experiment"}


def options():
    for group_dir in sorted(p for p in CONF.iterdir() if p.is_dir() and p.name not in SKIP_GROUPS):
        for option in sorted(group_dir.glob("*.yaml")):
            yield group_dir.name, option.stem


def _compose(overrides, tmp_path):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[*overrides, f"paths.output_dir={tmp_path}", f"paths.cache_dir={tmp_path}/cache"],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)  # ${hydra:...} interpolations resolve as in a real run
    return cfg


@pytest.mark.parametrize(("group", "option"), list(options()))
def test_every_group_option_composes_and_instantiates(group, option, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    extra = ["trainer.accelerator=cpu", "trainer.devices=1", "trainer.precision=32-true"] if group == "trainer" else []
    cfg = _compose([f"{group}={option}", *extra], tmp_path)
    node = cfg[group]
    if group in DIRECT:
        _check_built(instantiate(node), node, group)
    else:
        for name, child in node.items():
            if child is not None and "_target_" in child:
                _check_built(instantiate(child), child, name)


def _check_built(obj, node, name: str) -> None:
    """``obj`` is what ``node._target_`` names: an instance of the class, or a partial of the
    target holding the node's arguments."""
    target = get_object(node._target_)
    if node.get("_partial_", False):
        assert isinstance(obj, functools.partial) and obj.func == target, name
        fields = {k for k in node if not str(k).startswith("_")}
        assert fields == set(obj.keywords), (name, fields ^ set(obj.keywords))
    elif isinstance(target, type):
        assert isinstance(obj, target), (name, type(obj), target)
    else:  # a factory function: it built something, not the config node itself
        assert obj is not None and not isinstance(obj, (DictConfig, dict)), name


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_every_experiment_composes(experiment, tmp_path):
    cfg = _compose([f"experiment={experiment}"], tmp_path)
    assert cfg.algo.group_size >= 1 and cfg.trainer.max_steps > 0


def test_defaults_reproduce_the_paper(tmp_path):
    cfg = _compose(["experiment=t2i_r1_paper"], tmp_path)
    assert cfg.algo.group_size == 8 and cfg.algo.beta == 0.01 and cfg.algo.cfg_weight == 5.0
    assert cfg.algo.max_new_tokens == 1024 and cfg.algo.text_temperature == 1.0 and cfg.algo.image_temperature == 1.0
    assert cfg.algo.loss_aggregation == "token_mean" and cfg.algo.adv_eps == 1e-4 and cfg.algo.num_iterations == 1
    assert list(cfg.algo.levels) == ["semantic", "token"]
    assert cfg.optimizer.lr == 1e-6 and cfg.trainer.max_steps == 1600 and cfg.trainer.accumulate_grad_batches == 2
    assert cfg.data.batch_size == 1


def test_the_demo_samples_and_evaluates_its_cot_at_one_temperature(tmp_path):
    """The demo trains with the CoT at 0.7 and evaluates as trained; the ablation presets follow it,
    the paper preset keeps 1.0 (test above); the reference curves are compared on the setting."""
    for experiment in ("demo", "shapeworld_bicot", "shapeworld_semantic", "shapeworld_token_cot"):
        cfg = _compose([f"experiment={experiment}"], tmp_path)
        assert cfg.algo.text_temperature == 0.7, experiment
        assert cfg.callbacks.heldout.text_temperature == 0.7, experiment
        assert cfg.callbacks.heldout.run_settings.text_temperature == 0.7, experiment
    cfg = _compose(["experiment=demo", "algo.text_temperature=1.0"], tmp_path)
    assert cfg.callbacks.heldout.text_temperature == 1.0


def test_every_yaml_field_has_a_comment_above_it():
    """STYLE: a one-line comment above every field of every config file."""
    missing = []
    for path in CONF.rglob("*.yaml"):
        lines = path.read_text().splitlines()
        block_indent = None  # inside a `key: |` block scalar: its lines are text, not fields
        for index, line in enumerate(lines):
            stripped = line.strip()
            indent = len(line) - len(line.lstrip())
            if block_indent is not None:
                if not stripped or indent > block_indent:
                    continue
                block_indent = None
            if stripped.endswith(("|", "|-", ">", ">-")):
                block_indent = indent
            if not stripped or stripped.startswith(("#", "-")) or ":" not in stripped:
                continue
            if not stripped.split(":", 1)[1].strip():
                continue  # a section header: its fields carry the comments
            key = stripped.split(":", 1)[0]
            if key in {"defaults"} or key.startswith("_") or key.startswith("override"):
                continue
            previous = lines[index - 1].strip() if index else ""
            if not previous.startswith("#"):
                missing.append(f"{path.relative_to(CONF)}:{index + 1}: {stripped}")
    assert not missing, "fields without a comment above them:\n" + "\n".join(missing)
