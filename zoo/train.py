"""``python -m zoo.train --algo mbpo --env Pendulum-v1``: rl-zoo3's ``train`` with sb3-mb's algorithms.

Builds on rl_zoo3 rather than rewriting it: its experiment manager, YAML hyperparameters, callbacks and log
layout (``logs/<algo>/<EnvId>_<N>/``) are used unchanged. Two things are added before handing over:

- sb3-mb's registered algorithms join ``rl_zoo3.utils.ALGOS`` (rl_zoo3 keeps a hard-coded dict there, read
  by both its argument parser and its experiment manager);
- ``--conf-file`` defaults to ``hyperparams/<algo>.yml`` of this repository for sb3-mb algorithms (rl_zoo3
  looks inside its own package, which holds only SB3's algorithms).
"""

from __future__ import annotations

import sys

from zoo.hyperparams import HYPERPARAMS_DIR


def register_algorithms() -> list[str]:
    """Add every sb3-mb algorithm to rl_zoo3's algorithm table; returns their names."""
    from rl_zoo3.utils import ALGOS

    import sb3_mb

    names = sb3_mb.list_algorithms()
    for name in names:
        ALGOS[name] = sb3_mb.get_algorithm(name)
    return names


def _algo_from_argv(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg == "--algo" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--algo="):
            return arg.split("=", 1)[1]
    return None


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    names = register_algorithms()
    algo = _algo_from_argv(argv)
    if algo in names and not any(a in ("-conf", "--conf-file") or a.startswith("--conf-file=") for a in argv):
        argv += ["--conf-file", str(HYPERPARAMS_DIR / f"{algo}.yml")]
    if not any(a == "--gym-packages" for a in argv):
        argv += ["--gym-packages", "sb3_mb"]
    from rl_zoo3.train import train

    sys.argv = [sys.argv[0], *argv]
    train()


if __name__ == "__main__":
    main()
