"""``reward=remote reward.url=http://host:port``: a ``Reward`` whose members run on a reward server.

The server (``python -m t2ir1.rewards.serve reward=ensemble``) hosts the ensemble on
its own GPUs or node; this client sends records and lossless images
(``t2ir1.rewards.wire``) and returns the server's ``RewardOutput`` unchanged (``raw`` /
``weighted`` per member in ``extras``, so the ``reward/<member>`` curves stay the same).

Every request has a timeout; connection failures, timeouts and 502/503/504 answers
are retried ``retries`` times with exponential backoff; any other error status is
final (retrying a malformed request or a failing member cannot help). When the server
stays unreachable, :class:`RemoteRewardError` names the server, what failed and how
often, and training stops (the last checkpoint stays the one to resume from).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Sequence
from typing import Any

import httpx
import torch
from PIL import Image

from t2ir1.data.records import PromptRecord
from t2ir1.rewards.base import RewardOutput
from t2ir1.rewards.overlap import async_option, merge_outputs
from t2ir1.rewards.wire import WireError, decode_output, encode_request

log = logging.getLogger(__name__)

# Answers that mean "the server is (re)starting or overloaded": worth another try.
RETRY_STATUSES = (502, 503, 504)


class RemoteRewardError(RuntimeError):
    """The reward server could not score a batch; the message names the server and the cause."""


class RemoteReward:
    """A ``Reward`` scored by a reward server at ``url``.

    Args:
        url: ``http://host:port`` of ``t2ir1.rewards.serve``.
        timeout_s: seconds one request may take (connect, upload, scoring, answer).
        retries: further attempts after a connection error, timeout or 502/503/504.
        backoff_s: wait before the first retry; doubled before each next one.
        ready_timeout_s: ``setup`` waits this long for ``GET /health`` to answer ``ok``.
        token_env: environment variable holding the server's shared token (sent when set).
        api_path: the server's scoring path (``server.api_path``).
        max_images_per_request: a larger batch is sent as several requests (the server
            batches them again); bounds the request size.
        name: name of the ``RewardOutput`` when the server answers under another name.
    """

    def __init__(
        self,
        url: str,
        timeout_s: float = 600.0,
        retries: int = 3,
        backoff_s: float = 1.0,
        ready_timeout_s: float = 300.0,
        token_env: str = "T2IR1_REWARD_TOKEN",
        api_path: str = "/score",
        max_images_per_request: int = 64,
        name: str | None = None,
        **options: Any,
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(
                f"RemoteReward: reward.url = {url!r}; expected http://host:port of a running "
                "`python -m t2ir1.rewards.serve` (e.g. reward.url=http://127.0.0.1:8765)"
            )
        if retries < 0 or backoff_s < 0 or timeout_s <= 0 or max_images_per_request < 1:
            raise ValueError(
                "RemoteReward: need retries >= 0, backoff_s >= 0, timeout_s > 0, max_images_per_request >= 1; got "
                f"{retries}, {backoff_s}, {timeout_s}, {max_images_per_request}"
            )
        # ``async`` (a Python keyword) is the only option: score decode chunks while generating
        self.scores_while_generating = async_option(options, "RemoteReward")
        self.url = url.rstrip("/")
        self.timeout_s = float(timeout_s)
        self.retries = int(retries)
        self.backoff_s = float(backoff_s)
        self.ready_timeout_s = float(ready_timeout_s)
        self.token_env = token_env
        self.api_path = api_path
        self.max_images_per_request = int(max_images_per_request)
        self.name = name or "ensemble"
        self.members: list[str] = []
        self.weights: dict[str, float] = {}
        # what the server said about the last request (e.g. how many requests shared its batch)
        self.last_served: dict[str, Any] = {}
        self._client: httpx.Client | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ setup
    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                token = os.environ.get(self.token_env)
                headers = {"Authorization": f"Bearer {token}"} if token else {}
                self._client = httpx.Client(base_url=self.url, headers=headers, timeout=self.timeout_s)
            return self._client

    def setup(self, device: torch.device | str = "cpu") -> None:
        """Wait (up to ``ready_timeout_s``) until the server is healthy; read what it hosts."""
        deadline = time.monotonic() + self.ready_timeout_s
        last = "no answer yet"
        while True:
            try:
                health = self._http().get("/health", timeout=min(self.timeout_s, 10.0))
                if health.status_code == 200:
                    break
                if health.status_code in (401, 403):
                    raise RemoteRewardError(
                        f"reward server {self.url} refused the token (HTTP {health.status_code}): export the "
                        f"server's token as {self.token_env} in the training job"
                    )
                last = f"HTTP {health.status_code} {health.text.strip()!r}"
            except httpx.TransportError as error:
                last = f"{type(error).__name__}: {error}"
            if time.monotonic() >= deadline:
                raise RemoteRewardError(
                    f"reward server {self.url} not ready after {self.ready_timeout_s:.0f} s ({last}); start it with "
                    "`python -m t2ir1.rewards.serve reward=<config>` and check reward.url"
                )
            time.sleep(min(1.0, max(0.0, deadline - time.monotonic())))
        info = self._http().get("/info").json().get("model") or {}
        self.members = list(info.get("members", []))
        self.weights = dict(info.get("weights", {}))
        self.name = info.get("reward", self.name)
        log.info("reward server %s hosts %r: members %s, weights %s", self.url, self.name, self.members, self.weights)

    # ------------------------------------------------------------------ scoring
    def __call__(self, records: Sequence[PromptRecord], images: Sequence[Image.Image]) -> RewardOutput:
        """Score ``images[i]`` against ``records[i]`` on the server; ``[B]`` scores as in-process."""
        if len(records) != len(images):
            raise ValueError(f"RemoteReward: {len(records)} records but {len(images)} images")
        if not records:
            raise ValueError("RemoteReward: nothing to score (0 images)")
        step = self.max_images_per_request
        parts = [
            self._score_request(records[start : start + step], images[start : start + step])
            for start in range(0, len(records), step)
        ]
        return parts[0] if len(parts) == 1 else merge_outputs(parts)

    def _score_request(self, records: Sequence[PromptRecord], images: Sequence[Image.Image]) -> RewardOutput:
        body = encode_request(records, images)
        attempts = self.retries + 1
        failures: list[str] = []
        for attempt in range(attempts):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            try:
                response = self._http().post(self.api_path, json=body)
            except httpx.TimeoutException as error:
                failures.append(f"timed out after {self.timeout_s:g} s ({type(error).__name__})")
                continue
            except httpx.TransportError as error:
                failures.append(f"unreachable ({type(error).__name__}: {error})")
                continue
            if response.status_code in RETRY_STATUSES:
                failures.append(f"HTTP {response.status_code} {_detail(response)}")
                continue
            if response.status_code != 200:
                hint = (
                    "; lower reward.max_images_per_request or raise the server's server.max_payload_mb"
                    if response.status_code == 413
                    else ""
                )
                raise RemoteRewardError(
                    f"reward server {self.url}{self.api_path} refused a request of {len(records)} image(s): "
                    f"HTTP {response.status_code}: {_detail(response)}{hint}"
                )
            try:
                answer = response.json()
                output = decode_output(answer, expected_rows=len(records))
                self.last_served = dict(answer.get("served") or {})
                return output
            except (WireError, ValueError) as error:
                raise RemoteRewardError(f"reward server {self.url} sent an unreadable answer: {error}") from None
        raise RemoteRewardError(
            f"reward server {self.url}{self.api_path} failed {attempts} attempt(s) to score {len(records)} image(s): "
            f"{'; '.join(failures)}. Is `python -m t2ir1.rewards.serve` still running and reachable from here? "
            "Training stops; resume from the last checkpoint (ckpt_path=<run>/checkpoints/last.ckpt) once it is back."
        )

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def __getstate__(self) -> dict[str, Any]:
        # the HTTP client and its lock stay in this process (spawned workers, checkpoints)
        state = dict(self.__dict__)
        state["_client"], state["_lock"] = None, None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()


def _detail(response: httpx.Response) -> str:
    """The server's error message (FastAPI's ``detail``), else the body's start."""
    try:
        detail = response.json().get("detail")
    except ValueError:
        detail = None
    if isinstance(detail, list):  # request validation errors: one entry per problem
        detail = "; ".join(f"{'.'.join(str(p) for p in item.get('loc', []))}: {item.get('msg')}" for item in detail)
    return str(detail) if detail else response.text[:500]
