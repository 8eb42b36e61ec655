"""Judge APIs as they behave (issue 24 §4): a server that refuses logprobs, a verdict filed under
reasoning_content, and runs in which responses (or all of them) fail.

Every test talks to a real HTTP server (`ScriptedServer`) that answers with the exact bodies
hosted APIs, vLLM and pydantic gateways send. The judge below answers Yes when a rule's
keyword is in the response: "polite" when it holds "please", "French" when it holds "bonjour".
So, from generated answers (Yes: 1.0, No: 0.0), with the two rules weighted equally:

    "Bonjour, please sit."  polite Yes, French Yes  -> rule reward 1.0
    "Please wait."          polite Yes, French No   -> 0.5
    "Go away."              polite No,  French No   -> 0.0
"""

from __future__ import annotations

import json
import logging
import math

import pytest
from autorule.testing.mock_server import ScriptedServer

from autorule.llm.openai_compat import OpenAICompatLLM
from autorule.llm.refusals import is_key_problem, logprobs_refusal
from autorule.rules import RuleSet

POLITE, FRENCH = "The response is polite.", "The response is in French."
RESPONSES = ["Bonjour, please sit.", "Please wait.", "Go away."]
RULE_REWARDS = [1.0, 0.5, 0.0]

# the two bodies of ../shared/cases/README.md ("Logprobs refused"), then three more phrasings
GEMINI_400 = (400, {"error": {"code": 400, "message": "Logprobs is not enabled for this model", "status": "INVALID_ARGUMENT"}})
NOT_ALLOWED_403 = (403, {"error": {"message": "You are not allowed to request logprobs from this model", "type": "invalid_request_error"}})
OPENAI_400 = (400, {"error": {"message": "Unsupported parameter: 'logprobs' is not supported with this model.", "type": "invalid_request_error",
                              "param": "logprobs", "code": "unsupported_parameter"}})
VLLM_400 = (400, {"object": "error", "message": "top_logprobs is not supported for this model", "type": "BadRequestError", "param": None, "code": 400})
PYDANTIC_422 = (422, {"object": "error", "message": {"detail": [{"type": "extra_forbidden", "loc": ["body", "top_logprobs"], "msg": "Extra inputs are not permitted", "input": 20}]},
                      "type": "invalid_request_error", "param": None, "code": None})
REFUSALS = {"gemini-400": GEMINI_400, "not-allowed-403": NOT_ALLOWED_403, "openai-400": OPENAI_400, "vllm-400": VLLM_400, "pydantic-422": PYDANTIC_422}

# vLLM's answer to a request longer than its context: a refusal of this one request, not of logprobs
CONTEXT_400 = (400, {"object": "error", "type": "BadRequestError", "code": 400, "message": "This model's maximum context length is 2000 tokens. However, "
                     "you requested 12730 tokens (12722 in the messages, 8 in the completion). Please reduce the length of the messages or completion."})
CONTEXT_REASON = "maximum context length is 2000 tokens"


def judge(messages: list[dict], body: dict) -> dict:
    text = messages[-1]["content"]
    response = text.lower()
    if POLITE in text:
        return {"content": "Yes" if "please" in response else "No"}
    if FRENCH in text:
        return {"content": "Yes" if "bonjour" in response else "No"}
    return {"content": "No"}


def client(server: ScriptedServer, **kw) -> OpenAICompatLLM:
    return OpenAICompatLLM("scripted", server.base_url, **{"api_key": "sk-test", "backoff_base": 0.01, "timeout": 5.0, **kw})


def rules() -> RuleSet:
    return RuleSet.from_texts([POLITE, FRENCH])


def conversations() -> list[list[dict]]:
    return [[{"role": "user", "content": "Greet me."}, {"role": "assistant", "content": r}] for r in RESPONSES]


def strict_json(text: str):
    """json.loads that refuses NaN / Infinity, as jq and JavaScript do."""
    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


# ---------------------------------------------------------------------------- recognising refusals


@pytest.mark.parametrize("name", list(REFUSALS))
def test_each_wording_of_a_logprobs_refusal_is_recognised(name):
    status, body = REFUSALS[name]
    refusal = logprobs_refusal(status, json.dumps(body), 20)
    assert refusal is not None and refusal.limit is None


@pytest.mark.parametrize("status, text, limit", [
    (400, "Requested sample logprobs of 20, which is greater than max allowed: 5", 5),  # vLLM --max-logprobs 5
    (400, "Invalid 'top_logprobs': integer above maximum value. Expected a value <= 8, but got 20 instead.", 8),  # OpenAI
    (422, "top_logprobs must be between 0 and 1", 1),
])
def test_a_stated_top_logprobs_maximum_is_a_limit_not_a_refusal(status, text, limit):
    assert logprobs_refusal(status, text, 20).limit == limit
    # a maximum the request already respects says nothing about this request's logprobs
    assert logprobs_refusal(status, text, limit) is None


@pytest.mark.parametrize("status, text", [
    CONTEXT_400[:1] + (json.dumps(CONTEXT_400[1]),),  # too long: a refusal of the request, not of logprobs
    (500, json.dumps(GEMINI_400[1])),  # a server error is retried, never read as a refusal
    (400, "top_logprobs: 20"),  # mentions logprobs, refuses nothing
    (401, '{"error": {"message": "Incorrect API key provided"}}'),
])
def test_other_errors_are_not_logprobs_refusals(status, text):
    assert logprobs_refusal(status, text, 20) is None


@pytest.mark.parametrize("status, message, key", [
    (401, "Incorrect API key provided: sk-te****", True),
    (401, "", True),
    (403, "Forbidden", True),
    (403, "Invalid authentication credentials", True),
    (403, "You are not allowed to request logprobs from this model", False),
    (403, "Project proj_1 does not have access to model gpt-x", False),
    (400, "invalid api key", False),  # only 401/403 are key problems
])
def test_a_401_or_403_is_a_key_problem_only_when_the_body_names_no_other_cause(status, message, key):
    assert is_key_problem(status, message) is key


# ---------------------------------------------------------------------------- the backend


@pytest.mark.parametrize("name", list(REFUSALS))
def test_a_server_that_refuses_logprobs_is_met_once_and_verdicts_come_from_short_answers(name, caplog):
    with ScriptedServer(judge, refuse_logprobs=REFUSALS[name]) as server:
        llm = client(server)
        with caplog.at_level(logging.WARNING, logger="autorule"):
            first = llm.score_yes_no(f"Response: {RESPONSES[1]}\nRule: ", [POLITE, FRENCH])
            second = llm.score_yes_no(f"Response: {RESPONSES[0]}\nRule: ", [POLITE, FRENCH])
    assert (first, second) == ([1.0, 0.0], [1.0, 1.0])
    # one request asked for logprobs (refused); the refused check was asked again without, not lost
    asked = ["logprobs" in r or "top_logprobs" in r for r in server.requests]
    assert asked == [True, False, False, False, False]
    assert all(r["max_tokens"] == 8 for r in server.requests[1:])
    assert (llm.stats["logprobs_refused"], llm.stats["yes_no_fallback"], llm.stats["yes_no_unparsed"], llm.stats["refused"]) == (1, 4, 0, 0)
    warnings = [r.getMessage() for r in caplog.records if "refused logprobs" in r.getMessage()]
    assert len(warnings) == 1 and "short generated answer" in warnings[0]
    assert "API key" not in warnings[0]


def test_many_checks_at_once_still_meet_the_refusal_once():
    with ScriptedServer(judge, refuse_logprobs=NOT_ALLOWED_403) as server:
        llm = client(server, concurrency=16)
        probs = llm.score_yes_no_batch([(f"Response: {r}\nRule: ", [POLITE, FRENCH]) for r in RESPONSES * 4])
    assert probs == [[1.0, 1.0], [1.0, 0.0], [0.0, 0.0]] * 4
    assert sum("logprobs" in r for r in server.requests) == 1 and len(server.requests) == 25
    assert llm.stats["logprobs_refused"] == 1 and llm.stats["yes_no_fallback"] == 24


def test_a_top_logprobs_limit_lowers_the_number_asked_for_and_keeps_probabilities():
    limit = (400, {"object": "error", "message": "Requested sample logprobs of 20, which is greater than max allowed: 5", "type": "BadRequestError", "code": 400})
    faults = lambda i, body: limit if body.get("top_logprobs", 0) > 5 else None  # noqa: E731
    with ScriptedServer(judge, faults=faults) as server:
        llm = client(server)
        probs = llm.score_yes_no(f"Response: {RESPONSES[1]}\nRule: ", [POLITE, FRENCH])
    # the mock gives the answered token 0.8: P(Yes) 0.8 for "Yes", 0.2 for "No"
    assert probs == [pytest.approx(0.8), pytest.approx(0.2)]
    assert [r.get("top_logprobs") for r in server.requests] == [20, 5, 5]
    assert (llm.stats["top_logprobs_lowered"], llm.stats["logprobs_refused"], llm.stats["yes_no_fallback"]) == (1, 0, 0)


@pytest.mark.parametrize("reasoning, finish, expected", [
    ("Yes", "stop", 1.0),
    ("No.", "stop", 0.0),
    ("Yes", "length", 1.0),  # a bare verdict cut at max_tokens is still the whole verdict
    ("The reply says please, so the answer is Yes.", "stop", 1.0),
    ("Is it in French? At first yes, bonjour... no wait, the rest is English. No", "stop", 0.0),  # the last Yes/No concludes
    ("First, is it polite? Yes. Second, is it", "length", None),  # cut mid-reasoning: its last Yes/No is a step
    ("Let me look at the response carefully", "stop", None),  # no verdict at all
])
def test_a_verdict_filed_under_reasoning_content_with_null_content_is_read_from_there(reasoning, finish, expected):
    def reply(messages, body):
        return {"content": None, "reasoning_content": reasoning, "finish_reason": finish}

    with ScriptedServer(reply, logprobs=False) as server:
        llm = client(server)
        (p,) = llm.score_yes_no("Response: hello\nRule: ", [POLITE])
    if expected is None:
        assert math.isnan(p)
        assert (llm.stats["yes_no_unparsed"], llm.stats["yes_no_thinking"], llm.stats["yes_no_from_reasoning"]) == (1, 1, 0)
    else:
        assert p == expected
        assert (llm.stats["yes_no_unparsed"], llm.stats["yes_no_from_reasoning"], llm.stats["yes_no_fallback"]) == (0, 1, 1)


def test_the_answer_text_decides_over_the_reasoning_and_reasoning_field_is_read_too():
    def reply(messages, body):
        text = messages[-1]["content"]
        if POLITE in text:
            return {"content": "No", "reasoning_content": "Maybe yes."}  # an answer is there: it decides
        return {"content": "", "reasoning": "It is French, so the answer is Yes."}  # some servers call it `reasoning`

    with ScriptedServer(reply, refuse_logprobs=GEMINI_400) as server:
        llm = client(server)
        assert llm.score_yes_no("Response: hello\nRule: ", [POLITE, FRENCH]) == [0.0, 1.0]
    assert (llm.stats["logprobs_refused"], llm.stats["yes_no_from_reasoning"]) == (1, 1)


def test_a_403_that_names_another_cause_is_not_called_a_key_problem():
    from autorule.llm import ChatRequest, LLMError

    other = (403, {"error": {"message": "Project proj_1 does not have access to model gpt-x", "type": "invalid_request_error"}})
    bad_key = (401, {"error": {"message": "Incorrect API key provided: sk-te****", "type": "invalid_request_error", "code": "invalid_api_key"}})
    generic = (403, {"error": "Forbidden"})
    request = [ChatRequest([{"role": "user", "content": "hi"}])]
    with ScriptedServer(faults=[other, bad_key, generic]) as server:
        llm = client(server)
        with pytest.raises(LLMError) as other_cause:
            llm.generate(request)
        with pytest.raises(LLMError) as key:
            llm.generate(request)
        with pytest.raises(LLMError) as forbidden:
            llm.generate(request)
    assert str(other_cause.value) == f"{server.base_url} refused the request (403): Project proj_1 does not have access to model gpt-x"
    assert str(key.value) == f"{server.base_url} refused the API key (401: Incorrect API key provided: sk-te****): check --api-key or OPENAI_API_KEY"
    assert str(forbidden.value) == f"{server.base_url} refused the API key (403: Forbidden): check --api-key or OPENAI_API_KEY"
    assert llm.stats["retries"] == 0


# ---------------------------------------------------------------------------- short answers with no Yes/No: thinking only when shown


PROSE = "The response is polite because it says please and thanks the user."


@pytest.mark.parametrize("reply, thinking, cause", [
    # a non-reasoning model that answers with prose: quoted, never called thinking
    ({"content": PROSE}, 0, "the verifier answered with text that has no Yes or No, e.g. 'The response is polite because it says please and thanks the user.'"),
    ({"content": "Certainly! Let me evaluate the response against this rule in detail now please"}, 0,
     "e.g. 'Certainly! Let me evaluate the response against this rule in detail now please'"),
    # a reasoning model: its <think> (at the start or not) or its reasoning_content shows it
    ({"content": "<think>\nOkay, the user wants"}, 6, "6 answers began with a reasoning block (<think>)"),
    ({"content": "Hmm.</think>"}, 6, "6 answers began with a reasoning block (<think>)"),
    ({"content": None, "reasoning_content": "First, is it polite? It says please, so", "finish_reason": "length"}, 6,
     "6 answers began with a reasoning block (<think>)"),
])
def test_unparsed_short_answers_blame_thinking_only_when_the_reply_shows_reasoning(reply, thinking, cause):
    from autorule.verifier import UnparsedVerdicts, Verifier

    with ScriptedServer(lambda messages, body: dict(reply), refuse_logprobs=GEMINI_400) as server:
        llm = client(server)
        with pytest.raises(UnparsedVerdicts) as e:
            Verifier(llm, rules()).verify(conversations())
    message = " ".join(str(e.value).split())
    assert message.startswith("6 of 6 rule checks had no readable Yes/No (") and cause in message
    assert (llm.stats["yes_no_unparsed"], llm.stats["yes_no_thinking"], llm.stats["yes_no_fallback"]) == (6, thinking, 6)
    if thinking:
        assert "enable_thinking" in message and "text that has no Yes or No" not in message and llm.unparsed_replies == []
    else:
        assert "enable_thinking" not in message and "thinks" not in message and "reasoning block" not in message
        assert "Use a verifier that answers the question with Yes or No" in message and len(llm.unparsed_replies) == 3


# ---------------------------------------------------------------------------- rewards from a server that refuses logprobs


def test_verify_and_the_reward_scorer_give_exact_rewards_from_short_answers():
    from autorule import verify
    from autorule.reward import RewardScorer

    with ScriptedServer(judge, refuse_logprobs=NOT_ALLOWED_403) as server:
        verdicts = verify(rules(), conversations(), client(server), cache=False)
        llm = client(server)
        scores = RewardScorer(rules(), llm).score(conversations())
    assert verdicts.p_satisfied.tolist() == [[1.0, 1.0], [1.0, 0.0], [0.0, 0.0]] and verdicts.errors == {}
    assert scores.rule.tolist() == RULE_REWARDS and scores.total.tolist() == RULE_REWARDS
    assert llm.stats["logprobs_refused"] == 1


def write_inputs(tmp_path, responses=RESPONSES):
    rules_path = tmp_path / "rules.yaml"
    rules().save(rules_path)
    data = tmp_path / "responses.jsonl"
    data.write_text("".join(json.dumps({"id": f"r{i}", "prompt": "Greet me.", "response": r}) + "\n" for i, r in enumerate(responses)))
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"Greet me ({i}).", "chosen": c, "rejected": r}) + "\n"
                             for i, (c, r) in enumerate([(RESPONSES[0], RESPONSES[2]), (RESPONSES[1], RESPONSES[2])])))
    return rules_path, data, pairs


def test_cli_score_against_a_server_that_refuses_logprobs(tmp_path, capsys, monkeypatch):
    from autorule.cli.app import main

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    rules_path, data, _ = write_inputs(tmp_path)
    with ScriptedServer(judge, refuse_logprobs=GEMINI_400) as server:
        code = main(["score", "--rules", str(rules_path), "--data", str(data), "--verifier", f"openai:scripted@{server.base_url}", "--no-cache", "--json"])
    captured = capsys.readouterr()
    summary = strict_json(captured.out.strip().splitlines()[-1])
    assert code == 0
    assert (summary["responses"], summary["failed"], summary["mean_rule_reward"]) == (3, 0, 0.5)
    assert summary["llm_stats"]["logprobs_refused"] == 1 and summary["llm_stats"]["yes_no_fallback"] == 6
    assert captured.err.count("refused logprobs") == 1  # said once, for the whole run


def test_cli_score_in_which_every_response_fails_exits_3_with_the_reasons_and_strict_json(tmp_path, capsys, monkeypatch):
    from autorule.cli.app import main
    from autorule.errors import EXIT_ALL_FAILED

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    rules_path, data, _ = write_inputs(tmp_path)
    out = tmp_path / "verdicts.jsonl"
    with ScriptedServer(judge, faults=lambda i, body: CONTEXT_400) as server:
        code = main(["score", "--rules", str(rules_path), "--data", str(data), "--verifier", f"openai:scripted@{server.base_url}", "--no-cache",
                     "--json", "--out", str(out)])
    captured = capsys.readouterr()
    summary = strict_json(captured.out.strip().splitlines()[-1])
    assert code == EXIT_ALL_FAILED == 3
    assert (summary["responses"], summary["failed"], summary["mean_reward"], summary["mean_rule_reward"]) == (3, 3, None, None)
    assert list(summary["pass_rates"].values()) == [None, None]  # NaN in Python, null in JSON
    [(reason, n)] = summary["failure_reasons"].items()
    assert n == 3 and CONTEXT_REASON in reason and f"{server.base_url} refused the request (400)" in reason
    assert "all 3 responses failed" in captured.err and CONTEXT_REASON in captured.err
    rows = [strict_json(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["r0", "r1", "r2"] and all(CONTEXT_REASON in r["error"] for r in rows)


def test_cli_score_with_some_failures_exits_0_and_names_the_first_reason(tmp_path, capsys, monkeypatch):
    from autorule.cli.app import main

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    rules_path, data, _ = write_inputs(tmp_path)
    faults = lambda i, body: CONTEXT_400 if "Go away." in body["messages"][-1]["content"] else None  # noqa: E731
    with ScriptedServer(judge, faults=faults, logprobs=False) as server:
        code = main(["score", "--rules", str(rules_path), "--data", str(data), "--verifier", f"openai:scripted@{server.base_url}", "--no-cache", "--json"])
    summary = strict_json(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0
    assert (summary["responses"], summary["failed"], summary["mean_rule_reward"]) == (3, 1, 0.75)  # (1.0 + 0.5) / 2
    assert list(summary["failure_reasons"].values()) == [1]


def test_cli_validate_in_which_every_response_fails_exits_3_and_leaves_the_rules_file_alone(tmp_path, capsys, monkeypatch):
    from autorule.cli.app import main

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    rules_path, _, pairs = write_inputs(tmp_path)
    before = rules_path.read_bytes()
    report_path = tmp_path / "validation.json"
    with ScriptedServer(judge, faults=lambda i, body: CONTEXT_400) as server:
        code = main(["validate", "--rules", str(rules_path), "--data", str(pairs), "--verifier", f"openai:scripted@{server.base_url}", "--no-cache",
                     "--json", "--out", str(report_path), "--folds", "2"])
    captured = capsys.readouterr()
    assert code == 3
    for text in (captured.out.strip().splitlines()[-1], report_path.read_text()):
        report = strict_json(text)
        assert (report["pairs"], report["refused_responses"], report["accuracy"]) == (2, 4, None)
        [(reason, n)] = report["refusal_reasons"].items()
        assert n == 4 and CONTEXT_REASON in reason
    assert "all 4 responses failed" in captured.err
    assert rules_path.read_bytes() == before  # no statistics written from nothing


def test_cli_validate_against_a_server_that_refuses_logprobs(tmp_path, capsys, monkeypatch):
    from autorule.cli.app import main

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    rules_path, _, pairs = write_inputs(tmp_path)
    with ScriptedServer(judge, refuse_logprobs=NOT_ALLOWED_403) as server:
        code = main(["validate", "--rules", str(rules_path), "--data", str(pairs), "--verifier", f"openai:scripted@{server.base_url}", "--no-cache",
                     "--json", "--out", str(tmp_path / "v.json"), "--folds", "2"])
    report = strict_json(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0
    # chosen rule rewards 1.0 and 0.5 against 0.0: the rule set prefers the chosen reply in both pairs
    assert (report["refused_responses"], report["rule_set"]["correct"], report["llm_stats"]["logprobs_refused"]) == (0, 2, 1)


# ---------------------------------------------------------------------------- adapters


def failing_on(marker: str):
    """Faults for requests whose conversation holds `marker`: vLLM's too-long refusal."""
    return lambda i, body: CONTEXT_400 if marker in body["messages"][-1]["content"] else None


def test_trl_reward_is_none_only_for_the_failed_completion_and_logs_the_count(caplog):
    from autorule.integrations.trl import RuleReward

    metrics: dict[str, float] = {}
    with ScriptedServer(judge, faults=failing_on("Go away."), refuse_logprobs=GEMINI_400) as server:
        reward = RuleReward(rules(), client(server), cache=False)
        with caplog.at_level(logging.WARNING, logger="autorule"):
            values = reward(prompts=["Greet me."] * 3, completions=RESPONSES, log_metric=metrics.__setitem__)
    assert values == [1.0, 0.5, None]
    assert (metrics["rule_reward/refused"], metrics["rule_reward/logprobs_refused"]) == (1.0, 1.0)
    [warning] = [r.getMessage() for r in caplog.records if "completions failed" in r.getMessage()]
    assert warning.startswith("rule_reward: 1 of 3 completions failed") and CONTEXT_REASON in warning


def test_trl_reward_logs_an_error_per_all_failed_call_and_raises_after_three_in_a_row(caplog):
    from autorule.integrations.trl import RewardFailed, RuleReward

    metrics: dict[str, float] = {}
    with ScriptedServer(judge, faults=lambda i, body: CONTEXT_400) as server:
        reward = RuleReward(rules(), client(server), cache=False)
        call = dict(prompts=["Greet me."] * 2, completions=RESPONSES[:2], log_metric=metrics.__setitem__)
        with caplog.at_level(logging.WARNING, logger="autorule"):
            assert reward(**call) == [None, None]
            assert reward(**call) == [None, None]
            with pytest.raises(RewardFailed, match=f"every completion failed in 3 calls in a row.*{CONTEXT_REASON}"):
                reward(**call)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert [e.split(";")[0] for e in errors] == ["rule_reward: all 2 completions failed (1 such calls in a row)",
                                                 "rule_reward: all 2 completions failed (2 such calls in a row)",
                                                 "rule_reward: all 2 completions failed (3 such calls in a row)"]
    assert metrics["rule_reward/refused"] == 2.0


def test_trl_reward_counts_all_failed_calls_only_in_a_row():
    from autorule.integrations.trl import RuleReward

    with ScriptedServer(judge, faults=failing_on("Go away."), logprobs=False) as server:
        reward = RuleReward(rules(), client(server), cache=False, max_failed_calls=2)
        assert reward(prompts=["Q"], completions=["Go away."]) == [None]
        assert reward(prompts=["Q"], completions=["Please wait."]) == [0.5]  # a good call resets the count
        assert reward(prompts=["Q"], completions=["Go away."]) == [None]
        assert reward._failed_calls == 1
        never = RuleReward(rules(), client(server), cache=False, max_failed_calls=None)
        assert [never(prompts=["Q"], completions=["Go away."]) for _ in range(4)] == [[None]] * 4


def test_verl_marks_failed_samples_refused_and_logs_the_count_and_reason(caplog):
    from autorule.integrations.verl import compute_score
    from autorule.reward import RewardScorer

    with ScriptedServer(judge, faults=failing_on("Go away."), refuse_logprobs=VLLM_400) as server:
        scorer = RewardScorer(rules(), client(server))
        with caplog.at_level(logging.WARNING, logger="autorule"):
            batch = compute_score(solution_strs=RESPONSES, extra_infos=[{"prompt": "Greet me."}] * 3, scorer=scorer)
            single = compute_score("chat", "Go away.", None, {"prompt": "Greet me."}, scorer=scorer)
    assert [(r["score"], r["rule_reward"], r["refused"]) for r in batch] == [(1.0, 1.0, 0.0), (0.5, 0.5, 0.0), (0.0, 0.0, 1.0)]
    assert (single["score"], single["refused"]) == (0.0, 1.0)
    warnings = [r.getMessage() for r in caplog.records if "samples failed" in r.getMessage()]
    assert [w.split(" and ")[0] for w in warnings] == ["autorule: 1 of 3 samples failed", "autorule: 1 of 1 samples failed"]
    assert all(CONTEXT_REASON in w for w in warnings)
    assert scorer.verifier.llm.stats["logprobs_refused"] == 1


def test_reward_server_reports_refusals_with_their_reason():
    from fastapi.testclient import TestClient

    from autorule.integrations.openrlhf import create_app
    from autorule.reward import RewardScorer

    with ScriptedServer(judge, faults=failing_on("Go away."), refuse_logprobs=OPENAI_400) as server:
        app = create_app(RewardScorer(rules(), client(server)))
        with TestClient(app) as http:
            answer = http.post("/get_reward", json={"query": ["Q Please wait.", "Q Go away."], "prompts": ["Q ", "Q "]}).json()
            health = http.get("/health").json()
    assert answer["rewards"] == [0.5, 0.0] and answer["extra_logs"]["refused"] == [0.0, 1.0]
    [(reason, n)] = health["refusal_reasons"].items()
    assert (health["refused"], n) == (1, 1) and CONTEXT_REASON in reason
    assert health["llm_stats"]["logprobs_refused"] == 1


def test_llm_score_json_writes_an_unread_verdict_as_null(capsys, monkeypatch):
    from autorule.cli.app import main

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with ScriptedServer(lambda m, b: {"content": "Maybe."}, refuse_logprobs=GEMINI_400) as server:
        code = main(["llm", "score", "--prefix", "Rule: ", "say yes", "--model", f"openai:scripted@{server.base_url}", "--no-cache", "--json"])
    assert code == 0
    assert strict_json(capsys.readouterr().out.strip().splitlines()[-1]) == {"p_yes": [None]}


# ---------------------------------------------------------------------------- every JSON output through jsonsafe

# json.dumps left in the package, each for a reason other than an output a person or tool reads
NOT_OUTPUT = {
    "data/messages.py": "tool-call arguments rendered as text",
    "verifier/calibration.py": "a content key",
    "llm/speed.py": "a cache key, and the machine's speed figures kept between runs (read back as floats)",
    "llm/refusals.py": "a server's error body quoted in a message",
    "data/pairs.py": "the pair id hash",
    "train/grpo.py": "a prompt key",
    "api.py": "a doctest's fake reply",
    "cache.py": "cache keys and values (NaN is never stored)",
    "testing/mock_server.py": "the test double server's own replies",
    "validation.py": "a docstring naming json.dumps's indent",
    "verifier/verifier.py": "the conversation nonce hash",
    "rescoring/formats.py": "a prompt's group key (hashed)",
    "validation_baselines.py": "a pair's content hash (the no-rules judge's A/B coin)",
}


def test_every_json_output_and_file_is_written_through_jsonsafe():
    import re
    from pathlib import Path

    import autorule

    root = Path(autorule.__file__).parent
    found = {}
    for path in root.rglob("*.py"):
        if path.name == "jsonsafe.py":
            continue
        text = path.read_text()
        if re.search(r"(?<![\w.])json\.dump", text):
            found[path.relative_to(root).as_posix()] = True
    assert sorted(found) == sorted(NOT_OUTPUT)
