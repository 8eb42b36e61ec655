"""Extraction against a model's context (issue 24 §5): prompts fitted, refused pairs recorded.

The field case ../shared/cases/long-code-pairs.jsonl holds two short pairs (rows 1 and 3)
and one with a 34,346-character code answer (row 2).
"""

import io
import json
import re

import pytest
from conftest import SHARED_DATA
from rich.console import Console

from autorule.testing.mock_server import ScriptedServer, mock_judge
from autorule.cli.app import main
from autorule.data import load_pairs
from autorule.extraction.context import Context
from autorule.extraction.merge import MergeLog, candidate_refs, merge_rules, split_to_fit
from autorule.extraction.reason import TEMPLATE, render_conversation
from autorule.extraction.refusals import TooManyRefused
from autorule.extraction.run import ExtractConfig, print_summary, run_extract
from autorule.llm.fitting import context_limit, fit_texts, truncate_middle
from autorule.llm.base import LLM, Completion, RequestRefused

CASE = SHARED_DATA.parent / "cases" / "long-code-pairs.jsonl"
LONG_ID, ESSAY_ID = "76e4e7c113e0eaa8", "5f51eeadb7c5e5e8"  # rows 2 and 3
ESSAY = "Is my essay good?"  # row 3's prompt
# (the label filter off: these tests are about fitting prompts; it has its own tests in test_label_filter.py)
TOKENS = dict(reasoning_tokens=512, rules_tokens=256, merge_tokens=256, target_rules=2, label_filter=False)
VLLM_400 = ("This model's maximum context length is {context} tokens. However, you requested {requested} tokens ({prompt} in the messages, "
            "{completion} in the completion). Please reduce the length of the messages or completion.")
MARKER = re.compile(r"\n\[\.\.\. (\d+) characters omitted \.\.\.\]\n")


@pytest.fixture(scope="module")
def pairs():
    if not CASE.is_file():
        pytest.fail(f"the field case is missing: {CASE} (the project expects ../shared beside the checkout)")
    return load_pairs(CASE)


class ContextLimitedLLM(LLM):
    """A model with a context: a request whose prompt and answer exceed it is refused the way the
    OpenAI client path refuses a vLLM 400 (`RequestRefused`, the server's body in the message).
    Requests of a batch are answered in order; a refusal fails the batch, as a server's does."""

    def __init__(self, context: int, *, reports: bool = True, refuse: str | None = None, reverse: bool = False):
        super().__init__()
        self.spec, self.context, self.reports, self.refuse = "context-limited", context, reports, refuse
        self.reverse = reverse  # answer a batch last request first, as a busy server may
        self.judge = mock_judge()
        self.prompts: list[str] = []  # every prompt sent, answered or not

    @property
    def max_context(self):
        return self.context if self.reports else None

    def count_tokens(self, text: str) -> int:
        return len(text) // 4 + 1

    def _generate(self, requests, desc, on_result):
        out = {}
        for i in reversed(range(len(requests))) if self.reverse else range(len(requests)):
            r = requests[i]
            text = r.messages[-1]["content"]
            self.prompts.append(text)
            prompt = self.count_tokens(text)
            if prompt + r.max_tokens > self.context:
                body = {"object": "error", "type": "BadRequestError", "code": 400,
                        "message": VLLM_400.format(context=self.context, requested=prompt + r.max_tokens, prompt=prompt, completion=r.max_tokens)}
                raise RequestRefused(f"http://fake/v1 refused the request (400): {body}")
            if self.refuse and self.refuse in text:
                raise RequestRefused("http://fake/v1 refused the request (400): The prompt was rejected by the content filter.")
            reply = self.judge([{"role": "user", "content": text}], {})
            out[i] = Completion(text=reply["content"], reasoning=reply.get("reasoning_content"))
            on_result and on_result(i, out[i])
        return [out[i] for i in range(len(requests))]

    def _score_yes_no_batch(self, items, on_item, errors, keys=None):
        raise NotImplementedError


def sent_with(llm: ContextLimitedLLM, text: str) -> list[str]:
    return [p for p in llm.prompts if text in p]


def run(pairs, llm, out, **config):
    return run_extract(pairs, llm, llm, out, ExtractConfig(**{**TOKENS, **config}))


def reply_in(prompt: str, side: str) -> str:
    """The last assistant turn of conversation A or B in a reasoning prompt."""
    conv = prompt.split(f"<conversation_{side}>\n")[1].split(f"\n</conversation_{side}>")[0]
    return conv.rsplit("[Assistant]\n", 1)[1]


# ----------------------------------------------------------------------------- fitting


def test_the_long_pair_is_cut_in_its_middle_and_the_instructions_stay_whole(tmp_path, pairs):
    llm = ContextLimitedLLM(2000)
    result = run(pairs, llm, tmp_path / "run")
    long_pair = pairs.pairs[1]
    original = long_pair.chosen
    assert len(original) == 34346
    (prompt,) = [p for p in sent_with(llm, "Write helper functions") if "impartial judge" in p]  # sent once: it fits
    # the prompt and its answer fit the context: 2000 - 512 answer - 64 chat-template reserve
    assert llm.count_tokens(prompt) <= 2000 - 512 - 64
    record = next(json.loads(line) for line in (tmp_path / "run" / "010_reasoning.jsonl").read_text().splitlines() if json.loads(line)["pair_id"] == LONG_ID)
    side = record["chosen_label"].lower()
    cut = reply_in(prompt, side)
    (n,) = [int(x) for x in MARKER.findall(cut)]
    head, tail = MARKER.split(cut)[0], MARKER.split(cut)[2]
    # exactly the middle went: the head and tail are the reply's own, and the count is what is missing
    assert original.startswith(head) and original.endswith(tail) and len(head) + n + len(tail) == len(original)
    assert head.startswith("Here you go:\n```python\ndef helper_0(x):\n    # step 0: normalise the value and return it")
    assert tail.endswith("    # step 329: normalise the value and return it\n    return (x * 329 + 7) % 1000003\n\n```")
    assert abs(len(head) - len(tail)) <= 1
    # everything else is the template, untouched: instructions, the user's turn, the short rejected reply
    conv = long_pair.conversation("chosen")
    chosen_text = render_conversation([*conv[:-1], conv[-1].model_copy(update={"content": cut})])
    rejected_text = render_conversation(long_pair.conversation("rejected"))
    a, b = (chosen_text, rejected_text) if side == "a" else (rejected_text, chosen_text)
    winner = record["chosen_label"]
    assert prompt == TEMPLATE.substitute(winner=winner, loser="B" if winner == "A" else "A", conversation_a=a, conversation_b=b)
    # counted: in the stage record, run.json and the summary
    assert record["omitted_chars"] == n
    counts = json.loads((tmp_path / "run" / "run.json").read_text())["counts"]
    assert counts["truncated"] == {"010_reasoning": {"pairs": 1, "characters_omitted": n}, "020_candidates": {"pairs": 0, "characters_omitted": 0}}
    assert counts["context"] == {"tokens": 2000, "source": "model"}
    assert counts["refused"]["pairs"] == 0
    assert result.summary["truncated"]["010_reasoning"]["characters_omitted"] == n
    table = io.StringIO()
    print_summary(result.run_dir, result.summary, Console(file=table, width=400))
    assert f"010_reasoning: 1 pairs, {n:,} characters omitted; 020_candidates: 0 pairs, 0 characters omitted; merge clusters split: 0" in table.getvalue()
    assert "2000 tokens (model)" in table.getvalue()


def test_a_long_justification_is_cut_for_the_rule_prompt_and_counted(tmp_path, pairs):
    """Stage 020's prompt holds the reasoning: a reasoning model's long trace is cut in its middle too."""
    llm = ContextLimitedLLM(2000)
    trace = "STEP one: the reply cites safety. " + "It weighs each point again. " * 400 + "FINAL: B wins."
    llm.judge = mock_judge(reasoning_reply=lambda text, _: {"content": "B is better.", "reasoning_content": trace})
    run(pairs, llm, tmp_path / "run")
    rule_prompts = [p for p in llm.prompts if "extract rules" in p]
    assert len(rule_prompts) == 3
    for p in rule_prompts:
        justification = p.split("<justification>\n")[1].split("\n</justification>")[0]
        (n,) = [int(x) for x in MARKER.findall(justification)]
        head, _, tail = MARKER.split(justification)
        assert head.startswith("STEP one: the reply cites safety.") and tail.endswith("FINAL: B wins.")
        assert len(head) + n + len(tail) == len(trace)
        assert llm.count_tokens(p) <= 2000 - 256 - 64
    counts = json.loads((tmp_path / "run" / "run.json").read_text())["counts"]
    assert counts["truncated"]["020_candidates"]["pairs"] == 3
    assert counts["truncated"]["020_candidates"]["characters_omitted"] == 3 * int(MARKER.findall(rule_prompts[0])[0])


def test_nothing_is_cut_when_the_context_is_large_enough(tmp_path, pairs):
    llm = ContextLimitedLLM(20_000)
    run(pairs, llm, tmp_path / "run")
    assert not any("characters omitted" in p for p in llm.prompts)
    assert any(pairs.pairs[1].chosen in p for p in llm.prompts)  # the whole 34k reply went out
    counts = json.loads((tmp_path / "run" / "run.json").read_text())["counts"]
    assert counts["truncated"]["010_reasoning"] == {"pairs": 0, "characters_omitted": 0}


def test_the_flag_sets_the_context_when_the_model_reports_none(tmp_path, pairs):
    llm = ContextLimitedLLM(3000, reports=False)
    run(pairs, llm, tmp_path / "run", max_input_tokens=3000)
    (prompt,) = [p for p in sent_with(llm, "Write helper functions") if "impartial judge" in p]
    assert llm.count_tokens(prompt) <= 3000 - 512 - 64
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["context"] == {"tokens": 3000, "source": "--max-input-tokens"}
    assert meta["status"] == "complete" and meta["counts"]["refused"]["pairs"] == 0


def test_a_context_learned_from_the_refusal_refits_the_pair(tmp_path, pairs):
    """No context reported: 8192 is assumed, the server refuses with vLLM's 400, the run learns 2000 and refits."""
    llm = ContextLimitedLLM(2000, reports=False)
    run(pairs, llm, tmp_path / "run")
    long_prompts = [p for p in sent_with(llm, "Write helper functions") if "impartial judge" in p]
    assert len(long_prompts) == 2  # the first, fitted to 8192, refused; the second fitted to 2000
    assert llm.count_tokens(long_prompts[0]) > 2000 - 512 and llm.count_tokens(long_prompts[1]) <= 2000 - 512 - 64
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["status"] == "complete"
    assert meta["context"] == {"tokens": 2000, "source": "server error", "learned": [2000]}
    assert meta["counts"]["refused"]["pairs"] == 0 and meta["counts"]["truncated"]["010_reasoning"]["pairs"] == 1


# ----------------------------------------------------------------------------- refusals


def test_a_refused_pair_is_recorded_and_the_run_goes_on(tmp_path, pairs):
    llm = ContextLimitedLLM(2000, refuse=ESSAY)
    result = run(pairs, llm, tmp_path / "run", max_refused_share=0.5)
    refusal = {"pair_id": ESSAY_ID, "row": 3, "source": str(CASE), "stage": "010 reasoning",
               "reason": "http://fake/v1 refused the request (400): The prompt was rejected by the content filter."}
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["status"] == "complete"
    assert meta["refused"] == meta["counts"]["refused"] == {"pairs": 1, "share": 0.5, "by_stage": {"010 reasoning": 1}, "list": [refusal]}
    assert [json.loads(line) for line in (tmp_path / "run" / "020_refused.jsonl").read_text().splitlines()] == [refusal]
    # the other two pairs gave rules; the refused one is in no stage file and behind no rule
    reasoned = [json.loads(line)["pair_id"] for line in (tmp_path / "run" / "010_reasoning.jsonl").read_text().splitlines()]
    candidates = [json.loads(line)["pair_id"] for line in (tmp_path / "run" / "020_candidates.jsonl").read_text().splitlines()]
    assert reasoned == candidates == ["7364e2000f474f2c", LONG_ID]
    assert len(result.rules) >= 1 and {pid for r in result.rules.rules for pid in r.pairs} <= {"7364e2000f474f2c", LONG_ID}
    assert meta["counts"]["candidates"] == 4
    table = io.StringIO()
    print_summary(result.run_dir, result.summary, Console(file=table, width=400))
    assert f"pair {ESSAY_ID} (row 3, 010 reasoning): http://fake/v1 refused the request (400): The prompt was rejected by the content filter." in table.getvalue()


def test_a_refusal_at_rule_extraction_is_recorded_with_its_stage(tmp_path, pairs):
    llm = ContextLimitedLLM(2000)
    essay_trace = "TRACE-ESSAY: the chosen reply names the missing evidence."
    base = mock_judge()

    def reasoning(text, trace):
        return {"content": "A is better.", "reasoning_content": essay_trace if ESSAY in text else trace}

    llm.judge = mock_judge(reasoning_reply=reasoning, rules_reply=lambda j: base([{"content": f"extract rules <justification>{j} safety</justification>"}], {}))
    llm.refuse = "TRACE-ESSAY"  # only the rule prompt holds it
    run(pairs, llm, tmp_path / "run", max_refused_share=0.5)
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert [(r["pair_id"], r["row"], r["stage"]) for r in meta["refused"]["list"]] == [(ESSAY_ID, 3, "020 rule extraction")]
    reasoned = [json.loads(line)["pair_id"] for line in (tmp_path / "run" / "010_reasoning.jsonl").read_text().splitlines()]
    assert reasoned == ["7364e2000f474f2c", LONG_ID, ESSAY_ID]  # its reasoning is kept


def test_past_the_share_the_run_stops_and_names_the_pairs(tmp_path, pairs):
    llm = ContextLimitedLLM(2000, refuse=ESSAY)
    with pytest.raises(TooManyRefused) as e:
        run(pairs, llm, tmp_path / "run")  # default share 0.05: one of three is past it
    assert str(e.value).startswith(f"the server refused 1 of 3 pairs (33.3%), more than --max-refused-share 0.05 allows: pair {ESSAY_ID} (row 3, 010 reasoning): ")
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["status"] == "failed" and meta["refused"]["list"][0]["pair_id"] == ESSAY_ID and "--retry-refused" in meta["error"]


def test_resume_does_not_send_a_recorded_refusal_again_unless_asked(tmp_path, pairs):
    out = tmp_path / "run"
    with pytest.raises(TooManyRefused):
        run(pairs, ContextLimitedLLM(2000, refuse=ESSAY), out)
    # resumed, same share: stops at once, before any request, naming the pair again
    again = ContextLimitedLLM(2000)
    with pytest.raises(TooManyRefused, match=f"pair {ESSAY_ID} \\(row 3, 010 reasoning\\)"):
        run(pairs, again, out)
    assert again.prompts == []
    # resumed with room for it: completes without the refused pair, which is never sent
    lenient = ContextLimitedLLM(2000)
    run(pairs, lenient, out, max_refused_share=0.5)
    assert sent_with(lenient, ESSAY) == [] and len(sent_with(lenient, "impartial judge")) == 0  # the other two were reasoned about before
    meta = json.loads((out / "run.json").read_text())
    assert meta["status"] == "complete" and meta["counts"]["refused"]["pairs"] == 1
    # asked: the pair is sent again, and with a server that takes it now, nothing stays refused
    fixed = ContextLimitedLLM(2000)
    result = run_extract(pairs, fixed, fixed, out, ExtractConfig(**TOKENS), retry_refused=True)
    assert [p for p in fixed.prompts if "impartial judge" in p and ESSAY in p] != []
    assert len([p for p in fixed.prompts if "impartial judge" in p]) == 1  # only the refused pair: the rest is kept
    meta = json.loads((out / "run.json").read_text())
    assert meta["retried_refused"] == 1 and meta["counts"]["refused"]["pairs"] == 0 and not (out / "020_refused.jsonl").exists()
    candidates = [json.loads(line)["pair_id"] for line in (out / "020_candidates.jsonl").read_text().splitlines()]
    assert candidates == ["7364e2000f474f2c", LONG_ID, ESSAY_ID] and result.summary["pairs"] == 3


def test_resume_after_a_stop_reads_back_each_pairs_own_reasoning(tmp_path, pairs):
    """The stop leaves 010's records in answer order (rows 3, 2); finished on resume in data order,
    each pair's rules still come from its own reasoning."""
    out = tmp_path / "run"
    with pytest.raises(TooManyRefused, match="row 1, 010 reasoning"):
        run(pairs, ContextLimitedLLM(2000, refuse="pick a lock", reverse=True), out)
    partial = [json.loads(line)["pair_id"] for line in (out / "010_reasoning.jsonl.partial").read_text().splitlines()]
    assert partial == [ESSAY_ID, LONG_ID]
    run(pairs, ContextLimitedLLM(2000, reverse=True), out, max_refused_share=0.5)
    traces = {json.loads(line)["pair_id"]: json.loads(line)["reasoning"] for line in (out / "010_reasoning.jsonl").read_text().splitlines()}
    candidates = [json.loads(line) for line in (out / "020_candidates.jsonl").read_text().splitlines()]
    assert [c["pair_id"] for c in candidates] == list(traces) == [LONG_ID, ESSAY_ID]
    assert all(c["excerpt"] == traces[c["pair_id"]][:300] for c in candidates) and traces[LONG_ID] != traces[ESSAY_ID]


def test_a_context_too_small_for_the_instructions_names_the_fix(tmp_path, pairs):
    llm = ContextLimitedLLM(700)
    with pytest.raises(TooManyRefused) as e:
        run(pairs, llm, tmp_path / "run")  # 700 - 512 - 64 = 124 tokens: not even the instructions fit
    assert "the prompt needs" in str(e.value) and "a context of 700 tokens leaves it 124 (512 for the answer): raise --max-input-tokens" in str(e.value)
    assert llm.prompts == []  # nothing that cannot fit is sent


# ----------------------------------------------------------------------------- merge


def fake_embed(texts):
    import numpy as np

    return np.array([[1.0, 0.0] if "short" in t else [0.0, 1.0] for t in texts])


def test_merge_clusters_too_long_for_the_context_are_merged_in_parts():
    texts = [f"The assistant's response should be short and clear, point {i}." for i in range(6)]
    counter = lambda s: len(s) // 4  # noqa: E731
    # a cluster of six is over 200 tokens; three are under
    ctx = Context(256 + 64 + 200, "server", counter)
    assert split_to_fit(list(range(6)), texts, 256, 0, ctx) == [[0, 1, 2], [3, 4, 5]]
    assert split_to_fit(list(range(6)), texts, 256, 0, Context(256 + 64 + 1000, "server", counter)) == [list(range(6))]
    assert split_to_fit([4], texts, 256, 0, Context(10, "server", counter)) == [[4]]  # one rule needs no merge prompt


def test_a_refused_merge_keeps_the_medoid_and_is_counted():
    texts = [f"The assistant's response should be short and clear, point {i}." for i in range(4)]
    units = [u for i, t in enumerate(texts) for u in candidate_refs(f"p{i}", [t], "")]
    llm = ContextLimitedLLM(4000, refuse="Merge them")
    rules, log = merge_rules(units, llm, fake_embed, target=1, near_duplicate=1.01, context=Context(4000, "model", llm.count_tokens))
    assert isinstance(log, MergeLog) and len(rules) == 1 and rules[0].text in texts and rules[0].support == 4
    # round 1: clusters of 3 and 1, the 3 refused (medoid kept); round 2: the 2 left, refused again
    assert [(r["rules_in"], r["merged_clusters"], r["failures"], r["rules_out"]) for r in log.rounds] == [(4, 1, 1, 2), (2, 1, 1, 1)]
    assert log.merge_refused == ["http://fake/v1 refused the request (400): The prompt was rejected by the content filter."] * 2
    assert log.merge_failures == 2 and len(llm.prompts) == 2  # each refused prompt sent once


# ----------------------------------------------------------------------------- the shared pieces


@pytest.mark.parametrize("body, expected", [
    ("{'object': 'error', 'message': \"This model's maximum context length is 2000 tokens. However, you requested 12730 tokens\"}", 2000),  # vLLM
    ("This model's maximum context length is 8192 tokens. However, your messages resulted in 9013 tokens.", 8192),  # OpenAI
    ("The input (12730 tokens) is longer than the model's context length (4096 tokens).", 4096),  # SGLang
    ("the request exceeds the available context size (2048 tokens), try increasing it", 2048),  # llama-server
    ("Input validation error: `inputs` tokens + `max_new_tokens` must be <= 1024. Given: 900 `inputs` tokens and 512 `max_new_tokens`", 1024),  # TGI
    ("The prompt was rejected by the content filter.", None),
    ("Logprobs is not enabled for this model", None),
])
def test_context_limit_from_servers_refusals(body, expected):
    assert context_limit(body) == expected


def test_middle_cuts_keep_head_and_tail_with_exact_counts():
    # one text: 210 characters to about 70: head 18, marker, tail 18; 174 omitted
    assert truncate_middle("BEGIN " + "x" * 200 + " END", 70) == "BEGIN " + "x" * 12 + "\n[... 174 characters omitted ...]\n" + "x" * 14 + " END"
    # the longest text goes first; the short one is untouched. 1020 - 300 = 720 over: keep 1000 - 720 - 34 (marker) - 8 = 238,
    # i.e. 102 + marker (34) + 102, and 796 omitted
    cut, omitted = fit_texts(["q" * 20, "A" * 500 + "Z" * 500], 300)
    assert omitted == [0, 796] and cut[0] == "q" * 20 and cut[1] == "A" * 102 + "\n[... 796 characters omitted ...]\n" + "Z" * 102
    # two long texts: cut in turn, each from its original, each with one exact marker
    cut, omitted = fit_texts(["a" * 600, "b" * 500], 400)
    for text, original, n in zip(cut, ["a" * 600, "b" * 500], omitted):
        assert MARKER.findall(text) == [str(n)] and len(text) - len(MARKER.search(text).group(0)) + n == len(original)
    assert sum(len(t) for t in cut) <= 400


# ----------------------------------------------------------------------------- through a real HTTP server


class ContextLimitedServer(ScriptedServer):
    """vLLM as it behaves: reports no context size, and answers a request longer than its
    context with HTTP 400 and its error body; `refuse`: a text it rejects outright."""

    def __init__(self, context: int, refuse: str | None = None, reply=None):
        super().__init__(reply or mock_judge())
        self.context, self.refuse = context, refuse
        self.refused: list[str] = []

    def _answer(self, h, body, fault):
        text = body["messages"][-1]["content"]
        prompt = len(text.encode()) // 2 + 1  # the client's own estimate, for a server that cannot /tokenize
        requested = prompt + body.get("max_tokens", 0)
        if requested > self.context:
            self.refused.append(text)
            return h._send(400, {"object": "error", "type": "BadRequestError", "code": 400,
                                 "message": VLLM_400.format(context=self.context, requested=requested, prompt=prompt, completion=body["max_tokens"])})
        if self.refuse and self.refuse in text:
            self.refused.append(text)
            return h._send(400, {"object": "error", "type": "BadRequestError", "code": 400, "message": "The prompt was rejected by the content filter."})
        return super()._answer(h, body, fault)


def cli(server, out, *extra):
    return main(["extract", "--data", str(CASE), "--model", f"openai:judge@{server.base_url}", "--out", str(out), "--no-cache", "--no-label-filter",
                 "--target-rules", "2", "--reasoning-tokens", "512", "--rules-tokens", "256", "--merge-tokens", "256",
                 "--max-retries", "1", "--timeout", "10", *extra])


def test_over_http_the_vllm_400_teaches_the_context_and_the_run_completes(tmp_path, pairs, capsys):
    with ContextLimitedServer(2000) as server:
        assert cli(server, tmp_path / "run", "--json") == 0
    assert len(server.refused) == 1 and "Write helper functions" in server.refused[0]  # once, then refitted
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["context"] == {"tokens": 2000, "source": "server error", "learned": [2000]}
    assert summary["truncated"]["010_reasoning"]["pairs"] == 1 and summary["refused"]["pairs"] == 0 and summary["pairs"] == 3


def test_over_http_a_refused_pair_stops_the_run_past_the_share_and_resume_skips_it(tmp_path, pairs, capsys):
    out = tmp_path / "run"
    with ContextLimitedServer(20_000, refuse=ESSAY) as server:  # one server: a run directory belongs to one model address
        assert cli(server, out) == 1
        err = " ".join(capsys.readouterr().err.split())
        assert f"the server refused 1 of 3 pairs (33.3%), more than --max-refused-share 0.05 allows: pair {ESSAY_ID} (row 3, 010 reasoning):" in err
        assert "The prompt was rejected by the content filter." in err
        server.refuse = None  # the server would take it now; a resumed run still does not send it
        server.requests.clear()
        assert cli(server, out, "--max-refused-share", "0.5") == 0
        assert server.requests and not any(ESSAY in body["messages"][-1]["content"] for body in server.requests)
        assert json.loads((out / "run.json").read_text())["counts"]["refused"]["list"][0]["row"] == 3
        server.requests.clear()
        assert cli(server, out, "--retry-refused") == 0
        assert any(ESSAY in body["messages"][-1]["content"] for body in server.requests)
    meta = json.loads((out / "run.json").read_text())
    assert meta["counts"]["refused"]["pairs"] == 0 and meta["retried_refused"] == 1


# ----------------------------------------------------------------------------- the verifier learns the context too (score)

POLITE = "The response is polite."


def always_yes(messages, body):
    return {"content": "Yes"}


def score_cli(server, tmp_path, *extra):
    from autorule.rules import RuleSet

    rules = tmp_path / "rules.yaml"
    RuleSet.from_texts([POLITE]).save(rules)
    return main(["score", "--rules", str(rules), "--data", str(CASE), "--verifier", f"openai:judge@{server.base_url}", "--no-cache",
                 "--max-retries", "1", "--timeout", "10", "--json", "--out", str(tmp_path / "rows.jsonl"), *extra])


def test_over_http_score_learns_the_context_from_the_vllm_400_refits_and_retries_once(tmp_path, capsys):
    with ContextLimitedServer(2000, reply=always_yes) as server:
        assert score_cli(server, tmp_path) == 0
    # the 34,346-character answer (row 2's chosen) was cut to fit the 8192 tokens assumed, refused once, then cut to fit 2000
    assert server.count == 7  # six responses, one retried
    cut = [b["messages"][-1]["content"] for b in server.requests if MARKER.search(b["messages"][-1]["content"])]
    assert len(cut) == 2 and server.refused == cut[:1]
    first, retried = (int(MARKER.search(text).group(1)) for text in cut)
    assert first < retried and len(cut[1].encode()) // 2 + 1 + 1 <= 2000 < len(cut[0].encode()) // 2 + 1
    assert cut[1].startswith("You check whether an AI assistant's final response") and cut[1].rstrip().endswith("Answer Yes or No.")
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["responses"], summary["failed"], summary["pairs"]) == (6, 0, 3)
    assert summary["mean_rule_reward"] == pytest.approx(0.8)  # the server's P(Yes) for its "Yes"
    assert (summary["llm_stats"]["context_learned"], summary["llm_stats"]["context_retried"], summary["llm_stats"]["refused"]) == (1, 1, 1)
    rows = [json.loads(line) for line in (tmp_path / "rows.jsonl").read_text().splitlines()]
    assert [("error" in r, r["rule_reward"]) for r in rows] == [(False, pytest.approx(0.8))] * 6


def test_over_http_a_context_too_small_even_refitted_leaves_error_rows_after_one_retry(tmp_path, capsys):
    from autorule.llm.openai_compat import OpenAICompatLLM
    from autorule.rules import RuleSet
    from autorule.verifier import Verifier

    with ContextLimitedServer(300, reply=always_yes) as server:
        llm = OpenAICompatLLM("judge", server.base_url, api_key="sk-test", backoff_base=0.01, timeout=5.0, max_retries=1)
        verifier = Verifier(llm, RuleSet.from_texts([POLITE]))
        verdicts = verifier.verify([[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there."}]] * 2)
    # the instructions alone are over 300 tokens: each conversation is refused, refitted to 300, refused again, and left
    assert verifier.learned == [300] and verifier.max_input_tokens == 300
    assert sorted(verdicts.errors) == [0, 1] and all("maximum context length is 300 tokens" in why for why in verdicts.errors.values())
    assert (llm.stats["context_learned"], llm.stats["context_retried"], server.count, len(server.refused)) == (1, 2, 4, 4)
    # a refusal that names no context is not retried
    with ContextLimitedServer(20_000, refuse="Go away", reply=always_yes) as server:
        llm = OpenAICompatLLM("judge", server.base_url, api_key="sk-test", backoff_base=0.01, timeout=5.0, max_retries=1)
        verdicts = Verifier(llm, RuleSet.from_texts([POLITE])).verify([[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Go away."}]])
    assert list(verdicts.errors) == [0] and "content filter" in verdicts.errors[0]
    assert (llm.stats["context_learned"], llm.stats["context_retried"], server.count) == (0, 0, 1)


# ----------------------------------------------------------------------------- run.json is strict JSON


def strict_json(text: str):
    """json.loads that refuses NaN / Infinity, as jq and JavaScript do."""
    def refuse(name):
        raise ValueError(f"not JSON: {name}")

    return json.loads(text, parse_constant=refuse)


def test_run_json_and_the_stage_records_are_strict_json_with_null_for_an_undefined_number(tmp_path, pairs, capsys):
    llm = ContextLimitedLLM(20_000)
    llm.stats["mean_wait_s"] = float("nan")  # an undefined number a backend may count
    out = tmp_path / "run"
    result = run(pairs, llm, out)
    meta = strict_json((out / "run.json").read_text())
    assert meta["status"] == "complete" and meta["llm_stats"]["model"]["mean_wait_s"] is None
    assert result.summary["llm_stats"]["model"]["mean_wait_s"] != result.summary["llm_stats"]["model"]["mean_wait_s"]  # NaN in Python
    for name in ("010_reasoning.jsonl", "020_candidates.jsonl"):
        assert [strict_json(line)["pair_id"] for line in (out / name).read_text().splitlines()] == ["7364e2000f474f2c", LONG_ID, ESSAY_ID]
