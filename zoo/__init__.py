"""sb3-mb's zoo: rl-baselines3-zoo's command line (train, ...) for every sb3-mb algorithm."""
