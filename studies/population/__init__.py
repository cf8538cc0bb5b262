"""Populations in studies: K Optuna trials trained as one batched model in one Trainer."""
