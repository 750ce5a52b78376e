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
``model_learning_starts`` model updates. Limits: the γ-model does not model terminations (rollouts never end
inside the model; fine for Pendulum, biased for tasks with early termination).
"""

from __future__ import annotations

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
        learning rate 1e-3).
    :param reward_net_arch: hidden sizes of the reward model ``r(s, a)`` ((256, 256), ReLU, Adam 3e-4).
    :param sac_kwargs: SB3 SAC's arguments (``learning_rate``, ``buffer_size``, ``gamma``, ...).
    :raises ValueError: for an unsupported space, or γ̃ outside ``[0, gamma]`` or ``H < 1``.
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
    def _soft_reward(self, obs: th.Tensor, ent_coef: th.Tensor) -> th.Tensor:
        """``ρ(x) = r(x, a) - α log π(a | x)``, one ``a ~ π(x)``: ``obs (B, d)`` → ``(B,)``."""
        actions, log_prob = self.actor.action_log_prob(obs)
        return self.predicted_rewards(obs, actions) - ent_coef * log_prob.reshape(-1)

    @th.no_grad()
    def _expansion(self, data: ReplayBufferSamples) -> ReplayBufferSamples:
        """The batch with the γ-MVE target's ``(rewards, next_observations, discounts)`` (module
        docstring)."""
        horizon = self.value_expansion_horizon
        alphas, bootstrap = gamma_mve_weights(self.gamma, self.model_gamma, horizon)
        ent_coef = (
            th.exp(self.log_ent_coef.detach()) if self.log_ent_coef is not None else self.ent_coef_tensor
        )
        state, actions = data.observations.float(), data.actions.float()
        expanded = th.zeros_like(data.rewards[:, 0])
        for n in range(horizon):
            state = self.gamma_model.sample(state, actions)[0]
            rho = self._soft_reward(state, ent_coef)
            expanded = expanded + self.gamma * float(alphas[n]) * rho
            actions, _ = self.actor.action_log_prob(state)
        expanded = expanded - bootstrap * rho
        not_done = 1.0 - data.dones
        return ReplayBufferSamples(
            observations=data.observations,
            actions=data.actions,
            next_observations=state,
            dones=data.dones,
            rewards=data.rewards + not_done * expanded[:, None],
            discounts=th.full_like(data.rewards, bootstrap),
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
