"""The trainers get the batched verifier: TRL's async reward, verl's reward manager and the OpenRLHF reward
server, each with a verifier on a server that takes prompt lists (the mock in vLLM's shapes), send their
checks as ``/v1/completions`` requests of up to 64 prompts (every rule of a conversation in one request,
conversations with few rules sharing one) and no chat request per check.

Expected rewards are the values written in the responses ("score 0.7" -> P(Yes) 0.7 for every rule), so
each reward is traced to its request by hand.
"""

import asyncio
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from autorule.data import Message
from autorule.integrations import verl
from autorule.integrations.openrlhf import create_app
from autorule.integrations.trl import AsyncRuleReward
from autorule.llm.openai_compat import OpenAICompatLLM
from autorule.reward import RewardScorer
from autorule.rules import RuleSet
from autorule.testing.mock_server import ScriptedServer

RULES = RuleSet.from_texts(["The assistant's response should be polite.", "The assistant's response should answer the question."])
PROBE = "Is the sky blue"  # the mode's probe, told apart from the checks


def score_in_response(messages: list[dict], body: dict) -> dict:
    """P(Yes) = the number after "score " in the judged response (0.5 where there is none)."""
    judged = messages[-1]["content"].split("-final-response id=")[1:] or [""]  # the mode's probe holds no response
    judged = judged[0]
    p = float(judged.split("score ")[1].split()[0]) if "score " in judged else 0.5
    return {"content": "Yes" if p >= 0.5 else "No", "yes_probability": p}


def checks(server: ScriptedServer) -> tuple[list[dict], list[dict]]:
    """(completions requests, chat requests) of the checks, the probe left out."""
    completions = [b for b in server.requests if "prompt" in b and not any(PROBE in p for p in b["prompt"])]
    chats = [b for b in server.requests if "messages" in b and PROBE not in b["messages"][-1]["content"]]
    return completions, chats


@pytest.fixture
def served_verifier():
    with ScriptedServer(score_in_response, completions="vllm") as server:
        yield server, OpenAICompatLLM("scripted", server.base_url, backoff_base=0.01, timeout=10.0)


def test_trl_async_reward_scores_a_grpo_batch_in_one_request(served_verifier):
    server, llm = served_verifier
    reward = AsyncRuleReward(scorer=RewardScorer(RULES, llm), reward="rule")
    values = [0.9, 0.2, 0.7, 0.4]  # two prompts, a GRPO group of two completions each
    got = asyncio.run(reward(prompts=["Q1", "Q1", "Q2", "Q2"], completions=[f"score {v}" for v in values]))
    assert got == pytest.approx(values)
    completions, chats = checks(server)
    # 4 completions x 2 rules: 8 prompts, one request
    assert len(completions) == 1 and chats == [] and len(completions[0]["prompt"]) == 8 and completions[0]["max_tokens"] == 1
    assert llm.yes_no_record["mode"] == "batched"


def test_verl_reward_manager_uses_the_batched_path(served_verifier):
    server, llm = served_verifier
    manager = verl.AutoRuleRewardManager.__new__(verl.AutoRuleRewardManager)
    manager.setup(scorer=RewardScorer(RULES, llm), options={"reward": "rule"})

    async def samples():
        convs = [[Message(role="user", content="Q"), Message(role="assistant", content=f"score {v}")] for v in (0.1, 0.5, 0.9)]
        return await asyncio.gather(*(manager.score_conversations([c]) for c in convs))

    out = asyncio.run(samples())
    assert [r[0]["score"] for r in out] == pytest.approx([0.1, 0.5, 0.9])
    completions, chats = checks(server)
    assert len(completions) == 1 and len(completions[0]["prompt"]) == 6 and chats == []  # verl's 3 samples joined: 3 x 2 prompts


def test_openrlhf_server_batches_concurrent_requests_into_batched_checks(served_verifier):
    import uvicorn

    server, llm = served_verifier
    app = create_app(RewardScorer(RULES, llm), max_batch=64, max_wait_ms=50)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    uv = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=uv.run, daemon=True)
    thread.start()
    try:
        for _ in range(200):
            if uv.started:
                break
            time.sleep(0.02)

        def post(i: int) -> tuple[float, httpx.Response]:
            value = (i % 10) / 10 + 0.05
            return value, httpx.post(f"http://127.0.0.1:{port}/", json={"query": [f"PROMPT {i} score {value}"], "prompts": [f"PROMPT {i} "]}, timeout=30)

        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(post, range(32)))
        health = httpx.get(f"http://127.0.0.1:{port}/health").json()
    finally:
        uv.should_exit = True
        thread.join(10)
    assert all(r.status_code == 200 and r.json()["rewards"] == pytest.approx([v]) for v, r in results)
    completions, chats = checks(server)
    # each batch the server formed (at most 64 samples) is one verifier call: one request of its samples x 2 prompts
    assert sum(len(b["prompt"]) for b in completions) == 64 and chats == [] and len(completions) == health["batches"] < 32
    assert health["verifier_mode"]["mode"] == "batched" and health["verifier_mode"]["template"] == "vLLM /tokenize + /detokenize"
