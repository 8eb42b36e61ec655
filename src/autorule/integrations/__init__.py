"""Adapters for the trainers people already use: TRL, verl, OpenRLHF (reward server).

One contract: scorers are built by `autorule.reward.build_scorer` (TRL's and verl's from their
settings, the server's by `autorule serve`); each adapter gets one `autorule.reward.SampleReward`
per response from `RewardScorer.samples` and maps it to its
trainer's shape (`trl`: a float or None; `verl`: a dict; `openrlhf`: rewards, scores and
extra_logs). `batching` gathers concurrent requests into one verifier pass (verl's reward
manager, the OpenRLHF server); `conversation` reads trainers' prompt and completion shapes;
`templates` reads chat templates back into turns.
"""
