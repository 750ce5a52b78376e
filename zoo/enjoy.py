"""``python -m zoo.enjoy --algo mbpo --env Pendulum-v1 -f logs``: rl-zoo3's ``enjoy`` for sb3-mb agents.

rl_zoo3's enjoy loop already passes ``state`` and ``episode_start`` to ``predict`` (RecurrentPPO's
contract), so PlaNet's belief travels unchanged. What it hard-codes is its list of off-policy algorithms
(``off_policy_algos`` inside ``enjoy()``), whose models it loads with ``buffer_size=1`` so that no replay
buffer is allocated to watch an agent. sb3-mb's off-policy algorithms are not in that list, so they are
registered here through :class:`LoadWithoutReplayBuffer`, which adds ``buffer_size=1`` to ``load``.
"""

from __future__ import annotations

import sys
from typing import Any

from zoo.train import register_algorithms


class LoadWithoutReplayBuffer:
    """Stands for an off-policy algorithm class in rl_zoo3's table during ``enjoy``: ``load`` with
    ``buffer_size=1`` unless the caller gives one."""

    def __init__(self, algorithm_class: type):
        self.algorithm_class = algorithm_class

    def load(self, path: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("buffer_size", 1)
        return self.algorithm_class.load(path, **kwargs)


def main(argv: list[str] | None = None) -> None:
    from rl_zoo3.utils import ALGOS

    import sb3_mb

    argv = list(sys.argv[1:] if argv is None else argv)
    for name in register_algorithms():
        if sb3_mb.ALGOS[name].off_policy:
            ALGOS[name] = LoadWithoutReplayBuffer(sb3_mb.get_algorithm(name))
    if "--gym-packages" not in argv:
        argv += ["--gym-packages", "sb3_mb"]
    from rl_zoo3.enjoy import enjoy

    sys.argv = [sys.argv[0], *argv]
    enjoy()


if __name__ == "__main__":
    main()
