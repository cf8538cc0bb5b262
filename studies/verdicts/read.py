"""A study's verdicts (`regzoo confirm`, `regzoo ablate`; docs/verdicts.md) as the report and the
W&B study run show them: read from the study's companion in the same storage."""

from __future__ import annotations

from dataclasses import dataclass

import optuna

from regzoo.studies.verdicts.ablate import Ablation, read_ablation
from regzoo.studies.verdicts.confirm import Confirmation, read_confirmation
from regzoo.studies.verdicts.stats import Summary
from regzoo.studies.verdicts.store import ABLATE_ATTR, CONFIRM_ATTR, load_companion
from regzoo.studies.verdicts.tables import METRIC


@dataclass(frozen=True)
class Verdicts:
    """The study's last finished confirmation and ablation (None: never run)."""

    confirmation: Confirmation | None = None
    ablation: Ablation | None = None

    def confirmed(self, metric: str = METRIC) -> Summary | None:
        """`metric` over the seeds of the confirmed (first) configuration."""
        c = self.confirmation
        return c.candidates[0].summary(metric, c.seeds) if c and c.candidates else None


def read_verdicts(study: optuna.Study, storage: str) -> Verdicts:
    """The verdicts recorded on `study`; none without a storage URL to find the companion in."""
    asked = CONFIRM_ATTR in study.user_attrs or ABLATE_ATTR in study.user_attrs
    if not storage or not asked:  # a study without verdicts never opens the storage again
        return Verdicts()
    companion = load_companion(study, storage)
    return Verdicts(read_confirmation(study, companion), read_ablation(study, companion))
