"""Checkpoint export and conversion.

``python -m t2ir1.export CKPT OUT``
    A training checkpoint (Lightning ``.ckpt``) -> a transformers-format Janus directory:
    the base model of the run (from the run's ``.hydra/config.yaml``, or ``--base``) with the
    trained policy weights merged in (LoRA adapters, ``model.lora``, folded into the base
    weights), plus its processor. Loadable with
    ``JanusForConditionalGeneration.from_pretrained(OUT)`` and usable as
    ``model.name_or_path=OUT`` in training, ``generate.py`` and ``eval.py``. The checkpoint's run
    card (prompts, sampling settings: :mod:`t2ir1.policy.run_card`) is written next to the weights.

``python -m t2ir1.export convert-deepseek SRC DST [--config-from HF_DIR]``
    DeepSeek's original Janus(-Pro) layout (``pytorch_model.bin`` / ``*.safetensors`` with
    ``language_model.model.*``, ``gen_vision_model.*`` ... keys and a DeepSeek
    ``config.json``) -> transformers format, so that DeepSeek's checkpoints and the released
    T2I-R1 weights can be loaded (``--reasoning-prompt t2i_r1`` writes a run card so that they
    are evaluated with the original prompt). The key renames follow the layout transformers' own Janus
    conversion maps (merged ``qkv`` / ``kv`` projections are split, the attention-pool head
    and the VQ codebook-usage buffer are dropped).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import pickle
import re
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from transformers import JanusConfig, JanusForConditionalGeneration

from t2ir1.dtypes import DTYPES
from t2ir1.policy import run_card
from t2ir1.policy.prompts import load_reasoning_prompt

log = logging.getLogger(__name__)

# Prefix of the policy's weights in a training checkpoint's state_dict.
POLICY_PREFIX = "policy.model."


class ExportError(RuntimeError):
    """A checkpoint or directory that cannot be exported or converted."""


# ----------------------------------------------------------------------------- training checkpoints
def policy_state_from_checkpoint(ckpt_path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The ``JanusForConditionalGeneration`` state dict inside a training checkpoint.

    ``ckpt_path`` is a Lightning checkpoint file, or the folder a sharded (``trainer=fsdp``)
    run writes instead (PyTorch distributed checkpoint: one ``.distcp`` file per rank and a
    ``.metadata`` index); the folder's shards are consolidated here, on CPU, policy weights only.
    """
    path = Path(ckpt_path).expanduser()
    if path.is_dir():
        state = _distributed_checkpoint_state(path, f"state_dict.{POLICY_PREFIX}")
        if not state:
            raise ExportError(
                f"{path} is a distributed checkpoint without '{POLICY_PREFIX}*' weights; it was not written "
                "by t2ir1's BiCoTGRPOModule"
            )
        return state
    if not path.is_file():
        raise ExportError(
            f"{path}: no such checkpoint (training writes <output_dir>/checkpoints/last.ckpt: a file, "
            "or a folder under trainer=fsdp)"
        )
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        from t2ir1.policy.janus import describe_load_error

        raise ExportError(
            f"{path} cannot be read as a weights-only training checkpoint ({describe_load_error(error)}). "
            "It is corrupt, truncated, or holds pickled objects (never unpickled here); use a last.ckpt or "
            "step-numbered file written by a t2ir1 run."
        ) from None
    state = checkpoint.get("state_dict") if isinstance(checkpoint, dict) else None
    if not state:
        raise ExportError(f"{path} has no state_dict; is it a Lightning checkpoint written by train.py?")
    policy = {key[len(POLICY_PREFIX) :]: value for key, value in state.items() if key.startswith(POLICY_PREFIX)}
    if not policy:
        raise ExportError(
            f"{path} holds no '{POLICY_PREFIX}*' weights (found e.g. {list(state)[:3]}); "
            "it was not written by t2ir1's BiCoTGRPOModule"
        )
    return policy


class _MetadataUnpickler(pickle.Unpickler):
    """Unpickles a distributed checkpoint's ``.metadata`` index and nothing else: only the
    checkpoint metadata classes, torch sizes/dtypes/layouts and plain containers may be
    built (the index is a pickle; the tensor shards themselves are read weights-only by torch)."""

    _TORCH = {"Size", "device", "layout", "memory_format", "strided", "contiguous_format"}
    _BUILTINS = {
        ("collections", "OrderedDict"),
        ("builtins", "set"),
        ("builtins", "frozenset"),
        ("builtins", "slice"),
        # maps a layout's name ("torch.strided") to the layout; torch's weights-only unpickler allows it too
        ("torch.serialization", "_get_layout"),
        # where the checkpoint was written (StorageMeta.checkpoint_id): a path, built, never opened
        ("pathlib", "PosixPath"),
        ("pathlib", "PurePosixPath"),
        ("pathlib", "WindowsPath"),
        ("pathlib", "PureWindowsPath"),
    }

    def find_class(self, module: str, name: str):
        allowed = (
            module.startswith("torch.distributed.checkpoint.")
            or (module == "torch" and (name in self._TORCH or isinstance(getattr(torch, name, None), torch.dtype)))
            or (module, name) in self._BUILTINS
        )
        if not allowed:
            raise ExportError(
                f"distributed checkpoint metadata asks for {module}.{name}, which a checkpoint index never holds; "
                "the folder is not a trustworthy t2ir1 checkpoint (nothing was executed)"
            )
        return super().find_class(module, name)


def _distributed_checkpoint_state(path: Path, prefix: str) -> dict[str, torch.Tensor]:
    """Full (unsharded) tensors of a distributed checkpoint folder whose keys start with
    ``prefix``, keyed without it; loaded in this process alone (no process group)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    index = path / ".metadata"
    if not index.is_file():
        raise ExportError(
            f"{path} is a directory but not a distributed checkpoint (no .metadata); pass a checkpoint file, "
            f"e.g. {path / 'last.ckpt'}, or a folder written by trainer=fsdp"
        )

    class WeightsOnlyReader(dcp.FileSystemReader):
        def read_metadata(self, *args, **kwargs):
            with open(index, "rb") as stream:
                return _MetadataUnpickler(stream).load()

    reader = WeightsOnlyReader(str(path))
    metadata = reader.read_metadata()
    state = {
        key: torch.empty(tuple(meta.size), dtype=meta.properties.dtype)
        for key, meta in metadata.state_dict_metadata.items()
        if key.startswith(prefix) and isinstance(meta, TensorStorageMetadata)
    }
    if state:
        dcp.load(state, storage_reader=reader, no_dist=True)
    return {key[len(prefix) :]: value for key, value in state.items()}


def load_policy_weights(policy, ckpt_path: str | os.PathLike) -> None:
    """Copy a training checkpoint's policy weights into ``policy`` (a ``JanusPolicy``), all or nothing."""
    state = policy_state_from_checkpoint(ckpt_path)
    expected = policy.model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if any(".lora_" in key for key in unexpected):
        raise ExportError(
            f"{ckpt_path} holds LoRA adapters (model.lora) but the base model has none: export with the run's "
            "own config (--config <run>/.hydra/config.yaml, the default) so that the adapters can be merged."
        )
    if missing or unexpected or mismatched:
        raise ExportError(
            f"{ckpt_path} does not fit this model: {len(missing)} missing (e.g. {missing[:2]}), "
            f"{len(unexpected)} unexpected (e.g. {unexpected[:2]}), {len(mismatched)} of another shape "
            f"(e.g. {mismatched[:2]}). Use the model config the run was trained with (its .hydra/config.yaml)."
        )
    policy.model.load_state_dict(state, strict=True)
    log.info("loaded %d policy tensors from %s", len(state), ckpt_path)


def run_config_of(ckpt_path: Path) -> Path:
    """``<run>/.hydra/config.yaml`` for ``<run>/checkpoints/<name>.ckpt``."""
    return ckpt_path.expanduser().resolve().parent.parent / ".hydra" / "config.yaml"


def base_policy(ckpt_path: Path, base: str | None, config_path: Path | None, trust_remote_code: bool = False):
    """The untrained policy the checkpoint's weights go into: ``base`` (a transformers Janus
    directory or hub id) or the run's own ``model`` config.

    The run config is data, not a command: its ``model`` node may only name one of the
    project's loaders (``t2ir1.validation.MODEL_TARGETS``), and ``trust_remote_code`` in it
    is refused unless ``trust_remote_code`` (``--trust-remote-code``) is given here.
    """
    from omegaconf import OmegaConf

    from t2ir1.policy.janus import JanusPolicy
    from t2ir1.validation import UntrustedConfigError, build_policy

    if base is not None:
        return JanusPolicy.from_pretrained(base, dtype="float32", trust_remote_code=trust_remote_code)
    config_path = config_path or run_config_of(ckpt_path)
    if not config_path.is_file():
        raise ExportError(
            f"no run config at {config_path}; pass --base DIR (the transformers Janus the run started from) "
            "or --config <run>/.hydra/config.yaml"
        )
    try:
        run_cfg = OmegaConf.load(config_path)
        model_node = run_cfg.get("model") if hasattr(run_cfg, "get") else None
    except Exception as error:
        raise ExportError(f"{config_path} is not a readable YAML run config ({error}); pass --base DIR instead") from None
    if model_node is None:
        raise ExportError(f"{config_path} has no model node; pass --base DIR (the transformers Janus the run started from)")
    try:
        return build_policy(model_node, str(config_path), remote_code_allowed=trust_remote_code)
    except UntrustedConfigError as error:
        raise ExportError(str(error)) from None


def export_checkpoint(
    ckpt_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    base: str | None = None,
    config_path: str | os.PathLike | None = None,
    dtype: str | None = None,
    trust_remote_code: bool = False,
) -> Path:
    """Write the checkpoint's policy as a transformers Janus directory (model + processor)."""
    ckpt_path, out = Path(ckpt_path).expanduser(), Path(out_dir)
    if not ckpt_path.exists():
        raise ExportError(
            f"{ckpt_path}: no such checkpoint (training writes <output_dir>/checkpoints/last.ckpt: a file, "
            "or a folder under trainer=fsdp)"
        )
    policy = base_policy(ckpt_path, base, Path(config_path) if config_path else None, trust_remote_code)
    load_policy_weights(policy, ckpt_path)
    # LoRA runs: the adapters are folded into the base weights (a plain transformers Janus)
    policy.merge_lora()
    model = policy.model
    if dtype is not None:
        from t2ir1.policy.janus import _resolve_dtype

        model = model.to(_resolve_dtype(dtype))
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    policy.processor.save_pretrained(out)
    _write_run_card(run_card.card_from_checkpoint(ckpt_path), out, f"{ckpt_path} has no run card (written before cards existed)")
    log.info("exported %s -> %s", ckpt_path, out)
    return out


def _write_run_card(card, out: Path, missing: str) -> None:
    """The prompts and sampling settings next to the weights, so generate.py / eval.py use them."""
    if card is None:
        log.warning("%s: generate.py / eval.py will use the paper's defaults for %s", missing, out)
        return
    log.info("run card -> %s", card.save(out))


# ----------------------------------------------------------------------------- DeepSeek layout
def _split_fused(prefix: str, value: torch.Tensor, parts: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """``...qkv.weight [3D, ...]`` -> ``q_proj``/``k_proj``/``v_proj`` ``[D, ...]`` each (dim 0)."""
    pieces = torch.chunk(value, len(parts), dim=0)
    return {f"{prefix}{name}": piece.clone() for name, piece in zip(parts, pieces, strict=True)}


# (pattern, replacement) applied in order to each DeepSeek key; a None replacement drops the key.
_VISION = r"vision_model\.vision_tower\."
_VQ = "model.vqmodel."
DEEPSEEK_RULES: tuple[tuple[str, str | None], ...] = (
    # understanding vision tower (SigLIP)
    (rf"^{_VISION}attn_pool\..*", None),
    (rf"^{_VISION}pos_embed$", "model.vision_model.embeddings.position_embedding.weight"),
    (rf"^{_VISION}patch_embed\.proj\.", "model.vision_model.embeddings.patch_embedding."),
    (rf"^{_VISION}norm\.", "model.vision_model.post_layernorm."),
    (rf"^{_VISION}blocks\.(\d+)\.attn\.proj\.", r"model.vision_model.encoder.layers.\1.self_attn.projection_layer."),
    (rf"^{_VISION}blocks\.(\d+)\.attn\.", r"model.vision_model.encoder.layers.\1.self_attn."),
    (rf"^{_VISION}blocks\.(\d+)\.norm1\.", r"model.vision_model.encoder.layers.\1.layer_norm1."),
    (rf"^{_VISION}blocks\.(\d+)\.norm2\.", r"model.vision_model.encoder.layers.\1.layer_norm2."),
    (rf"^{_VISION}blocks\.(\d+)\.", r"model.vision_model.encoder.layers.\1."),
    # generation VQ model
    (r"^gen_vision_model\.quantize\.codebook_used$", None),
    (r"^gen_vision_model\.", _VQ),
    # aligners (MLP: layers.0 = fc1, layers.2 = the hidden layer after the GELU)
    (r"^gen_aligner\.layers\.0\.", "model.generation_aligner.fc1."),
    (r"^gen_aligner\.layers\.2\.", "model.generation_aligner.hidden_layers.0."),
    (r"^aligner\.layers\.0\.", "model.aligner.fc1."),
    (r"^aligner\.layers\.2\.", "model.aligner.hidden_layers.0."),
    # generation head and embeddings
    (r"^gen_head\.output_mlp_projector\.", "model.generation_head.proj_out."),
    (r"^gen_head\.", "model.generation_head."),
    (r"^gen_embed\.", "model.generation_embeddings."),
    # language model
    (r"^language_model\.lm_head\.", "lm_head."),
    (r"^language_model\.model\.", "model.language_model."),
)

# Renames inside the VQ model (applied after the prefix rule above).
VQ_RULES: tuple[tuple[str, str], ...] = (
    (r"\.decoder\.conv_blocks\.", ".decoder.up."),
    (r"\.encoder\.conv_blocks\.", ".encoder.down."),
    (r"\.res\.", ".block."),
    (r"\.mid\.0\.", ".mid.block_1."),
    (r"\.mid\.1\.", ".mid.attn_1."),
    (r"\.mid\.2\.", ".mid.block_2."),
)


def convert_deepseek_key(key: str) -> str | None:
    """The transformers name of one DeepSeek Janus key (``None``: not kept)."""
    for pattern, replacement in DEEPSEEK_RULES:
        if re.search(pattern, key):
            if replacement is None:
                return None
            key = re.sub(pattern, replacement, key, count=1)
            break
    else:
        raise ExportError(f"unknown DeepSeek Janus key {key!r}: not a Janus(-Pro) checkpoint?")
    if key.startswith(_VQ):
        for pattern, replacement in VQ_RULES:
            key = re.sub(pattern, replacement, key)
    # the SigLIP tower's norms inside each block of the aligner-free tower keep their names
    return key


def convert_deepseek_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """DeepSeek Janus state dict -> ``JanusForConditionalGeneration`` state dict."""
    converted: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        new_key = convert_deepseek_key(key)
        if new_key is None:
            continue
        fused = re.search(r"\.self_attn\.(qkv|kv)\.(weight|bias)$", new_key)
        if fused:
            names = ("q_proj", "k_proj", "v_proj") if fused.group(1) == "qkv" else ("k_proj", "v_proj")
            prefix = new_key[: fused.start()] + ".self_attn."
            converted.update(_split_fused(prefix, value, tuple(f"{n}.{fused.group(2)}" for n in names)))
        elif new_key == "model.vision_model.embeddings.position_embedding.weight":
            converted[new_key] = value.reshape(value.shape[-2], value.shape[-1])  # [1, P, D] -> [P, D]
        else:
            converted[new_key] = value
    return converted


def janus_config_from_deepseek(config: dict, tokenizer) -> JanusConfig:
    """A ``JanusConfig`` from DeepSeek's ``config.json`` (the fields it carries; the SigLIP and
    VQ architectures otherwise are the Janus-Pro defaults of ``JanusVisionConfig`` / ``JanusVQVAEConfig``)."""
    try:
        language = config["language_config"]
        vision = config["vision_config"]["params"]
        aligner = config.get("aligner_config", {}).get("params", {})
        gen_vision = config["gen_vision_config"]["params"]
        gen_aligner = config["gen_aligner_config"]["params"]
        gen_head = config["gen_head_config"]["params"]
    except (KeyError, TypeError) as err:
        raise ExportError(f"not a DeepSeek Janus config.json: missing {err}") from err
    text_keys = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                 "num_key_value_heads", "hidden_act", "max_position_embeddings", "rms_norm_eps", "rope_theta")
    text_config = {k: language[k] for k in text_keys if k in language}
    text_config.update(
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id
    )
    vision_config = {"image_size": vision.get("image_size", 384)}
    if "n_embed" in aligner:
        vision_config["projection_dim"] = aligner["n_embed"]
    if "depth" in aligner:
        vision_config["depth"] = aligner["depth"]
    vq_config = {
        "embed_dim": gen_vision.get("n_embed", 8),
        "num_embeddings": gen_vision["image_token_size"],
        "projection_dim": gen_aligner["n_embed"],
        "depth": gen_aligner.get("depth", 2),
        "image_token_embed_dim": gen_head["image_token_embed"],
    }
    return JanusConfig(
        text_config=text_config,
        vision_config=vision_config,
        vq_config=vq_config,
        image_token_id=tokenizer.convert_tokens_to_ids("<image_placeholder>"),
    )


def load_deepseek_state(src: Path) -> dict[str, torch.Tensor]:
    """All tensors of a DeepSeek checkpoint directory (safetensors preferred; ``.bin`` via weights_only)."""
    safetensor_files = sorted(src.glob("*.safetensors"))
    bin_files = sorted(src.glob("pytorch_model*.bin"))
    state: dict[str, torch.Tensor] = {}
    if safetensor_files:
        from safetensors.torch import load_file

        for file in safetensor_files:
            state.update(load_file(file))
    elif bin_files:
        for file in bin_files:
            state.update(torch.load(file, map_location="cpu", weights_only=True))
    else:
        raise ExportError(f"{src} has no *.safetensors or pytorch_model*.bin weights")
    return state


def convert_deepseek(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    config_from: str | None = None,
    dtype: str | None = None,
    reasoning_prompt: str | None = None,
) -> Path:
    """Convert a DeepSeek-layout Janus directory to transformers format (model + processor).

    Args:
        src: DeepSeek directory: weights, ``config.json``, tokenizer files, ``preprocessor_config.json``.
        dst: output directory.
        config_from: a transformers Janus directory whose ``config.json`` to use instead of
            deriving one from DeepSeek's (e.g. for architectures its config does not describe).
        dtype: cast the weights (default: keep the checkpoint's).
        reasoning_prompt: write a run card with this reasoning prompt (a name such as ``t2i_r1``,
            literal text or a file) and the original's sampling settings (CoT top-k 50), so that ``generate.py`` /
            ``eval.py`` use the prompt the weights were trained with (the released T2I-R1: ``t2i_r1``).
    """
    from transformers import AutoTokenizer, JanusImageProcessor, JanusProcessor

    from t2ir1.policy.tokenizer import CHAT_TEMPLATE

    src, dst = Path(src).expanduser(), Path(dst).expanduser()
    if not src.is_dir():
        raise ExportError(f"{src}: no such directory")
    special = {"image_token": "<image_placeholder>", "boi_token": "<begin_of_image>", "eoi_token": "<end_of_image>"}
    tokenizer = AutoTokenizer.from_pretrained(src, extra_special_tokens=special)
    if config_from is not None:
        config = JanusConfig.from_pretrained(config_from)
    else:
        deepseek_config = src / "config.json"
        if not deepseek_config.is_file():
            raise ExportError(f"{src} has no config.json; pass --config-from a transformers Janus directory")
        config = janus_config_from_deepseek(json.loads(deepseek_config.read_text()), tokenizer)
    state = convert_deepseek_state_dict(load_deepseek_state(src))
    with torch.device("meta"):
        model = JanusForConditionalGeneration(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    mismatched = sorted(k for k in set(expected) & set(state) if expected[k].shape != state[k].shape)
    if missing or unexpected or mismatched:
        raise ExportError(
            f"converted weights do not fit the Janus config: missing {missing[:4]}, unexpected {unexpected[:4]}, "
            f"shape mismatch {[(k, tuple(state[k].shape), tuple(expected[k].shape)) for k in mismatched[:4]]}"
        )
    model.load_state_dict(state, strict=True, assign=True)
    if dtype is not None:
        from t2ir1.policy.janus import _resolve_dtype

        model = model.to(_resolve_dtype(dtype))
    model.generation_config.generation_kwargs = {"boi_token_id": tokenizer.convert_tokens_to_ids("<begin_of_image>")}
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    image_size = config.vision_config.image_size
    preprocessor_file = src / "preprocessor_config.json"
    image_kwargs = {"size": {"height": image_size, "width": image_size}}
    if preprocessor_file.is_file():
        pre = json.loads(preprocessor_file.read_text())
        image_kwargs.update({k: pre[k] for k in ("image_mean", "image_std", "rescale_factor", "do_normalize") if k in pre})
    processor = JanusProcessor(
        image_processor=JanusImageProcessor(**image_kwargs),
        tokenizer=tokenizer,
        chat_template=CHAT_TEMPLATE,
        num_image_tokens=config.vision_config.num_image_tokens,
    )
    dst.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(dst, safe_serialization=True)
    processor.save_pretrained(dst)
    if reasoning_prompt is not None:
        template = load_reasoning_prompt(reasoning_prompt)
        sampling = run_card.ORIGINAL_SAMPLING  # the original samples its CoT with top-k 50
        _write_run_card(run_card.RunCard(template, training=dict(sampling), evaluation=dict(sampling)), dst, "")
    log.info("converted DeepSeek Janus %s -> %s (%d tensors)", src, dst, len(state))
    return dst


# ----------------------------------------------------------------------------- command line
def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    commands: dict[str, Callable[[list[str]], Path]] = {"convert-deepseek": _convert_cli}
    if argv and argv[0] in commands:
        commands[argv[0]](argv[1:])
    else:
        _export_cli(argv)
    return 0


def _export_cli(argv: list[str]) -> Path:
    parser = argparse.ArgumentParser(
        prog="python -m t2ir1.export",
        description="Training checkpoint -> transformers Janus directory. "
        "(DeepSeek layout -> transformers: python -m t2ir1.export convert-deepseek SRC DST)",
    )
    parser.add_argument(
        "ckpt", help="checkpoint written by train.py (e.g. <run>/checkpoints/last.ckpt: a file, or a folder under trainer=fsdp)"
    )
    parser.add_argument("out", help="output directory")
    parser.add_argument("--base", default=None, help="transformers Janus the run started from (default: the run's model config)")
    parser.add_argument("--config", default=None, help="the run's config (default: <run>/.hydra/config.yaml)")
    parser.add_argument("--dtype", default=None, choices=list(DTYPES), help="cast the weights")
    parser.add_argument(
        "--trust-remote-code", action="store_true", help="allow Python files shipped with the base weights to run"
    )
    args = parser.parse_args(argv)
    return export_checkpoint(
        args.ckpt, args.out, base=args.base, config_path=args.config, dtype=args.dtype,
        trust_remote_code=args.trust_remote_code,
    )


def _convert_cli(argv: list[str]) -> Path:
    parser = argparse.ArgumentParser(
        prog="python -m t2ir1.export convert-deepseek", description="DeepSeek Janus layout -> transformers Janus directory"
    )
    parser.add_argument("src", help="DeepSeek-format directory (config.json, weights, tokenizer files)")
    parser.add_argument("dst", help="output directory")
    parser.add_argument("--config-from", default=None, help="use this transformers Janus directory's config.json")
    parser.add_argument("--dtype", default=None, choices=list(DTYPES), help="cast the weights")
    parser.add_argument(
        "--reasoning-prompt",
        default=None,
        help="write a run card with this reasoning prompt (e.g. t2i_r1 for the released T2I-R1 weights) and the paper's sampling",
    )
    args = parser.parse_args(argv)
    return convert_deepseek(
        args.src, args.dst, config_from=args.config_from, dtype=args.dtype, reasoning_prompt=args.reasoning_prompt
    )


if __name__ == "__main__":
    raise SystemExit(main())
