"""Validation statistics against hand-computed values, and `autorule validate` end to end."""

import json
import math
import re

import numpy as np
import pytest
from conftest import HH
from autorule.testing.mock_server import ScriptedServer

from autorule.cli.app import main
from autorule.data import load_pairs
from autorule.rules import Rule, RuleSet, rule_id
from autorule.validation import (
    ab_signs,
    cohen_kappa,
    correlated_rules,
    fit_weights,
    greedy_select,
    learned_rule_weights,
    preference_accuracy,
    rule_stats,
    wilson_interval,
)


def test_wilson_interval_hand_values():
    # p = 8/10, z = 1.96: centre = (0.8 + 0.19208) / 1.38416 = 0.716753; half = 1.96 * sqrt(0.016 + 0.0009604) / 1.38416 = 0.184417
    low, high = wilson_interval(8, 10)
    assert low == pytest.approx(0.490158, abs=1e-5) and high == pytest.approx(0.943318, abs=1e-5)
    assert wilson_interval(0, 5)[0] == 0.0 and wilson_interval(5, 5)[1] == 1.0
    assert all(math.isnan(x) for x in wilson_interval(0, 0))


def test_cohen_kappa_hand_value():
    # po = 3/4; pe = 0.5 * 0.75 + 0.5 * 0.25 = 0.5; kappa = (0.75 - 0.5) / 0.5 = 0.5
    a = np.array(["A", "A", "B", "B"])
    b = np.array(["A", "A", "A", "B"])
    assert cohen_kappa(a, b) == pytest.approx(0.5)
    assert cohen_kappa(a, a) == pytest.approx(1.0)


# 6 pairs x 2 rules; rule 0 discriminates on pairs 0-3 (chosen wins on 0, 1, 2), rule 1 on none
CHOSEN = np.array([[0.9, 0.9], [0.8, 0.1], [0.7, 0.9], [0.1, 0.2], [0.9, 0.9], [0.2, 0.1]])
REJECTED = np.array([[0.1, 0.8], [0.2, 0.2], [0.3, 0.6], [0.9, 0.3], [0.8, 0.7], [0.1, 0.3]])
SIGNS = np.array([1, -1, 1, -1, 1, 1])


def test_rule_stats_hand_values():
    stats = rule_stats(["r0", "r1"], CHOSEN, REJECTED, SIGNS)
    r0, r1 = stats
    assert (r0.n, r0.agreement, r0.coverage) == (4, 0.75, pytest.approx(4 / 6))
    assert (r0.ci_low, r0.ci_high) == pytest.approx(wilson_interval(3, 4))
    assert r0.pass_rate_chosen == pytest.approx(4 / 6) and r0.pass_rate_rejected == pytest.approx(2 / 6)
    # discriminating pairs 0..3: labels A, B, A, B; the rule votes for chosen on 0-2, for rejected on 3:
    # votes A, B, A, A -> po = 3/4, pe = 0.5 * 0.75 + 0.5 * 0.25 = 0.5, kappa = 0.5
    assert r0.kappa == pytest.approx(0.5)
    # rule 1: chosen and rejected get the same verdict on every pair -> it never discriminates
    assert (r1.n, r1.coverage) == (0, 0.0) and math.isnan(r1.agreement) and math.isnan(r1.kappa)
    assert r1.pass_rate_chosen == r1.pass_rate_rejected == 0.5 and r1.applies == 1.0


def test_rule_stats_with_applicability():
    applies_c = np.array([[True, False]] * 6)
    applies_r = np.array([[True, True]] * 6)
    r0, r1 = rule_stats(["r0", "r1"], CHOSEN, REJECTED, SIGNS, applies_chosen=applies_c, applies_rejected=applies_r)
    assert r0.applies == 1.0 and r1.applies == 0.5


def test_preference_accuracy_counts_ties_separately():
    acc = preference_accuracy(np.array([0.9, 0.5, 0.2, 0.4]), np.array([0.1, 0.5, 0.3, 0.4]))
    assert (acc.correct, acc.wrong, acc.ties) == (1, 1, 2)
    assert acc.accuracy == 0.25 and acc.accuracy_without_ties == 0.5


def test_fit_weights_finds_the_informative_rule():
    rng = np.random.default_rng(0)
    n = 200
    informative = rng.uniform(0.1, 1.0, n)  # chosen always satisfies it more
    noise = rng.uniform(-1, 1, n)
    diffs = np.stack([informative, noise], axis=1)
    signs = np.where(rng.uniform(size=n) < 0.5, 1, -1)
    fit = fit_weights(diffs, signs, folds=5)
    assert fit.weights[0] > 1.0 and abs(fit.weights[1]) < 0.5
    assert fit.cv_accuracy == 1.0 and fit.folds == 5
    weights = learned_rule_weights(np.array([2.0, -1.0, 1.0]))
    assert weights.tolist() == pytest.approx([4 / 3, 0.0, 2 / 3])
    assert learned_rule_weights(np.array([-1.0, 0.0])) is None


def test_redundancy_and_greedy_selection():
    rng = np.random.default_rng(1)
    base = rng.uniform(size=50)
    verdicts = np.stack([base, base * 0.9 + 0.05, rng.uniform(size=50)], axis=1)
    pairs = correlated_rules(["a", "b", "c"], verdicts, 0.8)
    assert [(p["a"], p["b"]) for p in pairs] == [("a", "b")] and pairs[0]["correlation"] > 0.99
    n = 120
    signs = np.where(rng.uniform(size=n) < 0.5, 1, -1)
    diffs = np.stack([rng.uniform(-1, 1, n), rng.uniform(0.2, 1, n), rng.uniform(-1, 1, n)], axis=1)
    selection = greedy_select(diffs, signs, 2)
    assert selection.order[0] == 1 and len(selection.order) == 2 and selection.cv_accuracy[0] == 1.0


def test_ab_signs_are_balanced_and_seeded():
    ids = [str(i) for i in range(400)]
    signs = ab_signs(ids, 0)
    assert 160 < (signs > 0).sum() < 240
    assert (signs == ab_signs(ids, 0)).all() and not (signs == ab_signs(ids, 1)).all()


# ------------------------------------------------------------------ the command


def rules_file(tmp_path, texts, pairs=()):
    path = tmp_path / "rules.yaml"
    RuleSet(rules=[Rule(id=rule_id(t), text=t, pairs=list(pairs)) for t in texts]).save(path)
    return path


def test_validate_cli_against_a_server_with_overlap_warning(tmp_path, shared_data, capsys):
    pairs = load_pairs(HH, on_bad_row="skip", limit=12).pairs
    chosen_texts = {p.chosen for p in pairs}

    def reply(messages, body):
        # a verifier that knows the answer: chosen replies satisfy rule 'good', rejected ones do not
        text = messages[-1]["content"]
        if "<assistant-a id=" in text:  # the no-rules judge: a judge that knows the answer too (A better iff A is chosen)
            a = re.search(r'<assistant-a id="\w+">\n(.*)\n</assistant-a id=', text, re.S).group(1)
            return {"content": "Yes" if a in chosen_texts else "No"}
        response = re.search(r'<assistant-final-response id="\w+">\n(.*)\n</assistant-final-response', text, re.S).group(1)
        if "be good" in text.split("Rule:")[1]:
            return {"content": "Yes" if response in chosen_texts else "No"}
        return {"content": "Yes" if len(response) % 2 else "No"}

    path = rules_file(tmp_path, ["The assistant's response should be good.", "The assistant's response should be odd."], pairs=[pairs[0].id, pairs[1].id])
    with ScriptedServer(reply) as server:
        code = main(["validate", "--rules", str(path), "--data", str(HH), "--on-bad-row", "skip", "--limit", "12",
                     "--verifier", f"openai:judge@{server.base_url}", "--no-cache", "--json", "--fit-weights", "--select", "1"])
    assert code == 0
    captured = capsys.readouterr()
    assert "2 of 12 validation pairs were used to extract these rules" in captured.err
    report = json.loads(captured.out.strip().splitlines()[-1])
    assert report["pairs"] == 12 and report["overlap_with_training_pairs"] == 2
    good, odd = report["rules"]
    assert good["agreement"] == 1.0 and good["n"] == 12 and good["coverage"] == 1.0 and good["kappa"] == 1.0
    assert good["ci_low"] == pytest.approx(wilson_interval(12, 12)[0])
    # uniform rule reward = mean of the two rules; a tie exactly where 'odd' favours the rejected side
    ties = sum(1 for p in pairs if len(p.chosen) % 2 == 0 and len(p.rejected) % 2 == 1)
    assert report["rule_set"]["ties"] == ties and report["rule_set"]["wrong"] == 0
    assert report["accuracy"] == pytest.approx((12 - ties) / 12)
    assert report["selection"]["rules"] == [good["id"]]
    # the ICAI protocol: the judge that knows the answer is right on all 12 pairs, wrong on all 12 when labels flip
    summary = report["icai"]["summary"]
    assert (summary["no_rules"]["mean"], summary["no_rules_flipped"]["mean"]) == (1.0, 0.0)
    assert summary["rule_set_flipped"]["mean"] == 0.0  # the rule set is never wrong: flipped, never right
    assert good["perf"] == 1.0 and good["relevance"] == 1.0
    # stats written back into the rules file; weighted and selected files written
    saved = RuleSet.load(path)
    assert saved.rules[0].stats["validation"]["agreement"] == 1.0
    weighted = RuleSet.load(tmp_path / "rules.weighted.yaml")
    assert weighted.rules[0].weight > 0
    assert [r.id for r in RuleSet.load(tmp_path / "rules.top1.yaml").rules] == [good["id"]]
    assert json.loads((tmp_path / "validation.json").read_text())["pairs"] == 12


@pytest.mark.slow
def test_validate_cli_on_the_embedded_model(tmp_path, shared_data, capsys):
    path = rules_file(tmp_path, ["The assistant's response should refuse harmful requests.", "The assistant's response should be polite."])
    assert main(["validate", "--rules", str(path), "--data", str(HH), "--on-bad-row", "skip", "--limit", "4", "--no-cache"]) == 0
    text = capsys.readouterr().out
    assert "rule-set accuracy" in text and "learned weights" in text
    report = json.loads((tmp_path / "validation.json").read_text())
    assert report["pairs"] == 4 and len(report["rules"]) == 2 and report["verifier"] == "embedded"
    assert report["overlap_with_training_pairs"] == 0
