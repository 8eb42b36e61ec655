"""A real OpenAI-compatible HTTP server for tests: scripted replies, injected faults.

`reply(messages, body) -> dict` decides the assistant message for each request (a
default echoes deterministically); `faults` is a list consumed one per request, each
None (answer normally) or one of: "429", "500", "503", "hang", "drop", "badjson",
"nochoices", "length".
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def default_reply(messages: list[dict], body: dict) -> dict:
    last = messages[-1]["content"]
    if body.get("max_tokens") == 1:
        return {"content": "Yes" if "yes" in last.lower().split("?")[0][-200:] else "No"}
    return {"content": f"echo: {last[:80]}"}


class ScriptedServer:
    def __init__(
        self,
        reply: Callable[[list[dict], dict], dict] = default_reply,
        faults: list[str | None] | None = None,
        logprobs: bool = True,
        hang_seconds: float = 5.0,
    ):
        self.reply = reply
        self.faults = list(faults or [])
        self.logprobs = logprobs
        self.hang_seconds = hang_seconds
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        self.active = 0
        self.max_active = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

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
                    server.requests.append(body)
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

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def _answer(self, h, body: dict, fault: str | None) -> None:
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
        message = {"role": "assistant", **self.reply(body["messages"], body)}
        choice = {"index": 0, "message": message, "finish_reason": "length" if fault == "length" else "stop"}
        if body.get("logprobs") and self.logprobs:
            token = (message.get("content") or "No").split()[0]
            other = "No" if token == "Yes" else "Yes"
            choice["logprobs"] = {
                "content": [
                    {
                        "token": token,
                        "logprob": -0.2231,
                        "bytes": None,
                        "top_logprobs": [
                            {"token": token, "logprob": -0.2231, "bytes": None},
                            {"token": other, "logprob": -1.6094, "bytes": None},
                        ],
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
