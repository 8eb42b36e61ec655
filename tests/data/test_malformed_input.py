"""The malformed-input corpus (tests/data/malformed/cases.yaml): each input is refused with the
expected exit code and a message naming the file, the place and the problem."""

import json
from pathlib import Path

import pytest
import yaml

from autorule.cli.app import main

CORPUS = Path(__file__).parent / "malformed"
CASES = yaml.safe_load((CORPUS / "cases.yaml").read_text())
GOOD = json.dumps({"prompt": "What is 2+2?", "chosen": "4.", "rejected": "5."})


def make_generated(name: str, tmp_path: Path) -> Path:
    path = tmp_path / name
    if name == "huge_row.jsonl":
        path.write_text(GOOD + "\n" + json.dumps({"prompt": "Hi?", "chosen": "a" * 1_500_000, "rejected": "Go away."}) + "\n")
    elif name == "unknown_type.txt":
        path.write_text(GOOD + "\n")
    return path  # no_such_file.jsonl: left missing


def command(check: str, path: Path) -> list[str]:
    if check == "data":
        return ["data", "inspect", str(path)]
    if check == "rules":  # the rules file is read before any model is contacted
        return ["score", "--rules", str(path), "--data", str(CORPUS / "chosen_equals_rejected.jsonl"), "--verifier", "openai:none@http://127.0.0.1:9/v1", "--no-cache"]
    return ["train", "--config", str(path)]


def test_the_corpus_is_complete():
    assert len(CASES) >= 25
    listed = {c["file"] for c in CASES if not c.get("generated")}
    on_disk = {p.name for p in CORPUS.iterdir() if p.name != "cases.yaml"}
    assert listed == on_disk, f"files without a case: {on_disk - listed}; cases without a file: {listed - on_disk}"


@pytest.mark.parametrize("case", CASES, ids=[c["file"] for c in CASES])
def test_malformed_input_is_refused_clearly(case, tmp_path, capsys):
    path = make_generated(case["file"], tmp_path) if case.get("generated") else CORPUS / case["file"]
    code = main(command(case["check"], path))
    err = " ".join(capsys.readouterr().err.split())  # rich may wrap long lines
    assert code == case["exit"], err
    assert case["message"] in err
    assert case["file"] in err  # the file is named
    assert "Traceback" not in err


def test_skip_mode_counts_what_it_skipped(capsys):
    assert main(["data", "inspect", str(CORPUS / "null_reply.jsonl"), "--on-bad-row", "skip", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["pairs"] == 1 and sum(report["skipped"].values()) == 1
