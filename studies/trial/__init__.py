"""One trial: a fresh Lightning Trainer trained with sampled parameters, its callbacks
(pruning, progress, Ctrl-C at batch ends) and the Optuna objective around it."""
