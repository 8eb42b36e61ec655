"""Rescoring saved rollouts: read TRL's, verl's or autorule's rollout files and score them again.

`formats` reads the three layouts into `SavedRollout` items; `run` holds `rescore` (old and new
rewards side by side, Spearman's rho, counts). The package is named for the noun so the verb
`autorule.rescore` is not shadowed by a submodule of the same name.
"""

from autorule.rescoring.formats import ROLLOUT_FORMATS, RolloutReader, SavedRollout, prompt_group
from autorule.rescoring.run import RESCORE_CHUNK, RescoreResult, chunks, compare, rescore, takes_groups

__all__ = ["RESCORE_CHUNK", "ROLLOUT_FORMATS", "RescoreResult", "RolloutReader", "SavedRollout", "chunks", "compare", "prompt_group", "rescore", "takes_groups"]
