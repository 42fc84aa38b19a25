"""``reward=remote`` trains the tiny setup end to end against a reward server started here; the
server killed during a run stops training with the client's error, and the run resumes from its
checkpoint (server restarted) with the losses of an uninterrupted run."""

from __future__ import annotations

import math
import os
import signal

import lightning as L
import pytest
from omegaconf import OmegaConf
from workflow_runs import compose_train, read_metrics

from t2ir1.rewards.remote import RemoteRewardError
from t2ir1.testing.reward_server import running_server, start_server
from t2ir1.train import run

# the tiny experiment's own reward (conf/experiment/tiny.yaml), hosted by the server
SERVER_OVERRIDES = ("reward=color", "server.accelerator=cpu", "server.threads=1")
KEYS = ("train/loss", "train/kl", "reward/total", "reward/color", "adv/std")
# remote clients that give up fast when the server is gone (the kill test)
CLIENT = ("reward.retries=1", "reward.backoff_s=0.1", "reward.timeout_s=60", "reward.ready_timeout_s=60")


class KillServerAtStep(L.Callback):
    """SIGKILLs the reward server's process group once ``step`` optimiser steps are done."""

    def __init__(self, step: int, pid: int):
        self.step, self.pid = step, pid

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.killpg(self.pid, signal.SIGKILL)


def _assert_same_metrics(got: dict, want: dict, steps) -> None:
    for step in steps:
        for key in KEYS:
            assert math.isclose(got[step][key], want[step][key], rel_tol=1e-6, abs_tol=1e-8), (
                step,
                key,
                got[step][key],
                want[step][key],
            )


@pytest.mark.slow  # a server start and two short training runs (~1 min on a busy 2-core machine)
def test_remote_reward_trains_like_in_process(tmp_path):
    common = ("trainer.max_steps=3", "logger=csv")
    run(compose_train(tmp_path / "local", *common))
    local = read_metrics(tmp_path / "local" / "metrics.csv")
    with running_server(SERVER_OVERRIDES, tmp_path / "server.log") as server:
        metrics = run(compose_train(tmp_path / "remote", *common, "reward=remote", f"reward.url={server.url}"))
        # the server really scored: its log shows the scoring requests
        assert server.log().count("POST /score") >= 3
    remote = read_metrics(tmp_path / "remote" / "metrics.csv")
    assert sorted(remote) == sorted(local) == [0, 1, 2]
    # same rewards => same advantages, losses and KL as scoring in-process
    _assert_same_metrics(remote, local, range(3))
    assert "reward/color_weighted" in metrics  # the per-member curves survive the trip


@pytest.mark.slow  # two server starts and three short training runs
def test_server_killed_mid_run_stops_cleanly_and_resumes(tmp_path):
    max_steps, stop_at = 4, 2
    # a checkpoint after every step: what the run falls back to when the rewards go away
    common = (f"trainer.max_steps={max_steps}", "logger=csv", "callbacks.checkpoint.every_n_train_steps=1", *CLIENT)
    server = start_server(SERVER_OVERRIDES, tmp_path / "server.log")
    port = server.port
    try:
        remote = ("reward=remote", f"reward.url={server.url}")
        run(compose_train(tmp_path / "full", *common, *remote))
        full = read_metrics(tmp_path / "full" / "metrics.csv")
        assert sorted(full) == [0, 1, 2, 3]

        cut_cfg = compose_train(tmp_path / "cut", *common, *remote)
        OmegaConf.set_struct(cut_cfg, False)
        cut_cfg.callbacks.kill = {"_target_": f"{__name__}.KillServerAtStep", "step": stop_at, "pid": server.process.pid}
        with pytest.raises(RemoteRewardError) as caught:
            run(cut_cfg)
        message = str(caught.value)
        assert f"reward server {server.url}/score failed 2 attempt(s)" in message, message
        assert "unreachable" in message and "resume from the last checkpoint" in message
        server.stop()
        last = tmp_path / "cut" / "checkpoints" / "last.ckpt"
        assert last.is_file(), "no checkpoint to resume from"
        assert not [p for p in last.parent.iterdir() if p.name.endswith(".tmp")], "a half-written checkpoint was left"
        cut = read_metrics(tmp_path / "cut" / "metrics.csv")
        assert sorted(cut) == [0, 1], "training went on without rewards"

        # the reward server comes back (same address), the run resumes from its checkpoint
        server = start_server(SERVER_OVERRIDES, tmp_path / "server2.log", port=port)
        run(compose_train(tmp_path / "resumed", *common, *remote, f"ckpt_path={last}"))
        resumed = read_metrics(tmp_path / "resumed" / "metrics.csv")
        assert sorted(resumed) == [2, 3], "the resumed run did not start at the saved step"
        _assert_same_metrics(cut, full, (0, 1))
        _assert_same_metrics(resumed, full, (2, 3))
        assert full[3]["train/kl"] != full[2]["train/kl"]  # the run moves: the match above is not trivial
    finally:
        server.stop()
