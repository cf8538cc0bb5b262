"""The study loop: storages, the sampler and pruner, the exact trial budget across workers,
garbage collection between trials, and the checks before the first trial."""
