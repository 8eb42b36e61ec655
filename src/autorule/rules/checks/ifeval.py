"""lm-eval's IFEval instruction checkers, imported once, quietly and offline.

The one place autorule imports them: code-checked rules (`autorule.rules.checks`) and the
gold set of `autorule bench verifier-accuracy` both build their checkers here.
"""

from __future__ import annotations

import contextlib
import functools
import io
import logging
import re
from collections.abc import Callable

from autorule.errors import AutoruleError

IFEVAL = "lm-eval IFEval"


class MissingExtraError(AutoruleError, ImportError):
    """lm-eval's IFEval checkers (or what they import) are not installed; the message says how to install them.

    Args:
        missing: the package's import name.

    Example:
        >>> raise MissingExtraError("nltk")
        Traceback (most recent call last):
        ...
        autorule.rules.checks.ifeval.MissingExtraError: the IFEval checkers need lm-eval, langdetect, immutabledict and nltk (nltk is missing): pip install 'autorule[bench]'
    """

    def __init__(self, missing: str):
        super().__init__(f"the IFEval checkers need lm-eval, langdetect, immutabledict and nltk ({missing} is missing): pip install 'autorule[bench]'",
                         name=missing)


@functools.cache
def _modules():
    try:
        import langdetect
        import nltk
    except ImportError as e:
        raise MissingExtraError(e.name or str(e)) from e

    download = nltk.download
    nltk.download = lambda *a, **k: False  # its import fetches sentence data from the web: never at run time here
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            from lm_eval.tasks.ifeval import instructions_registry, instructions_util
    except ImportError as e:  # lm-eval itself, or immutabledict, which its checkers import
        raise MissingExtraError(e.name or str(e)) from e
    finally:
        nltk.download = download
    # it logs an error for replies with no letters (e.g. only dots) and answers False: expected here
    logging.getLogger("lm_eval.tasks.ifeval.instructions").setLevel(logging.CRITICAL)
    langdetect.DetectorFactory.seed = 0  # the language checker's detector is random unless seeded
    return instructions_registry, instructions_util


def registry() -> dict:
    """lm-eval's IFEval instruction registry (instruction id -> checker class).

    Raises:
        MissingExtraError: lm-eval or what it imports is not installed.

    Example:
        >>> "length_constraints:number_words" in registry()
        True
    """
    return _modules()[0].INSTRUCTION_DICT


def languages() -> dict[str, str]:
    """The languages IFEval's language checker knows: ISO 639-1 code -> English name.

    Example:
        >>> languages()["fr"]
        'French'
    """
    return dict(_modules()[1].LANGUAGE_CODES)


def checker(instruction_id: str, **kwargs) -> Callable[[str], bool]:
    """An IFEval instruction checker from lm-eval's registry, built with `kwargs` (its
    `build_description` parameters): text -> whether it follows the instruction.

    Args:
        instruction_id: the registry's id, e.g. "length_constraints:number_words";
        kwargs: the instruction's parameters, e.g. num_words=60, relation="less than".

    Raises:
        MissingExtraError: lm-eval is not installed. KeyError: an id the registry lacks.

    Example:
        >>> under_5 = checker("length_constraints:number_words", num_words=5, relation="less than")
        >>> under_5("one two three four"), under_5("one two three four five")
        (True, False)
    """
    check = registry()[instruction_id](instruction_id)
    check.build_description(**kwargs)
    return lambda text: bool(check.check_following(text))


def count_words(text: str) -> int:
    """Words as IFEval counts them (nltk's RegexpTokenizer(r"\\w+"): runs of letters, digits and underscores).

    The same count without importing lm-eval: our range checker uses it, and a test holds it
    equal to lm-eval's own `instructions_util.count_words`.

    Example:
        >>> count_words("Don't panic: it's 42.")
        6
    """
    return len(re.findall(r"\w+", text))
