"""The OpenAI-compatible backend against a real HTTP server started in the test."""

import json

import pytest
from autorule.testing.mock_server import TEMPLATE_HEAD, ScriptedServer

from autorule.cli.app import main
from autorule.llm import ChatRequest, LLMError, load_llm
from autorule.llm.openai_compat import OpenAICompatLLM


def client(server: ScriptedServer, **kw) -> OpenAICompatLLM:
    kw = {"backoff_base": 0.01, "timeout": 2.0, **kw}
    return load_llm(f"openai:scripted@{server.base_url}", **kw)


def req(text: str, **kw) -> ChatRequest:
    return ChatRequest([{"role": "user", "content": text}], max_tokens=32, **kw)


def test_generate_in_order_with_usage():
    with ScriptedServer() as server:
        llm = client(server)
        out = llm.generate([req(f"question {i}") for i in range(20)])
    assert [c.text for c in out] == [f"echo: question {i}" for i in range(20)]
    assert out[0].usage.prompt_tokens == 2 and out[0].finish_reason == "stop"
    assert len(server.requests) == 20 and server.requests[0]["model"] == "scripted"


def test_reasoning_content_field_and_think_tags():
    def reply(messages, body):
        if "field" in messages[-1]["content"]:
            return {"content": "A is better.", "reasoning_content": "A answers the question; B does not."}
        return {"content": "<think>B is rude.</think>A is better."}

    with ScriptedServer(reply) as server:
        field, tags = client(server).generate([req("field"), req("tags")])
    assert (field.reasoning, field.text) == ("A answers the question; B does not.", "A is better.")
    assert (tags.reasoning, tags.text) == ("B is rude.", "A is better.")


def test_concurrency_is_bounded():
    import time

    def slow(messages, body):
        time.sleep(0.05)
        return {"content": "ok"}

    with ScriptedServer(slow) as server:
        client(server, concurrency=3).generate([req(str(i)) for i in range(12)])
    assert server.max_active == 3  # never more than the bound, and the bound is used (not one at a time)


@pytest.mark.parametrize("fault", ["429", "500", "hang", "drop", "badjson", "nochoices"])
def test_faults_are_retried(fault):
    with ScriptedServer(faults=[fault, fault], hang_seconds=3.0) as server:
        llm = client(server, timeout=0.5)
        (c,) = llm.generate([req("hello")])
    assert c.text == "echo: hello"
    assert llm.stats["retries"] == 2 and len(server.requests) == 3


def test_retry_after_is_honoured():
    import time

    with ScriptedServer(faults=["429"]) as server:
        llm = client(server, backoff_base=0.0)
        start = time.monotonic()
        llm.generate([req("hello")])
    assert time.monotonic() - start >= 0.05  # the server asked for 0.05 s
    assert llm.stats["fault_429"] == 1


def test_busy_503_lowers_concurrency_instead_of_spending_retries():
    with ScriptedServer(faults=["503", "503"]) as server:
        llm = client(server, concurrency=8)
        (c,) = llm.generate([req("hello")])
    assert c.text == "echo: hello"
    # the first 503 halves the limit (8 -> 4); the second was granted under the new limit and halves it again
    assert (llm.stats["overload"], llm.stats["retries"], llm.stats["concurrency_min"]) == (2, 0, 2)
    assert len(server.requests) == 3


def test_overload_at_concurrency_one_stops_and_names_the_fixes():
    with ScriptedServer(faults=["503"] * 10) as server:
        llm = client(server, concurrency=1)
        with pytest.raises(LLMError, match=r"overloaded even with one request at a time.*-c.*-np.*--concurrency"):
            llm.generate([req("hello")])
    assert len(server.requests) == 3


def test_nothing_listening_is_one_clear_error_without_retries():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # free, and nothing listens once closed
    llm = OpenAICompatLLM("local", f"http://127.0.0.1:{port}/v1", backoff_base=0.01)
    with pytest.raises(LLMError, match=rf"cannot connect to http://127.0.0.1:{port}/v1: connection refused. Is the server running"):
        llm.generate([req("hello")])
    assert llm.stats["retries"] == 0


def test_gives_up_with_a_clear_error_after_the_retry_budget():
    with ScriptedServer(faults=["500"] * 10) as server:
        llm = client(server, max_retries=2)
        with pytest.raises(LLMError, match="gave up after 3 attempts.*500"):
            llm.generate([req("hello")])
    assert len(server.requests) == 3


def test_client_errors_are_not_retried():
    with ScriptedServer() as server:
        llm = OpenAICompatLLM("scripted", server.base_url.replace("/v1", "/nope"), backoff_base=0.01)
        with pytest.raises(LLMError, match="404"):
            llm.generate([req("hello")])
    assert llm.stats["retries"] == 0


def test_finish_reason_length_is_reported():
    with ScriptedServer(faults=["length"]) as server:
        (c,) = client(server).generate([req("hello")])
    assert c.finish_reason == "length"


# the yes/no tests run on both paths: chat (a server with no client template) and batched (llama-server's and vLLM's shapes)
PATHS = pytest.mark.parametrize("completions", [None, "llama", "vllm"], ids=["chat", "batched-llama", "batched-vllm"])


def checks_of(server: ScriptedServer) -> list[dict]:
    """The requests of the checks, without the batched mode's probe."""
    return [r for r in server.requests if "Is the sky blue" not in json.dumps(r)]


@PATHS
def test_yes_no_from_logprobs_one_token(completions):
    def reply(messages, body):
        return {"content": "Yes" if "polite" in messages[-1]["content"] else "No"}

    with ScriptedServer(reply, completions=completions) as server:
        llm = client(server)
        probs = llm.score_yes_no("Conversation: ...\nRule: ", ["The response is polite.", "The response is in French."])
    assert probs == pytest.approx([0.8, 0.2], abs=1e-3)
    assert llm.yes_no_mode.batched is (completions is not None)
    requests = checks_of(server)
    if completions is None:
        assert all(r["max_tokens"] == 1 and r["logprobs"] and r["top_logprobs"] == 20 for r in requests)
        # the shared prefix comes first in every request: the server's prefix cache can reuse it
        assert all(r["messages"][-1]["content"].startswith("Conversation: ...\nRule: ") for r in requests)
    else:  # one request, both rules; each prompt is the template's head, then the shared prefix
        (r,) = requests
        assert r["max_tokens"] == 1 and r["logprobs"] == 20 and len(r["prompt"]) == 2
        assert all(p.startswith(TEMPLATE_HEAD + "Conversation: ...\nRule: ") for p in r["prompt"])


def test_yes_no_falls_back_to_a_short_answer_without_logprobs():
    def reply(messages, body):
        if body["max_tokens"] == 1:
            return {"content": "The"}  # one token that is neither Yes nor No
        return {"content": "[[Yes]]" if "polite" in messages[-1]["content"] else "Answer: no"}

    with ScriptedServer(reply, logprobs=False) as server:
        llm = client(server)
        probs = llm.score_yes_no("Rule: ", ["The response is polite.", "The response is in French."])
    assert probs == [1.0, 0.0]
    assert llm.stats["yes_no_fallback"] == 2


def test_bad_spec():
    with pytest.raises(LLMError, match="openai:MODEL@BASE_URL"):
        load_llm("openai:gpt-4o")


def test_cli_generate_and_score_against_the_server(capsys, tmp_path):
    import json

    with ScriptedServer() as server:
        spec = f"openai:scripted@{server.base_url}"
        assert main(["llm", "generate", "hello there", "--model", spec, "--cache", str(tmp_path / "c.sqlite"), "--json"]) == 0
        assert json.loads(capsys.readouterr().out)["text"] == "echo: hello there"
        # a rerun is served from the cache: the server sees no second request
        assert main(["llm", "generate", "hello there", "--model", spec, "--cache", str(tmp_path / "c.sqlite"), "--json"]) == 0
        assert len(server.requests) == 1
        assert main(["llm", "score", "--prefix", "Rule: ", "say yes", "--model", spec, "--no-cache", "--json"]) == 0
        assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["p_yes"] == [pytest.approx(0.8, abs=1e-3)]


@PATHS
def test_a_verifier_that_thinks_first_gives_unparsed_verdicts_never_passes(completions):
    import math

    def reply(messages, body):
        # "<think>" at 0.999, Yes at 0.001 among the top logprobs: their ratio is no verdict
        return {"content": "<think>Let me look at the rule" if body["max_tokens"] > 1 else "<think>", "yes_probability": 0.001}

    with ScriptedServer(reply, completions=completions) as server:
        llm = client(server)
        probs = llm.score_yes_no("Rule: ", ["The response is polite.", "The response is in French."])
    assert llm.yes_no_mode.batched is (completions is not None)
    assert all(math.isnan(p) for p in probs)
    assert (llm.stats["yes_no_unparsed"], llm.stats["yes_no_thinking"]) == (2, 2)


@PATHS
def test_unparsed_verdicts_are_left_out_of_the_reward_and_stop_the_verifier_past_the_share(completions):
    import numpy as np
    from autorule.data import Message
    from autorule.reward import rule_reward
    from autorule.rules import Rule, RuleSet
    from autorule.verifier import UnparsedVerdicts, Verifier

    def reply(messages, body):
        text = messages[-1]["content"]
        if "French" in text:
            return {"content": "<think>" if body["max_tokens"] == 1 else "<think>hmm", "yes_probability": 0.001}
        return {"content": "Yes"}

    rules = RuleSet(rules=[Rule.from_candidates(t, []) for t in ("The response is polite.", "The response is in French.")])
    conv = [[Message(role="user", content="hi"), Message(role="assistant", content="hello")]]
    with ScriptedServer(reply, completions=completions) as server:
        with pytest.raises(UnparsedVerdicts, match=r"1 of 2 rule checks had no readable Yes/No \(1 answers began with a reasoning block"):
            Verifier(client(server), rules).verify(conv)
        verdicts = Verifier(client(server), rules, max_unparsed=0.5).verify(conv)
    assert verdicts.unparsed == 1 and np.isnan(verdicts.p_satisfied[0, 1])
    # the reward is the polite rule's P(Yes) alone (0.8), not pulled toward a pass by the unread one
    assert rule_reward(verdicts, rules)[0] == pytest.approx(0.8, abs=1e-3)
    assert not verdicts.hard[0, 1]
