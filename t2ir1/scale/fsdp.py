"""FSDP2 for the Janus policy through Lightning's ``ModelParallelStrategy``.

Lightning 2.6 offers two FSDP strategies: ``FSDPStrategy`` wraps modules in the FSDP1
``FullyShardedDataParallel`` class; ``ModelParallelStrategy`` leaves the sharding to
``LightningModule.configure_model`` and expects the FSDP2 ``fully_shard`` API there. The
issue asks for FSDP2, so :class:`FSDP2Strategy` is a ``ModelParallelStrategy`` with

- one data-parallel mesh dimension over every process (its ``"auto"`` sizes would make the
  GPUs of a node a tensor-parallel group, which this model does not use), and
- the sharding settings as constructor arguments (so they are Hydra config values), applied
  by :func:`shard_janus` when the module calls :meth:`FSDP2Strategy.shard_policy`.

What is sharded (one FSDP unit each, so that every module the rollout and the log-prob pass
call directly gather their own parameters): each decoder layer, the text embeddings, the
language model (its final norm), ``lm_head``; the same for the frozen reference. The frozen Janus
parts (vision encoder, VQ model, generation embeddings/aligner/head) are not sharded: they
are small next to the decoder, need no gradients and get no optimiser state.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from torch import nn

from t2ir1.dtypes import DTYPES

if TYPE_CHECKING:
    from torch.distributed.device_mesh import DeviceMesh

log = logging.getLogger(__name__)


def _dtype(value: str | torch.dtype | None, field: str) -> torch.dtype | None:
    if value is None or isinstance(value, torch.dtype):
        return value
    if value not in DTYPES:
        raise ValueError(
            f"trainer.strategy.{field}={value!r} is not a dtype; use one of {sorted(DTYPES)} or null"
        )
    return DTYPES[value]


@dataclass(frozen=True)
class ShardingOptions:
    """How :func:`shard_janus` shards.

    Attributes:
        param_dtype: dtype of the gathered (compute) parameters; ``None`` = the stored dtype.
        reduce_dtype: dtype of the gradient reduce-scatter; ``None`` = ``param_dtype``.
        master_dtype: dtype the *trained* parameters are stored (and stepped) in before
            sharding; ``float32`` keeps an lr of 1e-6 from vanishing in bf16 rounding.
            ``None`` keeps the loaded dtype.
        reshard_after_forward: free gathered layers after their forward (ZeRO-3) or keep
            them until backward (ZeRO-2 like, more memory, less communication).
        activation_checkpointing: recompute each decoder layer in the backward pass.
        cpu_offload: keep sharded parameters, gradients and optimiser state in CPU memory.
    """

    param_dtype: torch.dtype | None = torch.bfloat16
    reduce_dtype: torch.dtype | None = torch.float32
    master_dtype: torch.dtype | None = torch.float32
    reshard_after_forward: bool = True
    activation_checkpointing: bool = False
    cpu_offload: bool = False


def is_sharded(module: nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(module, FSDPModule)


def _checkpointed(layers: nn.ModuleList) -> None:
    """Wrap every decoder layer for activation checkpointing (non-reentrant).

    transformers' own ``gradient_checkpointing_enable`` is not used: it drops the KV cache
    whenever the module is in training mode, which the rollout (no grad, training mode) needs.
    Under ``no_grad`` the non-reentrant checkpoint saves and recomputes nothing.
    """
    from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import CheckpointImpl, checkpoint_wrapper

    for index, layer in enumerate(layers):
        layers[index] = checkpoint_wrapper(layer, checkpoint_impl=CheckpointImpl.NO_REENTRANT)


def _shard_decoder(
    language_model: nn.Module,
    head: nn.Module,
    mesh: DeviceMesh,
    options: ShardingOptions,
    trained: bool,
    output_dtype: torch.dtype,
) -> None:
    """``fully_shard`` each decoder layer, the text embeddings, the language model's rest, the head.

    The language model's hidden states are cast to ``output_dtype`` (the frozen generation
    head's dtype), since that head is not sharded and gets no mixed-precision cast of its own.
    """
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    if trained and options.master_dtype is not None:
        language_model.to(options.master_dtype)
        head.to(options.master_dtype)
    if trained and options.activation_checkpointing:
        _checkpointed(language_model.layers)
    precision = MixedPrecisionPolicy(param_dtype=options.param_dtype, reduce_dtype=options.reduce_dtype)
    # pinned host memory speeds up copies to a GPU; a CPU mesh (gloo tests) has nothing to pin for
    offload = CPUOffloadPolicy(pin_memory=mesh.device_type == "cuda") if options.cpu_offload else OffloadPolicy()
    kwargs = {"mesh": mesh, "offload_policy": offload}
    # a frozen model is never backpropagated through: free its gathered layers at once
    reshard = options.reshard_after_forward if trained else True
    for layer in language_model.layers:
        fully_shard(layer, reshard_after_forward=reshard, mp_policy=precision, **kwargs)
    to_frozen = MixedPrecisionPolicy(
        param_dtype=options.param_dtype, reduce_dtype=options.reduce_dtype, output_dtype=output_dtype
    )
    # the log-prob pass embeds prompt text itself (get_input_embeddings()(ids)): its own unit
    fully_shard(
        language_model.get_input_embeddings(), reshard_after_forward=reshard, mp_policy=to_frozen, **kwargs
    )
    fully_shard(language_model, reshard_after_forward=reshard, mp_policy=to_frozen, **kwargs)
    fully_shard(head, reshard_after_forward=reshard, mp_policy=precision, **kwargs)
    # FSDP2 makes the first unit that runs forward a root; the token-level log-prob pass can call
    # the embeddings before the language model ever ran, which would make them a root of their
    # own and the language model's later forward fail. Fix the roots now: this is the lazy init its
    # first forward runs. Private on purpose: torch 2.14's public FSDPModule.unshard() only lazily
    # inits the parameter groups, not the root state, and fully_shard/FSDPModule offer no other hook.
    language_model._get_fsdp_state()._lazy_init()


def shard_janus(policy, reference, mesh: DeviceMesh, options: ShardingOptions) -> None:
    """Shard a ``JanusPolicy`` (and its ``ReferenceModel``, when given) in place with FSDP2.

    Idempotent: an already sharded policy is left as it is. The reference stays in eval mode
    with ``requires_grad=False``; it shares the policy's (unsharded, frozen) generation parts.
    """
    if is_sharded(policy.lm_head):
        return
    frozen_dtype = next(policy.generation_head.parameters()).dtype
    _shard_decoder(
        policy.language_model, policy.lm_head, mesh, options, trained=True, output_dtype=frozen_dtype
    )
    # a LoRA policy's reference is the policy itself under disabled adapters: sharded with it
    if reference is not None and not getattr(reference, "shares_policy_weights", False):
        _shard_decoder(
            reference.language_model,
            reference.lm_head,
            mesh,
            options,
            trained=False,
            output_dtype=frozen_dtype,
        )
        reference.eval().requires_grad_(False)
    log.info(
        "FSDP2: sharded %d decoder layers over %d ranks (param %s, reduce %s, master %s, AC %s, offload %s)",
        len(policy.language_model.layers),
        mesh.size(),
        options.param_dtype,
        options.reduce_dtype,
        options.master_dtype,
        options.activation_checkpointing,
        options.cpu_offload,
    )


class FSDP2Strategy(ModelParallelStrategy):
    """Lightning's FSDP2 strategy as plain data parallelism over all ``num_nodes * devices`` processes.

    Args:
        param_dtype, reduce_dtype, master_dtype, reshard_after_forward, activation_checkpointing,
            cpu_offload: see :class:`ShardingOptions` (dtypes by name: ``"bfloat16"``, ...).
        save_distributed_checkpoint: each rank writes its shard (a checkpoint folder) instead of
            gathering full weights on rank 0.
        process_group_backend: ``nccl`` / ``gloo``; ``None`` picks by device.
    """

    def __init__(
        self,
        param_dtype: str | None = "bfloat16",
        reduce_dtype: str | None = "float32",
        master_dtype: str | None = "float32",
        reshard_after_forward: bool = True,
        activation_checkpointing: bool = False,
        cpu_offload: bool = False,
        save_distributed_checkpoint: bool = True,
        process_group_backend: str | None = None,
    ) -> None:
        super().__init__(
            tensor_parallel_size=1,
            save_distributed_checkpoint=save_distributed_checkpoint,
            process_group_backend=process_group_backend,
        )
        self.sharding = ShardingOptions(
            param_dtype=_dtype(param_dtype, "param_dtype"),
            reduce_dtype=_dtype(reduce_dtype, "reduce_dtype"),
            master_dtype=_dtype(master_dtype, "master_dtype"),
            reshard_after_forward=reshard_after_forward,
            activation_checkpointing=activation_checkpointing,
            cpu_offload=cpu_offload,
        )

    def setup_environment(self) -> None:
        # a single data-parallel dimension over every process (tensor_parallel_size=1 above). Private
        # field on purpose: ModelParallelStrategy takes data_parallel_size only in its constructor,
        # before the Trainer sets num_nodes/num_processes, and its "auto" means num_nodes (one
        # data-parallel rank per node, tensor parallelism within it); there is no public setter.
        self._data_parallel_size = self.num_nodes * self.num_processes
        super().setup_environment()

    def shard_policy(self, policy, reference=None) -> None:
        """Called from ``configure_model``: shard the policy and the reference over the data-parallel mesh."""
        shard_janus(policy, reference, self.device_mesh["data_parallel"], self.sharding)


def optimizer_parameter_count(parameters: Iterable[nn.Parameter]) -> int:
    """Number of elements of the parameters an optimiser holds (local shards under FSDP2)."""
    total = 0
    for parameter in parameters:
        local = parameter.to_local() if hasattr(parameter, "to_local") else parameter
        total += local.numel()
    return total
