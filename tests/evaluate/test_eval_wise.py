"""WISE: prompt file errors, robust score parsing, WiScore and the weighted overall, both judges end to end."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from t2ir1.evaluate import run
from t2ir1.evaluate.base import BenchmarkFileError
from t2ir1.evaluate.harness import IMAGES_DIR, SCORES_JSONL
from t2ir1.evaluate.wise import parse_scores, read_wise_prompts, wiscore

PROMPTS = [
    {"prompt_id": 1, "Prompt": "The flower gifted on Mother's Day", "Explanation": "A carnation", "Category": "Cultural knowledge", "Subcategory": "Festival"},
    {"prompt_id": 402, "Prompt": "A clock at noon", "Explanation": "Both hands point up", "Category": "Spatio-temporal", "Subcategory": "Longitudinal time"},
    {"prompt_id": 905, "Prompt": "Copper burning in a flame", "Explanation": "A green flame", "Category": "Natural science", "Subcategory": "Chemistry"},
]  # fmt: skip


def test_parse_scores_variants():
    assert parse_scores("Consistency: 2\nRealism: 1\nAesthetic Quality: 0") == {
        "consistency": 2.0,
        "realism": 1.0,
        "aesthetic_quality": 0.0,
    }
    assert parse_scores("**Consistency**: 1/2\n**Realism:** 2\n**Aesthetic Quality** - 1") == {
        "consistency": 1.0,
        "realism": 2.0,
        "aesthetic_quality": 1.0,
    }
    assert parse_scores("consistency (0-2): 0, realism=1, aesthetics: 2") == {
        "consistency": 0.0,
        "realism": 1.0,
        "aesthetic_quality": 2.0,
    }
    assert parse_scores("Consistency: 2\nRealism: 1") is None  # a score missing
    assert parse_scores("Consistency: 5\nRealism: 1\nAesthetic Quality: 1") is None  # out of 0..2
    assert parse_scores("") is None


def test_wiscore_by_hand():
    assert wiscore(2, 2, 2) == pytest.approx(1.0)
    assert wiscore(2, 1, 0) == pytest.approx((1.4 + 0.2) / 2)  # 0.8


def test_prompt_file_errors(tmp_path):
    path = tmp_path / "culture.json"
    path.write_text(json.dumps([PROMPTS[0], {"prompt_id": "7", "Prompt": "x", "Explanation": "y"}]))
    with pytest.raises(BenchmarkFileError, match=r"culture\.json\[1\]: 'prompt_id' must be an integer"):
        read_wise_prompts([path])
    path.write_text(json.dumps([PROMPTS[0], {**PROMPTS[1], "Explanation": ""}]))
    with pytest.raises(BenchmarkFileError, match=r"culture\.json\[1\]: 'Explanation'"):
        read_wise_prompts([path])
    path.write_text(json.dumps([PROMPTS[0], PROMPTS[0]]))
    with pytest.raises(BenchmarkFileError, match="prompt_id 1 already used"):
        read_wise_prompts([path])
    path.write_text("[{\n")
    with pytest.raises(BenchmarkFileError, match=r"culture\.json:2: not valid JSON"):
        read_wise_prompts([path])


class _Judge(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint that scores by prompt id found in the instruction."""

    answers = {
        "Mother's Day": "**Consistency**: 2\nRealism: 1\nAesthetic Quality: 1",
        "noon": "Consistency: 1\nRealism: 1\nAesthetic Quality: 0",
    }
    seen: list[dict] = []

    def do_POST(self):  # noqa: N802 (http.server API)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
        text = body["messages"][1]["content"][0]["text"]
        answer = next((a for k, a in self.answers.items() if k in text), "I cannot judge this.")
        payload = json.dumps({"choices": [{"message": {"role": "assistant", "content": answer}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


@pytest.fixture()
def judge_server():
    server = HTTPServer(("127.0.0.1", 0), _Judge)
    server.timeout = 5
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    _Judge.seen = []
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def write_prompts(tmp_path):
    first, second = tmp_path / "cultural_common_sense.json", tmp_path / "rest.json"
    first.write_text(json.dumps(PROMPTS[:1]))
    second.write_text(json.dumps(PROMPTS[1:]))
    return f"[{first},{second}]"


def test_wise_with_an_openai_compatible_endpoint(eval_cfg, tmp_path, judge_server, monkeypatch):
    monkeypatch.setenv("T2IR1_TEST_KEY", "secret")
    out = tmp_path / "run"
    overrides = (
        "benchmark=wise",
        "benchmark/judge=openai",
        f"benchmark.judge.base_url={judge_server}",
        "benchmark.judge.api_key_env=T2IR1_TEST_KEY",
        "benchmark.judge.max_retries=0",
        f"benchmark.prompts={write_prompts(tmp_path)}",
        f"out_dir={out}",
    )
    summary = run(eval_cfg(*overrides))
    # one image per prompt named <prompt_id>.png
    assert sorted(p.name for p in (out / IMAGES_DIR).glob("*.png")) == ["1.png", "402.png", "905.png"]
    assert len(_Judge.seen) == 3 and all(
        s["path"] == "/v1/chat/completions" and s["auth"] == "Bearer secret" for s in _Judge.seen
    )
    image_part = _Judge.seen[0]["body"]["messages"][1]["content"][1]
    assert image_part["image_url"]["url"].startswith("data:image/png;base64,")
    # Cultural: (0.7*2 + 0.2*1 + 0.1*1) / 2 = 0.85; Time: (0.7 + 0.2) / 2 = 0.45; Chemistry: unparsed (left out)
    cats = summary["categories"]
    assert cats["Cultural"]["score"] == pytest.approx(0.85) and cats["Time"]["score"] == pytest.approx(0.45)
    assert cats["Chemistry"]["n"] == 1 and summary["notes"]["unparsed judge answers"] == 1
    # renormalised over the categories present: (0.4 * 0.85 + 0.167 * 0.45) / (0.4 + 0.167)
    assert summary["overall"] == pytest.approx((0.4 * 0.85 + 0.167 * 0.45) / 0.567)
    # a second run reads the cache: no new request
    assert run(eval_cfg(*overrides))["overall"] == summary["overall"]
    assert len(_Judge.seen) == 3


def test_wise_with_a_local_vlm_judge(eval_cfg, tmp_path, tiny_dir):
    """The tiny Janus is an image-text-to-text model: it judges (badly) through the real local path."""
    out = tmp_path / "run"
    overrides = (
        "benchmark=wise",
        f"benchmark.judge.model_path={tiny_dir}",
        "benchmark.judge.max_new_tokens=6",
        "benchmark.judge.local_files_only=true",
        f"benchmark.prompts={write_prompts(tmp_path)}",
        f"out_dir={out}",
    )
    summary = run(eval_cfg(*overrides))
    rows = [json.loads(line)["row"] for line in (out / SCORES_JSONL).read_text().splitlines()]
    assert len(rows) == 3 and all(isinstance(r["answer"], str) for r in rows)
    # a random model's answer has no scores: every row is unparsed, none crashes the run
    assert summary["notes"]["unparsed judge answers"] == sum(not r["parsed"] for r in rows)
    again = run(eval_cfg(*overrides, "score.rescore=true"))
    assert [json.loads(line)["row"] for line in (out / SCORES_JSONL).read_text().splitlines()] == rows
    assert again["notes"] == summary["notes"]
