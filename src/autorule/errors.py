"""autorule's errors and the exit status each one means, in one place.

Every error a person can act on derives from `AutoruleError` and carries the exit status
the command line ends with (`exit_code`): bad input 2, a run in which every item failed 3,
anything else (a model or server that failed for good) 1. The classes live beside the code
that raises them (`DataError` in `autorule.data`, `LLMError` in `autorule.llm`, ...);
`exit_code` maps any error to its status for `autorule.cli`.

Also: readable text for validation errors in user files (rules, training configs).
"""

from __future__ import annotations

from pydantic import ValidationError

# exit statuses of the `autorule` command (argparse's own usage errors are 2 as well)
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
# `score` / `validate`: every response failed (the verifier's server refused or failed each one)
EXIT_ALL_FAILED = 3
EXIT_INTERRUPTED = 130


class AutoruleError(Exception):
    """The base of autorule's errors: the message says what failed and, where known, how to fix it.

    Args:
        message: what failed.

    Example:
        >>> e = AutoruleError("the server failed")
        >>> str(e), e.exit_code
        ('the server failed', 1)
    """

    exit_code = EXIT_FAILED


class InputError(AutoruleError):
    """Input that cannot be used: a data, rules or config file, a run directory, a message.

    Args:
        message: names the input (file, row, key) and what is wrong.

    Example:
        >>> InputError("rules.yaml: not a rules file").exit_code
        2
    """

    exit_code = EXIT_BAD_INPUT


class AllFailed(AutoruleError):
    """Every response of a run failed, so nothing was computed; the most common reasons are named.

    Args:
        responses: how many responses failed (all of them).
        reasons: the most common reasons, each with its count (most common first).

    Example:
        >>> e = AllFailed(2, {"the server refused the request (400)": 2})
        >>> print(e)
        all 2 responses failed; no reward was computed. Reasons:
          2 x the server refused the request (400)
        >>> e.exit_code
        3
    """

    exit_code = EXIT_ALL_FAILED

    def __init__(self, responses: int, reasons: dict[str, int]):
        self.responses, self.reasons = responses, reasons
        lines = [f"all {responses} responses failed; no reward was computed. Reasons:", *(f"  {n} x {reason}" for reason, n in reasons.items())]
        super().__init__("\n".join(lines))


def exit_code(e: BaseException) -> int | None:
    """The exit status for an error the command line reports in one message, or None for one it
    does not expect (a bug, shown with its traceback).

    A plain ValueError is a value refused deep in a library call: status 1, as a failed call.

    Args:
        e: the error.

    Example:
        >>> exit_code(InputError("x")), exit_code(ValueError("x")), exit_code(KeyboardInterrupt()), exit_code(KeyError("x"))
        (2, 1, 130, None)
    """
    if isinstance(e, AutoruleError):
        return e.exit_code
    if isinstance(e, ValueError):
        return EXIT_FAILED
    if isinstance(e, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return None


def describe(e: ValidationError) -> str:
    """A validation error as one line: 'rules.0.text: rule text is empty; max_steps: ...' (pydantic's own wording, minus its prefixes).

    Args:
        e: pydantic's error.

    Example:
        >>> from pydantic import BaseModel
        >>> class Config(BaseModel):
        ...     max_steps: int
        >>> try:
        ...     Config(max_steps="many")
        ... except ValidationError as e:
        ...     print(describe(e))
        max_steps: Input should be a valid integer, unable to parse string as an integer
    """
    problems = []
    for err in e.errors():
        where = ".".join(str(x) for x in err["loc"])
        message = err["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if where else message)
    return "; ".join(problems)
