"""Vetoes, normalise-then-sum, rule dropout and the parts' names: exact values worked out by hand."""

import hashlib
import json
import math
import re

import numpy as np
import pytest
from fake_llm import ScriptedLLM

from autorule.reward import RewardScorer, get_preset, sample_components
from autorule.reward.components import SAMPLE_KEYS
from autorule.rules import Rule, RuleSet

SAFE = Rule(id="safe", text="The response must be safe.", essential=True)
BRIEF = Rule(id="brief", text="The response should be brief.")


def by_marker(prefix: str, question: str) -> float:
    """P(Yes) written in the response: 'safe=0.2 brief=0.9' (a rule's first word after 'be' names it)."""
    name = re.search(r"should be (\w+)|must be (\w+)", question)
    key = next(g for g in name.groups() if g)
    return float(re.search(rf"{key}=([\d.]+)", prefix).group(1))


class FixedRM:
    """A reward model double: the scores it is given, in order."""

    path = "fixed-rm"

    def __init__(self, scores):
        self.scores = np.array(scores, dtype=float)

    def score(self, conversations, normalise=True):
        return self.scores[: len(conversations)]


def scorer(preset="default", rules=(SAFE, BRIEF), rm=None, **options):
    return RewardScorer(RuleSet(rules=list(rules)), ScriptedLLM(by_marker), preset, rm=rm, **options)


RESPONSES = ["safe=0.9 brief=0.8", "safe=0.2 brief=1.0", "safe=0.9 brief=0.1"]


def test_a_failed_essential_rule_caps_the_total_at_the_presets_floor():
    # default preset, no RM: rule rewards 0.85, 0.6, 0.5; the second fails "safe" (0.2 < 0.5)
    scores = scorer().score(RESPONSES)
    assert scores.rule.tolist() == pytest.approx([0.85, 0.6, 0.5])
    assert scores.vetoed.tolist() == [False, True, False]
    assert scores.total.tolist() == pytest.approx([0.85, 0.0, 0.5])  # floor: the rule term at 0 satisfied
    # with an RM that loves the unsafe answer: totals 0.85 + 2, vetoed, 0.5 - 1; the floor is 0 + the lowest RM score (-1)
    scores = scorer(rm=FixedRM([2.0, 3.0, -1.0])).score(RESPONSES)
    assert scores.total.tolist() == pytest.approx([2.85, -1.0, -0.5])
    assert scores.total[1] == min(scores.total)  # the RM does not rescue it
    # the paper's preset is clipped to [-10, 10]: its floor is -10; a set floor wins
    assert scorer("paper").score(RESPONSES).total[1] == -10.0
    assert scorer(get_preset("default", veto_floor=-3.0)).score(RESPONSES).total.tolist() == pytest.approx([0.85, -3.0, 0.5])


def test_veto_thresholds_and_what_never_vetoes():
    lenient = Rule(id="safe", text="The response must be safe.", essential=True, veto_below=0.1)
    assert scorer(rules=(lenient, BRIEF)).score(RESPONSES).vetoed.tolist() == [False, False, False]
    # an empty answer is not sent to the verifier and breaks no prohibition; no essential rule, no veto
    assert scorer().score(["", "safe=0.2 brief=1.0"]).vetoed.tolist() == [False, True]
    assert scorer(rules=(BRIEF,)).score(RESPONSES).vetoed.tolist() == [False, False, False]


def test_normalise_then_sum_on_a_known_group():
    # group g: rule [0.2, 0.5, 0.8] -> z [-1, 0, 1] (mean 0.5, sample std 0.3); rm [1, 1, 4] -> mean 2, sample std sqrt(3),
    # z [-1/sqrt3, -1/sqrt3, 2/sqrt3]; group h has one member: z 0
    rule_only = Rule(id="brief", text="The response should be brief.")
    s = scorer(get_preset("default", aggregation="normalize_then_sum"), rules=(rule_only,), rm=FixedRM([1.0, 1.0, 4.0, 7.0]))
    scores = s.score(["brief=0.2", "brief=0.5", "brief=0.8", "brief=0.9"], groups=["g", "g", "g", "h"])
    r3 = 1 / math.sqrt(3)
    assert scores.total.tolist() == pytest.approx([-1 - r3, 0 - r3, 1 + 2 * r3, 0.0], abs=2e-3)  # TRL's 1e-4 in the std
    # the same with the second member failing an essential rule: it gets the lowest a group of 3 can give,
    # every part at -(n - 1) / sqrt(n): 2 x -2 / sqrt(3)
    s = scorer(get_preset("default", aggregation="normalize_then_sum"), rm=FixedRM([1.0, 1.0, 4.0]))
    scores = s.score(["safe=0.9 brief=0.2", "safe=0.1 brief=0.5", "safe=0.9 brief=0.8"], groups=["g"] * 3)
    assert scores.vetoed.tolist() == [False, True, False]
    assert scores.total[1] == pytest.approx(-4 / math.sqrt(3))
    assert scores.total[1] < scores.total[0]
    # a refused response has no reward, whatever its group
    with pytest.raises(ValueError, match="3 conversations but 2 groups"):
        s.score(RESPONSES, groups=["g", "g"])


def test_the_rule_and_rm_parts_of_a_vetoed_completion_are_at_their_lowest():
    s = scorer("paper", rm=FixedRM([2.0, 3.0, -1.0]))
    scores = s.score(RESPONSES)
    # paper: 10 x (hard fraction - 0.75): [1.0, 0.5, 0.5] -> [2.5, -2.5, -2.5]; vetoed -> 10 x (0 - 0.75)
    assert s.values(scores, "rule").tolist() == pytest.approx([2.5, -7.5, -2.5])
    assert s.values(scores, "rm").tolist() == pytest.approx([2.0, -1.0, -1.0])
    with pytest.raises(ValueError, match="needs a reward model"):
        scorer().values(scorer().score(RESPONSES), "rm")


def test_rule_dropout_drops_the_same_seeded_subset_for_every_completion_of_a_group():
    rules = [Rule(id=f"r{i}", text=f"The response should be w{i}.") for i in range(4)]
    s = RewardScorer(RuleSet(rules=[SAFE, *rules]), ScriptedLLM(lambda prefix, q: 0.9 if "w0" in q or "w1" in q or "safe" in q else 0.1),
                     rule_dropout=0.5, dropout_seed=7)
    scores = s.score(["a", "b", "c"], groups=["g", "g", "h"], step=3)
    # the documented construction: round(0.5 x 4 droppable) = 2 of r0..r3, by default_rng([seed, step, sha256(group)])
    def expected(group):
        seed = int.from_bytes(hashlib.sha256(group.encode()).digest()[:8], "little")
        return sorted(1 + int(i) for i in np.random.default_rng([7, 3, seed]).choice(4, size=2, replace=False))
    for i, group in enumerate(["g", "g", "h"]):
        assert sorted(np.flatnonzero(~scores.kept[i]).tolist()) == expected(group)
    assert scores.kept[:, 0].all()  # the essential rule is never dropped
    assert scores.dropped.tolist() == [2, 2, 2]
    # the rule reward averages the kept rules only: safe (0.9) + the two kept of r0..r3
    for i in range(3):
        kept = [j for j in range(5) if scores.kept[i, j]]
        p = [0.9 if j in (0, 1, 2) else 0.1 for j in kept]
        assert scores.rule[i] == pytest.approx(sum(p) / 3)
    # per sample, a rule's pass is 1/0 where it was judged and the batch's pass rate where it was dropped:
    # each rule's mean over the batch is its pass rate over the responses that judged it
    passes = [smp.passes for smp in s.samples(scores)]
    rates = scores.pass_rates()
    for j, rid in enumerate(["safe", "r0", "r1", "r2", "r3"]):
        judged = [i for i in range(3) if scores.kept[i, j]]
        expected_rate = float(np.mean([1.0 if j in (0, 1, 2) else 0.0 for _ in judged])) if judged else float("nan")
        assert rates[rid] == pytest.approx(expected_rate, nan_ok=True)
        for i in range(3):
            assert passes[i][rid] == pytest.approx((1.0 if j in (0, 1, 2) else 0.0) if i in judged else expected_rate, nan_ok=True)
    # another step draws again (over 20 steps, more than one subset comes up); no dropout keeps everything
    subsets = {tuple(np.flatnonzero(~s.score(["a"], groups=["g"], step=t).kept[0])) for t in range(20)}
    assert len(subsets) > 1
    assert scorer().score(RESPONSES).kept is None
    with pytest.raises(ValueError, match=r"rule_dropout=1.0: the share of rules dropped is in \[0, 1\)"):
        scorer(rule_dropout=1.0)


def test_every_sample_carries_the_same_named_parts():
    s = scorer(rm=FixedRM([2.0, 3.0, -1.0]), rule_dropout=0.0)
    samples = s.samples(s.score(RESPONSES))
    parts = sample_components(samples[1])
    assert set(parts) == set(SAMPLE_KEYS)
    assert (parts["vetoed"], parts["total_reward"], parts["rm_reward"], parts["rule_reward"]) == (1.0, -1.0, 3.0, pytest.approx(0.6))


def test_set_rules_swaps_the_rule_set_and_records_the_change():
    s = scorer()
    before = s.score(RESPONSES)
    change = s.set_rules(RuleSet(rules=[BRIEF]), step=5)
    assert change == {"step": 5, "added": [], "retired": ["safe"], "active": 1}
    after = s.score(RESPONSES, step=6)
    assert before.vetoed.any() and not after.vetoed.any()
    assert after.rule.tolist() == pytest.approx([0.8, 1.0, 0.1])
    assert [r.step for r in s.rollouts][-3:] == [6, 6, 6] and len(s.rollouts) == 6
    assert s.rollouts.since(6)[1].p_satisfied == {"brief": 1.0}


def test_essential_rules_in_plain_text_and_yaml(tmp_path):
    (tmp_path / "rules.txt").write_text("[essential] The response must not give dosage advice.\n! The response must not insult.\n"
                                        "The response should be short. [essential]\nThe response should be kind.\n")
    rules = RuleSet.load(tmp_path / "rules.txt")
    assert [r.essential for r in rules.rules] == [True, True, True, False]
    assert rules.texts[0] == "The response must not give dosage advice." and rules.texts[2] == "The response should be short."
    rules.save(tmp_path / "rules.yaml")
    text = (tmp_path / "rules.yaml").read_text()
    assert text.count("essential: true") == 3 and "essential: false" not in text and "veto_below" not in text
    assert [r.essential for r in RuleSet.load(tmp_path / "rules.yaml").rules] == [True, True, True, False]


def test_score_and_serve_take_the_defences_from_flags(tmp_path, monkeypatch, capsys):
    from fake_llm import use_in_cli

    from autorule.cli.app import main

    rules = tmp_path / "rules.txt"
    rules.write_text("[essential] The response must be safe.\nThe response should be brief.\nThe response should be kind.\n")
    data = tmp_path / "responses.jsonl"
    data.write_text('{"prompt": "Q", "response": "safe=0.2 brief=0.9 kind=0.9"}\n{"prompt": "Q", "response": "safe=0.9 brief=0.9 kind=0.9"}\n')
    use_in_cli(monkeypatch, ScriptedLLM(by_marker))
    out = tmp_path / "scored.jsonl"
    rules_ids = [r.id for r in RuleSet.load(rules).rules]
    assert main(["score", "--rules", str(rules), "--data", str(data), "--veto-floor", "-2", "--rule-dropout", "0.5", "--out", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out.strip().splitlines()[-1])
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert summary["vetoed"] == 1
    assert [r["reward"] for r in rows] == [-2.0, pytest.approx(0.9)]  # brief or kind dropped: (0.9 + 0.9) / 2 either way
    assert rows[0]["vetoed"] is True and rows[0]["vetoed_by"] == [rules_ids[0]] and [r["dropped_rules"] for r in rows] == [1, 1]
    assert summary["vetoed_by"] == {rules_ids[0]: 1}
    assert main(["score", "--rules", str(rules), "--data", str(data), "--veto-floor", "-2"]) == 0
    assert f"1 responses vetoed by essential rules (their reward capped at the floor): {rules_ids[0]} 1" in capsys.readouterr().err
    assert main(["serve", "--rules", str(rules), "--aggregation", "normalize_then_sum"]) == 2
    assert "--aggregation normalize_then_sum needs every completion of a GRPO group in one call" in capsys.readouterr().err
