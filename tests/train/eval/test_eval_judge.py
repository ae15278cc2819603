"""The OpenAI-compatible judge sends DAM's sampling settings; checked against a loopback server."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import ClassVar

import pytest

from fclm_train.eval.judge import JUDGE_BASE_URL_ENV, JUDGE_MODEL_ENV, OpenAIJudge, ReplayJudge

pytest.importorskip("openai")


class _ChatHandler(BaseHTTPRequestHandler):
    requests: ClassVar[list[dict]] = []

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        reply = {
            "id": "cmpl-1", "object": "chat.completion", "created": 0, "model": body["model"],
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "B. No"}}],
        }  # fmt: skip
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def chat_server():
    _ChatHandler.requests = []
    server = HTTPServer(("127.0.0.1", 0), _ChatHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/v1", _ChatHandler.requests
    server.shutdown()
    server.server_close()


def test_openai_judge_sends_dams_request(chat_server, monkeypatch):
    base_url, requests = chat_server
    monkeypatch.setenv(JUDGE_BASE_URL_ENV, base_url)
    monkeypatch.setenv(JUDGE_MODEL_ENV, "judge-model")
    judge = OpenAIJudge(api_key="secret", max_retries=0)
    assert judge("Is it a dog?") == "B. No"
    (request,) = requests
    assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer secret"
    body = request["body"]
    assert body["model"] == "judge-model"
    assert body["messages"] == [{"role": "user", "content": "Is it a dog?"}]
    assert (body["temperature"], body["max_tokens"], body["top_p"]) == (0.0, 300, 1)
    assert (body["frequency_penalty"], body["presence_penalty"]) == (0, 0)


def test_arguments_override_the_environment(monkeypatch):
    monkeypatch.setenv(JUDGE_BASE_URL_ENV, "http://127.0.0.1:1/v1")
    judge = OpenAIJudge(base_url="http://127.0.0.1:2/v1", model="m")
    assert (judge.base_url, judge.model) == ("http://127.0.0.1:2/v1", "m")


def test_replay_judge_refuses_unknown_prompts():
    judge = ReplayJudge({"p": "A"})
    assert judge("p") == "A"
    with pytest.raises(KeyError):
        judge("q")
