"""A planted payload never runs through any entry point (train, export, generate, eval).

Payloads: a pickle whose ``__reduce__`` creates a marker file (as a training checkpoint and as
a model's ``pytorch_model.bin``), and configs whose ``_target_`` is ``torch.load`` with
``weights_only=False`` on that pickle. Each test asserts the refusal message and that the
marker file does not exist.
"""

from __future__ import annotations

import pickle
import shutil

import pytest
import torch
import yaml
from hydra import compose, initialize_config_dir

from t2ir1.evaluate import run as evaluate
from t2ir1.export import ExportError
from t2ir1.export import main as export_main
from t2ir1.generate import run as generate
from t2ir1.policy.janus import CheckpointError
from t2ir1.train import run as train
from t2ir1.validation import UntrustedConfigError, check_model_node
from tests.reliability.faults import Payload
from tests.workflow_runs import CONF, compose_train


@pytest.fixture()
def payload(tmp_path):
    """(pickle file, marker): loading the pickle with weights_only=False would create the marker."""
    marker = tmp_path / "payload-ran"
    path = tmp_path / "payload.pkl"
    path.write_bytes(pickle.dumps({"state_dict": Payload(marker)}))
    return path, marker


@pytest.fixture()
def payload_model_dir(tmp_path, tiny_dir, payload):
    """A transformers Janus directory whose weights are the pickle payload (pytorch_model.bin)."""
    directory = tmp_path / "evil-janus"
    shutil.copytree(tiny_dir, directory)
    (directory / "model.safetensors").unlink()
    shutil.copy(payload[0], directory / "pytorch_model.bin")
    return directory


def _run_folder(tmp_path, model_node: dict):
    """A shared run folder: checkpoints/last.ckpt (plain tensors) beside a planted .hydra/config.yaml."""
    run = tmp_path / "shared-run"
    (run / ".hydra").mkdir(parents=True)
    (run / "checkpoints").mkdir()
    (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"model": model_node}))
    ckpt = run / "checkpoints" / "last.ckpt"
    torch.save({"state_dict": {"policy.model.lm_head.weight": torch.zeros(2, 2)}}, ckpt)
    return ckpt


# ----------------------------------------------------------------------------- export
def test_export_refuses_a_foreign_target_in_the_run_config(tmp_path, payload):
    ckpt = _run_folder(tmp_path, {"_target_": "torch.load", "f": str(payload[0]), "weights_only": False})
    with pytest.raises(ExportError, match=r"model._target_='torch.load' is not one of the project's model loaders"):
        export_main([str(ckpt), str(tmp_path / "out")])
    assert not payload[1].exists()
    assert not (tmp_path / "out").exists()


def test_export_refuses_a_nested_target_under_an_allowed_loader(tmp_path, payload):
    node = {
        "_target_": "t2ir1.policy.tiny.load_tiny_policy",
        "_partial_": True,
        "cache_dir": {"_target_": "torch.load", "f": str(payload[0]), "weights_only": False},
    }
    ckpt = _run_folder(tmp_path, node)
    with pytest.raises(ExportError, match=r"model.cache_dir._target_ is set"):
        export_main([str(ckpt), str(tmp_path / "out")])
    assert not payload[1].exists()


def test_export_refuses_remote_code_from_the_run_config_unless_asked(tmp_path):
    node = {"_target_": "t2ir1.policy.janus.JanusPolicy.from_pretrained", "name_or_path": str(tmp_path / "nowhere"),
            "trust_remote_code": True}
    ckpt = _run_folder(tmp_path, node)
    with pytest.raises(ExportError, match="trust_remote_code=true would run Python files"):
        export_main([str(ckpt), str(tmp_path / "out")])
    # asked for on the command line: the node passes the check (and then fails on the missing folder)
    with pytest.raises(CheckpointError, match="no such directory"):
        export_main([str(ckpt), str(tmp_path / "out"), "--trust-remote-code"])


def test_export_refuses_a_pickled_checkpoint(tmp_path, payload, tiny_dir):
    with pytest.raises(ExportError) as info:
        export_main([str(payload[0]), str(tmp_path / "out"), "--base", str(tiny_dir)])
    assert str(payload[0]) in str(info.value) and "weights_only=False" not in str(info.value)
    assert not payload[1].exists()


# ----------------------------------------------------------------------------- train
def test_train_refuses_a_pickled_checkpoint_to_resume_from(tmp_path, payload, tiny_dir):
    cfg = compose_train(tmp_path / "run", "logger=csv", f"ckpt_path={payload[0]}", f"model.cache_dir={tiny_dir.parent}")
    with pytest.raises(RuntimeError, match=r"payload.pkl cannot be read as a weights-only Lightning checkpoint"):
        train(cfg)
    assert not payload[1].exists()


def test_train_refuses_a_foreign_model_target(tmp_path, payload):
    cfg = compose_train(tmp_path / "run", "logger=csv", "model=janus_pro_1b", "model._target_=torch.load",
                        f"model.name_or_path={payload[0]}")
    with pytest.raises(UntrustedConfigError, match="not one of the project's model loaders"):
        train(cfg)
    assert not payload[1].exists()


# ----------------------------------------------------------------------------- generate / eval
def _generate_cfg(out_dir, *overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("generate", overrides=[f"out_dir={out_dir}", "generation.max_new_tokens=4", "n_per_prompt=1",
                                              "grid.enabled=false", "device=cpu", *overrides])


def _eval_cfg(out_dir, *overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose("eval", overrides=[f"out_dir={out_dir}", "benchmark=shapeworld", "limit=1",
                                          "benchmark.n_per_prompt=1", "generation.max_new_tokens=4", "device=cpu",
                                          *overrides])


def test_generate_refuses_a_pickled_training_checkpoint(tmp_path, payload, tiny_dir):
    cfg = _generate_cfg(tmp_path / "gen", f"model.cache_dir={tiny_dir.parent}", f"ckpt_path={payload[0]}")
    with pytest.raises(ExportError, match=r"payload.pkl cannot be read as a weights-only training checkpoint"):
        generate(cfg)
    assert not payload[1].exists()


@pytest.mark.parametrize("entry", ["generate", "eval"])
def test_pickled_model_weights_never_run(tmp_path, payload, payload_model_dir, entry):
    overrides = ("model=janus_pro_1b", f"model.name_or_path={payload_model_dir}", "model.dtype=float32")
    with pytest.raises(CheckpointError) as info:
        if entry == "generate":
            generate(_generate_cfg(tmp_path / "out", *overrides))
        else:
            evaluate(_eval_cfg(tmp_path / "out", *overrides))
    assert str(payload_model_dir) in str(info.value) and "weights_only=False" not in str(info.value)
    assert not payload[1].exists()


@pytest.mark.parametrize("entry", ["generate", "eval"])
def test_foreign_model_target_and_remote_code_are_refused(tmp_path, payload, entry):
    compose_entry, run_entry = (_generate_cfg, generate) if entry == "generate" else (_eval_cfg, evaluate)
    cfg = compose_entry(tmp_path / "out", "model=janus_pro_1b", "model._target_=torch.load",
                        f"model.name_or_path={payload[0]}")
    with pytest.raises(UntrustedConfigError, match="not one of the project's model loaders"):
        run_entry(cfg)
    # trust_remote_code from a config file (here: composed, not typed on a command line) is refused
    cfg = compose_entry(tmp_path / "out", "model=janus_pro_1b", "model.trust_remote_code=true")
    with pytest.raises(UntrustedConfigError, match="only honoured when typed on the command line"):
        run_entry(cfg)
    assert not payload[1].exists()


def test_remote_code_is_allowed_only_by_the_command_line():
    node = {"_target_": "t2ir1.policy.janus.JanusPolicy.from_pretrained", "name_or_path": "x", "trust_remote_code": True}
    with pytest.raises(UntrustedConfigError):
        check_model_node(node, "test", remote_code_allowed=False)
    assert check_model_node(node, "test", remote_code_allowed=True)["trust_remote_code"] is True
