"""One run: its plain specification and result (`spec.py`), the lifecycle that turns its epoch
metrics into a best epoch, a pruning or stopping decision and an Optuna state (`lifecycle.py`),
the Lightning Trainer that drives it (`train.py`, `callbacks.py`), and what it writes as it
trains: its W&B run (`tracking.py`), its `metrics.csv` read back (`metrics.py`) and its console
line (`console.py`)."""
