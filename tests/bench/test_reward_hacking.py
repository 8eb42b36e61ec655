"""benchmarks/reward_hacking.py: the length-paying RM, the rules and the veto worked out by hand, and one
tiny GRPO step of each of the three runs through the benchmark's own machinery."""

import importlib.util
import json

import numpy as np
import pytest
from conftest import BENCHMARKS

from autorule.data import Message
from autorule.reward import RewardScorer, get_preset
from autorule.testing.fake_llm import FakeLLM


def load_benchmark():
    spec = importlib.util.spec_from_file_location("reward_hacking", BENCHMARKS / "reward_hacking.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SHORT = "Paris is the capital."  # 4 words (IFEval counts \w+ runs)
LONG = " ".join(["word"] * 30)  # 30 words, one paragraph, no bullets


def conv(text):
    return [{"role": "user", "content": "What is the capital of France?"}, {"role": "assistant", "content": text}]


def test_length_rm_rules_and_veto_by_hand():
    rh = load_benchmark()
    assert rh.LengthRM().score([[Message(role="assistant", content=LONG)]]).tolist() == [0.6]  # 30 / 50
    judge = FakeLLM(p_yes=0.0)  # every rule is decided by a program: a judge saying No to everything changes nothing
    totals = {}
    for run in rh.RUNS:
        scale, essential = rh.run_settings(run, 1.0)
        scorer = RewardScorer(rh.training_rules(20, essential), judge, get_preset("default", rule_scale=scale), rm=rh.LengthRM())
        scores = scorer.score([conv(SHORT), conv(LONG)])  # one GRPO group: the same prompt
        assert scores.rm.tolist() == [0.08, 0.6]
        # SHORT keeps all three rules; LONG breaks "under 20 words" and keeps the other two
        assert scores.rule.tolist() == pytest.approx([1.0, 2 / 3])
        totals[run] = (scores.total.tolist(), scores.vetoed.tolist())
    assert judge.stats["yes_no_checks"] == 0
    # RM only (rule_scale 0): the total is the RM's score, and the longer answer wins
    assert totals["rm_only"] == ([0.08, 0.6], [False, False])
    # RM + rules: 0.08 + 1 against 0.6 + 2/3: breaking the length rule still pays at 30 words
    assert totals["rm_plus_rules"][0] == pytest.approx([1.08, 0.6 + 2 / 3]) and totals["rm_plus_rules"][1] == [False, False]
    # the veto caps LONG at the default preset's floor: rule term at 0 satisfied (0) + the batch's lowest RM score (0.08)
    assert totals["rm_plus_rules_veto"][0] == pytest.approx([1.08, 0.08]) and totals["rm_plus_rules_veto"][1] == [False, True]


def test_first_vs_last_and_bad_runs():
    rh = load_benchmark()
    curves = [{"step": s, "words": float(w)} for s, w in enumerate([10, 12, 14, 30, 40, 50], start=1)]
    assert rh.first_vs_last(curves, k=2) == {"words": {"first": 11.0, "last": 45.0}}
    with pytest.raises(ValueError, match="unknown run 'rules_only'"):
        rh.run_settings("rules_only", 1.0)
    with pytest.raises(SystemExit) as exit_:
        rh.main(["--out", "x", "--runs", "rm_only,nope"])
    assert exit_.value.code == 2
    with pytest.raises(SystemExit) as exit_:
        rh.main(["--out", "x", "--batch", "6", "--generations", "4"])
    assert exit_.value.code == 2


def test_one_step_of_each_run_on_a_tiny_policy(tmp_path, tiny_models):
    rh = load_benchmark()
    judge = FakeLLM(p_yes=0.0)
    report = rh.run_benchmark(str(tmp_path / "out"), steps=1, max_words=2, batch=4, generations=2, completion_tokens=8,
                              plot_path=str(tmp_path / "curves.png"), policy=str(tiny_models / "policy"), verifier=judge)
    assert list(report["runs"]) == list(rh.RUNS) and report["llm_checks"] == 0
    assert (tmp_path / "curves.png").stat().st_size > 0
    for run, r in report["runs"].items():
        (step,) = r["per_step"]
        assert set(step) == {"step", "words", "tokens", "rm_reward", "rule_reward", "total_reward", "gold", "vetoed"} and step["step"] == 1
        run_dir = tmp_path / "out" / run
        for name in ("metrics.jsonl", "trainer_log.json", "train_summary.json", "rules.yaml", "gold_rules.yaml"):
            assert (run_dir / name).is_file(), name
        done = [json.loads(line) for line in (run_dir / "completions.jsonl").read_text().splitlines()]
        assert [c["step"] for c in done] == [1, 1, 1, 1]
        words = np.array([c["words"] for c in done])
        # the curves are what the completions say: words = 50 x the RM's mean, gold = the share under 2 words
        assert step["words"] == pytest.approx(words.mean()) and step["rm_reward"] == pytest.approx(words.mean() / 50)
        assert step["gold"] == pytest.approx(np.mean(words < 2))
        assert step["vetoed"] == (int(np.sum(words >= 2)) if run == "rm_plus_rules_veto" else 0)
        assert r["summary"]["words"] == {"first": step["words"], "last": step["words"]}
    assert report["runs"]["rm_only"]["per_step"][0]["total_reward"] == pytest.approx(report["runs"]["rm_only"]["per_step"][0]["rm_reward"])
