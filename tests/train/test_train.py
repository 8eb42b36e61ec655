"""Training: reward model, GRPO with RM + rule rewards and the monitor, evaluation outputs."""

import json
import re

import pytest
import yaml
from conftest import HH, MT_BENCH_QUESTIONS
from autorule.testing.mock_server import ScriptedServer

from autorule.cli.app import main
from autorule.reward import RewardModel
from autorule.rules import Rule, RuleSet


def uppercase_share(messages, body):
    """A graded verifier: P(Yes) rises with the share of capital letters in the response."""
    text = messages[-1]["content"]
    response = re.search(r'<assistant-final-response id="\w+">\n(.*)\n</assistant-final-response', text, re.S).group(1)
    letters = [c for c in response if c.isalpha()]
    share = sum(c.isupper() for c in letters) / max(1, len(letters))
    return {"content": "Yes" if share > 0.5 else "No", "_p": share}


class GradedServer(ScriptedServer):
    """Logprobs carry the graded P(Yes) itself, not a fixed 0.8 / 0.2."""

    def _answer(self, h, body, fault):
        import math

        reply = self.reply(body["messages"], body)
        p = min(max(reply.pop("_p"), 1e-4), 1 - 1e-4)
        choice = {"index": 0, "message": {"role": "assistant", **reply}, "finish_reason": "stop",
                  "logprobs": {"content": [{"token": "Yes", "logprob": math.log(p), "bytes": None,
                                            "top_logprobs": [{"token": "Yes", "logprob": math.log(p), "bytes": None},
                                                             {"token": "No", "logprob": math.log(1 - p), "bytes": None}]}]}}
        h._send(200, {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"], "choices": [choice],
                      "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})


def write_rules(path):
    RuleSet(rules=[Rule(id="caps", text="The assistant's response should be written in capital letters.")]).save(path)
    return path


@pytest.mark.slow
def test_train_rm_on_the_embedded_model_reports_accuracy(tmp_path, shared_data, capsys):
    out = tmp_path / "rm"
    code = main(["train-rm", "--data", str(HH), "--on-bad-row", "skip", "--limit", "24", "--base", "embedded", "--out", str(out),
                 "--max-steps", "2", "--batch-size", "4", "--max-length", "192", "--eval-fraction", "0.25", "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["train_pairs"] + report["eval_pairs"] == 24 and report["eval_pairs"] > 0
    acc = report["eval_accuracy"]
    assert acc["correct"] + acc["wrong"] + acc["ties"] == report["eval_pairs"] and 0.0 <= acc["accuracy"] <= 1.0
    stats = json.loads((out / "autorule_rm.json").read_text())
    assert stats["std"] > 0
    rm = RewardModel(str(out))
    assert (rm.mean, rm.std) == (stats["mean"], stats["std"])  # normalisation comes with the model


def test_train_grpo_with_rm_and_rules_logs_every_monitored_quantity(tmp_path, shared_data, tiny_models, capsys):
    with GradedServer(uppercase_share) as server:
        config = {
            "policy": str(tiny_models / "policy"), "prompts": str(HH), "limit_prompts": 24, "rules": str(write_rules(tmp_path / "rules.yaml")),
            "verifier": f"openai:judge@{server.base_url}", "rm": str(tiny_models / "rm"), "max_steps": 3, "per_device_train_batch_size": 4,
            "num_generations": 4, "max_completion_length": 8, "monitor_every": 1, "heldout_count": 4, "output_dir": str(tmp_path / "grpo"),
            "save_steps": 2, "no_cache": True, "report_to": "tensorboard",
        }
        (tmp_path / "train.yaml").write_text(yaml.safe_dump(config))
        assert main(["train", "--config", str(tmp_path / "train.yaml"), "--json"]) == 0
        summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        first_rows = [json.loads(line) for line in (tmp_path / "grpo" / "metrics.jsonl").read_text().splitlines()]
        # a second run into the same directory is refused: its metrics would mix with these
        assert main(["train", "--config", str(tmp_path / "train.yaml")]) == 2
        assert "holds another training run; use --resume" in capsys.readouterr().err
        assert main(["train", "--config", str(tmp_path / "train.yaml"), "--resume", "--rule-scale", "3"]) == 2
        assert "rule_scale: None -> 3.0" in capsys.readouterr().err
        # resumed from checkpoint-2 to step 4: step 3 is trained again, its first row replaced, not repeated
        assert main(["train", "--config", str(tmp_path / "train.yaml"), "--resume", "--max-steps", "4", "--json"]) == 0
    assert summary["steps"] == 3
    assert [r["step"] for r in first_rows] == [1, 2, 3]
    rows = [json.loads(line) for line in (tmp_path / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    assert rows[:2] == first_rows[:2]
    # --report-to tensorboard: TRL's logger wrote event files
    assert list((tmp_path / "grpo").rglob("events.out.tfevents.*"))
    for r in rows:
        assert {"rm_reward", "rule_reward", "total_reward", "length", "pass_rates", "corr_rm_length", "corr_rule_length", "heldout_score", "warnings"} <= set(r)
        assert set(r["pass_rates"]) == {"caps"} and 1 <= r["length"] <= 8  # completions of at most 8 tokens
        # the default preset's total is RM + rule reward (no length penalty, no clip): so is each step's mean
        assert r["total_reward"] == pytest.approx(r["rm_reward"] + r["rule_reward"])
    assert (tmp_path / "grpo" / "final" / "config.json").is_file()
    assert (tmp_path / "grpo" / "checkpoint-2").is_dir()


def test_grpo_run_with_a_graded_rule_reward_raises_it(tmp_path):
    """25 GRPO steps on a tiny policy: the share of capitals, which the verifier grades, goes up."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from autorule.llm.local import local_model_path

    tok = AutoTokenizer.from_pretrained(local_model_path("embedded"))
    # a larger init spread gives a peaked starting distribution: the same few tokens recur, so
    # GRPO's group comparisons have something to reweight within a few steps
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                      max_position_embeddings=512, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, initializer_range=0.5)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(tmp_path / "policy")
    tok.save_pretrained(tmp_path / "policy")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": "Write something."}) + "\n" for _ in range(32)))
    with GradedServer(uppercase_share) as server:
        code = main([
            "train", "--policy", str(tmp_path / "policy"), "--prompts", str(prompts), "--rules", str(write_rules(tmp_path / "rules.yaml")),
            "--verifier", f"openai:judge@{server.base_url}", "--no-cache", "--max-steps", "25", "--per-device-train-batch-size", "16",
            "--num-generations", "8", "--max-completion-length", "8", "--learning-rate", "3e-2", "--beta", "0", "--heldout-count", "2",
            "--monitor-every", "100", "--save-steps", "1000", "--output-dir", str(tmp_path / "grpo"),
        ])
    assert code == 0
    rows = [json.loads(line) for line in (tmp_path / "grpo" / "metrics.jsonl").read_text().splitlines()]
    first = sum(r["rule_reward"] for r in rows[:5]) / 5
    last = sum(r["rule_reward"] for r in rows[-5:]) / 5
    assert first < 0.2 and last > 0.5 and last > 3 * first, [round(r["rule_reward"], 3) for r in rows]


def test_train_config_errors_name_the_key(tmp_path, capsys):
    bad = tmp_path / "train.yaml"
    bad.write_text("prompts: p.jsonl\nrules: r.yaml\nmax_step: 3\n")
    assert main(["train", "--config", str(bad)]) == 2
    assert "max_step" in capsys.readouterr().err
    bad.write_text("prompts: p.jsonl\nrules: r.yaml\nmax_steps: many\n")
    assert main(["train", "--config", str(bad)]) == 2
    assert "max_steps" in capsys.readouterr().err
    assert main(["train", "--rules", "r.yaml"]) == 2
    assert "prompts" in capsys.readouterr().err


def test_generate_alpaca_eval_and_mt_bench_formats(tmp_path, shared_data, tiny_models):
    prompts = tmp_path / "alpaca.json"
    prompts.write_text(json.dumps([{"instruction": "Name a colour.", "dataset": "helpful_base"}, {"instruction": "Say hi."}]))
    out = tmp_path / "alpaca_outputs.json"
    assert main(["generate", "--model", str(tiny_models / "policy"), "--prompts", str(prompts), "--format", "alpaca_eval",
                 "--out", str(out), "--max-new-tokens", "4", "--no-cache"]) == 0
    records = json.loads(out.read_text())
    assert [set(r) for r in records] == [{"instruction", "output", "generator", "dataset"}, {"instruction", "output", "generator"}]
    assert records[0]["generator"] == "policy"

    questions = tmp_path / "questions.jsonl"
    questions.write_text("".join(line + "\n" for line in MT_BENCH_QUESTIONS.read_text().splitlines()[:5]))
    answers = tmp_path / "answers.jsonl"
    assert main(["generate", "--model", str(tiny_models / "policy"), "--prompts", str(questions), "--format", "mt_bench",
                 "--out", str(answers), "--max-new-tokens", "4", "--generator", "my-policy", "--no-cache"]) == 0
    rows = [json.loads(line) for line in answers.read_text().splitlines()]
    assert [r["question_id"] for r in rows] == [81, 82, 83, 84, 85]
    assert all(r["model_id"] == "my-policy" and len(r["choices"][0]["turns"]) == 2 for r in rows)


def test_monitor_warns_when_rm_rises_while_rules_fall(tmp_path):
    import numpy as np

    from autorule.train.monitor import RewardMonitor

    monitor = RewardMonitor(tmp_path / "metrics.jsonl", window=4)
    for step in range(1, 7):
        rm = np.array([0.1 * step, 0.1 * step + 0.05])
        rule = np.array([0.9 - 0.1 * step, 0.85 - 0.1 * step])
        lengths = np.array([10.0 + step, 20.0 + step])
        monitor.record_batch(rm=rm, rule=rule, total=rm + rule, lengths=lengths, pass_rates={"a": 0.5}, log_metric=None)
        row = monitor.end_step(step, heldout=1.0 - 0.1 * step if step % 2 == 0 else None)
    assert row["corr_rm_length"] == pytest.approx(1.0) and row["corr_rule_length"] == pytest.approx(-1.0)
    warned_steps = sorted({w["step"] for w in monitor.warnings})
    assert warned_steps == [4, 5, 6]  # from the first full window on
    assert any("rule reward falls" in w["message"] for w in monitor.warnings)
    assert any("held-out score fell" in w["message"] for w in monitor.warnings)
    # steady rewards: no warning
    calm = RewardMonitor(tmp_path / "calm.jsonl", window=4)
    for step in range(1, 7):
        calm.record_batch(rm=np.array([0.5]), rule=np.array([0.5]), total=np.array([1.0]), lengths=np.array([10.0]), pass_rates={}, log_metric=None)
        calm.end_step(step)
    assert calm.warnings == []
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 6


def test_prompts_from_prompt_files_and_preference_data(tmp_path):
    from autorule.data import DataError
    from autorule.quickstart import SAMPLE_DATA
    from autorule.train.grpo import load_prompts

    assert len(load_prompts(str(SAMPLE_DATA))) == 24  # the prompts of preference pairs, each once
    good = tmp_path / "prompts.jsonl"
    good.write_text('{"prompt": "Hi?"}\n{"instruction": "Write a haiku."}\n')
    assert load_prompts(str(good)) == [[{"role": "user", "content": "Hi?"}], [{"role": "user", "content": "Write a haiku."}]]
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"prompt": "Hi?"}\n{"prompt": "Hel\n')
    with pytest.raises(DataError, match="line 2: broken JSON"):
        load_prompts(str(broken))


def test_train_with_a_veto_dropout_normalise_then_sum_and_a_gold_monitor(tmp_path, tiny_models, capsys):
    """Every defence in one short run: the metrics say what each did, step by step."""
    rules = tmp_path / "rules.txt"
    rules.write_text("[essential] The assistant's response should be written in capital letters.\n"
                     "The assistant's response should be polite.\nThe assistant's response should be short.\n")
    gold = tmp_path / "gold.txt"
    gold.write_text("The assistant's response should be written in capital letters.\n")
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Write something {i}."}) + "\n" for i in range(12)))
    with GradedServer(uppercase_share) as server:
        code = main([
            "train", "--policy", str(tiny_models / "policy"), "--prompts", str(prompts), "--rules", str(rules), "--rm", str(tiny_models / "rm"),
            "--verifier", f"openai:judge@{server.base_url}", "--no-cache", "--max-steps", "2", "--per-device-train-batch-size", "4",
            "--num-generations", "4", "--max-completion-length", "8", "--heldout-count", "2", "--monitor-every", "100",
            "--aggregation", "normalize_then_sum", "--rule-dropout", "0.5", "--gold-rules", str(gold), "--output-dir", str(tmp_path / "grpo"), "--json",
        ])
    assert code == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1  # --json: the summary alone on stdout (TRL's log lines go to stderr)
    summary = json.loads(out[-1])
    rows = [json.loads(line) for line in (tmp_path / "grpo" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert r["dropped_rules"] == 1.0  # round(0.5 x 2 non-essential rules) per completion
        assert r["active_rules"] == 3
        # a random tiny policy writes few capitals: the gold rule (the same caps check) reads the rule's P(Yes), logged only
        assert 0.0 <= r["gold_reward"] <= 1.0
        assert 0 <= r["vetoed"] <= 4
    assert summary["reward"]["aggregation"] == "normalize_then_sum" and summary["reward"]["weights"] == {"rule": 1.0, "rm": 1.0}
    assert summary["reward"]["essential_rules"] == 1 and summary["reward"]["vetoed"] == sum(r["vetoed"] for r in rows)
    log = json.loads((tmp_path / "grpo" / "trainer_log.json").read_text())[0]
    # TRL's own normalise-then-sum over the two parts, each logged by TRL under its function's name
    assert {"rewards/rule_reward/mean", "rewards/rm_reward/mean", "autorule/vetoed", "autorule/dropped_rules", "autorule/rm_weight"} <= set(log)
    # the length penalty is not one of TRL's reward functions: refused with normalise-then-sum, before any work
    assert main(["train", "--prompts", str(prompts), "--rules", str(rules), "--aggregation", "normalize_then_sum", "--length-penalty", "1",
                 "--output-dir", str(tmp_path / "other")]) == 2
    assert "length_penalty with aggregation='normalize_then_sum' is not supported" in capsys.readouterr().err


def test_train_plan_counts_the_gold_monitors_checks_and_names_the_refresh(tmp_path, monkeypatch):
    from autorule.plan import plan_train
    from autorule.testing.fake_llm import FakeLLM
    from autorule.train.config import TrainConfig
    from autorule.verifier import Verifier

    gold = tmp_path / "gold.txt"
    gold.write_text("The response should be short.\n")
    monkeypatch.setattr("autorule.plan.speed_for", lambda llm, probe: None)  # counts only: no speed measured
    monkeypatch.setattr("autorule.plan.capacity", lambda *a, **k: None)
    config = TrainConfig(prompts="p.jsonl", rules="r.yaml", gold_rules=str(gold), refresh_every=5, max_steps=10, per_device_train_batch_size=4)
    plan = plan_train(config, Verifier(FakeLLM(), RuleSet.from_texts(["Be short.", "Be kind."])), probe=False)
    # 10 steps x 4 completions x 2 rules, and x 1 gold rule
    assert [(s.stage, s.calls) for s in plan.stages] == [("rule checks", 80), ("gold monitor checks", 40)]
    assert any("every 5 steps the rule refresh" in note for note in plan.extra_notes)
