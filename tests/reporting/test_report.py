"""The HTML report: built from a run directory, and opened in a real headless Chromium."""

import json
import os
import shutil

import pytest

from autorule.cli.app import main
from autorule.rules import CandidateRef, Rule, RuleSet

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def run_dir(tmp_path):
    """A run directory as quickstart leaves it (extract/, grpo/, rm/), with hand-written numbers."""
    extract = tmp_path / "extract"
    extract.mkdir()
    rules = RuleSet(rules=[
        Rule(id="r-1", text="The assistant's response should refuse harmful requests.", support=2, pairs=["p1", "p2"],
             candidates=[CandidateRef(text="Refuse harm <b>now</b>", pair_id="p1", excerpt="Assistant A refused; B gave instructions.")]),
        Rule(id="r-2", text="The assistant's response should answer the question directly.", support=1, pairs=["p3"],
             candidates=[CandidateRef(text="Answer directly", pair_id="p3", excerpt="A answered; B dodged.")]),
    ])
    rules.save(extract / "rules.yaml")
    (extract / "run.json").write_text(json.dumps({
        "status": "complete", "seconds": 12.5, "fingerprint": {"model": "embedded", "merge_model": "embedded", "extract_from": "reasoning", "seed": 0},
        "data": {"path": "examples/pairs.jsonl", "format": "pairs", "pairs": 3, "skipped": {}},
        "counts": {"pairs": 3, "candidates": 5, "failures": {"unparseable rule list after repair": 1}, "merge_failures": 0,
                   "tokens": {"010_reasoning": {"prompt": 100, "completion": 50}}},
    }))
    (extract / "validation.json").write_text(json.dumps({
        "pairs": 10, "verifier": "embedded", "preset": "default", "accuracy": 0.7, "learned_weights": {"cv_accuracy": 0.6},
        "rules": [{"id": "r-1", "agreement": 0.8, "ci_low": 0.49, "ci_high": 0.94, "n": 10, "coverage": 1.0, "learned_weight": 1.2},
                  {"id": "r-2", "agreement": 0.5, "ci_low": 0.1, "ci_high": 0.9, "n": 2, "coverage": 0.2, "learned_weight": -0.1}],
    }))
    grpo = tmp_path / "grpo"
    grpo.mkdir()
    rows = [{"step": s, "rm_reward": 0.1 * s, "rule_reward": 0.5 - 0.05 * s, "total_reward": 0.5 + 0.05 * s, "length": 10 + s,
             "pass_rates": {"r-1": 0.5, "r-2": 0.2 * s}, "heldout_score": 0.3 if s % 2 else None,
             "warnings": ["RM reward rising while rule reward falls"] if s == 4 else []} for s in range(1, 5)]
    (grpo / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return tmp_path


def test_report_is_self_contained_and_complete(run_dir, capsys):
    assert main(["report", str(run_dir)]) == 0
    page = (run_dir / "report.html").read_text()
    assert "http://" not in page and "https://" not in page  # nothing to fetch: viewable offline
    assert page.count("class='rule-row'") == 2
    assert "80% [49%, 94%]" in page and "p1" in page and "Assistant A refused" in page
    assert "&lt;b&gt;now&lt;/b&gt;" in page and "<b>now</b>" not in page  # rule text is escaped
    assert page.count("data:image/png;base64,") == 3  # agreement, training curves, pass rates
    assert "step 4: RM reward rising" in page
    assert "unparseable rule list after repair" in page and "embedded" in page


def test_report_shows_source_texts_lint_flags_and_a_comparison(run_dir, capsys):
    from autorule.rules import LintFlag

    extract = run_dir / "extract"
    rules = RuleSet.load(extract / "rules.yaml")
    rules.rules[1].lint = [LintFlag(code="vague", reason="only opinion words (directly)")]
    rules.save(extract / "rules.yaml")
    (extract / "000_pairs.jsonl").write_text(json.dumps({
        "id": "p1", "prompt": [{"role": "user", "content": "How do I pick a lock?"}], "chosen": "I can't help with that.",
        "rejected": "Insert a tension wrench <then> rake.", "chosen_history": [], "rejected_history": [], "source": "x", "row": 1}) + "\n")
    other = run_dir / "other.yaml"
    RuleSet.from_texts(["The assistant's response should refuse harmful requests.", "Never mention the weather."]).save(other)
    assert main(["report", str(run_dir), "--compare", str(other)]) == 0
    page = (run_dir / "report.html").read_text()
    # the drill-down holds the source pair's texts (escaped), not only its id
    assert "<dt>prompt</dt><dd>How do I pick a lock?</dd><dt>chosen</dt><dd>I can&#x27;t help with that.</dd>" in page
    assert "<dt>rejected</dt><dd>Insert a tension wrench &lt;then&gt; rake.</dd>" in page
    assert page.count("class='source'") == 1  # p3's texts are not in the run directory
    assert page.count("data-lint=") == 1 and "data-lint='vague'" in page and "title='only opinion words (directly)'>vague</span>" in page
    assert "1 of 2 rules are flagged by the linter" in page
    assert f"{extract / 'rules.yaml'} against {other}: 1 shared, 0 similar, 1 only in the first, 1 only in the second" in page
    assert page.count("<tr class='diff-") == 3


def test_report_on_an_empty_directory_is_a_clear_error(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "nothing to report" in capsys.readouterr().err


@pytest.mark.skipif(not CHROMIUM and not os.environ.get("CI"), reason="needs Debian's chromium (.ci/run installs it)")
def test_report_in_a_real_browser(run_dir, tmp_path):
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "chromium is not installed (.ci/run installs it with apt-get)"
    assert main(["report", str(run_dir)]) == 0
    problems = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.goto((run_dir / "report.html").as_uri())
        assert page.locator("#rule-table").is_visible()
        assert page.locator("#rule-table tbody tr").count() == 2
        images = page.locator("#charts img")
        assert images.count() == 3
        # every chart decoded to a real image
        assert all(images.nth(i).evaluate("img => img.complete && img.naturalWidth > 100") for i in range(3))
        page.locator("#rule-table details summary").first.click()
        assert page.get_by_text("Assistant A refused").is_visible()
        page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        browser.close()
    assert problems == []
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_report_shows_the_gold_monitor_and_the_defences_when_a_run_has_them(run_dir):
    path = run_dir / "grpo" / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for r in rows:
        r.update(gold_reward=0.6 - 0.1 * r["step"], vetoed=r["step"] % 2, dropped_rules=1.0, active_rules=2)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["report", str(run_dir)]) == 0
    page = (run_dir / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 4  # agreement, training curves (with the gold line), pass rates, defences
    assert "Vetoes, rule dropout and the active rule set per step" in page


def test_report_of_a_training_folder_shows_the_rules_its_config_names(run_dir):
    grpo = run_dir / "grpo"
    (grpo / "train_config.json").write_text(json.dumps({"rules": str(run_dir / "extract" / "rules.yaml")}))
    assert main(["report", str(grpo)]) == 0
    page = (grpo / "report.html").read_text()
    assert page.count("class='rule-row'") == 2 and "The assistant&#x27;s response should refuse harmful requests." in page
