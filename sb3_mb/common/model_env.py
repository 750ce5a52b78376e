"""A learned dynamics model as a batched environment (mbrl-lib ``mbrl/models/model_env.py`` style).

The model is an :class:`~sb3_mb.common.ensemble.EnsembleMLP` mapping raw ``(obs, action)`` to
``[delta_obs, reward]`` (learned reward, the MBPO default) or to ``delta_obs`` only (then a ``reward_fn``
gives the reward). ``next_obs = obs + delta_obs``.

Member choice per rollout (``propagation``):

- ``"random_model"`` (TS1, MBPO / VaGraM default): every step, every rollout uses a random elite; the batch
  is split into equal parts, one per elite (mbrl-lib's propagation), so one forward pass costs one member's
  worth of compute, not ``E``.
- ``"fixed_model"`` (TS-inf): each rollout is assigned a random elite at :meth:`ModelEnv.reset` and follows it
  for the whole rollout (:attr:`ModelEnv.rollout_member`).
- ``"all"`` (STEVE, spec steve 5.3): every member of the ensemble follows its own rollout from the same start
  states; observations, rewards and flags carry a leading member axis ``(E, N, ...)``.

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

from sb3_mb.common.ensemble import EnsembleMLP
from sb3_mb.common.termination import TerminationFn, no_termination

__all__ = ["ModelEnv", "RewardFn"]

#: ``reward_fn(obs, act, next_obs) -> (...)`` reward tensor.
RewardFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

_PROPAGATIONS = ("random_model", "fixed_model", "all")


class ModelEnv:
    """Batched rollouts of ``N`` start states through a learned ensemble dynamics model.

    :param model: ensemble with ``in_dim = obs_dim + action_dim`` and ``out_dim = obs_dim + 1`` (learned
        reward in the last column) or ``out_dim = obs_dim`` (``reward_fn`` required).
    :param obs_dim: observation size.
    :param termination_fn: ``term_fn(obs, act, next_obs) -> bool (...)``; default never terminates.
    :param reward_fn: reward from ``(obs, act, next_obs)`` instead of the learned reward column.
    :param propagation: ``"random_model"``, ``"fixed_model"`` or ``"all"`` (see the module docstring).
    :param generator: ``torch.Generator`` on the model's device (seeding); ``None``: torch's global RNG.
    :param soft_termination: ``termination_fn`` returns probabilities in ``[0, 1]`` (a learned done model,
        STEVE) and :meth:`step` returns them as floats instead of a bool flag.
    :raises ValueError: for an unknown propagation or inconsistent sizes.
    """

    def __init__(
        self,
        model: EnsembleMLP,
        obs_dim: int,
        termination_fn: TerminationFn | None = None,
        reward_fn: RewardFn | None = None,
        propagation: str = "random_model",
        generator: torch.Generator | None = None,
        soft_termination: bool = False,
    ):
        if propagation not in _PROPAGATIONS:
            raise ValueError(f"propagation must be one of {_PROPAGATIONS}, got {propagation!r}")
        learned_reward = model.out_dim == obs_dim + 1
        if not learned_reward and model.out_dim != obs_dim:
            raise ValueError(f"model.out_dim={model.out_dim} must be obs_dim ({obs_dim}) or obs_dim + 1")
        if not learned_reward and reward_fn is None:
            raise ValueError("The model predicts no reward (out_dim == obs_dim): pass reward_fn")
        self.model, self.obs_dim = model, obs_dim
        self.action_dim = model.in_dim - obs_dim
        self.termination_fn = termination_fn or no_termination
        self.reward_fn = reward_fn
        self.propagation = propagation
        self.generator = generator
        self.soft_termination = soft_termination
        self._obs: torch.Tensor | None = None
        self.rollout_member: torch.Tensor | None = None

    @property
    def device(self) -> torch.device:
        return self.model.elite_idx.device

    def _randperm(self, n: int) -> torch.Tensor:
        return torch.randperm(n, generator=self.generator, device=self.device)

    def reset(self, obs: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Start ``N`` rollouts from ``obs`` ``(N, obs_dim)``.

        For ``"fixed_model"`` each rollout gets an elite (balanced random assignment), kept in
        :attr:`rollout_member` ``(N,)``.

        :return: the current observations: ``(N, obs_dim)``, or ``(E, N, obs_dim)`` for ``"all"``.
        :raises ValueError: for a wrong shape.
        """
        obs = torch.as_tensor(obs, dtype=torch.float32, device=self.device)
        if obs.dim() != 2 or obs.shape[-1] != self.obs_dim:
            raise ValueError(f"Expected start states (N, {self.obs_dim}), got {tuple(obs.shape)}")
        if self.propagation == "all":
            obs = obs.unsqueeze(0).expand(self.model.ensemble_size, -1, -1).clone()
        self._obs = obs
        self.rollout_member = self._random_elites(obs.shape[0]) if self.propagation == "fixed_model" else None
        return obs

    def keep(self, mask: torch.Tensor) -> torch.Tensor:
        """Continue only the rollouts where ``mask`` ``(N,)`` is true (not terminated); return their obs.

        Not available for ``"all"`` (whose rollouts share the start-state axis across members).
        """
        if self._obs is None:
            raise RuntimeError("Call reset(obs) before keep(mask)")
        if self.propagation == "all":
            raise RuntimeError("keep() is not supported with propagation='all'; mask the outputs instead")
        mask = torch.as_tensor(mask, dtype=torch.bool, device=self.device)
        self._obs = self._obs[mask]
        if self.rollout_member is not None:
            self.rollout_member = self.rollout_member[mask]
        return self._obs

    def _random_elites(self, n: int) -> torch.Tensor:
        """Balanced random elite per row ``(n,)``: a random permutation cut into ``n_elites`` equal parts."""
        elites = self.model.elite_idx
        per = -(-n // elites.shape[0])
        member = torch.empty(n, dtype=torch.long, device=self.device)
        member[self._randperm(n)] = elites[torch.arange(n, device=self.device) // per]
        return member

    def _predict_by_member(
        self, inputs: torch.Tensor, member: torch.Tensor, deterministic: bool
    ) -> torch.Tensor:
        """Sample ``(N, out_dim)`` where row ``i`` uses member ``member[i]``, as one batched forward pass.

        Rows are grouped by member into a ``(K, max_count, in_dim)`` tensor (zero padding), so the cost is
        that of one member over ``N`` rows, not ``E`` members.
        """
        members, group, counts = torch.unique(member, return_inverse=True, return_counts=True)
        n, k, per = inputs.shape[0], members.shape[0], int(counts.max())
        order = torch.argsort(group, stable=True)
        sorted_group = group[order]
        starts = torch.cumsum(counts, 0) - counts
        slot = sorted_group * per + (torch.arange(n, device=inputs.device) - starts[sorted_group])
        grouped = inputs.new_zeros(k * per, inputs.shape[-1])
        grouped[slot] = inputs[order]
        out = self.model.sample(
            grouped.view(k, per, -1),
            member_idx=members,
            deterministic=deterministic,
            generator=self.generator,
        )
        result = torch.empty(n, out.shape[-1], device=out.device, dtype=out.dtype)
        result[order] = out.reshape(k * per, -1)[slot]
        return result

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
            inputs = torch.cat([obs, actions], dim=-1)
            out = self.model.sample(inputs, deterministic=deterministic, generator=self.generator)
        else:
            inputs = torch.cat([obs, actions], dim=-1)
            member = (
                self.rollout_member
                if self.propagation == "fixed_model"
                else self._random_elites(obs.shape[0])
            )
            out = self._predict_by_member(inputs, member, deterministic)
        next_obs = obs + out[..., : self.obs_dim]
        if self.reward_fn is not None:
            reward = self.reward_fn(obs, actions, next_obs)
        else:
            reward = out[..., self.obs_dim]
        terminated = self.termination_fn(obs, actions, next_obs).reshape(next_obs.shape[:-1])
        terminated = terminated.to(next_obs.dtype) if self.soft_termination else terminated.bool()
        self._obs = next_obs
        return next_obs, reward, terminated
