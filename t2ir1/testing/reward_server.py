"""Start a real reward server (``python -m t2ir1.rewards.serve``) on 127.0.0.1 for tests and benchmarks.

The server runs in its own process group, so that stopping it also stops LitServe's
inference workers and HTTP processes; every wait is bounded.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

import t2ir1

REPO = Path(t2ir1.__file__).resolve().parents[1]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (LitServe needs a fixed port >= 1024)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    """A running reward server: its URL, process and log file."""

    url: str
    port: int
    process: subprocess.Popen
    log_path: Path
    overrides: tuple[str, ...]
    env: dict[str, str]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self) -> None:
        """Kill the server's process group (its workers included) and reap it."""
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(timeout=30)
        # LitServe's children may outlive the parent by a moment: reap the group too
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start_server(
    overrides: Sequence[str],
    log_path: Path,
    port: int | None = None,
    env: Mapping[str, str] | None = None,
    ready_timeout_s: float = 180.0,
    headers: Mapping[str, str] | None = None,
) -> ServerProcess:
    """Start ``python -m t2ir1.rewards.serve <overrides>`` and wait until ``/health`` answers ok."""
    port = port or free_port()
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})}
    args = [
        sys.executable,
        "-m",
        "t2ir1.rewards.serve",
        *overrides,
        f"server.port={port}",
        "server.host=127.0.0.1",
        f"hydra.run.dir={log_path.parent / ('serve-' + str(port))}",
    ]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log_file:
        process = subprocess.Popen(
            args, cwd=REPO, env=full_env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    server = ServerProcess(f"http://127.0.0.1:{port}", port, process, log_path, tuple(overrides), dict(env or {}))
    deadline = time.monotonic() + ready_timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"reward server exited with {process.returncode}:\n{server.log()[-4000:]}")
        try:
            if httpx.get(f"{server.url}/health", headers=dict(headers or {}), timeout=2.0).status_code == 200:
                return server
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    server.stop()
    raise TimeoutError(f"reward server not healthy after {ready_timeout_s:.0f} s:\n{server.log()[-4000:]}")


@contextmanager
def running_server(overrides: Sequence[str], log_path: Path, **kwargs) -> Iterator[ServerProcess]:
    """``start_server`` as a context manager that always stops the server."""
    server = start_server(overrides, log_path, **kwargs)
    try:
        yield server
    finally:
        server.stop()


def tiny_ensemble_overrides(folder: Path) -> list[str]:
    """``reward=ensemble`` overrides pointing the paper's four members at tiny, random checkpoints
    (built into ``folder`` by ``t2ir1.testing.tiny_rewards``), in float32 so CPU results are exact."""
    from t2ir1.rewards.convert_orm import convert
    from t2ir1.testing.tiny_rewards import (
        build_tiny_gdino,
        build_tiny_git,
        build_tiny_hps,
        build_tiny_llava_next_checkpoint,
    )

    hps = build_tiny_hps(folder / "hps")
    orm_path = convert(build_tiny_llava_next_checkpoint(folder), folder / "orm", vision_num_heads=2)
    overrides = [
        "reward=ensemble",
        f"reward.members.hps.checkpoint={hps['checkpoint']}",
        f"reward.members.hps.arch={hps['arch']}",
        f"reward.members.hps.model_config_path={hps['model_config_path']}",
        f"reward.members.git.model_path={build_tiny_git(folder)}",
        f"reward.members.gdino.model_path={build_tiny_gdino(folder)}",
        f"reward.members.orm.model_path={orm_path}",
        # a weight other than 1 so that raw and weighted differ
        "reward.weights.hps=0.5",
    ]
    for member in ("hps", "git", "gdino", "orm"):
        overrides.append(f"reward.members.{member}.dtype=float32")
    for member in ("git", "gdino", "orm"):
        overrides.append(f"reward.members.{member}.local_files_only=true")
    return overrides
