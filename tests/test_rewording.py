"""Rewording rules from their held-out errors, with a scripted rewriter and scripted verdicts."""

import json

import pytest
import yaml
from fake_llm import ScriptedLLM

from autorule.data import load_pairs
from autorule.rewording import AT_OR_ABOVE, NOT_BETTER, ROUNDS_USED, reword_rules
from autorule.rules import RuleSet
from autorule.rules.ruleset import RuleRevision

A, A2 = "The assistant's response should be very long and detailed.", "The assistant's response should be concise and to the point."
B, B2 = "The assistant's response should use many bullet points.", "The assistant's response should use numbered lists for steps."
C = "The assistant's response should answer the question directly."
D = [f"The assistant's response should follow house style number {i}." for i in range(4)]
# (chosen satisfies, rejected satisfies) on held-out pairs 1..4; agreement = right / (right + wrong) among pairs that differ
RIGHT, WRONG, BOTH, NEITHER = (1, 0), (0, 1), (1, 1), (0, 0)
SAT = {
    A: [WRONG, WRONG, RIGHT, BOTH],       # 1/3
    A2: [RIGHT, RIGHT, RIGHT, NEITHER],   # 3/3: better, kept
    B: [WRONG, RIGHT, WRONG, NEITHER],    # 1/3
    B2: [WRONG, WRONG, WRONG, RIGHT],     # 1/4: worse, not kept
    C: [RIGHT, RIGHT, RIGHT, RIGHT],      # 4/4: not reworded
    D[0]: [WRONG] * 4,                    # 0/4
    D[1]: [RIGHT, WRONG, WRONG, WRONG],   # 1/4
    D[2]: [RIGHT, RIGHT, WRONG, WRONG],   # 2/4
    D[3]: [RIGHT, RIGHT, RIGHT, WRONG],   # 3/4
}
REWORD = {A: A2, B: B2, D[0]: D[1], D[1]: D[2], D[2]: D[3]}
HELD = load_pairs([{"prompt": f"Question {i}?", "chosen": f"CH{i} reply.", "rejected": f"RJ{i} reply."} for i in (1, 2, 3, 4)]).pairs


def p_yes(prefix: str, question: str) -> float:
    rule = next(t for t in SAT if t in question)
    i, side = next((i, side) for i in range(4) for side in (0, 1) if f"{('CH', 'RJ')[side]}{i + 1} reply." in prefix)
    return 0.9 if SAT[rule][i][side] else 0.1


def rewriter(request) -> str:
    text = request.messages[-1]["content"].split("<rule>")[1].split("</rule>")[0]
    return json.dumps([REWORD[next(t for t in REWORD if t in text)]])


def test_the_better_rewording_is_kept_the_worse_one_is_not_and_both_are_in_the_history(tmp_path):
    llm = ScriptedLLM(p_yes, rewriter)
    rules = RuleSet.from_texts([A, B, C])
    result = reword_rules(rules, HELD, llm, below=0.6, rounds=3, data="held.jsonl")

    assert result.rules.texts == [A2, B, C]
    assert rules.texts == [A, B, C]  # the input is not changed
    ids = {r.text: r.id for r in rules.rules}
    assert result.reworded == {ids[A]: result.rules.rules[0].id}
    assert result.outcomes == {ids[A]: AT_OR_ABOVE, ids[B]: NOT_BETTER, ids[C]: AT_OR_ABOVE}
    assert result.rounds == 1 and result.llm_calls == 2  # C (4/4) was never sent; A reached 1.0, B's rewording was worse: both stop
    assert result.checks == 2 * 4 * 3 + 2 * 4 * 2 == len(llm.calls)
    a, b, c = result.rules.rules
    assert a.history == [RuleRevision(round=1, text=A, agreement=0.333333, n=3, reworded=A2, reworded_agreement=1.0, reworded_n=3, kept="reworded",
                                      pairs=[HELD[0].id, HELD[1].id], data="held.jsonl")]
    assert b.history == [RuleRevision(round=1, text=B, agreement=0.333333, n=3, reworded=B2, reworded_agreement=0.25, reworded_n=4, kept="original",
                                      pairs=[HELD[0].id, HELD[2].id], data="held.jsonl")]
    assert c.history == []

    path = tmp_path / "rules.yaml"
    result.rules.save(path)
    saved = yaml.safe_load(path.read_text())["rules"]
    assert [("history" in r) for r in saved] == [True, True, False]  # written only where a rule was reworded
    assert RuleSet.load(path).rules[0].history == a.history


def test_rounds_are_bounded_and_each_is_recorded():
    llm = ScriptedLLM(p_yes, rewriter)
    result = reword_rules(RuleSet.from_texts([D[0]]), HELD, llm, below=0.6, rounds=2, examples=2)
    rule = result.rules.rules[0]
    assert rule.text == D[2] and result.rounds == 2 and result.llm_calls == 2  # D[3] (3/4) would have passed, but no third round
    assert [(h.text, h.agreement, h.reworded, h.reworded_agreement, h.kept) for h in rule.history] == [
        (D[0], 0.0, D[1], 0.25, "reworded"), (D[1], 0.25, D[2], 0.5, "reworded")]
    assert [h.pairs for h in rule.history] == [[HELD[0].id, HELD[1].id], [HELD[1].id, HELD[2].id]]  # at most 2 disagreeing pairs shown
    assert list(result.outcomes.values()) == [ROUNDS_USED]

    third = reword_rules(RuleSet.from_texts([D[0]]), HELD, ScriptedLLM(p_yes, rewriter), below=0.6, rounds=3)
    assert third.rules.texts == [D[3]] and list(third.outcomes.values()) == [AT_OR_ABOVE]


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="no held-out pairs"):
        reword_rules(RuleSet.from_texts([A]), [], ScriptedLLM(p_yes, rewriter))
    with pytest.raises(ValueError, match="rounds=0"):
        reword_rules(RuleSet.from_texts([A]), HELD, ScriptedLLM(p_yes, rewriter), rounds=0)


def test_the_command_writes_the_kept_rewording_and_its_history(tmp_path, monkeypatch, capsys):
    from fake_llm import use_in_cli

    from autorule.cli.app import main

    use_in_cli(monkeypatch, ScriptedLLM(p_yes, rewriter))
    rules, data = tmp_path / "rules.yaml", tmp_path / "held.jsonl"
    RuleSet.from_texts([A, B, C]).save(rules)
    data.write_text("".join(json.dumps({"prompt": f"Question {i}?", "chosen": f"CH{i} reply.", "rejected": f"RJ{i} reply."}) + "\n" for i in (1, 2, 3, 4)))
    assert main(["rules", "reword", str(rules), "--data", str(data), "--verifier", "openai:x@http://127.0.0.1:9", "--no-cache", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["outcomes"] == {AT_OR_ABOVE: 2, NOT_BETTER: 1} and summary["rounds"] == 1 and summary["rewording_calls"] == 2
    saved = RuleSet.load(rules)
    assert saved.texts == [A2, B, C] and [len(r.history) for r in saved.rules] == [1, 1, 0]
