"""Generate images with a (trained) Janus policy: `python generate.py model=... prompts=FILE_OR_TEXT` (see README)."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="generate")
def main(cfg: DictConfig) -> None:
    from t2ir1.generate import run

    run(cfg)


if __name__ == "__main__":
    main()
