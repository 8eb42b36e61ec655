"""verl, OpenRLHF and TRL driving autorule through their own code, configured as the README says.

The verifier is the mock OpenAI-compatible server whose P(Yes) is the value written in
the response ("value=0.25"), so each reward is known from the response alone.
"""

import copy
import os
import pickle
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import numpy as np
import pytest
import torch

from autorule import RuleReward, RuleSet
from autorule.testing.mock_server import ScriptedServer, value_verifier
from autorule.integrations import verl as autorule_verl
from autorule.llm.local import local_model_path

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
README_VERIFIER = "openai:Qwen/Qwen3-8B@http://127.0.0.1:8000/v1"
RULE_TEXTS = ["The assistant's response should be polite.", "The assistant's response should answer the question."]


def readme_block(name: str) -> str:
    """The code block after `<!-- readme-test: NAME -->` in the README."""
    match = re.search(rf"<!-- readme-test: {name} -->\n```\w*\n(.*?)```", README, re.DOTALL)
    assert match, f"README has no block marked readme-test: {name}"
    return match.group(1)


@pytest.fixture
def verifier_server():
    seen: list[list[dict]] = []

    def reply(messages, body):
        seen.append(messages)
        return value_verifier(messages, body)

    with ScriptedServer(reply) as server:
        server.seen = seen
        yield server


@pytest.fixture
def rules_file(tmp_path):
    path = tmp_path / "rules.yaml"
    RuleSet.from_texts(RULE_TEXTS).save(path)
    return path


@pytest.fixture(scope="module")
def tokenizer_dir():
    return str(local_model_path("embedded"))


# ------------------------------------------------------------------ verl


def verl_overrides(block: str, rules: Path, server, module_path: str) -> list[str]:
    """The README's command-line overrides, with this test's rules, verifier and module path."""
    lines = [line.strip().rstrip("\\").strip() for line in block.strip().splitlines()[1:]]
    return [
        line.replace("$PWD/rules.yaml", str(rules)).replace(README_VERIFIER, f"openai:mock@{server.base_url}").replace("pkg://autorule.integrations.verl", module_path)
        for line in lines
        if line
    ]


def verl_batch(tokenizer, prompts: list[str], responses: list[str], prompt_len: int = 24, response_len: int = 16, uids: list[str] | None = None):
    """A DataProto as verl's trainer holds it after rollout: left-padded prompts, right-padded responses."""
    from verl import DataProto

    n = len(prompts)
    prompt_ids = torch.full((n, prompt_len), tokenizer.pad_token_id)
    prompt_mask = torch.zeros(n, prompt_len, dtype=torch.long)
    response_ids = torch.full((n, response_len), tokenizer.pad_token_id)
    response_mask = torch.zeros(n, response_len, dtype=torch.long)
    for i, (prompt, response) in enumerate(zip(prompts, responses)):
        ids = tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True, tokenize=False)
        ids = tokenizer(ids, add_special_tokens=False)["input_ids"][-prompt_len:]
        prompt_ids[i, prompt_len - len(ids):] = torch.tensor(ids)
        prompt_mask[i, prompt_len - len(ids):] = 1
        out = tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
        response_ids[i, : len(out)] = torch.tensor(out)
        response_mask[i, : len(out)] = 1
    attention = torch.cat([prompt_mask, response_mask], dim=1)
    return DataProto.from_dict(
        tensors={"prompts": prompt_ids, "responses": response_ids, "input_ids": torch.cat([prompt_ids, response_ids], dim=1),
                 "attention_mask": attention, "position_ids": torch.clamp(attention.cumsum(-1) - 1, min=0), "response_mask": response_mask},
        non_tensors={
            "data_source": np.array(["chat"] * n, dtype=object),
            "reward_model": np.array([{"ground_truth": None, "style": "rule"}] * n, dtype=object),
            "extra_info": np.array([{"prompt": p, "index": i} for i, p in enumerate(prompts)], dtype=object),
            "raw_prompt": np.array([[{"role": "user", "content": p}] for p in prompts], dtype=object),
            **({"uid": np.array(uids, dtype=object)} if uids is not None else {}),
        },
    )


def run_verl_reward_loop(overrides: list[str], tokenizer_dir: str, prompts, responses, uids=None):
    """verl's own path: its hydra config, its RewardLoopWorker, its rm_scores assembly."""
    import verl
    from hydra import compose, initialize_config_dir
    from verl.experimental.reward_loop.reward_loop import RewardLoopWorker
    from verl.trainer.ppo.reward import resolve_reward_manager_cls

    with initialize_config_dir(config_dir=os.path.join(os.path.dirname(verl.__file__), "trainer", "config"), version_base=None):
        config = compose(config_name="ppo_trainer", overrides=[f"actor_rollout_ref.model.path={tokenizer_dir}", *overrides])
    worker = RewardLoopWorker(config)
    data = verl_batch(worker.input_tokenizer, prompts, responses, uids=uids)
    outputs = worker.loop.run_until_complete(worker.compute_score_batch(data))
    rm_scores = resolve_reward_manager_cls(config).assemble_rm_scores(data, [o["reward_score"] for o in outputs])
    return data, outputs, rm_scores


PROMPTS = ["Say hi.", "Name a colour, please."]
RESPONSES = ["Hello there, value=0.250000", "Blue is one value=0.900000 of many"]


@pytest.mark.parametrize("block", ["verl-function", "verl-manager"])
@pytest.mark.parametrize("module", ["pkg", "file"])
def test_verl_loads_autorule_as_the_readme_says_and_rewards_sit_on_the_last_response_token(block, module, rules_file, verifier_server, tokenizer_dir, monkeypatch):
    from autorule.reward import RewardScorer

    module_path = "pkg://autorule.integrations.verl" if module == "pkg" else autorule_verl.__file__
    monkeypatch.setenv("AUTORULE_NO_CACHE", "1")  # every check reaches this test's server
    calls = []
    real_score = RewardScorer.score
    monkeypatch.setattr(RewardScorer, "score", lambda self, convs, *a, **k: calls.append(len(convs)) or real_score(self, convs, *a, **k))
    overrides = verl_overrides(readme_block(block), rules_file, verifier_server, module_path)
    data, outputs, rm_scores = run_verl_reward_loop(overrides, tokenizer_dir, PROMPTS, RESPONSES)

    assert [o["reward_score"] for o in outputs] == pytest.approx([0.25, 0.9])
    for out, value in zip(outputs, [0.25, 0.9]):
        assert out["reward_extra_info"] == pytest.approx({"score": value, "total_reward": value, "rule_reward": value, "vetoed": 0.0, "dropped_rules": 0.0,
                                                          "unparsed_checks": 0.0, "refused": 0.0, "reasoning_chars_stripped": 0.0, "empty_response": 0.0,
                                                          "malformed": 0.0, "rule_weight": 1.0, "rm_weight": 0.0, "length_weight": 0.0,
                                                          "active_rules": 2.0, "refreshed_rules": 0.0,
                                                          **{f"pass_rate/{r.id}": float(value >= 0.5) for r in RuleSet.load(rules_file).rules}})
    # the reward sits on the last valid response token (the EOS), zero everywhere else
    last = data.batch["response_mask"].sum(-1) - 1
    expected = torch.zeros_like(rm_scores)
    expected[0, last[0]], expected[1, last[1]] = 0.25, 0.9
    assert torch.allclose(rm_scores, expected)
    # the manager scores the worker's samples in one pass; the function once per sample
    assert calls == ([2] if block == "verl-manager" else [1, 1])
    # the verifier saw the prompt: from raw_prompt (manager) or extra_info["prompt"] (function)
    assert any("Name a colour, please." in m[-1]["content"] for m in verifier_server.seen)


def test_verl_batch_call_rejects_mismatched_lengths_and_returns_one_dict_per_solution(rules_file, verifier_server, monkeypatch):
    monkeypatch.setenv("AUTORULE_NO_CACHE", "1")
    options = {"rules": str(rules_file), "verifier": f"openai:mock@{verifier_server.base_url}"}
    with pytest.raises(ValueError, match="3 solutions but 2 extra_infos"):
        autorule_verl.compute_score(data_sources=["a"] * 3, solution_strs=["x"] * 3, ground_truths=[None] * 3, extra_infos=[{}, {}], **options)
    out = autorule_verl.compute_score(data_sources=["a", "a"], solution_strs=["value=0.300000", "value=0.700000"], ground_truths=[None, None], **options, reward="rule")
    assert [o["score"] for o in out] == pytest.approx([0.3, 0.7])


def test_verl_manager_vetoes_and_drops_rules_per_uid_through_verls_reward_loop(tmp_path, verifier_server, tokenizer_dir, monkeypatch):
    from autorule.rules import Rule

    monkeypatch.setenv("AUTORULE_NO_CACHE", "1")
    rules = tmp_path / "rules.yaml"
    RuleSet(rules=[Rule(id="safe", text="The assistant's response must be safe.", essential=True),
                   *[Rule(id=f"r{i}", text=f"The assistant's response should be good in way {i}.") for i in range(4)]]).save(rules)
    overrides = verl_overrides(readme_block("verl-manager"), rules, verifier_server, "pkg://autorule.integrations.verl")
    overrides += ["+reward.reward_kwargs.rule_dropout=0.5"]
    prompts = ["Say hi.", "Say hi.", "Name a colour, please."]
    responses = ["Hello value=0.250000", "Hi value=0.900000", "Blue value=0.900000"]
    _, outputs, _ = run_verl_reward_loop(overrides, tokenizer_dir, prompts, responses, uids=["u1", "u1", "u2"])
    info = [o["reward_extra_info"] for o in outputs]
    # every check reads the response's value: 0.25 fails the essential rule (veto: the default preset's floor, 0)
    assert [o["reward_score"] for o in outputs] == pytest.approx([0.0, 0.9, 0.9])
    assert [i["vetoed"] for i in info] == [1.0, 0.0, 0.0]
    assert [i["dropped_rules"] for i in info] == [2.0, 2.0, 2.0]  # round(0.5 x 4 non-essential rules)
    assert [i["rule_reward"] for i in info] == pytest.approx([0.25, 0.9, 0.9])
    # the essential rule is judged on every sample: passes are per sample, 0 where it failed
    assert [i["pass_rate/safe"] for i in info] == [0.0, 1.0, 1.0]
    # normalise-then-sum needs a whole group in one call, which verl's reward loop never gives a manager
    with pytest.raises(ValueError, match="verl's reward loop hands a reward manager one sample at a time"):
        autorule_verl.AutoRuleRewardManager(rules=str(rules), aggregation="normalize_then_sum")


def test_verl_batch_function_normalises_each_part_within_prompt_groups(rules_file, verifier_server, monkeypatch):
    monkeypatch.setenv("AUTORULE_NO_CACHE", "1")
    options = {"rules": str(rules_file), "verifier": f"openai:mock@{verifier_server.base_url}", "aggregation": "normalize_then_sum"}
    out = autorule_verl.compute_score(data_sources=["a"] * 3, solution_strs=["value=0.200000", "value=0.800000", "value=0.500000"],
                                      ground_truths=[None] * 3, extra_infos=[{"prompt": "A"}, {"prompt": "A"}, {"prompt": "B"}], **options)
    # group A: rule [0.2, 0.8] -> z [-1/sqrt2, 1/sqrt2]; group B alone -> 0
    assert [o["score"] for o in out] == pytest.approx([-0.7071, 0.7071, 0.0], abs=1e-3)


# ------------------------------------------------------------------ OpenRLHF


def test_openrlhf_service_logs_the_parts_and_refuses_normalise_then_sum(rules_file):
    from fastapi.testclient import TestClient

    from autorule.integrations.openrlhf import create_app
    from autorule.reward import RewardScorer, get_preset
    from autorule.rules import Rule
    from autorule.testing.fake_llm import FakeLLM

    rules = RuleSet(rules=[Rule(id="safe", text="Be safe.", essential=True), Rule(id="kind", text="Be kind.")])
    with TestClient(create_app(RewardScorer(rules, FakeLLM(p_yes=0.3)))) as client:
        body = client.post("/get_reward", json={"query": ["Q A", "Q B"], "prompts": ["Q ", "Q "]}).json()
    assert body["rewards"] == [0.0, 0.0]  # vetoed: the floor of the default preset
    logs = body["extra_logs"]
    assert logs["vetoed"] == [1.0, 1.0] and logs["rule_reward"] == pytest.approx([0.3, 0.3]) and logs["active_rules"] == [2.0, 2.0]
    assert {"total_reward", "rule_reward", "vetoed", "dropped_rules", "rule_weight", "refreshed_rules"} <= set(logs)
    with pytest.raises(ValueError, match="OpenRLHF sends its reward service samples one request at a time"):
        create_app(RewardScorer(rules, FakeLLM(p_yes=0.3), get_preset("default", aggregation="normalize_then_sum")))




def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_openrlhf_remote_reward_client_calls_autorule_serve_as_the_readme_says(rules_file, verifier_server, tokenizer_dir, tmp_path):
    import asyncio

    from openrlhf.utils.agent import SingleTurnAgentExecutor
    from transformers import AutoTokenizer

    port = _free_port()
    command = readme_block("openrlhf").splitlines()[0]
    command = command.replace("rules.yaml", str(rules_file)).replace(README_VERIFIER.replace("8000", "8001"), f"openai:mock@{verifier_server.base_url}")
    command = command.replace("--port 8000", f"--port {port}")
    args = command.split()[1:]
    assert args[0] == "serve"
    log = (tmp_path / "serve.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "autorule", *args, "--no-cache"], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120
        while time.time() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            pytest.fail("autorule serve did not come up: " + (tmp_path / "serve.log").read_text())

        tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
        response_ids = tokenizer("Blue is one value=0.900000 of many", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]

        class Engine:  # the vLLM engine's generate(), which has no CPU build; the reward path is OpenRLHF's own
            async def generate(self, prompt_token_ids, params, multi_modal_data=None):
                return SimpleNamespace(outputs=[SimpleNamespace(token_ids=response_ids, finish_reason="stop", logprobs=None)])

        # OpenRLHF's dataset applies the policy's chat template to the prompt
        prompt = tokenizer.apply_chat_template([{"role": "user", "content": "Name a colour, please."}], tokenize=False, add_generation_prompt=True)
        executor = SingleTurnAgentExecutor(remote_rm_url=f"http://127.0.0.1:{port}/get_reward")
        out = asyncio.run(executor.execute(prompt, "label", SimpleNamespace(max_tokens=32, logprobs=None), 256, tokenizer, Engine()))
    finally:
        proc.terminate()
        proc.wait(30)
    # one value per query, the shape OpenRLHF's own reward server (openrlhf.cli.serve_rm) answers with
    assert out["reward"] == [pytest.approx(0.9)]
    assert out["scores"] == [pytest.approx(0.9)]
    assert out["extra_logs"] == {"total_reward": [pytest.approx(0.9)], "rule_reward": [pytest.approx(0.9)], "vetoed": [0.0], "dropped_rules": [0.0],
                                 "unparsed_checks": [0.0], "refused": [0.0], "reasoning_chars_stripped": [0.0], "empty_response": [0.0],
                                 "malformed": [0.0], "rule_weight": [1.0], "rm_weight": [0.0], "length_weight": [0.0], "active_rules": [2.0],
                                 "refreshed_rules": [0.0], **{f"pass_rate/{r.id}": [1.0] for r in RuleSet.load(rules_file).rules},
                                 "unknown_template": [0.0], "text_after_end_chars": [0.0]}
    # the verifier saw the conversation, not the chat template's markup
    judged = verifier_server.seen[-1][-1]["content"]
    assert "Name a colour, please." in judged and "<|im_start|>" not in judged and "<|im_end|>" not in judged
    assert "autorule reward server on http://127.0.0.1:" in (tmp_path / "serve.log").read_text()


# ------------------------------------------------------------------ TRL


def test_trl_rule_reward_survives_pickle_and_deepcopy(rules_file, verifier_server, monkeypatch):
    reward = RuleReward(str(rules_file), verifier=f"openai:mock@{verifier_server.base_url}", cache=False)
    assert reward(prompts=["Q"], completions=["value=0.400000"]) == pytest.approx([0.4])  # builds its live scorer
    for copied in (pickle.loads(pickle.dumps(reward)), copy.deepcopy(reward)):
        assert copied._scorer is None  # connections stay behind; the copy builds its own
        assert copied(prompts=["Q"], completions=[[{"role": "assistant", "content": "value=0.600000"}]]) == pytest.approx([0.6])
        assert copied.__name__ == "rule_reward"


@pytest.mark.slow
def test_trl_readme_block_runs_a_real_grpo_step(rules_file, verifier_server, tiny_models, tmp_path, monkeypatch):
    code = readme_block("trl")
    code = code.replace('"rules.yaml"', repr(str(rules_file))).replace(README_VERIFIER, f"openai:mock@{verifier_server.base_url}")
    code = code.replace('"path/to/policy"', repr(str(tiny_models / "policy"))).replace('"runs/grpo"', repr(str(tmp_path / "grpo")))
    # CPU settings (TRL's defaults are for GPUs)
    code = code.replace("max_completion_length=8)", "max_completion_length=8, bf16=False, use_cpu=True, report_to=[], save_strategy='no', logging_steps=1)")
    monkeypatch.setenv("AUTORULE_CACHE", str(tmp_path / "cache.sqlite"))
    scope: dict = {}
    exec(compile(code, "README.md (TRL)", "exec"), scope)
    logs = scope["trainer"].state.log_history[0]
    # a random tiny policy writes no "value=", so every check is 0.5 and so is the reward
    assert logs["rewards/rule_reward/mean"] == pytest.approx(0.5)
    for rule in RuleSet.load(rules_file).rules:
        assert logs[f"rule_reward/pass_rate/{rule.id}"] == pytest.approx(1.0)  # P(Yes) 0.5 counts as a pass


def test_trl_normalise_then_sum_runs_rule_and_rm_as_two_weighted_reward_functions(rules_file, verifier_server, tiny_models, tmp_path, monkeypatch):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    from autorule.integrations.trl import normalize_then_sum_funcs

    monkeypatch.setenv("AUTORULE_CACHE", str(tmp_path / "cache.sqlite"))
    funcs, weights = normalize_then_sum_funcs(rules_file, f"openai:mock@{verifier_server.base_url}", rm=str(tiny_models / "rm"), preset="paper")
    assert [f.__name__ for f in funcs] == ["rule_reward", "rm_reward"] and weights == [10.0, 1.0]
    tok = AutoTokenizer.from_pretrained(tiny_models / "policy")
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": q}]} for q in ["Say hi.", "Name a colour."]])
    args = GRPOConfig(output_dir=str(tmp_path / "grpo"), max_steps=1, per_device_train_batch_size=4, num_generations=2, max_completion_length=8,
                      bf16=False, use_cpu=True, report_to=[], save_strategy="no", logging_steps=1, reward_weights=weights,
                      multi_objective_aggregation="normalize_then_sum")
    calls = []
    rm_model = funcs[0].scorer.rm
    real = rm_model.score
    monkeypatch.setattr(rm_model, "score", lambda convs, **k: calls.append(len(convs)) or real(convs, **k))
    trainer = GRPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_models / "policy"), reward_funcs=funcs, args=args, train_dataset=data,
                          processing_class=tok)
    trainer.train()
    logs = trainer.state.log_history[0]
    assert {"rewards/rule_reward/mean", "rewards/rm_reward/mean", "rule_reward/vetoed", "rule_reward/rm_weight"} <= set(logs)
    assert logs["rule_reward/rm_weight"] == 1.0 and logs["rule_reward/rule_weight"] == 10.0
    assert calls == [4]  # the RM scored the batch once for both parts


# ------------------------------------------------------------------ the Python API


@pytest.mark.slow
def test_python_api_readme_block_runs_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("AUTORULE_CACHE", str(tmp_path / "cache.sqlite"))
    exec(compile(readme_block("python-api"), "README.md (Python API)", "exec"), {})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("[") and "The assistant" in lines[0]  # the rule texts
    assert re.fullmatch(r"held-out accuracy of the rule reward: \d+%", lines[1])
    assert re.fullmatch(r"\[[0-9.]+\] \{.*\}", lines[2])
