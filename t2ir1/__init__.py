"""t2ir1: BiCoT-GRPO (T2I-R1) for Janus-Pro on Hydra + Lightning."""

__version__ = "0.1.0"
