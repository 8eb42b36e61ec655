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
