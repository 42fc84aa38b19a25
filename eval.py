"""Evaluate a policy on a benchmark: `python eval.py benchmark=<geneval|t2i_compbench|wise|dpg|geneval_pp|imagine|oneig|shapeworld> model=... [use_cot=false] [processes=N]` (see README)."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="eval")
def main(cfg: DictConfig) -> float | None:
    from t2ir1.evaluate import run

    summary = run(cfg)
    overall = summary.get("overall")
    return float(overall) if isinstance(overall, int | float) else None


if __name__ == "__main__":
    main()
