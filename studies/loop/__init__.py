"""A study as a whole: `run_study` (ask trials, hand them to the executor, until the budget is
met), the exact trial budget across workers, threads, garbage collection between rounds, the
checks before the first trial, and reading a stored study back (`read.py`)."""
