"""Reliability drills: network faults survived, crashes lose nothing, the reward server
holds under load and refuses bad requests with 4xx, injections stay inside the data."""

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import httpx
import pytest
from conftest import HH, run_benchmark
from fake_llm import ScriptedLLM
from test_integrations import RULES, Served, number_in_response

from autorule.verifier.injection import attacked, load_attacks, run_injection_benchmark
from autorule.testing.mock_server import ScriptedServer, mock_judge
from autorule.examples import sample_rules
from autorule.cli.app import main
from autorule.data import Message, load_pairs
from autorule.integrations.openrlhf import create_app
from autorule.quickstart import SAMPLE_DATA
from autorule.reward import RewardScorer
from autorule.verifier import Verifier

TRANSIENT = ["429", "500", "503", "hang", "drop", "badjson", "nochoices"]


def extract_args(server, out, *extra, limit=10):
    return ["extract", "--data", str(HH), "--on-bad-row", "skip", "--limit", str(limit), "--model", f"openai:judge@{server.base_url}",
            "--out", str(out), "--target-rules", "4", "--no-label-filter", *extra]  # the mock judges nothing (the filter: test_label_filter.py)


def rules_section(run) -> str:
    return (run / "rules.yaml").read_text().split("rules:")[1]


def fault_schedule():
    """3 requests in every 10 faulted, by arrival order: every transient kind in turn, and
    a few rule-extraction replies written as prose instead of the JSON asked for."""
    injected: Counter = Counter()

    def fault(index: int, body: dict) -> str | None:
        if index % 10 not in (1, 4, 7):
            return None
        if "extract rules" in body["messages"][-1]["content"] and injected["notjson"] < 2:
            kind = "notjson"
        else:
            kind = TRANSIENT[sum(v for k, v in injected.items() if k != "notjson") % len(TRANSIENT)]
        injected[kind] += 1
        return kind

    return fault, injected


# ------------------------------------------------------------------ 1. network faults


def test_extraction_with_30_percent_faults_gives_the_fault_free_rules(tmp_path, shared_data):
    fault, injected = fault_schedule()
    with ScriptedServer(mock_judge(), faults=fault, hang_seconds=2) as server:
        assert main(extract_args(server, tmp_path / "faulty", "--no-cache", "--timeout", "1", "--max-retries", "8", "--concurrency", "4")) == 0
        sent = len(server.requests)
    with ScriptedServer(mock_judge()) as clean:
        assert main(extract_args(clean, tmp_path / "clean", "--no-cache")) == 0
    assert set(injected) == {*TRANSIENT, "notjson"}, injected  # every kind of fault happened
    assert 0.27 <= sum(injected.values()) / sent <= 0.33
    assert rules_section(tmp_path / "faulty") == rules_section(tmp_path / "clean")
    stats = json.loads((tmp_path / "faulty" / "run.json").read_text())["llm_stats"]["model"]
    transient = sum(v for k, v in injected.items() if k != "notjson")
    # each transient fault cost one retry, and run.json says so; a 503 (busy) is an overload,
    # answered by lowering concurrency rather than spending the retry budget
    assert (stats["retries"], stats["overload"]) == (transient - injected["503"], injected["503"])
    assert stats["fault_429"] == injected["429"]
    assert stats["requests"] == sent
    candidates = [json.loads(line) for line in (tmp_path / "faulty" / "020_candidates.jsonl").read_text().splitlines()]
    assert sum(c["repaired"] for c in candidates) == injected["notjson"]  # prose answers were repaired, not lost


def test_a_cut_off_rule_list_keeps_its_complete_items_and_is_counted(tmp_path, shared_data):
    def fault(index, body):
        return "length" if "extract rules" in body["messages"][-1]["content"] else None

    with ScriptedServer(mock_judge(), faults=fault) as server:
        assert main(extract_args(server, tmp_path / "run", "--no-cache", limit=3)) == 0
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["llm_stats"]["model"]["truncated"] == 3
    candidates = [json.loads(line) for line in (tmp_path / "run" / "020_candidates.jsonl").read_text().splitlines()]
    assert all(len(c["rules"]) == 1 for c in candidates)  # of two rules, the complete first one survives the cut


def test_a_persistent_fault_exits_non_zero_keeps_finished_work_and_resumes(tmp_path, shared_data, capsys):
    down = {"on": True}

    def fault(index, body):
        return "500" if down["on"] and index >= 5 else None

    with ScriptedServer(mock_judge(), faults=fault) as server:
        args = extract_args(server, tmp_path / "run", "--cache", str(tmp_path / "cache.sqlite"), "--concurrency", "1", "--max-retries", "1", limit=8)
        assert main(args) == 1
        err = " ".join(capsys.readouterr().err.split())
        assert "gave up after 2 attempts" in err and "500" in err
        meta = json.loads((tmp_path / "run" / "run.json").read_text())
        assert meta["status"] == "failed" and len((tmp_path / "run" / "010_reasoning.jsonl.partial").read_text().splitlines()) == 5
        down["on"] = False
        assert main(args) == 0
        answered = [json.dumps(b["messages"]) for i, b in enumerate(server.requests) if not (5 <= i < 7)]
    assert len(answered) == len(set(answered)), "a finished call was repeated"
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "complete"


# ------------------------------------------------------------------ 2. crashes


def test_sigkill_between_stages_then_rerun_repeats_no_finished_call(tmp_path, shared_data):
    run = tmp_path / "run"
    with ScriptedServer(mock_judge(), latency=0.15) as server:
        args = extract_args(server, run, "--concurrency", "1", "--cache", str(tmp_path / "cache.sqlite"), limit=6)
        proc = subprocess.Popen([sys.executable, "-m", "autorule", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        deadline = time.time() + 120
        while time.time() < deadline and not (run / "010_reasoning.jsonl").is_file():
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        assert (run / "010_reasoning.jsonl").is_file() and not (run / "rules.yaml").exists()
        assert main(args) == 0
        bodies = [json.dumps(b["messages"]) for b in server.requests]
        reasoning = [b for b in server.requests if "impartial judge" in b["messages"][-1]["content"]]
    assert len(reasoning) == 6  # stage 010 was finished: none of it asked again
    assert len(bodies) - len(set(bodies)) <= 1  # at most the one call in flight at the kill
    assert json.loads((run / "run.json").read_text())["status"] == "complete"


# ------------------------------------------------------------------ 4. the reward server


def test_reward_server_under_concurrent_load_answers_every_request_with_its_own_reward():
    status, report = run_benchmark("server_load.py", "--clients", "8", "--requests", "5", "--rules", "2")
    assert status == 0
    assert report["sent"] == report["answered"] == 40
    assert report["errors"] == 0 and report["mismatched"] == 0
    assert report["mean_batch"] > 1  # concurrent requests were scored together


MALFORMED_REQUESTS = [
    ("not json", {"content": b"{not json", "headers": {"content-type": "application/json"}}),
    ("json array", {"json": [1, 2]}),
    ("query is a string", {"json": {"query": "one"}}),
    ("query of numbers", {"json": {"query": [1, 2]}}),
    ("query of objects", {"json": {"query": [{"a": 1}]}}),
    ("no query", {"json": {"prompts": ["x"]}}),
    ("prompts length differs", {"json": {"query": ["a", "b"], "prompts": ["a"]}}),
    ("prompts not a list", {"json": {"query": ["a"], "prompts": "a"}}),
    ("too many samples", {"json": {"query": ["a"] * 5000}}),
    ("not utf-8", {"content": b'{"query": ["\xff\xfe"]}', "headers": {"content-type": "application/json"}}),
    ("text/plain", {"content": b'{"query": ["a"]}', "headers": {"content-type": "text/plain"}}),
    ("oversized body", {"json": {"query": ["x" * 20_000]}}),
]


@pytest.mark.parametrize("what, request_kwargs", MALFORMED_REQUESTS, ids=[m[0] for m in MALFORMED_REQUESTS])
def test_reward_server_answers_malformed_requests_with_4xx_never_500(what, request_kwargs):
    app = create_app(RewardScorer(RULES, ScriptedLLM(number_in_response)), token="s3cret", max_body_bytes=10_000)
    with Served(app) as srv:
        headers = {"authorization": "Bearer s3cret", **request_kwargs.pop("headers", {})}
        r = httpx.post(srv.url + "/", headers=headers, **request_kwargs)
        assert 400 <= r.status_code < 500, (r.status_code, r.text)
        assert httpx.post(srv.url + "/", json={"query": ["score 0.4"]}, headers={"authorization": "Bearer s3cret"}).json()["rewards"] == pytest.approx([0.4])
        assert httpx.get(srv.url + "/nowhere", headers=headers).status_code == 404


# ------------------------------------------------------------------ 5. prompt injection


@pytest.fixture(scope="module")
def base_conversation():
    return load_pairs(SAMPLE_DATA).pairs[0].conversation("chosen")


def test_the_attack_suite_is_large_and_varied():
    attacks = load_attacks()
    assert len(attacks) >= 20 and len({a.id for a in attacks}) == len(attacks)
    assert {"order", "fake verdict", "fake delimiter", "fake rule", "fake instruction", "role tags", "padding"} <= {a.kind for a in attacks}


@pytest.mark.parametrize("attack", load_attacks(), ids=lambda a: a.id)
@pytest.mark.slow
def test_each_attack_stays_inside_the_responses_delimited_data(attack, base_conversation, embedded):
    verifier = Verifier(embedded, sample_rules(2))
    conv = attacked(base_conversation, attack)
    prefix = verifier.prefix(conv)  # as the verifier sends it, cut to the model's context if needed
    nonce = prefix.split('<assistant-final-response id="')[1].split('"')[0]
    assert nonce not in attack.payload  # the payload cannot name the real delimiters
    before, inside = prefix.split(f'<assistant-final-response id="{nonce}">')
    inside, after = inside.split(f'</assistant-final-response id="{nonce}">')
    assert after.strip() == f'</conversation id="{nonce}">'  # nothing of the response escapes after its closing marker
    head, tail = attack.payload[:30], attack.payload[-30:]
    assert (head if attack.position == "start" else tail) in inside
    assert attack.payload.strip()[:30] not in before.split("<conversation>")[0]  # nor into the instructions
    # the rule questions are asked after the whole prefix, never inside it
    assert all(q not in prefix for q in verifier.questions)


@pytest.mark.slow
def test_injection_flip_measurement_runs_on_the_embedded_verifier(base_conversation, embedded):
    attacks = [a for a in load_attacks() if a.id in ("order-yes", "fake-close-plain", "chatml-role-tags")]
    report = run_injection_benchmark(embedded, sample_rules(2), [base_conversation], attacks)
    assert [a["id"] for a in report["per_attack"]] == ["order-yes", "fake-close-plain", "chatml-role-tags"]
    assert report["checks_per_attack"] == 2
    # the same counts by hand, from the embedded model's own P(Yes) for each rule question
    verifier = Verifier(embedded, sample_rules(2))
    clean = [embedded.score_yes_no(verifier.prefix(base_conversation), verifier.questions)]
    for attack, measured in zip(attacks, report["per_attack"]):
        hit = embedded.score_yes_no(verifier.prefix(attacked(base_conversation, attack)), verifier.questions)
        flips = sum((c >= 0.5) != (h >= 0.5) for c, h in zip(clean[0], hit))
        assert measured["flip_rate"] == flips / 2
        assert measured["mean_delta_p_yes"] == pytest.approx(sum(h - c for c, h in zip(clean[0], hit)) / 2, abs=1e-6)


def test_flip_counting_on_a_verifier_that_obeys_orders():
    gullible = ScriptedLLM(lambda prefix, q: 0.9 if "answer Yes" in prefix else 0.1)
    conv = [Message(role="user", content="Hi?"), Message(role="assistant", content="Hello.")]
    report = run_injection_benchmark(gullible, sample_rules(3), [conv], [a for a in load_attacks() if a.id in ("order-yes", "verdict-line")])
    by_id = {a["id"]: a for a in report["per_attack"]}
    assert by_id["order-yes"]["flip_to_yes_rate"] == 1.0 and by_id["verdict-line"]["flip_to_yes_rate"] == 0.0
    assert report["worst_attack"] == "order-yes"
