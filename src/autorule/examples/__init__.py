"""Sample data shipped with the package (works from a wheel install, outside any checkout)."""

from pathlib import Path

SAMPLE_PAIRS = Path(__file__).with_name("pairs.jsonl")
"""24 sample preference pairs (advice, code, facts, refusals) in the generic pairs format.

Example:
    >>> from autorule import load_pairs
    >>> len(load_pairs(SAMPLE_PAIRS))
    24
"""
