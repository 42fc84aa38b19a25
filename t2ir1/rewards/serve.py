"""The reward server: ``python -m t2ir1.rewards.serve reward=ensemble [server.port=8765 ...]``.

Hosts any ``conf/reward`` config (the same tree training uses) on LitServe: its
inference workers load the members once on their device (``server.accelerator`` /
``server.devices``), requests arriving within ``server.batch_timeout_s`` of each other
are scored in one call (dynamic batching across clients, up to
``server.max_batch_size`` requests), and ``GET /health`` answers ``ok`` once every
worker is ready. ``t2ir1.rewards.remote.RemoteReward`` is its client; the wire
format is ``t2ir1.rewards.wire``.

Security: the server binds 127.0.0.1 unless told otherwise. Binding another
interface requires a shared token in the environment variable named by
``server.token_env`` (``T2IR1_REWARD_TOKEN``); with a token set, every endpoint
refuses requests without ``Authorization: Bearer <token>`` (401).

Malformed requests (invalid JSON, missing fields, bad records, image bytes that do
not match their size) are refused with 422 and a message before they reach a worker;
oversized bodies get 413. A request whose scoring fails gets 500 with the member's
error; the other requests of its batch are scored alone and succeed.
"""

# No ``from __future__ import annotations``: LitServe hands decode_request's annotation to FastAPI,
# which must see the ScoreRequest class itself to read the JSON body into it.
import logging
import os
import secrets
import socket
from pathlib import Path
from typing import Any, Self

import hydra
import litserve as ls
import torch
from fastapi import HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from PIL import Image
from pydantic import BaseModel, model_validator

from t2ir1.data.records import PromptRecord
from t2ir1.rewards.base import Reward, RewardOutput
from t2ir1.rewards.wire import decode_image, decode_records, encode_output, image_bytes, split_output

log = logging.getLogger(__name__)

# Largest image side accepted (pixels): far above Janus' 384, low enough to refuse absurd sizes.
MAX_IMAGE_SIDE = 4096
# Interfaces reachable only from this machine: no token needed.
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


class ScoreRequest(BaseModel):
    """The JSON body of ``POST /score`` (see ``t2ir1.rewards.wire``), validated in the HTTP process."""

    records: list[Any]
    images: list[Any]

    @model_validator(mode="after")
    def _check(self) -> Self:
        if len(self.records) != len(self.images):
            raise ValueError(f"{len(self.records)} records but {len(self.images)} images: send one record per image")
        if not self.records:
            raise ValueError("no images to score")
        decode_records(self.records)
        for index, item in enumerate(self.images):
            image_bytes(item, f"images[{index}]", MAX_IMAGE_SIDE)
        return self


class RewardAPI(ls.LitAPI):
    """Scores ``ScoreRequest`` s with one ``Reward``; batches of requests are scored in one call."""

    def __init__(
        self,
        reward: Reward,
        token: str | None,
        max_batch_size: int,
        batch_timeout_s: float,
        api_path: str,
        threads: int | None,
    ) -> None:
        super().__init__(max_batch_size=max_batch_size, batch_timeout=batch_timeout_s, api_path=api_path)
        self.reward = reward
        self.token = token
        self.threads = threads

    # ------------------------------------------------------------------ worker side
    def setup(self, device: str) -> None:
        if self.threads:
            torch.set_num_threads(self.threads)
        self.reward.setup(device)
        log.info("reward %r ready on %s", self.reward.name, device)

    def authorize(self, request: Request) -> None:
        """FastAPI dependency of every endpoint: with a token configured, require it."""
        if self.token is None:
            return
        header = request.headers.get("authorization", "")
        scheme, _, supplied = header.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(supplied.encode(), self.token.encode()):
            raise HTTPException(
                status_code=401,
                detail="missing or wrong token: send 'Authorization: Bearer <T2IR1_REWARD_TOKEN>' "
                "(the token the reward server was started with)",
            )

    def decode_request(self, request: ScoreRequest) -> tuple[list[PromptRecord], list[Image.Image]]:
        records = decode_records(request.records)
        images = [decode_image(*image_bytes(item, f"images[{i}]", MAX_IMAGE_SIDE)) for i, item in enumerate(request.images)]
        return records, images

    def batch(self, inputs: list[tuple[list[PromptRecord], list[Image.Image]]]) -> list:
        return inputs

    def predict(self, inputs) -> Any:
        """One reward call for every request of the batch; on failure, each request alone.

        Returns ``(output or exception, requests in the batch)`` per request.
        """
        single = isinstance(inputs, tuple)  # max_batch_size 1: LitServe passes one request
        requests = [inputs] if single else inputs
        records = [record for request_records, _ in requests for record in request_records]
        images = [image for _, request_images in requests for image in request_images]
        try:
            with torch.inference_mode():
                outputs: list[RewardOutput | Exception] = split_output(
                    self.reward(records, images), [len(r) for r, _ in requests]
                )
        except Exception:  # noqa: BLE001 - one request's bad row must not fail the others
            outputs = [self._score_alone(request_records, request_images) for request_records, request_images in requests]
        served = [(output, len(requests)) for output in outputs]
        return served[0] if single else served

    def _score_alone(self, records: list[PromptRecord], images: list[Image.Image]) -> RewardOutput | Exception:
        try:
            with torch.inference_mode():
                return self.reward(records, images)
        except Exception as error:  # noqa: BLE001 - reported to that request's client
            log.exception("reward %r failed on a request of %d image(s)", self.reward.name, len(records))
            return error

    def unbatch(self, outputs: list) -> list:
        return outputs

    def encode_response(self, served: tuple[RewardOutput | Exception, int]) -> Response:
        output, batch_requests = served
        if isinstance(output, Exception):
            return JSONResponse(
                status_code=500,
                content={"detail": f"reward {self.reward.name!r} failed: {type(output).__name__}: {output}"},
            )
        # ``served`` tells the client how many requests shared the reward call (dynamic batching)
        return JSONResponse(content={**encode_output(output), "served": {"batch_requests": batch_requests}})


def server_token(host: str, token_env: str) -> str | None:
    """The shared token from ``token_env``; required when ``host`` is not a loopback interface."""
    token = os.environ.get(token_env) or None
    if token is None and host not in LOOPBACK_HOSTS:
        raise ValueError(
            f"reward server: binding {host} (reachable from other machines) requires a shared token; "
            f"export {token_env}=<secret> here and in the training job, or bind server.host=127.0.0.1"
        )
    return token


def build_server(cfg: DictConfig) -> tuple[ls.LitServer, str | None]:
    """The LitServer for ``cfg`` (``conf/serve.yaml``) and its token; nothing is loaded yet."""
    server_cfg = cfg.server
    token = server_token(server_cfg.host, server_cfg.token_env)
    reward = instantiate(cfg.reward)
    api = RewardAPI(
        reward,
        token=token,
        max_batch_size=server_cfg.max_batch_size,
        batch_timeout_s=server_cfg.batch_timeout_s,
        api_path=server_cfg.api_path,
        threads=server_cfg.threads,
    )
    members = list(getattr(reward, "members", {reward.name: reward}))
    weights = dict(getattr(reward, "weights", {}))
    server = ls.LitServer(
        api,
        accelerator=server_cfg.accelerator,
        devices=server_cfg.devices,
        workers_per_device=server_cfg.workers_per_device,
        timeout=server_cfg.timeout_s,
        max_payload_size=int(server_cfg.max_payload_mb * 2**20),
        model_metadata={"reward": reward.name, "members": members, "weights": weights},
    )
    server.app.add_exception_handler(RequestValidationError, _validation_error)
    return server, token


async def _validation_error(request: Request, error: RequestValidationError) -> JSONResponse:
    """422 listing what is wrong, without echoing the (possibly huge) request body back."""
    problems = [
        {"loc": list(item.get("loc", ())), "msg": str(item.get("msg", "")).removeprefix("Value error, ")}
        for item in error.errors()
    ]
    return JSONResponse(status_code=422, content={"detail": problems})


def public_url(host: str, port: int) -> str:
    """The URL other machines use: this machine's name when bound to every interface."""
    name = socket.getfqdn() if host in ("0.0.0.0", "::") else host
    return f"http://{name}:{port}"


def write_address(path: str, url: str) -> None:
    """Write ``url`` to ``path`` atomically (a training job polling the file never reads half of it)."""
    target = Path(path).expanduser()
    target.parent.mkdir(parents=True, exist_ok=True)
    temporary = target.with_name(target.name + ".tmp")
    temporary.write_text(url + "\n")
    os.replace(temporary, target)


def run(cfg: DictConfig) -> None:
    """Start the server and block until it is stopped (Ctrl-C / SIGTERM)."""
    server, token = build_server(cfg)
    host, port = cfg.server.host, cfg.server.port
    if cfg.server.address_file:
        # the client's setup() waits for /health, so the address may be published before the models load
        write_address(cfg.server.address_file, public_url(host, port))
    log.info(
        "reward server: %s (members %s) at %s%s; health: GET /health; token %s",
        cfg.reward.get("_target_"),
        server.model_metadata["members"],
        public_url(host, port),
        cfg.server.api_path,
        "required" if token else "not required (loopback only)",
    )
    server.run(
        host=host,
        port=port,
        num_api_servers=cfg.server.num_api_servers,
        log_level=cfg.server.log_level,
        generate_client_file=False,
    )


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="serve")
def main(cfg: DictConfig) -> None:
    log.debug("config:\n%s", OmegaConf.to_yaml(cfg))
    run(cfg)


if __name__ == "__main__":
    main()
