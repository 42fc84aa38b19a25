"""A scripted OpenAI-compatible chat endpoint on 127.0.0.1 for judge tests (answers chosen by the test)."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, HTTPServer


@contextmanager
def scripted_chat(answer: Callable[[str, str], str]) -> Iterator[tuple[str, list[dict]]]:
    """Serve ``POST /v1/chat/completions`` answering ``answer(system_text, user_text)``.

    Yields ``(base_url, seen)``; ``seen`` collects every request body.
    """
    seen: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server API)
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append(body)
            system = "".join(part.get("text", "") for part in body["messages"][0]["content"])
            user = "".join(part.get("text", "") for part in body["messages"][1]["content"])
            payload = json.dumps(
                {"choices": [{"message": {"role": "assistant", "content": answer(system, user)}}]}
            )
            data = payload.encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", seen
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
