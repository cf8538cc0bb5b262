"""Scaling a study out: N worker processes on one storage, and DDP ranks for one trial."""
