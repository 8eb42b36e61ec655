"""Stage 025, the label-consistency filter: each candidate verified on its own pair, with a scripted judge."""

import json
import math

import pytest
from fake_llm import ScriptedLLM

from autorule.data import load_pairs
from autorule.extraction.label_filter import NO_VERDICT, PREFERS_REJECTED, TIE, decide
from autorule.extraction.run import ExtractConfig, run_extract

SUN, RAIN = "The assistant's response should mention sunshine explicitly.", "The assistant's response should mention rain explicitly."
POLITE, ONE = "The assistant's response should be polite to the user.", "The assistant's response should answer in one sentence."
CITE = "The assistant's response should cite a source for its claims."
CANDIDATES = {"KEY1": [SUN, RAIN], "KEY2": [POLITE, ONE], "KEY3": [CITE]}
# P(Yes) for (reply, rule): worked out to give each candidate one outcome at margin 0
P_YES = {
    ("CHOSEN1", SUN): 0.9, ("REJECTED1", SUN): 0.2,      # +0.7: kept
    ("CHOSEN1", RAIN): 0.1, ("REJECTED1", RAIN): 0.8,    # -0.7: prefers the rejected reply
    ("CHOSEN2", POLITE): 0.7, ("REJECTED2", POLITE): 0.7,  # 0: a tie
    ("CHOSEN2", ONE): 0.6, ("REJECTED2", ONE): 0.55,     # +0.05: kept at margin 0, a tie at margin 0.1
    ("CHOSEN3", CITE): math.nan, ("REJECTED3", CITE): 0.4,  # no readable verdict: kept, counted
}
PAIRS = [{"prompt": f"KEY{i} question {i}?", "chosen": f"CHOSEN{i} reply.", "rejected": f"REJECTED{i} reply."} for i in (1, 2, 3)]


def p_yes(prefix: str, question: str) -> float:
    reply = next(r for r in ("CHOSEN1", "REJECTED1", "CHOSEN2", "REJECTED2", "CHOSEN3", "REJECTED3") if f"\n{r} reply." in prefix)
    rule = next(t for t in (SUN, RAIN, POLITE, ONE, CITE) if t in question)
    return P_YES[(reply, rule)]


def reply(request) -> str:
    text = request.messages[-1]["content"]
    key = next(k for k in CANDIDATES if k in text)
    if "extract rules" in text:
        return json.dumps(CANDIDATES[key])
    return f"Assistant A is better because of {key}."  # the reasoning (no trace: rules come from this explanation)


def run(tmp_path, llm, **config):
    return run_extract(load_pairs(PAIRS), llm, llm, tmp_path / "run", ExtractConfig(target_rules=25, **config), chunk=1)


def test_decide_keeps_only_candidates_that_favour_the_chosen_reply():
    assert [decide(0.9, 0.2), decide(0.1, 0.8), decide(0.7, 0.7), decide(0.6, 0.55), decide(0.6, 0.55, 0.1), decide(math.nan, 0.4)] == [
        None, PREFERS_REJECTED, TIE, None, TIE, NO_VERDICT]
    assert decide(0.3, 0.45, 0.1) == PREFERS_REJECTED  # -0.15 is past the margin
    with pytest.raises(ValueError, match="negative"):
        decide(0.5, 0.5, -0.1)


def test_the_filter_drops_exactly_the_candidates_that_do_not_prefer_the_chosen_reply(tmp_path):
    llm = ScriptedLLM(p_yes, reply)
    result = run(tmp_path, llm)
    assert sorted(result.rules.texts) == sorted([SUN, ONE, CITE])
    assert result.summary["label_filter"] == {"on": True, "margin": 0.0, "checked": 5, "kept": 3, "dropped": {PREFERS_REJECTED: 1, TIE: 1},
                                              "kept_without_verdict": 1, "checks": 10, "refused_pairs": 0}
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["counts"]["label_filter"] == result.summary["label_filter"]
    assert len(llm.calls) == 10  # 2 replies x 5 candidates
    records = [json.loads(line) for line in (tmp_path / "run" / "025_label_filter.jsonl").read_text().splitlines()]
    assert [r["pair_id"] for r in records] == [p.id for p in load_pairs(PAIRS).pairs]
    assert records[0]["checks"] == [{"text": SUN, "p_chosen": 0.9, "p_rejected": 0.2}, {"text": RAIN, "p_chosen": 0.1, "p_rejected": 0.8}]
    assert records[2]["checks"] == [{"text": CITE, "p_chosen": None, "p_rejected": 0.4}]

    # another margin: decided again from the stored verdicts, nothing asked again
    again = run(tmp_path, llm, label_filter_margin=0.1)
    assert len(llm.calls) == 10
    assert sorted(again.rules.texts) == sorted([SUN, CITE])
    assert again.summary["label_filter"]["dropped"] == {PREFERS_REJECTED: 1, TIE: 2}


def test_no_label_filter_merges_every_candidate_and_asks_nothing(tmp_path):
    llm = ScriptedLLM(p_yes, reply)
    result = run(tmp_path, llm, label_filter=False)
    assert sorted(result.rules.texts) == sorted([SUN, RAIN, POLITE, ONE, CITE])
    assert result.summary["label_filter"] == {"on": False}
    assert llm.calls == [] and not (tmp_path / "run" / "025_label_filter.jsonl").exists()


def test_a_killed_filter_stage_resumes_without_asking_again(tmp_path):
    def dies_on_pair_3(prefix, question):
        if "CHOSEN3" in prefix:
            raise KeyboardInterrupt
        return p_yes(prefix, question)

    first = ScriptedLLM(dies_on_pair_3, reply)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, first)
    partial = tmp_path / "run" / "025_label_filter.jsonl.partial"
    assert len(partial.read_text().splitlines()) == 2  # pairs 1 and 2 (one pair per chunk)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "interrupted"

    second = ScriptedLLM(p_yes, reply)
    result = run(tmp_path, second)
    assert sorted(second.calls) == sorted([(c[0], c[1]) for c in second.calls if "CHOSEN3" in c[0] or "REJECTED3" in c[0]])
    assert len(second.calls) == 2  # pair 3's one candidate on its two replies, nothing else
    assert result.summary["label_filter"]["checked"] == 5 and sorted(result.rules.texts) == sorted([SUN, ONE, CITE])
    assert not partial.exists()


def test_every_candidate_dropped_says_so(tmp_path):
    llm = ScriptedLLM(lambda prefix, question: 0.5, reply)  # every candidate a tie
    with pytest.raises(ValueError, match=r"the label filter dropped every candidate rule \(0 of 5 candidates kept.*--no-label-filter"):
        run(tmp_path, llm)


def test_the_plan_counts_the_filter_checks_and_none_without_it(monkeypatch):
    from autorule.plan import plan_extract

    monkeypatch.setattr("autorule.plan.speed_for", lambda llm, probe: None)  # a scripted model has no speed to measure
    llm = ScriptedLLM(p_yes, reply)
    pairs = load_pairs(PAIRS).pairs
    on = {s.stage: s for s in plan_extract(pairs, llm, llm, ExtractConfig(), probe=False).stages}
    assert on["025 label filter"].calls == 18 and on["025 label filter"].kind == "yes/no checks"  # 3 pairs x 2 replies x 3 candidates
    off = [s.stage for s in plan_extract(pairs, llm, llm, ExtractConfig(label_filter=False), probe=False).stages]
    assert off == ["010 reasoning", "020 rule extraction", "030 merge"]
