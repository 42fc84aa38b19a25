"""Every knob checked once, at start, before any model loads.

``check_train_config`` / ``check_generate_config`` / ``check_eval_config`` read the composed
Hydra config of ``train.py`` / ``generate.py`` / ``eval.py`` and raise one
:class:`ConfigError` that lists every bad value as ``key=value: allowed range`` (all
problems at once, so a user fixes them in one go). Keys that a config does not have are
skipped, so an experiment that drops a callback or a reward member is not flagged.

The same module holds the rules that keep code out of a run's inputs
(:func:`check_model_node`): a ``model`` node may only name one of the project's own loaders,
carry no nested ``_target_``, and enable ``trust_remote_code`` only from the command line.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf

from t2ir1.algos.settings import LEVELS as SETTINGS_LEVELS
from t2ir1.dtypes import DTYPES
from t2ir1.rollout.engine import CFG_UNCOND, COMPILE_MODES

# The project's own policy loaders: the only `_target_` a model node may name.
MODEL_TARGETS = (
    "t2ir1.policy.janus.JanusPolicy.from_pretrained",
    "t2ir1.policy.tiny.load_tiny_policy",
    "t2ir1.shapeworld.load_policy",
    "t2ir1.testing.real_size.random_janus_policy",
)

LEVELS = SETTINGS_LEVELS
LOSS_AGGREGATIONS = ("token_mean", "sequence_mean", "dr_grpo")
NAN_POLICIES = ("error", "drop")
MODEL_DTYPES = tuple(DTYPES)
REWARD_DTYPES = ("auto", *MODEL_DTYPES)
PROMPT_POLICIES = ("error", "truncate", "drop")


class ConfigError(ValueError):
    """One or more configuration values out of range; the message lists each as ``key=value``."""


class UntrustedConfigError(ValueError):
    """A config node that would run code the user did not ask for."""


_MISSING = object()


@dataclass(frozen=True)
class Rule:
    """``key`` must satisfy ``check``; ``allowed`` says what is allowed, in words."""

    key: str
    check: Callable[[Any], bool]
    allowed: str


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def number(key: str, low: float | None = None, high: float | None = None, *, low_open: bool = False,
           high_open: bool = False, integer: bool = False, nullable: bool = False, note: str = "") -> Rule:
    """A (finite) number in ``[low, high]`` (``(`` / ``)`` with ``*_open``); ``integer`` for counts."""

    def check(value: Any) -> bool:
        if value is None:
            return nullable
        if not (_is_int(value) if integer else _is_number(value)):
            return False
        if low is not None and (value <= low if low_open else value < low):
            return False
        return not (high is not None and (value >= high if high_open else value > high))

    kind = "an integer" if integer else "a finite number"
    if low is not None and high is not None:
        bounds = f" in {'(' if low_open else '['}{low}, {high}{')' if high_open else ']'}"
    elif low is not None:
        bounds = f" {'>' if low_open else '>='} {low}"
    elif high is not None:
        bounds = f" {'<' if high_open else '<='} {high}"
    else:
        bounds = ""
    allowed = f"{kind}{bounds}" + (" or null" if nullable else "") + (f" ({note})" if note else "")
    return Rule(key, check, allowed)


def choice(key: str, options: Iterable[Any], nullable: bool = False) -> Rule:
    options = tuple(options)
    return Rule(key, lambda v: (v is None and nullable) or v in options, f"one of {list(options)}" + (" or null" if nullable else ""))


def boolean(key: str) -> Rule:
    return Rule(key, lambda v: isinstance(v, bool), "true or false")


# ----------------------------------------------------------------------------- rule sets
def sampling_rules(prefix: str, *, cot: bool = True, from_card: bool = False) -> list[Rule]:
    """Sampling knobs under ``prefix`` (``algo`` in training, ``generation`` in generate/eval).

    ``from_card``: null is allowed for the sampling settings (generate/eval then take them from the
    checkpoint's run card, else t2ir1's defaults: :mod:`t2ir1.policy.run_card`).
    """
    n = from_card
    rules = [
        number(f"{prefix}.cfg_weight", 0, nullable=n, note="1 = no guidance, 0 = unconditional only; paper: 5"),
        number(f"{prefix}.text_temperature", 0, nullable=n, note="0 = greedy; paper: 1.0"),
        number(f"{prefix}.image_temperature", 0, nullable=n, note="0 = greedy; paper: 1.0"),
        number(f"{prefix}.text_top_k", 0, integer=True, nullable=n, note="0 = off"),
        number(f"{prefix}.image_top_k", 0, integer=True, nullable=n, note="0 = off"),
        number(f"{prefix}.text_top_p", 0, 1, low_open=True, nullable=n, note="1 = off"),
        number(f"{prefix}.image_top_p", 0, 1, low_open=True, nullable=n, note="1 = off"),
        choice(f"{prefix}.cfg_uncond", CFG_UNCOND, nullable=n),
        number(f"{prefix}.chunk_rows", 1, integer=True, nullable=True),
        choice(f"{prefix}.compile", COMPILE_MODES),
        number(f"{prefix}.memory_budget_gib", 0, low_open=True, nullable=True, note="null = from free memory"),
        number(f"{prefix}.decode_micro_batch_size", 1, integer=True),
        number(f"{prefix}.batch_size", 1, integer=True),
    ]
    if cot:
        rules.append(number(f"{prefix}.max_new_tokens", 1, integer=True, nullable=n, note="longest semantic CoT in tokens"))
    return rules


ALGO_RULES = [
    number("algo.group_size", 1, integer=True, note="samples per prompt, G; paper: 8"),
    number("algo.new_generations_image", 1, integer=True),
    number("algo.beta", 0, note="KL coefficient; 0 = no reference model; paper: 0.01"),
    number("algo.num_iterations", 1, integer=True),
    number("algo.clip_eps_low", 0, 1, high_open=True),
    number("algo.clip_eps_high", 0),
    choice("algo.loss_aggregation", LOSS_AGGREGATIONS),
    number("algo.adv_eps", 0, low_open=True, note="added to the group std; paper: 1e-4"),
    boolean("algo.adv_scale"),
    number("algo.logprob_chunk_logits", 1, integer=True),
    number("algo.seed", integer=True),
    boolean("algo.filter_groups"),
    number("algo.max_gen_rounds", 0, integer=True, note="generation rounds per batch with filter_groups; 0 = no bound"),
]

DATA_RULES = [
    number("data.batch_size", 1, integer=True, note="prompts per device per micro-step"),
    number("data.num_workers", 0, integer=True),
    number("data.holdout", 0, integer=True),
    number("data.max_prompt_tokens", 1, integer=True, nullable=True, note="null = no limit"),
    choice("data.long_prompts", PROMPT_POLICIES),
    number("data.source.n", 1, integer=True),
    number("data.source.color_prob", 0, 1),
    number("data.source.generator.min_count", 1, integer=True),
    number("data.source.generator.max_count", 1, integer=True),
    number("data.source.generator.color_prob", 0, 1),
]

TRAINER_RULES = [
    Rule("trainer.max_steps", lambda v: _is_int(v) and (v >= 1 or v == -1), "an integer >= 1 (or -1 = epochs decide)"),
    number("trainer.accumulate_grad_batches", 1, integer=True),
    number("trainer.gradient_clip_val", 0, nullable=True, note="0 or null = no clipping"),
    number("trainer.log_every_n_steps", 1, integer=True),
    number("optimizer.lr", 0, low_open=True),
    number("optimizer.weight_decay", 0),
    Rule("optimizer.betas", lambda v: isinstance(v, list) and len(v) == 2 and all(_is_number(b) and 0 <= b < 1 for b in v),
         "two numbers in [0, 1)"),
    number("lr_scheduler.num_warmup_steps", 0, integer=True),
    Rule("trainer.devices", lambda v: v == "auto" or (_is_int(v) and (v >= 1 or v == -1)) or isinstance(v, list),
         "an integer >= 1, -1 (all), a list of device ids, or 'auto'"),
    number("trainer.num_nodes", 1, integer=True),
    number("seed", integer=True),
    number("preemption_exit_code", 1, 255, integer=True, note="non-zero, so a scheduler sees an unfinished run"),
]

CALLBACK_RULES = [
    number("callbacks.sample_grid.every_n_steps", 1, integer=True, note="optimiser steps between grids"),
    number("callbacks.sample_grid.max_images", 1, integer=True),
    number("callbacks.sample_grid.columns", 1, integer=True),
    number("callbacks.sample_grid.cell_size", 8, integer=True, note="pixels"),
    number("callbacks.checkpoint.every_n_train_steps", 0, integer=True, nullable=True, note="0 or null = only last"),
    number("callbacks.checkpoint.save_top_k", -1, integer=True, note="-1 = keep all"),
    number("callbacks.heldout.num_prompts", 1, integer=True),
    number("callbacks.heldout.every_n_steps", 0, integer=True, note="0 = before and after training only"),
    number("callbacks.heldout.batch_size", 1, integer=True),
    number("callbacks.heldout.max_new_tokens", 1, integer=True),
    number("callbacks.heldout.text_temperature", 0),
    number("callbacks.heldout.image_temperature", 0),
    number("callbacks.heldout.cfg_weight", 0),
    number("callbacks.heldout.grid_images", 0, integer=True),
    number("callbacks.heldout.plot_window", 1, integer=True),
    number("callbacks.heldout.color_threshold", 0, low_open=True),
    number("callbacks.heldout.min_area", 1, integer=True),
    number("callbacks.heldout.min_score", 0, 1),
]

# Settings of any reward member, by name (each member's YAML uses a subset).
MEMBER_RULES: dict[str, Callable[[str], Rule]] = {
    "micro_batch_size": lambda k: number(k, 1, integer=True),
    "analysis_size": lambda k: number(k, 1, integer=True),
    "context_length": lambda k: number(k, 1, integer=True),
    "min_area": lambda k: number(k, 1, integer=True),
    "target_fraction": lambda k: number(k, 0, 1, low_open=True),
    "box_threshold": lambda k: number(k, 0, 1),
    "iou_threshold": lambda k: number(k, 0, 1),
    "nms_iou": lambda k: number(k, 0, 1),
    "min_score": lambda k: number(k, 0, 1),
    "detected_weight": lambda k: number(k, 0, 1),
    "partial_weight": lambda k: number(k, 0, 1),
    "strict_weight": lambda k: number(k, 0, 1),
    "near_threshold": lambda k: number(k, 0, low_open=True),
    "color_threshold": lambda k: number(k, 0, low_open=True),
    "dtype": lambda k: choice(k, REWARD_DTYPES),
}

MODEL_RULES = [
    choice("model.dtype", MODEL_DTYPES),
    boolean("model.trust_remote_code"),
]


# ----------------------------------------------------------------------------- evaluation
def _value(cfg: DictConfig, key: str) -> Any:
    try:
        value = OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=False)
    except Exception:  # an interpolation that only a running Hydra job resolves: not a user value
        return _MISSING
    if isinstance(value, DictConfig | ListConfig):
        return OmegaConf.to_container(value, resolve=True)
    return value


def _problems(cfg: DictConfig, rules: Iterable[Rule]) -> list[str]:
    problems = []
    for rule in rules:
        value = _value(cfg, rule.key)
        if value is _MISSING:
            continue
        if not rule.check(value):
            problems.append(f"{rule.key}={value!r}: must be {rule.allowed}")
    return problems


def _reward_rules(cfg: DictConfig) -> tuple[list[Rule], list[str]]:
    """Rules for each present reward member, plus problems of the weights as a whole."""
    rules = [choice("reward.nan_policy", NAN_POLICIES)]
    problems: list[str] = []
    members = _value(cfg, "reward.members")
    weights = _value(cfg, "reward.weights")
    if isinstance(members, Mapping):
        for name, member in members.items():
            if not isinstance(member, Mapping):
                continue
            for setting in member:
                if setting in MEMBER_RULES:
                    rules.append(MEMBER_RULES[setting](f"reward.members.{name}.{setting}"))
    if isinstance(weights, Mapping):
        rules += [number(f"reward.weights.{name}", note="weight of this member in the summed reward") for name in weights]
        if isinstance(members, Mapping) and set(weights) != set(members):
            problems.append(
                f"reward.weights keys {sorted(weights)} must equal reward.members keys {sorted(members)}: "
                "give every member exactly one weight"
            )
        elif weights and all(_is_number(w) and w == 0 for w in weights.values()):
            problems.append("reward.weights are all 0: every advantage would be 0; give at least one member a weight")
    return rules, problems


def _raise(problems: list[str], entry: str) -> None:
    if problems:
        listing = "\n  ".join(problems)
        raise ConfigError(
            f"{entry}: {len(problems)} configuration value(s) out of range (nothing was loaded):\n  {listing}\n"
            "Fix them on the command line (key=value) or in the YAML the key comes from."
        )


def check_train_config(cfg: DictConfig) -> None:
    """Ranges, types and combinations of ``train.py``'s settings; one :class:`ConfigError` listing all."""
    reward_rules, problems = _reward_rules(cfg)
    rules = [*ALGO_RULES, *sampling_rules("algo", cot=False), *sampling_rules("rollout", cot=False),
             *DATA_RULES, *TRAINER_RULES, *CALLBACK_RULES,
             *MODEL_RULES, *reward_rules]
    problems = _problems(cfg, rules) + problems
    levels = _value(cfg, "algo.levels")
    if levels is not _MISSING:
        if not isinstance(levels, list) or not levels or any(level not in LEVELS for level in levels):
            problems.append(f"algo.levels={levels!r}: must be a non-empty subset of {list(LEVELS)}")
        elif "semantic" in levels:
            problems += _problems(cfg, [number("algo.max_new_tokens", 1, integer=True,
                                               note="the semantic level samples a CoT of at least one token")])
    low, high = _value(cfg, "data.source.generator.min_count"), _value(cfg, "data.source.generator.max_count")
    if _is_int(low) and _is_int(high) and high < low:
        problems.append(
            f"data.source.generator.max_count={high} < data.source.generator.min_count={low}: "
            "the largest count must be at least the smallest"
        )
    warmup, steps = _value(cfg, "lr_scheduler.num_warmup_steps"), _value(cfg, "trainer.max_steps")
    if _is_int(warmup) and _is_int(steps) and steps >= 1 and warmup >= steps:
        problems.append(
            f"lr_scheduler.num_warmup_steps={warmup} >= trainer.max_steps={steps}: the run would end before "
            "the warm-up does"
        )
    group, per_completion = _value(cfg, "algo.group_size"), _value(cfg, "algo.new_generations_image")
    if _is_int(group) and _is_int(per_completion) and group >= 1 and per_completion >= 1 and group * per_completion < 2:
        problems.append(
            f"algo.group_size={group} x algo.new_generations_image={per_completion}: the product must be >= 2 "
            "(group-normalised advantages need two samples per prompt)"
        )
    _raise(problems, "train.py")


def _inference_problems(cfg: DictConfig) -> list[str]:
    rules = [*sampling_rules("generation", cot=False, from_card=True), *MODEL_RULES, boolean("use_cot"), number("seed", integer=True)]
    problems = _problems(cfg, rules)
    if _value(cfg, "use_cot") is True:
        problems += _problems(cfg, [number("generation.max_new_tokens", 1, integer=True, nullable=True,
                                           note="use_cot=true samples a CoT of at least one token")])
    return problems


def check_generate_config(cfg: DictConfig) -> None:
    """``generate.py``'s settings; one :class:`ConfigError` listing all problems."""
    rules = [
        number("n_per_prompt", 1, integer=True),
        number("grid.max_images", 1, integer=True),
        number("grid.columns", 1, integer=True),
        number("grid.cell_size", 8, integer=True),
        number("grid.cot_chars", 0, integer=True),
    ]
    _raise(_inference_problems(cfg) + _problems(cfg, rules), "generate.py")


def check_eval_config(cfg: DictConfig) -> None:
    """``eval.py``'s settings; one :class:`ConfigError` listing all problems."""
    rules = [
        number("score.batch_size", 1, integer=True),
        number("limit", 1, integer=True, nullable=True, note="null = every prompt"),
        number("benchmark.n_per_prompt", 1, integer=True),
        number("processes", 1, integer=True, note="worker processes; one per GPU when there are GPUs"),
    ]
    _raise(_inference_problems(cfg) + _problems(cfg, rules), "eval.py")


# ----------------------------------------------------------------------------- code from configs
def _nested_targets(node: Any, path: str) -> list[str]:
    found = []
    if isinstance(node, Mapping):
        for key, value in node.items():
            child = f"{path}.{key}"
            if key == "_target_":
                found.append(child)
            found += _nested_targets(value, child)
    elif isinstance(node, list | tuple):
        for index, value in enumerate(node):
            found += _nested_targets(value, f"{path}[{index}]")
    return found


def command_line_overrides() -> list[str]:
    """The overrides typed on the command line of the running Hydra job (empty outside Hydra)."""
    try:
        from hydra.core.hydra_config import HydraConfig

        if not HydraConfig.initialized():
            return []
        return list(HydraConfig.get().overrides.task)
    except (ImportError, ValueError, AttributeError):
        return []


def remote_code_requested(overrides: Iterable[str]) -> bool:
    """True when the command line itself says ``model.trust_remote_code=true``."""
    for override in overrides:
        key, _, value = override.lstrip("+~").partition("=")
        if key == "model.trust_remote_code" and value.strip().lower() == "true":
            return True
    return False


def check_model_node(node: Any, source: str, remote_code_allowed: bool | None = None) -> dict[str, Any]:
    """The ``model`` node as a plain dict, safe to instantiate; raises :class:`UntrustedConfigError`.

    Only the project's own loaders (:data:`MODEL_TARGETS`) may be named, and no nested
    ``_target_`` may appear (Hydra would instantiate it too). ``trust_remote_code=true`` is
    refused unless ``remote_code_allowed`` (default: the running Hydra job's command line
    says ``model.trust_remote_code=true``).

    Args:
        node: the ``model`` config node (DictConfig or dict).
        source: where the node came from, for the message (a file path or an entry point).
        remote_code_allowed: whether the user's own command line asked for remote code.
    """
    container = OmegaConf.to_container(node, resolve=True) if isinstance(node, DictConfig) else dict(node)
    target = container.get("_target_")
    if target not in MODEL_TARGETS:
        raise UntrustedConfigError(
            f"{source}: model._target_={target!r} is not one of the project's model loaders {list(MODEL_TARGETS)}; "
            "it is refused so that a config file cannot make t2ir1 call arbitrary code. Load other weights "
            "with model=janus_pro_1b model.name_or_path=DIR (a transformers Janus directory)."
        )
    nested = [path for path in _nested_targets(container, "model") if path != "model._target_"]
    if nested:
        raise UntrustedConfigError(
            f"{source}: {nested[0]} is set; a model node may not instantiate anything besides its loader. "
            "Remove that key."
        )
    if container.get("trust_remote_code"):
        if remote_code_allowed is None:
            remote_code_allowed = remote_code_requested(command_line_overrides())
        if not remote_code_allowed:
            raise UntrustedConfigError(
                f"{source}: model.trust_remote_code=true would run Python files shipped with the weights; it is "
                "only honoured when typed on the command line (model.trust_remote_code=true, or "
                "--trust-remote-code for python -m t2ir1.export)."
            )
    return container


def build_policy(node: Any, source: str, remote_code_allowed: bool | None = None):
    """Instantiate a checked ``model`` node (see :func:`check_model_node`) into a ``JanusPolicy``."""
    import functools

    from hydra.errors import InstantiationException
    from hydra.utils import instantiate

    container = check_model_node(node, source, remote_code_allowed)
    try:
        factory = instantiate(container)
    except InstantiationException as error:  # the loader's own message (it names the path) is the useful one
        raise (error.__cause__ or error) from None
    # model configs are partials (the training module builds them in configure_model)
    return factory() if isinstance(factory, functools.partial) else factory
