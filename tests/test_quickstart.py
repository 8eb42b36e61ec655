import json
import os
from pathlib import Path

import pytest

from autorule.cli.app import main
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
    assert [s["step"] for s in steps] == [1, 2]
    for s in steps:  # the default preset: total = RM + rule reward, and the rule reward is a fraction
        assert s["total_reward"] == pytest.approx(s["rm_reward"] + s["rule_reward"])
        assert 0.0 <= s["rule_reward"] <= 1.0 and set(s["pass_rates"]) <= {r.id for r in rules.rules}
    assert (out / "grpo" / "final" / "config.json").is_file()
    err = capsys.readouterr().err
    assert "validation.json" in err and "metrics.jsonl" in err and "report.html" in err
    # the rule set beside the no-rules judge (ICAI's baseline) and flipped labels, in one line and in validation.json
    line = next(line for line in err.splitlines() if line.startswith("validation: on 12 held-out pairs"))
    assert "the no-rules judge (the same model, no rules) in" in line and "flipped labels" in line
    icai = validation["icai"]
    assert icai["no_rules_judge"] and icai["per_seed"][0]["no_rules"]["correct"] + icai["per_seed"][0]["no_rules"]["wrong"] + \
        icai["per_seed"][0]["no_rules"]["ties"] + icai["per_seed"][0]["no_rules"]["unread"] == 12
    page = (out / "report.html").read_text()
    assert page.count("class='rule-row'") == len(rules) and "data:image/png;base64," in page
    # no fragments in the rule table (an oracle of its own: whole sentences end on a word that can end one, and
    # do not stutter), and the report marks every rule the linter flagged
    for r in rules.rules:
        words = r.text.rstrip(".!").lower().split()
        assert words[-1] not in {"should", "must", "be", "the", "a", "an", "to", "and", "or", "of", "with"}, r.text
        assert all(a != b for a, b in zip(words, words[1:])), r.text
    assert page.count("data-lint=") == sum(1 for r in rules.rules if r.lint)
    assert meta["counts"]["lint"]["flags"] == {code: sum(1 for r in rules.rules for f in r.lint if f.code == code)
                                               for code in {f.code for r in rules.rules for f in r.lint}}


def test_wheel_in_a_fresh_venv_carries_the_sample_data_and_prompts(tmp_path):
    """`pip install .` then autorule outside the checkout: the quickstart's data and the prompt files come with the package."""
    import site
    import subprocess
    import sys
    import sysconfig

    repo = Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(repo), "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist")],
                   check=True, capture_output=True)
    [wheel] = (tmp_path / "dist").glob("autorule-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "fresh")], check=True)
    fresh_python = tmp_path / "fresh" / "bin" / "python"
    subprocess.run([str(fresh_python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)], check=True, capture_output=True)
    # autorule's dependencies from the test venv, on PYTHONPATH so its editable-install hook (a .pth) stays off
    env = {**os.environ, "PYTHONPATH": sysconfig.get_paths()["purelib"] + os.pathsep + os.pathsep.join(site.getsitepackages())}
    probe = (
        "import autorule, autorule.quickstart as q, autorule.verifier.verifier as v;"
        "from pathlib import Path;"
        "print(autorule.__file__); print(q.SAMPLE_DATA); print(len(autorule.load_pairs(q.SAMPLE_DATA)));"
        "print(len(list(Path(v.__file__).parent.glob('prompts/*.txt'))))"
    )
    run = subprocess.run([str(fresh_python), "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout.split()
    fresh = str(tmp_path / "fresh")
    assert out[0].startswith(fresh) and out[1].startswith(fresh)  # the wheel's copy, not the checkout's
    assert out[2] == "24"
    assert int(out[3]) == len(list((repo / "src" / "autorule" / "verifier" / "prompts").glob("*.txt")))  # every prompt file shipped
