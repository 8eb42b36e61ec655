"""Strict JSON for every `--json` line and report file: an undefined number is `null`, never `NaN`.

Python's `json` writes NaN and Infinity as bare words that JSON parsers (jq, JavaScript,
most other languages) reject, so a summary whose mean is undefined (every response
failed, a rule that never applies) would break the tool reading it.
"""

from __future__ import annotations

import json
import math
from typing import Any


def json_safe(value: Any) -> Any:
    """`value` with every NaN or infinite float (numpy's too) replaced by None, recursively.

    Dicts, lists and tuples are copied; numpy scalars and arrays become Python numbers
    and lists; other values are returned as they are.

    Args:
        value: anything `json.dumps` takes, possibly holding NaN.

    Example:
        >>> import numpy as np
        >>> json_safe({"mean": float("nan"), "rates": [np.float64(0.5), np.inf], "n": np.int64(3)})
        {'mean': None, 'rates': [0.5, None], 'n': 3}
    """
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "tolist") and hasattr(value, "dtype"):  # numpy scalar or array
        return json_safe(value.tolist())
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else float(value)
    return value


def dumps(value: Any, **kwargs: Any) -> str:
    """`json.dumps` of `json_safe(value)` with ``allow_nan=False``: always valid JSON.

    Args:
        value: what to write.
        **kwargs: passed to `json.dumps` (``indent``, ``ensure_ascii``, ``default``).

    Raises:
        TypeError: a value JSON cannot hold (and no `default` given).

    Example:
        >>> dumps({"mean_reward": float("nan"), "failed": 2})
        '{"mean_reward": null, "failed": 2}'
    """
    return json.dumps(json_safe(value), allow_nan=False, **kwargs)
