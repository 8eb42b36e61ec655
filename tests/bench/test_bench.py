import json
import subprocess
import sys

import pytest
from conftest import BENCHMARKS, benchmark_env, run_benchmark

from autorule.cli.app import main


@pytest.mark.slow
def test_verifier_benchmark_runs_both_modes(capsys):
    assert main(["bench", "verifier", "--rules", "2", "--conversations", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(report["checks_per_s"]) == {"autorule", "packed", "reference"} and report["checks"] == 4
    # the figures are what their definitions say, from the timings in the same report
    assert report["checks_per_s"]["autorule"] == pytest.approx(4 / report["seconds"]["autorule"])
    assert report["speedup"] == pytest.approx(report["seconds"]["reference"] / report["seconds"]["autorule"])
    assert report["packing_speedup"] == pytest.approx(report["seconds"]["autorule"] / report["seconds"]["packed"])
    # packing changes how many passes run, not what they compute: the same tokens per check
    assert report["tokens_per_check"]["packed"] == report["tokens_per_check"]["autorule"]
    assert report["tokens_vs_floor"] == pytest.approx(report["tokens_per_check"]["autorule"] / report["floor_tokens_per_check"])
    # autorule's layout reads each conversation once for both rules: never more tokens than the reference, which reads it per rule
    assert report["tokens_per_check"]["autorule"] < report["tokens_per_check"]["reference"]


def last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_extraction_benchmark_runs_three_ways():
    status, report = run_benchmark("extraction.py", "--pairs", "4", "--latency", "0.01", "--concurrency", "2")
    assert status == 0
    assert set(report["runs"]) == {"sequential", "concurrent", "warm"}
    assert report["warm_requests"] == 0 and report["same_rules"] is True  # the warm rerun is served by the cache
    # two requests were in flight at once (the bound, and reached), and the speedup is the timings' ratio
    assert report["max_requests_in_flight"] == 2
    assert report["speedup"] == pytest.approx(report["runs"]["sequential"]["seconds"] / report["runs"]["concurrent"]["seconds"])
    # the sequential run cannot beat its requests' latency added up
    assert report["runs"]["sequential"]["seconds"] >= report["sequential_floor_s"]


@pytest.mark.slow
def test_grpo_breakdown_benchmark_runs():
    status, report = run_benchmark("grpo_steps.py", "--steps", "1", "--rules", "1", "--batch", "2", "--completion-tokens", "4")
    assert status == 0
    assert set(report["modes"]) == {"no_cache", "cold_cache", "warm_cache"}
    for mode in report["modes"].values():
        (step,) = mode["per_step"]
        assert {"generation_s", "reward_rules_s", "reward_rm_s", "update_s"} <= set(step)
    assert report["modes"]["warm_cache"]["verifier_checks_computed"] == 0  # every verdict came from the cache


def test_server_benchmark_reports_latency_percentiles():
    status, report = run_benchmark("server_load.py", "--clients", "4", "--requests", "3")
    assert status == 0
    # every request answered 200 with the reward of its own response, none failed
    assert (report["answered"], report["statuses"], report["errors"], report["mismatched"]) == (12, ["200"], 0, 0)


@pytest.mark.slow
def test_injection_benchmark_runs(capsys):
    assert main(["bench", "injection", "--conversations", "1", "--rules", "1", "--attacks", "order-yes,base64-order", "--json"]) == 0
    report = last_json(capsys)
    assert [a["id"] for a in report["per_attack"]] == ["order-yes", "base64-order"]
    assert main(["bench", "injection", "--attacks", "no-such-attack"]) == 2


def test_verifier_server_benchmark_runs_against_a_server(capsys):
    from autorule.testing.mock_server import ScriptedServer

    with ScriptedServer() as server:  # chat only: batched cannot run, and says why; the others do
        assert main(["bench", "verifier-server", "--model", f"openai:mock@{server.base_url}", "--rules", "2", "--conversations", "2", "--json"]) == 0
    report = last_json(capsys)
    assert report["modes"] == ["batched", "chat", "reference"] and report["checks"] == 4
    assert set(report["checks_per_s"]) == {"chat", "reference", "autorule"} and "batched" in report["unavailable"]
    assert report["mode_lines"]["chat"].startswith("one chat request per check")
    # the old keys: autorule is the mode a backend would choose, the speedup its ratio to the reference
    assert report["speedup"] == pytest.approx(report["checks_per_s"]["chat"] / report["checks_per_s"]["reference"])
    assert main(["bench", "verifier-server", "--model", "openai:mock@http://127.0.0.1:9/v1", "--modes", "chat,nope"]) == 2


def test_verifier_benchmark_refuses_a_server_spec(capsys):
    assert main(["bench", "verifier", "--model", "openai:x@http://127.0.0.1:9/v1"]) == 2
    assert "bench verifier-server" in capsys.readouterr().err


def test_verifier_accuracy_gold_set_labels_and_metrics(tmp_path, shared_data, capsys):
    """The gold set's size and labellers, its labels against oracles of our own for IFEval-labelled
    families, and the metrics of a verifier that says P(Yes) = 0.5 to everything (worked out by hand)."""
    from conftest import ALPACA, HH

    from autorule.testing.mock_server import ScriptedServer, value_verifier

    gold_path = tmp_path / "gold.jsonl"
    with ScriptedServer(value_verifier) as server:  # no "value=" in real replies: P(Yes) 0.5 for every check
        assert main(["bench", "verifier-accuracy", "--verifier", f"openai:v@{server.base_url}", "--hh", str(HH), "--alpaca", str(ALPACA),
                     "--gold-out", str(gold_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    gold = [json.loads(line) for line in gold_path.read_text().splitlines()]
    families = list(dict.fromkeys(g["family"] for g in gold))
    assert (report["checks"], report["replies"], report["families"]) == (len(gold), 64, 13) and len(gold) == 64 * 13
    assert report["labellers"]["all-capitals"] == "lm-eval IFEval change_case:english_capital"
    assert report["labellers"]["numbered-list"] == "autorule program"
    assert sum(v.startswith("lm-eval IFEval") for v in report["labellers"].values()) == 8
    oracles = {"no-commas": lambda t: "," not in t, "quoted": lambda t: len(t.strip()) > 1 and t.strip()[0] == t.strip()[-1] == '"',
               "all-lowercase": lambda t: t == t.lower(), "ends-with-question": lambda t: t.rstrip().endswith("?")}
    for g in gold:
        if g["family"] in oracles:
            assert g["label"] == oracles[g["family"]](g["response"]), (g["family"], g["response"][:80])
    for fam in families:
        labels = [g["label"] for g in gold if g["family"] == fam]
        m = report["per_family"][fam]
        share = sum(labels) / len(labels)
        assert (m["n"], m["positives"]) == (len(labels), sum(labels))
        assert m["accuracy"] == pytest.approx(share)  # P(Yes) 0.5 >= 0.5: every check answered Yes
        assert m["ece"] == pytest.approx(abs(0.5 - share))
        if 0 < sum(labels) < len(labels):
            assert (m["balanced_accuracy"], m["auc"]) == (0.5, 0.5)
        assert sum(labels) >= 3 and len(labels) - sum(labels) >= 1, fam  # rare truths are represented


DEVELOPER_BENCHMARKS = ("extraction", "grpo_steps", "merge_scale", "plan_accuracy", "scale", "server_load")


def test_the_package_carries_no_developer_benchmark():
    """They are scripts in the repository's benchmarks/, not modules of the wheel; the user-facing ones stay."""
    import pkgutil

    import autorule

    modules = {m.name for m in pkgutil.walk_packages(autorule.__path__, "autorule.")}
    assert {"autorule.bench.verifier", "autorule.bench.verifier_accuracy", "autorule.verifier.injection", "autorule.testing.mock_server"} <= modules
    shipped = sorted(modules & {f"autorule.bench.{name}" for name in DEVELOPER_BENCHMARKS})
    assert not shipped, f"developer benchmarks in the package: {shipped}"
    for name in DEVELOPER_BENCHMARKS:
        assert (BENCHMARKS / f"{name}.py").is_file()
    for command in ("extraction", "grpo", "server", "plan", "merge-scale", "scale"):  # their subcommands went with them
        with pytest.raises(SystemExit) as exit_:
            main(["bench", command])
        assert exit_.value.code == 2


def test_verifier_accuracy_names_the_extra_when_its_packages_are_missing(shared_data):
    """Without lm-eval (the `bench` extra) the command says what to install, and needs its data named (no defaults)."""
    from conftest import ALPACA, HH

    code = ("import sys; sys.modules['lm_eval'] = None; from autorule.cli import main; "
            f"sys.exit(main(['bench', 'verifier-accuracy', '--hh', {str(HH)!r}, '--alpaca', {str(ALPACA)!r}]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=benchmark_env(), timeout=300)
    assert out.returncode == 1 and "pip install 'autorule[bench]'" in out.stderr, out.stderr[-2000:]
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "verifier-accuracy"])
    assert exit_.value.code == 2


@pytest.mark.slow
def test_replicas_benchmark_runs_one_and_two_servers():
    """benchmarks/replicas.py starts real llama-servers (one, then two replicas) and reads their own counters."""
    status, report = run_benchmark("replicas.py", "--layouts", "one-t1,two-t1", "--rules", "2", "--conversations", "2")
    assert status == 0
    one, two = report["layouts"]["one-t1"], report["layouts"]["two-t1"]
    assert (one["replicas"], two["replicas"]) == (1, 2) and one["checks"] == two["checks"] == 4
    assert two["mode_lines"]["batched"].startswith("batched:")
    assert len(two["server"]["batched"]["per_replica"]) == 2
    assert report["two_vs_one"]["batched"]["one-t1"] == pytest.approx(two["checks_per_s"]["batched"] / one["checks_per_s"]["batched"])


def test_verifier_client_benchmark_runs_both_modes_against_the_mock():
    """benchmarks/verifier_client.py: batched and chat, one run, against the mock in its own process (vLLM's shapes)."""
    status, report = run_benchmark("verifier_client.py", "--conversations", "3", "--rules", "2", "--profile")
    assert status == 0
    run = report["runs"]["2"]
    assert set(run["checks_per_s"]) == {"batched", "chat"} and run["checks"] == 6
    assert run["requests"] == {"batched": 1, "chat": 6}  # the 3 conversations x 2 rules in one request (up to 64 prompts) against one per check
    assert run["batched_vs_chat"] == pytest.approx(run["checks_per_s"]["batched"] / run["checks_per_s"]["chat"])
    assert run["mode_lines"]["batched"].startswith("batched:")
    assert report["profiles"]["2"]["loop_thread"]["top"]
