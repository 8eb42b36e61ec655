"""Issue 14's table: each usual mistake, its exit code and the message that names it.

Every row runs the real CLI in an empty working directory: a refused setting must leave
no file or folder behind, and no row may end in a traceback.
"""

import json
import os
import socket
import warnings

import pytest
import yaml

from autorule import SAMPLE_PAIRS
from autorule.testing.mock_server import ScriptedServer, value_verifier
from autorule.cli.app import main


@pytest.fixture
def inputs(tmp_path):
    root = tmp_path / "inputs"
    root.mkdir()
    (root / "rules.yaml").write_text(yaml.safe_dump({"rules": [{"text": "The response should be short."}, {"text": "The response should be polite."}]}))
    (root / "rules.txt").write_text("The response should be short.\nThe response should be polite.\n")
    (root / "weights.yaml").write_text(yaml.safe_dump({"rules": [{"text": "The response should be short.", "weight": 1}, {"text": "The response should be polite.", "weight": -1}]}))
    (root / "responses.jsonl").write_text("".join(json.dumps({"prompt": f"Q{i}", "response": f"A{i}"}) + "\n" for i in range(3)))
    (root / "ab.jsonl").write_text("".join(json.dumps(r) + "\n" for r in [
        {"question": "Hi?", "answer_a": "Hello!", "answer_b": "Go away.", "label": "A"},
        {"question": "2+2?", "answer_a": "5", "answer_b": "4", "label": "model_b"},
        {"question": "Sky?", "answer_a": "Blue.", "answer_b": "Blue!", "label": "tie"},
        {"question": "Name?", "answer_a": "Ann", "answer_b": "I won't say", "label": "1"},
    ]))
    (root / "single.jsonl").write_text(json.dumps({"prompt": "Hi?", "response": "Hello!"}) + "\n")
    return root


@pytest.fixture
def servers():
    with ScriptedServer(value_verifier) as value, ScriptedServer(faults=lambda i, body: "401") as locked:
        with socket.socket() as s:  # a port nobody listens on
            s.bind(("127.0.0.1", 0))
            closed = s.getsockname()[1]
        yield {"value": f"openai:value@{value.base_url}", "locked": f"openai:m@{locked.base_url}", "closed": f"openai:m@http://127.0.0.1:{closed}/v1", "port": closed}


# (row of the table, command, exit code, fragment of stderr or stdout, whether the command is refused)
ROWS = [
    ("--limit 0 (extract)", "extract --data {pairs} --limit 0", 2, "argument --limit: 0 is out of range: must be at least 1", True),
    ("--limit 0 (data inspect)", "data inspect {pairs} --limit 0", 2, "argument --limit: 0 is out of range: must be at least 1", True),
    ("--limit 0 (score)", "score --rules {inputs}/rules.yaml --data {pairs} --limit 0", 2, "argument --limit: 0 is out of range", True),
    ("--concurrency 0", "extract --data {pairs} --concurrency 0", 2, "argument --concurrency: 0 is out of range: must be at least 1", True),
    ("--concurrency -1", "extract --data {pairs} --concurrency -1", 2, "argument --concurrency: -1 is out of range: must be at least 1", True),
    ("--target-rule 5 (abbreviation)", "extract --data {pairs} --target-rule 5", 2, "unrecognized arguments: --target-rule 5", True),
    ("--rule x (abbreviation)", "validate --rules {inputs}/rules.yaml --data {pairs} --rule x", 2, "unrecognized arguments: --rule x", True),
    ("a mistyped flag", "extract --data {pairs} --modle embedded", 2, "unrecognized arguments: --modle embedded", True),
    ("openai:foo (no URL)", "extract --data {pairs} --model openai:foo", 2, "'openai:foo' has no server address: write openai:MODEL@BASE_URL", True),
    ("nothing listening", "llm generate hi --model {closed} --no-cache", 1, "cannot connect to http://127.0.0.1:{port}/v1: connection refused. Is the server running", True),
    ("HTTP 401 without a key", "llm generate hi --model {locked} --no-cache", 1, "none was given: pass --api-key or set OPENAI_API_KEY", True),
    ("rules as plain text", "score --rules {inputs}/rules.txt --data {inputs}/responses.jsonl --verifier {value} --no-cache --json", 0, '"responses": 3', False),
    ("A/B plus a label", "data inspect {inputs}/ab.jsonl --json", 0, '"format": "ab", "rows": 4, "pairs": 3, "skipped": {{"tie": 1}}', False),
    ("a prompt and one response", "data inspect {inputs}/single.jsonl", 2, "not a preference pair. Extraction and validation need two responses and which one won; to score single responses against rules, use `autorule score", True),
    ("--help shows defaults", "extract --help", 0, "merge until at most this many rules remain (default: 25)", False),
    ("train has no --no-no-cache", "train --no-no-cache --prompts {pairs} --rules {inputs}/rules.yaml", 2, "unrecognized arguments: --no-no-cache", True),
    ("generate has --limit", "generate --help", 0, "--limit LIMIT", False),
    ("negative rule weights", "score --rules {inputs}/weights.yaml --data {inputs}/responses.jsonl --verifier {value}", 2, "rules.1.weight: weight -1.0 is negative", True),
    ("--plan without work", "score --rules {inputs}/rules.yaml --data {inputs}/responses.jsonl --verifier {value} --plan --json", 0, '"calls": 6', True),
]


@pytest.mark.parametrize("row", ROWS, ids=[r[0] for r in ROWS])
def test_each_usual_mistake_gets_its_exit_code_and_message(row, inputs, servers, tmp_path, monkeypatch, capsys):
    _, command, code, fragment, leaves_nothing = row
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    argv = command.format(pairs=SAMPLE_PAIRS, inputs=inputs, **servers).split()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            got = main(argv)
        except SystemExit as e:  # argparse: --help and parse errors
            got = e.code
    out, err = capsys.readouterr()
    text = " ".join((out + err).split())  # rich wraps long lines
    assert got == code, text
    assert fragment.format(**servers) in text
    assert "Traceback" not in text
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]
    if leaves_nothing:
        assert os.listdir(work) == []


def test_validate_with_constant_verdicts_prints_no_numpy_warning(inputs, servers, capsys):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # the value verifier answers 0.5 for every response without a value: every verdict the same
        assert main(["validate", "--rules", str(inputs / "rules.yaml"), "--data", str(SAMPLE_PAIRS), "--verifier", servers["value"], "--no-cache",
                     "--out", str(inputs / "validation.json")]) == 0
    assert not [w for w in caught if issubclass(w.category, RuntimeWarning)]
    assert "RuntimeWarning" not in capsys.readouterr().err


@pytest.mark.slow
def test_a_long_run_on_the_embedded_model_is_named_before_it_starts(tmp_path, monkeypatch, capsys, shared_data):
    """The table's "mistyped flag falls back to embedded" case: the plan says how long, and what to do instead."""
    monkeypatch.chdir(tmp_path)
    assert main(["extract", "--data", str(shared_data / "hh-rlhf-harmless-dev.jsonl.gz"), "--on-bad-row", "skip", "--plan"]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "the embedded CPU model would take about" in err and "use --limit for a smaller run, or a served model (--model openai:MODEL@URL" in err
    assert os.listdir(tmp_path) == []


def test_every_command_has_the_same_model_option_defaults():
    """extract and score once had different --concurrency and --timeout defaults."""
    from autorule.cli.app import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices
    seen = {}
    for name in ("extract", "score", "validate", "serve", "generate"):
        actions = {a.dest: a for a in commands[name]._actions}
        seen[name] = {dest: (actions[dest].default, actions[dest].help) for dest in ("concurrency", "timeout", "max_retries")}
        seen[name]["api_key"] = actions["api_key"].default  # its help names the model or the verifier
    assert all(options == seen["extract"] for options in seen.values()), seen
    assert seen["extract"]["concurrency"][0] is None and seen["extract"]["max_retries"][0] == 6
