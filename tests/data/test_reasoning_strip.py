"""Reasoning and markup in policy completions (issue 24 §3): the rules judge the answer after a
reasoning block, by default, everywhere (RewardScorer, `score`, `verify`, TRL, verl, `serve`); the
characters cut are counted; an empty answer gets a defined reward and is counted; `serve` reads the
chat templates of the policies people train and no marker of theirs reaches the verifier."""

import json
import logging
import re

import numpy as np
import pytest
from fake_llm import ScriptedLLM, use_in_cli
from fastapi.testclient import TestClient

import autorule
from autorule.cli.app import main
from autorule.integrations import verl
from autorule.integrations.openrlhf import create_app, split_query
from autorule.integrations.templates import TemplateReader
from autorule.integrations.trl import RuleReward
from autorule.data.reasoning import SplitAnswer, split_answer
from autorule.reward import RewardScorer
from autorule.rules import Rule, RuleSet, rule_id

RULE = "The assistant's response should be a short answer."
RULES = RuleSet(rules=[Rule(id=rule_id(RULE), text=RULE)])
THOUGHT = "Let me think about rain."  # 24 characters


def final_response(prefix: str) -> str:
    """The text the verifier judged: what sits between the final-response markers."""
    return re.search(r'-final-response id="[0-9a-f]+">\n(.*)\n</\w+-final-response id=', prefix, re.DOTALL).group(1)


def judged_reasoning(prefix: str, question: str) -> float:
    """P(Yes) 0.3 when the judged response holds the reasoning's words, else 0.8: the assertion can fail."""
    return 0.3 if "Let me think" in final_response(prefix) else 0.8


# ------------------------------------------------------------------ splitting


@pytest.mark.parametrize("text, answer, chars, unclosed", [
    ("<think>abc</think>Answer.", "Answer.", 7 + 3 + 8, False),
    ("abc</think>Answer.", "Answer.", 3 + 8, False),  # the chat template opened the block
    ("<think>abc", "", 7 + 3, True),  # cut off while thinking: no answer
    ("<think>\n\n</think>\n\nHi", "Hi", 7 + 2 + 8, False),  # Qwen3's empty block
    ("<thinking>ab</thinking> Yes", "Yes", 10 + 2 + 11, False),
    ("<reasoning>x</reasoning>\nNo", "No", 11 + 1 + 12, False),
    ("<seed:think>ab</seed:think>Done", "Done", 12 + 2 + 13, False),
    ("[THINK]ab[/THINK]OK", "OK", 7 + 2 + 8, False),
    ("<THINK>ab</THINK>Case", "Case", 7 + 2 + 8, False),
    ("<|begin_of_thought|>ab<|end_of_thought|>\n\n<|begin_of_solution|>\n42\n<|end_of_solution|>", "42", 20 + 2 + 18 + 21 + 19, False),
    ("<think>a</think>B<think>c</think>D", "BD", 16 + 16, False),
    ("Sure. <think>ab</think> Here.", "Sure.  Here.", 17, False),
    ("<think>ab</think>", "", 17, False),
    ("  plain text  ", "  plain text  ", 0, False),  # nothing cut: the completion as it was
])
def test_split_answer(text, answer, chars, unclosed):
    assert split_answer(text) == SplitAnswer(answer, chars, unclosed)


@pytest.mark.parametrize("text, reasoning, answer", [
    # the judge's reply parser keeps its behaviour on <think> ...
    ("<think>A is longer.</think>A wins", "A is longer.", "A wins"),
    ("<think>cut off mid-thought", "cut off mid-thought", ""),
    ("plan</think>answer", "plan", "answer"),
    ("<think></think>  Yes ", None, "Yes"),
    ("<think>one</think>B<think>two</think>D", "one\ntwo", "BD"),
    ("plain", None, "plain"),
    # ... and reads every other marker the policies' reader does
    ("<thinking>It says please.</thinking> Yes", "It says please.", "Yes"),
    ("<reasoning>Is it rude? no.</reasoning>\nYes", "Is it rude? no.", "Yes"),
    ("<seed:think>ab</seed:think>Done", "ab", "Done"),
    ("[THINK]Short wins.[/THINK]Assistant B is better.", "Short wins.", "Assistant B is better."),
    ("<|begin_of_thought|>x<|end_of_thought|><|begin_of_solution|>No<|end_of_solution|>", "x", "No"),
])
def test_the_judges_reply_parser_is_the_same_reader(text, reasoning, answer):
    from autorule.llm.base import parse_yes_no, split_reasoning

    assert split_reasoning(text) == (reasoning, answer)
    if answer in ("Yes", "No"):  # a "no" inside the reasoning is never read as the verdict
        assert parse_yes_no(text) == (1.0 if answer == "Yes" else 0.0)


def test_a_judge_reply_with_another_marker_is_split_over_http():
    from autorule.testing.mock_server import ScriptedServer
    from autorule.llm import ChatRequest
    from autorule.llm.openai_compat import OpenAICompatLLM

    reply = {"content": "[THINK]B cites a source; A does not.[/THINK]Assistant B is better."}
    with ScriptedServer(lambda messages, body: dict(reply)) as server:
        llm = OpenAICompatLLM("scripted", server.base_url, api_key="sk-test", timeout=5.0)
        (c,) = llm.generate([ChatRequest([{"role": "user", "content": "Which is better?"}])])
    assert (c.reasoning, c.text) == ("B cites a source; A does not.", "Assistant B is better.")


# ------------------------------------------------------------------ the scorer: one depth for every entry point

COMPLETIONS = [
    f"<think>{THOUGHT}</think>Take an umbrella.",  # 7 + 24 + 8 = 39 cut
    f"{THOUGHT}</think>Take an umbrella.",  # 24 + 8 = 32 cut
    "Take an umbrella.",
    "<think>Let me think",  # 7 + 12 = 19 cut, nothing left
]


def test_scorer_judges_the_answer_after_the_reasoning_by_default():
    llm = ScriptedLLM(judged_reasoning)
    scores = RewardScorer(RULES, llm).score(COMPLETIONS)
    assert scores.total.tolist() == [0.8, 0.8, 0.8, 0.0]
    assert scores.reasoning_chars.tolist() == [39, 32, 0, 19] and scores.reasoning_chars_stripped == 90
    assert scores.empty.tolist() == [False, False, False, True] and scores.empty_responses == 1
    assert [final_response(p) for p, _ in llm.calls] == ["Take an umbrella."] * 3  # the cut-off one is not sent


def test_scorer_judges_the_whole_text_with_judge_reasoning():
    llm = ScriptedLLM(judged_reasoning)
    scores = RewardScorer(RULES, llm, judge_reasoning=True).score(COMPLETIONS)
    assert scores.total.tolist() == [0.3, 0.3, 0.8, 0.3]
    assert scores.reasoning_chars.tolist() == [0, 0, 0, 0] and scores.empty_responses == 0
    assert len(llm.calls) == 4


def test_only_the_final_assistant_turn_is_cut():
    llm = ScriptedLLM(judged_reasoning)
    conv = [{"role": "user", "content": "Rain?"}, {"role": "assistant", "content": "<think>Let me think</think>Maybe."},
            {"role": "user", "content": "Sure?"}, {"role": "assistant", "content": "<think>x</think>Yes."}]
    scores = RewardScorer(RULES, llm).score([conv])
    assert scores.reasoning_chars.tolist() == [16]
    assert "<assistant>\n<think>Let me think</think>Maybe.\n</assistant>" in llm.calls[0][0]  # context stays as it was
    assert final_response(llm.calls[0][0]) == "Yes."


def test_verify_api_cuts_reasoning_unless_asked(caplog):
    llm = ScriptedLLM(judged_reasoning)
    with caplog.at_level(logging.INFO, logger="autorule"):
        cut = autorule.verify(RULES, COMPLETIONS[:3], llm, cache=False)
    whole = autorule.verify(RULES, COMPLETIONS[:3], llm, cache=False, judge_reasoning=True)
    assert cut.p_satisfied[:, 0].tolist() == [0.8, 0.8, 0.8] and whole.p_satisfied[:, 0].tolist() == [0.3, 0.3, 0.8]
    assert "71 characters of reasoning cut from 2 replies" in caplog.text


# ------------------------------------------------------------------ empty answers


class RefusingLLM(ScriptedLLM):
    """Refuses any response holding REFUSE, as a server does one too long for it."""

    def _score_yes_no_batch(self, items, on_item=None, errors=None, keys=None):
        rows = super()._score_yes_no_batch(items, on_item, errors)
        for i, (prefix, questions) in enumerate(items):
            if "REFUSE" in prefix:
                errors[i] = "too long"
                rows[i] = [float("nan")] * len(questions)
        return rows


@pytest.mark.parametrize("preset, empty_rule_reward, expected", [
    ("default", 0.0, 0.0),
    ("ternary", 0.0, 0.0),
    ("paper", 0.0, 10 * (0.0 - 0.75)),  # the lowest rule reward the preset composes
    ("default", 0.25, 0.25),
    ("paper", 0.25, 10 * (0.25 - 0.75)),
])
def test_empty_answers_get_the_defined_reward_without_a_verifier_call(preset, empty_rule_reward, expected):
    llm = RefusingLLM(lambda prefix, q: 0.9)
    texts = ["", "  \n\t", "<think>x</think>   ", "REFUSE this", "Fine answer."]
    scores = RewardScorer(RULES, llm, preset, empty_rule_reward=empty_rule_reward).score(texts)
    answered = {"default": 0.9, "ternary": 0.9, "paper": 10 * (1.0 - 0.75)}[preset]
    assert scores.total[:3].tolist() == pytest.approx([expected] * 3)
    assert np.isnan(scores.total[3]) and scores.errors == {3: "too long"}  # the refusal keeps its own index
    assert scores.total[4] == pytest.approx(answered)
    assert scores.empty.tolist() == [True, True, True, False, False]
    assert scores.verdicts.unparsed == 0 and scores.verdicts.p_satisfied[:3, 0].tolist() == [0.0, 0.0, 0.0]
    assert len({p for p, _ in llm.calls}) == 2  # only the two answers were sent


def test_empty_rule_reward_must_be_a_fraction():
    with pytest.raises(ValueError, match=r"empty_rule_reward=1.5: a rule reward is a fraction in \[0, 1\]"):
        RewardScorer(RULES, ScriptedLLM(judged_reasoning), empty_rule_reward=1.5)


# ------------------------------------------------------------------ adapters log what was cut


def test_trl_logs_reasoning_cut_and_empty_completions():
    metrics = {}
    reward = RuleReward(RULES, ScriptedLLM(judged_reasoning))
    got = reward(prompts=["Rain?"] * 4, completions=[[{"role": "assistant", "content": c}] for c in COMPLETIONS], log_metric=metrics.__setitem__)
    assert got == [0.8, 0.8, 0.8, 0.0]
    assert (metrics["rule_reward/reasoning_chars_stripped"], metrics["rule_reward/empty_response"], metrics["rule_reward/malformed"]) == (90.0, 1.0, 0.0)
    whole = RuleReward(RULES, ScriptedLLM(judged_reasoning), judge_reasoning=True)(prompts=["Rain?"] * 4, completions=COMPLETIONS)
    assert whole == [0.3, 0.3, 0.8, 0.3]


def test_verl_reports_reasoning_cut_per_sample(tmp_path, monkeypatch):
    out = verl.compute_score(solution_strs=COMPLETIONS, extra_infos=[{"prompt": "Rain?"}] * 4, scorer=RewardScorer(RULES, ScriptedLLM(judged_reasoning)))
    assert [(o["score"], o["reasoning_chars_stripped"], o["empty_response"]) for o in out] == [(0.8, 39.0, 0.0), (0.8, 32.0, 0.0), (0.8, 0.0, 0.0), (0.0, 19.0, 1.0)]
    # judge_reasoning from verl's reward_kwargs
    rules = tmp_path / "rules.yaml"
    RULES.save(rules)
    monkeypatch.setattr("autorule.llm.load_llm", lambda spec, **kwargs: ScriptedLLM(judged_reasoning))
    one = verl.compute_score("d", COMPLETIONS[0], None, None, rules=str(rules), verifier="scripted", judge_reasoning=True, empty_rule_reward=0.5)
    assert (one["score"], one["reasoning_chars_stripped"]) == (0.3, 0.0)
    empty = verl.compute_score("d", "", None, None, rules=str(rules), verifier="scripted", judge_reasoning=True, empty_rule_reward=0.5)
    assert (empty["score"], empty["empty_response"]) == (0.5, 1.0)


def test_score_cli_counts_what_it_cut_and_takes_the_flags(tmp_path, capsys, monkeypatch):
    use_in_cli(monkeypatch, ScriptedLLM(judged_reasoning))
    rules, data = tmp_path / "rules.yaml", tmp_path / "responses.jsonl"
    RULES.save(rules)
    data.write_text("".join(json.dumps({"id": str(i), "prompt": "Rain?", "response": c}) + "\n" for i, c in enumerate(COMPLETIONS)))
    base = ["score", "--rules", str(rules), "--data", str(data), "--no-cache", "--json", "--out", str(tmp_path / "rows.jsonl")]
    assert main(base) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["reasoning_chars_stripped"], summary["responses_with_reasoning_cut"], summary["empty_responses"]) == (90, 3, 1)
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert [(r["reward"], r.get("reasoning_chars_stripped"), r.get("empty")) for r in rows] == [
        (0.8, 39, None), (0.8, 32, None), (0.8, None, None), (0.0, 19, True)]
    assert main([*base, "--judge-reasoning"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["judge_reasoning"], summary["reasoning_chars_stripped"], summary["empty_responses"]) == (True, 0, 0)
    assert summary["mean_reward"] == pytest.approx((0.3 + 0.3 + 0.8 + 0.3) / 4)
    assert main([*base, "--empty-rule-reward", "0.5"]) == 0
    assert [json.loads(line)["reward"] for line in (tmp_path / "rows.jsonl").read_text().splitlines()] == [0.8, 0.8, 0.8, 0.5]
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:  # out of range: refused before any work
        main([*base[:-3], "--empty-rule-reward", "2"])
    assert e.value.code == 2 and "--empty-rule-reward: 2.0 is out of range: must be from 0 to 1" in capsys.readouterr().err


# ------------------------------------------------------------------ serve: chat templates read back

SYSTEM, Q1, A1, Q2 = "You are a helpful assistant.", "What is 2+2?", "4.", "And 3+3?"
LLAMA_SYSTEM = f"Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n{SYSTEM}"
TURNS = [("system", SYSTEM), ("user", Q1), ("assistant", A1), ("user", Q2)]
NO_SYSTEM = TURNS[1:]
# name: (prompt as the policy's chat template renders it, response as the policy writes it, expected turns, expected response text)
TEMPLATES = {
    "qwen2.5 (chatml)": (
        f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{Q1}<|im_end|>\n<|im_start|>assistant\n{A1}<|im_end|>\n"
        f"<|im_start|>user\n{Q2}<|im_end|>\n<|im_start|>assistant\n", "6.<|im_end|>", TURNS, "6."),
    "qwen3 thinking off": (
        f"<|im_start|>user\n{Q1}<|im_end|>\n<|im_start|>assistant\n{A1}<|im_end|>\n<|im_start|>user\n{Q2}<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n\n</think>\n\n", "6.<|im_end|>", NO_SYSTEM, "6."),
    "qwen3 thinking": (
        f"<|im_start|>user\n{Q1}<|im_end|>\n<|im_start|>assistant\n{A1}<|im_end|>\n<|im_start|>user\n{Q2}<|im_end|>\n"
        "<|im_start|>assistant\n", "<think>\nAdd them.\n</think>\n\n6.<|im_end|>", NO_SYSTEM, "<think>\nAdd them.\n</think>\n\n6."),
    "qwen3 thinking-2507 (template opens the block)": (
        f"<|im_start|>user\n{Q1}<|im_end|>\n<|im_start|>assistant\n{A1}<|im_end|>\n<|im_start|>user\n{Q2}<|im_end|>\n"
        "<|im_start|>assistant\n<think>\n", "Add them.\n</think>\n\n6.<|im_end|>", NO_SYSTEM, "Add them.\n</think>\n\n6."),
    "phi-4 (chatml, im_sep)": (
        f"<|im_start|>system<|im_sep|>{SYSTEM}<|im_end|><|im_start|>user<|im_sep|>{Q1}<|im_end|><|im_start|>assistant<|im_sep|>{A1}<|im_end|>"
        f"<|im_start|>user<|im_sep|>{Q2}<|im_end|><|im_start|>assistant<|im_sep|>", "6.<|im_end|>", TURNS, "6."),
    "llama 3.1": (
        f"<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\n{LLAMA_SYSTEM}<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
        f"{Q1}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n{A1}<|eot_id|><|start_header_id|>user<|end_header_id|>\n\n"
        f"{Q2}<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", "6.<|eot_id|>", [("system", LLAMA_SYSTEM), *NO_SYSTEM], "6."),
    "gemma": (
        f"<bos><start_of_turn>user\n{SYSTEM}\n\n{Q1}<end_of_turn>\n<start_of_turn>model\n{A1}<end_of_turn>\n"
        f"<start_of_turn>user\n{Q2}<end_of_turn>\n<start_of_turn>model\n", "6.<end_of_turn>\n<eos>",
        [("user", f"{SYSTEM}\n\n{Q1}"), ("assistant", A1), ("user", Q2)], "6."),
    "mistral v0.2": (f"<s>[INST] {Q1} [/INST]{A1}</s>[INST] {Q2} [/INST]", "6.</s>", NO_SYSTEM, "6."),
    "mistral v7 (system prompt)": (
        f"<s>[SYSTEM_PROMPT]{SYSTEM}[/SYSTEM_PROMPT][INST]{Q1}[/INST]{A1}</s>[INST]{Q2}[/INST]", "6.</s>", TURNS, "6."),
    "llama 2": (f"<s>[INST] <<SYS>>\n{SYSTEM}\n<</SYS>>\n\n{Q1} [/INST] {A1} </s><s>[INST] {Q2} [/INST]", " 6. </s>", TURNS, "6."),
    "phi-3": (
        f"<s><|system|>\n{SYSTEM}<|end|>\n<|user|>\n{Q1}<|end|>\n<|assistant|>\n{A1}<|end|>\n<|user|>\n{Q2}<|end|>\n<|assistant|>\n",
        "6.<|end|><|endoftext|>", TURNS, "6."),
    "deepseek-r1": (
        f"<｜begin▁of▁sentence｜>{SYSTEM}<｜User｜>{Q1}<｜Assistant｜>{A1}<｜end▁of▁sentence｜><｜User｜>{Q2}<｜Assistant｜><think>\n",
        "Add them.\n</think>\n\n6.<｜end▁of▁sentence｜>", TURNS, "Add them.\n</think>\n\n6."),
    "deepseek-r1 distill (no system)": (
        f"<｜begin▁of▁sentence｜><｜User｜>{Q1}<｜Assistant｜>{A1}<｜end▁of▁sentence｜><｜User｜>{Q2}<｜Assistant｜>",
        "<think>\nAdd them.\n</think>\n\n6.<｜end▁of▁sentence｜>", NO_SYSTEM, "<think>\nAdd them.\n</think>\n\n6."),
}
MARKERS = ["<|im_start|>", "<|im_end|>", "<|im_sep|>", "<|endoftext|>", "<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
           "<|eot_id|>", "<start_of_turn>", "<end_of_turn>", "<bos>", "<eos>", "[INST]", "[/INST]", "[SYSTEM_PROMPT]", "[/SYSTEM_PROMPT]",
           "<<SYS>>", "<</SYS>>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>", "<|end|>", "<｜begin▁of▁sentence｜>",
           "<｜User｜>", "<｜Assistant｜>", "<｜end▁of▁sentence｜>", "<think>", "</think>"]
REASONING = ("<think>", "</think>")  # cut by the scorer, not by the template reader


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_serve_reads_each_chat_template_back(name):
    prompt, response, turns, answer = TEMPLATES[name]
    expected = [*turns, ("assistant", answer)]
    got = [(m.role, m.content) for m in split_query(prompt + response, prompt)]
    assert got == expected
    # without the prompt, or with padding the prompt lacks, the query's last assistant turn is the response: a
    # reasoning block the template opened is then part of it, and the answer after it the same
    for query, sent in ((prompt + response, None), ("<|endoftext|>" * 2 + prompt + response, prompt)):
        alone = [(m.role, m.content) for m in split_query(query, sent)]
        assert alone[:-1] == expected[:-1] and split_answer(alone[-1][1]).answer == split_answer(answer).answer == "6."
        got += alone
    for _, text in got:
        assert not [m for m in MARKERS if m in text and m not in REASONING]


@pytest.mark.parametrize("name", list(TEMPLATES))
def test_no_template_marker_reaches_the_verifier(name):
    prompt, response, turns, _ = TEMPLATES[name]
    llm = ScriptedLLM(lambda prefix, q: 0.7)
    with TestClient(create_app(RewardScorer(RULES, llm))) as client:
        body = client.post("/get_reward", json={"query": [prompt + response], "prompts": [prompt]}).json()
    assert body["rewards"] == [0.7] and body["extra_logs"]["unknown_template"] == [0.0]
    conversation = llm.calls[0][0].split("<conversation>")[1]
    assert [m for m in MARKERS if m in conversation] == []
    assert final_response(llm.calls[0][0]) == "6."
    thought = "Add them." in response
    assert body["extra_logs"]["reasoning_chars_stripped"] == [float(len("<think>\nAdd them.\n</think>") if response.startswith("<think>")
                                                                     else len("Add them.\n</think>")) if thought else 0.0]


def test_serve_cuts_text_after_the_end_of_turn_and_counts_it():
    prompt = "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"
    got = TemplateReader().read(prompt + "Hello!<|im_end|>\n<|im_start|>user\nMore?<|im_end|>", prompt)
    assert [(m.role, m.content) for m in got.messages] == [("user", "Hi"), ("assistant", "Hello!")]
    assert (got.template, got.chars_after_end) == ("chatml", 5)


def test_serve_empty_response_and_reasoning_counts_in_extra_logs():
    prompt = "<|im_start|>user\nRain?<|im_end|>\n<|im_start|>assistant\n"
    llm = ScriptedLLM(judged_reasoning)
    with TestClient(create_app(RewardScorer(RULES, llm, "paper"))) as client:
        body = client.post("/get_reward", json={"query": [prompt + f"<think>{THOUGHT}</think>Take one.<|im_end|>", prompt + "<think>Let me<|im_end|>",
                                                          prompt + "<|im_end|>"], "prompts": [prompt] * 3}).json()
    assert body["rewards"] == [2.5, -7.5, -7.5]  # paper: 10 x (1 - 0.75); the empty ones the lowest
    assert body["extra_logs"]["reasoning_chars_stripped"] == [39.0, 13.0, 0.0]
    assert body["extra_logs"]["empty_response"] == [0.0, 1.0, 1.0]
    assert len(llm.calls) == 1


def test_unknown_template_is_scored_as_text_warned_once_and_counted(caplog):
    llm = ScriptedLLM(lambda prefix, q: 0.6)
    with caplog.at_level(logging.WARNING), TestClient(create_app(RewardScorer(RULES, llm))) as client:
        for _ in range(2):
            body = client.post("/get_reward", json={"query": ["Question: 2+2?\nAnswer: 4"], "prompts": ["Question: 2+2?\nAnswer:"]}).json()
            assert body["extra_logs"]["unknown_template"] == [1.0] and body["rewards"] == [0.6]
        assert client.get("/health").json()["unknown_template"] == 2
    assert caplog.text.count("in no chat template autorule reads back") == 1
    assert "<user>\nQuestion: 2+2?\nAnswer:\n</user>" in llm.calls[0][0] and final_response(llm.calls[0][0]) == "4"


def _tokenizer(tmp_path, name: str, template: str, specials: list[str], eos: str):
    """A tiny tokenizer built here (no hub), saved where `--policy-tokenizer` can load it."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate([*specials, "[UNK]", "user", "assistant", "Hi", "Hello"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=eos, unk_token="[UNK]", additional_special_tokens=[s for s in specials if s != eos])
    fast.chat_template = template
    fast.save_pretrained(tmp_path / name)
    return tmp_path / name


def test_policy_tokenizer_special_tokens_never_reach_the_verifier(tmp_path, caplog):
    own = _tokenizer(tmp_path, "own", "{% for m in messages %}<|turn|>{{ m['role'] }}: {{ m['content'] }}<|stop|>{% endfor %}"
                                      "{% if add_generation_prompt %}<|turn|>assistant: {% endif %}", ["<|turn|>", "<|stop|>"], "<|stop|>")
    llm = ScriptedLLM(lambda prefix, q: 0.6)
    prompt = "<|turn|>user: Hi<|stop|><|turn|>assistant: "
    with caplog.at_level(logging.WARNING):
        app = create_app(RewardScorer(RULES, llm), policy_tokenizer=str(own))
    assert "the policy's chat template is none autorule reads back" in caplog.text
    with TestClient(app) as client:
        body = client.post("/get_reward", json={"query": [prompt + "Hello<|stop|><|turn|>user: again"], "prompts": [prompt]}).json()
    assert body["extra_logs"]["unknown_template"] == [1.0] and body["extra_logs"]["text_after_end_chars"] == [len("user: again")]
    conversation = llm.calls[0][0].split("<conversation>")[1]
    assert "<|turn|>" not in conversation and "<|stop|>" not in conversation
    assert "<user>\nuser: Hi\n\nassistant:\n</user>" in conversation and final_response(llm.calls[0][0]) == "Hello"


def test_policy_tokenizer_with_a_known_template_is_recognised(tmp_path):
    chatml = _tokenizer(tmp_path, "chatml", "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                                            "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}", ["<|im_start|>", "<|im_end|>"], "<|im_end|>")
    from transformers import AutoTokenizer

    assert TemplateReader(AutoTokenizer.from_pretrained(chatml)).tokenizer_template == "chatml"


def test_serve_cli_refuses_a_missing_policy_tokenizer(tmp_path, capsys):
    rules = tmp_path / "rules.yaml"
    RULES.save(rules)
    code = main(["serve", "--rules", str(rules), "--policy-tokenizer", str(tmp_path / "nope"), "--no-cache"])
    err = " ".join(capsys.readouterr().err.split())
    assert code == 2 and f"cannot load the policy tokenizer '{tmp_path / 'nope'}'" in err and "Traceback" not in err
