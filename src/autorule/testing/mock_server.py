"""A real OpenAI-compatible HTTP server with scripted replies, a fixed latency and injected faults.

Used by the benchmarks (a server whose every answer takes `latency` seconds) and by the
tests and fault drills. `reply(messages, body) -> dict` decides the assistant message
for each request (a default echoes deterministically); `faults` is a list consumed one
per request (or a function of the request's index and body), each None (answer
normally) or one of FAULTS:

- "401": the server wants another API key (not retried);
- transport / server faults, which a client should retry: "429" (with Retry-After),
  "500", "503", "hang" (no answer until `hang_seconds`), "drop" (connection closed),
  "badjson" (a cut-off body), "nochoices" (an empty `choices` list);
- content faults, which a retry cannot fix: "length" (the text cut in half,
  `finish_reason: length`), "notjson" (the same content written as plain lines, not
  the JSON array asked for).

A fault may also be `(status, body)`: that HTTP status with that JSON body, as a server
answers a request it refuses. `refuse_logprobs=(status, body)` answers every request that asks for `logprobs` or
`top_logprobs` with that status and JSON body, as hosted APIs that refuse logprobs do;
the same request without them is answered. A reply may set `finish_reason` (e.g.
"length" for a reasoning cut at `max_tokens`) and `content: None` with
`reasoning_content` (a server's reasoning parser).
"""

from __future__ import annotations

import contextlib
import json
import math
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def default_reply(messages: list[dict], body: dict) -> dict:
    last = messages[-1]["content"]
    if body.get("max_tokens") == 1:
        return {"content": "Yes" if "yes" in last.lower().split("?")[0][-200:] else "No"}
    return {"content": f"echo: {last[:80]}"}


FAULTS = ("401", "429", "500", "503", "hang", "drop", "badjson", "nochoices", "length", "notjson")


def as_plain_lines(content: str) -> str:
    """A JSON array's items as prose lines, as a model that ignores the format asked for writes them."""
    try:
        items = json.loads(content)
    except json.JSONDecodeError:
        return f"Sure. {content}"
    if not isinstance(items, list):
        return f"Sure. {content}"
    return "Here is what I found.\n" + "\n".join(str(i) for i in items)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 512  # the default backlog (5) refuses connections under concurrent load


class ScriptedServer:
    def __init__(
        self,
        reply: Callable[[list[dict], dict], dict] = default_reply,
        faults: list[str | tuple | None] | Callable[[int, dict], str | tuple | None] | None = None,
        logprobs: bool = True,
        hang_seconds: float = 5.0,
        latency: float = 0.0,
        keep_requests: bool = True,
        refuse_logprobs: tuple[int, dict] | None = None,
    ):
        self.reply = reply
        self.refuse_logprobs = refuse_logprobs
        self.keep_requests = keep_requests  # False: count requests only (long load runs)
        self.count = 0
        self.faults = faults if callable(faults) else list(faults or [])
        self.logprobs = logprobs
        self.hang_seconds = hang_seconds
        self.latency = latency
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True  # headers and body go out in separate writes: no 40 ms delayed-ACK stall

            def log_message(self, *args):  # quiet
                pass

            def do_GET(self):
                if self.path.rstrip("/").endswith("/models"):
                    self._send(200, {"object": "list", "data": [{"id": "scripted", "object": "model"}]})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length))
                if not self.path.startswith("/v1/chat/completions"):
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                with server.lock:
                    if server.keep_requests:
                        server.requests.append(body)
                    server.count += 1
                    if callable(server.faults):
                        fault = server.faults(server.count - 1, body)
                    else:
                        fault = server.faults.pop(0) if server.faults else None
                    server.active += 1
                    server.max_active = max(server.max_active, server.active)
                try:
                    server._answer(self, body, fault)
                finally:
                    with server.lock:
                        server.active -= 1

            def _send(self, status: int, obj, headers: dict | None = None, raw: bytes | None = None):
                data = raw if raw is not None else json.dumps(obj).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = _Server(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def _answer(self, h, body: dict, fault: str | tuple | None) -> None:
        if self.latency:
            time.sleep(self.latency)
        if isinstance(fault, tuple):  # (status, body): a refusal in the server's own words
            return h._send(*fault)
        if fault == "401":
            return h._send(401, {"error": {"message": "invalid api key"}})
        if fault == "429":
            return h._send(429, {"error": {"message": "rate limited"}}, {"retry-after": "0.05"})
        if fault in ("500", "503"):
            return h._send(int(fault), {"error": {"message": "server error"}})
        if fault == "hang":
            time.sleep(self.hang_seconds)
            return h._send(200, {"error": "too late"})
        if fault == "drop":
            h.connection.shutdown(socket.SHUT_RDWR)
            return None
        if fault == "badjson":
            return h._send(200, None, raw=b'{"id": "x", "choices": [')
        if fault == "nochoices":
            return h._send(200, {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"], "choices": []})
        if self.refuse_logprobs and ("logprobs" in body or "top_logprobs" in body):
            return h._send(*self.refuse_logprobs)
        message = {"role": "assistant", **self.reply(body["messages"], body)}
        p_yes = message.pop("yes_probability", None)  # a reply may set P(Yes); by default its answer gets 0.8
        finish = message.pop("finish_reason", None)
        if fault == "length":
            message["content"] = (message.get("content") or "")[: len(message.get("content") or "") // 2]
        elif fault == "notjson":
            message["content"] = as_plain_lines(message.get("content") or "")
        choice = {"index": 0, "message": message, "finish_reason": "length" if fault == "length" else finish or "stop"}
        if body.get("logprobs") and self.logprobs:
            token = (message.get("content") or "No").split()[0]
            other = "No" if token == "Yes" else "Yes"
            p_token = 0.8 if p_yes is None else p_yes if token == "Yes" else 1 - p_yes
            top, low = math.log(max(p_token, 1e-9)), math.log(max(1 - p_token, 1e-9))
            choice["logprobs"] = {
                "content": [
                    {
                        "token": token,
                        "logprob": top,
                        "bytes": None,
                        "top_logprobs": [{"token": token, "logprob": top, "bytes": None}, {"token": other, "logprob": low, "bytes": None}],
                    }
                ]
            }
        usage = {"prompt_tokens": sum(len(m["content"].split()) for m in body["messages"]), "completion_tokens": len((message.get("content") or "").split()), "total_tokens": 0}
        h._send(200, {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"], "choices": [choice], "usage": usage})

    def __enter__(self) -> ScriptedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


# ---------------------------------------------------------------------------- a deterministic judge for extraction

TOPICS = ["politeness", "safety", "accuracy", "brevity", "structure", "sources"]


def topic_of(text: str) -> str:
    return TOPICS[sum(map(ord, text)) % len(TOPICS)]


def mock_judge(style: str = "field", rules_reply=None, reasoning_reply=None):
    """A deterministic judge: reasoning mentions a topic; rules follow from the text they are given."""

    def reply(messages, body):
        text = messages[-1]["content"]
        if "Please act as an impartial judge" in text:
            winner = re.search(r"preferred Assistant ([AB])", text).group(1)
            trace = f"TRACE: Assistant {winner} shows better {topic_of(text)} (case {len(text)})."
            if reasoning_reply:
                return reasoning_reply(text, trace)
            if style == "field":
                return {"content": f"Assistant {winner} is better.", "reasoning_content": trace}
            if style == "think":
                return {"content": f"<think>{trace}</think>Assistant {winner} is better."}
            return {"content": f"EXPLANATION: Assistant {winner} is better on {topic_of(text)}."}
        if "extract rules" in text:
            justification = text.split("<justification>")[1].split("</justification>")[0].strip()
            if rules_reply:
                return rules_reply(justification)
            topic = next(t for t in TOPICS if t in justification)
            return {"content": json.dumps([f"The assistant's response should show {topic} in every reply.", f"The assistant's response should keep {topic} consistent throughout."])}
        if "could not be read as a list of rules" in text:
            # a model that does what the repair prompt asks: the rules it is shown, as JSON
            previous = text.split("<previous_answer>")[1].split("</previous_answer>")[0]
            found = [line.strip() for line in previous.splitlines() if line.strip().startswith("The assistant's response should")]
            return {"content": json.dumps(found or ["The assistant's response should be repaired properly."])}
        if "Merge them" in text:
            listed = re.findall(r"^\d+\. (.*)$", text.split("<rules>")[1], re.MULTILINE)
            return {"content": json.dumps([f"The assistant's response should satisfy: {listed[0][len('The assistant s response should '):]}"])}
        return {"content": "unexpected prompt"}

    return reply


# ---------------------------------------------------------------------------- in a process of its own

_VALUE = re.compile(r"value=(\d+\.\d+)")


def value_verifier(messages: list[dict], body: dict) -> dict:
    """A verifier whose P(Yes) is the value written in the response it judges ("value=0.123456")."""
    found = _VALUE.findall(messages[-1]["content"])
    p = float(found[-1]) if found else 0.5
    return {"content": "Yes" if p >= 0.5 else "No", "yes_probability": p}


REPLIES: dict[str, Callable[[list[dict], dict], dict]] = {"echo": default_reply, "judge": mock_judge(), "value": value_verifier}


@contextlib.contextmanager
def mock_server_process(reply: str, latency: float = 0.0):
    """The mock server as its own process (so a load test's clients do not share its GIL); yields its base URL."""
    proc = subprocess.Popen([sys.executable, "-m", "autorule.testing.mock_server", reply, str(latency)], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        if not line.startswith("http://"):
            raise RuntimeError(f"the mock server did not start (exit {proc.poll()})")
        yield line.strip()
    finally:
        proc.terminate()
        proc.wait(10)


def _serve(reply: str, latency: float) -> None:
    server = ScriptedServer(REPLIES[reply], latency=latency, keep_requests=False)
    server.thread.start()
    print(server.base_url, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    _serve(sys.argv[1], float(sys.argv[2]))
