"""Command-line settings checked when they are parsed, before any file or folder is made.

Every numeric flag names its allowed range; model specs are checked for their form. A bad
value exits with status 2 and a message naming the flag, the value and what is allowed.
"""

from __future__ import annotations

import argparse


def whole(low: int, high: int | None = None):
    """An argparse type: a whole number in [low, high].

    Args:
        low: the smallest value allowed.
        high: the largest value allowed (None: no limit).

    Example:
        >>> whole(1)("3")
        3
        >>> whole(1)("0")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: 0 is out of range: must be at least 1
    """
    return _bounded(int, "a whole number", low, high, above=False)


def number(low: float, high: float | None = None, *, above: bool = False):
    """An argparse type: a number in [low, high] (or (low, high] with `above`).

    Args:
        low: the smallest value allowed (excluded with `above`).
        high: the largest value allowed (None: no limit).
        above: the value must be greater than `low`.

    Example:
        >>> number(0, 1)("0.25")
        0.25
        >>> number(0, above=True)("0")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: 0.0 is out of range: must be greater than 0
    """
    return _bounded(float, "a number", low, high, above=above)


def _bounded(convert, kind: str, low, high, *, above: bool):
    """The parser `whole` and `number` share: convert, then check the range (NaN is never in it)."""

    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {kind}") from None
        if value != value or (value <= low if above else value < low) or (high is not None and value > high):
            raise argparse.ArgumentTypeError(f"{value} is out of range: must be {_range(low, high, above)}")
        return value

    parse.__name__ = kind.removeprefix("a ")  # argparse names the type in its own messages
    return parse


def _range(low, high, above: bool = False) -> str:
    if high is None:
        return f"greater than {low:g}" if above else f"at least {low:g}"
    return f"{'greater than' if above else 'from'} {low:g} {'and at most' if above else 'to'} {high:g}"


def model_spec(text: str) -> str:
    """An argparse type: a model spec of a known form (the model itself is loaded later).

    Args:
        text: the spec.

    Example:
        >>> model_spec("openai:Qwen/Qwen3-8B@http://127.0.0.1:8000/v1")
        'openai:Qwen/Qwen3-8B@http://127.0.0.1:8000/v1'
        >>> model_spec("openai:foo")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: 'openai:foo' has no server address: write openai:MODEL@BASE_URL, e.g. openai:Qwen/Qwen3-8B@http://127.0.0.1:8000/v1
    """
    from autorule.llm.specs import SpecError, parse_spec

    try:
        parse_spec(text)  # vllm: parses: load_llm refuses it later, with advice
    except SpecError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


def prices(text: str) -> tuple[float, float]:
    """An argparse type: input and output prices per million tokens, "IN,OUT".

    Args:
        text: two non-negative numbers separated by a comma.

    Example:
        >>> prices("0.15,0.6")
        (0.15, 0.6)
    """
    parts = text.split(",")
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 2 or min(values) < 0:
        raise argparse.ArgumentTypeError(f"{text!r}: write two prices per million tokens, input and output, e.g. 0.15,0.6")
    return values  # type: ignore[return-value]


class HelpFormatter(argparse.HelpFormatter):
    """Shows each option's default in --help, unless its help text already does or it has none."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if "%(default)" in text or action.default in (None, False, argparse.SUPPRESS) or not action.option_strings:
            return text
        return text + " (default: %(default)s)"


class Parser(argparse.ArgumentParser):
    """autorule's argument parser: no abbreviated flags (--rule is not --rules), defaults shown."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
