"""The learned transition model and the one owner of its data layout: ``[s, a] -> [delta_s, r]``.

MBPO (Janner et al. 2019, arXiv:1906.08253, App. C) and PETS (Chua et al. 2018, arXiv:1805.12114, Sec. 4)
learn an ensemble that maps the raw state and action to the state difference and the reward; STEVE's
transition ensemble (Buckman et al. 2018, arXiv:1807.01675, Sec. 4) predicts the state difference alone
(its reward is a separate ensemble). :class:`DynamicsModel` is that ensemble together with the layout,
in the manner of mbrl-lib's ``OneDTransitionRewardModel``: it alone builds the inputs and the targets,
splits a prediction into ``(delta_s, r)`` and turns it back into ``(next_obs, reward)``. Its losses
(:mod:`sb3_mb.mbpo.model_losses`), :class:`~sb3_mb.common.model_env.ModelEnv`, MBPO and STEVE go through
these methods, so no other file knows where the reward column is.

Layout, with ``d = obs_dim``::

    inputs   (..., d + action_dim)     [s, a]   raw; normalised inside the ensemble (its Normalizer)
    targets  (..., d + 1)              [s' - s, r]      (learned_reward=False: (..., d), s' - s)
    output   same as targets           next_obs = s + output[..., :d], reward = output[..., d]
"""

from __future__ import annotations

import torch as th

from sb3_mb.common.ensemble import EnsembleMLP

__all__ = ["DynamicsModel"]


class DynamicsModel(EnsembleMLP):
    """Ensemble transition model on ``[s, a]`` predicting ``[s' - s, r]`` (or ``s' - s``).

    :param obs_dim: state size ``d`` (flat observations).
    :param action_dim: action size (actions as the agent stores them, e.g. scaled to ``[-1, 1]``).
    :param learned_reward: predict the reward in a last output column (MBPO) or not (STEVE, whose reward
        ensemble is separate).
    :param ensemble_kwargs: :class:`~sb3_mb.common.ensemble.EnsembleMLP` arguments (``ensemble_size``,
        ``net_arch``, ``activation_fn``, ``deterministic``, ``n_elites``, ``init``).
    """

    def __init__(self, obs_dim: int, action_dim: int, learned_reward: bool = True, **ensemble_kwargs):
        super().__init__(obs_dim + action_dim, obs_dim + int(learned_reward), **ensemble_kwargs)
        self.obs_dim, self.action_dim, self.learned_reward = obs_dim, action_dim, learned_reward

    # ------------------------------------------------------------------ layout
    def inputs(self, obs: th.Tensor, actions: th.Tensor) -> th.Tensor:
        """``[s, a]``: ``(..., obs_dim)`` and ``(..., action_dim)`` -> ``(..., obs_dim + action_dim)``."""
        return th.cat([obs, actions], dim=-1)

    def targets(self, obs: th.Tensor, next_obs: th.Tensor, rewards: th.Tensor | None = None) -> th.Tensor:
        """``[s' - s, r]`` (``(..., obs_dim + 1)``) or ``s' - s`` without a learned reward.

        :param obs: ``(..., obs_dim)``. :param next_obs: ``(..., obs_dim)``. :param rewards: ``(...)``.
        :raises ValueError: if the model learns the reward and ``rewards`` is None.
        """
        delta = next_obs - obs
        if not self.learned_reward:
            return delta
        if rewards is None:
            raise ValueError("This dynamics model learns the reward: targets() needs the rewards")
        return th.cat([delta, rewards.unsqueeze(-1)], dim=-1)

    def split(self, output: th.Tensor) -> tuple[th.Tensor, th.Tensor | None]:
        """A prediction or target ``(..., out_dim)`` as ``(delta_s (..., obs_dim), reward (...) or None)``."""
        delta = output[..., : self.obs_dim]
        return delta, (output[..., self.obs_dim] if self.learned_reward else None)

    def transition(self, obs: th.Tensor, output: th.Tensor) -> tuple[th.Tensor, th.Tensor | None]:
        """``(next_obs, reward)`` from the state ``obs (..., obs_dim)`` and an output ``(..., out_dim)``."""
        delta, reward = self.split(output)
        return obs + delta, reward

    # ------------------------------------------------------------------ prediction
    def predict(
        self,
        obs: th.Tensor,
        actions: th.Tensor,
        member_idx: th.Tensor | None = None,
        deterministic: bool = False,
        generator: th.Generator | None = None,
    ) -> tuple[th.Tensor, th.Tensor | None]:
        """Sampled ``(next_obs, reward)`` of every member (the Gaussian mean when ``deterministic``).

        :param obs: ``(batch, obs_dim)`` (broadcast to every member) or ``(E', batch, obs_dim)``, one slice
            per member (``E' = E`` or ``len(member_idx)``). :param actions: likewise with ``action_dim``.
        :param member_idx: ``(E',)`` members whose weights the slices use (see :meth:`EnsembleMLP.forward`).
        :param generator: ``torch.Generator`` on the model's device for the Gaussian noise.
        :return: ``next_obs (E', batch, obs_dim)`` and ``reward (E', batch)`` (None without a learned reward).
        """
        output = self.sample(self.inputs(obs, actions), member_idx, deterministic, generator)
        return self.transition(obs, output)
