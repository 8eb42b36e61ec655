import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))  # tests/ helpers such as scripted_server

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
HH = SHARED_DATA / "hh-rlhf-harmless-dev.jsonl.gz"
ALPACA = SHARED_DATA / "alpacaeval-gpt4turbo-annotations-dev.jsonl.gz"
MT_BENCH_QUESTIONS = SHARED_DATA / "mt-bench-questions.jsonl"


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
