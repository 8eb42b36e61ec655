import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))  # tests/ helpers such as scripted_server

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HH = SHARED_DATA / "hh-rlhf-harmless-dev.jsonl.gz"
ALPACA = SHARED_DATA / "alpacaeval-gpt4turbo-annotations-dev.jsonl.gz"
MT_BENCH_QUESTIONS = SHARED_DATA / "mt-bench-questions.jsonl"
BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def benchmark_env() -> dict[str, str]:
    """The environment for a child Python process that imports the autorule these tests import, installed or not."""
    import autorule

    src = str(Path(autorule.__file__).parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}


def run_benchmark(script: str, *args: str) -> tuple[int, dict]:
    """A developer benchmark, `python benchmarks/SCRIPT.py ARGS --json`, in its own process (they are
    scripts, not package modules): its exit status and its report, the last line of its stdout."""
    out = subprocess.run([sys.executable, str(BENCHMARKS / script), *args, "--json"], capture_output=True, text=True, env=benchmark_env(), timeout=600)
    assert out.stdout.strip(), f"benchmarks/{script} printed nothing (exit {out.returncode}):\n{out.stderr[-3000:]}"
    return out.returncode, json.loads(out.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.fail(f"the shared real data is missing: {SHARED_DATA} (the project expects ../shared beside the checkout)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def embedded():
    """The real embedded model (SmolLM2-135M-Instruct), loaded once per test session."""
    from autorule.llm import load_llm

    return load_llm("embedded")


@pytest.fixture
def cache(tmp_path):
    from autorule.cache import Cache

    return Cache(tmp_path / "cache.sqlite")


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """A tiny random-weight policy and reward model with the embedded model's tokenizer."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM, LlamaForSequenceClassification

    from autorule.llm.local import local_model_path

    root = tmp_path_factory.mktemp("tiny")
    tok = AutoTokenizer.from_pretrained(local_model_path("embedded"))
    cfg = dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
               max_position_embeddings=512, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**cfg)).save_pretrained(root / "policy")
    LlamaForSequenceClassification(LlamaConfig(**cfg, num_labels=1)).save_pretrained(root / "rm")
    for name in ("policy", "rm"):
        tok.save_pretrained(root / name)
    return root
