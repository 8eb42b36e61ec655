"""The reward-hacking monitor: per-step RM reward, rule reward, per-rule pass rates,
length, reward-length correlations and a held-out score, to a JSONL file and TRL's loggers.

It warns when the RM reward rises while the rule reward or the held-out score falls over
the last `window` steps: the policy is pleasing the reward model in a way the rules (or
the held-out judge) do not endorse; and when the trained reward rises while a gold monitor
(a second rule set or verifier, logged, never rewarded) falls: the policy is overfitting
the rules it is trained on (Rubric Dropout's finding).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
from rich.console import Console

from autorule import jsonsafe

console = Console(stderr=True, soft_wrap=True)


def _corr(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def _slope(values: list[float]) -> float:
    return float(np.polyfit(np.arange(len(values)), values, 1)[0]) if len(values) >= 2 else 0.0


class RewardMonitor:
    """Per-step reward components, trends and reward-hacking warnings, written to `path` (JSONL).

    `resume_step`: a run resumed from the checkpoint of this step keeps its rows up to it
    and drops later ones (those steps are trained again); None starts the file afresh.
    """

    def __init__(self, path: Path, window: int = 6, resume_step: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.window = window
        self.pending: dict = {}
        self.history: list[dict] = []
        self.warnings: list[dict] = []
        if resume_step is not None and self.path.is_file():  # a resumed run continues its file
            rows = [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]
            self.history = [r for r in rows if r["step"] <= resume_step]
        self.path.write_text("".join(jsonsafe.dumps(r) + "\n" for r in self.history), encoding="utf-8")

    def record_batch(self, *, rm: np.ndarray | None, rule: np.ndarray, total: np.ndarray, lengths: np.ndarray, pass_rates: dict[str, float], log_metric: Callable | None,
                     seconds: dict[str, float] | None = None, vetoed: np.ndarray | None = None, dropped: np.ndarray | None = None,
                     gold: np.ndarray | None = None, active_rules: int | None = None) -> None:
        """Called by the reward function with one generation batch's components (and the time they took).

        Args:
            rm, rule, total, lengths: shape (n,) per completion (rm None without an RM).
            pass_rates: per rule id, the batch's pass rate.
            log_metric: TRL's metric logger (None: not logged there).
            seconds: time spent on "rules" and "rm".
            vetoed: shape (n,) bool, completions an essential rule vetoed.
            dropped: shape (n,), rules rule dropout left out per completion.
            gold: shape (n,), the gold monitor's rule reward (never rewarded).
            active_rules: the size of the rule set that scored the batch.
        """
        p = self.pending
        if vetoed is not None:
            p["vetoed"] = p.get("vetoed", 0) + int(np.sum(vetoed))
        if dropped is not None:
            p.setdefault("dropped", []).extend(np.asarray(dropped, dtype=float).tolist())
        if gold is not None:
            p.setdefault("gold", []).extend(np.asarray(gold, dtype=float).tolist())
        if active_rules is not None:
            p["active_rules"] = int(active_rules)
        for part, value in (seconds or {}).items():
            p.setdefault("seconds", {}).setdefault(part, 0.0)
            p["seconds"][part] += value
        for key, values in (("rm", rm), ("rule", rule), ("total", total), ("length", lengths)):
            if values is not None:
                p.setdefault(key, []).extend(np.asarray(values, dtype=float).tolist())
        for rid, rate in pass_rates.items():
            if not math.isnan(rate):
                p.setdefault("pass", {}).setdefault(rid, []).append(rate)
        if log_metric is not None:
            if gold is not None:
                log_metric("monitor/gold_reward", float(np.nanmean(gold)) if not np.isnan(gold).all() else float("nan"))
            if rm is not None:
                log_metric("monitor/rm_reward", float(np.mean(rm)))
            log_metric("monitor/rule_reward", float(np.mean(rule)))
            log_metric("monitor/length", float(np.mean(lengths)))
            for rid, rate in pass_rates.items():
                if not math.isnan(rate):
                    log_metric(f"monitor/pass_rate/{rid}", rate)

    def end_step(self, step: int, heldout: float | None = None) -> dict:
        p, self.pending = self.pending, {}
        lengths = np.array(p.get("length", []))
        row: dict = {"step": step}
        for key in ("rm", "rule", "total"):
            if p.get(key):
                row[f"{key}_reward"] = float(np.mean(p[key]))
        row["length"] = float(lengths.mean()) if len(lengths) else None
        row["pass_rates"] = {rid: float(np.mean(v)) for rid, v in p.get("pass", {}).items()}
        if p.get("rm"):
            row["corr_rm_length"] = _corr(np.array(p["rm"]), lengths)
        if p.get("rule"):
            row["corr_rule_length"] = _corr(np.array(p["rule"]), lengths)
        if heldout is not None:
            row["heldout_score"] = heldout
        gold = np.array(p.get("gold", []), dtype=float)
        if len(gold) and not np.isnan(gold).all():
            row["gold_reward"] = float(np.nanmean(gold))  # logged, never rewarded
        if "vetoed" in p:
            row["vetoed"] = p["vetoed"]
        if p.get("dropped"):
            row["dropped_rules"] = float(np.mean(p["dropped"]))
        if "active_rules" in p:
            row["active_rules"] = p["active_rules"]
        if p.get("seconds"):
            row["reward_seconds"] = p["seconds"]  # where the reward's time went this step: rules, rm
        row["warnings"] = self._check(row)
        self.history.append(row)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(jsonsafe.dumps(row) + "\n")
        return row

    def _check(self, row: dict) -> list[str]:
        recent = (self.history + [row])[-self.window :]
        out = []
        rm = [h["rm_reward"] for h in recent if "rm_reward" in h]
        rule = [h["rule_reward"] for h in recent if "rule_reward" in h]
        held = [h["heldout_score"] for h in recent if "heldout_score" in h]
        total = [h["total_reward"] for h in recent if "total_reward" in h]
        gold = [h["gold_reward"] for h in recent if "gold_reward" in h]
        if len(total) >= self.window and len(gold) >= self.window and _slope(total) > 0 and _slope(gold) < 0:
            out.append(f"trained reward rising ({_slope(total):+.3f}/step) while the gold monitor falls ({_slope(gold):+.3f}/step) "
                       f"over {self.window} steps: the policy may be overfitting the rules it is trained on")
        if len(rm) >= self.window and _slope(rm) > 0:
            if len(rule) >= self.window and _slope(rule) < 0:
                out.append(f"RM reward rising ({_slope(rm):+.3f}/step) while rule reward falls ({_slope(rule):+.3f}/step) over {self.window} steps: possible reward hacking")
            if len(held) >= 2 and held[-1] < held[0]:
                out.append(f"RM reward rising while the held-out score fell from {held[0]:.3f} to {held[-1]:.3f}: possible reward hacking")
        for message in out:
            console.print(f"[yellow]monitor, step {row['step']}:[/yellow] {message}")
            self.warnings.append({"step": row["step"], "message": message})
        return out
