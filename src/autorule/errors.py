"""Readable text for validation errors in user files (rules, training configs)."""

from __future__ import annotations

from pydantic import ValidationError


def describe(e: ValidationError) -> str:
    """'rules.0.text: rule text is empty; max_steps: ...' (pydantic's own wording, minus its prefixes)."""
    problems = []
    for err in e.errors():
        where = ".".join(str(x) for x in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
    return "; ".join(problems)
