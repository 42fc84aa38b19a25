"""The loss normaliser of a whole optimiser step, over ranks and gradient-accumulation micro-batches.

A token mean over a step's rows divides the step's summed per-token losses by the step's
token count. Data parallelism averages gradients over ``W`` ranks and Lightning divides each
of ``A`` micro-batch losses by ``A``, so a micro-batch whose loss is ``total / c`` (a constant
``c`` shared by every rank and micro-batch) leaves the accumulated gradient
``sum(grad total) / (c * W * A)``. Multiplying it by ``c * W * A / N``, with ``N`` the sum of
every rank's and micro-batch's normaliser (one all-reduce per optimiser step), gives
``sum(grad total) / N``: the gradient of the aggregate over all the step's rows, independent
of how the rows were split (verl ``agg_loss`` takes the global token count the same way; it
knows it up front because it samples the whole step before updating, which Lightning's
accumulation does not).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor


def gradient_correction(
    local_normalizer: Tensor, constant: float, replicas: int, all_reduce_sum: Callable[[Tensor], Tensor]
) -> float:
    """The factor ``constant * replicas / sum over ranks(local_normalizer)``.

    Args:
        local_normalizer: this rank's summed normalisers of the step's micro-batches (scalar).
        constant: the ``c`` every micro-batch loss was divided by.
        replicas: ranks x accumulated micro-batches (``W * A``), what gradient averaging and
            Lightning's accumulation divide by.
        all_reduce_sum: sums a tensor over ranks (the identity on one process).

    Raises:
        ValueError: the step's normaliser is not positive (no tokens in the whole step).
    """
    total = float(all_reduce_sum(local_normalizer.detach().float().reshape(1).clone())[0])
    if not total > 0:
        raise ValueError(
            f"the loss normaliser of this optimiser step over all ranks is {total}; every row of every rank "
            "was empty, so there is no loss to normalise"
        )
    return constant * replicas / total


@torch.no_grad()
def scale_gradients(parameters: Iterable[torch.nn.Parameter], factor: float) -> None:
    """Multiply every existing gradient in place (sharded DTensor gradients included)."""
    for parameter in parameters:
        if parameter.grad is not None:
            parameter.grad.mul_(factor)
