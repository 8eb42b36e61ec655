"""A learned reward model (any Hugging Face sequence-classification model) as a scalar reward."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from autorule.data import Message
from autorule.data.messages import alternating_turns

RM_STATS_FILE = "autorule_rm.json"


class RewardModel:
    """Any Hugging Face sequence-classification model as a scalar reward.

    If the model directory holds `autorule_rm.json` (written by `autorule train-rm`),
    scores are normalised with its mean and std from the training data.

    Args:
        path: a Hugging Face sequence-classification model directory.
        device: "cuda" or "cpu" (default: cuda when available).
        batch_size: conversations per forward pass.
        max_length: tokens kept per conversation (cut from the left: the response stays).

    Example:
        >>> RewardModel("/no/such/model")
        Traceback (most recent call last):
        ...
        ValueError: cannot load reward model '/no/such/model': ...
    """

    def __init__(self, path: str, *, device: str | None = None, batch_size: int = 8, max_length: int = 2048):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.torch = torch
        self.path = path
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForSequenceClassification.from_pretrained(path).to(self.device).eval()
        except OSError as e:
            raise ValueError(f"cannot load reward model {path!r}: {e}") from e
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.batch_size, self.max_length = batch_size, max_length
        stats_file = Path(path) / RM_STATS_FILE
        stats = json.loads(stats_file.read_text()) if stats_file.is_file() else {}
        self.mean, self.std = float(stats.get("mean", 0.0)), float(stats.get("std", 1.0)) or 1.0

    def _text(self, messages: list[Message]) -> str:
        dicts = [m.model_dump() for m in messages]
        if self.tokenizer.chat_template:
            try:
                return self.tokenizer.apply_chat_template(dicts, tokenize=False)
            except Exception as e:  # noqa: BLE001 - a template that refuses a role (tool, system) or non-alternating turns
                if not getattr(self, "_folded_warned", False):
                    self._folded_warned = True
                    logging.getLogger("autorule").warning("the reward model's chat template refused a conversation (%s); such conversations "
                                                          "are given to it as alternating user/assistant turns", e)
                return self.tokenizer.apply_chat_template(alternating_turns(messages), tokenize=False)
        return "\n\n".join(f"{m['role']}: {m['content']}" for m in dicts)

    def score(self, conversations: list[list[Message]], normalise: bool = True) -> np.ndarray:
        torch = self.torch
        self.tokenizer.truncation_side = "left"  # keep the response; the RM judges it
        out = []
        for start in range(0, len(conversations), self.batch_size):
            texts = [self._text(c) for c in conversations[start : start + self.batch_size]]
            enc = self.tokenizer(texts, return_tensors="pt", padding=True, truncation=True, max_length=self.max_length, add_special_tokens=False).to(self.device)
            with torch.inference_mode():
                out.extend(self.model(**enc).logits[:, 0].float().tolist())
        scores = np.array(out)
        return (scores - self.mean) / self.std if normalise else scores


def word_counts(texts: list[str]) -> np.ndarray:
    return np.array([len(t.split()) for t in texts], dtype=float)
