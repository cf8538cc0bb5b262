"""What a finished study shows: its console summary, the report, exports, the W&B study run and
the workspace. Above the verdicts, whose tables and plots it shows; below scaling and the
experiments, which show it when a run ends."""
