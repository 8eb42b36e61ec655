"""Online rule refresh during GRPO: new rules from the rollouts where the reward model and the
rules disagree, kept only when they agree with held-out preferences; rules with no signal left retired.

Every `every` steps (`RuleRefreshCallback`, `autorule train --refresh-every N`):

1. **Disagreements.** Among the completions of one prompt (a GRPO group) scored since the last
   refresh, the pair where the reward model and the rule reward disagree most: the RM prefers
   one, the rules the other. A pair's disagreement is the product of its two margins
   (RM margin x rule-reward margin), so rescaling either reward does not change which pairs
   are picked. One pair per group (the most disagreeing; the earlier pair on a tie), then the
   `pairs_per_refresh` groups whose pair disagrees most (the earlier group on a tie).
2. **Extraction.** autorule's own stages (reasoning 010, candidates 020, merge 030, lint) run on
   these pairs with the extraction model (`autorule.extraction.run.run_extract`), their
   artefacts written under the refresh's folder.
3. **Candidates** are dropped when the linter flags them as naming a response, restating the
   extraction prompt or near-duplicating another candidate; when they are already active or a
   near-duplicate (cosine similarity >= `near_duplicate`) of an active rule; when no held-out
   pair tells their sides apart; or when their held-out agreement (validation's own
   `rule_stats`) is below the weakest active rule's (0.5 when no active rule has one).
4. **Retirement.** An active rule that every judged completion of the window passed, or every
   one failed, gives GRPO no signal (no difference within any group): it is retired once at
   least `retire_min_rollouts` completions judged it. Essential (veto) rules are never retired.
5. **Cap.** Past `max_active_rules`, the rules with the lowest held-out agreement go (no
   agreement counts lowest; on a tie an active rule stays before a new one; essential rules
   always stay). A refresh never leaves the set empty: it would hold its retirements back.

Why the RM-preferred completion is shown as *rejected*: the reasoning model is told which side
won and explains why, and rules are drawn from that explanation. The refresh exists to find the
loopholes the reward model pays for, so the completion the RM prefers while the rules do not is
presented as the loser: the explanation then names what is wrong with it, which is what a new
rule must penalise. Whether that reading is right is not assumed: a candidate is kept only when
held-out human preferences agree with it at least as well as with the weakest active rule (where
the RM was right and the rules wrong, its candidates disagree with the held-out pairs and go).

Each refresh is recorded (`write_record`): ``refresh/step-N.json`` in the run folder (the
step, the disagreement pairs with their completions and rewards, the rules added with their
sources and validation figures, those retired and why, the candidates dropped and why, every
count) and ``refresh/rules-step-N.yaml`` (the rule set after it).
"""

from autorule.train.refresh.callback import (
    RefreshError,
    RuleRefreshHook,
    load_refresh_pairs,
    refresh_callbacks,
)
from autorule.train.refresh.disagreements import DisagreementPair, disagreement_pairs
from autorule.train.refresh.records import RECORDS, read_records, write_record
from autorule.train.refresh.refresher import RefreshResult, RuleChange, RuleRefresher

__all__ = ["RECORDS", "DisagreementPair", "RefreshError", "RefreshResult", "RuleChange", "RuleRefreshCallback", "RuleRefreshHook", "RuleRefresher",
           "disagreement_pairs", "load_refresh_pairs", "read_records", "refresh_callbacks", "write_record"]


def __getattr__(name: str):
    if name == "RuleRefreshCallback":  # a transformers TrainerCallback: transformers is imported only when it is asked for
        from autorule.train.refresh.callback import _callback_class

        return _callback_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
