import gzip
import json
import os

import pytest
from conftest import ALPACA, HH, MT_BENCH_QUESTIONS

from autorule.cli.app import main
from autorule.data import Columns, DataError, load_pairs


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


# ------------------------------------------------------------------ the shared real data


def test_hh_rlhf_loads_with_bad_rows_counted(shared_data):
    result = load_pairs(HH, on_bad_row="skip")
    assert result.format == "hh-rlhf"
    assert result.rows == 1000
    assert len(result.pairs) + sum(result.skipped.values()) == 1000
    assert result.skipped == {"empty reply": 2}
    pair = result.pairs[0]
    assert pair.prompt[0].role == "user" and pair.prompt[-1].role == "user"
    assert pair.chosen.startswith("Using a fast, powerful swing")
    # multi-turn kept: the shared turns are the prompt
    assert len(pair.prompt) == 7


def test_hh_rlhf_empty_reply_is_an_error_by_default(shared_data):
    with pytest.raises(DataError) as e:
        load_pairs(HH)
    assert "line 349" in str(e.value) and "empty reply" in str(e.value) and HH.name in str(e.value)


def test_alpacaeval_near_ties_skipped_and_counted(shared_data):
    result = load_pairs(ALPACA, on_bad_row="skip")
    assert result.format == "alpacaeval"
    assert result.skipped["near-tie (|preference - 1.5| < 0.1)"] == 127
    assert result.skipped["chosen identical to rejected"] == 2
    assert len(result.pairs) == 8050 - 129
    # preference near 1 means output_1 won
    first = json.loads(gzip.open(ALPACA, "rt").readline())
    assert first["preference"] < 1.5 and result.pairs[0].chosen == first["output_1"]


def test_alpacaeval_threshold_is_configurable(shared_data):
    result = load_pairs(ALPACA, on_bad_row="skip", tie_threshold=0.0, limit=100)
    assert not any("near-tie" in r for r in result.skipped)
    assert len(result.pairs) == 100


def test_mt_bench_questions_get_a_clear_message(shared_data):
    with pytest.raises(DataError) as e:
        load_pairs(MT_BENCH_QUESTIONS)
    assert "MT-Bench questions" in str(e.value) and "not as preference data" in str(e.value)


def test_cli_inspect_json_on_shared_files(shared_data, capsys):
    assert main(["data", "inspect", str(HH), "--on-bad-row", "skip", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["format"] == "hh-rlhf" and summary["pairs"] == 998 and summary["skipped"] == {"empty reply": 2}
    assert main(["data", "inspect", str(ALPACA), "--on-bad-row", "skip", "--json", "--sample", "1"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["format"] == "alpacaeval" and summary["pairs"] == 7921 and len(summary["sample"]) == 1
    assert main(["data", "inspect", str(MT_BENCH_QUESTIONS)]) == 2
    assert "MT-Bench questions" in capsys.readouterr().err


def test_cli_inspect_human_readable(shared_data, capsys):
    assert main(["data", "inspect", str(HH), "--on-bad-row", "skip"]) == 0
    text = capsys.readouterr().out
    assert "hh-rlhf" in text and "998" in text and "empty reply" in text and "row 349" in text


# ------------------------------------------------------------------ generic formats

EXPLICIT = {"prompt": "What is 2+2?", "chosen": "4", "rejected": "5"}
CONVERSATIONAL = {
    "prompt": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "2+2?"}],
    "chosen": [{"role": "assistant", "content": "4"}],
    "rejected": [{"role": "assistant", "content": "5"}],
}
IMPLICIT = {
    "chosen": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "4"}],
    "rejected": [{"role": "user", "content": "2+2?"}, {"role": "assistant", "content": "5"}],
}


@pytest.mark.parametrize("row", [EXPLICIT, CONVERSATIONAL, IMPLICIT], ids=["explicit-text", "explicit-messages", "implicit-prompt"])
def test_trl_preference_formats(tmp_path, row):
    result = load_pairs(write_jsonl(tmp_path / "d.jsonl", [row]))
    (pair,) = result.pairs
    assert result.format == "pairs"
    assert pair.prompt[-1].content in ("What is 2+2?", "2+2?")
    assert (pair.chosen, pair.rejected) == ("4", "5")
    assert pair.row == 1 and len(pair.id) == 16


def test_same_pair_same_id_across_formats(tmp_path):
    a = load_pairs(write_jsonl(tmp_path / "a.jsonl", [{"prompt": "2+2?", "chosen": "4", "rejected": "5"}])).pairs[0]
    b = load_pairs(write_jsonl(tmp_path / "b.jsonl", [IMPLICIT])).pairs[0]
    assert a.id == b.id


def test_json_csv_parquet_and_dataset_dir(tmp_path):
    import datasets
    import pandas as pd

    rows = [EXPLICIT, {"prompt": "Capital of France?", "chosen": "Paris.", "rejected": "Lyon."}]
    (tmp_path / "d.json").write_text(json.dumps(rows))
    pd.DataFrame(rows).to_csv(tmp_path / "d.csv", index=False)
    pd.DataFrame(rows).to_parquet(tmp_path / "d.parquet")
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    with gzip.open(tmp_path / "d.jsonl.gz", "wt") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    for name in ("d.json", "d.csv", "d.parquet", "ds", "d.jsonl.gz"):
        result = load_pairs(tmp_path / name)
        assert [p.chosen for p in result.pairs] == ["4", "Paris."], name


def test_csv_with_message_lists(tmp_path):
    import pandas as pd

    pd.DataFrame([{k: json.dumps(v) for k, v in CONVERSATIONAL.items()}]).to_csv(tmp_path / "d.csv", index=False)
    (pair,) = load_pairs(tmp_path / "d.csv").pairs
    assert len(pair.prompt) == 3 and pair.chosen == "4"


def test_column_overrides(tmp_path):
    path = write_jsonl(tmp_path / "d.jsonl", [{"question": "2+2?", "good": "4", "bad": "5"}])
    with pytest.raises(DataError, match="cannot tell the format"):
        load_pairs(path)
    (pair,) = load_pairs(path, columns=Columns(prompt="question", chosen="good", rejected="bad")).pairs
    assert pair.chosen == "4"
    assert main(["data", "inspect", str(path), "--prompt-column", "question", "--chosen-column", "good", "--rejected-column", "bad", "--json"]) == 0


def test_mt_bench_human_judgments(tmp_path):
    def conv(a1, a2):
        return [
            {"role": "user", "content": "Q1"},
            {"role": "assistant", "content": a1},
            {"role": "user", "content": "Q2"},
            {"role": "assistant", "content": a2},
        ]

    rows = [
        {"question_id": 81, "model_a": "x", "model_b": "y", "winner": "model_b", "judge": "expert_0", "turn": 1, "conversation_a": conv("a1", "a2"), "conversation_b": conv("b1", "b2")},
        {"question_id": 81, "model_a": "x", "model_b": "y", "winner": "model_a", "judge": "expert_0", "turn": 2, "conversation_a": conv("a1", "a2"), "conversation_b": conv("b1", "b2")},
        {"question_id": 81, "model_a": "x", "model_b": "y", "winner": "tie", "judge": "expert_0", "turn": 1, "conversation_a": conv("a1", "a2"), "conversation_b": conv("b1", "b2")},
    ]
    result = load_pairs(write_jsonl(tmp_path / "mt.jsonl", rows))
    assert result.format == "mt-bench-human" and result.skipped == {"tie": 1}
    turn1, turn2 = result.pairs
    assert (turn1.chosen, turn1.rejected, [m.content for m in turn1.prompt]) == ("b1", "a1", ["Q1"])
    # turn 2: both whole conversations kept, the judged replies last
    assert (turn2.chosen, turn2.rejected) == ("a2", "b2")
    assert [m.content for m in turn2.conversation("chosen")] == ["Q1", "a1", "Q2", "a2"]
    assert [m.content for m in turn2.conversation("rejected")] == ["Q1", "b1", "Q2", "b2"]


# ------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    "content, fragment, where",
    [
        ('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a", "chosen": \n', "broken JSON", "line 2"),
        ('{"prompt": "a", "chosen": "", "rejected": "c"}\n', "empty reply", "line 1"),
        ('{"prompt": "a", "chosen": "same", "rejected": "same"}\n', "chosen identical to rejected", "line 1"),
        ('{"prompt": "a", "chosen": "b", "rejected": "c"}\n{"prompt": "a", "chosen": "b"}\n', "missing column 'rejected'", "line 2"),
        ('{"prompt": "a", "chosen": null, "rejected": "c"}\n', "null 'chosen'", "line 1"),
        ('{"text": "a"}\n', "cannot tell the format", "line 1"),
        ('[1, 2]\n', "not a JSON object", "line 1"),
    ],
)
def test_bad_rows_name_file_row_and_reason(tmp_path, capsys, content, fragment, where):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(DataError) as e:
        load_pairs(path)
    assert fragment in str(e.value) and where in str(e.value) and str(path) in str(e.value)
    assert main(["data", "inspect", str(path)]) == 2
    assert fragment in capsys.readouterr().err


def test_skip_counts_bad_rows(tmp_path, capsys):
    rows = [EXPLICIT, {"prompt": "a", "chosen": "", "rejected": "c"}, {"prompt": "a", "chosen": "x", "rejected": "x"}]
    path = write_jsonl(tmp_path / "d.jsonl", rows)
    path.write_text(path.read_text() + "{broken\n")
    assert main(["data", "inspect", str(path), "--on-bad-row", "skip", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["pairs"] == 1
    assert summary["skipped"] == {"empty reply": 1, "chosen identical to rejected": 1, "broken JSON": 1}


@pytest.mark.parametrize(
    "name, data, fragment",
    [
        ("missing.jsonl", None, "no such file"),
        ("empty.jsonl", b"", "file is empty"),
        ("latin1.jsonl", '{"prompt": "caf\xe9", "chosen": "a", "rejected": "b"}\n'.encode("latin-1"), "not valid UTF-8"),
        ("trunc.jsonl.gz", gzip.compress(b'{"prompt": "a", "chosen": "b", "rejected": "c"}\n' * 200)[:-30], "truncated gzip"),
        ("data.txt", b"hello", "unknown file type"),
    ],
)
def test_unreadable_files(tmp_path, capsys, name, data, fragment):
    path = tmp_path / name
    if data is not None:
        path.write_bytes(data)
    with pytest.raises(DataError, match=fragment):
        load_pairs(path)
    assert main(["data", "inspect", str(path)]) == 2
    assert fragment in capsys.readouterr().err


def test_unknown_hub_dataset_offline_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(DataError, match="Hugging Face dataset") as e:
        load_pairs("nobody/no-such-dataset-xyz")
    assert "HF_HUB_OFFLINE=1 is set, so only datasets already in the local Hugging Face cache load; unset it to download" in str(e.value)


def test_the_cli_leaves_the_users_hub_setting_alone(monkeypatch):
    """The CLI used to force HF_HUB_OFFLINE=1, so documented dataset names could never download."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    from autorule.cli.app import main

    from autorule import SAMPLE_PAIRS

    assert main(["data", "inspect", str(SAMPLE_PAIRS), "--json"]) == 0
    assert "HF_HUB_OFFLINE" not in os.environ


def test_undetected_format_names_the_flags_that_read_it_preferred_before_dispreferred():
    with pytest.raises(DataError) as e:
        load_pairs([{"prompt": "Q", "dispreferred": "x", "preferred": "y"}])
    assert "read it with --format pairs --prompt-column prompt --chosen-column preferred --rejected-column dispreferred" in str(e.value)
