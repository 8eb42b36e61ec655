"""Rules a program decides: the recogniser's mappings, each checker's verdicts on hand-made
responses, and rules.yaml round trips with a check."""

from __future__ import annotations

import json

import pytest
import yaml

from autorule.rules import RuleSet, RulesFileError
from autorule.rules.checks import CodeCheck
from autorule.rules.checks.recognise import recognise

WORDS = "length_constraints:number_words"


def mapping(text: str):
    check = recognise(text)
    return None if check is None else (check.checker, check.params, check.negate)


@pytest.mark.parametrize("text, num_words, relation", [
    ("The response should be under 60 words.", 60, "less than"),
    ("The response should be fewer than 80 words long.", 80, "less than"),
    ("The assistant's response should be less than 50 words.", 50, "less than"),
    ("Responses must be shorter than 120 words.", 120, "less than"),
    ("The response should be no more than 100 words.", 101, "less than"),
    ("The answer should be at most 40 words long.", 41, "less than"),
    ("The response must not exceed 100 words.", 101, "less than"),
    ("The response should not be longer than 75 words.", 76, "less than"),
    ("The reply should be 150 words or fewer.", 151, "less than"),
    ("The response should be no more than two hundred words.", 201, "less than"),
    ("The response should contain fewer than twenty-five words.", 25, "less than"),
    ("Keep the answer under 50 words.", 50, "less than"),
    ("Answer in fewer than 30 words.", 30, "less than"),
    ("The response should be at least 200 words long.", 200, "at least"),
    ("The response should contain more than 300 words.", 301, "at least"),
    ("The response should not be under 1,000 words.", 1000, "at least"),
    ("The response should be a minimum of 90 words.", 90, "at least"),
])
def test_word_bounds_map_to_ifeval_word_count(text, num_words, relation):
    assert mapping(text) == (WORDS, {"num_words": num_words, "relation": relation}, False)


@pytest.mark.parametrize("text", [
    "The response should be concise.",
    "The response should be short.",
    "The response should use fewer words.",
    "The response should be under 60 words and cite a source.",  # two demands: the LLM judges it whole
    "When the user asks for a summary, the response should be under 100 words.",  # conditional
    "The response should be about 100 words.",
    "The response should be 100 words.",  # exactly? about? not said
    "The response should be under 60 characters.",  # no checker for characters
    "The response should mention the word limit of 60 words.",
    "The response should respect any word limit the user gives.",
])
def test_non_checkable_rules_stay_with_the_llm(text):
    assert recognise(text) is None


def test_word_count_checker_verdicts_at_the_bound():
    under_5 = CodeCheck(checker=WORDS, params={"num_words": 5, "relation": "less than"})
    assert under_5.run("one two three four") is True
    assert under_5.run("one two three four five") is False  # 5 is not under 5
    assert under_5.run("Don't go.") is True  # IFEval counts "Don", "t", "go": 3 words
    at_least_3 = CodeCheck(checker=WORDS, params={"num_words": 3, "relation": "at least"})
    assert at_least_3.run("one two") is False
    assert at_least_3.run("one, two; three!") is True


def test_negated_check_inverts_the_verdict():
    no_code = CodeCheck(checker="autorule:code_block", negate=True)
    assert no_code.run("```\nx = 1\n```") is False
    assert no_code.run("plain text") is True


def test_count_words_is_ifevals_own_count():
    from autorule.rules.checks.ifeval import _modules, count_words

    util = _modules()[1]
    for text in ["Don't panic: it's 42.", "naïve café — déjà vu", "snake_case and kebab-case", "", "1,000,000 words?"]:
        assert count_words(text) == util.count_words(text), text


@pytest.mark.parametrize("bad, problem", [
    ({"checker": "length_constraints:number_wordz"}, "unknown checker 'length_constraints:number_wordz'"),
    ({"checker": WORDS, "params": {"num_words": 60}}, "missing ['relation']"),
    ({"checker": WORDS, "params": {"num_words": 60, "relation": "under"}}, "parameter 'relation': 'under' is not one of less than, at least"),
    ({"checker": WORDS, "params": {"num_words": -1, "relation": "less than"}}, "parameter 'num_words': -1 is not a whole number >= 0"),
    ({"checker": "autorule:code_block", "params": {"fenced": True}}, "unknown ['fenced']"),
])
def test_bad_checks_in_a_rules_file_name_the_file_and_problem(tmp_path, bad, problem):
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump({"rules": [{"text": "The response should be under 60 words.", "check": bad}]}))
    with pytest.raises(RulesFileError) as e:
        RuleSet.load(path)
    assert str(path) in str(e.value) and problem in str(e.value)


def test_rules_yaml_round_trip_with_a_check(tmp_path):
    rules = RuleSet.from_texts(["The response should be under 60 words.", "The response should be polite."])
    rules.rules[0].check = recognise(rules.rules[0].text)
    path = tmp_path / "rules.yaml"
    rules.save(path)
    written = yaml.safe_load(path.read_text())["rules"]
    assert written[0]["check"] == {"checker": WORDS, "params": {"num_words": 60, "relation": "less than"}}
    assert "check" not in written[1]  # only where a rule has one
    loaded = RuleSet.load(path)
    assert loaded.rules[0].check == CodeCheck(checker=WORDS, params={"num_words": 60, "relation": "less than"})
    assert loaded.rules[1].check is None


def test_a_negated_check_is_written_with_negate(tmp_path):
    rules = RuleSet.from_texts(["The response should not contain a code block."])
    rules.rules[0].check = CodeCheck(checker="autorule:code_block", negate=True)
    path = tmp_path / "rules.yaml"
    rules.save(path)
    assert yaml.safe_load(path.read_text())["rules"][0]["check"] == {"checker": "autorule:code_block", "params": {}, "negate": True}
    assert RuleSet.load(path).rules[0].check.negate is True


@pytest.mark.parametrize("text, expected", [
    ("The response should use bullet points.", ("autorule:bullet_list", {"min_items": 1}, False)),
    ("Responses must be formatted as a bulleted list.", ("autorule:bullet_list", {"min_items": 1}, False)),
    ("Use bullet points.", ("autorule:bullet_list", {"min_items": 1}, False)),
    ("The response should not contain any bullet points.", ("detectable_format:number_bullet_lists", {"num_bullets": 0}, False)),
    ("The response should avoid bullet points.", ("detectable_format:number_bullet_lists", {"num_bullets": 0}, False)),
    ("Do not use bullet points.", ("detectable_format:number_bullet_lists", {"num_bullets": 0}, False)),
    ("The response should contain exactly 3 bullet points.", ("detectable_format:number_bullet_lists", {"num_bullets": 3}, False)),
    ("The response should contain a numbered list.", ("autorule:numbered_list", {}, False)),
    ("The answer should not use a numbered list.", ("autorule:numbered_list", {}, True)),
    ("The response should contain a code block fenced with triple backticks.", ("autorule:code_block", {}, False)),
    ("The response should not include code blocks.", ("autorule:code_block", {}, True)),
    ("The response should contain a markdown heading (a line starting with #).", ("autorule:heading", {}, False)),
    ("The response should be valid JSON.", ("detectable_format:json_format", {}, False)),
    ("The output must be formatted as JSON.", ("detectable_format:json_format", {}, False)),
    ("The response should be written entirely in capital letters.", ("change_case:english_capital", {}, False)),
    ("The response should not be in all caps.", ("change_case:english_capital", {}, True)),
    ("The response should be written entirely in lowercase letters, with no capital letters.", ("change_case:english_lowercase", {}, False)),
    ("The response should not use any capital letters.", ("change_case:english_lowercase", {}, False)),
    ("The response should not contain any commas.", ("punctuation:no_comma", {}, False)),
    ("The response should avoid using commas.", ("punctuation:no_comma", {}, False)),
    ("Do not use commas.", ("punctuation:no_comma", {}, False)),
    ("The entire response should be wrapped in double quotation marks.", ("startend:quotation", {}, False)),
    ("The response should end with a question.", ("autorule:ends_with_question", {}, False)),
    ('The response should end with the phrase "Any other questions?".', ("startend:end_checker", {"end_phrase": "Any other questions?"}, False)),
    ("The response should start with 'Sure'.", ("autorule:starts_with", {"phrase": "Sure"}, False)),
    ('The response must not mention "OpenAI".', ("keywords:forbidden_words", {"forbidden_words": ["OpenAI"]}, False)),
    ('The response should include the words "safety" and "risk".', ("keywords:existence", {"keywords": ["safety", "risk"]}, False)),
    ("The response should be written in English.", ("language:response_language", {"language": "en"}, False)),
    ("Respond in Spanish.", ("language:response_language", {"language": "es"}, False)),
    ("The response should be between 50 and 100 words.", ("autorule:word_range", {"min_words": 50, "max_words": 100}, False)),
    ("The response should be a single paragraph.", ("autorule:number_paragraphs", {"num_paragraphs": 2, "relation": "less than"}, False)),
    ("Limit the response to 3 sentences.", ("autorule:number_sentences", {"num_sentences": 4, "relation": "less than"}, False)),
    ("The response should contain at least three paragraphs.", ("autorule:number_paragraphs", {"num_paragraphs": 3, "relation": "at least"}, False)),
])
def test_formats_and_phrases_map_to_their_checker(text, expected):
    assert mapping(text) == expected


@pytest.mark.parametrize("text", [
    "The response should be in plain English.",
    "The response should be written in a friendly tone.",
    "The response should use bullet points when listing multiple options.",
    "The response should contain a refusal or apology phrase such as \"I'm sorry\" or \"I can't\".",
    "The response should mention the risks.",
    "The response should end with a summary.",
    "The response should be formatted clearly.",
    "The response should start by acknowledging the user's question.",
    "The response should be in a single language.",
    "The response should use code blocks for any code.",
    "The response should not mention competitors.",
    "The response should be written in Klingon.",
])
def test_near_misses_do_not_map(text):
    assert recognise(text) is None


@pytest.mark.parametrize("checker, params, text, verdict", [
    ("autorule:bullet_list", {"min_items": 2}, "Pick:\n- tea\n* coffee", True),
    ("autorule:bullet_list", {"min_items": 2}, "Pick:\n- tea\n**bold** line", False),  # "**" is not a bullet, as in IFEval
    ("detectable_format:number_bullet_lists", {"num_bullets": 0}, "No list.\n-- a dash line", False),  # IFEval counts any "-" line
    ("autorule:numbered_list", {}, "1) one\n2) two", True),
    ("autorule:heading", {}, "  ## Setup\ntext", True),
    ("autorule:heading", {}, "    # four spaces is code", False),
    ("autorule:code_block", {}, "```only an opening fence", False),
    ("autorule:ends_with_question", {}, "Shall we?\n", True),
    ("autorule:starts_with", {"phrase": "Sure"}, "  “Sure thing”", True),
    ("autorule:word_range", {"min_words": 2, "max_words": 3}, "one two three four", False),
    ("autorule:number_sentences", {"num_sentences": 3, "relation": "less than"}, "One. Two! Three?", False),
    ("autorule:number_sentences", {"num_sentences": 3, "relation": "less than"}, "Dr. Who? No.", False),  # "Dr." ends one: 3 counted
    ("autorule:number_paragraphs", {"num_paragraphs": 2, "relation": "at least"}, "One.\n\n\nTwo.", True),
    ("detectable_format:json_format", {}, '```json\n{"a": 1}\n```', True),
    ("detectable_format:json_format", {}, "{'a': 1}", False),
    ("change_case:english_capital", {}, "THIS IS ALL IN CAPITAL LETTERS, AS ASKED.", True),
    ("change_case:english_lowercase", {}, "this is all lowercase, as asked.", True),
    ("change_case:english_lowercase", {}, "this is Mostly lowercase.", False),
    ("punctuation:no_comma", {}, "No commas here.", True),
    ("startend:quotation", {}, '  "Quoted."  ', True),
    ("startend:end_checker", {"end_phrase": "Any other questions?"}, "Done. any other questions?", True),
    ("keywords:existence", {"keywords": ["C++"]}, "I write c++ daily.", True),  # the word is escaped, not a regular expression
    ("keywords:forbidden_words", {"forbidden_words": ["OpenAI"]}, "Made by openai.", False),
    ("keywords:forbidden_words", {"forbidden_words": ["AI"]}, "A fair point.", True),  # whole words only
    ("language:response_language", {"language": "fr"}, "Le thé est une boisson très populaire dans le monde entier.", True),
    ("language:response_language", {"language": "fr"}, "Tea is a very popular drink all around the world.", False),
])
def test_checker_verdicts_on_hand_made_responses(checker, params, text, verdict):
    assert CodeCheck(checker=checker, params=params).run(text) is verdict


def test_lint_proposes_checks_and_apply_checks_writes_them(tmp_path, capsys):
    from autorule.cli import main
    from autorule.rules import rule_id

    texts = ["The response should be under 60 words.", "The response should be polite.", "The response should not contain any commas."]
    path = tmp_path / "rules.yaml"
    RuleSet.from_texts(texts).save(path)
    assert main(["rules", "lint", str(path), "--no-embeddings"]) == 0
    assert capsys.readouterr().out.splitlines() == [
        f"{rule_id(texts[0])}  {texts[0]}",
        "  code check: less than 60 words (lm-eval IFEval length_constraints:number_words)",
        f"{rule_id(texts[2])}  {texts[2]}",
        "  code check: no commas (lm-eval IFEval punctuation:no_comma)",
        "3 rules, 0 flagged: nothing",
        "decided by code: 0 rules already, 2 proposed (--apply-checks writes them)",
    ]
    assert all(r.check is None for r in RuleSet.load(path).rules)  # proposing writes nothing
    assert main(["rules", "lint", str(path), "--no-embeddings", "--apply-checks"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == f"decided by code: 0 rules already, 2 proposed and written to {path}"
    saved = RuleSet.load(path)
    assert [r.check and r.check.checker for r in saved.rules] == ["length_constraints:number_words", None, "punctuation:no_comma"]
    assert all(r.lint == [] for r in saved.rules)  # --apply-checks alone writes no flags
    assert main(["rules", "lint", str(path), "--no-embeddings", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["code_checks"] == {"already": 2, "proposed": 0, "applied": 0} and report["proposed_checks"] == []


def test_a_check_a_person_set_is_kept_over_the_proposal(tmp_path):
    from autorule.rules.lint import lint_rules

    rules = RuleSet.from_texts(["The response should be under 60 words."])
    rules.rules[0].check = CodeCheck(checker="autorule:word_range", params={"min_words": 10, "max_words": 59})
    report = lint_rules(rules, embed=False)
    assert report.proposals == {} and report.code_checked == 1
    assert report.with_checks().rules[0].check.checker == "autorule:word_range"


def test_every_gold_family_but_refusal_maps_to_its_labellers_checker():
    """The rules of `bench verifier-accuracy` map to the checker and parameters that label them, so
    code-checked rules give the labeller's verdict on every check they cover."""
    from autorule.bench.verifier_accuracy import families

    samples = ["Steps:\n1. Boil.\n2. Eat.", "HELLO THERE, FRIEND.", '"quoted"', "# Title\nWhy?", "```\nx\n```", "word " * 210]
    for fam in families():
        check = recognise(fam.rule)
        if fam.name == "refusal":
            assert check is None  # "such as" leaves the phrase list open: the LLM judges it
            continue
        assert check is not None, fam.name
        assert [check.run(t) for t in samples] == [fam.check(t) for t in samples], fam.name
