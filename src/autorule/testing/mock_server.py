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
`reasoning_content` (a server's reasoning parser), or `top_logprobs`: (token, probability)
pairs sent as the first token's top list, the sampled one first (default: its answer's first
word at 0.8, or at `yes_probability` when the reply sets P(Yes), and the other of Yes/No).

`completions="llama"` or `"vllm"` also serves what the batched yes/no path uses, in that
server's shapes: a chat template the client can learn, and ``/v1/completions`` with a list
of prompts, each answered by `reply` as the chat request with that one user message
(`ScriptedServer`). With None, the default, the server is chat-only, as before.
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

# the toy chat template of the "llama" and "vllm" modes: one user message is HEAD + content + TAIL
TEMPLATE_HEAD = "<|user|>\n"
TEMPLATE_TAIL = "<|end|>\n<|assistant|>\n"
COMPLETIONS_STYLES = (None, "llama", "vllm", "sglang")
# single-token Yes/No words of the toy tokenizer (every other text: one id per character), as real tokenizers have
WORD_IDS = {w: 200_000 + i for i, w in enumerate(("Yes", "No", " Yes", " No", "yes", "no", " yes", " no"))}
ID_WORDS = {i: w for w, i in WORD_IDS.items()}
# what a completions prompt without the server's template gets: another answer (top token "Hmm"),
# so a client that renders the wrong template is caught by its probe
UNTEMPLATED_REPLY = {"content": "Hmm", "top_logprobs": [("Hmm", 0.6), ("Yes", 0.3), ("No", 0.1)]}


def render_messages(messages: list[dict], head: str = TEMPLATE_HEAD, tail: str = TEMPLATE_TAIL) -> str:
    """The toy template: one message is ``head + content + tail``; several are rendered turn by turn.

    Example:
        >>> render_messages([{"role": "user", "content": "Hi"}])
        '<|user|>\\nHi<|end|>\\n<|assistant|>\\n'
    """
    if len(messages) == 1:
        return head + messages[0]["content"] + tail
    return "".join(f"<|{m['role']}|>\n{m['content']}<|end|>\n" for m in messages) + "<|assistant|>\n"


def top_pairs(message: dict, p_yes: float | None, top: list | None) -> list[tuple[str, float]]:
    """(token, logprob) pairs for the answer's first token, the sampled one first.

    A reply's own `top` ((token, probability) pairs) is sent as it is; else the answer's first
    word and the other of Yes/No, with 0.8 for the answer (or P(Yes) = `p_yes`).
    """
    if top is not None:
        return [(t, math.log(max(p, 1e-9))) for t, p in top]
    words = (message.get("content") or "").split()
    token = words[0] if words else "No"
    other = "No" if token == "Yes" else "Yes"
    p_token = 0.8 if p_yes is None else p_yes if token == "Yes" else 1 - p_yes
    return [(token, math.log(max(p_token, 1e-9))), (other, math.log(max(1 - p_token, 1e-9)))]


def _tokens(text: str) -> list[int]:
    """The toy tokenizer: a Yes/No word alone is one id (`WORD_IDS`); any other text one id per character."""
    return [WORD_IDS[text]] if text in WORD_IDS else [ord(c) for c in text]


def _token_id(token: str) -> int:
    return sum(map(ord, token))


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
    """The scripted server; `base_url` is its OpenAI root (``http://127.0.0.1:PORT/v1``).

    Args:
        reply: ``reply(messages, body) -> dict``, the assistant message of each request (and of
            each prompt of a completions request).
        faults: one per chat or completions request (a list consumed in order, or a function
            of the request's index and body); see the module's docstring.
        logprobs: False: the server sends no logprobs even when asked.
        refuse_logprobs: (status, body) for every request that asks for logprobs.
        completions: None (a chat-only server, as before); "llama": llama-server's routes
            (``GET /props``, ``POST /apply-template``, ``/tokenize`` ``{"content"}``, ``/detokenize``,
            ``/v1/completions`` with chat-shape logprobs, ``logprobs.content[0].top_logprobs``);
            "vllm": vLLM's (``/v1/models`` with ``max_model_len`` and ``root``, ``POST /tokenize``
            with ``messages`` or ``prompt``, ``/detokenize``, ``/v1/completions`` in the legacy
            shape, its choices sent in reverse order with their ``index``). Each prompt is answered
            as a chat request with one user message would be: the server strips its template
            (`TEMPLATE_HEAD`, `TEMPLATE_TAIL`) and calls ``reply([{"role": "user", "content": content}], body)``;
            a prompt that does not carry the template gets `UNTEMPLATED_REPLY`.
        advertised_template: (head, tail) that ``/apply-template`` and ``/tokenize`` render for
            the client, where it should differ from the one the server strips (a wrong rendering).
        llama_array: "llama" answers a list of several prompts with a JSON array of one whole
            reply per prompt, as some llama-server builds do.
        (completions="vllm" also honours ``logprob_token_ids``: the first token's top list is then the
        sampled token and every requested id, as vLLM's OpenAI endpoints do; unless
        ``ignore_logprob_token_ids``, as vLLM before it. "sglang": SGLang's routes: ``/v1/models`` with
        ``max_model_len``, ``/tokenize`` with ``prompt`` only, ``POST /v1/score`` (``query``, ``items``,
        ``label_token_ids``, ``apply_softmax``) -> ``{"scores": [[one per label] per item], "object": "scoring"}``,
        and legacy-shape ``/v1/completions``; no chat template for the client.)
    """

    def __init__(
        self,
        reply: Callable[[list[dict], dict], dict] = default_reply,
        faults: list[str | tuple | None] | Callable[[int, dict], str | tuple | None] | None = None,
        logprobs: bool = True,
        hang_seconds: float = 5.0,
        latency: float = 0.0,
        keep_requests: bool = True,
        refuse_logprobs: tuple[int, dict] | None = None,
        completions: str | None = None,
        advertised_template: tuple[str, str] | None = None,
        llama_array: bool = False,
        ignore_logprob_token_ids: bool = False,
    ):
        if completions not in COMPLETIONS_STYLES:
            raise ValueError(f"completions must be one of {COMPLETIONS_STYLES}, not {completions!r}")
        self.completions = completions
        self.head, self.tail = TEMPLATE_HEAD, TEMPLATE_TAIL
        self.advertised = advertised_template or (TEMPLATE_HEAD, TEMPLATE_TAIL)
        self.llama_array = llama_array
        self.ignore_logprob_token_ids = ignore_logprob_token_ids
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
                path = self.path.rstrip("/")
                if path.endswith("/models"):
                    entry = {"id": "scripted", "object": "model"}
                    if server.completions in ("vllm", "sglang"):
                        entry.update(root="/models/scripted", max_model_len=8192, owned_by="vllm")
                    self._send(200, {"object": "list", "data": [entry]})
                elif path == "/props" and server.completions == "llama":
                    self._send(200, {"model_path": "/models/scripted.gguf", "default_generation_settings": {"n_ctx": 8192}, "total_slots": 4})
                else:
                    self._send(404, {"error": {"message": "not found"}})

            def do_POST(self):
                length = int(self.headers.get("content-length", 0))
                body = json.loads(self.rfile.read(length))
                completions = server.completions is not None and self.path.startswith("/v1/completions")
                if not completions and not self.path.startswith("/v1/chat/completions"):
                    side = server._side_route(self.path, body) if server.completions else None
                    return self._send(*side) if side else self._send(404, {"error": {"message": f"no route {self.path}"}})
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
                    (server._answer_completions if completions else server._answer)(self, body, fault)
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

    def _side_route(self, path: str, body: dict) -> tuple[int, dict] | None:
        """The template and tokenizer routes of the "llama" and "vllm" modes: (status, body); None where not served.
        Tokens are one id per character (``ord``), so they decode back exactly."""
        path = path.rstrip("/")
        head, tail = self.advertised
        if self.completions == "llama":
            if path == "/apply-template":
                return 200, {"prompt": render_messages(body["messages"], head, tail)}
            if path == "/tokenize":
                return 200, {"tokens": _tokens(body.get("content", ""))}
            if path == "/detokenize":
                return 200, {"content": "".join(map(chr, body.get("tokens", [])))}
            return None
        if self.completions == "sglang":
            if path in ("/tokenize", "/v1/tokenize") and "prompt" in body:  # SGLang's takes no messages
                tokens = _tokens(body["prompt"])
                return 200, {"tokens": tokens, "count": len(tokens), "max_model_len": 8192}
            if path == "/v1/score":
                return self._score(body)
            return (400, {"object": "error", "message": f"cannot handle {path} with {sorted(body)}", "code": 400}) if path.endswith("tokenize") else None
        if path in ("/tokenize", "/v1/tokenize"):
            if "messages" in body:
                text = render_messages(body["messages"], head, tail)
                if not body.get("add_generation_prompt", True):
                    text = text[: -len("<|assistant|>\n")]
            else:
                text = body.get("prompt", "")
            tokens = _tokens(text)
            return 200, {"count": len(tokens), "max_model_len": 8192, "tokens": tokens, "token_strs": None}
        if path in ("/detokenize", "/v1/detokenize"):
            return 200, {"prompt": "".join(ID_WORDS.get(t) or chr(t) for t in body.get("tokens", []))}
        return None

    def _score(self, body: dict) -> tuple[int, dict]:
        """SGLang's ``/v1/score``: each item after the query, read at the next token, one value per label id."""
        query, items, labels = body.get("query"), body.get("items"), body.get("label_token_ids")
        if not isinstance(query, str) or not isinstance(items, list) or not isinstance(labels, list) or not labels:
            return 400, {"object": "error", "message": "query, items and label_token_ids are required", "code": 400}
        with self.lock:
            if self.keep_requests:
                self.requests.append({"path": "/v1/score", **body})
            self.count += 1
        scores = []
        for item in items:
            text = query + item
            if text.startswith(self.head) and text.endswith(self.tail):
                message = dict(self.reply([{"role": "user", "content": text[len(self.head): len(text) - len(self.tail)]}], body))
            else:
                message = dict(UNTEMPLATED_REPLY)
            pairs = dict(top_pairs(message, message.pop("yes_probability", None), message.pop("top_logprobs", None)))
            probs = [math.exp(pairs.get(ID_WORDS.get(i, ""), -9999.0)) for i in labels]
            scores.append([p / sum(probs) for p in probs] if body.get("apply_softmax") else probs)
        return 200, {"scores": scores, "model": body.get("model", "default"), "usage": None, "object": "scoring"}

    def _fault(self, h, body: dict, fault: str | tuple | None, kind: str) -> bool:
        """Waits out the latency, then answers a fault that is not about the content (or a logprobs refusal); True when it did."""
        if self.latency:
            time.sleep(self.latency)
        if isinstance(fault, tuple):  # (status, body): a refusal in the server's own words
            h._send(*fault)
        elif fault == "401":
            h._send(401, {"error": {"message": "invalid api key"}})
        elif fault == "429":
            h._send(429, {"error": {"message": "rate limited"}}, {"retry-after": "0.05"})
        elif fault in ("500", "503"):
            h._send(int(fault), {"error": {"message": "server error"}})
        elif fault == "hang":
            time.sleep(self.hang_seconds)
            h._send(200, {"error": "too late"})
        elif fault == "drop":
            h.connection.shutdown(socket.SHUT_RDWR)
        elif fault == "badjson":
            h._send(200, None, raw=b'{"id": "x", "choices": [')
        elif fault == "nochoices":
            h._send(200, {"id": "x", "object": kind, "created": 0, "model": body.get("model"), "choices": []})
        elif self.refuse_logprobs and ("logprobs" in body or "top_logprobs" in body):
            h._send(*self.refuse_logprobs)
        else:
            return False
        return True

    def _answer(self, h, body: dict, fault: str | tuple | None) -> None:
        if self._fault(h, body, fault, "chat.completion"):
            return
        message = {"role": "assistant", **self.reply(body["messages"], body)}
        p_yes = message.pop("yes_probability", None)  # a reply may set P(Yes); by default its answer gets 0.8
        top = message.pop("top_logprobs", None)
        finish = message.pop("finish_reason", None)
        if fault == "length":
            message["content"] = (message.get("content") or "")[: len(message.get("content") or "") // 2]
        elif fault == "notjson":
            message["content"] = as_plain_lines(message.get("content") or "")
        choice = {"index": 0, "message": message, "finish_reason": "length" if fault == "length" else finish or "stop"}
        if body.get("logprobs") and self.logprobs:
            pairs = top_pairs(message, p_yes, top)
            token, lp = pairs[0]
            choice["logprobs"] = {"content": [{"token": token, "logprob": lp, "bytes": None,
                                               "top_logprobs": [{"token": t, "logprob": v, "bytes": None} for t, v in pairs]}]}
        usage = {"prompt_tokens": sum(len(m["content"].split()) for m in body["messages"]), "completion_tokens": len((message.get("content") or "").split()), "total_tokens": 0}
        h._send(200, {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"], "choices": [choice], "usage": usage})

    def _answer_completions(self, h, body: dict, fault: str | tuple | None) -> None:
        """``/v1/completions``: one choice per prompt, each answered as the chat request with that user message."""
        if self._fault(h, body, fault, "text_completion"):
            return
        prompt = body.get("prompt")
        prompts = [prompt] if isinstance(prompt, str) else list(prompt or [])
        n = body.get("logprobs")
        n = n if isinstance(n, int) and n >= 0 and self.logprobs else None
        head, tail, cut = self.head, self.tail, len(self.head) + len(self.tail)
        llama = self.completions == "llama"
        one_token = body.get("max_tokens") == 1
        choices = []
        for i, p in enumerate(prompts):
            if len(p) >= cut and p.startswith(head) and p.endswith(tail):
                message = dict(self.reply([{"role": "user", "content": p[len(head): len(p) - len(tail)]}], body))
            else:
                message = dict(UNTEMPLATED_REPLY)
            p_yes, top, finish = message.pop("yes_probability", None), message.pop("top_logprobs", None), message.pop("finish_reason", None)
            text = message.get("content") or ""
            if fault == "length":
                text = text[: len(text) // 2]
            elif fault == "notjson":
                text = as_plain_lines(text)
            logprobs = None
            if n is not None:
                pairs = top_pairs(message, p_yes, top)
                (token, lp), shown = pairs[0], pairs[: max(1, n)]
                if llama:  # llama-server: the chat shape, at most n entries
                    logprobs = {"content": [{"id": _token_id(token), "token": token, "bytes": list(token.encode()), "logprob": lp,
                                             "top_logprobs": [{"id": _token_id(t), "token": t, "bytes": list(t.encode()), "logprob": v} for t, v in shown]}]}
                else:  # vLLM, SGLang: the legacy shape, the top n and the sampled token
                    top_list = {token: lp, **dict(shown)}
                    ids = body.get("logprob_token_ids")
                    if ids and self.completions == "vllm" and not self.ignore_logprob_token_ids:  # the requested ids replace the top n
                        every = dict(pairs)
                        top_list = {token: lp, **{ID_WORDS.get(i, chr(i % 0x10FFFF)): every.get(ID_WORDS.get(i, ""), -9999.0) for i in ids}}
                    logprobs = {"tokens": [token], "token_logprobs": [lp], "top_logprobs": [top_list], "text_offset": [0]}
            choices.append({"index": i, "text": text, "logprobs": logprobs,
                            "finish_reason": "length" if fault == "length" or one_token else finish or "stop"})
        usage = {"prompt_tokens": sum(map(len, prompts)), "completion_tokens": len(choices), "total_tokens": 0}
        if llama and self.llama_array and len(choices) > 1:
            return h._send(200, [{"id": "x", "object": "text_completion", "created": 0, "model": body.get("model"), "choices": [c], "usage": usage}
                                 for c in choices])
        if not llama:
            choices.reverse()  # vLLM and SGLang may send choices out of order; their index says whose
        h._send(200, {"id": "cmpl-x", "object": "text_completion", "created": 0, "model": body.get("model"), "choices": choices, "usage": usage})

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
def mock_server_process(reply: str, latency: float = 0.0, completions: str | None = None):
    """The mock server as its own process (so a load test's clients do not share its GIL); yields its base URL.
    `completions` ("llama", "vllm") also serves the batched path's routes (see `ScriptedServer`)."""
    args = [reply, str(latency)] + ([completions] if completions else [])
    proc = subprocess.Popen([sys.executable, "-m", "autorule.testing.mock_server", *args], stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        if not line.startswith("http://"):
            raise RuntimeError(f"the mock server did not start (exit {proc.poll()})")
        yield line.strip()
    finally:
        proc.terminate()
        proc.wait(10)


def _serve(reply: str, latency: float, completions: str | None = None) -> None:
    server = ScriptedServer(REPLIES[reply], latency=latency, keep_requests=False, completions=completions)
    server.thread.start()
    print(server.base_url, flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    # python -m autorule.testing.mock_server REPLY LATENCY [llama|vllm]
    _serve(sys.argv[1], float(sys.argv[2]), sys.argv[3] if len(sys.argv) > 3 and sys.argv[3] != "none" else None)
