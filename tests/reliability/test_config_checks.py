"""Every knob is checked once, at start, before any model loads: one message with key, value and range."""

from __future__ import annotations

import pytest
from hydra import compose, initialize_config_dir

from t2ir1.train import run
from t2ir1.validation import ConfigError, check_eval_config, check_generate_config, check_train_config
from tests.workflow_runs import CONF, compose_train

# (override, the line the message must hold): the cases of issue 15 first, then one per group.
TRAIN_CASES = [
    ("algo.beta=-1", "algo.beta=-1: must be a finite number >= 0"),
    ("algo.cfg_weight=-3", "algo.cfg_weight=-3: must be a finite number >= 0"),
    ("algo.text_temperature=-0.5", "algo.text_temperature=-0.5: must be a finite number >= 0"),
    ("algo.image_temperature=-1", "algo.image_temperature=-1: must be a finite number >= 0"),
    ("algo.max_new_tokens=0", "algo.max_new_tokens=0: must be an integer >= 1"),
    ("callbacks.sample_grid.every_n_steps=0", "callbacks.sample_grid.every_n_steps=0: must be an integer >= 1"),
    ("algo.group_size=0", "algo.group_size=0: must be an integer >= 1"),
    ("algo.beta=abc", "algo.beta='abc': must be a finite number >= 0"),
    ("algo.beta=nan", "algo.beta=nan: must be a finite number >= 0"),
    ("algo.clip_eps_low=1.5", "algo.clip_eps_low=1.5: must be a finite number in [0, 1)"),
    ("algo.loss_aggregation=sum", "algo.loss_aggregation='sum': must be one of ['token_mean', 'sequence_mean', 'dr_grpo']"),
    ("algo.levels=[image]", "algo.levels=['image']: must be a non-empty subset of ['semantic', 'token']"),
    ("algo.adv_eps=0", "algo.adv_eps=0: must be a finite number > 0"),
    ("algo.text_top_p=0", "algo.text_top_p=0: must be a finite number in (0, 1]"),
    ("algo.image_top_k=-5", "algo.image_top_k=-5: must be an integer >= 0"),
    ("algo.cfg_uncond=none", "algo.cfg_uncond='none': must be one of ['full', 'short']"),
    ("rollout.chunk_rows=0", "rollout.chunk_rows=0: must be an integer >= 1 or null"),
    ("rollout.compile=fast", "rollout.compile='fast': must be one of ['none', 'default', 'reduce-overhead', 'max-autotune']"),
    ("data.batch_size=0", "data.batch_size=0: must be an integer >= 1"),
    ("data.max_prompt_tokens=0", "data.max_prompt_tokens=0: must be an integer >= 1 or null"),
    ("data.long_prompts=cut", "data.long_prompts='cut': must be one of ['error', 'truncate', 'drop']"),
    ("trainer.max_steps=0", "trainer.max_steps=0: must be an integer >= 1 (or -1 = epochs decide)"),
    ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches=0: must be an integer >= 1"),
    ("optimizer.lr=-1e-4", "optimizer.lr=-0.0001: must be a finite number > 0"),
    ("reward.weights.color=inf", "reward.weights.color=inf: must be a finite number"),
    ("reward.nan_policy=ignore", "reward.nan_policy='ignore': must be one of ['error', 'drop']"),
    ("reward.members.color.target_fraction=2", "reward.members.color.target_fraction=2: must be a finite number in (0, 1]"),
    ("callbacks.checkpoint.every_n_train_steps=-1", "callbacks.checkpoint.every_n_train_steps=-1: must be an integer >= 0"),
    ("preemption_exit_code=0", "preemption_exit_code=0: must be an integer in [1, 255]"),
    ("model.dtype=float8", "model.dtype='float8': must be one of ['float32', 'bfloat16', 'float16']"),
    ("optimizer.betas=[0.9,1.5]", "optimizer.betas=[0.9, 1.5]: must be two numbers in [0, 1)"),
    ("data.source.generator.color_prob=1.5", "data.source.generator.color_prob=1.5: must be a finite number in [0, 1]"),
    ("lr_scheduler.num_warmup_steps=-1", "lr_scheduler.num_warmup_steps=-1: must be an integer >= 0"),
    ("trainer.num_nodes=0", "trainer.num_nodes=0: must be an integer >= 1"),
]


@pytest.mark.parametrize(("override", "line"), TRAIN_CASES, ids=[case[0] for case in TRAIN_CASES])
def test_each_bad_training_knob_is_named_with_its_value_and_range(tmp_path, override, line):
    with pytest.raises(ConfigError) as info:
        check_train_config(compose_train(tmp_path, "logger=csv", override))
    assert line in str(info.value)
    assert "1 configuration value(s) out of range" in str(info.value)


def test_every_shipped_training_config_passes(tmp_path):
    experiments = sorted(path.stem for path in (CONF / "experiment").glob("*.yaml"))
    assert {"tiny", "demo", "t2i_r1_paper"} <= set(experiments)
    for experiment in experiments:
        check_train_config(compose_train(tmp_path, "logger=csv", f"experiment={experiment}"))


def test_all_problems_come_in_one_message_and_combinations_are_checked(tmp_path):
    cfg = compose_train(tmp_path, "logger=csv", "algo.beta=-1", "algo.group_size=1", "algo.new_generations_image=1")
    with pytest.raises(ConfigError) as info:
        check_train_config(cfg)
    message = str(info.value)
    assert "2 configuration value(s)" in message
    assert "algo.group_size=1 x algo.new_generations_image=1: the product must be >= 2" in message
    crossed = compose_train(tmp_path, "logger=csv", "data.source.generator.min_count=4",
                            "data.source.generator.max_count=2", "lr_scheduler.num_warmup_steps=6")
    with pytest.raises(ConfigError) as info:
        check_train_config(crossed)
    assert "data.source.generator.max_count=2 < data.source.generator.min_count=4" in str(info.value)
    assert "lr_scheduler.num_warmup_steps=6 >= trainer.max_steps=6" in str(info.value)
    # the semantic level needs a CoT; the token level alone does not
    check_train_config(compose_train(tmp_path, "logger=csv", "algo.levels=[token]", "algo.max_new_tokens=0"))


def test_train_refuses_before_any_model_loads(tmp_path):
    cache = tmp_path / "cache"
    cfg = compose_train(tmp_path / "run", "logger=csv", "algo.beta=-1", f"paths.cache_dir={cache}")
    with pytest.raises(ConfigError, match="algo.beta=-1"):
        run(cfg)
    assert not cache.exists()  # the tiny model would have been built there
    assert not (tmp_path / "run").exists()


def _compose(name: str, *overrides: str):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(name, overrides=list(overrides))


@pytest.mark.parametrize(
    ("override", "line"),
    [
        ("generation.cfg_weight=-3", "generation.cfg_weight=-3: must be a finite number >= 0"),
        ("generation.image_temperature=-1", "generation.image_temperature=-1: must be a finite number >= 0"),
        ("generation.max_new_tokens=0", "generation.max_new_tokens=0: must be an integer >= 1"),
        ("n_per_prompt=0", "n_per_prompt=0: must be an integer >= 1"),
        ("generation.batch_size=0", "generation.batch_size=0: must be an integer >= 1"),
        ("grid.columns=0", "grid.columns=0: must be an integer >= 1"),
    ],
)
def test_generate_knobs(tmp_path, override, line):
    with pytest.raises(ConfigError) as info:
        check_generate_config(_compose("generate", f"out_dir={tmp_path}", override))
    assert line in str(info.value) and str(info.value).startswith("generate.py:")


def test_generate_without_cot_needs_no_cot_length(tmp_path):
    check_generate_config(_compose("generate", f"out_dir={tmp_path}", "use_cot=false", "generation.max_new_tokens=0"))


@pytest.mark.parametrize(
    ("override", "line"),
    [
        ("score.batch_size=0", "score.batch_size=0: must be an integer >= 1"),
        ("limit=0", "limit=0: must be an integer >= 1 or null"),
        ("generation.text_temperature=-2", "generation.text_temperature=-2: must be a finite number >= 0"),
        ("benchmark.n_per_prompt=0", "benchmark.n_per_prompt=0: must be an integer >= 1"),
    ],
)
def test_eval_knobs(override, line):
    with pytest.raises(ConfigError) as info:
        check_eval_config(_compose("eval", override))
    assert line in str(info.value) and str(info.value).startswith("eval.py:")


def test_every_shipped_model_config_is_an_allowed_loader():
    from t2ir1.validation import check_model_node

    for path in sorted((CONF / "model").glob("*.yaml")):
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            node = compose("train", overrides=[f"model={path.stem}", "paths.cache_dir=/tmp", "paths.output_dir=/tmp"]).model
        check_model_node(node, str(path), remote_code_allowed=False)
