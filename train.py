"""Train a Janus policy with BiCoT-GRPO: `python train.py [overrides]` (see README)."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from t2ir1.train import run

    metrics = run(cfg)
    # a sweeper (e.g. Optuna) optimises the metric named by `optimized_metric`
    name = cfg.get("optimized_metric")
    return metrics.get(name) if name else None


if __name__ == "__main__":
    main()
