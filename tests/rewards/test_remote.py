"""RemoteReward without the model server: the wire format round-trips exactly, and failures
(unreachable, silent, transiently overloaded server) give bounded retries and clear errors."""

from __future__ import annotations

import json
import math
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch
from PIL import Image

from t2ir1.data.records import NumeracyItem, PromptRecord, SpatialInfo
from t2ir1.rewards.base import RewardOutput
from t2ir1.rewards.compositional import Detection
from t2ir1.rewards.ensemble import RewardEnsemble
from t2ir1.rewards.overlap import OverlappedScorer, async_option, merge_outputs, scorer_for
from t2ir1.rewards.remote import RemoteReward, RemoteRewardError
from t2ir1.rewards.serve import server_token
from t2ir1.rewards.wire import (
    WireError,
    decode_image,
    decode_output,
    decode_records,
    decode_value,
    encode_output,
    encode_request,
    encode_value,
    image_bytes,
    split_output,
)
from t2ir1.testing.reward_server import free_port


def _json_round_trip(value):
    return decode_value(json.loads(json.dumps(encode_value(value), allow_nan=False)))


def test_values_round_trip_exactly():
    value = {
        "scores": torch.tensor([0.1, float("nan"), 1 / 3], dtype=torch.float32),
        "flags": torch.tensor([True, False]),
        "counts": torch.tensor([[1, 2], [3, 4]]),
        "pair": (1, "a"),
        "inf": float("-inf"),
        "nested": [{"x": 1.5}, None],
        7: "int key",
    }
    back = _json_round_trip(value)
    assert back["scores"].dtype == torch.float32
    assert torch.equal(back["scores"][[0, 2]], value["scores"][[0, 2]]) and math.isnan(back["scores"][1])
    assert torch.equal(back["flags"], value["flags"]) and back["flags"].dtype == torch.bool
    assert torch.equal(back["counts"], value["counts"]) and back["counts"].shape == (2, 2)
    assert back["pair"] == (1, "a") and back["inf"] == -math.inf and back["nested"] == [{"x": 1.5}, None]
    assert back[7] == "int key"


def test_t2ir1_dataclasses_round_trip_and_others_are_refused():
    detections = [[Detection(label="cat", box=(1.0, 2.0, 3.0, 4.0), score=0.5, attributes={"color": "red"})], []]
    assert _json_round_trip(detections) == detections
    with pytest.raises(WireError, match="not a t2ir1 dataclass"):
        decode_value({"__dataclass__": "os.path:join", "fields": {}})
    with pytest.raises(WireError, match=r"extras.bad: a object cannot travel"):
        encode_value({"bad": object()}, "extras")


def test_request_records_and_images_are_lossless(records, images):
    body = json.loads(json.dumps(encode_request(records, images)))
    assert decode_records(body["records"]) == records
    for item, image in zip(body["images"], images, strict=True):
        back = decode_image(*image_bytes(item, "images[0]", 4096))
        assert back.size == image.size and back.tobytes() == image.convert("RGB").tobytes()
    # every metadata field travels: spatial_info, numeracy_info, attr_nouns, prompt_id, extras
    record = PromptRecord(
        prompt="two cats left of a dog",
        task_type="complex",
        nouns=("cat", "dog"),
        spatial_info=SpatialInfo("cat", "dog", "left of"),
        numeracy_info=(NumeracyItem("cat", 2),),
        attr_nouns=("two cats",),
        prompt_id="p7",
        extras={"scene": {"objects": [{"shape": "circle"}]}},
    )
    back = decode_records(json.loads(json.dumps(encode_request([record], images[:1])))["records"])[0]
    assert back == record and back.extras == record.extras


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ({"height": 2, "width": 2}, r"missing field\(s\) \['rgb'\]"),
        ({"height": 0, "width": 2, "rgb": ""}, r"height = 0; expected an integer in \[1, 64\]"),
        ({"height": 2, "width": 2, "rgb": "@@@@"}, "not valid base64"),
        ({"height": 2, "width": 2, "rgb": "AAAA"}, "holds 3 bytes; a 2x2 uint8 RGB image needs 12"),
    ],
)
def test_bad_images_are_named(item, message):
    with pytest.raises(WireError, match=message):
        image_bytes(item, "images[3]", 64)


def test_split_output_inverts_merge(records, images):
    batch = RewardOutput(
        "ensemble",
        torch.arange(5, dtype=torch.float32),
        {"raw": {"a": torch.arange(5) * 2}, "labels": list("abcde"), "note": "whole batch"},
    )
    parts = split_output(batch, [2, 3])
    assert [p.scores.tolist() for p in parts] == [[0.0, 1.0], [2.0, 3.0, 4.0]]
    assert parts[1].extras["raw"]["a"].tolist() == [4, 6, 8] and parts[0].extras["labels"] == ["a", "b"]
    assert parts[0].extras["note"] == "whole batch"
    merged = merge_outputs(parts)
    assert torch.equal(merged.scores, batch.scores) and torch.equal(merged.extras["raw"]["a"], batch.extras["raw"]["a"])
    with pytest.raises(ValueError, match="do not add up to the batch of 5"):
        split_output(batch, [2, 2])
    with pytest.raises(WireError, match=r"scores of shape \(5,\), expected \(4,\)"):
        decode_output(encode_output(batch), expected_rows=4)


def test_unreachable_server_retries_with_backoff_then_names_it(records, images):
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    reward = RemoteReward(url, retries=2, backoff_s=0.1, timeout_s=5)
    start = time.perf_counter()
    with pytest.raises(RemoteRewardError) as caught:
        reward(records[:1], images[:1])
    elapsed = time.perf_counter() - start
    message = str(caught.value)
    assert f"reward server {url}/score failed 3 attempt(s)" in message
    assert message.count("unreachable (ConnectError") == 3
    assert "resume from the last checkpoint" in message
    assert 0.3 <= elapsed < 5, elapsed  # backoff 0.1 s then 0.2 s, and no more
    with pytest.raises(RemoteRewardError, match=f"reward server {url} not ready after 0 s"):
        RemoteReward(url, ready_timeout_s=0.2).setup()


def test_silent_server_times_out(records, images):
    with socket.socket() as listener:  # accepts connections (backlog), never answers
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        url = f"http://127.0.0.1:{listener.getsockname()[1]}"
        reward = RemoteReward(url, retries=1, backoff_s=0.0, timeout_s=0.3)
        start = time.perf_counter()
        with pytest.raises(RemoteRewardError, match=r"failed 2 attempt\(s\).*timed out after 0.3 s"):
            reward(records[:1], images[:1])
        assert time.perf_counter() - start < 5


class _FlakyHandler(BaseHTTPRequestHandler):
    """Answers 503 to the first ``failures`` scoring requests, then a real encoded output."""

    failures = 2
    calls = 0

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).calls += 1
        if type(self).calls <= self.failures:
            self._send(503, {"detail": "workers still loading"})
            return
        rows = len(body["records"])
        output = RewardOutput("ensemble", torch.full((rows,), 0.25), {"raw": {"m": torch.full((rows,), 0.25)}})
        self._send(200, encode_output(output))

    def _send(self, status, payload):
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_transient_503_is_retried_and_4xx_is_final(records, images):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FlakyHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        out = RemoteReward(url, retries=2, backoff_s=0.01)(records[:3], images[:3])
        assert _FlakyHandler.calls == 3 and out.scores.tolist() == [0.25] * 3
        _FlakyHandler.calls, _FlakyHandler.failures = 0, 5
        with pytest.raises(RemoteRewardError, match=r"failed 2 attempt\(s\).*HTTP 503 workers still loading"):
            RemoteReward(url, retries=1, backoff_s=0.01)(records[:1], images[:1])
        assert _FlakyHandler.calls == 2  # bounded: one try + one retry
    finally:
        server.shutdown()
        server.server_close()


def test_config_errors_are_clear():
    with pytest.raises(ValueError, match="reward.url = 'localhost:8765'; expected http://host:port"):
        RemoteReward("localhost:8765")
    with pytest.raises(TypeError, match=r"RemoteReward: unknown option\(s\) \['asynch'\]"):
        RemoteReward("http://127.0.0.1:1", asynch=True)
    assert RemoteReward("http://127.0.0.1:1", **{"async": True}).scores_while_generating is True
    with pytest.raises(ValueError, match="reward.async = 'yes'; expected true or false"):
        async_option({"async": "yes"}, "RewardEnsemble")
    with pytest.raises(ValueError, match="binding 0.0.0.0 .* requires a shared token; export T2IR1_TEST_UNSET_TOKEN"):
        server_token("0.0.0.0", "T2IR1_TEST_UNSET_TOKEN")
    assert server_token("127.0.0.1", "T2IR1_TEST_UNSET_TOKEN") is None


def test_scorer_for_follows_the_async_option(records):
    class Half:
        name = "half"

        def setup(self, device="cpu"):
            pass

        def __call__(self, records, images):
            return RewardOutput(self.name, torch.full((len(records),), 0.5))

    sync = RewardEnsemble({"half": Half()}, {"half": 1.0})
    overlapped = RewardEnsemble({"half": Half()}, {"half": 1.0}, **{"async": True})
    assert scorer_for(sync, records) is None
    scorer = scorer_for(overlapped, records)
    assert isinstance(scorer, OverlappedScorer)
    scorer.on_images(0, [Image.new("RGB", (4, 4))] * 5)
    assert scorer.collect().scores.tolist() == [0.5] * 5


def _compose_serve(overrides, launcher: bool = False):
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from t2ir1.testing.reward_server import REPO

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("serve", overrides=list(overrides), return_hydra_config=launcher)
    if launcher:
        HydraConfig.instance().set_config(cfg)
    return cfg


def test_serve_config_builds_a_server_without_loading_models(monkeypatch):
    from t2ir1.rewards.serve import build_server

    monkeypatch.delenv("T2IR1_REWARD_TOKEN", raising=False)
    cfg = _compose_serve(["reward=color", "server.accelerator=cpu"])
    assert cfg.server.host == "127.0.0.1"  # loopback by default
    server, token = build_server(cfg)
    assert token is None
    assert server.model_metadata == {"reward": "ensemble", "members": ["color"], "weights": {"color": 1.0}}
    with pytest.raises(ValueError, match="binding 0.0.0.0 .* requires a shared token"):
        build_server(_compose_serve(["reward=color", "server.accelerator=cpu", "server.host=0.0.0.0"]))
    monkeypatch.setenv("T2IR1_REWARD_TOKEN", "s3cret")
    server, token = build_server(_compose_serve(["reward=color", "server.accelerator=cpu", "server.host=0.0.0.0"]))
    assert token == "s3cret"


def test_slurm_reward_launcher_composes():
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher")
    cfg = _compose_serve(["hydra/launcher=slurm_reward", "server.host=0.0.0.0"], launcher=True)
    assert cfg.hydra.launcher.tasks_per_node == 1 and cfg.hydra.launcher.gpus_per_node == 1
    assert cfg.hydra.launcher.name == "t2ir1-reward-server"


def test_address_file_is_written_atomically(tmp_path):
    from t2ir1.rewards.serve import public_url, write_address

    target = tmp_path / "shared" / "reward_url"
    write_address(str(target), public_url("127.0.0.1", 8765))
    assert target.read_text() == "http://127.0.0.1:8765\n"
    assert not list(target.parent.glob("*.tmp"))
    assert public_url("0.0.0.0", 9000).endswith(":9000") and "0.0.0.0" not in public_url("0.0.0.0", 9000)
