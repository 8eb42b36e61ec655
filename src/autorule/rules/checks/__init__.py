"""Rules a program decides: word, sentence and paragraph bounds, lists, code blocks, JSON,
headings, case, quotation, start and end phrases, keywords, language.

`registry` names the checkers (lm-eval's IFEval instruction checkers where one fits,
`ours` for the rest) and holds `CodeCheck`, the mapping a rule carries in rules.yaml;
`recognise` proposes that mapping from a rule's text; `ifeval` is the one import of lm-eval.
"""

from autorule.rules.checks.ifeval import MissingExtraError
from autorule.rules.checks.registry import CHECKERS, Checker, CodeCheck

__all__ = ["CHECKERS", "Checker", "CodeCheck", "MissingExtraError"]
