"""The rule set and what a person does with it.

Modules: `ruleset` (Rule, RuleSet: YAML, provenance, weights, statistics), `lint` (flags
on rules that are fragments, compound, vague, near-duplicates...), `diff` (two rule sets
matched), `show` (a rule with its source pairs), `export` (Markdown, constitution, judge
prompt, JSON; and import), `embed` (the sentence embedder the merge, lint and diff share).
"""

from autorule.rules.ruleset import CandidateRef, LintFlag, Rule, RuleSet, RulesFileError, normalise_rule, plain_rule, rule_id

__all__ = ["CandidateRef", "LintFlag", "Rule", "RuleSet", "RulesFileError", "normalise_rule", "plain_rule", "rule_id"]
