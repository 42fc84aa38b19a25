"""Aggregate the ShapeWorld ablation runs into tables, paired comparisons and plots.

``python experiments/shapeworld/aggregate.py RUNS_DIR [RUNS_DIR ...] [--out experiments/shapeworld]``

Each ``RUNS_DIR`` (the ablation may run in parts) holds one directory per run named
``{arm}_s{seed}`` (arm: bicot, semantic, token_cot, token), each with
``heldout/heldout_accuracy.json`` written by
:class:`t2ir1.shapeworld.callbacks.HeldoutAccuracyCallback`. The "no RL" arm is the
``before`` table of the runs (the same start checkpoint, evaluated with the run's seed):
with CoT from the bicot runs (identical to the other CoT arms' before tables), without CoT
from the token runs. Writes ``results.json``, ``results.md`` (per arm and category: mean and
95% t interval over seeds; paired differences against BiCoT, seed by seed, with their
interval and p-value; the binomial standard error of one evaluation), ``accuracy.png``,
``reward_curves.png`` and (when the runs evaluated during training) ``heldout_curves.png``
into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from t2ir1.evaluate.stats import binomial_se, mean_ci, paired_difference
from t2ir1.shapeworld.prompts import CATEGORIES

log = logging.getLogger(__name__)

ARMS = {
    "no RL (CoT)": ("bicot", "before"),
    "no RL (no CoT)": ("token", "before"),
    "semantic only": ("semantic", "after"),
    "token only (CoT sampled)": ("token_cot", "after"),
    "token only without CoT": ("token", "after"),
    "BiCoT (both)": ("bicot", "after"),
}
# The arm every other one is compared with, seed by seed.
REFERENCE_ARM = "BiCoT (both)"
COLUMNS = (*CATEGORIES, "overall")
# One colour per RL arm in every plot.
ARM_COLORS = {"bicot": "tab:red", "semantic": "tab:green", "token_cot": "tab:purple", "token": "tab:blue"}


def load_runs(*runs_dirs: Path) -> dict[str, dict[int, dict]]:
    """``{arm: {seed: summary}}`` from ``{arm}_s{seed}/heldout/heldout_accuracy.json`` under every
    directory; the same (arm, seed) in two directories is an error (which one to trust?)."""
    runs: dict[str, dict[int, dict]] = {}
    where: dict[tuple[str, int], Path] = {}
    for runs_dir in runs_dirs:
        for path in sorted(runs_dir.glob("*_s*/heldout/heldout_accuracy.json")):
            arm, _, seed_text = path.parents[1].name.rpartition("_s")
            if not seed_text.isdigit():
                continue
            seed = int(seed_text)
            if (arm, seed) in where:
                raise SystemExit(f"{arm} seed {seed} is in both {where[arm, seed]} and {path}: keep one")
            where[arm, seed] = path
            runs.setdefault(arm, {})[seed] = json.loads(path.read_text())
    return runs


def collect(runs: dict[str, dict[int, dict]]) -> dict[str, dict[str, dict[int, float]]]:
    """``{arm label: {column: {seed: value}}}`` in percent."""
    table: dict[str, dict[str, dict[int, float]]] = {}
    for label, (arm, when) in ARMS.items():
        for seed in sorted(runs.get(arm, {})):
            values = runs[arm][seed][when]
            for column in COLUMNS:
                table.setdefault(label, {}).setdefault(column, {})[seed] = 100 * values[column]
    return table


def markdown(table: dict[str, dict[str, dict[int, float]]]) -> str:
    """Per arm and category: mean over seeds and its 95% t interval."""
    header = "| arm | seeds | " + " | ".join(COLUMNS) + " |"
    lines = [header, "|" + "---|" * (len(COLUMNS) + 2)]
    for label, columns in table.items():
        cells = [mean_ci(list(v.values())).format() for v in columns.values()]
        lines.append(f"| {label} | {len(columns['overall'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def paired(table: dict[str, dict[str, dict[int, float]]]) -> dict[str, dict[str, dict]]:
    """``{arm: {column: difference}}``: arm minus BiCoT on the seeds both ran (same held-out samples)."""
    if REFERENCE_ARM not in table:
        return {}
    result: dict[str, dict[str, dict]] = {}
    for label, columns in table.items():
        if label == REFERENCE_ARM:
            continue
        for column, values in columns.items():
            reference = table[REFERENCE_ARM][column]
            seeds = sorted(set(values) & set(reference))
            if not seeds:
                continue
            diff = paired_difference([values[s] for s in seeds], [reference[s] for s in seeds])
            result.setdefault(label, {})[column] = {
                "seeds": seeds, "mean": diff.mean, "low": diff.low, "high": diff.high, "t": diff.t, "p": diff.p,
                "significant": diff.significant, "text": diff.format(),
            }  # fmt: skip
    return result


def paired_markdown(differences: dict[str, dict[str, dict]]) -> str:
    """Arm minus BiCoT per category: mean [95% interval], p (``*``: the interval excludes 0)."""
    lines = ["| arm - BiCoT | pairs | " + " | ".join(COLUMNS) + " |", "|" + "---|" * (len(COLUMNS) + 2)]
    for label, columns in differences.items():
        pairs = len(columns["overall"]["seeds"])
        lines.append(f"| {label} | {pairs} | " + " | ".join(columns[c]["text"] for c in COLUMNS) + " |")
    return "\n".join(lines)


def significance_lines(differences: dict[str, dict[str, dict]]) -> list[str]:
    """One sentence per arm: which categories differ from BiCoT at the 5% level and which do not."""
    lines = []
    for label, columns in differences.items():
        pairs = len(columns["overall"]["seeds"])
        if pairs < 2:
            lines.append(f"- {label}: one seed paired with BiCoT so far: no test yet.")
            continue
        better = [c for c in COLUMNS if columns[c]["significant"] and columns[c]["mean"] > 0]
        worse = [c for c in COLUMNS if columns[c]["significant"] and columns[c]["mean"] < 0]
        parts = []
        if worse:
            parts.append("below BiCoT in " + ", ".join(worse))
        if better:
            parts.append("above BiCoT in " + ", ".join(better))
        verdict = "; ".join(parts) if parts else "no significant difference from BiCoT in any category"
        lines.append(f"- {label}: {verdict} (paired t, 95%, {pairs} seeds).")
    return lines


def evaluation_se(runs: dict[str, dict[int, dict]]) -> float | None:
    """Median binomial standard error (points) of one evaluation's ``overall`` (mean of the categories)."""
    errors = []
    for seeds in runs.values():
        for summary in seeds.values():
            per_category = summary.get("num_prompts", 0) / len(CATEGORIES)
            if per_category < 1:
                continue
            for when in ("before", "after"):
                table = summary[when]
                variance = sum(binomial_se(table[c], int(per_category)) ** 2 for c in CATEGORIES if c in table)
                errors.append(100 * np.sqrt(variance) / len(CATEGORIES))
    return float(np.median(errors)) if errors else None


def per_seed_markdown(table: dict[str, dict[str, dict[int, float]]]) -> str:
    lines = ["| arm | overall per seed |", "|---|---|"]
    for label, columns in table.items():
        lines.append(f"| {label} | " + ", ".join(f"s{s} {v:.1f}" for s, v in columns["overall"].items()) + " |")
    return "\n".join(lines)


def plot_accuracy(table: dict[str, dict[str, dict[int, float]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(10, 4), dpi=120)
    width = 0.8 / max(1, len(table))
    x = np.arange(len(COLUMNS))
    for index, (label, columns) in enumerate(table.items()):
        intervals = [mean_ci(list(columns[c].values())) for c in COLUMNS]
        means = [i.mean for i in intervals]
        halves = [0.0 if i.n < 2 else i.high - i.mean for i in intervals]
        axis.bar(x + index * width, means, width, yerr=halves, capsize=2, label=label)
        for seed_values_x, column in zip(x, COLUMNS, strict=True):
            seed_values = list(columns[column].values())
            axis.scatter([seed_values_x + index * width] * len(seed_values), seed_values, s=4, color="black")
    axis.set_xticks(x + width * (len(table) - 1) / 2, COLUMNS)
    axis.set_ylabel("held-out accuracy (%)")
    axis.set_title("ShapeWorld held-out accuracy: mean and 95% interval over seeds (dots: seeds)")
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


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs_dirs", type=Path, nargs="+", help="directories of {arm}_s{seed} runs (parts allowed)")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    runs = load_runs(*args.runs_dirs)
    if not runs:
        raise SystemExit(f"no {{arm}}_s{{seed}}/heldout/heldout_accuracy.json under {[str(d) for d in args.runs_dirs]}")
    table = collect(runs)
    differences = paired(table)
    se = evaluation_se(runs)
    args.out.mkdir(parents=True, exist_ok=True)
    payload = {"arms": table, "paired_vs_bicot": differences, "evaluation_se_points": se}
    (args.out / "results.json").write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    text = "Held-out accuracy (%): mean [95% t interval] over seeds\n\n" + markdown(table) + "\n\n"
    if differences:
        text += "Paired differences against BiCoT, seed by seed (* = significant at 5%)\n\n"
        text += paired_markdown(differences) + "\n\n" + "\n".join(significance_lines(differences)) + "\n\n"
    if se is not None:
        text += f"Binomial standard error of one evaluation's overall accuracy: {se:.1f} points.\n\n"
    text += per_seed_markdown(table) + "\n"
    (args.out / "results.md").write_text(text, encoding="utf-8")
    plot_accuracy(table, args.out / "accuracy.png")
    plot_rewards(runs, args.out / "reward_curves.png")
    plot_heldout_history(runs, args.out / "heldout_curves.png")
    log.info("%s", text)
    return payload


if __name__ == "__main__":
    main()
