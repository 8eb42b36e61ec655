"""AutoRule's extraction stages: reason (010), extract candidate rules (020), merge (030)."""

from __future__ import annotations

from pathlib import Path
from string import Template

PROMPTS = Path(__file__).parent / "prompts"


def prompt(name: str) -> tuple[Template, str]:
    """A prompt template and its version (a hash of its text, part of every cache key)."""
    import hashlib

    text = (PROMPTS / f"{name}.txt").read_text(encoding="utf-8")
    return Template(text), f"{name}@{hashlib.sha256(text.encode()).hexdigest()[:8]}"
