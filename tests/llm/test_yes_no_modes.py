"""The two yes/no modes of the server backend (batched ``/v1/completions``, one chat request per check)
against the scripted server in llama-server's and vLLM's shapes (`ScriptedServer(completions=...)`).

Every expected value is worked out by hand: `value_verifier` answers P(Yes) = the last
``value=X`` in the text it judges, and the mock sends ``log(X)`` for Yes and ``log(1 - X)`` for No,
so the client's P(Yes) is X again.
"""

import json
import math
import socket

import httpx
import numpy as np
import pytest

from autorule.llm import LLMError
from autorule.llm.openai_compat import OpenAICompatLLM
from autorule.rules import RuleSet
from autorule.testing.mock_server import (
    TEMPLATE_HEAD,
    TEMPLATE_TAIL,
    ScriptedServer,
    value_verifier,
)
from autorule.verifier import Verifier

STYLES = ["llama", "vllm"]
PROBE_MARK = "Is the sky blue"  # yes_no_modes' probe prompt, told apart from the checks


def client(url: str | list[str], **kw) -> OpenAICompatLLM:
    """A backend that sends one batched request per conversation (batch_prompts=1), so requests count conversations;
    `test_conversations_with_few_checks_share_a_request` tests the default grouping."""
    return OpenAICompatLLM("scripted", url, **{"backoff_base": 0.01, "timeout": 5.0, "batch_prompts": 1, **kw})


def completions_bodies(server: ScriptedServer) -> list[dict]:
    """The /v1/completions requests of the checks (not the mode's probe)."""
    return [b for b in server.requests if "prompt" in b and not any(PROBE_MARK in p for p in b["prompt"])]


def chat_bodies(server: ScriptedServer) -> list[dict]:
    """The chat requests of the checks (not the mode's probe)."""
    return [b for b in server.requests if "messages" in b and PROBE_MARK not in b["messages"][-1]["content"]]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # free, and nothing listens once closed


ITEMS = [
    ("Conversation: value=0.25\nRule: ", ["The response is polite.", "The response is short."]),
    ("Conversation: plain\nRule: ", ["value=0.75 holds.", "value=0.125 holds.", "value=0.5 holds."]),
]
EXPECTED = [[0.25, 0.25], [0.75, 0.125, 0.5]]


# ------------------------------------------------------------------ the batched path, both shapes


@pytest.mark.parametrize("style", STYLES)
def test_batched_scores_are_the_reply_functions_p_yes_one_request_per_conversation(style):
    with ScriptedServer(value_verifier, completions=style) as server:
        llm = client(server.base_url)
        probs = llm.score_yes_no_batch(ITEMS)
        assert llm.yes_no_mode.batched
    assert [p == pytest.approx(e, abs=1e-9) for p, e in zip(probs, EXPECTED)] == [True, True]
    assert llm.stats["requests"] == 2  # one per conversation
    bodies = completions_bodies(server)
    assert len(bodies) == 2 and not chat_bodies(server)
    assert all(b["max_tokens"] == 1 and b["temperature"] == 0 and b["logprobs"] == 20 for b in bodies)
    by_size = sorted(bodies, key=lambda b: len(b["prompt"]))
    for body, (prefix, questions) in zip(by_size, ITEMS):
        assert body["prompt"] == [TEMPLATE_HEAD + prefix + q + TEMPLATE_TAIL for q in questions]
        assert all(p.startswith(TEMPLATE_HEAD) for p in body["prompt"])
    expected_source = "llama-server /apply-template" if style == "llama" else "vLLM /tokenize + /detokenize"
    assert llm.yes_no_mode.template.source == expected_source
    assert llm.yes_no_mode.to_dict()["mode"] == "batched"


@pytest.mark.parametrize("style, array", [("vllm", False), ("llama", True)], ids=["vllm-reversed-choices", "llama-array-reply"])
def test_out_of_order_choices_are_put_back_in_prompt_order(style, array):
    values = [0.1, 0.3, 0.5, 0.7, 0.9]
    questions = [f"Rule {i}: value={v}" for i, v in enumerate(values)]
    with ScriptedServer(value_verifier, completions=style, llama_array=array) as server:
        # what the server sends: vLLM's choices reversed with their index; llama-server's an array of whole replies
        raw = httpx.post(server.base_url + "/completions", json={"model": "scripted", "prompt": [TEMPLATE_HEAD + q + TEMPLATE_TAIL for q in questions],
                                                                 "max_tokens": 1, "logprobs": 5}).json()
        if array:
            assert isinstance(raw, list) and [r["choices"][0]["index"] for r in raw] == [0, 1, 2, 3, 4]
        else:
            assert [c["index"] for c in raw["choices"]] == [4, 3, 2, 1, 0]
            assert raw["choices"][0]["logprobs"]["top_logprobs"][0] == {"Yes": pytest.approx(math.log(0.9)), "No": pytest.approx(math.log(0.1))}
        llm = client(server.base_url)
        (probs,) = llm.score_yes_no_batch([("Prompt: ", questions)])
        assert llm.yes_no_mode.batched
    assert probs == pytest.approx(values, abs=1e-9)


# ------------------------------------------------------------------ which mode, and why


def test_a_server_with_no_template_keeps_the_chat_path_and_says_why():
    with ScriptedServer(value_verifier) as server:
        llm = client(server.base_url)
        probs = llm.score_yes_no_batch(ITEMS)
        mode = llm.yes_no_mode
        assert [p == pytest.approx(e, abs=1e-9) for p, e in zip(probs, EXPECTED)] == [True, True]
        assert not mode.batched and "--chat-template" in mode.reason
        assert llm.stats["requests"] == 5 and all("messages" in b for b in server.requests)
        with pytest.raises(LLMError, match="--yes-no-mode batched cannot run: the server renders no chat template"):
            client(server.base_url, yes_no_mode="batched").score_yes_no_batch(ITEMS)


@pytest.mark.parametrize("style", STYLES)
def test_chat_mode_asked_for_sends_chat_requests_only(style):
    with ScriptedServer(value_verifier, completions=style) as server:
        llm = client(server.base_url, yes_no_mode="chat")
        probs = llm.score_yes_no_batch(ITEMS)
    assert [p == pytest.approx(e, abs=1e-9) for p, e in zip(probs, EXPECTED)] == [True, True]
    assert not llm.yes_no_mode.batched and llm.yes_no_mode.reason == "asked for: --yes-no-mode chat"
    assert len(server.requests) == 5 and all("messages" in b and b["max_tokens"] == 1 for b in server.requests)


@pytest.mark.parametrize("style", STYLES)
def test_a_client_template_that_does_not_match_the_servers_falls_back_to_chat_naming_the_mismatch(style):
    wrong = ("<|system|>\nBe brief.<|end|>\n" + TEMPLATE_HEAD, TEMPLATE_TAIL)  # what the server renders for the client, not what it strips
    with ScriptedServer(value_verifier, completions=style, advertised_template=wrong) as server:
        llm = client(server.base_url)
        probs = llm.score_yes_no_batch(ITEMS)
        mode = llm.yes_no_mode
        with pytest.raises(LLMError, match="batched cannot run: the chat template from .* renders differently"):
            client(server.base_url, yes_no_mode="batched").score_yes_no_batch(ITEMS)
    assert not mode.batched
    # the probe's chat request answers "Yes" (no value in it: P 0.5, log 0.5 = -0.693); the wrongly rendered prompt gets the untemplated answer "Hmm" (0.6)
    assert "renders differently from the server's own" in mode.reason and "'Yes' (-0.693)" in mode.reason and "'Hmm' (-0.511)" in mode.reason
    assert [p == pytest.approx(e, abs=1e-9) for p, e in zip(probs, EXPECTED)] == [True, True]  # every check still scored, by chat
    assert not completions_bodies(server)


# ------------------------------------------------------------------ faults on the batched path


@pytest.mark.parametrize("fault, counted", [("429", "fault_429"), ("500", "fault_500"), ("503", "overload"), ("drop", "fault_connection"),
                                            ("badjson", "fault_malformed"), ("nochoices", "fault_malformed")])
@pytest.mark.parametrize("mode", ["batched", "chat"])
def test_transient_faults_are_retried_and_counted_as_on_the_chat_path(fault, counted, mode):
    with ScriptedServer(value_verifier, completions="llama") as server:
        llm = client(server.base_url, yes_no_mode=mode)
        assert llm.yes_no_mode.kind == mode  # the probe ran before the faults
        server.faults = [fault, fault]
        probs = llm.score_yes_no_batch(ITEMS)
    assert [p == pytest.approx(e, abs=1e-9) for p, e in zip(probs, EXPECTED)] == [True, True]
    assert llm.stats[counted] == 2
    assert llm.stats["retries"] == (0 if fault == "503" else 2)  # a busy server lowers concurrency instead
    assert llm.stats["requests"] == (2 if mode == "batched" else 5) + 2


CONTEXT_400 = (400, {"error": {"message": "This model's maximum context length is 2000 tokens. However, you requested 12730 tokens.",
                               "type": "BadRequestError", "param": None, "code": 400}})


@pytest.mark.parametrize("style", STYLES)
def test_a_400_for_one_conversation_gives_nan_and_its_reason_and_the_others_are_scored(style):
    items = [("Conversation: value=0.25\nRule: ", ["a", "b"]), ("Conversation: TOO-LONG value=0.75\nRule: ", ["a", "b"]),
             ("Conversation: value=0.125\nRule: ", ["a", "b"])]
    with ScriptedServer(value_verifier, completions=style, faults=lambda i, body: CONTEXT_400 if "TOO-LONG" in json.dumps(body) else None) as server:
        llm = client(server.base_url)
        errors: dict[int, str] = {}
        probs = llm.score_yes_no_batch(items, errors=errors)
        assert llm.yes_no_mode.batched
    assert probs[0] == pytest.approx([0.25, 0.25], abs=1e-9) and probs[2] == pytest.approx([0.125, 0.125], abs=1e-9)
    assert all(math.isnan(p) for p in probs[1])
    assert list(errors) == [1] and "maximum context length is 2000 tokens" in errors[1]
    assert llm.stats["refused"] == 1 and llm.stats["retries"] == 0 and not llm.stats["logprobs_refused"]


LOGPROBS_400 = (400, {"error": {"code": 400, "message": "Logprobs is not enabled for this model", "status": "INVALID_ARGUMENT"}})


@pytest.mark.parametrize("style", STYLES)
def test_logprobs_refused_on_completions_reads_short_chat_answers(style):
    with ScriptedServer(value_verifier, completions=style) as server:
        llm = client(server.base_url)
        assert llm.yes_no_mode.batched
        server.refuse_logprobs = LOGPROBS_400
        probs = llm.score_yes_no_batch(ITEMS)
    # short answers: value_verifier says Yes at P >= 0.5, else No
    assert probs == [[0.0, 0.0], [1.0, 0.0, 1.0]]
    assert llm.stats["logprobs_refused"] == 1 and llm.stats["yes_no_fallback"] == 5
    assert llm.logprobs_accepted is False
    assert len(completions_bodies(server)) == 1  # refused once, never asked again
    shorts = chat_bodies(server)
    assert len(shorts) == 5 and all("logprobs" not in b and b["max_tokens"] == 8 for b in shorts)


@pytest.mark.parametrize("style", STYLES)
def test_no_yes_or_no_among_the_logprobs_falls_back_to_a_short_chat_answer(style):
    def reply(messages, body):
        if body["max_tokens"] == 1:  # one token that is neither Yes nor No, and neither is among the alternatives
            return {"content": "The", "top_logprobs": [("The", 0.7), ("A", 0.3)]}
        return {"content": "[[Yes]]" if "polite" in messages[-1]["content"] else "Answer: no"}

    with ScriptedServer(reply, completions=style) as server:
        llm = client(server.base_url)
        (probs,) = llm.score_yes_no_batch([("Rule: ", ["The response is polite.", "The response is in French."])])
        assert llm.yes_no_mode.batched
    assert probs == [1.0, 0.0]
    assert llm.stats["yes_no_fallback"] == 2 and llm.stats["requests"] == 3
    assert len(completions_bodies(server)) == 1 and [b["max_tokens"] for b in chat_bodies(server)] == [8, 8]


# ------------------------------------------------------------------ the verifier on both paths


def conversations(n_prompts: int, per_prompt: int) -> list[list[dict]]:
    """`per_prompt` responses to each of `n_prompts` prompts, each with its own value."""
    return [[{"role": "user", "content": f"Question {j}: say something."},
             {"role": "assistant", "content": f"Answer {r} to {j}: value={(7 * j + 3 * r) % 97 / 100 + 0.005:.3f}"}]
            for j in range(n_prompts) for r in range(per_prompt)]


@pytest.mark.parametrize("style", STYLES)
def test_the_verifier_gives_the_same_verdicts_batched_and_by_chat(style):
    rules = RuleSet.from_texts(["The response should be polite.", "The response should be short.", "The response should cite sources."])
    convs = conversations(4, 3)
    with ScriptedServer(value_verifier, completions=style) as server:
        batched_llm, chat_llm = client(server.base_url), client(server.base_url, yes_no_mode="chat")
        batched = Verifier(batched_llm, rules).verify(convs)
        chat = Verifier(chat_llm, rules).verify(convs)
    assert batched_llm.yes_no_mode.batched and not chat_llm.yes_no_mode.batched
    assert batched_llm.stats["requests"] == 12 and chat_llm.stats["requests"] == 36
    assert np.array_equal(batched.p_satisfied, chat.p_satisfied)
    assert np.array_equal(batched.hard, chat.hard)
    # the values were read, not defaulted: each conversation's three rules share its value
    first = (7 * 0 + 3 * 1) % 97 / 100 + 0.005
    assert batched.p_satisfied[1] == pytest.approx([first] * 3, abs=1e-9)


# ------------------------------------------------------------------ replicas


def server_of(servers: list[ScriptedServer], j: int) -> set[int]:
    """Which servers saw the checks of prompt `j`."""
    mark = f"Question {j}:"
    return {k for k, s in enumerate(servers) for b in completions_bodies(s) if mark in b["prompt"][0]}


def test_conversations_of_one_prompt_go_to_one_replica_and_prompts_spread_over_both():
    rules = RuleSet.from_texts(["The response should be polite.", "The response should be short."])
    n = 40
    with ScriptedServer(value_verifier, completions="llama") as a, ScriptedServer(value_verifier, completions="llama") as b:
        llm = client([a.base_url, b.base_url])
        verdicts = Verifier(llm, rules).verify(conversations(n, 3), batch=1)  # one at a time: no load to spill
        assert llm.yes_no_mode.batched
    assert not np.isnan(verdicts.p_satisfied).any()
    homes = [server_of([a, b], j) for j in range(n)]
    assert all(len(h) == 1 for h in homes), homes  # every response to one prompt met one replica's prefix cache
    on_a = sum(h == {0} for h in homes)
    assert 8 <= on_a <= n - 8, on_a  # both replicas get their share of the prompts
    assert len(completions_bodies(a)) + len(completions_bodies(b)) == 3 * n


def test_conversations_of_one_prompt_go_to_one_replica_when_verified_together():
    rules = RuleSet.from_texts(["The response should be polite.", "The response should be short."])
    n = 40
    with ScriptedServer(value_verifier, completions="llama") as a, ScriptedServer(value_verifier, completions="llama") as b:
        llm = client([a.base_url, b.base_url])
        Verifier(llm, rules).verify(conversations(n, 3), batch=3)
    homes = [server_of([a, b], j) for j in range(n)]
    assert all(len(h) == 1 for h in homes), homes


def test_bounded_load_a_key_leaves_its_home_only_when_the_home_is_full_and_past_its_share():
    """ReplicaSet.pick with the loads set by hand: home keeps a key while it has a free place (4) or holds at most
    ceil(1.25 x (in flight + 1) / 2); past both, the key's second choice takes it."""
    from types import SimpleNamespace

    from autorule.llm.replicas import ReplicaSet

    replicas = ReplicaSet(["http://a/v1", "http://b/v1"])
    for r in replicas:
        r.limit = SimpleNamespace(limit=4)
    home = replicas.pick("prompt 7")
    other = next(r for r in replicas if r is not home)
    home.assigned, other.assigned = 3, 0   # a free place at home
    assert replicas.pick("prompt 7") is home
    home.assigned, other.assigned = 6, 4   # full, but ceil(1.25 * 11 / 2) = 7 > 6: within its share
    assert replicas.pick("prompt 7") is home
    home.assigned, other.assigned = 7, 4   # full and ceil(1.25 * 12 / 2) = 8 > 7: still within
    assert replicas.pick("prompt 7") is home
    home.assigned, other.assigned = 9, 4   # full and past ceil(1.25 * 14 / 2) = 9
    assert replicas.pick("prompt 7") is other
    home.assigned, other.assigned = 9, 9   # both past their share: home
    assert replicas.pick("prompt 7") is home


def test_a_replica_that_does_not_answer_is_left_out_and_every_item_is_still_scored():
    rules = RuleSet.from_texts(["The response should be polite.", "The response should be short."])
    convs = conversations(20, 2)
    with ScriptedServer(value_verifier, completions="llama") as a:
        llm = client([a.base_url, f"http://127.0.0.1:{closed_port()}/v1"])
        verdicts = Verifier(llm, rules).verify(convs)
        assert llm.yes_no_mode.batched
    expected = [[(7 * j + 3 * r) % 97 / 100 + 0.005] * 2 for j in range(20) for r in range(2)]
    assert verdicts.p_satisfied == pytest.approx(np.array(expected), abs=1e-9)
    assert llm.stats["replica_down"] >= 1 and llm.stats["rerouted"] >= 1
    assert len(completions_bodies(a)) == 40


def test_a_replica_stopped_mid_run_is_left_out_and_every_item_is_still_scored():
    rules = RuleSet.from_texts(["The response should be polite.", "The response should be short."])
    with ScriptedServer(value_verifier, completions="llama") as a, ScriptedServer(value_verifier, completions="llama") as b:
        llm = client([a.base_url, b.base_url])
        first = Verifier(llm, rules).verify(conversations(20, 1))
        assert completions_bodies(a) and completions_bodies(b)  # both served the first half
        b.httpd.shutdown()
        b.httpd.server_close()
        llm.close()  # drop kept-alive connections: the stopped server's open ones would still answer
        second = Verifier(llm, rules).verify(conversations(20, 1))
    assert not np.isnan(first.p_satisfied).any() and np.array_equal(first.p_satisfied, second.p_satisfied)
    assert llm.stats["replica_down"] >= 1 and llm.stats["rerouted"] >= 1


def test_a_first_replica_that_is_down_still_gets_the_batched_mode_from_the_others():
    with ScriptedServer(value_verifier, completions="llama") as a:
        llm = client([f"http://127.0.0.1:{closed_port()}/v1", a.base_url])
        probs = llm.score_yes_no_batch(ITEMS)
        assert [p == pytest.approx(e, abs=1e-9) for p, e in zip(probs, EXPECTED)] == [True, True]
        assert llm.yes_no_mode.batched, llm.yes_no_mode.reason


# ------------------------------------------------------------------ a template from a tokenizer the user names


def saved_tokenizer(directory, chat_template: str) -> str:
    """A word-level tokenizer built offline with `chat_template`, saved to `directory` (what --chat-template takes)."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab={"[UNK]": 0}, unk_token="[UNK]")), unk_token="[UNK]")
    tokenizer.chat_template = chat_template
    tokenizer.save_pretrained(directory)
    return str(directory)


MOCKS_JINJA = "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}<|end|>\n{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
OTHER_JINJA = "{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}"


def test_a_tokenizer_named_as_chat_template_renders_the_batched_prompts(tmp_path):
    with ScriptedServer(value_verifier, completions="vllm") as server:
        llm = client(server.base_url, chat_template=saved_tokenizer(tmp_path, MOCKS_JINJA))
        probs = llm.score_yes_no_batch(ITEMS)
        mode = llm.yes_no_mode
    assert mode.batched and mode.template.source == f"tokenizer {tmp_path}"
    assert [p == pytest.approx(e, abs=1e-9) for p, e in zip(probs, EXPECTED)] == [True, True]
    assert len(completions_bodies(server)) == 2 and not chat_bodies(server)


def test_a_tokenizer_of_another_template_falls_back_to_chat_and_batched_refuses(tmp_path):
    path = saved_tokenizer(tmp_path, OTHER_JINJA)
    with ScriptedServer(value_verifier, completions="vllm") as server:
        llm = client(server.base_url, chat_template=path)
        probs = llm.score_yes_no_batch(ITEMS)
        with pytest.raises(LLMError, match=f"batched cannot run: the chat template from tokenizer {path} renders differently"):
            client(server.base_url, chat_template=path, yes_no_mode="batched").score_yes_no_batch(ITEMS)
    assert not llm.yes_no_mode.batched and f"tokenizer {path} renders differently" in llm.yes_no_mode.reason
    assert [p == pytest.approx(e, abs=1e-9) for p, e in zip(probs, EXPECTED)] == [True, True]
    assert not completions_bodies(server)


def test_a_chat_template_that_cannot_be_loaded_is_an_error(tmp_path):
    with ScriptedServer(value_verifier, completions="vllm") as server:
        with pytest.raises(LLMError, match="--chat-template .*has no chat template") as bad:
            client(server.base_url, chat_template=saved_tokenizer(tmp_path, "")).score_yes_no_batch(ITEMS)
        with pytest.raises(LLMError, match="no tokenizer with a chat template could be loaded from it") as missing:
            client(server.base_url, chat_template=str(tmp_path / "no-such-tokenizer")).score_yes_no_batch(ITEMS)
    from autorule.errors import exit_code

    assert exit_code(bad.value) == exit_code(missing.value) == 2  # bad input, not a failed run


# ------------------------------------------------------------------ server-native scoring: vLLM logprob_token_ids, SGLang /v1/score


@pytest.mark.parametrize("ignored", [False, True], ids=["honoured", "ignored-by-an-older-vllm"])
def test_vllm_is_sent_the_yes_no_token_ids_where_it_honours_them(ignored):
    """The mock's tokenizer makes "Yes", "No", " Yes", ... single tokens 200000..200007 (mock_server.WORD_IDS);
    an older vLLM ignores the field (the probe sees no requested id come back) and is not sent it."""
    from autorule.testing.mock_server import WORD_IDS

    with ScriptedServer(value_verifier, completions="vllm", ignore_logprob_token_ids=ignored) as server:
        llm = client(server.base_url)
        probs = llm.score_yes_no_batch(ITEMS)
        mode = llm.yes_no_mode
    assert mode.batched and [p == pytest.approx(e, abs=1e-9) for p, e in zip(probs, EXPECTED)] == [True, True]
    sent = [b.get("logprob_token_ids") for b in completions_bodies(server)]
    if ignored:
        assert mode.logprob_token_ids is None and sent == [None, None] and "logprob_token_ids" not in mode.describe()
    else:
        assert mode.logprob_token_ids == sorted(WORD_IDS.values()) and sent == [sorted(WORD_IDS.values())] * 2
        assert "with logprob_token_ids" in mode.describe() and mode.to_dict()["logprob_token_ids"] is True


def test_sglang_scores_with_v1_score_one_request_per_conversation(tmp_path):
    """SGLang renders no template for the client: with --chat-template it scores with /v1/score, the conversation as
    the query, each question (and the template's tail) an item, the server's Yes/No ids as labels."""
    from autorule.testing.mock_server import WORD_IDS

    with ScriptedServer(value_verifier, completions="sglang") as server:
        plain = client(server.base_url)
        assert [p == pytest.approx(0.25, abs=1e-9) for p in plain.score_yes_no_batch(ITEMS[:1])[0]] == [True, True]
        assert plain.yes_no_mode.kind == "chat" and "--chat-template" in plain.yes_no_mode.reason
        llm = client(server.base_url, chat_template=saved_tokenizer(tmp_path, MOCKS_JINJA))
        probs = llm.score_yes_no_batch(ITEMS)
        mode = llm.yes_no_mode
    assert mode.score and mode.label_ids == (WORD_IDS["Yes"], WORD_IDS["No"]) and mode.to_dict()["mode"] == "score"
    assert [p == pytest.approx(e, abs=1e-9) for p, e in zip(probs, EXPECTED)] == [True, True]
    scored = [b for b in server.requests if b.get("path") == "/v1/score" and PROBE_MARK not in b["query"]]
    assert sorted((b["query"], b["items"]) for b in scored) == sorted((TEMPLATE_HEAD + prefix, [q + TEMPLATE_TAIL for q in qs]) for prefix, qs in ITEMS)
    assert all(b["label_token_ids"] == [WORD_IDS["Yes"], WORD_IDS["No"]] for b in scored)
    assert llm.stats["requests"] == 2 and llm.stats["yes_no_checks"] == 5


# ------------------------------------------------------------------ several conversations in one request


def test_conversations_with_few_checks_share_a_request_and_a_refused_one_is_asked_alone():
    """The default grouping: up to 64 prompts a request. 40 conversations x 3 rules = 120 prompts: 21 conversations
    (63 prompts) in the first request, 19 (57) in the second. A request refused (400) because of one conversation is
    split: each conversation asked alone, only the one at fault is refused."""
    rules = RuleSet.from_texts(["The response should be polite.", "The response should be short.", "The response should be kind."])
    convs = [[{"role": "user", "content": f"Q{i}"}, {"role": "assistant", "content": f"value={(i % 9 + 1) / 10}"}] for i in range(40)]

    def refuse_q7(i: int, body: dict):
        prompts = body.get("prompt") or []
        return (400, {"error": {"message": "the request holds a prompt this server refuses"}}) if any("Q7\n" in p for p in prompts) else None

    with ScriptedServer(value_verifier, completions="vllm", faults=refuse_q7) as server:
        llm = client(server.base_url, batch_prompts=64)
        verdicts = Verifier(llm, rules).verify(convs)
        bodies = completions_bodies(server)
    assert [len(b["prompt"]) for b in bodies[:2]] == [63, 57]
    assert verdicts.p_satisfied[:, 0].tolist()[:7] == pytest.approx([(i % 9 + 1) / 10 for i in range(7)])
    assert list(verdicts.errors) == [7] and "refuses" in verdicts.errors[7] and np.isnan(verdicts.p_satisfied[7]).all()
    assert not np.isnan(np.delete(verdicts.p_satisfied, 7, axis=0)).any()
    # the refused first request was split into its 21 conversations, one request each; the second passed whole
    assert len(bodies) == 2 + 21 and llm.stats["batches_split"] == 1 and llm.stats["refused"] == 1
