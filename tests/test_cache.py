import multiprocessing as mp

from autorule.cache import Cache, content_key


def test_roundtrip_and_counts(cache):
    key = content_key({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert cache.get(key) is None
    cache.put(key, {"text": "hello"})
    assert cache.get(key) == {"text": "hello"}
    assert cache.get_many([key, "missing"]) == {key: {"text": "hello"}}
    assert (cache.hits, cache.misses) == (2, 2)


def test_key_depends_on_every_field_not_order():
    a = content_key({"model": "m", "temperature": 0.0, "messages": ["x"]})
    assert a == content_key({"messages": ["x"], "temperature": 0.0, "model": "m"})
    assert a != content_key({"model": "m", "temperature": 0.7, "messages": ["x"]})
    assert a != content_key({"model": "m2", "temperature": 0.0, "messages": ["x"]})


def _writer(path: str, worker: int, n: int) -> None:
    cache = Cache(path)
    for i in range(n):
        cache.put(f"{worker}-{i}", {"worker": worker, "i": i, "blob": "x" * 500})
        # readers interleave with writers
        cache.get(f"{(worker + 1) % 4}-{i}")


def test_four_processes_write_at_once(tmp_path):
    path = str(tmp_path / "shared.sqlite")
    Cache(path)
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(path, w, 200)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    cache = Cache(path)
    assert len(cache) == 800
    assert cache.get("3-199") == {"worker": 3, "i": 199, "blob": "x" * 500}
    assert cache._conn().execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_cached_scoring_reports_each_conversation_once_and_never_stores_unread_verdicts(cache):
    import math

    from fake_llm import ScriptedLLM

    from autorule.llm.cached import CachedLLM

    llm = CachedLLM(ScriptedLLM(lambda prefix, q: math.nan if "unread" in q else 0.7), cache)
    items = [("conv A ", ["rule 1", "rule 2"]), ("conv B ", ["rule 1", "unread rule"]), ("conv C ", ["rule 1"])]
    llm.score_yes_no_batch(items[:1])  # conversation A is cached whole
    done: list[int] = []
    probs = llm.score_yes_no_batch(items, on_item=done.append)
    # progress per conversation: the cached one at once, the others as the model finishes them
    assert sorted(done) == [0, 1, 2] and done[0] == 0
    assert probs[0] == [0.7, 0.7] and probs[1][0] == 0.7 and math.isnan(probs[1][1]) and probs[2] == [0.7]
    # the unread verdict was not stored: asked again, it goes back to the model
    asked = len(llm.inner.calls)
    llm.score_yes_no_batch(items[1:2])
    assert llm.inner.calls[asked:] == [("conv B ", "unread rule")]
