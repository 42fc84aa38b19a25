"""Why ``ResumableDataLoader`` is not torchdata's ``StatefulDataLoader`` (issue 16 point 5).

Runs the three exact-resume scenarios of the hand-rolled loader's tests on ``StatefulDataLoader``
and prints, for each, whether the resumed stream equals the uninterrupted one. Needs
``pip install torchdata`` (not a dependency); run ``python benchmarks/stateful_dataloader_probe.py``.

Measured with torchdata 0.11.0 / torch 2.14: (1) the rest of the current epoch resumes exactly,
but the epoch after it is shuffled differently, and a state taken at an epoch's end resumes into
an empty epoch; (2) with ``repeat_chunks`` on top (``algo.num_iterations``) the servings still
owed for the buffered chunk are lost; (3) refills drawn from its iterator resume exactly.
"""

from __future__ import annotations

import torch

from t2ir1.data.repeat import repeat_chunks


def _loader(data, seed: int = 3, **kwargs):
    from torchdata.stateful_dataloader import StatefulDataLoader

    return StatefulDataLoader(data, shuffle=True, generator=torch.Generator().manual_seed(seed), **kwargs)


def _lists(loader) -> list:
    return [batch.tolist() for batch in loader]


def across_epochs(stop: int) -> bool:
    """tests/test_workflow_checkpointing.py::test_loader_resumes_mid_epoch_and_across_epochs."""
    reference = _loader(list(range(10)), batch_size=3)
    uninterrupted = _lists(reference) + _lists(reference)
    first = _loader(list(range(10)), batch_size=3)
    iterator = iter(first)
    seen = [next(iterator).tolist() for _ in range(stop)]
    resumed = _loader(list(range(10)), seed=123, batch_size=3)
    resumed.load_state_dict(first.state_dict())
    rest = _lists(resumed) + (_lists(resumed) if stop < 4 else [])
    return seen + rest == uninterrupted


def repeats_mid_cycle() -> bool:
    """tests/data/test_repeat.py::test_resumable_loader_repeats_and_resumes_exactly_mid_cycle."""

    def names(stream):
        return ["".join(item) for item in stream]

    def make():
        return _loader(list("abcdef"), batch_size=1, collate_fn=list)

    uninterrupted = names(repeat_chunks(iter(make()), chunk=2, repeats=2))
    first = make()
    stream = repeat_chunks(iter(first), chunk=2, repeats=2)
    seen = [next(stream) for _ in range(5)]
    resumed = make()
    resumed.load_state_dict(first.state_dict())
    return names(seen) + names(repeat_chunks(iter(resumed), chunk=2, repeats=2)) == uninterrupted


def refills() -> bool:
    """tests/rollout/test_dynamic_sampling.py::test_refills_are_drawn_again_on_resume."""
    data = [[i] for i in range(8)]
    first = _loader(data, batch_size=None)
    iterator = iter(first)
    next(iterator), next(iterator), next(iterator)  # served, served, refill
    next(iterator)  # served
    state = first.state_dict()
    rest = list(iterator)
    resumed = _loader(data, batch_size=None)
    resumed.load_state_dict(state)
    return list(resumed) == rest


def main() -> None:
    for stop in (1, 2, 4):
        print(f"resume after {stop} of 4 batches, then the next epoch: exact={across_epochs(stop)}")
    print(f"num_iterations=2 (repeat_chunks), resume after 5 servings: exact={repeats_mid_cycle()}")
    print(f"refills drawn from the iterator: exact={refills()}")


if __name__ == "__main__":
    main()
