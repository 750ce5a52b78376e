"""CarRacing's controls as the original World Models code maps C's output onto them.

Ha & Schmidhuber 2018, arXiv:1803.10122, Sec. 3; the original ``carracing/model.py`` (``Model.get_action``,
hardmaru/WorldModelsExperiments): ``a = tanh(W [z, h] + b)``, then steering ``a_0``, gas ``(a_1 + 1) / 2`` and
brake ``clip(a_2, 0, 1)``. A zero C (CMA-ES's start) then drives: steering 0, gas 0.5, brake 0.

Without this wrapper, C's ``tanh`` is mapped affinely onto CarRacing's ``Box([-1, 0, 0], [1, 1, 1])`` (SB3's
``unscale_action``): the same map for steering and gas, but the brake becomes ``(a_2 + 1) / 2``, so a zero C
brakes at 0.5 and the car barely moves; CMA-ES must first learn to let go of the brake.

:class:`CarRacingActions` exposes ``Box(-1, 1, (3,))`` to the agent, so the policy's affine map is the
identity and the wrapper applies the original's. M then reads C's ``tanh`` output ``a`` (the original feeds
the mapped controls to its RNN; the two differ by the fixed maps above). Random rollouts sample ``a``
uniformly in ``[-1, 1]^3``: gas uniform in ``[0, 1]``, no brake half of the time (the original collects its
rollouts with randomly initialised controllers through the same map).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

__all__ = ["CarRacingActions", "make_carracing"]


class CarRacingActions(gym.ActionWrapper):
    """Agent actions ``(3,)`` in ``[-1, 1]`` -> CarRacing's ``(steering, gas, brake)`` by the original World
    Models map (module docstring): ``(a_0, (a_1 + 1) / 2, clip(a_2, 0, 1))``; actions outside ``[-1, 1]`` are
    clipped first.

    :param env: a CarRacing env (continuous actions, ``Box([-1, 0, 0], [1, 1, 1])``).
    :raises ValueError: for another action space.
    """

    def __init__(self, env: gym.Env):
        space = env.action_space
        if not (
            isinstance(space, spaces.Box)
            and space.shape == (3,)
            and np.array_equal(space.low, [-1, 0, 0])
            and np.array_equal(space.high, [1, 1, 1])
        ):
            raise ValueError(
                "CarRacingActions wraps CarRacing's continuous controls Box([-1, 0, 0], [1, 1, 1]), got "
                f"{space} (make it with continuous=True)"
            )
        super().__init__(env)
        self.action_space = spaces.Box(-1.0, 1.0, (3,), np.float32)

    def action(self, action: Any) -> np.ndarray:
        """``(steering, gas, brake)`` float32 ``(3,)`` of the agent's action ``(3,)``."""
        a = np.clip(np.asarray(action, dtype=np.float32).reshape(3), -1.0, 1.0)
        return np.array([a[0], (a[1] + 1.0) / 2.0, max(a[2], 0.0)], dtype=np.float32)


def make_carracing(env_id: str = "CarRacing-v3", **kwargs: Any) -> CarRacingActions:
    """``gym.make(env_id, **kwargs)`` wrapped in :class:`CarRacingActions` (picklable with
    ``functools.partial``: a ``controller_env_fn`` for worker processes)."""
    return CarRacingActions(gym.make(env_id, **kwargs))
