import json

import pytest

from autorule.cli import main
from autorule.rules import RuleSet


@pytest.mark.slow
def test_quickstart_runs_every_existing_stage(tmp_path, capsys):
    out = tmp_path / "qs"
    assert main(["quickstart", "--out", str(out), "--no-cache"]) == 0
    rules = RuleSet.load(out / "extract" / "rules.yaml")
    assert 1 <= len(rules) <= 8 and all(r.pairs for r in rules.rules)
    meta = json.loads((out / "extract" / "run.json").read_text())
    assert meta["status"] == "complete" and meta["counts"]["pairs"] == 8
    verification = json.loads((out / "verification.json").read_text())
    assert verification["pairs"] == 4 and set(verification["pass_rates"]) == {r.id for r in rules.rules}
    assert "verification.json" in capsys.readouterr().err
