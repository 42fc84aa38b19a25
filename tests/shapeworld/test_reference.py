"""Reference curves of the demo: binning, bands, "on track" verdicts, and a real demo run drawn over them."""

import json
import logging
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from workflow_runs import compose_demo

from t2ir1.shapeworld import reference as ref

CONF = Path(__file__).resolve().parents[2] / "conf"


def test_binned_averages_each_window_and_skips_nan():
    steps = [1, 2, 3, 4, 5, 6, 7]
    values = [1.0, 3.0, 5.0, float("nan"), 10.0, 20.0, float("nan")]
    centres, means = ref.binned(steps, values, window=2)
    np.testing.assert_allclose(centres, [1.5, 3.5, 5.5])  # the bin of steps 7-8 holds only NaN
    np.testing.assert_allclose(means, [2.0, 5.0, 15.0])


def test_band_is_the_mean_sd_and_range_over_runs_at_shared_steps():
    first = (np.array([0.5, 2.5, 4.5]), np.array([1.0, 2.0, 3.0]))
    second = (np.array([0.5, 2.5]), np.array([3.0, 6.0]))  # a shorter run: only shared steps count
    band = ref.band([first, second])
    assert band.steps == [0.5, 2.5]
    assert band.mean == [2.0, 4.0]
    np.testing.assert_allclose(band.sd, [np.sqrt(2.0), np.sqrt(8.0)])
    assert band.low == [1.0, 2.0] and band.high == [3.0, 6.0]
    assert band.at(1.5) == (3.0, 1.5, 4.5)


def _reference(low: float, high: float) -> ref.ReferenceCurves:
    flat = ref.Band(steps=[9.5, 19.5], mean=[(low + high) / 2] * 2, sd=[0.0] * 2, low=[low] * 2, high=[high] * 2)
    return ref.ReferenceCurves(seeds=[1, 2], settings={"lr": 1e-4, "levels": ["semantic", "token"]}, window=10,
                               reward=flat, kl=flat, heldout=flat)  # fmt: skip


def test_on_track_places_the_runs_last_values_against_the_range():
    steps = list(range(20))
    run = ref.RunCurves(reward=(steps, [0.5] * 20), kl=(steps, [0.0] * 20), heldout=([0, 19], [10.0, 0.45]))
    lines = ref.on_track(run, _reference(0.4, 0.6))
    assert len(lines) == 2 and all(line.endswith("inside it") for line in lines), lines
    assert ref.on_track(run, _reference(0.55, 0.6))[0].endswith("below the reference range")
    assert ref.on_track(run, _reference(0.1, 0.2))[0].endswith("above it")


def test_differences_name_each_setting_that_differs():
    reference = _reference(0.0, 1.0)
    assert reference.differences({"lr": 1.0e-4, "levels": ("semantic", "token"), "other": 3}) == []
    assert reference.differences({"lr": 3e-4}) == ["lr 0.0003 vs 0.0001"]


def test_shipped_reference_matches_the_demo_settings(tmp_path):
    """The shipped curves come from runs at the demo's current settings: a change to the demo's
    group size, batch, lr, beta, CFG, CoT length or levels without new report runs fails here."""
    if not ref.SHIPPED.is_file():
        pytest.fail(f"{ref.SHIPPED} is missing: build it with python -m t2ir1.shapeworld.reference")
    reference = ref.ReferenceCurves.load()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=demo", f"paths.output_dir={tmp_path}"], return_hydra_config=False)
    settings = {k: (list(v) if not isinstance(v, (int, float, str, type(None))) else v)
                for k, v in cfg.callbacks.heldout.run_settings.items()}  # fmt: skip
    assert set(settings) == set(ref.SETTINGS.values())
    assert reference.differences(settings) == []
    assert len(reference.seeds) >= 3
    assert reference.heldout.steps[0] < reference.heldout.steps[-1] == cfg.trainer.max_steps
    assert reference.reward.mean[-1] > reference.reward.mean[0]  # the demo learns


def test_demo_run_draws_its_curves_over_a_reference_built_from_a_run(tmp_path, caplog):
    """A real 4-step demo run (tiny batch) writes its KL per step and curves.png; a reference built
    from that run by the CLI has a zero-width band equal to the run's own binned curves, and the
    run is "inside it"; the demo's shipped reference is named as from other settings."""
    from t2ir1.train import run

    out = tmp_path / "run"
    cfg = compose_demo(
        out,
        "trainer.max_steps=4",
        "data.batch_size=2",
        "algo.group_size=2",
        "algo.tempered_logprobs=true",
        "callbacks.heldout.num_prompts=6",
        "callbacks.heldout.every_n_steps=2",
        "callbacks.heldout.grid_images=0",
        "callbacks.sample_grid=null",
    )
    with caplog.at_level(logging.INFO, logger="t2ir1.shapeworld.callbacks"):
        run(cfg)
    summary = json.loads((out / "heldout" / "heldout_accuracy.json").read_text())
    assert len(summary["kls"]) == 4 and summary["kls"][0] == 0.0  # the policy is the reference at step 0
    assert any(k > 0 for k in summary["kls"][1:])
    assert (out / "heldout" / "curves.png").is_file()
    assert "batch_size 2 vs 4" in caplog.text and "group_size 2 vs 8" in caplog.text
    assert "tempered_logprobs True vs False" in caplog.text
    assert caplog.text.count("on track?") == 2

    built = tmp_path / "reference.json"
    ref.main([str(out), "--out", str(built), "--window", "2", "--plot", str(tmp_path / "reference.png")])
    reference = ref.ReferenceCurves.load(built)
    assert reference.seeds == [cfg.seed] and reference.settings["batch_size"] == 2
    steps, values = ref.binned(summary["steps"], summary["rewards"], 2)
    assert reference.reward.steps == steps.tolist()
    np.testing.assert_allclose(reference.reward.mean, values)
    assert reference.reward.low == reference.reward.mean == reference.reward.high
    assert reference.heldout.steps == [0.0, 2.0, 4.0]
    np.testing.assert_allclose(reference.heldout.mean, [100 * h["overall"] for h in summary["history"]])
    lines = ref.on_track(ref.read_run(out), reference)
    assert len(lines) == 2 and all(line.endswith("inside it") for line in lines), lines
    assert (tmp_path / "reference.png").is_file()


def test_missing_reference_file_stops_the_callback_at_construction_and_says_how_to_build_it(tmp_path):
    from t2ir1.shapeworld.callbacks import HeldoutAccuracyCallback

    with pytest.raises(FileNotFoundError, match="python -m t2ir1.shapeworld.reference"):
        HeldoutAccuracyCallback(out_dir=str(tmp_path), num_prompts=4, reference_curves=str(tmp_path / "absent.json"))
    (tmp_path / "other.json").write_text("{}")
    with pytest.raises(ValueError, match="not a reference-curves file"):
        ref.ReferenceCurves.load(tmp_path / "other.json")
