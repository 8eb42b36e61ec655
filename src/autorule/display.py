"""How figures and texts are shown to a person: percentages, and texts cut to a width.

Used by every place that prints or renders for reading (the command line, `rules show`,
the HTML report, calibration tables, error messages); files written for programs keep
their numbers as they are.
"""

from __future__ import annotations

from typing import Any


def percent(x: Any, digits: int = 0, missing: str = "-") -> str:
    """`x` (a fraction) as a percentage, or `missing` where there is no figure (None or NaN).

    Args:
        x: a fraction, None or NaN.
        digits: decimals shown.
        missing: what stands for no figure (e.g. "&ndash;" in HTML).

    Example:
        >>> percent(0.256), percent(0.256, 1), percent(None), percent(float("nan"), missing="&ndash;")
        ('26%', '25.6%', '-', '&ndash;')
    """
    return missing if x is None or x != x else f"{x:.{digits}%}"


def clip(text: str, width: int, *, ellipsis: str = "…") -> str:
    """`text` as it is, or its first characters and `ellipsis`, `width` characters in all.

    Args:
        text: any text.
        width: the most characters kept (the ellipsis included).
        ellipsis: what marks the cut.

    Example:
        >>> clip("The assistant's response should be brief.", 20), clip("short", 20)
        ("The assistant's res…", 'short')
        >>> clip(repr({"role": "user", "content": None}), 20, ellipsis="...")
        "{'role': 'user', ..."
    """
    return text if len(text) <= width else text[: width - len(ellipsis)] + ellipsis
