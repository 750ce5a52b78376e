"""A replay-like batch for tests of off-policy updates (STEVE's expansion and its fused path)."""

from __future__ import annotations

import torch as th
from stable_baselines3.common.type_aliases import ReplayBufferSamples


def random_replay_batch(
    obs_dim: int, action_dim: int, batch_size: int = 6, seed: int = 0, next_obs_scale: float = 1.0
) -> ReplayBufferSamples:
    """Standard-normal observations, rewards and next observations (times ``next_obs_scale``), uniform
    actions in ``[-1, 1]``, and every third transition terminal (so a done model and ``c_0 = 1 - d``
    matter)."""
    g = th.Generator().manual_seed(seed)
    dones = th.zeros(batch_size, 1)
    dones[::3] = 1.0
    return ReplayBufferSamples(
        observations=th.randn(batch_size, obs_dim, generator=g),
        actions=th.rand(batch_size, action_dim, generator=g) * 2 - 1,
        next_observations=next_obs_scale * th.randn(batch_size, obs_dim, generator=g),
        dones=dones,
        rewards=th.randn(batch_size, 1, generator=g),
    )
