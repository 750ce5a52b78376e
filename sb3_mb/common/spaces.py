"""Space checks shared by the state-based methods (flat ``Box`` observations, ``Box`` actions)."""

from __future__ import annotations

from typing import Any

from gymnasium import spaces

__all__ = ["check_flat_box_spaces"]


def check_flat_box_spaces(env: Any, algorithm: str) -> None:
    """Raise a ``ValueError`` naming the space unless ``env`` has a flat ``Box`` observation space
    ``(obs_dim,)`` and a ``Box`` action space. ``env=None`` (a model loaded without env) passes.

    :param env: a Gymnasium env or SB3 ``VecEnv`` (anything with ``observation_space`` / ``action_space``).
    :param algorithm: the algorithm's name, used in the message.
    :raises ValueError: for any other observation or action space.
    """
    if env is None:
        return
    obs_space = getattr(env, "observation_space", None)
    act_space = getattr(env, "action_space", None)
    if obs_space is not None and not (isinstance(obs_space, spaces.Box) and len(obs_space.shape) == 1):
        raise ValueError(
            f"{algorithm} needs a flat Box observation space (obs_dim,), got observation space {obs_space}"
        )
    if act_space is not None and not isinstance(act_space, spaces.Box):
        raise ValueError(f"{algorithm} needs a continuous Box action space, got action space {act_space}")
