"""Wrappers shared by several environment families."""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces


class DiscreteActionTable(gymnasium.ActionWrapper, gymnasium.utils.RecordConstructorArgs):
    """Expose ``spaces.Discrete(n)`` and map index ``i`` to the fixed action ``table[i]`` of the wrapped env.

    Gymnasium's ``DiscretizeAction`` only makes uniform bins; the discrete-action adaptation of Alex Rose's
    PlaNet fork (cartpole force tables) and the Sonic agents of the Retro contest (Nichol et al. 2018,
    arXiv:1804.03720: button-combination tables) need hand-picked tables.

    :param env: environment whose ``action_space`` contains every row of ``table``.
    :param table: ``(n, *env.action_space.shape)`` array; row ``i`` is sent for action ``i``.
    :raises ValueError: if a row is not in the wrapped action space; at ``step`` for an index outside
        ``[0, n)``.
    """

    def __init__(self, env: gymnasium.Env, table: Any):
        gymnasium.utils.RecordConstructorArgs.__init__(self, table=np.asarray(table).tolist())
        gymnasium.ActionWrapper.__init__(self, env)
        inner = env.action_space
        self.table = np.asarray(table, dtype=inner.dtype).reshape((-1, *inner.shape))
        for row in self.table:
            if not inner.contains(row):
                raise ValueError(
                    f"Action table row {row.tolist()} is not in the wrapped action space {inner}"
                )
        self.action_space = spaces.Discrete(len(self.table))

    def action(self, action: Any) -> np.ndarray:
        index = int(np.asarray(action).item())
        if not 0 <= index < len(self.table):
            raise ValueError(f"Action {action!r} is not an index in [0, {len(self.table)})")
        return self.table[index].copy()
