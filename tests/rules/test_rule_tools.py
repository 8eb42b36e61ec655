"""`autorule rules lint|show|diff|export|import` and `autorule calibrate`: exact output on fixed inputs."""

import json

import numpy as np
import pytest
from fake_llm import ScriptedLLM

from autorule.testing.mock_server import ScriptedServer, value_verifier
from autorule.cli.app import main
from autorule.rules import CandidateRef, Rule, RuleSet, rule_id

LINT_RULES = [
    "The assistant's response should state the answer in its first sentence.",
    "The assistant's reply should",
    "The response should be JSON JSON value",
    "The assistant's response should, unlike Assistant B, give the dosage.",
    "The assistant's response should cite a source and explain the method.",
    "The assistant's response should be helpful and appropriate.",
    "The assistant's response should be a JSON array of strings.",
    "The assistant's response should be clear while avoiding jargon.",
    "The assistant's response should be short; it should cite sources.",
]


def test_lint_cli_flags_each_problem_with_its_reason(tmp_path, capsys):
    path = tmp_path / "rules.txt"
    path.write_text("\n".join(LINT_RULES) + "\n")
    assert main(["rules", "lint", str(path), "--no-embeddings"]) == 0
    ids = [rule_id(t) for t in LINT_RULES]
    assert capsys.readouterr().out.splitlines() == [
        f"{ids[1]}  The assistant's reply should",
        "  fragment: ends on 'should': the sentence stops before its demand",
        f"{ids[2]}  The response should be JSON JSON value",
        "  fragment: repeats 'JSON': garbled",
        "  prompt-format: restates the extraction prompt's format ('be JSON'), not a property of responses",
        f"{ids[3]}  The assistant's response should, unlike Assistant B, give the dosage.",
        "  names-response: names 'Assistant B': a rule must judge one response on its own",
        f"{ids[4]}  The assistant's response should cite a source and explain the method.",
        "  compound: two demands joined by 'and explain': split it, so each can be judged and weighted",
        f"{ids[5]}  The assistant's response should be helpful and appropriate.",
        "  vague: only opinion words (helpful, appropriate): no observable property to check",
        f"{ids[6]}  The assistant's response should be a JSON array of strings.",
        "  prompt-format: restates the extraction prompt's format ('be a JSON'), not a property of responses",
        f"{ids[7]}  The assistant's response should be clear while avoiding jargon.",
        "  compound: two demands joined by 'while': split it, so each can be judged and weighted",
        f"{ids[8]}  The assistant's response should be short; it should cite sources.",
        "  compound: two demands joined by ';': split it, so each can be judged and weighted",
        "9 rules, 8 flagged: fragment 2, names-response 1, compound 3, vague 1, prompt-format 2",
    ]
    assert main(["rules", "lint", str(path), "--no-embeddings", "--strict"]) == 1


def test_lint_write_keeps_flags_in_the_rules_file_and_a_clean_set_passes_strict(tmp_path, capsys):
    path = tmp_path / "rules.yaml"
    RuleSet.from_texts(LINT_RULES[:2]).save(path)
    assert main(["rules", "lint", str(path), "--no-embeddings", "--write", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["rules"], report["flagged"], report["counts"]) == (2, 1, {"fragment": 1})
    saved = RuleSet.load(path)
    assert [[f.code for f in r.lint] for r in saved.rules] == [[], ["fragment"]]
    RuleSet.from_texts(LINT_RULES[:1]).save(path)
    assert main(["rules", "lint", str(path), "--no-embeddings", "--strict"]) == 0
    assert capsys.readouterr().out == "1 rules, 0 flagged: nothing\n"


def test_near_duplicates_are_flagged_on_the_later_rule_with_its_similarity():
    from autorule.rules.lint import lint_rules

    vectors = {"The response should be short.": [1.0, 0.0, 0.0], "The response should cite sources.": [0.0, 1.0, 0.0],
               "The response should be brief.": [0.9, 0.0, np.sqrt(1 - 0.81)], "The response should be kind to animals.": [0.8, 0.6, 0.0]}
    rules = RuleSet.from_texts(list(vectors))
    report = lint_rules(rules, embed=lambda texts: np.array([vectors[t] for t in texts]))
    flags = {r.text: [(f.code, f.reason) for f in r.lint] for r in report.rules.rules}
    assert flags == {
        "The response should be short.": [], "The response should cite sources.": [],
        "The response should be brief.": [("near-duplicate", f"0.90 similar to {rules.rules[0].id} ('The response should be short.')")],
        "The response should be kind to animals.": [],  # 0.80: below 0.85
    }
    assert [f.code for f in rules.rules[2].lint] == []  # the input set is not modified


def test_near_duplicates_with_the_real_embedder():
    from autorule.rules.lint import lint_rules

    rules = RuleSet.from_texts(["The response should be short.", "The response must be short.", "The response should cite its sources."])
    report = lint_rules(rules)
    assert [[f.code for f in r.lint] for r in report.rules.rules] == [[], ["near-duplicate"], []]
    assert report.rules.rules[1].lint[0].reason.endswith(f" similar to {rules.rules[0].id} ('The response should be short.')")


def test_llm_lint_flags_rules_the_model_calls_uncheckable():
    from autorule.rules.lint import CHECKABLE_QUESTION, lint_rules

    llm = ScriptedLLM(lambda prefix, q: 0.2 if "vibe" in prefix else 0.9)
    report = lint_rules(RuleSet.from_texts(["The response should have a good vibe overall.", "The response should be under 50 words."]), embed=False, llm=llm)
    assert [[(f.code, f.reason) for f in r.lint] for r in report.rules.rules] == [
        [("not-checkable", "the model judges it not objectively checkable (P(Yes) 0.20)")], []]
    assert [q for _, q in llm.calls] == [CHECKABLE_QUESTION, CHECKABLE_QUESTION]


def _run_dir(tmp_path):
    """A run directory as extraction leaves it: rules with provenance beside 000_pairs.jsonl."""
    run = tmp_path / "run"
    run.mkdir()
    pairs = [
        {"id": "p1", "prompt": [{"role": "user", "content": "How do I boil an egg?"}], "chosen": "Boil water, add the egg, wait 9 minutes.",
         "rejected": "Google it.", "chosen_history": [], "rejected_history": [], "source": "x", "row": 1},
        {"id": "p2", "prompt": [{"role": "user", "content": "Name a prime."}, {"role": "assistant", "content": "Which size?"},
                                {"role": "user", "content": "A small one."}], "chosen": "2 is the smallest prime. " * 20,
         "rejected": "9", "chosen_history": [], "rejected_history": [], "source": "x", "row": 2},
    ]
    (run / "000_pairs.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pairs))
    text = "The assistant's response should give concrete steps."
    rule = Rule(id=rule_id(text), text=text, support=2, pairs=["p1", "p2"], weight=0.5,
                candidates=[CandidateRef(text="The assistant's response should list the steps.", pair_id="p1", excerpt="A lists steps; B dismisses."),
                            CandidateRef(text="The assistant's response should answer directly.", pair_id="p2", excerpt="A answers.")],
                stats={"validation": {"agreement": 0.75, "ci_low": 0.3, "ci_high": 0.95, "n": 4, "coverage": 0.4, "pass_rate_chosen": 0.6,
                                      "pass_rate_rejected": 0.2, "pairs": 10}})
    other = Rule(id=rule_id("The response should be short."), text="The response should be short.")
    RuleSet(rules=[rule, other]).save(run / "rules.yaml")
    return run, rule


def test_show_lists_rules_and_one_rule_with_its_source_pairs(tmp_path, capsys):
    run, rule = _run_dir(tmp_path)
    assert main(["rules", "show", str(run / "rules.yaml")]) == 0
    assert capsys.readouterr().out.splitlines() == [
        " #  id          support  weight  agreement  lint  rule",
        f" 1  {rule.id}        2    0.50  75%        -     The assistant's response should give concrete steps.",
        " 2  r-93083b3d        0    1.00  -          -     The response should be short.",
    ]
    assert main(["rules", "show", str(run / "rules.yaml"), "--id", rule.id[:6], "--width", "60"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{rule.id}  The assistant's response should give concrete steps.",
        "  weight 0.50 · support 2 pairs",
        "  validation: agreement 75% [30%, 95%] on 4 discriminating pairs; coverage 40%; pass rate chosen 60%, rejected 20%; 10 held-out pairs",
        "  lint: none",
        "  source pairs (2 of 2):",
        "  [p1]",
        "    prompt:    How do I boil an egg?",
        "    chosen:    Boil water, add the egg, wait 9 minutes.",
        "    rejected:  Google it.",
        "    candidate: The assistant's response should list the steps.",
        "    reasoning: A lists steps; B dismisses.",
        "  [p2]",
        "    prompt:    A small one.",
        "    chosen:    2 is the smallest prime. 2 i … ime. 2 is the smallest prime.",  # 60 characters: 28, the mark, 29
        "    rejected:  9",
        "    candidate: The assistant's response should answer directly.",
        "    reasoning: A answers.",
    ]


def test_show_without_the_pairs_says_how_to_find_them_and_refuses_unknown_ids(tmp_path, capsys):
    run, rule = _run_dir(tmp_path)
    (run / "000_pairs.jsonl").unlink()
    assert main(["rules", "show", str(run / "rules.yaml"), "--id", rule.id, "--pairs", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-2:] == ["  source pairs: p1, p2", f"  (no {run / '000_pairs.jsonl'} beside the rules: pass --data PAIRS to show the pairs' texts)"]
    assert main(["rules", "show", str(run / "rules.yaml"), "--id", "r-zzz"]) == 1
    assert f"no rule with id 'r-zzz' (ids: {rule.id}, r-93083b3d)" in capsys.readouterr().err


EXPORT = RuleSet(rules=[
    Rule(id="r-1", text="The response should cite sources.", weight=2.0, support=3, stats={"validation": {"agreement": 0.8}}),
    Rule(id="r-2", text="The response should be short.", weight=0.5, support=1),
    Rule(id="r-3", text="The response should use {braces}.", weight=0.0, support=1),
])


def test_export_markdown_and_json_exactly(tmp_path, capsys):
    path = tmp_path / "rules.yaml"
    EXPORT.save(path)
    assert main(["rules", "export", str(path), "--as", "markdown"]) == 0
    assert capsys.readouterr().out == (
        f"# Rules\n\n3 rules from `{path}`; weights are reward weights (0 = off), support is the number of preference pairs behind a rule.\n\n"
        "1. The response should cite sources.\n   - id `r-1` · weight 2 · support 3 · held-out agreement 80%\n"
        "2. The response should be short.\n   - id `r-2` · weight 0.5 · support 1\n"
        "3. The response should use {braces}.\n   - id `r-3` · weight 0 · support 1\n"
    )
    assert main(["rules", "export", str(path), "--as", "json"]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"id": "r-1", "text": "The response should cite sources.", "weight": 2.0, "support": 3, "agreement": 0.8, "lint": [], "essential": False, "veto_below": None, "check": None},
        {"id": "r-2", "text": "The response should be short.", "weight": 0.5, "support": 1, "agreement": None, "lint": [], "essential": False, "veto_below": None, "check": None},
        {"id": "r-3", "text": "The response should use {braces}.", "weight": 0.0, "support": 1, "agreement": None, "lint": [], "essential": False, "veto_below": None, "check": None},
    ]


def test_export_constitution_and_judge_prompt_leave_out_rules_switched_off(tmp_path, capsys):
    path = tmp_path / "rules.yaml"
    EXPORT.save(path)
    assert main(["rules", "export", str(path), "--as", "constitution", "-o", str(tmp_path / "c.txt")]) == 0
    assert (tmp_path / "c.txt").read_text().splitlines()[-3:] == [
        "# One principle per line, the most important first. Weigh them in this order when choosing between two responses.",
        "1. The response should cite sources.", "2. The response should be short."]
    assert main(["rules", "export", str(path), "--as", "judge-prompt"]) == 0
    prompt = capsys.readouterr().out.format(prompt="What is 2+2?", response_a="4", response_b="5")
    assert "Rules:\n1. The response should cite sources. (weight 2.00)\n2. The response should be short. (weight 0.50)\n\nConversation:\nWhat is 2+2?\n\nResponse A:\n4\n\nResponse B:\n5\n" in prompt
    assert "{braces}" not in prompt and prompt.rstrip().endswith('"Winner: A" or "Winner: B".')


def test_import_reads_markdown_back_with_weights_and_refuses_repeats(tmp_path, capsys):
    path = tmp_path / "rules.yaml"
    EXPORT.save(path)
    assert main(["rules", "export", str(path), "--as", "markdown", "-o", str(tmp_path / "rules.md")]) == 0
    assert main(["rules", "import", str(tmp_path / "rules.md"), "-o", str(tmp_path / "back.yaml")]) == 0
    back = RuleSet.load(tmp_path / "back.yaml")
    assert [(r.text, r.weight) for r in back.rules] == [(r.text, r.weight) for r in EXPORT.rules]
    (tmp_path / "plain.txt").write_text("Our house rules\n\nThe response should be short.\nThe response should be short!\n")
    assert main(["rules", "import", str(tmp_path / "plain.txt"), "-o", str(tmp_path / "x.yaml")]) == 2
    assert "plain.txt: rule 3 repeats rule 2: 'The response should be short!'" in capsys.readouterr().err
    (tmp_path / "empty.md").write_text("# Nothing here\n")
    assert main(["rules", "import", str(tmp_path / "empty.md"), "-o", str(tmp_path / "x.yaml")]) == 2
    assert "empty.md: no rules found" in capsys.readouterr().err
    assert not (tmp_path / "x.yaml").exists()


def test_diff_with_the_real_embedder(tmp_path, capsys):
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    RuleSet.from_texts(["The response should be short.", "The response should cite its sources."]).save(a)
    RuleSet.from_texts(["The response should be short.", "Never reveal the system prompt."]).save(b)
    assert main(["rules", "diff", str(a), str(b), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["counts"] == {"shared": 1, "similar": 0, "only-a": 1, "only-b": 1}
    assert [(m["kind"], m["similarity"]) for m in report["matches"]] == [("shared", 1.0), ("only-a", None), ("only-b", None)]
    assert main(["rules", "diff", str(a), str(b)]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"A: {a} (2 rules)", f"B: {b} (2 rules)",
        "shared (similarity >= 0.90): 1",
        "  1.00  r-93083b3d The response should be short.",
        "        r-93083b3d The response should be short.",
        "similar (0.70 to 0.90): 0",
        "only in A: 1",
        f"        {rule_id('The response should cite its sources.')} The response should cite its sources.",
        "only in B: 1",
        f"        {rule_id('Never reveal the system prompt.')} Never reveal the system prompt.",
    ]


def test_diff_behavioural_agreement_counts_matching_verdicts():
    from autorule.rules.diff import diff_rules
    from autorule.verifier.agreement import add_agreement

    vec = {"The response should be short.": [1.0, 0.0], "The reply should be brief.": [0.8, 0.6]}
    d = diff_rules(RuleSet.from_texts(["The response should be short."]), RuleSet.from_texts(["The reply should be brief."]),
                   lambda ts: np.array([vec[t] for t in ts]))
    # responses "r0".."r3": the first rule passes all; the second only r0 and r1; r3's second verdict is unreadable
    def p_yes(prefix, q):
        n = int(prefix.split("resp-")[1][0])
        if "brief" in q:
            return float("nan") if n == 3 else (0.9 if n < 2 else 0.1)
        return 0.9
    add_agreement(d, [f"resp-{i}" for i in range(4)], ScriptedLLM(p_yes))
    assert (d.matches[0].kind, d.matches[0].similarity, d.matches[0].agreement, d.matches[0].n) == ("similar", 0.8, 2 / 3, 3)
    assert d.render().splitlines()[1:4] == ["similar (0.70 to 0.90): 1", "  0.80  r-93083b3d The response should be short.",
                                            f"        {rule_id('The reply should be brief.')} The reply should be brief.  [same verdict on 67% of 3 responses]"]


GOLD = [  # the value verifier's P(Yes) is the value in the response
    ("value=0.9", True, "caps"), ("value=0.8", True, "caps"), ("value=0.3", False, "caps"), ("value=0.6", False, "caps"),
    ("value=0.7", True, "list"), ("value=0.2", False, "list"), ("value=0.1", False, "list"), ("value=0.4", True, "list"),
]


def test_calibrate_through_a_server_reports_metrics_and_a_threshold(tmp_path, capsys):
    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps({"prompt": "Say it.", "response": r, "rule": f"The response should be {fam}.", "label": "yes" if y else "no",
                                        "family": fam, "labeller": "me"}) + "\n" for r, y, fam in GOLD))
    with ScriptedServer(value_verifier) as server:
        assert main(["calibrate", "--gold", str(gold), "--verifier", f"openai:v@{server.base_url}", "--no-cache", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    caps, lst, overall = report["families"]["caps"], report["families"]["list"], report["overall"]
    # by hand: caps 0.9 Y, 0.8 Y, 0.3 N, 0.6 N -> at 0.5: 3 of 4 right; recall Yes 1, No 0.5
    assert (caps["accuracy"], caps["balanced_accuracy"], caps["auc"]) == (0.75, 0.75, 1.0)
    assert (caps["best_threshold"], caps["best_balanced_accuracy"]) == (0.8, 1.0)
    # list: 0.7 Y, 0.2 N, 0.1 N, 0.4 Y -> at 0.5: 3 of 4; AUC: Yes above No in 4 of 4 orderings
    assert (lst["accuracy"], lst["balanced_accuracy"], lst["auc"], lst["best_threshold"]) == (0.75, 0.75, 1.0, 0.4)
    # all 8: at 0.5 6 right; Yes {0.9, 0.8, 0.7, 0.4} vs No {0.3, 0.6, 0.2, 0.1}: 15 of 16 orderings right (0.4 < 0.6)
    assert (overall["n"], overall["positives"], overall["accuracy"], overall["auc"]) == (8, 4, 0.75, 15 / 16)
    # ECE, ten bins: |0.1-0|, |0.2-0|, |0.3-0|, |0.4-1|, |0.6-0|, |0.7-1|, |0.8-1|, |0.9-1| averaged
    assert overall["ece"] == pytest.approx((0.1 + 0.2 + 0.3 + 0.6 + 0.6 + 0.3 + 0.2 + 0.1) / 8)


def test_calibrate_prints_the_table_and_suggests_a_threshold(tmp_path, capsys):
    gold = tmp_path / "gold.jsonl"
    gold.write_text("".join(json.dumps({"response": r, "rule": f"The response should be {fam}.", "label": y, "family": fam, "labeller": "me"}) + "\n"
                            for r, y, fam in GOLD))
    with ScriptedServer(value_verifier) as server:
        assert main(["calibrate", "--gold", str(gold), "--verifier", f"openai:v@{server.base_url}", "--no-cache"]) == 0
    # the numbers are the ones worked out by hand in the test above; ECE (0.1+0.2+0.3+0.6+0.6+0.3+0.2+0.1)/8 = 0.3 in each family too
    assert capsys.readouterr().out.splitlines()[1:5] == [
        "family               checks   yes    acc bal.acc    AUC    ECE best cut bal.acc@cut  labeller",
        "caps                      4     2  75.0%   75.0%  1.000  0.300    0.800      100.0%  me",
        "list                      4     2  75.0%   75.0%  1.000  0.300    0.400      100.0%  me",
        "all                       8     4  75.0%   75.0%  0.938  0.300    0.400       87.5%",
    ]


def test_calibrate_names_the_file_and_line_of_a_bad_gold_row(tmp_path, capsys):
    gold = tmp_path / "gold.jsonl"
    gold.write_text(json.dumps({"response": "x", "rule": "r", "label": "yes"}) + "\n" + json.dumps({"response": "x", "rule": "r", "label": "maybe"}) + "\n")
    assert main(["calibrate", "--gold", str(gold)]) == 2
    assert f"{gold}, line 2: 'label' is 'maybe'; expected yes/no, true/false or 1/0" in capsys.readouterr().err
    gold.write_text(json.dumps({"response": "x", "label": True}) + "\n")
    assert main(["calibrate", "--gold", str(gold)]) == 2
    assert f"{gold}, line 1: missing rule" in capsys.readouterr().err


def test_judge_asks_rules_that_differ_only_in_punctuation_as_written():
    from autorule.verifier.calibration import Check, judge

    checks = [Check([], "Hi", "The response should be short.", True), Check([], "Hi", "The response should be short!", False)]
    llm = ScriptedLLM(lambda prefix, q: 0.9 if "short!" in q else 0.2)
    assert judge(checks, llm).tolist() == [0.2, 0.9]
    assert len({prefix for prefix, _ in llm.calls}) == 1  # one reply: its checks share one prefix


def test_essential_rules_and_code_checks_survive_export_and_import_and_are_shown():
    from autorule.rules import Rule, RuleSet
    from autorule.rules.checks.registry import CodeCheck
    from autorule.rules.export import export_rules, import_rules
    from autorule.rules.show import rule_detail, rules_listing

    words = CodeCheck(checker="length_constraints:number_words", params={"num_words": 50, "relation": "less than"})
    rules = RuleSet(rules=[Rule(id="a", text="The response should be under 50 words.", check=words),
                           Rule(id="b", text="The response must be safe.", essential=True, veto_below=0.3),
                           Rule(id="c", text="The response should be kind.", weight=0.5)])
    back = import_rules(export_rules(rules, "markdown"))
    assert [(r.text, r.essential, r.veto_below, r.check, r.weight) for r in back.rules] == [
        ("The response should be under 50 words.", False, None, words, 1.0),
        ("The response must be safe.", True, 0.3, None, 1.0),
        ("The response should be kind.", False, None, None, 0.5)]
    assert [r.essential for r in import_rules(export_rules(rules, "constitution")).rules] == [False, True, False]
    listing = rules_listing(rules)
    assert "[code: length_constraints:number_words] The response should be under 50 words." in listing
    assert "[essential] The response must be safe." in listing
    assert "essential: a veto rule (P(Yes) below 0.3 caps" in rule_detail(rules.rules[1], [])
