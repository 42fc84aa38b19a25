"""The reward server on 127.0.0.1 with the paper's four members on tiny checkpoints: remote scores
equal in-process scores, malformed and unauthorised requests get a 4xx with a message and the
server keeps serving, and a bounded load test loses and duplicates nothing."""

from __future__ import annotations

import base64
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from PIL import Image

from t2ir1.data.records import PromptRecord
from t2ir1.rewards.remote import RemoteReward, RemoteRewardError
from t2ir1.rewards.wire import encode_request
from t2ir1.testing.reward_server import REPO, running_server, tiny_ensemble_overrides

TOKEN = "test-token-0123456789"
# small enough that a 2 MiB body is refused, large enough for the test batches
MAX_PAYLOAD_MB = 1
SERVER_OVERRIDES = (
    "server.accelerator=cpu",
    "server.threads=1",
    "server.max_batch_size=8",
    "server.batch_timeout_s=0.02",
    f"server.max_payload_mb={MAX_PAYLOAD_MB}",
)


@pytest.fixture(scope="module")
def tiny_overrides(tmp_path_factory) -> list[str]:
    return tiny_ensemble_overrides(tmp_path_factory.mktemp("tiny-rewards"))


@pytest.fixture(scope="module")
def server(tiny_overrides, tmp_path_factory):
    """One server for the module, started with a token (so every request must carry it)."""
    log = tmp_path_factory.mktemp("serve") / "server.log"
    with running_server(
        [*tiny_overrides, *SERVER_OVERRIDES],
        log,
        env={"T2IR1_REWARD_TOKEN": TOKEN},
        headers={"Authorization": f"Bearer {TOKEN}"},
    ) as running:
        yield running


@pytest.fixture(scope="module")
def local_reward(tiny_overrides):
    """The same config instantiated in this process (what training does without a server)."""
    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        cfg = compose("serve", overrides=tiny_overrides)
    reward = instantiate(cfg.reward)
    reward.setup("cpu")
    return reward


@pytest.fixture
def client(server, monkeypatch) -> RemoteReward:
    monkeypatch.setenv("T2IR1_REWARD_TOKEN", TOKEN)
    reward = RemoteReward(server.url, timeout_s=60, retries=0, ready_timeout_s=30)
    reward.setup()
    yield reward
    reward.close()


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}"}


def _assert_same(remote, local) -> None:
    assert remote.name == local.name
    assert torch.equal(remote.scores, local.scores), (remote.scores, local.scores)
    for key in ("raw", "weighted", "dropped"):
        assert set(remote.extras[key]) == {"hps", "git", "gdino", "orm"}
        for member, value in local.extras[key].items():
            assert remote.extras[key][member].dtype == value.dtype
            assert torch.equal(remote.extras[key][member], value), (key, member)
    gdino = remote.extras["members"]["gdino"]["num_detections"]
    assert torch.equal(gdino, local.extras["members"]["gdino"]["num_detections"])


def test_remote_scores_equal_in_process_scores(client, local_reward, records, images):
    assert client.members == ["hps", "git", "gdino", "orm"]
    assert client.weights == {"hps": 0.5, "git": 1.0, "gdino": 1.0, "orm": 1.0}
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # the server's workers use one thread: same kernels, same sums
    try:
        local = local_reward(records, images)
    finally:
        torch.set_num_threads(previous)
    remote = client(records, images)
    _assert_same(remote, local)
    # the weighted sum is really there: hand-worked 0.5 * hps + git + gdino + orm
    raw = remote.extras["raw"]
    torch.testing.assert_close(remote.scores, 0.5 * raw["hps"] + raw["git"] + raw["gdino"] + raw["orm"])
    # a batch split into several requests (the server may batch them again) gives the same rows
    client.max_images_per_request = 2
    split = client(records, images)
    torch.testing.assert_close(split.scores, local.scores, rtol=1e-5, atol=1e-6)
    assert split.extras["raw"]["git"].shape == (5,)


def _post(server, body=None, content=None, headers=None) -> httpx.Response:
    return httpx.post(
        f"{server.url}/score",
        json=body,
        content=content,
        headers={**_auth(), **(headers or {})},
        timeout=60,
    )


def test_malformed_requests_get_4xx_with_a_message(server, records, images, client, local_reward):
    good = encode_request(records[:1], images[:1])
    bad_bytes = {**good, "images": [{**good["images"][0], "rgb": "not base64!"}]}
    short = {**good, "images": [{**good["images"][0], "rgb": base64.b64encode(b"\0" * 10).decode()}]}
    bad_record = {**good, "records": [{"prompt": "a cat", "task_type": "painting"}]}
    cases = [
        ("bad image bytes", _post(server, bad_bytes), 422, "images[0].rgb is not valid base64"),
        ("short image", _post(server, short), 422, "holds 10 bytes"),
        ("missing field", _post(server, {"records": good["records"]}), 422, "Field required"),
        ("bad record", _post(server, bad_record), 422, "records[0]: field 'task_type' is 'painting'"),
        ("mismatch", _post(server, {**good, "records": good["records"] * 2}), 422, "2 records but 1 images"),
        (
            "not json",
            _post(server, content=b"{not json", headers={"Content-Type": "application/json"}),
            422,
            "JSON decode error",
        ),
        (
            "oversized",
            _post(server, content=b"x" * (2 * MAX_PAYLOAD_MB * 2**20), headers={"Content-Type": "application/json"}),
            413,
            "Payload too large",
        ),
    ]
    for name, response, status, message in cases:
        assert response.status_code == status, (name, response.status_code, response.text[:300])
        assert message in response.text, (name, response.text[:300])
        assert len(response.text) < 2000, (name, "the error echoes the request body")
    # the server survived every one of them and still scores correctly
    assert httpx.get(f"{server.url}/health", headers=_auth(), timeout=10).text == "ok"
    assert server.process.poll() is None
    assert torch.equal(client(records[:1], images[:1]).scores, _local(local_reward, records[:1], images[:1]).scores)


def _local(reward, records, images):
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return reward(records, images)
    finally:
        torch.set_num_threads(previous)


def test_requests_without_the_token_are_refused(server, records, images, monkeypatch):
    body = encode_request(records[:1], images[:1])
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
        response = httpx.post(f"{server.url}/score", json=body, headers=headers, timeout=30)
        assert response.status_code == 401, (headers, response.text)
        assert "T2IR1_REWARD_TOKEN" in response.json()["detail"]
    assert httpx.get(f"{server.url}/health", timeout=10).status_code == 401
    # the client says what to do
    monkeypatch.setenv("T2IR1_REWARD_TOKEN", "wrong")
    with pytest.raises(RemoteRewardError, match=f"{server.url} refused the token .*export the server's token"):
        RemoteReward(server.url, ready_timeout_s=5).setup()


def test_a_failing_request_does_not_fail_its_batch_mates(server, records, images, client):
    """A request the members cannot score gets 500 naming the error; requests batched with it succeed."""
    # a phrase of 200 tokens overflows the tiny GIT's 64 positions: that member raises
    long = PromptRecord(prompt="a red cat", task_type="color", nouns=("cat",), attr_nouns=("red cat " * 100,))
    bad = encode_request([long], images[:1])
    results: dict[str, object] = {}

    def post_bad():
        results["bad"] = _post(server, bad)

    def score_good():
        results["good"] = client(records[1:3], images[1:3])

    threads = [threading.Thread(target=post_bad), threading.Thread(target=score_good)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    bad_response = results["bad"]
    assert bad_response.status_code == 500, bad_response.text[:300]
    assert "reward 'ensemble' failed" in bad_response.json()["detail"]
    assert results["good"].scores.shape == (2,)
    assert server.process.poll() is None


@pytest.mark.slow  # 200 requests through four tiny models on a shared 2-core machine
def test_load_four_clients_fifty_requests(server, client, local_reward):
    clients, per_client, distinct = 4, 50, 20
    generator = np.random.default_rng(1)
    cases = [
        (
            PromptRecord(prompt=f"a red cat number {i}", task_type="color", nouns=("cat",), attr_nouns=("red cat",)),
            Image.fromarray(generator.integers(0, 256, (32, 32, 3), dtype=np.uint8)),
        )
        for i in range(distinct)
    ]
    expected = _local(local_reward, [r for r, _ in cases], [im for _, im in cases]).scores  # [distinct]
    latencies: list[float] = []
    answers: dict[int, float] = {}
    batch_sizes: list[int] = []
    lock = threading.Lock()

    def worker(worker_id: int) -> None:
        own = RemoteReward(server.url, timeout_s=120, retries=0, ready_timeout_s=30)  # one client per thread
        for k in range(per_client):
            request_id = worker_id * per_client + k
            record, image = cases[request_id % distinct]
            start = time.perf_counter()
            score = float(own([record], [image]).scores[0])
            with lock:
                latencies.append(time.perf_counter() - start)
                assert request_id not in answers, f"request {request_id} answered twice"
                answers[request_id] = score
                batch_sizes.append(own.last_served["batch_requests"])
        own.close()

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        for future in [pool.submit(worker, w) for w in range(clients)]:
            future.result(timeout=600)
    elapsed = time.perf_counter() - start
    assert sorted(answers) == list(range(clients * per_client)), "lost responses"
    for request_id, score in answers.items():
        # batch composition changes float rounding in the models, never which image a score belongs to
        assert abs(score - float(expected[request_id % distinct])) < 1e-4, request_id
    assert len(set(np.round(expected.numpy(), 4))) > distinct // 2, "cases too alike to catch a mix-up"
    # dynamic batching across clients happened: some reward calls served several requests
    assert max(batch_sizes) > 1, batch_sizes
    ordered = sorted(latencies)
    p50, p95 = statistics.median(ordered), ordered[int(0.95 * (len(ordered) - 1))]
    print(
        f"\nreward server load: {len(answers)} requests in {elapsed:.1f} s = {len(answers) / elapsed:.1f} req/s, "
        f"latency p50 {p50 * 1000:.0f} ms, p95 {p95 * 1000:.0f} ms, "
        f"requests per reward call: mean {statistics.mean(batch_sizes):.2f}, max {max(batch_sizes)}"
    )
    Path(server.log_path.parent / "load.txt").write_text(f"{len(answers) / elapsed:.2f} {p50:.4f} {p95:.4f}\n")


def test_overlapped_chunks_scored_by_the_server(client, records, images):
    """reward=remote reward.async=true: chunks go to the server from the worker thread; the merged
    output has every row and member, as one call would."""
    from t2ir1.rewards.overlap import OverlappedScorer

    scorer = OverlappedScorer(client, records)
    scorer.on_images(0, images[:2])
    scorer.on_images(2, images[2:])
    merged = scorer.collect()
    whole = client(records, images)
    # per-chunk batches change float rounding inside the models, never which row a score belongs to
    torch.testing.assert_close(merged.scores, whole.scores, rtol=1e-5, atol=1e-6)
    for member in ("hps", "git", "gdino", "orm"):
        torch.testing.assert_close(merged.extras["weighted"][member], whole.extras["weighted"][member], rtol=1e-5, atol=1e-6)
