"""Aggregate the ShapeWorld ablation runs into tables and plots.

``python experiments/shapeworld/aggregate.py RUNS_DIR [--out experiments/shapeworld]``

``RUNS_DIR`` holds one directory per run named ``{arm}_s{seed}`` (arm: bicot, semantic,
token), each with ``heldout/heldout_accuracy.json`` written by
:class:`t2ir1.shapeworld.callbacks.HeldoutAccuracyCallback`. The "no RL" arm is the
``before`` table of the runs (the same start checkpoint, evaluated with the run's seed):
with CoT from the bicot runs (identical to the semantic runs' before tables), without CoT
from the token runs. Writes ``results.json``, ``results.md`` (mean +- std over seeds, per
category), ``accuracy.png``, ``reward_curves.png`` and (when the runs evaluated during
training) ``heldout_curves.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from t2ir1.shapeworld.prompts import CATEGORIES

log = logging.getLogger(__name__)

ARMS = {
    "no RL (CoT)": ("bicot", "before"),
    "no RL (no CoT)": ("token", "before"),
    "semantic only": ("semantic", "after"),
    "token only": ("token", "after"),
    "BiCoT (both)": ("bicot", "after"),
}
COLUMNS = (*CATEGORIES, "overall")
# One colour per RL arm in every plot.
ARM_COLORS = {"bicot": "tab:red", "semantic": "tab:green", "token": "tab:blue"}


def load_runs(runs_dir: Path) -> dict[str, dict[int, dict]]:
    """``{arm: {seed: summary}}`` from ``{arm}_s{seed}/heldout/heldout_accuracy.json``."""
    runs: dict[str, dict[int, dict]] = {}
    for path in sorted(runs_dir.glob("*_s*/heldout/heldout_accuracy.json")):
        arm, _, seed = path.parents[1].name.rpartition("_s")
        runs.setdefault(arm, {})[int(seed)] = json.loads(path.read_text())
    return runs


def collect(runs: dict[str, dict[int, dict]]) -> dict[str, dict[str, list[float]]]:
    """``{arm label: {column: [value per seed]}}`` in percent."""
    table: dict[str, dict[str, list[float]]] = {}
    for label, (arm, when) in ARMS.items():
        for seed in sorted(runs.get(arm, {})):
            values = runs[arm][seed][when]
            for column in COLUMNS:
                table.setdefault(label, {}).setdefault(column, []).append(100 * values[column])
    return table


def markdown(table: dict[str, dict[str, list[float]]]) -> str:
    header = "| arm | seeds | " + " | ".join(COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 2)]
    for label, columns in table.items():
        cells = [
            f"{np.mean(v):.1f} ± {np.std(v, ddof=1) if len(v) > 1 else 0.0:.1f}" for v in columns.values()
        ]
        lines.append(f"| {label} | {len(columns['overall'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_seed_markdown(table: dict[str, dict[str, list[float]]]) -> str:
    lines = ["| arm | overall per seed |", "|---|---|"]
    for label, columns in table.items():
        lines.append(f"| {label} | " + ", ".join(f"{v:.1f}" for v in columns["overall"]) + " |")
    return "\n".join(lines)


def plot_accuracy(table: dict[str, dict[str, list[float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(10, 4), dpi=120)
    width = 0.8 / max(1, len(table))
    x = np.arange(len(COLUMNS))
    for index, (label, columns) in enumerate(table.items()):
        means = [np.mean(columns[c]) for c in COLUMNS]
        spreads = [np.std(columns[c], ddof=1) if len(columns[c]) > 1 else 0.0 for c in COLUMNS]
        axis.bar(x + index * width, means, width, yerr=spreads, capsize=2, label=label)
        for seed_values_x, column in zip(x, COLUMNS, strict=True):
            axis.scatter(
                [seed_values_x + index * width] * len(columns[column]), columns[column], s=4, color="black"
            )
    axis.set_xticks(x + width * (len(table) - 1) / 2, COLUMNS)
    axis.set_ylabel("held-out accuracy (%)")
    axis.set_title("ShapeWorld held-out accuracy: mean ± std over seeds (dots: seeds)")
    axis.legend(fontsize=8)
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def plot_rewards(runs: dict[str, dict[int, dict]], path: Path, window: int = 10) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4), dpi=120)
    for arm, seeds in sorted(runs.items()):
        for seed, summary in sorted(seeds.items()):
            rewards = np.asarray(summary["rewards"])
            if len(rewards) < window:
                continue
            smooth = np.convolve(rewards, np.ones(window) / window, mode="valid")
            axis.plot(
                np.arange(window, len(rewards) + 1), smooth, color=ARM_COLORS.get(arm, "gray"), alpha=0.8,
                label=arm if seed == min(seeds) else None,
            )  # fmt: skip
    axis.set_xlabel("optimiser step")
    axis.set_ylabel(f"mean training reward (moving average, {window} steps)")
    axis.set_title("ShapeWorld training reward per run")
    axis.legend()
    axis.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


def plot_heldout_history(runs: dict[str, dict[int, dict]], path: Path) -> bool:
    """Held-out overall accuracy against the step (runs with ``every_n_steps``): mean over seeds, thin lines = seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4), dpi=120)
    drawn = False
    for arm, seeds in sorted(runs.items()):
        curves = [summary.get("history", []) for _, summary in sorted(seeds.items())]
        curves = [c for c in curves if len(c) > 2]
        if not curves:
            continue
        steps = [entry["step"] for entry in curves[0]]
        values = np.array([[100 * e["overall"] for e in c] for c in curves if len(c) == len(steps)])
        for row in values:
            axis.plot(steps, row, color=ARM_COLORS.get(arm, "gray"), alpha=0.25, linewidth=1)
        axis.plot(steps, values.mean(0), color=ARM_COLORS.get(arm, "gray"), linewidth=2, label=f"{arm} (mean)")
        drawn = True
    if drawn:
        axis.set_xlabel("optimiser step")
        axis.set_ylabel("held-out accuracy, overall (%)")
        axis.set_title("ShapeWorld held-out accuracy during training")
        axis.legend()
        axis.grid(alpha=0.3)
        figure.tight_layout()
        figure.savefig(path)
    plt.close(figure)
    return drawn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs_dir", type=Path)
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    runs = load_runs(args.runs_dir)
    if not runs:
        raise SystemExit(f"no {{arm}}_s{{seed}}/heldout/heldout_accuracy.json under {args.runs_dir}")
    table = collect(runs)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")
    text = markdown(table) + "\n\n" + per_seed_markdown(table) + "\n"
    (args.out / "results.md").write_text(text, encoding="utf-8")
    plot_accuracy(table, args.out / "accuracy.png")
    plot_rewards(runs, args.out / "reward_curves.png")
    plot_heldout_history(runs, args.out / "heldout_curves.png")
    log.info("%s", text)


if __name__ == "__main__":
    main()
