import json

import pytest

from autorule.cli import main


@pytest.mark.slow
def test_verifier_benchmark_runs_both_modes(capsys):
    assert main(["bench", "verifier", "--rules", "2", "--conversations", "2", "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(report["checks_per_s"]) == {"autorule", "reference"} and report["checks"] == 4
    assert report["speedup"] > 0 and report["tokens_vs_floor"] > 0 and report["matmul_peak_flops"] > 0
