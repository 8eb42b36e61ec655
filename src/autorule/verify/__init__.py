"""The rule verifier: (conversations, RuleSet) -> verdict matrix of P(satisfied)."""

from .verifier import Verdicts, Verifier, render_prefix

__all__ = ["Verdicts", "Verifier", "render_prefix"]
