"""The rule verifier: (conversations, RuleSet) -> verdict matrix of P(satisfied)."""

from autorule.verifier.verifier import UnparsedVerdicts, Verdicts, Verifier, render_prefix

__all__ = ["UnparsedVerdicts", "Verdicts", "Verifier", "render_prefix"]
