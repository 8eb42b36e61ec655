"""The local backend on the real embedded model (SmolLM2-135M-Instruct)."""

import pytest
import torch

from autorule.llm import ChatRequest, load_llm
from autorule.llm.base import parse_yes_no, split_reasoning, yes_probability
from autorule.llm.cached import CachedLLM

pytestmark = pytest.mark.slow

PREFIX = (
    "You judge whether a response follows a rule.\n\n<conversation>\nUser: How do I bake bread?\n"
    "Assistant: Mix flour, water, yeast and salt; knead for ten minutes; let it rise for an hour; bake at 230 C for 30 minutes.\n"
    "</conversation>\n\nRule: "
)
QUESTIONS = [
    "The response gives the steps in order.\nDoes the response follow the rule? Answer Yes or No.",
    "The response is written in French.\nDoes the response follow the rule? Answer Yes or No.",
    "The response states an oven temperature.\nDoes the response follow the rule? Answer Yes or No.",
    "The response refuses.\nAnswer Yes or No.",
    "The response is under 100 words.\nDoes the response follow the rule? Answer Yes or No.",
]


def answer_ids(tokenizer, word: str) -> list[int]:
    """Every vocabulary entry that reads as `word` ("Yes", " yes", ...), found by decoding the whole vocabulary."""
    return [i for i in range(len(tokenizer)) if tokenizer.decode([i]).strip().lower() == word]


def separate_p_yes(llm, text: str) -> float:
    """P(Yes) from one plain forward pass over the whole prompt: no cache, no batching, its own Yes/No tokens."""
    ids = llm.tokenizer(llm.render([{"role": "user", "content": text}]), return_tensors="pt", add_special_tokens=False).input_ids
    with torch.inference_mode():
        logits = llm.model(ids).logits[0, -1].double().log_softmax(-1)
    yes = torch.logsumexp(logits[answer_ids(llm.tokenizer, "yes")], -1)
    no = torch.logsumexp(logits[answer_ids(llm.tokenizer, "no")], -1)
    return torch.sigmoid(yes - no).item()


def test_shared_prefix_scoring_equals_separate_scoring(embedded):
    shared = embedded.score_yes_no(PREFIX, QUESTIONS)
    separate = [separate_p_yes(embedded, PREFIX + q) for q in QUESTIONS]
    assert all(0.0 < p < 1.0 for p in shared)
    assert max(abs(a - b) for a, b in zip(shared, separate)) < 1e-4
    # the prefix really was shared: processed once, the suffixes are short
    assert embedded.stats["yes_no_prefix_tokens"] > 3 * max(len(q.split()) for q in QUESTIONS)


def test_shared_prefix_across_chunks(embedded):
    questions = [f"Rule number {i}: the response mentions salt.\nAnswer Yes or No." for i in range(40)]
    shared = embedded.score_yes_no(PREFIX, questions)  # more than one suffix chunk
    for i in (0, 13, 39):
        assert abs(shared[i] - separate_p_yes(embedded, PREFIX + questions[i])) < 1e-4


def test_conversations_packed_together_equal_separate_passes(embedded):
    # 6 conversations of different lengths x 4 rules, scored in one call: the packed passes
    # (several conversations side by side, padding between them) must equal one plain forward
    # pass per check
    replies = ["Bake at 230 C.", "Mix flour and water; knead; rise; bake. " * 6, "Non.", "Step 1: mix. Step 2: bake.", "", "I cannot help with that."]
    prefixes = [PREFIX.replace("Mix flour, water, yeast and salt; knead for ten minutes; let it rise for an hour; bake at 230 C for 30 minutes.", r)
                for r in replies]
    items = [(prefix, QUESTIONS[:4]) for prefix in prefixes]
    wide = type(embedded).__new__(type(embedded))
    wide.__dict__.update(embedded.__dict__, pack_tokens=8192)  # several conversations per pass, as on a GPU
    before = dict(embedded.stats)
    seen = []
    packed = wide.score_yes_no_batch(items, on_item=seen.append)
    assert sorted(seen) == list(range(6))
    assert embedded.stats["yes_no_checks"] - before.get("yes_no_checks", 0) == 24
    worst = max(abs(packed[c][q] - separate_p_yes(embedded, prefixes[c] + QUESTIONS[q])) for c in range(6) for q in range(4))
    assert worst < 1e-4
    # one conversation per pass (the CPU default) gives the same numbers as the packed passes
    assert embedded.pack_tokens == 1
    alone = embedded.score_yes_no_batch(items)
    assert max(abs(a - b) for x, y in zip(packed, alone) for a, b in zip(x, y)) < 1e-4


def test_generate_returns_text_usage_and_finish(embedded):
    requests = [
        ChatRequest([{"role": "user", "content": "What is the capital of France? Answer in one word."}], max_tokens=16),
        ChatRequest([{"role": "user", "content": "Count from one to fifty in words, separated by commas."}], max_tokens=8),
    ]
    seen = []
    first, second = embedded.generate(requests, on_result=lambda i, c: seen.append(i))
    assert sorted(seen) == [0, 1]
    assert "Paris" in first.text and first.finish_reason == "stop"
    assert second.finish_reason == "length" and second.usage.completion_tokens == 8
    assert first.usage.prompt_tokens > 10


def test_greedy_generation_is_deterministic_and_batch_independent(embedded):
    req = ChatRequest([{"role": "user", "content": "Name a colour."}], max_tokens=12)
    alone = embedded.generate([req])[0].text
    other = ChatRequest([{"role": "user", "content": "Write a long sentence about the history of the Roman empire please."}], max_tokens=12)
    batched = embedded.generate([other, req])[1].text
    assert alone == batched


def test_cache_makes_reruns_free(embedded, cache):
    cached = CachedLLM(embedded, cache)
    req = ChatRequest([{"role": "user", "content": "Say hello."}], max_tokens=8)
    before = embedded.stats["requests"]
    a = cached.generate([req])[0]
    b = cached.generate([req])[0]
    assert embedded.stats["requests"] == before + 1
    assert b.cached and not a.cached and a.text == b.text
    p1 = cached.score_yes_no(PREFIX, QUESTIONS[:2])
    checks = embedded.stats["yes_no_checks"]
    assert cached.score_yes_no(PREFIX, QUESTIONS[:2]) == p1
    assert embedded.stats["yes_no_checks"] == checks


def test_load_llm_errors_are_clear():
    from autorule.llm import LLMError

    with pytest.raises(LLMError, match="unknown model spec"):
        load_llm("gpt-4")
    with pytest.raises(LLMError, match="GGUF file not found"):
        load_llm("gguf:/nonexistent/model.gguf")


def test_reasoning_and_answer_parsing():
    assert split_reasoning("<think>A is longer.</think>A wins") == ("A is longer.", "A wins")
    assert split_reasoning("<think>cut off mid-thought") == ("cut off mid-thought", "")
    assert split_reasoning("plan</think>answer") == ("plan", "answer")
    assert split_reasoning("plain") == (None, "plain")
    assert parse_yes_no("[[Yes]]") == 1.0 and parse_yes_no("No.") == 0.0 and parse_yes_no("maybe") is None
    assert abs(yes_probability([("Yes", -0.2231), (" no", -1.6094)]) - 0.8) < 1e-3
    assert yes_probability([("Maybe", -0.1)]) is None
    assert yes_probability([("No", -0.01)]) == 0.0
