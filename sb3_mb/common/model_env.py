"""A learned dynamics model as a batched environment (in the manner of mbrl-lib's ``ModelEnv``).

The model is a :class:`~sb3_mb.common.dynamics.DynamicsModel`: raw ``(obs, action)`` to
``[delta_obs, reward]`` (learned reward, the MBPO default) or to ``delta_obs`` only (then a ``reward_fn``
gives the reward); the model alone knows that layout and returns ``(next_obs, reward)``.

Member choice per rollout (``propagation``):

- ``"random_model"`` (TS1, MBPO's default, Janner et al. 2019, arXiv:1906.08253, App. C; Chua et al. 2018,
  arXiv:1805.12114, Sec. 5): every step, every rollout uses a random elite; the batch is split into equal
  parts, one per elite (:func:`~sb3_mb.common.ensemble.random_member_split`), so one forward pass costs one
  member's worth of compute, not ``E``.
- ``"all"`` (STEVE, Buckman et al. 2018, arXiv:1807.01675, Sec. 3): every member of the ensemble follows
  its own rollout from the same start states; observations, rewards and flags carry a leading member axis
  ``(E, N, ...)``.

Termination is a bool flag by default; with ``soft_termination=True`` the termination function returns the
probability that the transition ends the episode (STEVE's learned done model) and :meth:`ModelEnv.step`
returns it as a float tensor.

Randomness (member assignment, Gaussian sampling) comes only from the ``torch.Generator`` passed in, so
rollouts are reproducible given its seed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from sb3_mb.common.dynamics import DynamicsModel
from sb3_mb.common.ensemble import random_member_split
from sb3_mb.common.termination import TerminationFn, no_termination

__all__ = ["ModelEnv", "RewardFn"]

#: ``reward_fn(obs, act, next_obs) -> (...)`` reward tensor.
RewardFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

_PROPAGATIONS = ("random_model", "all")


class ModelEnv:
    """Batched rollouts of ``N`` start states through a learned ensemble dynamics model.

    :param model: the dynamics model (with a learned reward, or ``reward_fn`` required).
    :param termination_fn: ``term_fn(obs, act, next_obs) -> bool (...)``; default never terminates.
    :param reward_fn: reward from ``(obs, act, next_obs)`` instead of the learned reward column.
    :param propagation: ``"random_model"`` or ``"all"`` (see the module docstring).
    :param generator: ``torch.Generator`` on the model's device (seeding); ``None``: torch's global RNG.
    :param soft_termination: ``termination_fn`` returns probabilities in ``[0, 1]`` (a learned done model,
        STEVE) and :meth:`step` returns them as floats instead of a bool flag.
    :raises ValueError: for an unknown propagation, or a model without learned reward and no ``reward_fn``.
    """

    def __init__(
        self,
        model: DynamicsModel,
        termination_fn: TerminationFn | None = None,
        reward_fn: RewardFn | None = None,
        propagation: str = "random_model",
        generator: torch.Generator | None = None,
        soft_termination: bool = False,
    ):
        if propagation not in _PROPAGATIONS:
            raise ValueError(f"propagation must be one of {_PROPAGATIONS}, got {propagation!r}")
        if not model.learned_reward and reward_fn is None:
            raise ValueError("The model predicts no reward (learned_reward=False): pass reward_fn")
        self.model, self.obs_dim, self.action_dim = model, model.obs_dim, model.action_dim
        self.termination_fn = termination_fn or no_termination
        self.reward_fn = reward_fn
        self.propagation = propagation
        self.generator = generator
        self.soft_termination = soft_termination
        self._obs: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return self.model.elite_idx.device

    def reset(self, obs: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Start ``N`` rollouts from ``obs`` ``(N, obs_dim)``.

        :return: the current observations: ``(N, obs_dim)``, or ``(E, N, obs_dim)`` for ``"all"``.
        :raises ValueError: for a wrong shape.
        """
        obs = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        if obs.dim() != 2 or obs.shape[-1] != self.obs_dim:
            raise ValueError(f"Expected start states (N, {self.obs_dim}), got {tuple(obs.shape)}")
        if self.propagation == "all":
            obs = obs.unsqueeze(0).expand(self.model.ensemble_size, -1, -1).clone()
        self._obs = obs
        return obs

    def keep(self, mask: torch.Tensor) -> torch.Tensor:
        """Continue only the rollouts where ``mask`` ``(N,)`` is true (not terminated); return their obs.

        Not available for ``"all"`` (whose rollouts share the start-state axis across members).
        """
        if self._obs is None:
            raise RuntimeError("Call reset(obs) before keep(mask)")
        if self.propagation == "all":
            raise RuntimeError("keep() is not supported with propagation='all'; mask the outputs instead")
        self._obs = self._obs[torch.as_tensor(mask, dtype=torch.bool, device=self.device)]
        return self._obs

    def _predict_random_elites(
        self, obs: torch.Tensor, actions: torch.Tensor, deterministic: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``(next_obs (N, obs_dim), reward (N,))`` with every row through a random elite, one batched pass.

        The rows are split among the elites (:func:`random_member_split`, the last parts padded), gathered
        into ``(n_elites, ceil(N / n_elites), ...)`` and predicted with each part's elite.
        """
        elites = self.model.elite_idx
        rows = random_member_split(
            obs.shape[0], elites.shape[0], self.generator, self.device, drop_remainder=False
        )
        gather = rows.clamp(min=0)
        next_obs, reward = self.model.predict(
            obs[gather], actions[gather], elites, deterministic, self.generator
        )
        valid = rows >= 0
        order = rows[valid]
        out_obs = torch.empty_like(obs)
        out_obs[order] = next_obs[valid]
        if reward is None:
            return out_obs, None
        out_reward = torch.empty(obs.shape[0], device=obs.device, dtype=reward.dtype)
        out_reward[order] = reward[valid]
        return out_obs, out_reward

    @torch.no_grad()
    def step(
        self, actions: torch.Tensor | np.ndarray, deterministic: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Advance every rollout one step.

        :param actions: ``(N, action_dim)``; for ``"all"`` also ``(E, N, action_dim)`` (one action per member
            rollout, e.g. the policy evaluated on each member's state).
        :param deterministic: use the Gaussian mean instead of a sample (the member choice stays random).
        :return: ``(next_obs, reward, terminated)``: ``(N, obs_dim)``, ``(N,)``, ``(N,)`` bool (float
            probabilities with ``soft_termination``), or with a leading ``E`` axis for ``"all"``; ``reward``
            has the shape ``reward_fn`` gives (e.g. one column per reward-ensemble member). The env's state
            becomes ``next_obs``; rollouts are not frozen after termination (the caller masks them, as in
            MBPO).
        :raises RuntimeError: if called before :meth:`reset`.
        """
        if self._obs is None:
            raise RuntimeError("Call reset(obs) before step(actions)")
        obs = self._obs
        actions = torch.as_tensor(actions, dtype=torch.float32, device=self.device)
        if self.propagation == "all":
            if actions.dim() == 2:
                actions = actions.unsqueeze(0).expand(obs.shape[0], -1, -1)
            next_obs, reward = self.model.predict(obs, actions, None, deterministic, self.generator)
        else:
            next_obs, reward = self._predict_random_elites(obs, actions, deterministic)
        if self.reward_fn is not None:
            reward = self.reward_fn(obs, actions, next_obs)
        terminated = self.termination_fn(obs, actions, next_obs).reshape(next_obs.shape[:-1])
        terminated = terminated.to(next_obs.dtype) if self.soft_termination else terminated.bool()
        self._obs = next_obs
        return next_obs, reward, terminated
