"""Trainer adapters: TRL (inside a real GRPOTrainer step), verl (its signatures), OpenRLHF (real HTTP)."""

import inspect
import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch
from fake_llm import ScriptedLLM

from autorule.cli.app import main
from autorule.integrations import verl
from autorule.integrations.openrlhf import create_app
from autorule.integrations.trl import AsyncRuleReward, RuleReward
from autorule.reward import RewardScorer
from autorule.rules import Rule, RuleSet, rule_id

RULES = RuleSet(rules=[Rule(id=rule_id(t), text=t) for t in ["The assistant's response should be polite.", "The assistant's response should answer the question."]])


def number_in_response(prefix: str, question: str) -> float:
    """P(Yes) read off the response: 'score 0.7' -> 0.7, so every reward can be traced to its request."""
    body = prefix.split("-final-response id=")[1]
    return float(body.split("score ")[1].split()[0]) if "score " in body else 0.5


# ------------------------------------------------------------------ TRL


@pytest.mark.slow
def test_trl_reward_inside_a_real_grpo_step(embedded, tmp_path):
    from datasets import Dataset
    from transformers import LlamaConfig, LlamaForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    tok = embedded.tokenizer
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, max_position_embeddings=512, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    policy = LlamaForCausalLM(cfg)
    reward = RuleReward(scorer=RewardScorer(RULES, embedded), reward="rule")
    seen = {}

    def spy(prompts, completions, **kwargs):
        seen.update(kwargs)
        out = reward(prompts, completions, **kwargs)
        seen["out"] = out
        return out

    spy.__name__ = "rule_reward"
    data = Dataset.from_list([{"prompt": [{"role": "user", "content": q}]} for q in ["What is 2+2?", "Name a colour.", "Say hi.", "Why is the sky blue?"]])
    args = GRPOConfig(output_dir=str(tmp_path), max_steps=1, per_device_train_batch_size=2, num_generations=2, max_completion_length=8, bf16=False,
                      report_to=[], logging_steps=1, use_cpu=True, save_strategy="no")
    trainer = GRPOTrainer(model=policy, reward_funcs=[spy], args=args, train_dataset=data, processing_class=tok)
    trainer.train()
    logs = trainer.state.log_history[0]
    assert {"log_metric", "trainer_state", "completion_ids"} <= set(seen)
    assert len(seen["out"]) == 2 and all(0.0 <= r <= 1.0 for r in seen["out"])
    assert "rewards/rule_reward/mean" in logs
    for rule in RULES.rules:
        assert f"rule_reward/pass_rate/{rule.id}" in logs


def test_trl_reward_handles_text_and_conversational_shapes():
    reward = RuleReward(scorer=RewardScorer(RULES, ScriptedLLM(number_in_response)), reward="rule")
    metrics = {}
    text = reward(prompts=["Q1", "Q2"], completions=["score 0.9 yes", "score 0.2"], log_metric=metrics.__setitem__)
    chat = reward(prompts=[[{"role": "user", "content": "Q1"}]] * 2, completions=[[{"role": "assistant", "content": "score 0.9"}], [{"role": "assistant", "content": "score 0.2"}]])
    assert text == pytest.approx([0.9, 0.2]) and chat == pytest.approx([0.9, 0.2])
    assert metrics["rule_reward/rule_reward"] == pytest.approx(0.55)
    assert metrics[f"rule_reward/pass_rate/{RULES.rules[0].id}"] == 0.5


def test_trl_async_variant_and_paper_composition():
    import asyncio

    scorer = RewardScorer(RULES, ScriptedLLM(number_in_response), "paper")
    async_reward = AsyncRuleReward(scorer=scorer, reward="rule")
    assert inspect.iscoroutinefunction(async_reward.__call__)  # how TRL (is_async_callable) tells an async reward class
    got = asyncio.run(async_reward(prompts=["Q"] * 2, completions=["score 0.9", "score 0.2"]))
    assert got == pytest.approx([10 * (1.0 - 0.75), 10 * (0.0 - 0.75)])  # hard verdicts in the paper preset
    full = RuleReward(scorer=scorer, reward="total")(prompts=["Q"], completions=["score 0.9"])
    assert full == pytest.approx([2.5])


# ------------------------------------------------------------------ verl


def test_verl_batch_function_scores_with_the_prompt_from_extra_info():
    llm = ScriptedLLM(number_in_response)
    scorer = RewardScorer(RULES, llm)
    out = verl.compute_score(data_sources=["hh", "hh"], solution_strs=["score 0.8", "score 0.1"], ground_truths=[None, None],
                             extra_infos=[{"prompt": "Be nice."}, {}], scorer=scorer)
    assert [o["score"] for o in out] == pytest.approx([0.8, 0.1])
    assert "Be nice." in llm.calls[0][0] and "Be nice." not in llm.calls[-1][0]


def test_verl_reward_manager_batches_concurrent_samples_into_one_pass():
    """verl's reward loop calls run_single for every sample at once; the manager joins them."""
    import asyncio

    from autorule.data import Message

    llm = ScriptedLLM(number_in_response)
    manager = verl.AutoRuleRewardManager.__new__(verl.AutoRuleRewardManager)
    manager.setup(scorer=RewardScorer(RULES, llm), options={"reward": "rule"})
    calls = []
    real = manager.scorer.score
    manager.scorer.score = lambda convs, *a, **k: calls.append(len(convs)) or real(convs, *a, **k)

    async def three_samples():
        convs = [[Message(role="assistant", content=f"score {v}")] for v in (0.1, 0.5, 0.9)]
        return await asyncio.gather(*(manager.score_conversations([c]) for c in convs))

    out = asyncio.run(three_samples())
    assert [r[0]["score"] for r in out] == pytest.approx([0.1, 0.5, 0.9])
    assert calls == [3]


# ------------------------------------------------------------------ OpenRLHF reward server


class Served:
    def __init__(self, app):
        import uvicorn

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.url = f"http://127.0.0.1:{self.port}"

    def __enter__(self):
        self.thread.start()
        for _ in range(200):
            if self.server.started:
                return self
            time.sleep(0.02)
        raise RuntimeError("server did not start")

    def __exit__(self, *exc):
        self.server.should_exit = True
        self.thread.join(10)


def test_server_openrlhf_schema_and_batching_across_concurrent_requests():
    llm = ScriptedLLM(number_in_response)
    app = create_app(RewardScorer(RULES, llm), max_batch=64, max_wait_ms=50)
    with Served(app) as srv:
        def post(i):
            value = (i % 10) / 10
            r = httpx.post(srv.url + "/", json={"query": [f"PROMPT {i} score {value}"], "prompts": [f"PROMPT {i} "], "labels": [None]}, timeout=30)
            return i, value, r

        with ThreadPoolExecutor(32) as pool:
            results = list(pool.map(post, range(64)))
        health = httpx.get(srv.url + "/health").json()
        batch = httpx.post(srv.url + "/get_reward", json={"query": ["a score 0.3", "b score 0.6"], "prompts": ["a ", "b "]}).json()
    for _, value, r in results:
        assert r.status_code == 200
        body = r.json()
        assert set(body) == {"rewards", "scores", "extra_logs"}
        assert body["rewards"] == pytest.approx([value]) and body["scores"] == body["rewards"]
        assert body["extra_logs"]["rule_reward"] == pytest.approx([value])
    assert batch["rewards"] == pytest.approx([0.3, 0.6])
    assert health["status"] == "ok" and health["samples"] == 64
    assert health["batches"] < 64  # concurrent single-sample requests were scored together
    # the prompt is the user's turn, the rest of the query the response being judged
    assert any("<user>\nPROMPT 3\n</user>" in prefix and "score 0.3" in prefix.split("<assistant-final-response id=")[1] for prefix, _ in llm.calls)


def test_server_refuses_bad_requests_with_4xx_and_enforces_the_token():
    app = create_app(RewardScorer(RULES, ScriptedLLM(number_in_response)), token="s3cret", max_body_bytes=10_000)
    auth = {"authorization": "Bearer s3cret"}
    with Served(app) as srv:
        assert httpx.post(srv.url + "/", json={"query": ["x"]}).status_code == 401
        assert httpx.post(srv.url + "/", json={"query": ["x"]}, headers={"authorization": "Bearer wrong"}).status_code == 401
        assert httpx.get(srv.url + "/health").status_code == 200
        assert httpx.post(srv.url + "/", content=b"{not json", headers={**auth, "content-type": "application/json"}).status_code == 422
        assert httpx.post(srv.url + "/", json={"prompts": ["x"]}, headers=auth).status_code == 422
        assert httpx.post(srv.url + "/", json={"query": ["a", "b"], "prompts": ["a"]}, headers=auth).status_code == 422
        assert httpx.post(srv.url + "/", json={"query": ["x" * 20_000]}, headers=auth).status_code == 413
        ok = httpx.post(srv.url + "/", json={"query": ["score 0.4"]}, headers=auth)
        assert ok.status_code == 200 and ok.json()["rewards"] == pytest.approx([0.4])


def test_server_answers_503_past_its_queue_bound():
    def slow(prefix, question):
        time.sleep(0.2)
        return 0.5

    app = create_app(RewardScorer(RULES, ScriptedLLM(slow)), max_batch=1, max_wait_ms=0, max_queue=2)
    with Served(app) as srv:
        with ThreadPoolExecutor(12) as pool:
            codes = list(pool.map(lambda i: httpx.post(srv.url + "/", json={"query": [f"q{i}"]}, timeout=30).status_code, range(12)))
    assert set(codes) <= {200, 503} and codes.count(503) > 0 and codes.count(200) >= 2


@pytest.mark.slow
def test_server_with_the_embedded_verifier(embedded):
    app = create_app(RewardScorer(RULES, embedded))
    with Served(app) as srv:
        with ThreadPoolExecutor(4) as pool:
            rs = list(pool.map(lambda q: httpx.post(srv.url + "/", json={"query": [q], "prompts": ["Hi "]}, timeout=120), ["Hi there!", "Hi, go away."]))
    assert all(r.status_code == 200 and 0 < r.json()["rewards"][0] < 1 for r in rs)


# ------------------------------------------------------------------ CLI


@pytest.mark.slow
def test_cli_score_pairs_and_responses(tmp_path, capsys, embedded):
    rules = tmp_path / "rules.yaml"
    RULES.save(rules)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "What is 2+2?", "chosen": "4.", "rejected": "I won't say."}) + "\n")
    assert main(["score", "--rules", str(rules), "--data", str(pairs), "--no-cache", "--json", "--out", str(tmp_path / "s.jsonl")]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["responses"] == 2 and summary["pairs"] == 1
    rows = [json.loads(line) for line in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert [r["side"] for r in rows] == ["chosen", "rejected"] and set(rows[0]["verdicts"]) == {r.id for r in RULES.rules}
    responses = tmp_path / "responses.jsonl"
    responses.write_text(json.dumps({"id": "a", "prompt": [{"role": "user", "content": "Hi"}], "response": "Hello!"}) + "\n")
    assert main(["score", "--rules", str(rules), "--data", str(responses), "--no-cache", "--preset", "ternary"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["id"] == "a" and set(row["applies"]) == set(row["verdicts"])


def test_cli_score_bad_rules_file(tmp_path, capsys):
    bad = tmp_path / "rules.yaml"
    bad.write_text("rules:\n  - id: a\n    text: one\n  - id: a\n    text: two\n")
    assert main(["score", "--rules", str(bad), "--data", str(bad)]) == 2
    assert "duplicate rule id 'a'" in capsys.readouterr().err
    bad.write_text("rules:\n  - text: ''\n")
    assert main(["score", "--rules", str(bad), "--data", str(bad)]) == 2
    assert "rule text is empty" in capsys.readouterr().err
