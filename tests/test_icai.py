"""The ICAI protocol in validation: a no-rules judge, the flipped-label control, per-rule perf,
mean ± s.d. over seeds — on a hand-worked example with a scripted verifier."""

import json
import math
import re

import numpy as np
import pytest
from fake_llm import ScriptedLLM, use_in_cli

import autorule
from autorule.cli.app import main
from autorule.data import Message, PreferencePair
from autorule.data.pairs import chosen_first
from autorule.rules import Rule, RuleSet
from autorule.validation_baselines import (
    NO_RULES_QUESTION,
    NoRulesJudge,
    flipped,
    mean_sd,
    pick_counts,
    plan_stage,
)

GOOD = "The assistant's response should be good."
SHORT = "The assistant's response should be short."

# (id, chosen, rejected). Rule GOOD holds where a reply says "good"; rule SHORT holds everywhere.
PAIRS = [
    ("p1", "a good answer", "a bad answer"),  # GOOD: agree
    ("p2", "good", "also good"),  # GOOD: both pass, no verdict
    ("p3", "bad", "good"),  # GOOD: disagree
    ("p4", "good one", "meh"),  # GOOD: agree
    ("p5", "fine", "okay"),  # GOOD: both fail, no verdict
]


def pairs():
    return [PreferencePair(id=i, prompt=[Message(role="user", content=f"Question {i}?")], chosen=c, rejected=r) for i, c, r in PAIRS]


def section(prefix: str, tag: str) -> str:
    return re.search(rf'<{tag} id="\w+">\n(.*?)\n</{tag} id="\w+">', prefix, re.DOTALL).group(1)


def p_yes(prefix: str, question: str) -> float:
    if question == NO_RULES_QUESTION:
        # the no-rules judge: the reply saying "good" wins; both good -> a position bias for A; neither -> exactly even
        a, b = ("good" in section(prefix, "assistant-a")), ("good" in section(prefix, "assistant-b"))
        return 0.9 if a and not b else 0.1 if b and not a else 0.7 if a else 0.5
    response = section(prefix, "assistant-final-response")
    if "should be good" in question:
        return 0.9 if "good" in response else 0.1
    return 0.9  # SHORT: always satisfied


def test_the_order_the_hand_worked_figures_rest_on():
    # the seeded A/B coin, written down: p2 (both replies good) is the only pair whose order matters to the judge
    assert [chosen_first(i, 0) for i, _, _ in PAIRS] == [True, False, True, False, True]
    assert [chosen_first(i, 1) for i, _, _ in PAIRS] == [True, True, True, False, True]


def test_icai_protocol_on_a_hand_worked_example():
    llm = ScriptedLLM(p_yes)
    result = autorule.validate([GOOD, SHORT], pairs(), llm, folds=2, seeds=2, cache=False)
    report = result.report
    good, short = report["rules"]
    # GOOD: agree on p1, p4; disagree on p3; no verdict on p2, p5 -> relevance 3/5, acc 2/3, perf (2/3 - 1/2) * 3/5 * 2 = 1/5
    assert good["relevance"] == pytest.approx(0.6) and good["agreement"] == pytest.approx(2 / 3) and good["perf"] == pytest.approx(0.2)
    # SHORT: never a verdict -> relevance 0, acc undefined, perf 0 (as ICAI)
    assert short["relevance"] == 0.0 and short["agreement"] is None and short["perf"] == 0.0
    icai = report["icai"]
    assert icai["seeds"] == [0, 1] and icai["no_rules_judge"] is True
    s0, s1 = icai["per_seed"]
    # rule set (uniform weights; SHORT adds the same to both sides): right p1, p4; wrong p3; ties p2, p5 -- on every seed
    assert s0["rule_set"] == s1["rule_set"] and (s0["rule_set"]["correct"], s0["rule_set"]["wrong"], s0["rule_set"]["ties"]) == (2, 1, 2)
    assert s0["rule_set"]["accuracy"] == pytest.approx(0.4)
    # flipped labels: right and wrong swap, ties stay -> 1/5 (2/5 + 1/5 = 1 - 2/5 ties); without ties 1/3
    assert (s0["rule_set_flipped"]["correct"], s0["rule_set_flipped"]["wrong"], s0["rule_set_flipped"]["ties"]) == (1, 2, 2)
    assert s0["rule_set_flipped"]["accuracy"] == pytest.approx(0.2) and s0["rule_set_flipped"]["accuracy_without_ties"] == pytest.approx(1 / 3)
    # no-rules judge, seed 0: p1, p4 right; p3 wrong; p2 shown rejected-as-A -> A picked -> wrong; p5 P = 0.5 -> tie
    n0 = s0["no_rules"]
    assert (n0["correct"], n0["wrong"], n0["ties"], n0["unread"], n0["refused"]) == (2, 2, 1, 0, 0)
    assert n0["accuracy"] == pytest.approx(0.4) and n0["accuracy_without_ties"] == pytest.approx(0.5)
    assert n0["flipped"]["accuracy"] == pytest.approx(0.4)
    # A picked on p1 (A good), p2 (bias): 2 of the 4 decided pairs
    assert n0["a_picked"] == pytest.approx(0.5)
    # seed 1: p2 shown chosen-as-A -> right: 3 right, 1 wrong, 1 tie
    n1 = s1["no_rules"]
    assert (n1["correct"], n1["wrong"], n1["ties"]) == (3, 1, 1) and n1["accuracy"] == pytest.approx(0.6)
    assert n1["flipped"]["accuracy"] == pytest.approx(0.2)
    summary = icai["summary"]
    # mean ± sample s.d. over the two seeds: (0.4, 0.6) -> 0.5 ± 0.2 / sqrt(2); flipped (0.4, 0.2) -> 0.3 ± 0.141421
    assert summary["no_rules"]["mean"] == pytest.approx(0.5) and summary["no_rules"]["sd"] == pytest.approx(0.141421)
    assert summary["no_rules_flipped"]["mean"] == pytest.approx(0.3) and summary["no_rules_flipped"]["sd"] == pytest.approx(0.141421)
    assert summary["rule_set"] == {"mean": pytest.approx(0.4), "sd": 0.0, "values": [pytest.approx(0.4)] * 2}
    assert summary["rule_set_flipped"]["mean"] == pytest.approx(0.2) and summary["rule_set_flipped"]["sd"] == 0.0
    # one judge check per pair per seed, on top of 5 pairs x 2 sides x 2 rules
    assert sum(1 for _, q in llm.calls if q == NO_RULES_QUESTION) == 10
    assert len(llm.calls) == 10 + 20


def test_no_baseline_asks_the_judge_nothing():
    llm = ScriptedLLM(p_yes)
    report = autorule.validate([GOOD], pairs(), llm, folds=2, baseline=False, cache=False).report
    assert not any(q == NO_RULES_QUESTION for _, q in llm.calls) and len(llm.calls) == 10
    assert report["icai"]["no_rules_judge"] is False and "no_rules" not in report["icai"]["summary"]
    assert report["icai"]["summary"]["rule_set_flipped"]["mean"] == pytest.approx(0.2)


def test_the_judge_prompt_holds_both_replies_in_the_coins_order_and_a_refusal_is_counted():
    pair = pairs()[0]
    judge = NoRulesJudge(ScriptedLLM(p_yes))
    assert section(judge.prefix(pair, True), "assistant-a") == "a good answer"
    assert section(judge.prefix(pair, False), "assistant-a") == "a bad answer"
    assert "<user>\nQuestion p1?\n</user>" in judge.prefix(pair, True)

    class Refusing(ScriptedLLM):
        def _score_yes_no_batch(self, items, on_item=None, errors=None, keys=None):
            errors[1] = "400: too long"
            return [[0.9], [float("nan")]]

    run = Refusing(p_yes)
    out = NoRulesJudge(run).judge(pairs()[:2], seed=0).to_dict()
    # p1 shown chosen-as-A, P(A) = 0.9 -> right; p2 refused -> no pick, counted as not right
    assert (out["correct"], out["wrong"], out["unread"], out["refused"], out["accuracy"]) == (1, 0, 1, 1, 0.5)


def test_pure_figures():
    assert pick_counts(np.array([0.6, 0.4, 0.5])) == {"accuracy": 1 / 3, "accuracy_without_ties": 0.5, "correct": 1, "wrong": 1, "ties": 1, "unread": 0}
    assert flipped({"correct": 3, "wrong": 1, "ties": 0}) == {"accuracy": 0.25, "accuracy_without_ties": 0.25, "correct": 1, "wrong": 3, "ties": 0}
    assert mean_sd([0.2, 0.4, 0.6])["sd"] == pytest.approx(0.2)  # sample s.d.: sqrt((0.04 + 0 + 0.04) / 2)
    assert math.isnan(mean_sd([0.5, float("nan")])["mean"])


def test_the_plan_counts_one_judge_check_per_pair_per_seed():
    stage = plan_stage(NoRulesJudge(ScriptedLLM(p_yes)), None, iter(pairs()), seeds=3)
    assert (stage.stage, stage.calls, stage.cached) == ("no-rules judge", 15, 0) and math.isnan(stage.seconds)


def test_validate_cli_prints_the_rule_set_beside_the_no_rules_judge(tmp_path, monkeypatch, capsys):
    use_in_cli(monkeypatch, ScriptedLLM(p_yes))
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Question {i}?", "chosen": c, "rejected": r}) + "\n" for i, c, r in PAIRS))
    rules = tmp_path / "rules.yaml"
    RuleSet(rules=[Rule(id="good", text=GOOD)]).save(rules)
    assert main(["validate", "--rules", str(rules), "--data", str(data), "--no-cache", "--folds", "2", "--seeds", "2"]) == 0
    out = " ".join(capsys.readouterr().out.replace("│", " ").split())
    # the rule set: 2 right, 1 wrong, 2 ties on every seed -> 40.0% ± 0.0; flipped 20.0%
    assert re.search(r"rule set 40\.0% ± 0\.0 66\.7% ± 0\.0 2 20\.0% ± 0\.0", out), out
    assert "no-rules judge" in out and "seeds 0, 1" in out
    report = json.loads((tmp_path / "validation.json").read_text())
    assert report["icai"]["seeds"] == [0, 1] and report["rules"][0]["perf"] == pytest.approx(0.2)
    # the HTML report shows them beside the rule-set accuracy
    from autorule.reporting import build_report

    page = build_report(tmp_path).read_text()
    rs_flipped = report["icai"]["summary"]["rule_set_flipped"]
    assert rs_flipped["mean"] == pytest.approx(0.2)
    assert "<div class='v'>20.0% &plusmn; 0.0</div><div class='k'>rule set, flipped labels</div>" in page
    assert "</div><div class='k'>no-rules judge</div>" in page
    assert main(["validate", "--rules", str(rules), "--data", str(data), "--no-cache", "--folds", "2", "--no-baseline"]) == 0
    out = " ".join(capsys.readouterr().out.replace("│", " ").split())
    assert "no-rules judge" not in out and re.search(r"rule set 40\.0% 66\.7% 2 20\.0%", out), out


def test_validate_plan_counts_the_no_rules_judge(tmp_path, capsys, monkeypatch):
    from autorule.testing.mock_server import ScriptedServer

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"Question {i}?", "chosen": c, "rejected": r}) + "\n" for i, c, r in PAIRS))
    rules = tmp_path / "rules.yaml"
    RuleSet(rules=[Rule(id="good", text=GOOD), Rule(id="short", text=SHORT)]).save(rules)
    with ScriptedServer(lambda messages, body: {"content": "Yes"}) as server:
        argv = ["validate", "--rules", str(rules), "--data", str(data), "--verifier", f"openai:m@{server.base_url}", "--no-cache", "--plan", "--json"]
        assert main([*argv, "--seeds", "3"]) == 0
        stages = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["stages"]
        # 5 pairs x 2 sides x 2 rules; then 5 pairs x 3 seeds
        assert [(s["stage"], s["calls"]) for s in stages] == [("verify both sides", 20), ("no-rules judge", 15)]
        assert main([*argv, "--no-baseline"]) == 0
        stages = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["stages"]
        assert [s["stage"] for s in stages] == ["verify both sides"]
