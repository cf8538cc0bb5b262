"""A study's configuration: the YAML schema, its validation against the registries, and the
search space it defines (`suggest`, the only place a study calls `trial.suggest_*`)."""
