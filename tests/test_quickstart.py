import json

import pytest

from autorule.cli import main
from autorule.rules import RuleSet


@pytest.mark.slow
def test_quickstart_runs_the_whole_pipeline(tmp_path, capsys):
    out = tmp_path / "qs"
    assert main(["quickstart", "--out", str(out), "--no-cache"]) == 0
    rules = RuleSet.load(out / "extract" / "rules.yaml")
    assert 1 <= len(rules) <= 8 and all(r.pairs for r in rules.rules)
    meta = json.loads((out / "extract" / "run.json").read_text())
    assert meta["status"] == "complete" and meta["counts"]["pairs"] == 12
    validation = json.loads((out / "extract" / "validation.json").read_text())
    assert validation["pairs"] == 12 and {r["id"] for r in validation["rules"]} == {r.id for r in rules.rules}
    assert all("validation" in r.stats for r in rules.rules)  # stats written back into the rules file
    assert (out / "rm" / "autorule_rm.json").is_file()
    steps = [json.loads(line) for line in (out / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [1, 2] and all("rm_reward" in s and "rule_reward" in s for s in steps)
    assert (out / "grpo" / "final" / "config.json").is_file()
    err = capsys.readouterr().err
    assert "validation.json" in err and "metrics.jsonl" in err and "report.html" in err
    page = (out / "report.html").read_text()
    assert page.count("class='rule-row'") == len(rules) and "data:image/png;base64," in page
