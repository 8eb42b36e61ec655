"""`autorule rescore`: the three rollout layouts read back, old and new rewards side by side, the command.

TRL's and verl's files are written by the libraries' own code: TRL's `GRPOTrainer.log` (on a
trainer object holding only what `log` reads) and verl's `RayPPOTrainer._write_generations`
(its source taken from the installed ray_trainer.py: the module itself needs torchdata and ray,
which the `frameworks` extra leaves out). The verifier is scripted: P(Yes) is the number written
in the response ("value=0.25"), so each new reward is known from the response alone.
"""

import ast
import json
import math
import re
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from autorule.cli.app import main
from autorule.data import DataError
from autorule.rescoring import RolloutReader, rescore
from autorule.rescoring.formats import REPEATED_LOG, prompt_group
from autorule.reward import RewardScorer
from autorule.rules import RuleSet
from autorule.testing.mock_server import ScriptedServer, value_verifier

RULES = ["The assistant's response should be polite."]
VALUE = re.compile(r"value=([0-9.]+)")


def value_llm():
    """A verifier whose P(Yes) is the last "value=X" in the conversation it judges (0.5 without one)."""
    from fake_llm import ScriptedLLM

    return ScriptedLLM(lambda prefix, question: float(VALUE.findall(prefix)[-1]) if VALUE.findall(prefix) else 0.5)


# ------------------------------------------------------------------ the libraries' own writers


def trl_log(output_dir: Path, step: int, prompts: list, completions: list, rewards: dict[str, list], advantages: list[float], monkeypatch) -> Path:
    """TRL 1.16's `GRPOTrainer.log` writing its completions table (trl/trainer/grpo_trainer.py, `log`, `df_base.to_parquet`)."""
    import transformers
    from trl import GRPOTrainer

    monkeypatch.setattr(transformers.Trainer, "log", lambda self, logs, start_time=None: None)  # the metrics half: not under test
    trainer = object.__new__(GRPOTrainer)
    trainer.model = SimpleNamespace(training=True)
    trainer._metrics = {"train": {}, "eval": {}}
    trainer.accelerator = SimpleNamespace(is_main_process=True)
    trainer.log_completions, trainer.log_unique_prompts, trainer.num_completions_to_print = True, False, 0
    trainer.args = SimpleNamespace(report_to=[], output_dir=str(output_dir))
    trainer.state = SimpleNamespace(global_step=step)
    trainer._logs = {"images": [], "prompt": prompts, "completion": completions, "rewards": rewards, "advantages": advantages, "extra": {}}
    (output_dir / "completions").mkdir(parents=True, exist_ok=True)  # GRPOTrainer.__init__ makes it
    GRPOTrainer.log(trainer, {})
    return output_dir / "completions" / f"completions_{step:05d}.parquet"


def verl_write_generations():
    """verl 0.9's `RayPPOTrainer._write_generations`, its source read from the installed ray_trainer.py."""
    import verl

    source = Path(verl.__file__).parent / "trainer" / "ppo" / "ray_trainer.py"
    tree = ast.parse(source.read_text())
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == "_write_generations")
    fn.decorator_list = []
    scope: dict = {}
    exec(compile(ast.Module([fn], []), str(source), "exec"), {"os": __import__("os"), "json": json}, scope)  # noqa: S102 (verl's own code, as installed)
    return scope["_write_generations"]


# ------------------------------------------------------------------ reading the three layouts


def test_trl_completions_are_read_as_grpo_trainer_logs_them(tmp_path, monkeypatch):
    q1, q2 = [{"role": "user", "content": "Say hi."}], [{"role": "user", "content": "Name a colour."}]
    a = lambda text: [{"role": "assistant", "content": text}]  # TRL's conversational completions
    batch = {"prompts": [q1, q1, q2, q2], "completions": [a("Hi!"), a("Go away."), a("Blue."), a("No.")],
             "rewards": {"rule_reward": [0.5, 0.25, 1.0, float("nan")], "length": [1.0, 2.0, 0.0, float("nan")]}, "advantages": [0.7, -0.7, 0.7, -0.7]}
    trl_log(tmp_path, 1, monkeypatch=monkeypatch, **batch)
    trl_log(tmp_path, 2, monkeypatch=monkeypatch, **batch)  # no generation between the two logs: TRL writes the batch again
    reader = RolloutReader(tmp_path)  # the output_dir: its completions/ folder is read
    got = [(r.where.split("/")[-1], r.step, r.completion[0]["content"], r.old_reward, r.old_parts) for r in reader]
    nan = got[3][4]["length"]
    assert math.isnan(nan)
    assert got == [
        ("completions_00001.parquet, row 1", 1, "Hi!", 1.5, {"rule_reward": 0.5, "length": 1.0}),
        ("completions_00001.parquet, row 2", 1, "Go away.", 2.25, {"rule_reward": 0.25, "length": 2.0}),
        ("completions_00001.parquet, row 3", 1, "Blue.", 1.0, {"rule_reward": 1.0, "length": 0.0}),
        ("completions_00001.parquet, row 4", 1, "No.", None, {"rule_reward": nan, "length": nan}),
    ]
    s = reader.summary()
    assert (s["format"], s["files"], s["rows"], s["rollouts"], s["skipped"]) == ("trl", 2, 8, 4, {REPEATED_LOG: 4})
    assert s["old_reward_from"] == "the sum of the reward columns (rule_reward, length)"
    rollouts = list(reader)
    assert [r.group for r in rollouts] == [prompt_group(q1)] * 2 + [prompt_group(q2)] * 2
    assert [m.content for m in rollouts[0].conversation] == ["Say hi.", "Hi!"]
    # one reward function of a weighted run
    assert [r.old_reward for r in RolloutReader(tmp_path, old_reward="length")][:2] == [1.0, 2.0]
    with pytest.raises(DataError, match="no numeric column 'total' for the old reward"):
        list(RolloutReader(tmp_path, old_reward="total"))


def test_verl_dumps_are_read_as_ray_trainer_writes_them(tmp_path):
    write = verl_write_generations()
    # as _log_rollout_data calls it: decoded prompts and responses, the summed token-level scores, reward_extra_info
    write(["user\nSay hi.\nassistant\n"] * 2, ["Hi!", "Go away."], [None, None], [0.5, 0.25], {"rule_reward": [0.5, 0.25], "refused": [0.0, 0.0]}, str(tmp_path), 10)
    write(["user\nName a colour.\nassistant\n"], ["Blue."], ["blue"], [1.0], {"rule_reward": [1.0], "refused": [0.0]}, str(tmp_path), 9)
    reader = RolloutReader(tmp_path)
    got = [(r.where.split("/")[-1], r.step, r.prompt, r.completion, r.old_reward, r.old_parts) for r in reader]
    assert got == [  # files in step order: 9.jsonl before 10.jsonl
        ("9.jsonl, line 1", 9, "user\nName a colour.\nassistant\n", "Blue.", 1.0, {"rule_reward": 1.0, "refused": 0.0}),
        ("10.jsonl, line 1", 10, "user\nSay hi.\nassistant\n", "Hi!", 0.5, {"rule_reward": 0.5, "refused": 0.0}),
        ("10.jsonl, line 2", 10, "user\nSay hi.\nassistant\n", "Go away.", 0.25, {"rule_reward": 0.25, "refused": 0.0}),
    ]
    assert reader.format == "verl" and reader.old_reward_from == "score"
    assert [r.old_reward for r in RolloutReader(tmp_path / "10.jsonl", old_reward="rule_reward")] == [0.5, 0.25]


def test_autorule_jsonl_is_read_with_its_groups_steps_and_rewards(tmp_path):
    path = tmp_path / "rollouts.jsonl"
    rows = [
        {"prompt": [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Hi"}], "completion": "Hello!", "group": "g1", "step": 3, "reward": 0.5},
        {"prompt": "Hi", "completion": [{"role": "assistant", "content": "Hey."}], "reward": None, "rule_reward": 0.25},
        {"response": "Yo.", "reward": 1},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    reader = RolloutReader(path)
    got = [([(m.role, m.content) for m in r.conversation], r.group, r.step, r.old_reward, r.old_parts) for r in reader]
    assert got == [
        ([("system", "Be kind."), ("user", "Hi"), ("assistant", "Hello!")], "g1", 3, 0.5, {}),
        ([("user", "Hi"), ("assistant", "Hey.")], prompt_group("Hi"), None, None, {"rule_reward": 0.25}),
        ([("assistant", "Yo.")], prompt_group(None), None, 1.0, {}),
    ]
    assert reader.format == "autorule"


def test_a_bad_row_is_named_with_its_file_and_line_or_skipped_and_counted(tmp_path):
    path = tmp_path / "rollouts.jsonl"
    path.write_text('{"completion": "A", "reward": 0.1}\n{"prompt": "Q", "reward": 0.2}\n{broken\n{"completion": "B", "reward": "high"}\n')
    with pytest.raises(DataError) as e:
        list(RolloutReader(path))
    assert str(e.value).startswith(f"{path}, line 2: no completion: expected a 'completion' (text or chat messages); keys ['prompt', 'reward'] (on_bad_row='skip'")
    reader = RolloutReader(path, on_bad_row="skip")
    assert [r.completion for r in reader] == ["A"]
    assert reader.skipped == {"no completion": 1, "broken JSON": 1, "'reward' not a number": 1}
    assert reader.examples["broken JSON"] == f"{path}, line 3"
    (tmp_path / "scored.jsonl").write_text('{"id": "1", "reward": 0.5, "rule_reward": 0.5, "verdicts": {"r-1": 0.5}}\n')
    with pytest.raises(DataError, match=r"this looks like a row `autorule score --out` writes, which holds no text"):
        list(RolloutReader(tmp_path / "scored.jsonl", "autorule"))
    with pytest.raises(DataError, match="no such file or folder"):
        RolloutReader(tmp_path / "missing")
    (tmp_path / "other.jsonl").write_text('{"question": "Q"}\n')
    with pytest.raises(DataError, match=r"cannot tell the rollout format from the keys \['question'\]"):
        RolloutReader(tmp_path / "other.jsonl")


# ------------------------------------------------------------------ old vs new


def rollouts_file(tmp_path) -> Path:
    """Two prompts x two completions; old rewards 0.1..0.4, new (the written values) 0.2, 0.1, 0.4, 0.3."""
    path = tmp_path / "rollouts.jsonl"
    rows = [("Q1", "value=0.2", 0.1), ("Q1", "value=0.1", 0.2), ("Q2", "value=0.4", 0.3), ("Q2", "value=0.3", 0.4)]
    path.write_text("".join(json.dumps({"prompt": p, "completion": c, "step": 7, "reward": r}) + "\n" for p, c, r in rows))
    return path


def test_old_and_new_rewards_side_by_side_with_spearman(tmp_path):
    out = tmp_path / "out" / "rescored.jsonl"
    result = rescore(rollouts_file(tmp_path), RULES, value_llm(), cache=False, out=out)
    assert result.old.tolist() == [0.1, 0.2, 0.3, 0.4]
    assert result.new.tolist() == pytest.approx([0.2, 0.1, 0.4, 0.3])
    s = result.summary
    # ranks old 1 2 3 4, new 2 1 4 3: d^2 = 4, rho = 1 - 6 x 4 / (4 x 15) = 0.6; within each prompt the two swap: -1
    assert s["spearman"] == pytest.approx(0.6)
    assert s["spearman_within_groups"] == pytest.approx(-1.0) and s["groups_compared"] == 2
    assert (s["paired"], s["mean_old"], s["mean_new"]) == (4, pytest.approx(0.25), pytest.approx(0.25))
    assert (s["rows"], s["rollouts"], s["failed"], s["without_old_reward"], s["skipped"]) == (4, 4, 0, 0, {})
    assert s["new_components"] == {"rule_reward": pytest.approx(0.25)}
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["completion"], r["old_reward"], r["reward"], r["rule_reward"], r["step"]) for r in rows] == [
        ("value=0.2", 0.1, 0.2, 0.2, 7), ("value=0.1", 0.2, 0.1, 0.1, 7), ("value=0.4", 0.3, 0.4, 0.4, 7), ("value=0.3", 0.4, 0.3, 0.3, 7)]
    assert rows[0]["source"] == f"{tmp_path / 'rollouts.jsonl'}, line 1" and list(rows[0]["verdicts"].values()) == [0.2]
    # the written file is autorule's own layout: rescoring it again reads the new reward as the old one
    again = rescore(out, RULES, value_llm(), cache=False)
    assert again.old.tolist() == pytest.approx([0.2, 0.1, 0.4, 0.3]) and again.summary["spearman"] == pytest.approx(1.0)


class GroupedScorer(RewardScorer):
    """A scorer taking GRPO groups and the step, as the reward package's does once it has them; it records each call."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.calls: list[tuple[list, int | None]] = []

    def score(self, conversations, desc=None, on_item=None, *, groups=None, step=None):
        self.calls.append((list(groups), step))
        return super().score(conversations, desc, on_item)


def test_groups_and_steps_reach_a_scorer_that_takes_them_in_whole_group_chunks(tmp_path):
    path = tmp_path / "r.jsonl"
    rows = [("A", 1), ("A", 1), ("B", 1), ("B", 1), ("C", 2), ("C", 2)]
    path.write_text("".join(json.dumps({"prompt": p, "completion": f"value=0.{i}", "step": s, "group": p, "reward": i / 10}) + "\n"
                            for i, (p, s) in enumerate(rows, 1)))
    scorer = GroupedScorer(RuleSet.from_texts(RULES), value_llm())
    result = rescore(path, None, scorer=scorer, chunk_size=1)
    assert scorer.calls == [(["A", "A"], 1), (["B", "B"], 1), (["C", "C"], 2)]
    assert result.summary["grouped"] is True and result.summary["groups_split"] == 0
    assert result.summary["spearman"] == pytest.approx(1.0)
    plain = rescore(path, None, scorer=RewardScorer(RuleSet.from_texts(RULES), value_llm()), chunk_size=1)
    assert plain.new.tolist() == pytest.approx(result.new.tolist())


def test_rescore_goes_through_the_cache(tmp_path):
    with ScriptedServer(value_verifier) as server:
        first = rescore(rollouts_file(tmp_path), RULES, f"openai:mock@{server.base_url}", cache=tmp_path / "cache.sqlite")
        second = rescore(rollouts_file(tmp_path), RULES, f"openai:mock@{server.base_url}", cache=tmp_path / "cache.sqlite")
    assert first.summary["llm_stats"].get("cache_hits", 0) == 0
    assert second.summary["llm_stats"]["cache_hits"] == 4  # 4 rollouts x 1 rule, none asked again
    assert second.new.tolist() == first.new.tolist()
    assert first.new.tolist() == pytest.approx([0.2, 0.1, 0.4, 0.3])


# ------------------------------------------------------------------ the command


def test_cli_rescores_a_verl_dump_through_a_server(tmp_path, capsys):
    write = verl_write_generations()
    write(["user\nSay hi.\nassistant\n"] * 3, ["Hi value=0.9", "Hm value=0.5", "Go value=0.1"], [None] * 3, [1.0, 0.0, 0.5],
          {"acc": [1, 0, 1]}, str(tmp_path / "rollouts"), 4)
    rules = tmp_path / "rules.yaml"
    RuleSet.from_texts(RULES).save(rules)
    out = tmp_path / "rescored.jsonl"
    with ScriptedServer(value_verifier) as server:
        code = main(["rescore", str(tmp_path / "rollouts"), "--rules", str(rules), "--verifier", f"openai:mock@{server.base_url}",
                     "--no-cache", "--out", str(out)])
        assert code == 0
        err = capsys.readouterr().err
        assert "read 3 rows of 1 verl file; rescored 3" in err
        assert "mean reward: old 0.500 (score), new 0.500, over 3 rollouts with both" in err
        # old ranks 3 1 2, new ranks 3 2 1: d^2 = 0 + 1 + 1 = 2, rho = 1 - 6 x 2 / (3 x 8) = 0.5
        assert "Spearman's rho, old vs new: 0.500" in err
        assert "old components: acc 0.667" in err
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert [r["old_reward"] for r in rows] == [1.0, 0.0, 0.5]
        assert [r["reward"] for r in rows] == pytest.approx([0.9, 0.5, 0.1])
        code = main(["rescore", str(tmp_path / "rollouts" / "4.jsonl"), "--rules", str(rules), "--verifier", f"openai:mock@{server.base_url}",
                     "--no-cache", "--out", str(out), "--json"])
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert code == 0 and summary["spearman"] == pytest.approx(0.5) and summary["format"] == "verl"


def test_cli_exits_3_when_no_rollout_could_be_rescored_and_2_on_a_bad_row(tmp_path, capsys):
    rules = tmp_path / "rules.yaml"
    RuleSet.from_texts(RULES).save(rules)
    path = tmp_path / "r.jsonl"
    path.write_text('{"completion": "A"}\n{"prompt": "Q"}\n')
    args = ["rescore", str(path), "--rules", str(rules), "--verifier", "openai:mock@http://127.0.0.1:9/v1", "--no-cache"]
    assert main(args) == 2
    assert f"{path}, line 2: no completion" in capsys.readouterr().err
    path.write_text('{"prompt": "Q"}\n{"prompt": "R"}\n')
    assert main([*args, "--format", "autorule", "--on-bad-row", "skip", "--out", str(tmp_path / "o.jsonl")]) == 3
    err = capsys.readouterr().err
    assert "skipped 2: 2 no completion" in err and "2 x no completion" in err


def test_rescore_is_a_lazy_public_name():
    import autorule

    assert autorule.rescore is rescore
    assert np.isnan(autorule.RescoreResult({}, np.zeros(1), np.full(1, np.nan)).new[0])


# ------------------------------------------------------------------ a real GRPO run's log


@pytest.mark.slow
def test_a_real_grpo_runs_completions_log_is_rescored(tmp_path, tiny_models, monkeypatch):
    from datasets import Dataset
    from trl import GRPOConfig, GRPOTrainer

    from autorule import RuleReward

    monkeypatch.setenv("AUTORULE_CACHE", str(tmp_path / "cache.sqlite"))
    rules = tmp_path / "rules.yaml"
    RuleSet.from_texts(RULES).save(rules)
    with ScriptedServer(value_verifier) as server:
        reward = RuleReward(str(rules), verifier=f"openai:mock@{server.base_url}")
        prompts = Dataset.from_list([{"prompt": [{"role": "user", "content": q}]} for q in ["Say hi.", "Name a colour."]])
        trainer = GRPOTrainer(model=str(tiny_models / "policy"), reward_funcs=[reward], train_dataset=prompts,
                              args=GRPOConfig(output_dir=str(tmp_path / "grpo"), max_steps=1, per_device_train_batch_size=2, num_generations=2,
                                              max_completion_length=8, bf16=False, use_cpu=True, report_to=[], save_strategy="no",
                                              logging_steps=1, log_completions=True))
        trainer.train()
        result = rescore(tmp_path / "grpo", rules, f"openai:mock@{server.base_url}", cache=False)
    s = result.summary
    assert (s["format"], s["files"], s["rows"], s["rollouts"], s["old_reward_from"]) == ("trl", 1, 2, 2, "the sum of the reward columns (rule_reward)")
    # a random tiny policy writes no "value=": every check is 0.5, in the run and again now
    assert result.old.tolist() == [0.5, 0.5] and result.new.tolist() == [0.5, 0.5]
    assert s["spearman"] is None and s["spearman_note"] == "the old rewards are all the same"


def test_a_vetoed_rollout_is_marked_and_counted(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text('{"completion": "value=0.2", "reward": 1.0}\n{"completion": "value=0.9", "reward": 0.0}\n')
    rules = RuleSet.from_texts(["! The assistant's response should be polite.", "The assistant's response should be short."])
    result = rescore(path, rules, value_llm(), cache=False)
    # the essential rule fails at P(Yes) 0.2 < 0.5: the total is capped at the default preset's floor, 0
    assert result.new.tolist() == pytest.approx([0.0, 0.9])
    assert [r.get("vetoed", False) for r in result.rows] == [True, False] and result.summary["vetoed"] == 1
