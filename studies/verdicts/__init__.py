"""Verdicts on a finished study: `confirm` (the best configurations retrained with new seeds)
and `ablate` (the best configuration without each regularizer), with scipy's intervals and
paired tests (`commands.confirm_study`, `commands.ablate_study`). See docs/verdicts.md."""
