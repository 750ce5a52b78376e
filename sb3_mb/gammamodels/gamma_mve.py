"""γ-MVE: SAC whose critic targets expand the value with n-fold compositions of a γ̃-model.

Janner, Mordatch and Levine 2020 (arXiv:2010.14496), Sec. 5-6; the release has no γ-MVE, so the rule below is
the spec's derivation (spec 1.6). For SAC's soft Q function, with
``ρ(x) = E_{a ~ π(x)}[r(x, a) - α log π(a | x)]`` the soft reward of a future state::

    Q(s, a) = r + γ W(s, a),       W(s, a) = sum_{Δ >= 1} γ^(Δ-1) E[ρ(s_{t+Δ})]
    W(s, a) ≈ sum_{n=1..H} α_n E_{s^n ~ μ̃^n}[ρ(s^n)] + β^H E_{s^H}[(V(s^H) - ρ(s^H)) / γ]

with ``s^1 ~ μ̃(· | s, a)``, ``s^n ~ μ̃(· | s^(n-1), π(s^(n-1)))``, ``α_n = β^(n-1) / (1 - γ̃)``,
``β = (γ - γ̃) / (1 - γ̃)`` (:func:`~sb3_mb.gammamodels.gamma_model.gamma_mve_weights`), ``V(x) = min_i
Q'_i(x, a) - α log π(a | x)`` SAC's soft value on the target critics, and ``(V - ρ) / γ = E_a W(x, a)`` the
bootstrap in W's convention (rewards from the next state on). γ̃ = 0 (a one-step model) is ordinary MVE
(Feinberg et al. 2018) with SAC's soft value; H = 1 and γ̃ = 0 is SAC on a model's next state; γ̃ = γ needs no
critic at all, ``W = E_μ[ρ] / (1 - γ)``.

How it joins SB3 (as MBPO does): SAC's ``train`` is kept whole. The replay buffer
(:class:`GammaMVEReplayBuffer`) hands SAC batches whose ``(rewards, next_observations, discounts)`` are the
expanded target's: ``r' = r + (1 - d)(γ sum_n α_n ρ(s^n) - β^H ρ(s^H))``, ``s' = s^H``, discount ``β^H``, so
that SAC's own ``r' + (1 - d) discount (min Q'(s', a') - α log π(a' | s'))`` is the γ-MVE target. Each row
takes one model rollout (an unbiased, single-sample estimate). The γ-model is trained online beside the actor
by TD on real batches with ``a' ~ π(s')`` and a reward model ``r(s, a)`` by regression; expansion starts after
``model_learning_starts`` model updates.

``expand_from_next_state`` applies the same expansion to the value of the real next state instead of to
``W(s, a)``: ``Q(s, a) = r + γ V(s')`` with ``V(s') = ρ(s') + γ W(s', a')``, ``a' ~ π(s')``, so the target is
``r + γ ρ(s') + γ (γ sum_n α_n ρ(s^n) + β^H (V - ρ)(s^H))`` with ``s^1 ~ μ̃(· | s', a')``: SAC's reward
``r + γ ρ(s') + γ (γ sum_n α_n ρ(s^n) - β^H ρ(s^H))``, next state ``s^H``, discount ``γ β^H``. The spec's
expansion is one of a state value (spec 1.6), and this is it at ``s'``; with γ̃ = 0 it is MVE as Feinberg et
al. imagine it, from the real next state. The intent: the action's effect reaches ``Q(s, ·)`` through the
real ``s'``, as in SAC, not only through the γ-model's dependence on ``a``. Measured on Pendulum-v1
(``benchmarks/gamma_mve_bias.py``), the single-sample model noise still dominates the difference between two
actions' targets; see ``benchmarks/README.md`` for what it does to learning.

Options that trade the plain estimator for less bias or variance (each off by default, so the default is the
spec's rule):

- ``clip_observations`` / ``angle_observations`` / ``observation_projection``: a γ-model sample may leave the
  set where observations live (on Pendulum-v1, ``cos² + sin²`` of the samples averaged 1.17), and there the
  reward model and the critics extrapolate. Each sample ``s^n`` is mapped back (clipped to the observation
  space's finite bounds; ``(cos, sin)`` pairs scaled to unit norm; a user's map) before it is used anywhere:
  reward, action, next composition and bootstrap.
- ``n_model_samples``: ``k`` rollouts per row, the whole expansion ``sum_n α_n ρ(s^n) + β^H (V - ρ)(s^H)``
  averaged over them. ``V`` is then SAC's soft value on the target critics computed here, folded into the
  reward, and SAC gets discount 0 (its own bootstrap vanishes; ``train`` stays whole). The single-sample
  target's noise is large because ``s^H`` is a random future state and ``V`` varies much over states; the
  average lowers it.
- ``expansion_weight`` / ``expansion_ramp``: the target is the blend ``λ · γ-MVE + (1 - λ) · (r + γ V(s'))``
  of the expansion and SAC's one-step target, ``λ`` growing linearly over ``expansion_ramp`` model updates
  after ``model_learning_starts``: a way to lean on the critic while the γ-model is young (STEVE and MVE's
  TD-k also mix horizons). Both parts are computed here and SAC gets discount 0.

Limits: the γ-model does not model terminations (rollouts never end
inside the model; fine for Pendulum, biased for tasks with early termination).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.torch_layers import create_mlp
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, ReplayBufferSamples, Schedule
from stable_baselines3.common.vec_env import VecNormalize
from stable_baselines3.sac import SAC
from stable_baselines3.sac.policies import SACPolicy
from torch import nn

from sb3_mb.common.base_class import SafeAlgorithmMixin
from sb3_mb.common.spaces import check_flat_box_spaces
from sb3_mb.common.utils import resolve_policy_and_env
from sb3_mb.gammamodels.gamma_model import GammaModel, gamma_mve_weights
from sb3_mb.gammamodels.policies import MlpPolicy

__all__ = ["GammaMVE", "GammaMVEReplayBuffer"]

SelfGammaMVE = TypeVar("SelfGammaMVE", bound="GammaMVE")


class GammaMVEReplayBuffer(ReplayBuffer):
    """SB3's replay buffer whose SAC batches carry the γ-MVE target (module docstring) once ``expansion`` is
    set: ``sample`` returns :class:`ReplayBufferSamples` with ``rewards``, ``next_observations`` and
    ``discounts`` replaced by ``expansion(samples)``. Without it, or through :meth:`sample_real`, the real
    transitions. ``expansion`` is not saved with the buffer (the algorithm sets it again)."""

    expansion: Any = None

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> ReplayBufferSamples:
        samples = super().sample(batch_size, env)
        return samples if self.expansion is None else self.expansion(samples)

    def sample_real(self, batch_size: int, env: VecNormalize | None = None) -> ReplayBufferSamples:
        """A batch of real transitions, never expanded."""
        return super().sample(batch_size, env)

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state.pop("expansion", None)
        return state


class GammaMVE(SafeAlgorithmMixin, SAC):
    """SAC with γ-model value expansion (module docstring), an SB3 algorithm: ``GammaMVE(env).learn(n)``.

    :param policy: ``"MlpPolicy"`` or a SAC policy class, or the env itself with ``env`` left out.
    :param env: a flat ``Box`` observation and action space env (``VecEnv`` or id).
    :param model_gamma: γ̃, the γ-model's discount, ``0 <= γ̃ <= gamma`` (default 0.9; the paper's value is not
        in the release: spec 1.6).
    :param value_expansion_horizon: H, the model compositions per target (3).
    :param model_learning_starts: γ-model / reward-model updates before the targets are expanded (1000).
    :param model_gradient_steps: γ-model and reward-model updates per SAC gradient step (1).
    :param model_batch_size: real transitions per model update (256).
    :param gamma_model_kwargs: :class:`~sb3_mb.gammamodels.gamma_model.GammaModel` arguments (σ, objective,
        sizes, rates; default here: the small flow of the tests, hidden 128 × 2, K 8, 2 blocks, τ 0.01,
        learning rate 1e-3). γ-MVE uses the model's samples, and only ``objective="likelihood"`` (GammaModel's
        default since the measurements of its ``objective``) keeps them close to the data.
    :param reward_net_arch: hidden sizes of the reward model ``r(s, a)`` ((256, 256), ReLU, Adam 3e-4).
    :param clip_observations: clip every γ-model sample to the observation space's finite bounds (module
        docstring; off). General and cheap; on Pendulum-v1 it bounds cos and sin to ``[-1, 1]`` and the
        velocity to ``[-8, 8]`` but leaves ``cos² + sin²`` anywhere in ``[0, 2]``.
    :param angle_observations: pairs ``(i, j)`` of observation indices that hold ``(cos θ, sin θ)`` of an
        angle; each pair of every γ-model sample is scaled to unit norm (``((0, 1),)`` for Pendulum-v1;
        default none). Applied after the clipping.
    :param observation_projection: a user's map ``(batch, obs_dim) -> (batch, obs_dim)`` of γ-model samples
        onto the observation set, applied last (default none). It is saved with the model (cloudpickle).
    :param n_model_samples: ``k``, γ-model rollouts per target row, averaged with their bootstraps (module
        docstring; 1: the single-sample estimate, bootstrapped by SAC). Costs ``k`` times the sampling.
    :param expand_from_next_state: expand the value of the real next state ``V(s')`` instead of ``W(s, a)``
        from ``(s, a)`` (module docstring; off: the expansion starts at ``(s, a)``). The target then keeps the
        real transition's dependence on the action.
    :param expansion_weight: ``λ``, the weight of the γ-MVE target in its blend with SAC's one-step target
        once fully ramped (module docstring; 1: the spec's rule; 0: SAC's target).
    :param expansion_ramp: model updates after ``model_learning_starts`` over which ``λ`` grows linearly
        from 0 to ``expansion_weight`` (0: at once).
    :param sac_kwargs: SB3 SAC's arguments (``learning_rate``, ``buffer_size``, ``gamma``, ...).
    :raises ValueError: for an unsupported space, γ̃ outside ``[0, gamma]``, ``H < 1``, ``n_model_samples <
        1``, ``expansion_weight`` outside ``[0, 1]``, ``expansion_ramp < 0`` or an angle index outside the
        observation.
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": MlpPolicy}
    replay_buffer: GammaMVEReplayBuffer

    def __init__(
        self,
        policy: str | type[SACPolicy] | GymEnv,
        env: GymEnv | str | None = None,
        learning_rate: float | Schedule = 3e-4,
        model_gamma: float = 0.9,
        value_expansion_horizon: int = 3,
        model_learning_starts: int = 1000,
        model_gradient_steps: int = 1,
        model_batch_size: int = 256,
        gamma_model_kwargs: dict[str, Any] | None = None,
        reward_net_arch: tuple[int, ...] = (256, 256),
        clip_observations: bool = False,
        angle_observations: Sequence[tuple[int, int]] = (),
        observation_projection: Callable[[th.Tensor], th.Tensor] | None = None,
        n_model_samples: int = 1,
        expand_from_next_state: bool = False,
        expansion_weight: float = 1.0,
        expansion_ramp: int = 0,
        replay_buffer_class: type[ReplayBuffer] | None = None,
        _init_setup_model: bool = True,
        **sac_kwargs: Any,
    ):
        verbose = int(sac_kwargs.get("verbose", 0))
        policy, env = resolve_policy_and_env(policy, env, self.policy_aliases, "GammaMVE", verbose)
        check_flat_box_spaces(env, "GammaMVE")
        gamma = sac_kwargs.get("gamma", 0.99)
        if not 0.0 <= model_gamma <= gamma or value_expansion_horizon < 1:
            raise ValueError(
                f"need 0 <= model_gamma <= gamma ({gamma}) and value_expansion_horizon >= 1; "
                f"got {model_gamma}, {value_expansion_horizon}"
            )
        obs_dim = int(env.observation_space.shape[0]) if env is not None else None  # None: load rebuilds
        angle_observations = tuple((int(i), int(j)) for i, j in angle_observations)
        if (
            n_model_samples < 1
            or not 0.0 <= expansion_weight <= 1.0
            or expansion_ramp < 0
            or any(i == j or min(i, j) < 0 for i, j in angle_observations)
            or (obs_dim is not None and any(max(i, j) >= obs_dim for i, j in angle_observations))
        ):
            raise ValueError(
                "need n_model_samples >= 1, 0 <= expansion_weight <= 1, expansion_ramp >= 0 and angle "
                f"observation pairs of distinct indices below {obs_dim}; got {n_model_samples}, "
                f"{expansion_weight}, {expansion_ramp}, {angle_observations}"
            )
        self.clip_observations, self.angle_observations = clip_observations, angle_observations
        self.observation_projection, self.n_model_samples = observation_projection, n_model_samples
        self.expand_from_next_state = expand_from_next_state
        self.expansion_weight, self.expansion_ramp = expansion_weight, expansion_ramp
        self.model_gamma, self.value_expansion_horizon = model_gamma, value_expansion_horizon
        self.model_learning_starts, self.model_gradient_steps = model_learning_starts, model_gradient_steps
        self.model_batch_size = model_batch_size
        self.gamma_model_kwargs = dict(
            dict(hidden_sizes=(128, 128), bins=8, n_blocks=2, tau=0.01, learning_rate=1e-3),
            **(gamma_model_kwargs or {}),
        )
        self.reward_net_arch = tuple(reward_net_arch)
        self._n_model_updates = 0
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            replay_buffer_class=replay_buffer_class or GammaMVEReplayBuffer,
            _init_setup_model=False,
            **sac_kwargs,
        )
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        check_flat_box_spaces(self, "GammaMVE")
        self.angle_observations = tuple((int(i), int(j)) for i, j in self.angle_observations)  # JSON: lists
        super()._setup_model()
        if not isinstance(self.replay_buffer, GammaMVEReplayBuffer):
            raise ValueError(
                "GammaMVE needs a GammaMVEReplayBuffer (or a subclass), got "
                f"{type(self.replay_buffer).__name__}"
            )
        obs_dim, action_dim = int(self.observation_space.shape[0]), int(self.action_space.shape[0])
        self.gamma_model = GammaModel(
            obs_dim, action_dim, gamma=self.model_gamma, **self.gamma_model_kwargs
        ).to(self.device)
        self.reward_model = nn.Sequential(
            *create_mlp(obs_dim + action_dim, 1, list(self.reward_net_arch))
        ).to(self.device)
        self.reward_optimizer = th.optim.Adam(self.reward_model.parameters(), lr=3e-4)
        self.replay_buffer.expansion = self._expansion if self._expanding() else None

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "gamma_model", "reward_model", "reward_optimizer"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts, tensors = super()._get_torch_save_params()
        return [
            *state_dicts,
            "gamma_model",
            "gamma_model.optimizer",
            "reward_model",
            "reward_optimizer",
        ], tensors

    # ------------------------------------------------------------------------------------ models
    def _expanding(self) -> bool:
        return self._n_model_updates >= self.model_learning_starts

    def current_expansion_weight(self) -> float:
        """``λ``, the weight of the expanded target once the expansion is on (after ``model_learning_starts``
        model updates): growing linearly from 0 over ``expansion_ramp`` model updates to
        ``expansion_weight``."""
        if self.expansion_ramp == 0:
            return self.expansion_weight
        done = (self._n_model_updates - self.model_learning_starts) / self.expansion_ramp
        return self.expansion_weight * min(1.0, max(0.0, done))

    def project_observations(self, obs: th.Tensor) -> th.Tensor:
        """γ-model samples ``(batch, obs_dim)`` mapped onto the observation set: clipped to the observation
        space's finite bounds (``clip_observations``), angle pairs scaled to unit norm
        (``angle_observations``), then ``observation_projection``; unchanged with none of these set."""
        if self.clip_observations:
            low = th.as_tensor(self.observation_space.low, dtype=obs.dtype, device=obs.device)
            high = th.as_tensor(self.observation_space.high, dtype=obs.dtype, device=obs.device)
            obs = th.where(th.isfinite(low), th.maximum(obs, low), obs)
            obs = th.where(th.isfinite(high), th.minimum(obs, high), obs)
        if self.angle_observations:
            obs = obs.clone()
            for i, j in self.angle_observations:
                norm = th.sqrt(obs[..., i] ** 2 + obs[..., j] ** 2).clamp_min(1e-6)
                obs[..., i], obs[..., j] = obs[..., i] / norm, obs[..., j] / norm
        if self.observation_projection is not None:
            obs = self.observation_projection(obs)
        return obs

    def predicted_rewards(self, obs: th.Tensor, actions: th.Tensor) -> th.Tensor:
        """The reward model ``r(s, a)``: ``obs (..., d)``, ``actions (..., action_dim)`` → ``(...)``."""
        return self.reward_model(th.cat([obs, actions], dim=-1))[..., 0]

    def train_models(self, n_updates: int) -> dict[str, float]:
        """``n_updates`` TD updates of the γ-model (``a' ~ π(s')``, the current actor) and regression updates
        of the reward model, on real batches of ``model_batch_size``; mean losses.

        :raises FloatingPointError: if a loss is NaN or infinite (before the update).
        """
        gamma_losses, reward_losses = [], []
        for _ in range(n_updates):
            data = self.replay_buffer.sample_real(self.model_batch_size, env=self._vec_normalize_env)
            obs, actions = data.observations.float(), data.actions.float()  # float64 envs store float64
            next_obs = data.next_observations.float()
            with th.no_grad():
                next_actions, _ = self.actor.action_log_prob(next_obs)
            gamma_losses.append(self.gamma_model.update(obs, actions, next_obs, next_actions))
            reward_loss = (self.predicted_rewards(obs, actions) - data.rewards[:, 0].float()).pow(2).mean()
            self._check_finite(
                reward_loss, "reward model loss", self._n_model_updates + 1, unit="model update"
            )
            self.reward_optimizer.zero_grad()
            reward_loss.backward()
            self.reward_optimizer.step()
            reward_losses.append(float(reward_loss.detach()))
            self._n_model_updates += 1
        return {
            "gamma_model_loss": float(np.mean(gamma_losses)),
            "reward_loss": float(np.mean(reward_losses)),
        }

    @th.no_grad()
    def _soft_reward(
        self,
        obs: th.Tensor,
        ent_coef: th.Tensor,
        actions: th.Tensor | None = None,
        log_prob: th.Tensor | None = None,
    ) -> th.Tensor:
        """``ρ(x) = r(x, a) - α log π(a | x)``, one ``a ~ π(x)`` (or the given ``actions`` and their
        ``log_prob``): ``obs (B, d)`` → ``(B,)``."""
        if actions is None or log_prob is None:
            actions, log_prob = self.actor.action_log_prob(obs)
        return self.predicted_rewards(obs, actions) - ent_coef * log_prob.reshape(-1)

    @th.no_grad()
    def _soft_value(self, obs: th.Tensor, ent_coef: th.Tensor) -> th.Tensor:
        """SAC's soft value on the target critics, ``min_i Q'_i(x, a) - α log π(a | x)``, one ``a ~ π(x)``:
        ``obs (B, d)`` → ``(B,)``."""
        actions, log_prob = self.actor.action_log_prob(obs)
        q_values = th.cat(self.critic_target(obs, actions), dim=1).min(dim=1).values
        return q_values - ent_coef * log_prob.reshape(-1)

    @th.no_grad()
    def _expansion(self, data: ReplayBufferSamples) -> ReplayBufferSamples:
        """The batch with the γ-MVE target's ``(rewards, next_observations, discounts)`` (module docstring):
        ``k = n_model_samples`` rollouts per row, samples mapped by :meth:`project_observations`, blended with
        SAC's one-step target by :meth:`current_expansion_weight`."""
        horizon, k = self.value_expansion_horizon, self.n_model_samples
        alphas, bootstrap = gamma_mve_weights(self.gamma, self.model_gamma, horizon)
        ent_coef = (
            th.exp(self.log_ent_coef.detach()) if self.log_ent_coef is not None else self.ent_coef_tensor
        )
        batch = data.observations.shape[0]
        if self.expand_from_next_state:  # Q = r + γ (ρ(s') + γ W(s', a')), one a' ~ π(s') for both
            start = data.next_observations.float()
            start_actions, log_prob = self.actor.action_log_prob(start)
            first = self._soft_reward(start, ent_coef, start_actions, log_prob)
            scale = self.gamma
        else:  # Q = r + γ W(s, a)
            start, start_actions, first, scale = data.observations.float(), data.actions.float(), 0.0, 1.0
        state, actions = start.repeat(k, 1), start_actions.repeat(k, 1)
        model_rewards = th.zeros(k * batch, device=state.device)
        for n in range(horizon):
            state = self.project_observations(self.gamma_model.sample(state, actions)[0])
            rho = self._soft_reward(state, ent_coef)
            model_rewards = model_rewards + self.gamma * float(alphas[n]) * rho
            actions, _ = self.actor.action_log_prob(state)
        weight = self.current_expansion_weight()
        if k == 1 and weight == 1.0:  # SAC bootstraps at s^H
            expanded = scale * (first + model_rewards - bootstrap * rho)
            discounts = th.full_like(data.rewards, scale * bootstrap)
        else:  # the bootstraps (averaged over the k rollouts) here, SAC's own one switched off
            tail = model_rewards + bootstrap * (self._soft_value(state, ent_coef) - rho)
            expanded = scale * (first + tail.view(k, batch).mean(0))
            if weight < 1.0:  # blend with SAC's one-step target r + γ V(s')
                one_step = self.gamma * self._soft_value(data.next_observations.float(), ent_coef)
                expanded = weight * expanded + (1.0 - weight) * one_step
            discounts = th.zeros_like(data.rewards)
        not_done = 1.0 - data.dones
        rewards = data.rewards + not_done * expanded[:, None].to(data.rewards.dtype)
        next_obs = state[:batch].to(data.next_observations.dtype)
        return ReplayBufferSamples(
            observations=data.observations,
            actions=data.actions,
            next_observations=next_obs,
            dones=data.dones,
            rewards=rewards,
            discounts=discounts,
        )

    # ------------------------------------------------------------------------------------ learning
    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        """Model updates (``model_gradient_steps`` per SAC step), then SAC's own ``train`` on expanded batches
        once ``model_learning_starts`` model updates are done."""
        losses = self.train_models(gradient_steps * self.model_gradient_steps)
        self.replay_buffer.expansion = self._expansion if self._expanding() else None
        super().train(gradient_steps, batch_size)
        for key, value in losses.items():
            self.logger.record(f"model/{key}", value)
        self.logger.record("model/expanding", float(self._expanding()))
        self.logger.record(
            "model/expansion_weight", self.current_expansion_weight() if self._expanding() else 0.0
        )

    def learn(
        self: SelfGammaMVE,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "GammaMVE",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfGammaMVE:
        return super().learn(
            total_timesteps, callback, log_interval, tb_log_name, reset_num_timesteps, progress_bar
        )

    def _setup_learn(self, *args: Any, **kwargs: Any):
        result = super()._setup_learn(*args, **kwargs)
        self.replay_buffer.expansion = self._expansion if self._expanding() else None
        return result
