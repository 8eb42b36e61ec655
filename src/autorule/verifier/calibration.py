"""How well a verifier judges rules whose truth is known: accuracy, balanced accuracy, AUC,
a calibration curve with expected calibration error, and the P(Yes) threshold that
separates Yes from No best. Shared by `autorule calibrate` (a user's labelled checks) and
`autorule bench verifier-accuracy` (checks labelled by program).

A gold file is JSON lines, one labelled check per line::

    {"response": "Sure! 1. ...", "rule": "The response should contain a numbered list.", "label": true}

with an optional ``prompt`` (text, or a list of chat messages) before the response, and
optional ``family`` (checks are also scored per family) and ``labeller`` fields.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from autorule.data import DataError, Message
from autorule.display import percent

_TRUE = {"yes", "true", "1", "y", "pass", "satisfied"}
_FALSE = {"no", "false", "0", "n", "fail", "violated"}


@dataclass
class Check:
    """One labelled check: does `response` (after `prompt`) follow `rule`? `label` is the truth.

    Args:
        prompt: the conversation before the response (messages; may be empty);
        response: the text judged; rule: the rule's text; label: whether it follows it;
        family: a group to score separately; labeller: who or what decided the label.
    """

    prompt: list[Message]
    response: str
    rule: str
    label: bool
    family: str = ""
    labeller: str = ""

    def to_dict(self) -> dict:
        return {"prompt": [m.model_dump() for m in self.prompt], "response": self.response, "rule": self.rule, "label": self.label,
                "family": self.family, "labeller": self.labeller}

    @property
    def conversation_key(self) -> str:
        """The judged conversation (prompt and response) as text: checks with one key are one reply, sharing a verifier prefix."""
        return json.dumps([[m.model_dump() for m in self.prompt], self.response])


def _label(value, path: Path, line: int) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise DataError(str(path), f"'label' is {value!r}; expected yes/no, true/false or 1/0", line, "line")


def load_gold(path: str | Path) -> list[Check]:
    """Labelled checks from a JSON-lines file (``.gz`` too); errors name the file and line.

    Args:
        path: the gold file (see the module's docstring for its fields).

    Example:
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "gold.jsonl"
        >>> _ = p.write_text('{"response": "HELLO", "rule": "The response should be in capitals.", "label": "yes"}\\n')
        >>> [(c.response, c.label) for c in load_gold(p)]
        [('HELLO', True)]
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(str(path), "no such gold file")
    checks = []
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(str(path), f"not JSON: {e}", n, "line") from None
            if not isinstance(row, dict):
                raise DataError(str(path), "expected an object with response, rule and label", n, "line")
            missing = [k for k in ("response", "rule", "label") if k not in row]
            if missing:
                raise DataError(str(path), f"missing {', '.join(missing)} (a gold line needs response, rule and label)", n, "line")
            if not isinstance(row["response"], str) or not isinstance(row["rule"], str) or not row["rule"].strip():
                raise DataError(str(path), "'response' and 'rule' must be text, and the rule not empty", n, "line")
            prompt = row.get("prompt") or []
            try:
                messages = [Message(role="user", content=prompt)] if isinstance(prompt, str) else [Message.model_validate(m) for m in prompt]
            except Exception as e:  # noqa: BLE001 - pydantic's message, with our location
                raise DataError(str(path), f"'prompt' must be text or a list of chat messages: {e}", n, "line") from None
            checks.append(Check(messages, row["response"], row["rule"].strip(), _label(row["label"], path, n), str(row.get("family", "")),
                                str(row.get("labeller", ""))))
    if not checks:
        raise DataError(str(path), "no labelled checks in the file")
    return checks


def judge(checks: list[Check], llm, *, style: str = "default", max_input_tokens: int | None = None, progress: bool = False) -> np.ndarray:
    """The verifier's P(Yes) for every check, with the verifier's own prompt. Checks of one
    response share its prefix, as in training (NaN where no Yes/No was readable).

    Args:
        checks: labelled checks; llm: the verifier's LLM; style, max_input_tokens: as for `Verifier`;
        progress: show a progress bar.

    Example:
        >>> from autorule.testing.fake_llm import FakeLLM
        >>> judge([Check([], "Hi", "The response should be short.", True)], FakeLLM(p_yes=0.7)).tolist()
        [0.7]
    """
    from autorule.rules import RuleSet, rule_id
    from autorule.verifier import Verifier
    from autorule.verifier.verifier import QUESTIONS

    # one rule per id: texts that differ only in case or punctuation share an id, and a RuleSet refuses repeated ids
    rules = RuleSet.from_texts(list({rule_id(c.rule): c.rule for c in checks}.values()))
    verifier = Verifier(llm, rules, style=style, max_input_tokens=max_input_tokens)
    groups: dict[str, list[int]] = {}
    for i, c in enumerate(checks):
        groups.setdefault(c.conversation_key, []).append(i)
    items, order = [], []
    for indices in groups.values():
        first = checks[indices[0]]
        conversation = [*first.prompt, Message(role="assistant", content=first.response)]
        items.append((verifier.prefix(conversation), [QUESTIONS[style].substitute(rule=checks[i].rule) for i in indices]))
        order.append(indices)
    from tqdm.auto import tqdm

    with tqdm(total=len(items), desc="judging gold checks", unit="resp", disable=not progress) as bar:
        rows = llm.score_yes_no_batch(items, on_item=lambda _: bar.update(1))
    p = np.full(len(checks), np.nan)
    for indices, row in zip(order, rows):
        p[indices] = row
    return p


@dataclass
class Calibration:
    """A verifier's quality on labelled checks.

    Args:
        n: checks with a readable verdict; unparsed: checks without one (left out);
        positives: of the n, those whose truth is Yes; threshold: the P(Yes) cut used;
        accuracy, balanced_accuracy: at that cut; auc: ROC AUC of P(Yes) (None with one class);
        ece: expected calibration error over `bins` (equal-width in P(Yes));
        best_threshold: the cut with the highest balanced accuracy, and that accuracy;
        bins: per bin, its range, count, mean P(Yes) and the share truly Yes.
    """

    n: int
    unparsed: int
    positives: int
    threshold: float
    accuracy: float | None
    balanced_accuracy: float | None
    auc: float | None
    ece: float | None
    best_threshold: float | None
    best_balanced_accuracy: float | None
    bins: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict:
        return asdict(self)


def _balanced(labels: np.ndarray, predicted: np.ndarray) -> float | None:
    rates = [float((predicted[labels == c] == c).mean()) for c in (True, False) if (labels == c).any()]
    return float(np.mean(rates)) if rates else None


def calibrate(labels: Iterable[bool], p_yes: Iterable[float], threshold: float = 0.5, bins: int = 10) -> Calibration:
    """Score P(Yes) against the truth.

    Balanced accuracy is the mean of the Yes and No recall (with one class present, that
    class's recall). The best threshold is searched among the observed P(Yes) values
    (ties go to the one nearest 0.5).

    Args:
        labels: the truth per check; p_yes: the verifier's P(Yes) (NaN = unreadable);
        threshold: the cut for accuracy; bins: calibration bins.

    Example:
        >>> c = calibrate([True, True, False, False], [0.9, 0.4, 0.3, 0.6])
        >>> c.accuracy, c.balanced_accuracy, c.auc, round(c.ece, 3), c.best_threshold, c.best_balanced_accuracy
        (0.5, 0.5, 0.75, 0.4, 0.4, 0.75)
    """
    labels = np.asarray(list(labels), dtype=bool)
    p = np.asarray(list(p_yes), dtype=float)
    ok = ~np.isnan(p)
    y, p = labels[ok], p[ok]
    n = int(ok.sum())
    if n == 0:
        return Calibration(0, int((~ok).sum()), 0, threshold, None, None, None, None, None, None)
    from sklearn.metrics import roc_auc_score

    predicted = p >= threshold
    auc = float(roc_auc_score(y, p)) if 0 < y.sum() < n else None
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        in_bin = which == b
        if in_bin.any():
            mean_p, share = float(p[in_bin].mean()), float(y[in_bin].mean())
            ece += in_bin.sum() / n * abs(mean_p - share)
            rows.append({"low": round(float(edges[b]), 3), "high": round(float(edges[b + 1]), 3), "n": int(in_bin.sum()),
                         "mean_p_yes": round(mean_p, 4), "share_yes": round(share, 4)})
    best, best_score = None, -1.0
    for t in sorted(set(p.tolist()), key=lambda t: abs(t - 0.5)):
        score = _balanced(y, p >= t)
        if score is not None and score > best_score + 1e-12:
            best, best_score = t, score
    return Calibration(n, int((~ok).sum()), int(y.sum()), threshold, float((predicted == y).mean()), _balanced(y, predicted), auc,
                       float(ece), best, best_score, rows)


def render(overall: Calibration, families: dict[str, Calibration] | None = None, labellers: dict[str, str] | None = None) -> str:
    """A calibration (and one per family) as text: the table `calibrate` and the benchmark print.

    Args:
        overall: over all checks; families: per family; labellers: family -> who labelled it.
    """
    def pct(x):
        return percent(x, 1)

    def num(x):
        return "-" if x is None else f"{x:.3f}"

    head = f"{'family':<20} {'checks':>6} {'yes':>5} {'acc':>6} {'bal.acc':>7} {'AUC':>6} {'ECE':>6} {'best cut':>8} {'bal.acc@cut':>11}  labeller"
    rows = [head]
    for name, c in [*(families or {}).items(), ("all", overall)]:
        rows.append(f"{name:<20} {c.n:>6} {c.positives:>5} {pct(c.accuracy):>6} {pct(c.balanced_accuracy):>7} {num(c.auc):>6} {num(c.ece):>6} "
                     f"{num(c.best_threshold):>8} {pct(c.best_balanced_accuracy):>11}  {(labellers or {}).get(name, '')}".rstrip())
    if overall.unparsed:
        rows.append(f"{overall.unparsed} checks had no readable Yes/No and are left out")
    rows.append("calibration (P(Yes) bin: checks, mean P(Yes) -> share truly Yes): "
                + "; ".join(f"{b['low']:.1f}-{b['high']:.1f}: {b['n']}, {b['mean_p_yes']:.2f} -> {b['share_yes']:.2f}" for b in overall.bins))
    if overall.best_threshold is not None:
        rows.append(f"suggested threshold: P(Yes) >= {overall.best_threshold:.3f} (balanced accuracy {pct(overall.best_balanced_accuracy)}, "
                    f"at 0.5: {pct(overall.balanced_accuracy)}); use it as --threshold")
    return "\n".join(rows)


def by_family(checks: list[Check], p_yes: np.ndarray, threshold: float = 0.5) -> tuple[Calibration, dict[str, Calibration]]:
    """`calibrate` over all checks, and per family (families in first-seen order).

    Args:
        checks: labelled checks; p_yes: their P(Yes), in order; threshold: the cut.
    """
    labels = np.array([c.label for c in checks])
    families: dict[str, list[int]] = {}
    for i, c in enumerate(checks):
        if c.family:
            families.setdefault(c.family, []).append(i)
    return calibrate(labels, p_yes, threshold), {f: calibrate(labels[idx], p_yes[idx], threshold) for f, idx in families.items()}
