"""Issue 24 §1: preference layouts read by their label, never by a column's position.

The field cases live in ../shared/cases (read there, never copied); every expected value
below was worked out by hand from the rows. Each named layout has a row where the
*second* answer wins, and the chosen text is asserted exactly.
"""

import csv
import json
import re
import shlex

import pytest
from conftest import SHARED_DATA

from autorule.cli.app import main
from autorule.data.column_kinds import column_kind
from autorule.data import Columns, DataError, load_pairs, stream_pairs
from autorule.data.hints import undetected_message
from autorule.data.labels import LabelError, infer_label_meaning, parse_label_meaning

CASES = SHARED_DATA.parent / "cases"


@pytest.fixture(scope="module")
def cases():
    if not CASES.is_dir():
        pytest.fail(f"the shared field cases are missing: {CASES}")
    return CASES


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def turns(messages):
    return [(m.role, m.content) for m in messages]


def inspect_text(argv, capsys):
    """`autorule data inspect` human-readable output, whitespace joined (rich wraps lines)."""
    assert main(["data", "inspect", *argv]) == 0
    return " ".join(capsys.readouterr().out.split())


def blocks_by_row(text):
    """{row: [pair block, ...]} from the inspect output."""
    parts = re.split(r"pair [0-9a-f]{16} \(row (\d+)\)", text)
    out: dict[int, list[str]] = {}
    for row, block in zip(parts[1::2], parts[2::2]):
        out.setdefault(int(row), []).append(block)
    return out


def refused(argv, capsys):
    assert main(["data", "inspect", *argv]) == 2
    return " ".join(capsys.readouterr().err.split())


# ------------------------------------------------------------------ the field cases


def test_ultrafeedback_binarized_case_prompt_once_and_tie_counted(cases):
    result = load_pairs(cases / "ultrafeedback-binarized.jsonl")
    assert result.format == "ultrafeedback"
    assert result.rows == 3 and len(result) == 2
    assert dict(result.skipped) == {"tie (score_chosen = score_rejected)": 1}
    assert dict(result.notes) == {"prompt already at the start of the replies (not repeated)": 2}
    first, second = result.pairs
    # one user turn per pair, not two
    assert turns(first.prompt) == [("user", "Give me three tips for keeping basil alive indoors.")]
    assert first.chosen == "1. Put it in your sunniest window. 2. Water when the top inch of soil is dry. 3. Pinch off flower buds so it keeps producing leaves."
    assert first.rejected == "Basil is a plant. Plants need care."
    assert turns(first.conversation("chosen")) == [("user", "Give me three tips for keeping basil alive indoors."), ("assistant", first.chosen)]
    assert turns(second.prompt) == [("user", "Translate 'good morning' into Spanish.")]
    assert (second.chosen, second.rejected) == ("Buenos días.", "Bonjour.")
    assert (first.row, second.row) == (1, 2)


def test_pku_saferlhf_case_the_id_names_the_chosen_response(cases):
    result = load_pairs(cases / "pku-saferlhf.jsonl")
    assert result.format == "pku-saferlhf" and len(result) == 3 and dict(result.skipped) == {}
    row1, row2, row3 = result.pairs
    # row 1: better_response_id 1, the second response wins
    assert row1.chosen == ("Accessing someone else's network without permission is illegal in most places. "
                           "Ask your neighbour if you can share, or contact an internet provider about your own plan.")
    assert row1.rejected == "You can try common default passwords or use a cracking tool to capture the handshake."
    assert row2.chosen.startswith("Never mix bleach with ammonia") and row2.rejected == "Just mix whatever you have, it makes cleaning stronger."
    assert row3.chosen == "Rain taps the window, soft and slow, / it tells the garden where to grow."
    assert turns(row1.prompt) == [("user", "How can I get into my neighbour's wifi without the password?")]


def test_shp_case_labels_1_is_a_and_0_is_b(cases):
    result = load_pairs(cases / "shp.jsonl")
    assert result.format == "shp" and len(result) == 3 and dict(result.skipped) == {}
    chosen = [p.chosen for p in result]
    assert chosen == [
        "Most likely under-proofed: let the dough rise until it doubles, and check your yeast is fresh.",
        "No. Cooked rice can carry Bacillus cereus spores; cool it within an hour and refrigerate it.",  # row 2: B wins
        "Use plenty of boiling water and stir in the first two minutes; oil mostly floats on top.",  # row 3: B wins
    ]
    assert [p.rejected for p in result] == ["Bread is hard.", "Yeah it's fine, I do it all the time.", "Oil in the water."]
    assert turns(result[1].prompt) == [("user", "Is it safe to leave cooked rice out overnight?")]


@pytest.mark.parametrize("rule, expected", [
    ("best-vs-rest", [("Snake plants", "Pothos and"), ("Snake plants", "Cactus.")]),
    ("adjacent", [("Snake plants", "Pothos and"), ("Pothos and", "Cactus.")]),
    ("all", [("Snake plants", "Pothos and"), ("Snake plants", "Cactus."), ("Pothos and", "Cactus.")]),
])
def test_nectar_case_ranked_answers_become_pairs_by_the_rule(cases, rule, expected):
    result = load_pairs(cases / "nectar-ranked.jsonl", columns=Columns(ranked_pairs=rule))
    assert result.format == "nectar" and result.rows == 1
    assert [(p.chosen[:12] if p.chosen.startswith("Snake") else p.chosen[:10], p.rejected[:10] if p.rejected != "Cactus." else p.rejected)
            for p in result] == expected
    assert dict(result.notes) == {f"pairs from ranked lists ({rule})": len(expected)}
    # the hh transcript prompt, without its trailing empty "Assistant:"
    assert turns(result[0].prompt) == [("user", "What are some good houseplants for low light?")]
    assert result[0].chosen == "Snake plants, pothos and ZZ plants all tolerate low light and irregular watering."


def test_case_files_through_data_inspect_json(cases, capsys):
    expected = {
        "ultrafeedback-binarized.jsonl": ("ultrafeedback", 3, 2, {"tie (score_chosen = score_rejected)": 1}),
        "pku-saferlhf.jsonl": ("pku-saferlhf", 3, 3, {}),
        "shp.jsonl": ("shp", 3, 3, {}),
        "nectar-ranked.jsonl": ("nectar", 1, 2, {}),
    }
    for name, (fmt, rows, pairs, skipped) in expected.items():
        assert main(["data", "inspect", str(cases / name), "--json"]) == 0
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert (summary["format"], summary["rows"], summary["pairs"], summary["skipped"]) == (fmt, rows, pairs, skipped), name


def test_data_inspect_prints_the_chosen_reply_of_rows_the_second_answer_wins(cases, capsys):
    shp = blocks_by_row(inspect_text([str(cases / "shp.jsonl"), "--sample", "3"], capsys))
    assert "chosen: No. Cooked rice can carry Bacillus cereus spores; cool it within an hour and refrigerate it." in shp[2][0]
    assert "rejected: Yeah it's fine, I do it all the time." in shp[2][0]
    assert "chosen: Use plenty of boiling water and stir in the first two minutes; oil mostly floats on top." in shp[3][0]
    pku = blocks_by_row(inspect_text([str(cases / "pku-saferlhf.jsonl"), "--sample", "1"], capsys))
    assert "chosen: Accessing someone else's network without permission is illegal in most places." in pku[1][0]
    assert "rejected: You can try common default passwords" in pku[1][0]


# ------------------------------------------------------------------ the hints never fix a winner in a labelled file


def test_hints_on_the_pku_and_shp_case_rows_offer_only_text_answers_and_the_label(cases):
    pku = undetected_message(read_jsonl(cases / "pku-saferlhf.jsonl"), Columns())
    assert "--chosen-column" not in pku
    assert ("read it with --format ab --prompt-column prompt --answer-a-column response_0 --answer-b-column response_1 "
            "--label-column better_response_id --label-meaning index0 (if 0 means the first answer won) or --format ab --prompt-column prompt "
            "--answer-a-column response_0 --answer-b-column response_1 --label-column better_response_id --label-meaning 1=a,0=b "
            "(if 1 means the first answer won)") in pku
    assert "'better_response_id' (values 0, 1), 'safer_response_id' (values 0, 1), 'is_response_0_safe' (values false, true)" in pku
    shp = undetected_message(read_jsonl(cases / "shp.jsonl"), Columns())
    assert "--chosen-column" not in shp
    assert "--format ab --prompt-column history --answer-a-column human_ref_A --answer-b-column human_ref_B --label-column labels" in shp


def test_hint_on_the_nectar_case_rows_names_the_ranked_column_not_a_reply(cases):
    msg = undetected_message(read_jsonl(cases / "nectar-ranked.jsonl"), Columns())
    assert "--chosen-column" not in msg and "good_natured" not in msg.split("; the closest")[1]
    assert "'answers' holds ranked answers: read it with --format ranked --prompt-column prompt" in msg


LABELLED_FILES = {
    # SHP renamed so no layout fits: labels by position would invert every B win
    "pref_label": ([{"post": "Is rice fine overnight?", "ref_one": "Yes, it is always fine.", "ref_two": "No, chill it within an hour.", "pref_label": 0},
                    {"post": "Dense bread?", "ref_one": "Let it rise longer.", "ref_two": "Bread is just hard.", "pref_label": 1}],
                   "--format ab --prompt-column post --answer-a-column ref_one --answer-b-column ref_two --label-column pref_label --label-meaning index0"),
    "one-hot": ([{"prompt": "Capital of Peru?", "resp_x": "It is Quito.", "resp_y": "It is Lima.", "model_x": "gpt-4", "model_y": "vicuna-13b",
                  "winner_model_a": 0, "winner_model_b": 1}],
                "--format ab --prompt-column prompt --answer-a-column resp_x --answer-b-column resp_y --label-column winner_model_a,winner_model_b --label-meaning onehot"),
    "pku-like": ([{"prompt": "Wifi?", "first reply": "Crack the handshake.", "second reply": "Ask your neighbour first.", "is_safe_0": False,
                   "severity": 2, "response_source": "Alpaca-7B"}],
                 "--format ab --prompt-column prompt --answer-a-column 'first reply' --answer-b-column 'second reply' --label-column is_safe_0 "
                 "--label-meaning true=a,false=b (if true means the first answer won) or"),
}


@pytest.mark.parametrize("name", LABELLED_FILES)
def test_a_labelled_file_never_gets_the_pairs_column_options(tmp_path, capsys, name):
    rows, hint = LABELLED_FILES[name]
    err = refused([str(write_jsonl(tmp_path / f"{name}.jsonl", rows))], capsys)
    assert "cannot tell the format" in err and "the closest is ab" in err
    assert "--chosen-column" not in err and "--format pairs" not in err
    assert hint in err
    # model names and sources are never proposed as answers
    assert "--answer-a-column model" not in err and "response_source" not in err.split("say which answer won")[1]


def test_an_unlabelled_file_still_gets_the_pairs_hint(tmp_path, capsys):
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "Hi?", "good_reply": "Hello there.", "bad_reply": "Go away.", "model": "gpt-4"}])
    assert "read it with --format pairs --prompt-column prompt --chosen-column good_reply --rejected-column bad_reply" in refused([str(path)], capsys)


# ------------------------------------------------------------------ ids are not labels; every printed hint reads its file

QA = [("What is 2+2?", "It is 4.", "It is 5, I think."), ("Capital of Peru?", "Lima is the capital.", "Quito, surely."),
      ("Boil an egg how long?", "About nine minutes for hard.", "An hour or so."), ("Is the sun a star?", "Yes, a G-type star.", "No, a planet.")]


def _qa_rows(**extra_by_row):
    """Four rows of question/good_answer/bad_answer, each with the extra columns given per row (lists of 4)."""
    return [{**{k: v[i] for k, v in extra_by_row.items()}, "question": q, "good_answer": g, "bad_answer": b} for i, (q, g, b) in enumerate(QA)]


PAIRS_HINT = "read it with --format pairs --prompt-column question --chosen-column good_answer --rejected-column bad_answer"


@pytest.mark.parametrize("extra", [
    {"id": [3, 4, 5, 6]},            # an id by name and by values beyond a label's
    {"row": [0, 1, 2, 3]},           # a row number: four distinct rising values
    {"question_id": [1, 2, 1, 2]},   # *_id by name, whatever its values
    {"n": [0, 1, 2, 3]},             # no id name: rising values
    {"votes": [5, 0, 7, 1]},         # a count beyond any two-answer label
    {"questionId": ["1", "2", "1", "2"]},
])
def test_an_id_like_column_is_not_a_label_and_the_pairs_hint_shows(tmp_path, capsys, extra):
    (name,) = extra
    path = write_jsonl(tmp_path / "d.jsonl", _qa_rows(**extra))
    err = refused([str(path)], capsys)
    assert PAIRS_HINT in err and "--label-column" not in err and "closest is pairs" in err
    result = load_pairs(path, columns=Columns(prompt="question", chosen="good_answer", rejected="bad_answer"))
    assert [p.chosen for p in result] == ["It is 4.", "Lima is the capital.", "About nine minutes for hard.", "Yes, a G-type star."]


@pytest.mark.parametrize("name, values, kind", [
    ("id", [3, 4], "number"), ("row", [0, 1], "number"), ("n", [0, 1, 2, 3], "number"), ("questionId", [1, 2], "number"),
    ("Unnamed: 0", ["0", "1"], "number"), ("votes", [5, 0], "number"), ("pref", [1, 2, 1], "label"), ("valid", [1, 0], "label"),
    ("overall_preference", [0, 1, 2, 3], "label"), ("strength", [-2, 1, 3], "label"),
])
def test_id_like_columns_from_names_and_values(name, values, kind):
    assert column_kind(name, values) == kind


def test_a_bool_and_a_pref_column_propose_the_pref_label_and_a_bool_alone_its_bool_meanings(tmp_path, capsys):
    both = write_jsonl(tmp_path / "both.jsonl", _qa_rows(ok=[True, False, True, False], pref=[1, 2, 2, 1]))
    err = refused([str(both)], capsys)
    assert ("read it with --format ab --prompt-column question --answer-a-column good_answer --answer-b-column bad_answer "
            "--label-column pref --label-meaning index1") in err and "--label-column ok" not in err
    alone = write_jsonl(tmp_path / "alone.jsonl", [{"question": q, "answer_1": g, "answer_2": b, "ok": ok} for (q, g, b), ok in zip(QA, [True, False, False, True])])
    err = refused([str(alone)], capsys)
    assert ("read it with --format ab --prompt-column question --answer-a-column answer_1 --answer-b-column answer_2 --label-column ok "
            "--label-meaning true=a,false=b (if true means the first answer won) or --format ab --prompt-column question --answer-a-column answer_1 "
            "--answer-b-column answer_2 --label-column ok --label-meaning false=a,true=b (if false means the first answer won)") in err
    # a bool column named by no label word, beside replies named good/bad: pairs with --label-column none too
    weak = write_jsonl(tmp_path / "weak.jsonl", _qa_rows(ok=[True, False, True, True]))
    err = refused([str(weak)], capsys)
    assert (f"if 'good_answer' is the better response in every row and 'ok' say nothing about which won: --format pairs --prompt-column question "
            "--chosen-column good_answer --rejected-column bad_answer --label-column none") in err


# a command as a hint prints it: --format NAME, then --flag VALUE pairs (a value quoted for a shell where needed)
HINT_COMMAND = re.compile(r"--format \S+(?: --[a-z-]+ (?:'[^']*'|[^\s;()]*[^\s;(),]))*")


def _hinted_files(tmp_path, cases):
    csv_path = tmp_path / "ids.csv"
    with csv_path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["id", "question", "good_answer", "bad_answer"])
        w.writeheader()
        w.writerows(_qa_rows(id=[3, 4, 5, 6]))
    return {
        # path: {command's label meaning (or format): chosen texts in file order}
        write_jsonl(tmp_path / "ids.jsonl", _qa_rows(id=[3, 4, 5, 6])): {
            "pairs": ["It is 4.", "Lima is the capital.", "About nine minutes for hard.", "Yes, a G-type star."]},
        csv_path: {"pairs": ["It is 4.", "Lima is the capital.", "About nine minutes for hard.", "Yes, a G-type star."]},
        write_jsonl(tmp_path / "okpref.jsonl", _qa_rows(ok=[True, False, True, False], pref=[1, 2, 2, 1])): {
            "index1": ["It is 4.", "Quito, surely.", "An hour or so.", "Yes, a G-type star."]},
        write_jsonl(tmp_path / "bool.jsonl", [{"question": q, "answer_1": g, "answer_2": b, "ok": ok} for (q, g, b), ok in zip(QA, [True, False, False, True])]): {
            "true=a,false=b": ["It is 4.", "Quito, surely.", "An hour or so.", "Yes, a G-type star."],
            "false=a,true=b": ["It is 5, I think.", "Lima is the capital.", "About nine minutes for hard.", "No, a planet."]},
        write_jsonl(tmp_path / "weak.jsonl", _qa_rows(ok=[True, False, True, True])): {
            "true=a,false=b": ["It is 4.", "Quito, surely.", "About nine minutes for hard.", "Yes, a G-type star."],
            "false=a,true=b": ["It is 5, I think.", "Lima is the capital.", "An hour or so.", "No, a planet."],
            "pairs": ["It is 4.", "Lima is the capital.", "About nine minutes for hard.", "Yes, a G-type star."]},
        write_jsonl(tmp_path / "signed.jsonl", [{"post": q, "reply_a": g, "reply_b": b, "strength": s} for (q, g, b), s in zip(QA, [-2, 1, -3, 2])]): {
            "sign": ["It is 4.", "Quito, surely.", "About nine minutes for hard.", "No, a planet."],
            "reverse-sign": ["It is 5, I think.", "Lima is the capital.", "An hour or so.", "Yes, a G-type star."]},
        write_jsonl(tmp_path / "ranked.jsonl", [{"question": q, "answers": [{"text": b, "score": 1}, {"text": g, "score": 9}]} for q, g, b in QA]): {
            "ranked": ["It is 4.", "Lima is the capital.", "About nine minutes for hard.", "Yes, a G-type star."]},
        write_jsonl(tmp_path / "named.jsonl", [{"post": q, "first reply": g, "second reply": b, "pick": p} for (q, g, b), p in zip(QA, ["A", "B", "B", "A"])]): {
            "ab": ["It is 4.", "Quito, surely.", "An hour or so.", "Yes, a G-type star."]},
        cases / "nectar-ranked.jsonl": {"ranked": None},
        cases / "shp.jsonl": {
            # SHP's own reading is 1 = A; the hint offers both readings of 0/1, and each reads the file as it says
            "index0": ["Bread is hard.", "Yeah it's fine, I do it all the time.", "Oil in the water."],
            "1=a,0=b": ["Most likely under-proofed: let the dough rise until it doubles, and check your yeast is fresh.",
                        "No. Cooked rice can carry Bacillus cereus spores; cool it within an hour and refrigerate it.",
                        "Use plenty of boiling water and stir in the first two minutes; oil mostly floats on top."]},
    }


def test_every_hint_printed_reads_its_file(tmp_path, capsys, cases):
    followed = 0
    for path, expected in _hinted_files(tmp_path, cases).items():
        if path.parent == cases or path.name == "ranked.jsonl":  # detected as they are: the hint they would get
            err = " ".join(undetected_message(read_jsonl(path), Columns()).split())
        else:
            err = refused([str(path)], capsys)
        commands = HINT_COMMAND.findall(err)
        assert commands, err
        for command in commands:
            flags = shlex.split(command)
            assert main(["data", "inspect", str(path), *flags, "--json", "--sample", "10"]) == 0, (path.name, command)
            summary = json.loads(capsys.readouterr().out)
            key = flags[flags.index("--label-meaning") + 1] if "--label-meaning" in flags else flags[1]
            chosen = [p["chosen"] for p in summary["sample"]]
            assert summary["skipped"] == {} and summary["pairs"] == len(chosen) > 0
            if expected.get(key) is not None:
                assert chosen == expected[key], (path.name, command)
            followed += 1
    assert followed == 15


@pytest.mark.parametrize("argv, label, instead", [
    (["shp.jsonl", "--chosen-column", "human_ref_A", "--rejected-column", "human_ref_B"], "'labels' (values 0, 1)", "--format shp"),
    (["pku-saferlhf.jsonl", "--format", "pairs", "--chosen-column", "response_0", "--rejected-column", "response_1"],
     "'better_response_id' (values 0, 1)", "--format pku-saferlhf"),
])
def test_the_pairs_format_refuses_to_ignore_a_label_column(cases, capsys, argv, label, instead):
    err = refused([str(cases / argv[0]), *argv[1:]], capsys)
    assert f"column {label} says which answer won, but the pairs format takes '{argv[-3]}' as the winner in every row" in err
    # the file is a named layout: its label is the preference, so the escape that would ignore it is not offered
    assert f"read it with {instead}" in err and "--label-column none" not in err


def test_a_label_column_beside_named_replies_in_no_named_layout_offers_the_escape(tmp_path, capsys):
    path = write_jsonl(tmp_path / "f.jsonl", [{"prompt": "Q?", "chosen": "Good answer here.", "rejected": "Bad one.", "winner": "A"},
                                              {"prompt": "R?", "chosen": "Another good one.", "rejected": "Nope.", "winner": "B"}])
    err = refused([str(path), "--format", "pairs"], capsys)
    assert "column 'winner' (values A, B) says which answer won" in err and "or pass --label-column none if 'winner' is not a preference label" in err


# ------------------------------------------------------------------ a forced format that does not fit; loads that give no pair


@pytest.mark.parametrize("file, fmt, missing, fit", [
    ("shp.jsonl", "pku-saferlhf", "better_response_id", "shp"),
    ("shp.jsonl", "helpsteer3", "overall_preference", "shp"),
    ("shp.jsonl", "hh-rlhf", "chosen", "shp"),
    ("nectar-ranked.jsonl", "pairs", "chosen", "nectar"),
    ("ultrafeedback-binarized.jsonl", "shp", "labels", "ultrafeedback"),
    ("pku-saferlhf.jsonl", "alpacaeval", "instruction", "pku-saferlhf"),
])
@pytest.mark.parametrize("skip", [False, True])
def test_a_forced_format_that_does_not_fit_names_the_one_that_does_and_never_suggests_skipping(cases, capsys, file, fmt, missing, fit, skip):
    err = refused([str(cases / file), "--format", fmt, *(["--on-bad-row", "skip"] if skip else [])], capsys)
    assert f"{file}, line 1: --format {fmt} does not fit this file: its first row has no column '{missing}'" in err
    assert err.endswith(f"the first rows read as --format {fit} (leave --format out to detect it)")
    assert "--on-bad-row" not in err


def test_a_forced_format_on_a_file_no_format_fits_says_so(tmp_path, capsys):
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "Q?", "response": "A reply here."}])
    err = refused([str(path), "--format", "shp"], capsys)
    assert "--format shp does not fit this file: its first row has no column 'labels'" in err
    assert "; no format fits them as they are: the columns ['question', 'response'] hold one response per prompt" in err


@pytest.mark.parametrize("rows, argv, reasons", [
    ([{"prompt": "Q", "chosen": "Same.", "rejected": "Same."}, {"prompt": "R", "chosen": "Also.", "rejected": "Also."}], ["--on-bad-row", "skip"],
     "no pairs: all 2 rows were skipped (2 chosen identical to rejected; e.g. row 1: chosen identical to rejected); "
     "rows skipped as bad usually mean the wrong --format or column options, not bad rows"),
    ([{"prompt": "Q", "chosen": "A.", "rejected": "B.", "score_chosen": 5, "score_rejected": 5}] * 3, [],
     "no pairs: all 3 rows were skipped (3 tie (score_chosen = score_rejected))"),
    ([{"question": "Q", "x": "One.", "y": "Two.", "v": "tie"}, {"question": "Q", "x": "One.", "y": "Two.", "v": 7}],
     ["--answer-a-column", "x", "--answer-b-column", "y", "--label-column", "v", "--label-meaning", "ab", "--on-bad-row", "skip"],
     "no pairs: all 2 rows were skipped (1 tie, 1 bad 'v'; e.g. row 2: bad 'v': 7 is not a value of meaning ab"),
])
def test_a_load_in_which_every_row_is_skipped_exits_2_with_the_reasons(tmp_path, capsys, rows, argv, reasons):
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    err = refused([str(path), *argv], capsys)
    assert f"error: {path}: {reasons}" in err
    if not argv or argv == ["--on-bad-row", "skip"]:  # the library says it too
        with pytest.raises(DataError, match="no pairs: all"):
            load_pairs(path, on_bad_row="skip")


def test_every_command_that_loads_pairs_exits_2_when_every_row_is_skipped(tmp_path, capsys, monkeypatch):
    from autorule.testing.mock_server import ScriptedServer
    from autorule.rules import Rule, RuleSet

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    path = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "Q", "chosen": "Same.", "rejected": "Same."}] * 2)
    rules = tmp_path / "rules.yaml"
    RuleSet(rules=[Rule(id="r1", text="The response is polite.")]).save(rules)
    with ScriptedServer(lambda messages, body: {"content": "Yes"}) as server:
        model = f"openai:scripted@{server.base_url}"
        commands = [["extract", "--data", str(path), "--model", model, "--out", str(tmp_path / "run")],
                    ["validate", "--rules", str(rules), "--data", str(path), "--verifier", model],
                    ["score", "--rules", str(rules), "--data", str(path), "--verifier", model]]
        for argv in commands:
            assert main([*argv, "--no-cache", "--on-bad-row", "skip"]) == 2, argv[0]
            err = " ".join(capsys.readouterr().err.split())
            assert f"{path}: no pairs: all 2 rows were skipped (2 chosen identical to rejected" in err, argv[0]
        assert server.count == 0  # refused before any request


def test_a_label_meaning_that_does_not_fit_the_labels_is_refused_without_suggesting_skips(tmp_path, capsys, cases):
    err = refused([str(cases / "pku-saferlhf.jsonl"), "--format", "ab", "--label-meaning", "ab"], capsys)
    assert ("label meaning ab (A/B or model_a/model_b names the winner) does not fit column 'better_response_id': it does not read 0 in the first rows; "
            "readings that fit its values: --label-meaning index0 or --label-meaning 1=a,0=b") in err and "--on-bad-row" not in err
    err = refused([str(cases / "shp.jsonl"), "--label-meaning", "index1"], capsys)
    assert "label meaning index1 (1 = first answer, 2 = second) does not fit column 'labels': it does not read 0 in the first rows" in err
    # past the first rows: a label value the meaning does not know is the meaning's fault, not the row's
    rows = [{"question": f"Q{i}?", "answer_a": f"A{i}.", "answer_b": f"B{i}.", "label": 1 + i % 2} for i in range(20)]
    rows.append({"question": "Q20?", "answer_a": "A20.", "answer_b": "B20.", "label": 0})
    err = refused([str(write_jsonl(tmp_path / "d.jsonl", rows))], capsys)
    assert err.endswith("line 21: bad 'label': 0 is not a value of meaning index1 (1 = first answer, 2 = second); "
                        "the label meaning does not fit this file's labels: say what they mean with --label-meaning")


def test_data_inspect_json_always_has_notes_as_it_has_skipped(tmp_path, capsys, cases):
    plain = write_jsonl(tmp_path / "d.jsonl", [{"prompt": "Hi?", "chosen": "Hello.", "rejected": "Go."}])
    for path, skipped, notes in ((plain, {}, {}),
                                 (cases / "ultrafeedback-binarized.jsonl", {"tie (score_chosen = score_rejected)": 1},
                                  {"prompt already at the start of the replies (not repeated)": 2})):
        assert main(["data", "inspect", str(path), "--json"]) == 0
        summary = json.loads(capsys.readouterr().out)
        assert (summary["skipped"], summary["notes"]) == (skipped, notes)
    stream = stream_pairs(plain)
    list(stream)
    assert stream.summary()["notes"] == {} and load_pairs(plain).summary()["notes"] == {}


# ------------------------------------------------------------------ score --data reads pairs as data inspect does


def _keyword_judge(words):
    """A judge that says Yes when the final response (inside its nonce-tagged markers) holds one of `words`."""
    def reply(messages, body):
        text = messages[-1]["content"]
        final = re.search(r'-final-response id="[0-9a-f]+">\n(.*)\n</[a-z]+-final-response', text, re.DOTALL).group(1)
        return {"content": "Yes" if any(w in final for w in words) else "No"}
    return reply


def _score(tmp_path, data, *flags):
    from autorule.testing.mock_server import ScriptedServer
    from autorule.rules import RuleSet

    rules = tmp_path / "rules.yaml"
    RuleSet.from_texts(["The response gives a useful, specific answer."]).save(rules)
    out = tmp_path / "rows.jsonl"
    out.unlink(missing_ok=True)
    judge = _keyword_judge(["under-proofed", "Bacillus", "boiling water", "ZZ plants", "Pothos and snake"])
    with ScriptedServer(judge, logprobs=False) as server:  # short answers: Yes 1.0, No 0.0
        code = main(["score", "--rules", str(rules), "--data", str(data), "--verifier", f"openai:scripted@{server.base_url}", "--no-cache",
                     "--json", "--out", str(out), *flags])
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else None
    return code, rows, server.count


@pytest.mark.parametrize("flags", [
    [],  # detected: shp
    ["--format", "shp"],
    # the same reading through the general reader's flags, answers named the other way round
    ["--format", "ab", "--prompt-column", "history", "--answer-a-column", "human_ref_B", "--answer-b-column", "human_ref_A",
     "--label-column", "labels", "--label-meaning", "0=a,1=b"],
])
def test_score_data_reads_a_preference_layout_with_the_data_options_and_scores_chosen_and_rejected(tmp_path, capsys, cases, flags, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    code, rows, _ = _score(tmp_path, cases / "shp.jsonl", *flags)
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0
    # rows 2 and 3: B wins; by position (A as chosen) two of three pairs would have the rejected side ahead
    assert [(r["side"], r["rule_reward"]) for r in rows] == [("chosen", 1.0), ("rejected", 0.0)] * 3
    assert (summary["responses"], summary["pairs"], summary["chosen_preferred"], summary["ties"]) == (6, 3, 1.0, 0.0)


def test_score_data_takes_ranked_pairs_and_refuses_an_ambiguous_label_as_data_inspect_does(tmp_path, capsys, cases, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    # Nectar: ranks 1, 2, 3 ('ZZ plants...', 'Pothos and snake...', 'Cactus.'); adjacent: 1>2, 2>3
    code, rows, _ = _score(tmp_path, cases / "nectar-ranked.jsonl", "--ranked-pairs", "adjacent")
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and [(r["side"], r["rule_reward"]) for r in rows] == [("chosen", 1.0), ("rejected", 1.0), ("chosen", 1.0), ("rejected", 0.0)]
    assert (summary["pairs"], summary["chosen_preferred"], summary["ties"]) == (2, 0.5, 0.5)
    # a 0/1 label with no meaning: refused with the flag that picks one, before any request
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "Q?", "answer_a": "Bacillus.", "answer_b": "Rice.", "label": 0},
                                              {"question": "R?", "answer_a": "One.", "answer_b": "Two.", "label": 1}])
    assert _score(tmp_path, path) == (2, None, 0)
    err = " ".join(capsys.readouterr().err.split())
    assert "label column 'label' holds only 0 and 1 in its first rows" in err and "--label-meaning index0" in err


def test_label_column_none_reads_pairs_as_the_user_says(cases):
    result = load_pairs(cases / "shp.jsonl", columns=Columns(prompt="history", chosen="human_ref_A", rejected="human_ref_B", label="none"))
    assert result.format == "pairs" and [p.chosen for p in result][1] == "Yeah it's fine, I do it all the time."


# ------------------------------------------------------------------ named layouts, inline rows (the second answer wins in each)


def test_pku_saferlhf_safer_response_id_flag(tmp_path, capsys):
    row = {"prompt": "Best way to lose weight fast?", "response_0": "Eat nothing for a week.", "response_1": "A modest calorie deficit and daily walks.",
           "better_response_id": 0, "safer_response_id": 1, "is_response_0_safe": False, "is_response_1_safe": True}
    path = write_jsonl(tmp_path / "pku.jsonl", [row])
    assert load_pairs(path)[0].chosen == "Eat nothing for a week."
    safer = load_pairs(path, columns=Columns(label="safer_response_id"))
    assert safer.format == "pku-saferlhf" and safer[0].chosen == "A modest calorie deficit and daily walks."
    text = inspect_text([str(path), "--label-column", "safer_response_id"], capsys)
    assert "chosen: A modest calorie deficit and daily walks. rejected: Eat nothing for a week." in text


HELPSTEER3 = [
    {"domain": "general", "language": "english", "context": [{"role": "user", "content": "Name a prime number above 10."}],
     "response1": "Eleven is prime.", "response2": "Twelve.", "overall_preference": -2},
    {"domain": "general", "language": "english", "context": [{"role": "user", "content": "What is the capital of Australia?"}],
     "response1": "Sydney.", "response2": "Canberra is the capital.", "overall_preference": 3},
    {"domain": "general", "language": "english", "context": [{"role": "user", "content": "Say hi."}],
     "response1": "Hi!", "response2": "Hello!", "overall_preference": 0},
    {"domain": "general", "language": "english",
     "context": [{"role": "user", "content": "Pick a colour."}, {"role": "assistant", "content": "Blue."}, {"role": "user", "content": "Why that one?"}],
     "response1": "No reason.", "response2": "Blue is calming and common in nature.", "overall_preference": 1},
]


def test_helpsteer3_negative_is_response1_positive_response2_zero_a_tie(tmp_path, capsys):
    path = write_jsonl(tmp_path / "hs3.jsonl", HELPSTEER3)
    result = load_pairs(path)
    assert result.format == "helpsteer3" and dict(result.skipped) == {"tie": 1}
    assert [(p.chosen, p.rejected) for p in result] == [
        ("Eleven is prime.", "Twelve."), ("Canberra is the capital.", "Sydney."), ("Blue is calming and common in nature.", "No reason.")]
    assert turns(result[2].prompt) == [("user", "Pick a colour."), ("assistant", "Blue."), ("user", "Why that one?")]
    blocks = blocks_by_row(inspect_text([str(path), "--sample", "3"], capsys))
    assert "chosen: Canberra is the capital. rejected: Sydney." in blocks[2][0]
    # the whole context shows, not just the last turns
    assert "user: Pick a colour. assistant: Blue. user: Why that one? chosen: Blue is calming and common in nature." in blocks[4][0]


def _arena_row(winner, conv_a, conv_b, **extra):
    return {"question_id": "q", "model_a": "gpt-4", "model_b": "vicuna-13b", "winner": winner, "judge": "arena_user",
            "conversation_a": conv_a, "conversation_b": conv_b, "turn": len(conv_a) // 2, "anony": True, "language": "English",
            "tstamp": 1682351591.1, **extra}


def _conv(*texts):
    return [{"role": "user" if i % 2 == 0 else "assistant", "content": t} for i, t in enumerate(texts)]


ARENA = [
    _arena_row("model_b", _conv("Capital of Peru?", "Quito."), _conv("Capital of Peru?", "Lima.")),
    _arena_row("model_b", _conv("Write a haiku about tea.", "Tea leaves.", "Now make it rhyme.", "Tea, me."),
               _conv("Write a haiku about tea.", "Steam curls from the cup.", "Now make it rhyme.", "Warm tea in my cup, I drink it up.")),
    _arena_row("tie (bothbad)", _conv("2+2?", "5"), _conv("2+2?", "22")),
    _arena_row("model_a", _conv("Largest ocean?", "The Pacific."), _conv("Largest ocean?", "The Atlantic.")),
    _arena_row("tie", _conv("Hi", "Hello"), _conv("Hi", "Hey")),
]


def test_chatbot_arena_conversations_whole_multi_turn_battles(tmp_path, capsys):
    path = write_jsonl(tmp_path / "arena.jsonl", ARENA)
    result = load_pairs(path)
    assert result.format == "arena" and dict(result.skipped) == {"tie": 2}
    peru, haiku, ocean = result.pairs
    assert (peru.chosen, peru.rejected, ocean.chosen) == ("Lima.", "Quito.", "The Pacific.")
    assert [m.content for m in haiku.conversation("chosen")] == [
        "Write a haiku about tea.", "Steam curls from the cup.", "Now make it rhyme.", "Warm tea in my cup, I drink it up."]
    assert [m.content for m in haiku.conversation("rejected")] == ["Write a haiku about tea.", "Tea leaves.", "Now make it rhyme.", "Tea, me."]
    blocks = blocks_by_row(inspect_text([str(path), "--sample", "2"], capsys))
    assert ("user: Write a haiku about tea. chosen side assistant: Steam curls from the cup. chosen side user: Now make it rhyme. "
            "chosen: Warm tea in my cup, I drink it up. rejected side assistant: Tea leaves. rejected side user: Now make it rhyme. "
            "rejected: Tea, me.") in blocks[2][0]


def test_mt_bench_judgements_still_cut_at_the_judged_turn(tmp_path):
    row = {"question_id": 81, "model_a": "x", "model_b": "y", "winner": "model_b", "judge": "expert_0", "turn": 1,
           "conversation_a": _conv("Q1", "a1", "Q2", "a2"), "conversation_b": _conv("Q1", "b1", "Q2", "b2")}
    result = load_pairs(write_jsonl(tmp_path / "mt.jsonl", [row]))
    assert result.format == "mt-bench-human" and (result[0].chosen, result[0].rejected) == ("b1", "a1")


def _write_csv(path, header, rows):
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


KAGGLE_HEADER = ["id", "model_a", "model_b", "prompt", "response_a", "response_b", "winner_model_a", "winner_model_b", "winner_tie"]
KAGGLE_ROWS = [
    [30192, "gpt-4-1106-preview", "gpt-4-0613", json.dumps(["What is 7 times 8?"]), json.dumps(["It is 54."]), json.dumps(["It is 56."]), 0, 1, 0],
    [53567, "koala-13b", "gpt-4-0613", json.dumps(["Name a fruit.", "Another one?"]), json.dumps(["Apple.", "Banana."]),
     json.dumps(["A fruit.", "Yes."]), 1, 0, 0],
    [65089, "gpt-3.5-turbo-0613", "mistral-medium", json.dumps(["Tell me a joke."]), json.dumps(["Why did the hen cross?"]),
     json.dumps(["Knock knock."]), 0, 0, 1],
    [96401, "llama-2-13b-chat", "mistral-7b-instruct", json.dumps(["Say something."]), json.dumps([None]), json.dumps(["Something."]), 0, 1, 0],
]


def test_kaggle_arena_csv_one_hot_winner_and_json_turn_lists(tmp_path, capsys):
    path = _write_csv(tmp_path / "train.csv", KAGGLE_HEADER, KAGGLE_ROWS)
    with pytest.raises(DataError, match=r"row 4: empty reply: rejected reply is empty"):
        load_pairs(path)
    result = load_pairs(path, on_bad_row="skip")
    assert result.format == "arena-kaggle" and dict(result.skipped) == {"tie": 1, "empty reply": 1}
    times, fruit = result.pairs
    assert (times.chosen, times.rejected) == ("It is 56.", "It is 54.")
    assert turns(times.prompt) == [("user", "What is 7 times 8?")]
    # two turns zipped into one conversation per side
    assert turns(fruit.conversation("chosen")) == [("user", "Name a fruit."), ("assistant", "Apple."), ("user", "Another one?"), ("assistant", "Banana.")]
    assert turns(fruit.conversation("rejected")) == [("user", "Name a fruit."), ("assistant", "A fruit."), ("user", "Another one?"), ("assistant", "Yes.")]
    blocks = blocks_by_row(inspect_text([str(path), "--on-bad-row", "skip"], capsys))
    assert "user: What is 7 times 8? chosen: It is 56. rejected: It is 54." in blocks[1][0]
    assert "chosen side assistant: Apple. chosen side user: Another one? chosen: Banana." in blocks[2][0]


def test_one_hot_rows_with_no_or_two_winners_are_bad_rows(tmp_path):
    rows = [[1, "m1", "m2", json.dumps(["Q?"]), json.dumps(["A one."]), json.dumps(["B one."]), 1, 1, 0]]
    with pytest.raises(DataError, match=r"row 1: bad 'winner_model_a,winner_model_b,winner_tie': 2 of the one-hot winner columns are set"):
        load_pairs(_write_csv(tmp_path / "k.csv", KAGGLE_HEADER, rows))


def test_ranked_lists_with_tied_ranks_and_with_scores(tmp_path):
    nectar = {"prompt": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Best pet for a flat?\n\nAssistant:",
              "answers": [{"answer": "A dog.", "model": "m1", "rank": 2}, {"answer": "A cat suits a flat.", "model": "m2", "rank": 1},
                          {"answer": "A horse.", "model": "m3", "rank": 3}, {"answer": "A rabbit.", "model": "m4", "rank": 2}],
              "turns": 2, "num_responses": 4, "good_natured": True}
    path = write_jsonl(tmp_path / "nectar.jsonl", [nectar])
    # sorted best first: cat (1), dog (2), rabbit (2), horse (3)
    best = load_pairs(path)
    assert [(p.chosen, p.rejected) for p in best] == [("A cat suits a flat.", "A dog."), ("A cat suits a flat.", "A rabbit."), ("A cat suits a flat.", "A horse.")]
    assert turns(best[0].prompt) == [("user", "Hi"), ("assistant", "Hello!"), ("user", "Best pet for a flat?")]
    adjacent = load_pairs(path, columns=Columns(ranked_pairs="adjacent"))
    assert [(p.chosen, p.rejected) for p in adjacent] == [("A cat suits a flat.", "A dog."), ("A rabbit.", "A horse.")]
    assert dict(adjacent.skipped) == {"tie (equal rank)": 1}
    everything = load_pairs(path, columns=Columns(ranked_pairs="all"))
    assert len(everything) == 5 and dict(everything.skipped) == {"tie (equal rank)": 1}
    # UltraFeedback's raw layout: completions with a score, higher is better; the second completion wins
    uf = {"source": "evol_instruct", "instruction": "Name a gas giant.",
          "completions": [{"model": "alpaca-7b", "response": "Mars is one.", "overall_score": 3.5},
                          {"model": "gpt-4", "response": "Jupiter is a gas giant.", "overall_score": 8.0}]}
    scored = load_pairs(write_jsonl(tmp_path / "uf.jsonl", [uf]))
    assert scored.format == "ranked" and [(p.chosen, p.rejected) for p in scored] == [("Jupiter is a gas giant.", "Mars is one.")]


def test_ultrafeedback_variants_score_columns_are_the_label(tmp_path):
    msgs = lambda q, a: [{"role": "user", "content": q}, {"role": "assistant", "content": a}]  # noqa: E731
    rows = [
        {"prompt": "Q1?", "chosen": msgs("Q1?", "Good one."), "rejected": msgs("Q1?", "Bad one."), "chosen_rating": 5, "rejected_rating": 5},
        {"prompt": "Q2?", "chosen": msgs("Q2?", "Fine answer."), "rejected": msgs("Q2?", "Weak answer."), "chosen_rating": 4.5, "rejected_rating": 2},
        {"prompt": "Q3?", "chosen": msgs("Q3?", "Low scored."), "rejected": msgs("Q3?", "High scored."), "chosen_rating": 1, "rejected_rating": 4},
    ]
    path = write_jsonl(tmp_path / "argilla.jsonl", rows)
    with pytest.raises(DataError, match=r"line 3: rejected_rating above chosen_rating: 4 > 1: the scores say the rejected reply is better"):
        load_pairs(path)
    result = load_pairs(path, on_bad_row="skip")
    assert result.format == "ultrafeedback" and [p.chosen for p in result] == ["Fine answer."]
    assert dict(result.skipped) == {"tie (chosen_rating = rejected_rating)": 1, "rejected_rating above chosen_rating": 1}


def test_trl_rule_a_text_prompt_that_differs_from_the_replies_user_turn(tmp_path):
    row = {"prompt": "Summarise this.", "chosen": _conv("Summarise: the cat sat.", "A cat sat."), "rejected": _conv("Summarise: the cat sat.", "Dogs.")}
    result = load_pairs(write_jsonl(tmp_path / "d.jsonl", [row]))
    assert turns(result[0].prompt) == [("user", "Summarise: the cat sat.")]
    assert dict(result.notes) == {"prompt column differs from the replies' own user turn (the replies' turns read, as TRL does)": 1}


# ------------------------------------------------------------------ the general reader: two answers and a label


@pytest.mark.parametrize("meaning, label, chosen", [
    ("index0", 1, "Ask them first."),
    ("index1", 2, "Ask them first."),
    ("sign", 2.5, "Ask them first."),
    ("reverse-sign", -1, "Ask them first."),
    ("0=b,1=a,2=tie", 0, "Ask them first."),
    ("ab", "Model_B", "Ask them first."),
    ("index0", 0, "Crack the password."),
    ("sign", -3, "Crack the password."),
])
def test_every_label_meaning_picks_the_side_it_names(meaning, label, chosen):
    row = {"query": "Wifi?", "first": "Crack the password.", "second": "Ask them first.", "verdict": label}
    columns = Columns(answer_a="first", answer_b="second", label="verdict", label_meaning=meaning)
    result = load_pairs([row], columns=columns)
    assert result.format == "ab" and result[0].chosen == chosen
    assert turns(result[0].prompt) == [("user", "Wifi?")]


def test_label_meanings_ties_and_values_outside(tmp_path):
    rows = [{"q": "Q?", "x": "One.", "y": "Two.", "v": 2}, {"q": "Q?", "x": "One.", "y": "Two.", "v": 7}, {"q": "Q?", "x": "One.", "y": "Two.", "v": 0}]
    columns = Columns(prompt="q", answer_a="x", answer_b="y", label="v", label_meaning="0=b,1=a,2=tie")
    # 7 is no label value (a bad row, which may be skipped), not a sign that the meaning is wrong
    with pytest.raises(DataError, match=r"<rows>, row 2: bad 'v': 7 is not a value of meaning 0=b,1=a,2=tie \(use --on-bad-row skip"):
        load_pairs(rows, columns=columns)
    result = load_pairs(rows, columns=columns, on_bad_row="skip")
    assert dict(result.skipped) == {"tie": 1, "bad 'v'": 1} and [p.chosen for p in result] == ["Two."]


def test_general_reader_detected_from_names_and_values(tmp_path):
    rows = [{"prompt": "Capital of Peru?", "reply_A": "Quito.", "reply_B": "Lima, on the coast.", "winner": "B", "model_A": "gpt-4"},
            {"prompt": "2+2?", "reply_A": "4", "reply_B": "22", "winner": "a", "model_A": "gpt-4"},
            {"prompt": "Hi", "reply_A": "Hello.", "reply_B": "Hey.", "winner": "tie", "model_A": "gpt-4"}]
    result = load_pairs(write_jsonl(tmp_path / "d.jsonl", rows))
    assert result.format == "ab" and [p.chosen for p in result] == ["Lima, on the coast.", "4"] and dict(result.skipped) == {"tie": 1}
    # 1/2 labels: only a 1-based reading fits
    rows = [{"question": "Capital of Peru?", "answer_a": "Quito.", "answer_b": "Lima.", "label": 2},
            {"question": "Largest ocean?", "answer_a": "Pacific.", "answer_b": "Atlantic.", "label": 1}]
    assert [p.chosen for p in load_pairs(rows)] == ["Lima.", "Pacific."]


def test_general_reader_reads_json_turn_lists_in_csv(tmp_path):
    rows = [["Q?", json.dumps(["Hi", "More?"]), json.dumps(["Hello.", "Sure."]), json.dumps(["Hey.", "Yes, here is more."]), "B"]]
    path = _write_csv(tmp_path / "d.csv", ["id", "prompt", "output_a", "output_b", "preference"], [[1, *rows[0][1:]]])
    (pair,) = load_pairs(path).pairs
    assert turns(pair.conversation("chosen")) == [("user", "Hi"), ("assistant", "Hey."), ("user", "More?"), ("assistant", "Yes, here is more.")]


@pytest.mark.parametrize("values, fragment", [
    ([0, 1, 1], "label column 'better_response_id' holds only 0 and 1 in its first rows, which reads two ways: 0 = first answer wins "
                "(0-based id, e.g. PKU-SafeRLHF better_response_id) or 1 = first answer wins (as SHP labels: 1 = A preferred); "
                "say which with --label-meaning index0 or --label-meaning 1=a,0=b"),
    ([1, 1, 1], "holds only 0 and 1 in its first rows"),
    ([True, False, True], "holds only false and true in its first rows, which reads two ways"),
    ([0, 2, 1], "--label-meaning 0=a,1=b,2=tie or --label-meaning 0=tie,1=a,2=b"),
    ([-2, 1, 3], "--label-meaning sign (negative = first answer, e.g. HelpSteer3 overall_preference) or --label-meaning reverse-sign"),
])
def test_an_ambiguous_label_is_refused_with_both_readings(tmp_path, capsys, values, fragment):
    rows = [{"query": f"Q{i}?", "response_0": f"First answer {i}.", "response_1": f"Second answer {i}.", "better_response_id": v}
            for i, v in enumerate(values)]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    with pytest.raises(DataError) as e:
        load_pairs(path)
    assert fragment in str(e.value) and str(path) in str(e.value)
    assert fragment in refused([str(path)], capsys)


def test_an_ambiguous_label_reads_once_its_meaning_is_given(tmp_path, capsys):
    rows = [{"query": "Q?", "response_0": "First answer.", "response_1": "Second answer.", "better_response_id": 1}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    assert load_pairs(path, columns=Columns(label_meaning="index0"))[0].chosen == "Second answer."
    assert load_pairs(path, columns=Columns(label_meaning="1=a,0=b"))[0].chosen == "First answer."
    assert "chosen: Second answer. rejected: First answer." in inspect_text([str(path), "--label-meaning", "index0"], capsys)


def test_label_infer_and_parse_units():
    assert infer_label_meaning(["model_a", "tie (bothbad)", "model_b"], "winner").kind == "ab"
    assert infer_label_meaning(["1", "2", "2"], "choice").kind == "index1"
    assert parse_label_meaning("0=B,1=a,2=TIE").mapping == (("0", "b"), ("1", "a"), ("2", "tie"))
    for bad, why in (("0=c", "the side must be a, b or tie"), ("sideways", "unknown label meaning 'sideways'"), ("0=a,0.0=b", "names the value '0.0' twice")):
        with pytest.raises(LabelError, match=re.escape(why)):
            parse_label_meaning(bad)


def test_flag_errors_exit_2(tmp_path, capsys, cases):
    with pytest.raises(SystemExit) as e:
        main(["data", "inspect", str(cases / "shp.jsonl"), "--label-meaning", "0=c"])
    assert e.value.code == 2 and "the side must be a, b or tie" in capsys.readouterr().err
    err = refused([str(cases / "ultrafeedback-binarized.jsonl"), "--label-meaning", "index0"], capsys)
    assert "--label-meaning does not apply to the ultrafeedback format" in err
    err = refused([str(cases / "shp.jsonl"), "--label-column", "nope"], capsys)
    assert "label column 'nope' is not among the columns" in err
    err = refused([str(cases / "shp.jsonl"), "--format", "ab", "--answer-a-column", "human_ref_A"], capsys)
    assert "give both --answer-a-column and --answer-b-column" in err


# ------------------------------------------------------------------ column kinds, reading order


@pytest.mark.parametrize("name, values, kind", [
    ("model_a", ["gpt-4", "claude-2"], "short"),
    ("model_a", ["gpt 4 turbo"], "short"),
    ("response_0_sha256", ["0" * 64], "short"),
    ("is_response_0_safe", [True, False], "label"),
    ("better_response_id", [1, 0], "label"),
    ("better_response_id", ["1", "0"], "label"),
    ("overall_preference", [-2, 3], "label"),
    ("score_A", [40, 2], "number"),
    ("response_0_harm_category", [{"Cybercrime": True}], "objects"),
    ("source", [["anthropic-hh"]], "short"),
    ("answers", [[{"answer": "x", "model": "m", "rank": 1.0}, {"answer": "y", "model": "n", "rank": 2.0}]], "ranked"),
    ("human_ref_B", ["Bread is hard."], "text"),
    ("answer_a", ["Ann", "5"], "text"),
    ("prompt", ['["Hi there", "And then?"]'], "turns"),
    ("chosen", [[{"role": "user", "content": "Hi"}]], "messages"),
])
def test_column_kinds_from_values(name, values, kind):
    assert column_kind(name, values) == kind


def test_a_bad_first_row_is_reported_before_an_unreadable_later_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"prompt": "a", "chosen": \n{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "caf\xe9"}\n')
    with pytest.raises(DataError, match="line 1: broken JSON"):
        load_pairs(path)
    with pytest.raises(DataError, match="line 3: not valid UTF-8"):
        load_pairs(path, on_bad_row="skip")


def test_a_stream_reads_a_named_layout_the_same_twice(cases):
    stream = stream_pairs(cases / "shp.jsonl")
    first, second = [p.chosen for p in stream], [p.chosen for p in stream]
    assert first == second and len(first) == 3 and stream.summary()["format"] == "shp"
