"""crispedit_lite.evaluation.judge, the LLM judge: grade parsing, request shape, a stub client, and a local
fake OpenAI endpoint."""

from __future__ import annotations

import json
import threading
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from crispedit_lite.evaluation import JUDGE_PROMPT, OpenAIJudge, make_judge, parse_grade


@pytest.mark.parametrize("reply, score", [
    ("A", 1.0), (" A\n", 1.0), ('"A"', 1.0), ("A.", 1.0),
    ("B", 0.0), ("CORRECT", 0.0), ("A: CORRECT", 0.0), ("", 0.0), (None, 0.0), ("a", 0.0),
])
def test_parse_grade(reply, score):
    assert parse_grade(reply) == score


def test_prompt_has_the_simpleqa_fields():
    filled = JUDGE_PROMPT.format(question="Q?", target="gold", predicted_answer="pred")
    assert "Question: Q?\nGold target: gold\nPredicted answer: pred" in filled
    assert "A: CORRECT\nB: INCORRECT" in filled


class StubClient:
    """Mimics ``openai.OpenAI().chat.completions.create``."""

    def __init__(self, replies):
        self.replies, self.calls = list(replies), []
        self.chat = types.SimpleNamespace(completions=types.SimpleNamespace(create=self._create))

    def _create(self, **kwargs):
        self.calls.append(kwargs)
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        msg = types.SimpleNamespace(content=reply)
        return types.SimpleNamespace(choices=[types.SimpleNamespace(message=msg)])


def test_stub_client_request_and_retry():
    client = StubClient([RuntimeError("rate limited"), "A", "B"])
    judge = OpenAIJudge(api_key="", client=client, retry_wait=0.0)
    assert judge("Who?", "Paris", "paris") == 1.0
    assert judge("Who?", "Paris", "rome") == 0.0
    call = client.calls[-1]
    assert call["model"] == "gpt-4o-mini" and call["temperature"] == 0.0
    assert call["messages"][0] == {"role": "system", "content": ""}
    assert "Predicted answer: rome" in call["messages"][1]["content"]
    failing = OpenAIJudge(api_key="k", client=StubClient([RuntimeError("x")] * 2), max_retries=2,
                          retry_wait=0)
    with pytest.raises(RuntimeError):
        failing("q", "g", "p")


def test_make_judge_is_off_without_a_key(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert make_judge() is None
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    judge = make_judge(model="m")
    assert isinstance(judge, OpenAIJudge) and judge.base_url == "http://127.0.0.1:9/v1" and judge.model == "m"
    assert make_judge(api_key="k", base_url="http://h/v1/").base_url == "http://h/v1"
    with pytest.raises(ValueError):
        OpenAIJudge(api_key="")


class FakeOpenAI(BaseHTTPRequestHandler):
    """Grades "A" when the gold target appears in the predicted answer; fails the first request."""

    seen: list = []
    fail_first = True

    def do_POST(self):  # noqa: N802 (http.server API)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).seen.append((self.path, self.headers["Authorization"], body))
        if type(self).fail_first:
            type(self).fail_first = False
            self.send_response(500)
            self.end_headers()
            return
        prompt = body["messages"][1]["content"]
        sample = prompt.split("Question: ")[-1]
        gold = sample.split("Gold target: ")[1].split("\n")[0]
        pred = sample.split("Predicted answer: ")[1].split("\n")[0]
        reply = "A" if gold.lower() in pred.lower() else "B"
        data = json.dumps({"choices": [{"message": {"role": "assistant", "content": reply}}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_local_fake_endpoint(monkeypatch):
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)  # talk to 127.0.0.1 directly
    FakeOpenAI.seen, FakeOpenAI.fail_first = [], True
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeOpenAI)
    server.timeout = 5
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/v1"
        judge = OpenAIJudge("sk-local", base_url=url, timeout=5, retry_wait=0.0)
        assert judge("Capital of France?", "Paris", "It is Paris") == 1.0  # after one HTTP 500
        assert judge("Capital of France?", "Paris", "Rome") == 0.0
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    path, auth, body = FakeOpenAI.seen[-1]
    assert path == "/v1/chat/completions" and auth == "Bearer sk-local"
    assert body["model"] == "gpt-4o-mini" and body["temperature"] == 0.0 and len(FakeOpenAI.seen) == 3
