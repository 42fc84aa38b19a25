"""The T2I-R1 presets and the guards against silent preset traps (issue 13 point 7, issue 14).

`experiment=t2i_r1_paper` is checked key by key against REFERENCE §2-3 (values written out here,
not read from the config); `experiment=t2i_r1` may differ from it only in the keys of the README's
"Reproducing T2I-R1" table.
"""

from __future__ import annotations

import logging
import re
import shlex
from pathlib import Path

import lightning as L
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import OmegaConf

from t2ir1.policy.prompts import SYSTEM_PROMPT, load_reasoning_prompt
from t2ir1.presets import PresetError, check_training_config

REPO = Path(__file__).resolve().parents[1]
CONF = REPO / "conf"

# Every key where the recommended preset differs from the original (the README table's rows).
FIXED_KEYS = {
    "algo.token_normalizer": ("local", "global"),
    "algo.prompt_quirks": (True, False),
    "algo.reference_reads_policy_embeddings": (True, False),
    "reward.members.gdino.reference_quirks": (True, False),
    "reward.members.orm.readout": ("sampled", "forward"),
    "reward.members.orm.yes_tokens": (["yes"], ["yes", "Yes"]),
    "reward.members.orm.no_tokens": (["no"], ["no", "No"]),
}


def _compose(tmp_path, *overrides):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            config_name="train",
            overrides=[*overrides, f"paths.output_dir={tmp_path}", f"paths.cache_dir={tmp_path}/cache"],
            return_hydra_config=True,
        )
    HydraConfig.instance().set_config(cfg)  # Hydra choices and ${hydra:...} resolve as in a real run
    return cfg


def _flat(node, prefix=""):
    container = OmegaConf.to_container(node, resolve=False) if not isinstance(node, dict) else node
    out = {}
    for key, value in container.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flat(value, path + "."))
        else:
            out[path] = value
    return out


def test_paper_preset_is_the_original_key_by_key(tmp_path):
    cfg = _compose(tmp_path, "experiment=t2i_r1_paper")
    # §1 policy: Janus-Pro-7B in bf16 (fp32 master weights come from the FSDP2 strategy below)
    assert cfg.model.name_or_path == "deepseek-community/Janus-Pro-7B" and cfg.model.dtype == "bfloat16"
    # §2.1 semantic CoT: the original file, the chat layout's system text, G = 8, 1024 tokens, T 1.0, top-k 50
    algo = cfg.algo
    assert load_reasoning_prompt(algo.reasoning_prompt).startswith(
        'You are asked to generate an image based on this prompt: "{}"\nProvide a brief, precise visualization'
    )
    assert algo.system_prompt == SYSTEM_PROMPT == (
        "You are a helpful assistant that receives an image prompt and generate a visualization of the prompt."
    )
    assert algo.group_size == 8 and algo.max_new_tokens == 1024 and algo.text_temperature == 1.0
    assert algo.text_top_k == 50
    # §2.2 token CoT: CFG 5, temperature 1, one image per completion
    assert algo.cfg_weight == 5.0 and algo.image_temperature == 1.0 and algo.new_generations_image == 1
    # §2.2-2.3 the original's image prompts (unstripped CoT, right padding with the position gap, unconditional
    # rows attending everywhere) and its uint8 truncation
    assert algo.prompt_quirks is True and algo.cfg_uncond == "full"
    # §2.6 quirk: the reference forward reads the policy's text embeddings
    assert algo.reference_reads_policy_embeddings is True
    # §2.5-6 advantages and loss: std + 1e-4, beta 0.01, one update (ratio 1), token mean per rank
    assert algo.adv_eps == 1e-4 and algo.adv_scale is True and algo.beta == 0.01 and algo.num_iterations == 1
    assert list(algo.levels) == ["semantic", "token"] and algo.loss_aggregation == "token_mean"
    assert algo.token_normalizer == "local"
    # §2.7 optimiser: AdamW 1e-6, betas (0.9, 0.999), eps 1e-8, no decay; clip 1.0
    optimizer = instantiate(cfg.optimizer)([torch.nn.Parameter(torch.zeros(1))])
    group = optimizer.param_groups[0]
    assert isinstance(optimizer, torch.optim.AdamW)
    assert (group["lr"], group["betas"], group["eps"], group["weight_decay"]) == (1e-6, (0.9, 0.999), 1e-8, 0.0)
    assert cfg.trainer.gradient_clip_val == 1.0
    # linear decay from 1e-6 to 0 over 1600 steps, no warm-up: 1e-6 at 0, 5e-7 at 800
    assert cfg.lr_scheduler.num_warmup_steps == 0 and cfg.lr_scheduler.num_training_steps == 1600
    scheduler = instantiate(cfg.lr_scheduler)(optimizer)
    for _ in range(800):
        optimizer.step()
        scheduler.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(5e-7)
    # 8 GPUs x 1 prompt x 8 generations, accumulation 2, 1600 steps; bf16 compute with fp32 master weights
    assert cfg.trainer.devices == 8 and cfg.data.batch_size == 1 and cfg.trainer.accumulate_grad_batches == 2
    assert cfg.trainer.max_steps == 1600
    strategy = cfg.trainer.strategy
    assert strategy._target_ == "t2ir1.scale.fsdp.FSDP2Strategy"
    assert strategy.param_dtype == "bfloat16" and strategy.master_dtype == "float32"
    assert strategy.activation_checkpointing is True
    # §4 data
    assert cfg.data.source.path.endswith("data/t2i-r1/geneval_and_t2i_data_final.jsonl")
    # §3 rewards: plain sum of the four
    reward = cfg.reward
    assert dict(reward.weights) == {"hps": 1.0, "git": 1.0, "gdino": 1.0, "orm": 1.0}
    hps, git, gdino, orm = (reward.members[name] for name in ("hps", "git", "gdino", "orm"))
    assert hps.arch == "ViT-H-14" and hps.context_length == 77 and hps.checkpoint.endswith("HPS_v2.1_compressed.pt")
    assert hps.dtype == "float32" and hps.autocast == "float16"
    assert git.model_path == "microsoft/git-large-vqav2" and git.question_template == "{phrase}?"
    assert list(git.zero_task_types) == ["spatial", "numeracy"] and git.dtype == "float32"
    assert gdino.model_path == "IDEA-Research/grounding-dino-tiny" and gdino.dtype == "float32"
    assert (gdino.box_threshold, gdino.iou_threshold, gdino.near_threshold) == (0.3, 0.1, 150.0)
    assert (gdino.detected_weight, gdino.nms_iou, gdino.partial_weight) == (0.2, 0.5, 0.2)
    assert gdino.reference_quirks is True
    assert orm.temperature == 0.3 and orm.readout == "sampled" and orm.sample_top_k == 50
    assert list(orm.yes_tokens) == ["yes"] and list(orm.no_tokens) == ["no"] and orm.dtype == "bfloat16"
    assert orm.question_template == (
        "<image> This image is generated by a prompt: {prompt}. Does this image accurately represent the prompt? "
        "Please answer yes or no without explanation."
    )


def test_recommended_preset_differs_only_in_the_documented_keys(tmp_path):
    paper = _flat(_compose(tmp_path, "experiment=t2i_r1_paper"))
    fixed = _flat(_compose(tmp_path, "experiment=t2i_r1"))
    ignored = ("hydra.",)  # Hydra's own record of the choices
    differing = {
        key
        for key in paper.keys() | fixed.keys()
        if not key.startswith(ignored) and paper.get(key) != fixed.get(key)
    }
    assert differing == set(FIXED_KEYS)
    for key, (original, recommended) in FIXED_KEYS.items():
        assert (paper[key], fixed[key]) == (original, recommended), key
    # every row is in the README table, with its key
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Reproducing T2I-R1", 1)[1].split("\n## ", 1)[0]
    for key in FIXED_KEYS:
        assert f"`{key}" in section, f"README 'Reproducing T2I-R1' table lacks {key}"


@pytest.mark.parametrize("trainer", ["gpu", "cpu", "ddp", "fsdp", "fsdp_7b"])
@pytest.mark.parametrize("experiment", ["t2i_r1_paper", "t2i_r1"])
def test_presets_work_with_every_trainer(experiment, trainer, tmp_path):
    """Was: `ValueError: You selected an invalid strategy name: strategy={'activation_checkpointing': True}`."""
    cfg = _compose(
        tmp_path,
        f"experiment={experiment}",
        f"trainer={trainer}",
        "trainer.accelerator=cpu",
        "trainer.devices=1",
        "trainer.precision=32-true",
    )
    strategy = cfg.trainer.get("strategy")
    if trainer in ("gpu", "cpu"):
        assert strategy is None
    else:
        assert "_target_" in strategy  # a real strategy node, never a bare dict of FSDP keys
    built = instantiate(cfg.trainer, logger=False)
    assert isinstance(built, L.Trainer) and built.max_steps == cfg.trainer.max_steps


def test_a_real_model_under_the_demo_is_refused(tmp_path):
    cfg = _compose(tmp_path, "model=janus_pro_7b")
    with pytest.raises(PresetError, match=r"model=janus_pro_7b .* experiment=demo .*experiment=t2i_r1 model=janus_pro_7b"):
        check_training_config(cfg)
    # wired into the training entry point: refused before any weight is fetched
    from t2ir1.train import run

    with pytest.raises(PresetError, match="offline demo preset"):
        run(cfg)
    with pytest.raises(PresetError, match="experiment=tiny"):
        check_training_config(_compose(tmp_path, "experiment=tiny", "model=janus_pro_1b"))
    # `python train.py` alone stays the offline demo; a real preset with a real model passes
    check_training_config(_compose(tmp_path))
    check_training_config(_compose(tmp_path, "experiment=t2i_r1", "model=janus_pro_1b"))
    # ~experiment (no preset): the bare defaults plus the user's own choices
    check_training_config(_compose(tmp_path, "~experiment", "model=janus_pro_1b", "trainer=gpu"))


def test_bf16_weights_get_fp32_master_weights(tmp_path, caplog):
    # trainer=gpu: no master copy -> the weights are loaded in fp32 (bf16 autocast keeps the compute)
    cfg = _compose(tmp_path, "experiment=t2i_r1_paper", "model=janus_pro_1b", "trainer=gpu")
    assert cfg.model.dtype == "bfloat16"
    with caplog.at_level(logging.WARNING, logger="t2ir1.presets"):
        check_training_config(cfg)
    assert cfg.model.dtype == "float32" and cfg.trainer.precision == "bf16-mixed"
    assert "round away" in caplog.text and "model.dtype=float32" in caplog.text
    # FSDP2 with master_dtype float32 (the presets): nothing to change, nothing said
    caplog.clear()
    cfg = _compose(tmp_path, "experiment=t2i_r1_paper")
    with caplog.at_level(logging.WARNING, logger="t2ir1.presets"):
        check_training_config(cfg)
    assert cfg.model.dtype == "bfloat16" and cfg.trainer.strategy.master_dtype == "float32" and not caplog.text
    # FSDP2 told to keep the stored dtype: switched to an fp32 master copy
    cfg = _compose(tmp_path, "experiment=t2i_r1_paper", "trainer.strategy.master_dtype=null")
    check_training_config(cfg)
    assert cfg.trainer.strategy.master_dtype == "float32" and cfg.model.dtype == "bfloat16"
    # fp32 models (demo, tiny) are left alone
    cfg = _compose(tmp_path, "experiment=tiny", "trainer=gpu")
    check_training_config(cfg)
    assert cfg.model.dtype == "float32"


# --- every command the README shows composes (issue 13 point 7) ---

SCRIPTS = {"train.py": "train", "generate.py": "generate", "eval.py": "eval"}
PLACEHOLDERS = {
    "<name>": "shapeworld",
    "<model>": "tiny",
    "<run>": "outputs/run",
    "<partition>": "gpu",
    "trainer.num_nodes=N": "trainer.num_nodes=2",
}


def readme_commands() -> list[str]:
    """Every ``python train.py|generate.py|eval.py ...`` of the README (code blocks and table cells)."""
    text = (REPO / "README.md").read_text().replace("\\\n", " ")  # join shell line continuations
    found = re.findall(r"(?:^|`)(python (?:train|generate|eval)\.py[^`#\n]*)", text, flags=re.M)
    return [command.strip() for command in found]


def readme_overrides(command: str) -> tuple[str, list[str]]:
    """``(config name, overrides)`` of a README command; sweeps take their first value, as job 0 does."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for placeholder, value in PLACEHOLDERS.items():
        command = command.replace(placeholder, value)
    command = command.replace("$(cat $HOME/t2ir1/reward_url)", "http://localhost:8000").replace("$HOME", "/home/user")
    # e.g. <geneval>/prompts/... -> geneval/prompts/..., <DreamSim folder> -> DreamSim_folder
    command = re.sub(r"<([^>]+)>", lambda match: match.group(1).replace(" ", "_"), command)
    tokens = shlex.split(command)[1:]
    script = tokens.pop(0)
    tokens = [t for t in tokens if t not in ("-m", "--cfg", "job", "...") and not (t.startswith("[") and t.endswith("]"))]
    overrides = []
    for override in OverridesParser.create().parse_overrides(tokens):
        if override.is_sweep_override():
            value = override.value()
            first = value.start if hasattr(value, "start") else next(override.sweep_string_iterator())
            overrides.append(f"{override.get_key_element()}={first}")
        else:
            overrides.append(override.input_line)
    return SCRIPTS[script], overrides


def test_readme_has_commands_to_check():
    commands = readme_commands()
    assert len(commands) >= 20, commands
    assert "python train.py experiment=t2i_r1_paper trainer.devices=8" in commands


@pytest.mark.parametrize("command", readme_commands())
def test_every_readme_command_composes(command, tmp_path):
    config_name, overrides = readme_overrides(command)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    if config_name == "train":
        HydraConfig.instance().set_config(cfg)
        check_training_config(cfg)  # no README command is refused by the preset guards
        if cfg.trainer.get("strategy") is not None:
            assert "_target_" in cfg.trainer.strategy, command


def _offline_train_commands() -> list[str]:
    """README training commands that need no download and one process: each runs one real step."""
    needs_more = ("-m", "experiment=t2i_r1", "--cfg", "ckpt_path=", "reward=ensemble", "trainer.devices=2")
    commands = [c for c in readme_commands() if c.startswith("python train.py") and not any(n in c for n in needs_more)]
    return list(dict.fromkeys(commands))


@pytest.mark.slow
@pytest.mark.parametrize("command", _offline_train_commands())
def test_offline_readme_commands_train_one_step(command, tmp_path, monkeypatch):
    """`python train.py` (the demo), `experiment=tiny`, the ablation and prompt examples: one step each, shrunk."""
    from omegaconf import open_dict

    from t2ir1.train import run

    monkeypatch.setenv("T2IR1_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("WANDB_MODE", "disabled")
    _, overrides = readme_overrides(command)
    shrink = ["trainer.max_steps=1", "trainer.enable_progress_bar=false", "algo.group_size=2", "algo.max_new_tokens=4"]
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(  # as `python train.py` composes it, without Hydra's own node (no running job here)
            "train",
            overrides=[*overrides, "logger=csv", "data.batch_size=1", f"paths.output_dir={tmp_path}", "run_name=test", *shrink],
        )
    with open_dict(cfg):
        if "heldout" in cfg.callbacks:  # the demo's held-out evaluation: 8 prompts instead of 960
            cfg.callbacks.heldout.num_prompts = 8
            cfg.callbacks.heldout.batch_size = 8
    metrics = run(cfg)
    assert "train/loss" in metrics and torch.isfinite(torch.tensor(metrics["train/loss"]))
