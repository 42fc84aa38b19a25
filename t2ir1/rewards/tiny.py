"""Moved to :mod:`t2ir1.testing.tiny_rewards` (only tests and benchmarks build tiny reward models);
this alias keeps code written before the move importing."""

from t2ir1.testing.tiny_rewards import *  # noqa: F403
