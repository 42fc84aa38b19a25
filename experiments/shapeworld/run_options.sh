#!/usr/bin/env bash
# Issue 20 point 6: held-out accuracy of the algorithm options on ShapeWorld, 3 seeds each.
# Arms: base (the demo, with an EMA of the weights kept beside it: evaluated raw and as EMA),
# filter (algo.filter_groups=true), lora (model.lora.r=16, alpha 32, lr 1e-3).
# Every run: the demo's settings, bounded by steps (no time cap), held-out accuracy on the demo's 960
# records before and after; the EMA is evaluated from the last checkpoint by eval.py use_ema=true.
# Usage: STEPS=800 SEEDS="1 2 3" ARMS="base filter lora" bash experiments/shapeworld/run_options.sh
set -euo pipefail
STEPS=${STEPS:-800}
SEEDS=${SEEDS:-"1 2 3"}
ARMS=${ARMS:-"base filter lora"}
RUNS=${RUNS:-outputs/shapeworld_options}
PY=${PY:-python}
HELDOUT_EVERY=${HELDOUT_EVERY:-100}
# CoT temperature: the figures in experiments/shapeworld/README.md were measured at 1.0, the demo's
# before 2026-12-07; TEXT_TEMPERATURE=0.7 runs at the demo's current setting.
TEXT_TEMPERATURE=${TEXT_TEMPERATURE:-1.0}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
for seed in $SEEDS; do
  for arm in $ARMS; do
    case $arm in
      # the base arm is the demo itself: its held-out curve (every HELDOUT_EVERY steps) and its reward
      # and KL curves are the reference curves (experiments/shapeworld/reference_curves.json)
      base) extra=("algo.ema.decay=0.99" "callbacks.heldout.every_n_steps=${HELDOUT_EVERY}") ;;
      filter) extra=("algo.filter_groups=true") ;;
      lora) extra=("model.lora.r=16" "model.lora.alpha=32" "optimizer.lr=1e-3") ;;
      *) echo "unknown arm $arm (base, filter, lora)" >&2; exit 2 ;;
    esac
    dir=${RUNS}/${arm}_s${seed}
    $PY train.py experiment=demo seed=${seed} trainer.max_steps=${STEPS} trainer.max_time=null \
      algo.text_temperature=${TEXT_TEMPERATURE} \
      logger=csv trainer.enable_progress_bar=false "${extra[@]}" hydra.run.dir=${dir}
    if [ "$arm" = base ]; then
      # seed=${seed}: the callback's per-record seeds, so raw (heldout/) and EMA see the same random numbers
      $PY eval.py benchmark=shapeworld seed=${seed} ckpt_path=${dir}/checkpoints/last.ckpt use_ema=true out_dir=${dir}/heldout_ema
    fi
  done
done
