"""The public API: names, documentation, and plain inputs."""

import importlib
import pkgutil
import subprocess
import sys

import pytest

import autorule


def test_public_names_survive_every_submodule_being_imported():
    """Importing a submodule sets a package attribute; no public name may be shadowed by one."""
    for info in pkgutil.walk_packages(autorule.__path__, "autorule."):
        importlib.import_module(info.name)
    for name in autorule.__all__:
        value = getattr(autorule, name)
        assert not isinstance(value, type(autorule)), f"autorule.{name} is a module"
        if name not in ("__version__", "SAMPLE_PAIRS"):
            assert value is getattr(importlib.import_module(autorule._EXPORTS[name]), name)


@pytest.mark.parametrize("name", [n for n in autorule.__all__ if n not in ("__version__", "SAMPLE_PAIRS")])
def test_every_public_name_documents_its_arguments_with_a_runnable_example(name):
    doc = getattr(autorule, name).__doc__ or ""
    assert "Args:" in doc and ">>> " in doc, f"autorule.{name} needs an Args section and an example"


def test_import_autorule_loads_nothing_heavy():
    code = "import sys, autorule; print(sorted(m for m in ('torch', 'transformers', 'numpy', 'autorule.api') if m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"


def test_messages_as_dicts_messages_or_bare_strings_give_the_same_verdicts():
    from autorule.testing.fake_llm import FakeLLM

    class Recorder(FakeLLM):
        def _score_yes_no_batch(self, items, on_item, errors, keys=None):
            self.prefixes = [p for p, _ in items]
            return super()._score_yes_no_batch(items, on_item, errors)

    llm = Recorder(p_yes=0.5)
    autorule.verify(["The response should be short."], [[{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]], llm)
    as_dicts = llm.prefixes
    autorule.verify(["The response should be short."], [[autorule.Message(role="user", content="Hi"), autorule.Message(role="assistant", content="Hello")]], llm)
    assert llm.prefixes == as_dicts
    autorule.verify(["The response should be short."], ["Hello"], llm)
    assert "Hello" in llm.prefixes[0] and "Hi" not in llm.prefixes[0].split("Hello")[0][-50:]
    with pytest.raises(ValueError, match="message 0 is int"):
        autorule.verify(["The response should be short."], [[3]], llm)


def test_library_calls_print_nothing(capsys):
    import json

    from autorule.testing.fake_llm import FakeLLM

    llm = FakeLLM(p_yes=0.5, reply=json.dumps(["The assistant's response should greet the user by name."]))
    rules = autorule.extract([{"prompt": "Hi, I am Ann.", "chosen": "Hello Ann!", "rejected": "Hello."}], llm, cache=False,
                             label_filter=False)  # FakeLLM gives both replies the same P(Yes): the filter would drop all
    autorule.validate(rules, [{"prompt": "Q", "chosen": "A", "rejected": "B"}], llm, folds=2)
    autorule.score(rules, [{"prompt": "Q", "chosen": "A", "rejected": "B"}], llm, cache=False)
    out = capsys.readouterr()
    assert out.out == ""
    # only the logged note that FakeLLM gave no reasoning trace (a warning, via logging)
    assert "%" not in out.err and "it/s" not in out.err


def test_score_reads_rows_pairs_and_conversations_and_writes_what_it_keeps(tmp_path):
    import json

    from fake_llm import ScriptedLLM

    rules = ["The assistant's response should be polite."]
    llm = ScriptedLLM(lambda prefix, question: 0.9 if "please" in prefix.lower() else 0.2)
    pairs = [{"prompt": "Ask me.", "chosen": "Could you please say it?", "rejected": "Say it."}]
    kept = autorule.score(rules, pairs, llm, cache=False)
    written = autorule.score(rules, pairs, llm, cache=False, out=tmp_path / "rows" / "scores.jsonl")
    assert written.rows is None and written.out == tmp_path / "rows" / "scores.jsonl"
    assert [json.loads(line) for line in written.out.read_text().splitlines()] == kept.rows
    assert [r["side"] for r in kept.rows] == ["chosen", "rejected"] and kept.summary["chosen_preferred"] == 1.0
    assert {k: v for k, v in kept.summary.items() if k != "llm_stats"} == {k: v for k, v in written.summary.items() if k != "llm_stats"}
    # responses with prompts (rows or bare conversations): no sides, no pair statistics
    rows = autorule.score(rules, [{"id": "a", "prompt": "Ask me.", "response": "Please."}], llm, cache=False)
    convs = autorule.score(rules, [[{"role": "user", "content": "Ask me."}, {"role": "assistant", "content": "Please."}], "Say it."], llm, cache=False)
    assert [r["id"] for r in rows.rows] == ["a"] and [r["id"] for r in convs.rows] == ["0", "1"]
    assert "side" not in rows.rows[0] and "pairs" not in convs.summary
    assert [r["rule_reward"] for r in convs.rows] == [0.9, 0.2]
    with pytest.raises(autorule.DataError, match="expected a 'response'"):
        autorule.score(rules, [{"response": "ok"}, {"prompt": "no response"}], llm, cache=False)
