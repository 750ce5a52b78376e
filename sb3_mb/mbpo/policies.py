"""MBPO's policy: SB3's SAC actor-critic and the ensemble dynamics model, with every network size.

MBPO's agent is SAC (Haarnoja et al. 2018, arXiv:1801.01290) trained on model rollouts (Janner et al. 2019,
arXiv:1906.08253, Alg. 2), so :class:`MBPOPolicy` is SB3's :class:`~stable_baselines3.sac.policies.SACPolicy`
that also builds the learned model, :attr:`MBPOPolicy.dynamics`. Saved with the policy, it goes wherever
the policy goes (``.to(device)``, ``save`` / ``load``); the algorithm holds the learning rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.torch_layers import FlattenExtractor
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from stable_baselines3.sac.policies import LOG_STD_MAX, LOG_STD_MIN, Actor, SACPolicy
from torch import nn

from sb3_mb.common.dynamics import DynamicsModel, RewardModel
from sb3_mb.common.symlog import symlog

__all__ = [
    "MODEL_REWARDS",
    "MBPOActor",
    "MBPOPolicy",
    "MlpPolicy",
    "SymlogFlattenExtractor",
    "mean_action_values",
]

#: ``MBPOPolicy(model_reward=...)``: the ensemble's reward column, or a separate ``r(s, a, s')`` model.
MODEL_REWARDS = ("joint", "separate")


class SymlogFlattenExtractor(FlattenExtractor):
    """SB3's flatten extractor followed by :func:`~sb3_mb.common.symlog.symlog` of every feature: DreamerV3's
    input squashing (Hafner et al. 2023, arXiv:2301.04104, Sec. 3), the identity near 0, logarithmic for
    ``|x| >> 1``, so inputs of magnitude 1e2-1e3 do not saturate the first layer.

    ``forward``: observations ``(batch, *obs_shape)`` -> ``(batch, prod(obs_shape))``.
    """

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return symlog(super().forward(observations))


class MBPOActor(Actor):
    """SB3's SAC actor whose log standard deviation is clamped to ``log_std_bounds``.

    SB3 clamps to its module constants ``[LOG_STD_MIN, LOG_STD_MAX] = [-20, 2]``; VaGraM's agent (Voelcker et
    al. 2022, arXiv:2204.01464, built on the SAC of Yarats & Kostrikov's ``pytorch_sac``) bounds it to
    ``[-5, 2]``, which caps how deterministic the policy may become. The released actor maps its raw output
    into the bounds with a tanh; here it is clamped, as SB3 does, only the bounds change.

    :param log_std_bounds: ``(min, max)`` of the log standard deviation. Ignored with gSDE (``use_sde``),
        whose log-std is a parameter, not an output.
    :raises ValueError: unless ``min < max``.
    """

    def __init__(self, *args, log_std_bounds: Sequence[float] = (LOG_STD_MIN, LOG_STD_MAX), **kwargs):
        super().__init__(*args, **kwargs)
        low, high = (float(bound) for bound in log_std_bounds)
        if not low < high:
            raise ValueError(f"log_std_bounds must be (min, max) with min < max, got {tuple(log_std_bounds)}")
        self.log_std_bounds = (low, high)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {**super()._get_constructor_parameters(), "log_std_bounds": self.log_std_bounds}

    def get_action_dist_params(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor, dict[str, th.Tensor]]:
        """Mean ``(batch, action_dim)`` and log-std ``(batch, action_dim)`` in ``log_std_bounds``."""
        if self.use_sde:
            return super().get_action_dist_params(obs)
        latent_pi = self.latent_pi(self.extract_features(obs, self.features_extractor))
        log_std = th.clamp(self.log_std(latent_pi), *self.log_std_bounds)  # type: ignore[operator]
        return self.mu(latent_pi), log_std, {}


class MBPOPolicy(SACPolicy):
    """SAC's actor and critics (SB3's arguments, see :class:`~stable_baselines3.sac.policies.SACPolicy`) and
    MBPO's ensemble dynamics model :attr:`dynamics` on ``[s, a] -> [s' - s, r]``.

    Defaults: SB3's SAC networks (``net_arch=[256, 256]``; MBPO and VaGraM's Hopper agents use
    ``[1024, 1024]``) and MBPO's model (Janner et al. 2019, App. C; VaGraM the same).

    :param log_std_bounds: the actor's log-std clamp (SB3's ``(-20, 2)``; VaGraM ``(-5, 2)``), see
        :class:`MBPOActor`.
    :param model_net_arch: hidden layer sizes of every ensemble member (``[200, 200, 200, 200]``; VaGraM's
        capacity experiments ``[64, 64]`` and ``[64, 64, 64]``).
    :param model_ensemble_size: members of the ensemble (7).
    :param model_n_elites: members used in rollouts, chosen on the holdout (5).
    :param model_activation_fn: activation of the members (``nn.SiLU``).
    :param model_deterministic: mean-only head instead of a Gaussian one; MBPO sets it from its
        ``model_loss`` (a Gaussian head for ``"nll"`` only).
    :param model_normalize_targets: the ensemble predicts standardised ``[s' - s, r]`` and returns raw units
        (:class:`~sb3_mb.common.dynamics.DynamicsModel`); off as in MBPO's code, which normalises the inputs
        only. Turn it on when the reward's units are far from the state differences' (on
        ``sb3_mb/DoubleIntegrator-v0`` the off model does not learn at all: its error equals the targets'
        std).
    :param model_symlog_reward: the ensemble's reward column is ``symlog(r / kappa)`` (``kappa``: MBPO's
        ``reward_scale``, 1 without), rollouts decode it (:class:`~sb3_mb.common.dynamics.DynamicsModel`);
        off as in MBPO. Turn it on when the rewards span orders of magnitude (module docstring of
        :mod:`sb3_mb.common.dynamics`).
    :param model_reward: where rollout rewards come from: ``"joint"``, the ensemble's last column on
        ``[s, a]`` (MBPO), or ``"separate"``, a :class:`~sb3_mb.common.dynamics.RewardModel` ``r(s, a, s')``
        (:attr:`reward_model`, STEVE's design) beside a transition-only :attr:`dynamics`, with the same
        sizes, head, target normalisation and symlog reward; it reads ``symlog([s, a, s'])`` when
        ``symlog_observations`` is on.
    :param symlog_observations: actor and critics (and a separate reward model) read ``symlog(s)``
        (:class:`SymlogFlattenExtractor` as the ``features_extractor_class``); the transition model reads raw
        states. Off (MBPO's networks read raw states).
    :raises ValueError: for bad sizes (:class:`~sb3_mb.common.ensemble.EnsembleMLP`) or bounds, or an unknown
        ``model_reward``.
    """

    actor: MBPOActor

    def __init__(
        self,
        observation_space: spaces.Box,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        log_std_bounds: Sequence[float] = (LOG_STD_MIN, LOG_STD_MAX),
        model_net_arch: Sequence[int] | None = None,
        model_ensemble_size: int = 7,
        model_n_elites: int = 5,
        model_activation_fn: type[nn.Module] = nn.SiLU,
        model_deterministic: bool = False,
        model_normalize_targets: bool = False,
        model_symlog_reward: bool = False,
        model_reward: str = "joint",
        symlog_observations: bool = False,
        **sac_kwargs: Any,
    ):
        if model_reward not in MODEL_REWARDS:
            raise ValueError(f"Unknown model_reward {model_reward!r}; expected one of {MODEL_REWARDS}")
        if symlog_observations:
            sac_kwargs["features_extractor_class"] = SymlogFlattenExtractor
        self.log_std_bounds = tuple(log_std_bounds)  # read by make_actor() inside SACPolicy.__init__
        super().__init__(observation_space, action_space, lr_schedule, net_arch, activation_fn, **sac_kwargs)
        self.model_net_arch = [200, 200, 200, 200] if model_net_arch is None else list(model_net_arch)
        self.model_ensemble_size, self.model_n_elites = model_ensemble_size, model_n_elites
        self.model_activation_fn, self.model_deterministic = model_activation_fn, model_deterministic
        self.model_normalize_targets, self.model_symlog_reward = model_normalize_targets, model_symlog_reward
        self.symlog_observations, self.model_reward = symlog_observations, model_reward
        obs_dim, action_dim = int(observation_space.shape[0]), int(action_space.shape[0])
        ensemble_kwargs = dict(
            ensemble_size=model_ensemble_size,
            net_arch=self.model_net_arch,
            activation_fn=model_activation_fn,
            deterministic=model_deterministic,
            n_elites=model_n_elites,
            normalize_targets=model_normalize_targets,
        )
        joint = model_reward == "joint"
        self.dynamics = DynamicsModel(
            obs_dim,
            action_dim,
            learned_reward=joint,
            symlog_reward=model_symlog_reward and joint,
            **ensemble_kwargs,
        )
        self.reward_model: RewardModel | None = None
        if not joint:
            self.reward_model = RewardModel(
                obs_dim,
                action_dim,
                symlog_reward=model_symlog_reward,
                symlog_inputs=symlog_observations,
                **ensemble_kwargs,
            )

    def make_actor(self, features_extractor=None) -> MBPOActor:
        actor_kwargs = self._update_features_extractor(self.actor_kwargs, features_extractor)
        return MBPOActor(**actor_kwargs, log_std_bounds=self.log_std_bounds).to(self.device)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        return {
            **super()._get_constructor_parameters(),
            "log_std_bounds": self.log_std_bounds,
            "model_net_arch": self.model_net_arch,
            "model_ensemble_size": self.model_ensemble_size,
            "model_n_elites": self.model_n_elites,
            "model_activation_fn": self.model_activation_fn,
            "model_deterministic": self.model_deterministic,
            "model_normalize_targets": self.model_normalize_targets,
            "model_symlog_reward": self.model_symlog_reward,
            "model_reward": self.model_reward,
            "symlog_observations": self.symlog_observations,
        }


MlpPolicy = MBPOPolicy


def mean_action_values(policy: SACPolicy, obs: th.Tensor, use_all_vf: bool = True) -> th.Tensor:
    """State values ``V_k(s) = Q_k(s, tanh(mu(s)))`` at the policy's mean action, one column per critic.

    The action is computed without gradient (detached), so gradients flow to ``obs`` only through ``Q``'s
    state input. VaGraM (Voelcker et al. 2022, arXiv:2204.01464): ``use_all_vf`` uses four value functions,
    ``Q1, Q2`` and the targets ``Q1', Q2'``; otherwise ``Q1, Q2``.

    :param policy: SAC policy (actor, critic, critic_target).
    :param obs: ``(batch, obs_dim)`` raw observations.
    :return: ``(batch, n_vf)`` with ``n_vf = 4`` (``use_all_vf``) or the number of critics.
    """
    with th.no_grad():
        action = policy.actor(obs.detach(), deterministic=True)
    values = list(policy.critic(obs, action))
    if use_all_vf:
        values += list(policy.critic_target(obs, action))
    return th.cat(values, dim=1)
