"""The demo's training step now against the last commit before the generation engine, side by side.

Both versions run ``python train.py`` (the ShapeWorld demo: B = 4 prompts x G = 8, CoT <= 40
tokens, 64 image tokens, CFG 1, shipped checkpoint) for the same number of steps, alternating
round by round on the same machine, so that a slow moment of the machine hits both. A callback
loaded into both (``benchmarks/step_clock.py``, added with ``+callbacks.step_clock``) records the
wall time between consecutive batch starts: one whole step (rollout, reward, log-prob passes,
backward, optimiser, logging and the sample grid every 20 steps). The first steps of each run
are warm-up and left out; the table gives the median step of each version and their ratio.

The baseline defaults to ``a1460ab``, the last commit before the engine whose demo runs (the
engine's parent commit ``e2cf73b`` has a tree in mid-move, without ``t2ir1/rollout/sampling.py``).
It is checked out into a temporary ``git worktree`` and run with its own code and checkpoint
(the same model configuration as today's); the held-out evaluations shrink to a few records in
both, since they are not part of a step.

``--overrides`` compares instead the current demo with and without some Hydra overrides, in the
same tree (a setting's cost a step, e.g. ``--overrides algo.filter_groups=true algo.max_gen_rounds=1``).

Usage: python benchmarks/demo_step.py [--baseline a1460ab] [--steps 40] [--warmup 8] [--rounds 2]
       python benchmarks/demo_step.py --overrides KEY=VALUE [KEY=VALUE ...] [--steps 60]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASELINE = "a1460ab"


def run_demo(tree: Path, steps: int, out: Path, overrides: tuple[str, ...] = ()) -> list[float]:
    """Seconds between consecutive batch starts of ``steps`` demo steps run from ``tree`` (with ``overrides``)."""
    clock_file = out / "steps.json"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(tree), str(ROOT / "benchmarks")]),
        "T2IR1_STEP_CLOCK": str(clock_file),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2"),
    }
    command = [
        sys.executable,
        "train.py",
        f"trainer.max_steps={steps}",
        "callbacks.heldout.num_prompts=12",
        "logger=csv",
        f"hydra.run.dir={out}",
        "+callbacks.step_clock._target_=step_clock.StepClock",
        *overrides,
    ]
    result = subprocess.run(command, cwd=tree, env=env, capture_output=True, text=True)
    if result.returncode != 0 or not clock_file.exists():
        raise RuntimeError(f"the demo at {tree} failed (exit {result.returncode}):\n{result.stderr[-3000:]}")
    starts = json.loads(clock_file.read_text())
    return [b - a for a, b in zip(starts, starts[1:], strict=False)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", default=BASELINE, help="commit to compare with (default: the last before the engine)")
    parser.add_argument("--steps", type=int, default=40, help="demo steps per run")
    parser.add_argument("--warmup", type=int, default=8, help="first step intervals left out of each run")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each version, alternating")
    parser.add_argument("--overrides", nargs="+", metavar="KEY=VALUE",
                        help="compare the current demo with and without these Hydra overrides instead of a commit")  # fmt: skip
    args = parser.parse_args()
    if args.steps <= args.warmup + 1:
        raise SystemExit(f"--steps {args.steps} leaves no measured step after --warmup {args.warmup}")
    if args.overrides:
        compare_overrides(tuple(args.overrides), args.steps, args.warmup, args.rounds)
        return

    with tempfile.TemporaryDirectory(prefix="t2ir1-demo-step-") as tmp:
        baseline_tree = Path(tmp) / "baseline"
        subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", "-f", str(baseline_tree), args.baseline],
                       check=True, capture_output=True)  # fmt: skip
        try:
            arms = {f"baseline {args.baseline}": (baseline_tree, ()), "current": (ROOT, ())}
            steps = alternate(arms, args.steps, args.warmup, args.rounds, Path(tmp))
        finally:
            subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(baseline_tree)], capture_output=True)

    medians = {name: statistics.median(values) for name, values in steps.items()}
    base = medians[f"baseline {args.baseline}"]
    print(f"\n## Demo step, {args.rounds} alternating runs of {args.steps} steps each (first {args.warmup} left out)")
    print(f"| {'version':24s} | {'median step (s)':>15s} | {'steps timed':>11s} |")
    print(f"|{'-' * 26}|{'-' * 17}|{'-' * 13}|")
    for name, value in medians.items():
        print(f"| {name:24s} | {value:15.3f} | {len(steps[name]):11d} |")
    print(f"\ncurrent vs the last commit before the engine: {base / medians['current']:.2f}x faster a step (target >= 2)")


def alternate(arms: dict[str, tuple[Path, tuple[str, ...]]], steps: int, warmup: int, rounds: int,
              tmp: Path) -> dict[str, list[float]]:  # fmt: skip
    """Step intervals (after ``warmup``) of each arm, ``name -> (tree, overrides)``, run in turn ``rounds`` times."""
    intervals: dict[str, list[float]] = {name: [] for name in arms}
    for round_index in range(rounds):
        for index, (name, (tree, overrides)) in enumerate(arms.items()):
            measured = run_demo(tree, steps, tmp / f"arm{index}-{round_index}", overrides)[warmup:]
            intervals[name] += measured
            print(f"round {round_index + 1}, {name}: median step {statistics.median(measured):.3f} s", flush=True)
    return intervals


def compare_overrides(overrides: tuple[str, ...], steps: int, warmup: int, rounds: int) -> None:
    """The current demo's median step with and without ``overrides``, alternating run by run."""
    with tempfile.TemporaryDirectory(prefix="t2ir1-demo-step-") as tmp:
        intervals = alternate({"demo": (ROOT, ()), "demo + overrides": (ROOT, overrides)}, steps, warmup, rounds, Path(tmp))
    medians = {name: statistics.median(values) for name, values in intervals.items()}
    print(f"\n## Demo step with and without {' '.join(overrides)}: {rounds} alternating runs of {steps} steps "
          f"(first {warmup} left out)")  # fmt: skip
    for name, value in medians.items():
        print(f"| {name:16s} | {value:.3f} s | {len(intervals[name])} steps |")
    print(f"\nwith the overrides a step takes {medians['demo + overrides'] / medians['demo']:.2f}x the demo's")


if __name__ == "__main__":
    main()
