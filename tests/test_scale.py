"""Issue 15: streaming stages, the linear merge, packed verification, the server's workers,
each checked to give the same results as the in-memory / unbatched path on small inputs."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import numpy as np
import pytest
from conftest import HH, run_benchmark
from fake_llm import ScriptedLLM

from autorule.testing.mock_server import ScriptedServer, mock_judge
from autorule.cli.app import main
from autorule.data import load_pairs, stream_pairs
from autorule.extraction import merge
from autorule.extraction.run import ExtractConfig, run_extract
from autorule.llm import load_llm
from autorule.reward import RewardScorer
from autorule.rules import RuleSet
from autorule.validation import run_validation


def text_p_yes(prefix: str, question: str) -> float:
    """A verifier whose P(Yes) depends on the response and the rule: verdicts that differ per check."""
    return (sum(map(ord, prefix[-60:] + question)) % 97) / 96


def test_stream_pairs_counts_like_load_pairs_and_repeats(shared_data):
    loaded = load_pairs(HH, on_bad_row="skip", limit=300)
    stream = stream_pairs(HH, on_bad_row="skip", limit=300)
    first = [p.id for p in stream]
    assert first == [p.id for p in loaded]
    assert stream.summary() == loaded.summary()
    assert [p.id for chunk in stream.chunks(64) for p in chunk] == first  # a second pass, in chunks
    assert [len(c) for c in stream.chunks(64)] == [64, 64, 64, 64, 44]


def test_extraction_in_small_chunks_equals_one_chunk(tmp_path, shared_data):
    pairs = load_pairs(HH, on_bad_row="skip", limit=10)
    outputs = {}
    for chunk in (3, 1024):
        with ScriptedServer(mock_judge()) as server:
            llm = load_llm(f"openai:scripted@{server.base_url}", cache=False, concurrency=2)
            result = run_extract(stream_pairs(HH, on_bad_row="skip", limit=10), llm, llm, tmp_path / str(chunk), ExtractConfig(label_filter=False), chunk=chunk)
        outputs[chunk] = result
        # the final stage files are in data order, whatever order the answers came in
        for name in ("010_reasoning.jsonl", "020_candidates.jsonl"):
            ids = [json.loads(line)["pair_id"] for line in (tmp_path / str(chunk) / name).read_text().splitlines()]
            assert ids == [p.id for p in pairs]
        assert not list((tmp_path / str(chunk)).glob("*.partial"))
    small, whole = outputs[3], outputs[1024]
    assert [r.text for r in small.rules.rules] == [r.text for r in whole.rules.rules]
    assert [r.pairs for r in small.rules.rules] == [r.pairs for r in whole.rules.rules]
    for key in ("pairs", "candidates", "pairs_with_candidates", "rules", "tokens"):
        assert small.summary[key] == whole.summary[key]
    assert small.summary["pairs"] == 10 and small.summary["candidates"] == 20  # the mock judge: two rules per pair
    assert list(small.summary["stages"]) == ["000_pairs", "010_020_reasoning_and_rules", "030_merge"]


def test_a_torn_last_line_is_cut_and_redone(tmp_path, shared_data):
    with ScriptedServer(mock_judge()) as server:
        llm = load_llm(f"openai:scripted@{server.base_url}", cache=False, concurrency=1)
        run_extract(stream_pairs(HH, on_bad_row="skip", limit=4), llm, llm, tmp_path / "run", ExtractConfig(label_filter=False))
        run_dir = tmp_path / "run"
        # back to a killed run: 020 partial with two records, the second torn mid-line
        lines = (run_dir / "020_candidates.jsonl").read_text().splitlines(keepends=True)
        (run_dir / "020_candidates.jsonl").unlink()
        (run_dir / "020_candidates.jsonl.partial").write_text(lines[0] + lines[1][:25])
        (run_dir / "rules.yaml").unlink()
        before = len(server.requests)
        run_extract(stream_pairs(HH, on_bad_row="skip", limit=4), llm, llm, run_dir, ExtractConfig(label_filter=False))
        redone = [r for r in server.requests[before:] if "extract rules" in r["messages"][-1]["content"]]
    assert len(redone) == 3  # the torn record and the two never written; the whole one was kept
    assert (run_dir / "020_candidates.jsonl").read_text().splitlines(keepends=True) == lines


def test_validation_streamed_in_chunks_equals_in_memory(shared_data):
    pairs = load_pairs(HH, on_bad_row="skip", limit=40).pairs
    rules = RuleSet.from_texts(["The response should be polite.", "The response should answer the question.", "The response should be short."])
    reports = []
    for data, chunk in ((pairs, 1024), (stream_pairs(HH, on_bad_row="skip", limit=40), 7)):
        scorer = RewardScorer(rules, ScriptedLLM(text_p_yes))
        reports.append(run_validation(rules, None, data, scorer, progress=False, chunk_size=chunk).report)
    whole, streamed = reports
    assert streamed["pairs"] == 40
    whole.pop("llm_stats"), streamed.pop("llm_stats")
    assert json.dumps(streamed, sort_keys=True) == json.dumps(whole, sort_keys=True)


def test_score_writes_rows_chunk_by_chunk_with_the_same_values(tmp_path, shared_data, monkeypatch, capsys):
    rules = tmp_path / "rules.txt"
    rules.write_text("The response should be polite.\nThe response should be short.\n")
    outputs = []
    with ScriptedServer() as server:  # the echo verifier: Yes where the text before the question says yes
        for chunk in (1024, 6):
            monkeypatch.setattr("autorule.api.SCORE_CHUNK", chunk)
            out = tmp_path / f"scores-{chunk}.jsonl"
            assert main(["score", "--rules", str(rules), "--data", str(HH), "--on-bad-row", "skip", "--limit", "9",
                         "--verifier", f"openai:scripted@{server.base_url}", "--no-cache", "--out", str(out), "--json"]) == 0
            outputs.append((out.read_text(), json.loads(capsys.readouterr().out.strip().splitlines()[-1])))
    (rows_a, summary_a), (rows_b, summary_b) = outputs
    assert rows_a == rows_b and len(rows_a.splitlines()) == 18
    summary_a.pop("llm_stats"), summary_b.pop("llm_stats")
    assert summary_a == summary_b and summary_a["responses"] == 18 and summary_a["pairs"] == 9


def test_data_inspect_streams_a_large_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 20_000
    table = pa.table({"prompt": [f"Question {i}?" for i in range(n)], "chosen": [f"Answer {i}." for i in range(n)],
                      "rejected": ["Same." if i % 1000 == 0 else f"No {i}." for i in range(n)]})
    path = tmp_path / "big.parquet"
    pq.write_table(table, path, row_group_size=2_000)
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "autorule", "data", "inspect", str(path), "--on-bad-row", "skip", "--json", "--sample", "2"],
                         capture_output=True, text=True, check=True)
    summary = json.loads(out.stdout)
    assert (summary["rows"], summary["pairs"], summary["format"]) == (n, n, "pairs")
    assert [p["chosen"] for p in summary["sample"]] == ["Answer 0.", "Answer 1."]


def test_bucketed_near_duplicate_pass_equals_the_exact_one(monkeypatch):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(120, 64))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    vectors = np.repeat(centres, 5, axis=0) + 0.02 * rng.normal(size=(600, 64))  # 5 rephrasings of each of 120 rules
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    texts = [f"rule {i // 5} wording {i % 5}" for i in range(600)]
    table = dict(zip(texts, vectors))

    def embed(batch):
        return np.array([table[t] for t in batch])

    rules = [merge.Rule.from_candidates(t, [merge.CandidateRef(text=t, pair_id=f"p{i}", excerpt="")]) for i, t in enumerate(texts)]
    exact, folded_exact = merge.collapse_near_duplicates(rules, embed, 0.92)
    monkeypatch.setattr(merge, "BUCKET", 100)  # 600 rules > BUCKET: the k-means buckets are used
    bucketed, folded_bucketed = merge.collapse_near_duplicates(rules, embed, 0.92)
    assert folded_exact == folded_bucketed == 480
    assert sorted((r.text, tuple(r.pairs)) for r in exact) == sorted((r.text, tuple(r.pairs)) for r in bucketed)


def test_embeddings_are_cached_by_content_across_runs(tmp_path):
    calls = []

    def embed(texts):
        calls.append(list(texts))
        return np.array([[len(t), 1.0] for t in texts], dtype=np.float32)

    path = tmp_path / "vectors.sqlite"
    first = merge.cached_embedder(path, embed)(["a", "bb", "a"])
    again = merge.cached_embedder(path, embed)(["bb", "a", "ccc"])  # a resumed run: a new process, the same file
    assert calls == [["a", "bb"], ["ccc"]]
    assert first.tolist() == [[1, 1], [2, 1], [1, 1]] and again.tolist() == [[2, 1], [1, 1], [3, 1]]


def test_bench_scale_small_sizes():
    status, report = run_benchmark("scale.py", "--pairs", "40", "--candidates", "300", "--validate-pairs", "10")
    assert status == 0
    extract, merged, validate = (report["stages"][k]["rows"][0] for k in ("extract", "merge", "validate"))
    assert (extract["size"], extract["candidates"]) == (40, 80)  # the mock judge: two rules per pair
    assert merged["size"] == 300 and 1 <= merged["rules"] <= 25
    assert (validate["pairs"], validate["checks"]) == (10, 10 * 2 * 20)
    assert list(extract["stages"]) == ["000_pairs", "010_020_reasoning_and_rules", "030_merge"]


def test_server_workers_score_batches_at_once():
    from fastapi.testclient import TestClient

    from autorule.integrations.openrlhf import create_app

    active, peak, lock = [0], [0], threading.Lock()

    def slow(prefix, question):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.2)
        with lock:
            active[0] -= 1
        return 0.9

    scorer = RewardScorer(RuleSet.from_texts(["The response should be short."]), ScriptedLLM(slow))
    for workers, expected in ((1, 1), (3, 3)):
        peak[0] = 0
        app = create_app(scorer, workers=workers, max_batch=1, max_wait_ms=0)
        with TestClient(app) as client:
            async def burst():
                import httpx

                transport = httpx.ASGITransport(app=app)
                async with httpx.AsyncClient(transport=transport, base_url="http://x") as c:
                    return await asyncio.gather(*[c.post("/get_reward", json={"query": [f"A{i}"]}) for i in range(6)])

            replies = client.portal.call(burst)
            assert [r.json()["rewards"] for r in replies] == [[0.9]] * 6
            assert client.get("/health").json()["workers"] == workers
        assert peak[0] == expected
