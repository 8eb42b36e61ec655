"""`autorule extract` against a real HTTP server (scripted), and on the embedded model."""

import json

import pytest
from conftest import HH

from autorule.testing.mock_server import TOPICS, ScriptedServer, mock_judge
from autorule.cli.app import main
from autorule.data import load_pairs
from autorule.extraction.reason import chosen_label
from autorule.rules import RuleSet


def extract(server, out, *extra, limit=6):
    return main(
        ["extract", "--data", str(HH), "--on-bad-row", "skip", "--limit", str(limit), "--model", f"openai:judge@{server.base_url}",
         "--out", str(out), "--target-rules", "4", "--max-retries", "1", "--timeout", "5", "--no-label-filter", *extra]
        # the mock judge answers no verifier prompt; the label filter has its own tests (test_label_filter.py)
    )


def requests_by_stage(server):
    stages = {"reasoning": 0, "rules": 0, "repair": 0, "merge": 0}
    for body in server.requests:
        text = body["messages"][-1]["content"]
        key = "reasoning" if "impartial judge" in text else "rules" if "extract rules" in text else "repair" if "could not be read" in text else "merge"
        stages[key] += 1
    return stages


@pytest.mark.parametrize("style", ["field", "think"])
def test_extract_end_to_end_with_reasoning_trace(tmp_path, shared_data, style, capsys):
    with ScriptedServer(mock_judge(style)) as server:
        assert extract(server, tmp_path / "run", "--no-cache", "--json") == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    run = tmp_path / "run"
    for name in ("000_pairs.jsonl", "010_reasoning.jsonl", "020_candidates.jsonl", "030_rules.yaml", "rules.yaml", "run.json"):
        assert (run / name).is_file(), name
    assert not list(run.glob("*.partial"))

    reasonings = [json.loads(line) for line in (run / "010_reasoning.jsonl").read_text().splitlines()]
    assert len(reasonings) == 6 and all(r["reasoning"].startswith("TRACE:") for r in reasonings)
    assert all(r["explanation"].endswith("is better.") for r in reasonings)
    # rules come from the reasoning trace (the paper), not the explanation
    candidates = [json.loads(line) for line in (run / "020_candidates.jsonl").read_text().splitlines()]
    assert all(c["source"] == "reasoning" and c["excerpt"].startswith("TRACE:") for c in candidates)

    rules = RuleSet.load(run / "rules.yaml")
    pair_ids = {json.loads(line)["id"] for line in (run / "000_pairs.jsonl").read_text().splitlines()}
    # the mock judge is deterministic: the same 4 merged rules every time, with their support
    assert sorted(rules.texts) == [
        "The assistant's response should satisfy: keep accuracy consistent throughout.",
        "The assistant's response should satisfy: keep brevity consistent throughout.",
        "The assistant's response should satisfy: keep safety consistent throughout.",
        "The assistant's response should satisfy: show brevity in every reply.",
    ]
    assert sorted(r.support for r in rules.rules) == [1, 2, 2, 3]
    assert sum(len(r.candidates) for r in rules.rules) == 12  # every candidate is behind exactly one rule
    for r in rules.rules:
        assert r.text.startswith("The assistant's response should")
        assert set(r.pairs) <= pair_ids and r.support == len(set(r.pairs)) >= 1
        assert all(c.excerpt.startswith("TRACE:") for c in r.candidates)

    meta = json.loads((run / "run.json").read_text())
    assert meta["status"] == "complete"
    assert meta["counts"]["candidates"] == 12 and meta["counts"]["rules"] == len(rules)
    assert meta["counts"]["tokens"]["010_reasoning"]["prompt"] > 0
    assert meta["fingerprint"]["model"].startswith("openai:judge@")
    assert summary["rules"] == len(rules) and summary["pairs"] == 6


def test_no_trace_falls_back_to_explanation_and_says_so(tmp_path, shared_data, capsys):
    with ScriptedServer(mock_judge("none")) as server:
        assert extract(server, tmp_path / "run", "--no-cache") == 0
    assert capsys.readouterr().err.count("no reasoning trace") == 1
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["counts"]["reasoning_without_trace"] == 6
    candidates = [json.loads(line) for line in (tmp_path / "run" / "020_candidates.jsonl").read_text().splitlines()]
    assert all(c["source"] == "explanation" and c["excerpt"].startswith("EXPLANATION") for c in candidates)


def test_parse_failures_and_empty_outputs_are_counted(tmp_path, shared_data):
    def rules_reply(justification):
        topic = next(t for t in TOPICS if t in justification)
        if topic in ("safety", "accuracy"):
            return {"content": "I think the answer was nice."}  # no list: repaired by the repair prompt
        return {"content": json.dumps([f"The assistant's response should show {topic} in every reply."])}

    def reasoning_reply(text, trace):
        return {"content": ""} if "brevity" in trace else {"content": "ok", "reasoning_content": trace}

    def repair_fails(messages, body):
        if "could not be read" in messages[-1]["content"]:
            return {"content": "still not a list"}
        return mock_judge(rules_reply=rules_reply, reasoning_reply=reasoning_reply)(messages, body)

    with ScriptedServer(repair_fails) as server:
        assert extract(server, tmp_path / "run", "--no-cache", limit=12) == 0
    stages = requests_by_stage(server)
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    candidates = [json.loads(line) for line in (tmp_path / "run" / "020_candidates.jsonl").read_text().splitlines()]
    failed = [c for c in candidates if c["failure"]]
    assert len(candidates) == 12
    assert stages["repair"] == sum(1 for c in candidates if c["repaired"]) > 0  # one repair try per failed parse
    assert meta["counts"]["failures"] == {k: sum(1 for c in failed if c["failure"] == k) for k in {c["failure"] for c in failed}}
    assert sum(meta["counts"]["failures"].values()) == len(failed) > 0
    assert {c["failure"] for c in failed} <= {"empty reasoning output", "unparseable rule list after repair"}


def test_resume_after_a_failed_run_repeats_no_finished_call(tmp_path, shared_data):
    # 10 calls succeed, then the server fails for longer than the retry budget
    faults = [None] * 10 + ["500"] * 2  # --max-retries 1: two faults exhaust the budget
    with ScriptedServer(mock_judge(), faults=faults) as server:
        cache = ["--cache", str(tmp_path / "cache.sqlite"), "--concurrency", "1"]
        assert extract(server, tmp_path / "run", *cache, limit=8) == 1
        meta = json.loads((tmp_path / "run" / "run.json").read_text())
        assert meta["status"] == "failed" and "gave up" in meta["error"]
        assert (tmp_path / "run" / "010_reasoning.jsonl").is_file()  # stage 010 finished and was kept
        assert extract(server, tmp_path / "run", *cache, limit=8) == 0
        resumed = json.loads((tmp_path / "run" / "run.json").read_text())
        # both attempts' statistics are kept, and the totals include the failed attempt's retry
        assert [a["status"] for a in resumed["attempts"]] == ["failed", "complete"]
        assert resumed["attempts"][0]["llm_stats"]["model"]["retries"] == 1
        assert resumed["llm_stats"]["model"]["retries"] == 1 and resumed["llm_stats"]["model"]["fault_500"] == 2
        answered = [json.dumps(b["messages"]) for b, f in zip(server.requests, faults + [None] * 1000) if f is None]
    assert len(answered) == len(set(answered)), "a finished call was repeated"
    with ScriptedServer(mock_judge()) as clean:
        assert extract(clean, tmp_path / "clean", "--no-cache", limit=8) == 0
    assert len(answered) == len(clean.requests)
    assert (tmp_path / "run" / "rules.yaml").read_text().split("rules:")[1] == (tmp_path / "clean" / "rules.yaml").read_text().split("rules:")[1]


def test_resume_without_cache_uses_the_stage_files(tmp_path, shared_data):
    faults = [None] * 8 + ["500"] * 2  # stage 010 done (6 calls), 020 two calls done
    with ScriptedServer(mock_judge(), faults=faults) as server:
        args = ["--no-cache", "--concurrency", "1"]
        assert extract(server, tmp_path / "run", *args, limit=6) == 1
        assert (tmp_path / "run" / "020_candidates.jsonl.partial").is_file()
        first = len(server.requests)
        assert extract(server, tmp_path / "run", *args, limit=6) == 0
    stages_second = requests_by_stage(type("S", (), {"requests": server.requests[first:]})())
    assert stages_second["reasoning"] == 0 and stages_second["rules"] == 6 - 2


def test_a_different_run_in_the_same_directory_is_refused(tmp_path, shared_data, capsys):
    with ScriptedServer(mock_judge()) as server:
        assert extract(server, tmp_path / "run", "--no-cache") == 0
        assert extract(server, tmp_path / "run", "--no-cache", "--seed", "7") == 2
        assert "holds a different run" in capsys.readouterr().err
        assert extract(server, tmp_path / "run", "--no-cache", "--seed", "7", "--overwrite") == 0


def test_ab_order_is_random_per_pair_and_reproducible(shared_data):
    pairs = load_pairs(HH, on_bad_row="skip", limit=200).pairs
    labels = [chosen_label(p, 0) for p in pairs]
    assert 70 < labels.count("A") < 130
    assert labels == [chosen_label(p, 0) for p in pairs]
    assert labels != [chosen_label(p, 1) for p in pairs]


@pytest.mark.slow
def test_extract_on_the_embedded_model(tmp_path, shared_data, capsys):
    code = main(
        ["extract", "--data", str(HH), "--on-bad-row", "skip", "--limit", "3", "--model", "embedded", "--out", str(tmp_path / "run"),
         "--reasoning-tokens", "96", "--rules-tokens", "64", "--merge-tokens", "64", "--target-rules", "3", "--no-cache", "--json",
         "--no-label-filter"]  # the 135M model's verdicts are near chance: on 3 pairs the filter may leave nothing
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    rules = RuleSet.load(tmp_path / "run" / "rules.yaml")
    assert summary["pairs"] == 3 and 1 <= len(rules) <= 3
    assert all(r.support >= 1 and r.candidates and r.pairs for r in rules.rules)


def test_sigkill_mid_stage_then_rerun_loses_nothing_and_repeats_nothing(tmp_path, shared_data):
    import os
    import signal
    import subprocess
    import sys
    import time

    def slow(messages, body):
        time.sleep(0.15)
        return mock_judge()(messages, body)

    run = tmp_path / "run"
    with ScriptedServer(slow) as server:
        args = ["extract", "--data", str(HH), "--on-bad-row", "skip", "--limit", "10", "--model", f"openai:judge@{server.base_url}",
                "--out", str(run), "--target-rules", "4", "--concurrency", "1", "--cache", str(tmp_path / "cache.sqlite"), "--no-label-filter"]
        proc = subprocess.Popen([sys.executable, "-m", "autorule", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
        partial = run / "010_reasoning.jsonl.partial"
        deadline = time.time() + 120
        while time.time() < deadline and not (partial.is_file() and len(partial.read_text().splitlines()) >= 4):
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        done_before = len(partial.read_text().splitlines())
        assert 4 <= done_before < 10 and not (run / "010_reasoning.jsonl").exists()
        killed_at = len(server.requests)
        assert main(args) == 0
        bodies = [json.dumps(b["messages"]) for b in server.requests]
    assert (run / "rules.yaml").is_file() and json.loads((run / "run.json").read_text())["status"] == "complete"
    # every finished call was kept: at most the one call in flight at the kill is asked again
    repeated = len(bodies) - len(set(bodies))
    assert repeated <= 1
    assert len(server.requests) - killed_at >= 10 - done_before - 1


@pytest.mark.parametrize(
    "text, expected",
    [
        ('["The assistant\'s response should be polite.", "The assistant\'s response should cite sources."]', 2),
        ('Here you go:\n```json\n["The assistant\'s response should be polite."]\n```', 1),
        ("1. The response should be polite.\n2) The response should cite sources.\n- The response should stay on topic.", 3),
        ('["The assistant\'s response should be polite.", "The assistant\'s response sho', 1),  # cut off mid-array
        ('["The assistant\'s response should", "ok"]', 0),  # a bare stem and a fragment are not rules
        ("I think the first answer was nicer.", 0),
        ("", 0),
    ],
)
def test_rule_list_parsing(text, expected):
    from autorule.extraction.candidates import parse_rule_list

    assert len(parse_rule_list(text)) == expected


def test_too_long_off_form_and_echoed_items_are_dropped_with_reasons_and_no_repair(tmp_path, shared_data):
    long_rule = "The assistant's response should " + " ".join(["explain"] * 85) + "."
    echo = "The assistant's response should be objective and checkable: someone reading only the conversation could decide."
    off_form = "The conversation is more focused on the user's question than on anything else."
    good = "The assistant's response should name at least one concrete next step."

    def rules_reply(justification):
        # pair-dependent answers, by the topic in the pair's own (scripted) trace
        if "brevity" in justification:
            return {"content": json.dumps([long_rule])}  # a valid list whose only item is too long
        return {"content": json.dumps([off_form, echo, good])}

    with ScriptedServer(mock_judge(rules_reply=rules_reply)) as server:
        assert extract(server, tmp_path / "run", "--no-cache", limit=6) == 0
    candidates = [json.loads(line) for line in (tmp_path / "run" / "020_candidates.jsonl").read_text().splitlines()]
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert requests_by_stage(server)["repair"] == 0  # a list was there: a repair prompt cannot help
    too_long = [c for c in candidates if c["failure"]]
    assert too_long and all(c["failure"] == "rule longer than 80 words" and c["dropped"] == {"rule longer than 80 words": 1} for c in too_long)
    kept = [c for c in candidates if not c["failure"]]
    assert kept and all(c["rules"] == [good] for c in kept)
    assert all(c["dropped"] == {"rule not in the required form": 1, "rule repeats the prompt's instructions": 1} for c in kept)
    assert meta["counts"]["items_dropped"] == {
        "rule longer than 80 words": len(too_long), "rule not in the required form": len(kept), "rule repeats the prompt's instructions": len(kept),
    }
    assert meta["counts"]["failures"] == {"rule longer than 80 words": len(too_long)}


def test_near_duplicates_merge_even_below_the_target_count():
    from autorule.extraction.merge import candidate_refs, load_embedder, merge_rules

    from fake_llm import ScriptedLLM

    texts = [
        "The assistant's response should provide a clear and concise description of the weather.",
        "The assistant's response should provide a more detailed description of the weather.",
        "The assistant's response should provide more specific and detailed information about the weather.",
        "The assistant's response should be concise.",
        "The assistant's response should be detailed.",  # 0.90 to "concise": opposites stay apart
    ]
    units = [u for i, t in enumerate(texts) for u in candidate_refs(f"p{i}", [t], "")]
    llm = ScriptedLLM(lambda p, q: 0.5)
    rules, log = merge_rules(units, llm, load_embedder(), target=25)
    assert sorted(r.text for r in rules) == sorted([texts[0], texts[3], texts[4]])
    weather = next(r for r in rules if "weather" in r.text)
    assert sorted(weather.pairs) == ["p0", "p1", "p2"] and log.near_duplicates_merged == 2


def test_merge_clustering_past_the_bucket_size_keeps_every_rule_once(monkeypatch):
    """Past BUCKET rules, k-means buckets first: every rule lands in one cluster, near rules stay together."""
    import numpy as np

    from autorule.extraction import merge

    monkeypatch.setattr(merge, "BUCKET", 40)
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(10, 16))
    # 10 tight groups of 12 rules each: 120 rules, three times the bucket size
    vectors = np.repeat(centres, 12, axis=0) + 0.01 * rng.normal(size=(120, 16))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    groups = merge.cluster(vectors, 10, max_size=12)
    assert sorted(i for g in groups for i in g) == list(range(120))
    assert max(len(g) for g in groups) <= 12
    # each tight group of 12 stays whole: its members share one cluster
    homes = {frozenset(g) for g in groups}
    assert all(frozenset(range(12 * c, 12 * c + 12)) in homes for c in range(10))
    # rules that are all alike cannot be split by k-means: they are cut in order, never lost
    same = np.tile(vectors[:1], (100, 1))
    assert sorted(i for g in merge.cluster(same, 5, max_size=40) for i in g) == list(range(100))


def test_fragments_are_dropped_and_counted_and_other_lint_flags_kept_on_the_rules(tmp_path, shared_data):
    fragment = "The assistant's response should be clear and"
    garbled = "The assistant's response should be JSON JSON value"
    vague = "The assistant's response should be helpful and appropriate."
    good = "The assistant's response should name at least one concrete next step."

    with ScriptedServer(mock_judge(rules_reply=lambda justification: {"content": json.dumps([fragment, garbled, vague, good])})) as server:
        assert extract(server, tmp_path / "run", "--no-cache", limit=4) == 0
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    candidates = [json.loads(line) for line in (tmp_path / "run" / "020_candidates.jsonl").read_text().splitlines()]
    assert [c["dropped"] for c in candidates] == [{"fragment (unfinished sentence)": 2}] * 4
    assert meta["counts"]["items_dropped"] == {"fragment (unfinished sentence)": 8}
    rules = RuleSet.load(tmp_path / "run" / "rules.yaml")
    assert sorted(r.text for r in rules.rules) == sorted([vague, good])
    assert {r.text: [f.code for f in r.lint] for r in rules.rules} == {vague: ["vague"], good: []}
    assert meta["counts"]["lint"] == {"fragments_dropped": [], "flags": {"vague": 1}, "code_checks": 0}


def test_extraction_gives_rules_a_program_decides_their_code_check(tmp_path, shared_data):
    short = "The assistant's response should be under 60 words."
    good = "The assistant's response should name at least one concrete next step."

    with ScriptedServer(mock_judge(rules_reply=lambda justification: {"content": json.dumps([short, good])})) as server:
        assert extract(server, tmp_path / "run", "--no-cache", limit=4) == 0
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    rules = {r.text: r.check for r in RuleSet.load(tmp_path / "run" / "rules.yaml").rules}
    assert rules[good] is None
    assert (rules[short].checker, rules[short].params) == ("length_constraints:number_words", {"num_words": 60, "relation": "less than"})
    assert meta["counts"]["lint"]["code_checks"] == 1
