"""Reference curves of the ShapeWorld demo: "is my run on track?"

The demo's expected reward, KL and held-out accuracy curves, as the mean and the range over
report runs (the demo's exact settings, several seeds, run without the demo's time cap), are
shipped with the package as ``reference_curves.json``. The held-out callback plots a run's own
curves over them (``curves.png``) and says at the end whether the run is inside the range;
``notebooks/analyze_run.ipynb`` draws the same figure for any finished demo run.

Build the file from finished report runs (each a ``train.py experiment=demo`` output directory
with ``heldout/heldout_accuracy.json``, ``metrics.csv`` and ``hparams.yaml``)::

    python -m t2ir1.shapeworld.reference RUN_DIR [RUN_DIR ...] [--out t2ir1/shapeworld/reference_curves.json]

Every curve is binned the same way for the runs and for the user's run: the mean of the values
logged at steps ``k * window + 1 .. (k + 1) * window`` (a step is counted after its update, from 1),
drawn at the bin's centre.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

SHIPPED = Path(__file__).with_name("reference_curves.json")
# The settings a run must share with the report runs for the comparison to mean anything:
# config key -> name in the reference file and in HeldoutAccuracyCallback(run_settings=...)
SETTINGS = {
    "algo.group_size": "group_size",
    "data.batch_size": "batch_size",
    "optimizer.lr": "lr",
    "algo.text_temperature": "text_temperature",
    "algo.tempered_logprobs": "tempered_logprobs",
    "algo.beta": "beta",
    "algo.cfg_weight": "cfg_weight",
    "algo.max_new_tokens": "max_new_tokens",
    "algo.levels": "levels",
    "model.lora.r": "lora_r",
}
CURVES = ("reward", "kl", "heldout")
TITLES = {
    "reward": "mean reward per step",
    "kl": "KL to the reference policy (k3)",
    "heldout": "held-out accuracy, overall (%)",
}


@dataclass(frozen=True)
class Band:
    """One curve over several runs: at each step, the mean, the standard deviation and the range."""

    steps: list[float]
    mean: list[float]
    sd: list[float]
    low: list[float]
    high: list[float]

    def at(self, step: float) -> tuple[float, float, float]:
        """``(mean, low, high)`` at ``step``, interpolated linearly between the band's steps."""
        return tuple(float(np.interp(step, self.steps, values)) for values in (self.mean, self.low, self.high))


@dataclass(frozen=True)
class ReferenceCurves:
    """The shipped reference: one :class:`Band` per curve, the runs it came from and their settings."""

    seeds: list[int]
    settings: dict
    window: int
    reward: Band
    kl: Band
    heldout: Band
    source: str = ""

    @classmethod
    def load(cls, path: str | Path = SHIPPED) -> ReferenceCurves:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(
                f"reference curves {path} not found; build them with "
                "`python -m t2ir1.shapeworld.reference RUN_DIR ... --out <file>` or set "
                "callbacks.heldout.reference_curves=null"
            )
        data = json.loads(path.read_text(encoding="utf-8"))
        missing = [key for key in ("seeds", "settings", "window", *CURVES) if key not in data]
        if missing:
            raise ValueError(f"{path}: not a reference-curves file (missing {', '.join(missing)})")
        bands = {name: Band(**data[name]) for name in CURVES}
        return cls(data["seeds"], data["settings"], data["window"], source=data.get("source", ""), **bands)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(asdict(self), indent=1) + "\n", encoding="utf-8")

    def differences(self, settings: Mapping) -> list[str]:
        """The settings in which a run differs from the report runs, as ``"name run vs reference"``."""
        out = []
        for name, expected in self.settings.items():
            if name in settings and not _same(settings[name], expected):
                out.append(f"{name} {settings[name]} vs {expected}")
        return out


def _same(a, b) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-9)
    if isinstance(a, Sequence) and isinstance(b, Sequence) and not isinstance(a, str):
        return list(a) == list(b)
    return a == b


def binned(steps: Sequence[float], values: Sequence[float], window: int) -> tuple[np.ndarray, np.ndarray]:
    """Means of ``values`` over the step bins ``k * window + 1 .. (k + 1) * window``, at the bins'
    centres (steps count from 1: 800 steps make 800 / window full bins).

    NaN values are left out; a bin with no finite value is left out.
    """
    steps = np.asarray(steps, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(values)
    steps, values = steps[keep], values[keep]
    if steps.size == 0:
        return np.zeros(0), np.zeros(0)
    index = ((steps - 1) // window).astype(np.int64)
    bins = np.unique(index)
    means = np.array([values[index == b].mean() for b in bins])
    return bins * window + (window + 1) / 2, means


def band(curves: Sequence[tuple[np.ndarray, np.ndarray]]) -> Band:
    """Mean, sd and range over runs of curves sampled at the same steps (the steps all runs share)."""
    common = sorted(set.intersection(*(set(np.round(x, 6).tolist()) for x, _ in curves)))
    if not common:
        raise ValueError("the runs share no step: were they run with the same settings?")
    table = np.array([[dict(zip(np.round(x, 6).tolist(), y, strict=True))[s] for s in common] for x, y in curves])
    sd = table.std(axis=0, ddof=1) if len(curves) > 1 else np.zeros(len(common))
    return Band(
        steps=[float(s) for s in common],
        mean=table.mean(axis=0).tolist(),
        sd=sd.tolist(),
        low=table.min(axis=0).tolist(),
        high=table.max(axis=0).tolist(),
    )


@dataclass(frozen=True)
class RunCurves:
    """A run's raw curves: ``(steps, values)`` per curve (held-out in %, at its evaluations)."""

    reward: tuple[list[float], list[float]]
    kl: tuple[list[float], list[float]]
    heldout: tuple[list[float], list[float]]

    def binned(self, name: str, window: int) -> tuple[np.ndarray, np.ndarray]:
        steps, values = getattr(self, name)
        if name == "heldout":  # evaluations are points, not a per-step signal
            return np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64)
        return binned(steps, values, window)


def read_run(run_dir: str | Path) -> RunCurves:
    """A finished demo run's curves from ``heldout/heldout_accuracy.json`` (reward, held-out and,
    when recorded there, KL) and otherwise ``metrics.csv`` (``train/kl``)."""
    run_dir = Path(run_dir)
    summary_path = run_dir / "heldout" / "heldout_accuracy.json"
    if not summary_path.is_file():
        raise FileNotFoundError(f"{summary_path} not found: is {run_dir} a finished ShapeWorld demo run?")
    summary = json.loads(summary_path.read_text(encoding="utf-8"))
    reward = (summary["steps"], summary["rewards"])
    history = [row for row in summary.get("history", []) if "overall" in row]
    heldout = ([row["step"] for row in history], [100 * row["overall"] for row in history])
    if "kls" in summary:
        kl = (summary["steps"], summary["kls"])
    else:
        kl_steps, kl_values = [], []
        csv_path = run_dir / "metrics.csv"
        if csv_path.is_file():
            with open(csv_path, newline="", encoding="utf-8") as handle:
                for row in csv.DictReader(handle):
                    if row.get("train/kl") not in (None, ""):
                        # the logger's step is the global step while the update runs (from 0);
                        # the callback counts a step after its update (from 1)
                        kl_steps.append(int(row["step"]) + 1)
                        kl_values.append(float(row["train/kl"]))
        kl = (kl_steps, kl_values)
    return RunCurves(reward=reward, kl=kl, heldout=heldout)


def _config(run_dir: str | Path) -> dict:
    """The composed config a run's logger saved (``hparams.yaml``)."""
    import yaml

    path = Path(run_dir) / "hparams.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run the report runs with logger=csv (or any logger)")
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def run_settings(run_dir: str | Path) -> dict:
    """The :data:`SETTINGS` of a run, read from the config its logger saved (``hparams.yaml``)."""
    config = _config(run_dir)
    out = {}
    for key, name in SETTINGS.items():
        node = config
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        out[name] = node
    return out


def build(run_dirs: Sequence[str | Path], window: int = 20) -> ReferenceCurves:
    """Reference curves from report runs that share every setting of :data:`SETTINGS`."""
    if not run_dirs:
        raise ValueError("build: no run directories given")
    settings = [run_settings(d) for d in run_dirs]
    for other, run_dir in zip(settings[1:], run_dirs[1:], strict=True):
        if other != settings[0]:
            raise ValueError(f"{run_dir}: settings {other} differ from {run_dirs[0]}'s {settings[0]}")
    seeds = [int(_config(run_dir)["seed"]) for run_dir in run_dirs]
    runs = [read_run(d) for d in run_dirs]
    bands = {name: band([run.binned(name, window) for run in runs]) for name in CURVES}
    return ReferenceCurves(
        seeds=seeds,
        settings=settings[0],
        window=window,
        source=f"{len(runs)} report runs (train.py experiment=demo, seeds {', '.join(map(str, seeds))}, "
        "no time cap); band = range over the runs",
        **bands,
    )


def on_track(run: RunCurves, reference: ReferenceCurves) -> list[str]:
    """One line per curve: the run's last value next to the reference's mean and range at that step."""
    lines = []
    for name in ("reward", "heldout"):
        steps, values = run.binned(name, reference.window)
        if len(steps) == 0:
            continue
        step, value = float(steps[-1]), float(values[-1])
        ref = getattr(reference, name)
        if not ref.steps[0] - reference.window <= step <= ref.steps[-1] + reference.window:
            lines.append(f"{TITLES[name]}: step {step:.0f} is outside the reference's steps")
            continue
        mean, low, high = ref.at(step)
        where = "below the reference range" if value < low else "above it" if value > high else "inside it"
        digits = 1 if name == "heldout" else 3  # percent / reward
        lines.append(
            f"{TITLES[name]} at step {step:.0f}: {value:.{digits}f} (reference {mean:.{digits}f}, "
            f"range {low:.{digits}f}-{high:.{digits}f} over {len(reference.seeds)} runs): {where}"
        )
    return lines


def plot(run: RunCurves | None, reference: ReferenceCurves | None, path: str | Path, window: int = 20,
         title: str = "") -> None:  # fmt: skip
    """Reward, KL and held-out accuracy of ``run`` over the reference's mean and range, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    window = reference.window if reference is not None else window
    figure, axes = plt.subplots(1, 3, figsize=(15, 3.8), dpi=110)
    for axis, name in zip(axes, CURVES, strict=True):
        if reference is not None:
            ref = getattr(reference, name)
            label = f"reference: mean and range of {len(reference.seeds)} runs"
            axis.fill_between(ref.steps, ref.low, ref.high, color="tab:gray", alpha=0.25, linewidth=0)
            axis.plot(ref.steps, ref.mean, color="tab:gray", linewidth=1.5, linestyle="--", label=label)
        if run is not None:
            raw_steps, raw_values = getattr(run, name)
            if name != "heldout" and len(raw_steps):
                axis.plot(raw_steps, raw_values, color="tab:blue", alpha=0.2, linewidth=0.8)
            steps, values = run.binned(name, window)
            style = {"marker": "o"} if name == "heldout" or len(steps) < 5 else {}
            label = "this run" if name == "heldout" else f"this run (mean per {window} steps)"
            axis.plot(steps, values, color="tab:blue", linewidth=2, label=label, **style)
        axis.set_title(TITLES[name])
        axis.set_xlabel("optimiser step")
        axis.grid(alpha=0.3)
    axes[0].legend(loc="lower right", fontsize=8)
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished report runs (train.py experiment=demo)")
    parser.add_argument("--out", type=Path, default=SHIPPED, help="reference file to write")
    parser.add_argument("--window", type=int, default=20, help="steps per bin")
    parser.add_argument("--plot", type=Path, default=None, help="also draw the reference alone to this PNG")
    args = parser.parse_args(argv)
    reference = build(args.runs, window=args.window)
    reference.save(args.out)
    print(f"wrote {args.out}: {reference.source}")
    for name in CURVES:
        ref = getattr(reference, name)
        print(f"  {name}: {ref.mean[0]:.4f} -> {ref.mean[-1]:.4f} (range at the end {ref.low[-1]:.4f}-{ref.high[-1]:.4f})")
    if args.plot:
        plot(None, reference, args.plot)


if __name__ == "__main__":
    main()
