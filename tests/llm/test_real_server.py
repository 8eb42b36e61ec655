"""autorule against llama.cpp's own `llama-server`: the defects a real server exposed.

Each test starts a real llama-server on 127.0.0.1 (tests/llama_server.py) with a real
GGUF model from PyPI: SmolLM2-135M-Instruct (the embedded model) and Gemma 3 270M (a
base model, which answers the verifier's question with no readable Yes/No).
"""

from __future__ import annotations

import gzip
import json

import numpy as np
import pytest
from conftest import ALPACA, HH
from llama_server import LlamaServer, gemma_gguf

from autorule.cache import Cache
from autorule.cli.app import main
from autorule.data import Message
from autorule.llm import ChatRequest, load_llm
from autorule.llm.local import embedded_gguf
from autorule.quickstart import SAMPLE_DATA
from autorule.rules import Rule, RuleSet
from autorule.verifier import UnparsedVerdicts, Verifier

RULES = RuleSet(rules=[Rule.from_candidates(t, []) for t in (
    "The assistant's response should answer the user's question directly.",
    "The assistant's response should be written in English.",
)])


def conversations(n: int = 2) -> list[list[Message]]:
    rows = [json.loads(line) for line in SAMPLE_DATA.read_text().splitlines()[:n]]
    return [[Message(role="user", content=r["prompt"]), Message(role="assistant", content=r["chosen"])] for r in rows]


@pytest.fixture(scope="module")
def smollm():
    with LlamaServer(embedded_gguf(), "-c", "4096") as server:
        yield server


@pytest.fixture(scope="module")
def gemma():
    with LlamaServer(gemma_gguf(), "-c", "2048") as server:
        yield server


@pytest.fixture
def rules_file(tmp_path):
    path = tmp_path / "rules.yaml"
    RULES.save(path)
    return path


# ------------------------------------------------------------------ silently wrong


def test_the_cache_is_never_shared_by_two_models_behind_one_name(smollm, gemma, tmp_path):
    cache = Cache(tmp_path / "cache.sqlite")
    convs = conversations()
    a = load_llm(f"openai:local@{smollm.base_url}", cache=cache)
    first = Verifier(a, RULES).verify(convs).p_satisfied
    # llama-server takes the batched path: both conversations' 2 rules in one request (4 prompts)
    assert a.backend.yes_no_mode.batched and a.backend.yes_no_mode.template.source == "llama-server /apply-template"
    assert not np.isnan(first).any() and a.stats["requests"] == 1 and a.stats["yes_no_checks"] == 4
    # another model under the same name: its own answers, none of the first model's
    b = load_llm(f"openai:local@{gemma.base_url}", cache=cache)
    second = Verifier(b, RULES, max_unparsed=1.0).verify(convs).p_satisfied
    assert b.stats["cache_hits"] == 0 and b.stats["requests"] >= 1
    assert not np.array_equal(np.nan_to_num(second, nan=-1.0), first)  # Gemma's own verdicts, not SmolLM2's
    assert a.identity["served"] == {"model_file": "SmolLM2-135M-Instruct.Q4_1.gguf"}
    # a replica serving the same file, under any name, shares the first model's entries
    with LlamaServer(embedded_gguf(), "-c", "2048") as replica:
        c = load_llm(f"openai:other-name@{replica.base_url}", cache=cache)
        again = Verifier(c, RULES).verify(convs).p_satisfied
    assert c.stats["requests"] == 0 and c.stats["cache_hits"] == 4
    np.testing.assert_array_equal(again, first)


# llama-server's own grammar forces every answer to open with <think>, and
# post_sampling_probs reports the constrained distribution: a verifier that thinks first
THINK_FIRST = json.dumps({"grammar": 'root ::= "<think>" [a-z ]*', "post_sampling_probs": True})


def test_an_unparsed_verdict_is_neither_pass_nor_fail_and_stops_a_run(smollm, rules_file, tmp_path, capsys):
    data = tmp_path / "responses.jsonl"
    data.write_text("".join(json.dumps({"id": f"r{i}", "prompt": c[0].content, "response": c[1].content}) + "\n" for i, c in enumerate(conversations())))
    spec = f"openai:local@{smollm.base_url}"
    base = ["score", "--rules", str(rules_file), "--data", str(data), "--verifier", spec, "--no-cache", "--extra-body", THINK_FIRST]
    assert main(base) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "4 of 4 rule checks had no readable Yes/No (4 answers began with a reasoning block (<think>)" in err and "enable_thinking" in err
    # allowed through, every verdict is null, left out of the reward, and counted
    out = tmp_path / "scored.jsonl"
    assert main([*base, "--max-unparsed", "1", "--out", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["verdicts"] for r in rows] == [{r.id: None for r in RULES.rules}] * 2
    assert [r["unparsed"] for r in rows] == [2, 2]
    assert summary["unparsed_checks"] == 4 and summary["llm_stats"]["yes_no_unparsed"] == 4
    assert all(rate is None for rate in summary["pass_rates"].values())  # no rule passed on an unread answer (strict JSON: null)


# ------------------------------------------------------------------ context


def long_and_short_answers(tmp_path, short: int = 3):
    """The longest real answer of the shared AlpacaEval file (11,956 characters) among short ones."""
    with gzip.open(ALPACA, "rt", encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    longest = max(rows, key=lambda r: len(r["output_2"]))
    shorts = sorted((r for r in rows if 200 < len(r["output_2"]) < 400), key=lambda r: r["output_2"])[:short]
    path = tmp_path / "answers.jsonl"
    items = [*shorts[:1], longest, *shorts[1:]]
    path.write_text("".join(json.dumps({"id": f"a{i}", "prompt": r["instruction"], "response": r["output_2"]}) + "\n" for i, r in enumerate(items)))
    return path, len(longest["output_2"])


@pytest.fixture(scope="module")
def small_context():
    with LlamaServer(embedded_gguf(), "-c", "1024", "-np", "1") as server:
        yield server


def test_a_long_answer_is_cut_to_the_context_the_server_reports(small_context, rules_file, tmp_path, capsys):
    data, length = long_and_short_answers(tmp_path)
    assert length == 11956
    llm = load_llm(f"openai:local@{small_context.base_url}")
    assert (llm.max_context, llm.concurrency) == (1024, 1)  # read from llama-server's /props
    out = tmp_path / "scored.jsonl"
    assert main(["score", "--rules", str(rules_file), "--data", str(data), "--verifier", f"openai:local@{small_context.base_url}", "--no-cache", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["a0", "a1", "a2", "a3"]
    assert all("error" not in r and None not in r["verdicts"].values() for r in rows)


def test_a_refusal_that_names_the_context_teaches_it_and_the_item_is_refitted(small_context, rules_file, tmp_path, capsys):
    data, _ = long_and_short_answers(tmp_path)
    out = tmp_path / "scored.jsonl"
    # a budget larger than the server's context: the long answer is sent whole, refused with a body that
    # names the context (llama-server's wording), refitted to it in the middle and sent once more
    args = ["score", "--rules", str(rules_file), "--data", str(data), "--verifier", f"openai:local@{small_context.base_url}", "--no-cache",
            "--max-input-tokens", "100000", "--out", str(out), "--json"]
    assert main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [("error" in r) for r in rows] == [False, False, False, False]
    assert all(isinstance(r["reward"], float) for r in rows)
    assert (summary["responses"], summary["failed"]) == (4, 0)
    assert summary["llm_stats"]["context_learned"] == 1 and summary["llm_stats"]["context_retried"] >= 1


# ------------------------------------------------------------------ the server's defaults


def test_overload_lowers_concurrency_and_the_work_completes(tmp_path):
    # four slots sharing one 512-token KV pool: four long generations at once exhaust it
    # ("Context size has been exceeded"); one at a time, each fits
    with LlamaServer(embedded_gguf(), "-c", "512") as server:
        llm = load_llm(f"openai:local@{server.base_url}")
        assert llm.concurrency == 4
        requests = [ChatRequest([{"role": "user", "content": f"Tell a long story about dragon number {i}."}], max_tokens=160) for i in range(4)]
        out = llm.generate(requests)
    assert [c.usage.completion_tokens for c in out] == [160] * 4
    assert llm.stats["overload"] >= 1 and llm.stats["concurrency_min"] < 4
    assert llm.stats["retries"] == 0  # overload is paced by the limit, not spent from the retry budget


# the 135M model rarely writes a rule list on its own; llama-server's JSON-schema constraint
# makes every answer one (a recipe for small models, and what keeps this test about the server)
RULE_LIST = json.dumps({"json_schema": {"type": "array", "minItems": 1, "maxItems": 2, "items": {"type": "string", "pattern": "^The assistant's response should [a-z ]{12,80}[.]$"}}})


@pytest.mark.parametrize("server_args", [(), ("-c", "4096")], ids=["defaults", "c4096"])
def test_extract_score_and_validate_complete_with_defaults(server_args, tmp_path, capsys):
    with LlamaServer(embedded_gguf(), *server_args) as server:
        spec = f"openai:local@{server.base_url}"
        common = ["--cache", str(tmp_path / "cache.sqlite")]
        assert main(["extract", "--data", str(SAMPLE_DATA), "--limit", "2", "--model", spec, "--out", str(tmp_path / "run"), "--extra-body", RULE_LIST,
                     "--no-label-filter", *common]) == 0  # the 135M model judges at chance: the filter would drop at random
        rules = tmp_path / "run" / "rules.yaml"
        meta = json.loads((tmp_path / "run" / "run.json").read_text())
        assert meta["status"] == "complete" and meta["llm_stats"]["model"]["requests"] >= 4
        assert main(["score", "--rules", str(rules), "--data", str(HH), "--limit", "2", "--verifier", spec, *common, "--json", "--out", str(tmp_path / "s.jsonl")]) == 0
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert (summary["responses"], summary["failed"]) == (4, 0)
        assert main(["validate", "--rules", str(rules), "--data", str(HH), "--limit", "3", "--verifier", spec, *common, "--json"]) == 0
        report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert report["pairs"] == 3 and report["refused_responses"] == 0


# ------------------------------------------------------------------ replicas


def test_two_replicas_route_by_prompt_and_a_replica_lost_mid_run_loses_no_row(caplog):
    """Two llama-servers behind one spec; the second is killed after a third of the conversations are judged:
    every conversation is still scored (its requests re-routed to the first), and the loss is logged and counted."""
    import logging

    from autorule.data import Message

    prompts = [f"Question {i}: name a colour that starts with the letter {chr(65 + i)}." for i in range(12)]
    convs = [[Message(role="user", content=p), Message(role="assistant", content=f"Answer {s}: perhaps {chr(65 + i)}mber.")]
             for i, p in enumerate(prompts) for s in range(2)]
    with LlamaServer(embedded_gguf(), "-c", "2048", "-np", "1", threads=1) as one, LlamaServer(embedded_gguf(), "-c", "2048", "-np", "1", threads=1) as two:
        # one conversation per request (its 2 rules), so that the kill meets requests still to come
        llm = load_llm(f"openai:local@{one.base_url},{two.base_url}", cache=False, replica_cooldown=600, batch_prompts=2)
        backend = llm.backend
        first, second = backend.replicas.replicas
        # affinity: both completions of a prompt go to one replica, and the prompts spread over both
        before = Verifier(llm, RULES).verify(convs[:8])
        assert not np.isnan(before.p_satisfied).any() and first.requests > 0 and second.requests > 0
        done = []

        def judged() -> None:
            done.append(1)
            if len(done) == 4:
                two.proc.kill()
                two.proc.wait()

        with caplog.at_level(logging.WARNING, logger="autorule.llm.replicas"):
            verdicts = Verifier(llm, RULES).verify(convs[8:], on_item=judged)
    assert verdicts.errors == {} and not np.isnan(verdicts.p_satisfied).any() and verdicts.p_satisfied.shape == (16, 2)
    assert backend.stats["replica_down"] == 1 and backend.stats["rerouted"] >= 1
    assert any(f"replica {two.base_url} stopped answering" in r.getMessage() for r in caplog.records)
