"""PlaNet's policy: the world model (encoder, RSSM, decoder, reward head) and CEM planning in latent space.

Hafner et al. 2019, "Learning Latent Dynamics for Planning from Pixels", arXiv:1811.04551 (the camera-ready
version unless arXiv v1 is named). ``predict`` is the acting step of the paper's Alg. 1:

1. filter: ``h_t = f(h_{t-1}, s_{t-1}, a_{t-1})`` and ``s_t ~ q(s_t | h_t, o_t)`` (Sec. 3, Eq. 4;
   :meth:`~sb3_mb.planet.rssm.RSSM.obs_step`);
2. plan: the cross-entropy method over action sequences ``a_{t..t+H-1}``, each scored by the summed predicted
   rewards of a prior rollout from ``(h_t, s_t)`` (Sec. 2, "Planning algorithm", and Alg. 2 of the
   appendix), every candidate of every env in one batch;
3. act: the first action of the plan, plus exploration noise when ``deterministic=False`` (Gaussian noise
   ``exploration_noise`` for ``Box`` actions, Alg. 1).

``Discrete`` actions follow the discrete-action adaptation of Rose's PlaNet fork (github.com/rosea-tf/planet),
which the paper does not have: the RSSM reads one-hot actions, the CEM is over per-step categoricals
(:class:`~sb3_mb.common.planners.CategoricalCEM`) and exploration is ε-greedy (``exploration_epsilon``).

What ``predict`` carries from one step to the next is a :class:`PlaNetState`; ``episode_start[i]`` sets
env ``i``'s row to zeros (sb3-contrib's RecurrentPPO contract, so ``evaluate_policy`` and ``EvalCallback``
carry it unchanged).

Actions inside the model: ``Box`` actions scaled to ``[-1, 1]`` (SB3's ``scale_action``; the CEM searches
there and the env gets ``unscale_action``); ``Discrete(n)`` actions as one-hot vectors of size ``n``.

The transition model is the paper's RSSM unless ``transition_model``, ``mean_only``, ``cw_tau`` or
``tap_cell`` pick the paper's ablations or the variants of Rose's fork (:mod:`sb3_mb.planet.transition`;
``dumbnet`` the fork's tiny encoder / decoder, :mod:`sb3_mb.planet.networks`). Every setting of the model and
the planner is an argument of :class:`PlaNetPolicy` (the algorithm's ``policy_kwargs``) and is documented
there alone.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.torch_layers import create_mlp
from stable_baselines3.common.type_aliases import Schedule
from torch import nn
from torch.nn import functional as F

from sb3_mb.common.checks import describe_non_finite
from sb3_mb.common.conv import IMAGE_SIZE, ConvDecoder, ConvEncoder, preprocess_observation
from sb3_mb.common.distributions import LOG_2PI, gaussian_kl, gaussian_nll
from sb3_mb.common.planners import CategoricalCEM, GaussianCEM, PlanResult
from sb3_mb.common.states import StateSpec
from sb3_mb.common.symlog import SCALE_QUANTILE as REWARD_SCALE_QUANTILE
from sb3_mb.common.symlog import reward_scale, symexp, symlog
from sb3_mb.planet.fused import (
    FusedWeights,
    fused_prior_returns,
    fused_weights,
    parameter_versions,
    supports_fused_objective,
)
from sb3_mb.planet.networks import DumbConvDecoder, DumbConvEncoder, dumb_mlp_decoder, dumb_mlp_encoder
from sb3_mb.planet.rssm import RSSMState, TransitionModel
from sb3_mb.planet.transition import make_transition_model


class PlaNetState(NamedTuple):
    """What :meth:`PlaNetPolicy.predict` carries between steps: float32 numpy arrays, env dimension first.

    :ivar belief: the deterministic state ``h_t``, ``(n_envs, belief_size)`` (the transition model's: 0 wide
        for the SSM, the parts' concatenation for the moving-average RSSM).
    :ivar posterior_mean: mean of the posterior ``q(s_t | h_t, o_t)``, ``(n_envs, state_size)``.
    :ivar posterior_std: its standard deviation, ``(n_envs, state_size)``. The RSSM's next step reads only
        ``belief`` and ``posterior_sample``; the moving-average RSSM averages every field.
    :ivar posterior_sample: ``s_t`` drawn from the posterior, ``(n_envs, state_size)``.
    :ivar prev_action: the action just taken as the model reads it (``[-1, 1]``-scaled ``Box`` action or
        one-hot ``Discrete`` action, exploration included): ``a_{t-1}`` of the next filter step,
        ``(n_envs, action_dim)``.
    :ivar plan: the CEM's final mean (``Box``) or logits (``Discrete``) shifted one step earlier with zeros
        appended, ``(n_envs, planning_horizon, action_dim)``. The next CEM starts from it only with
        ``warm_start=True``; it is carried either way, so the state's layout never depends on a setting.
    :ivar episode_step: observations filtered since the episode start, ``(n_envs, 1)`` (0 after a reset): the
        time of the clockwork RSSM's clock (:class:`~sb3_mb.planet.transition.ClockworkRSSM`), carried for
        every model.
    :ivar tap_belief, tap_mean, tap_std, tap_sample: the time-agnostic (``tap_cell``) model's posterior, as
        the four fields above; 0 wide without a tap cell.
    """

    belief: np.ndarray
    posterior_mean: np.ndarray
    posterior_std: np.ndarray
    posterior_sample: np.ndarray
    prev_action: np.ndarray
    plan: np.ndarray
    episode_step: np.ndarray
    tap_belief: np.ndarray
    tap_mean: np.ndarray
    tap_std: np.ndarray
    tap_sample: np.ndarray


def check_action_space(action_space: spaces.Space) -> None:
    """Raise a clear error unless ``action_space`` is a flat bounded ``Box`` or a ``Discrete``.

    :raises ValueError: for other action space types, a ``Box`` that is not flat ``(action_dim,)``, or an
        unbounded ``Box``.
    """
    if not isinstance(action_space, spaces.Box | spaces.Discrete):
        raise ValueError(
            f"PlaNet supports Box or Discrete action spaces, got the action space {action_space}"
        )
    if isinstance(action_space, spaces.Box) and len(action_space.shape) != 1:
        raise ValueError(
            f"PlaNet needs a flat Box action space of shape (action_dim,), got shape {action_space.shape} "
            f"({action_space}); wrap the env so that it takes flat actions of shape "
            f"({int(np.prod(action_space.shape))},)"
        )
    if isinstance(action_space, spaces.Box) and not (
        np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))
    ):
        raise ValueError(f"PlaNet needs a bounded Box action space (the CEM clips to it), got {action_space}")


def check_spaces(observation_space: spaces.Space, action_space: spaces.Space, use_conv: bool) -> None:
    """Raise a clear error for spaces PlaNet does not support.

    Supported: ``Box`` (bounded) or ``Discrete`` actions; ``Box`` vector observations (``MlpPolicy``) or
    ``(C, 64, 64)`` uint8 images, channel-first after SB3's ``VecTransposeImage`` (``CnnPolicy``).

    :raises ValueError: for any other observation or action space type, ``Box`` actions that are unbounded or
        not flat, or observations of the wrong shape for the policy.
    """
    check_action_space(action_space)
    if not isinstance(observation_space, spaces.Box):
        raise ValueError(
            f"PlaNet supports Box observation spaces (vectors or 64x64 images), got the observation space "
            f"{observation_space}"
        )
    if use_conv:
        shape = observation_space.shape
        if not (
            is_image_space(observation_space, check_channels=False)
            and len(shape) == 3
            and shape[1:] == (IMAGE_SIZE, IMAGE_SIZE)
        ):
            raise ValueError(
                f"CnnPolicy needs a uint8 image observation space of shape (C, {IMAGE_SIZE}, {IMAGE_SIZE}) "
                f"(channel-first, as after VecTransposeImage), got {observation_space}"
            )
    elif len(observation_space.shape) != 1:
        raise ValueError(
            "MlpPolicy needs a 1-D Box observation space; use CnnPolicy for 64x64 images. "
            f"Got {observation_space}"
        )


class PlaNetPolicy(BasePolicy):
    """PlaNet's world model and latent-space planner; the defaults are the paper's (App. A).

    :param observation_space: ``Box`` vector (``use_conv=False``) or ``(C, 64, 64)`` uint8 image.
    :param action_space: bounded ``Box`` or ``Discrete``.
    :param lr_schedule: learning-rate schedule; the optimizer starts at ``lr_schedule(1)``.
    :param belief_size: size of the deterministic state ``h`` (GRU, 200); a tuple: one per clockwork cell.
    :param state_size: size of the stochastic state ``s`` (diagonal Gaussian, 30); a tuple: one per cell.
    :param hidden_size: dense layers around the GRU (200).
    :param min_std: floor added to the softplus of the prior and posterior std (0.1).
    :param future_rnn: the prior reads the new belief (camera-ready, True) or the pre-GRU embedding (arXiv
        v1); see :class:`~sb3_mb.planet.rssm.RSSM`.
    :param transition_model: ``"rssm"`` (the paper's), ``"ssm"`` (the paper's purely stochastic ablation, no
        deterministic state: ``belief_size`` unused) or ``"rssm_ma"`` (the moving-average RSSM of Rose's
        fork); :mod:`sb3_mb.planet.transition`.
    :param mean_only: every sample of the transition model is its mean: with ``"rssm"`` the paper's purely
        deterministic RNN ablation (the original code's ``mean_only``).
    :param ma_ppn: ``"rssm_ma"``: share of the belief and the state in the slow, averaged part (fork: 0.25).
    :param ma_alpha: ``"rssm_ma"``: weight of the new value in the slow part's moving average (fork: 0.25).
    :param cw_tau: the clockwork RSSM of Rose's fork (:class:`~sb3_mb.planet.transition.ClockworkRSSM`):
        the period of each cell, fastest first, starting at 1 (fork: ``(1, 4)`` with ``belief_size=(100,
        100)``, ``state_size=(15, 15)``); cells of the kind ``transition_model``. 1: one cell, no clock.
    :param tap_cell: time-agnostic prediction (TAP) of Rose's fork (``tap_cell: rssm``): a second transition
        model of this kind (one of ``transition_model``'s names), with the whole model's sizes (so the heads
        read its features), learnt by the TAP loss (:meth:`~sb3_mb.planet.planet.PlaNet._tap_losses`) and
        rolled out beside the main model in planning, where it costs :meth:`tap_penalty`. None: off.
    :param tap_penalty_scale: the penalty's scale in predicted-reward standard deviations (fork:
        ``tap_rwd_scale`` 1).
    :param dumbnet: the tiny encoder / decoder of Rose's fork for ablations
        (:mod:`sb3_mb.planet.networks`); ``cnn_depth`` and ``mlp_hidden_sizes`` are then unused. The reward
        head keeps ``reward_hidden_sizes`` (the fork's dumbnet heads are 2 x 10).
    :param use_conv: the 64x64 conv encoder / decoder of Ha & Schmidhuber 2018 (``CnnPolicy``) or MLPs
        (``MlpPolicy``).
    :param cnn_depth: conv channel multiplier (32: a 1024-D embedding).
    :param mlp_hidden_sizes: hidden layers of the vector encoder and decoder (``(200, 200)``).
    :param reward_hidden_sizes: hidden layers of the reward head (paper: 3 x 300; Rose's fork: 2 x 100).
    :param activation_fn: activation of every network (ReLU).
    :param bit_depth: image quantisation in bits (5).
    :param normalize_rewards: the reward head predicts ``symlog(r / reward_scale)`` and :meth:`reward` returns
        ``reward_scale * symexp(prediction)`` (True), with ``reward_scale`` measured once on the replay buffer
        at the first update and saved with the model (:meth:`set_reward_scale`). A deviation from the paper's
        unit-variance likelihood of raw rewards, which makes the reward term's weight against the observation
        and KL terms depend on the reward's units (rewards x 1e3 swamp it, x 1e-3 vanish) and lets rare large
        rewards dominate the fit. Dividing by a measured scale makes learning invariant to the units; the
        symlog turns a target error ``e`` into a reward error of about ``e (reward_scale + |r|)``: absolute
        below the scale, relative above it. False: the paper's.
    :param planning_horizon: CEM horizon H in agent steps (12).
    :param n_candidates: action sequences per CEM iteration and env, J (1000).
    :param n_elites: best sequences the CEM refits on, K (100).
    :param n_iterations: CEM iterations, I (10).
    :param warm_start: start each CEM from the previous plan shifted one step (Rose's fork) instead of zeros.
    :param plan_on_prior_mean: score each candidate on the prior's mean trajectory from the posterior's mean,
        instead of one sampled trajectory from the posterior's sample (False: the paper's). While the KL stays
        under ``free_nats`` (vector observations carry a few nats a step) the prior's spread is not trained,
        and one sample per candidate makes the ranking noisy: on the double integrator the sampled return of
        one plan had a standard deviation of 3-15 where the best plan and doing nothing differ by 5 (see
        ``hyperparams/planet.yml``).
    :param discount: per-step discount of the planning objective (paper: 1, undiscounted; Rose's fork: 0.99).
    :param exploration_noise: std of the Gaussian noise added to ``Box`` actions while exploring, in the
        ``[-1, 1]`` scale (0.3).
    :param exploration_epsilon: ε of the ε-greedy exploration of ``Discrete`` actions (Rose's fork: 0.1).
    :param fused_planning: score the candidates with the fused loop of :mod:`sb3_mb.planet.fused` (the same
        math and random numbers, equal to float rounding; at the paper's sizes on one CPU thread 1462 ms per
        action against 2086, ``benchmarks/planner_speed.py``) where it applies: the paper's RSSM without a
        tap cell, outside autograd. False: always the reference path (:meth:`planning_objective`).
    :param fast_conv: the conv encoder's and decoder's fast paths (:mod:`sb3_mb.common.conv`:
        channels-last activations for batches of 64 frames or more, the decoder's first transposed conv as
        one matrix product; the same parameters and math, to float32 rounding; the model update at the
        paper's sizes 13.9 s against 19.8 s on one CPU thread, ``benchmarks/planet_update_speed.py``).
        False: the plain NCHW reference convolutions.
    :param optimizer_class: (Adam). :param optimizer_kwargs: (``{"eps": 1e-4}``, the paper's Adam epsilon).
    :raises ValueError: see :func:`check_spaces`; also for CEM sizes that do not fit (``n_elites >
        n_candidates``, a size below 1), an unknown ``transition_model`` (naming the choices) and ``ma_ppn`` /
        ``ma_alpha`` out of range (:func:`~sb3_mb.planet.transition.make_transition_model`).
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        belief_size: int | tuple[int, ...] = 200,
        state_size: int | tuple[int, ...] = 30,
        hidden_size: int = 200,
        min_std: float = 0.1,
        future_rnn: bool = True,
        transition_model: str = "rssm",
        mean_only: bool = False,
        ma_ppn: float = 0.25,
        ma_alpha: float = 0.25,
        cw_tau: int | tuple[int, ...] = 1,
        tap_cell: str | None = None,
        tap_penalty_scale: float = 1.0,
        dumbnet: bool = False,
        use_conv: bool = False,
        cnn_depth: int = 32,
        mlp_hidden_sizes: tuple[int, ...] = (200, 200),
        reward_hidden_sizes: tuple[int, ...] = (300, 300, 300),
        activation_fn: type[nn.Module] = nn.ReLU,
        bit_depth: int = 5,
        normalize_rewards: bool = True,
        planning_horizon: int = 12,
        n_candidates: int = 1000,
        n_elites: int = 100,
        n_iterations: int = 10,
        warm_start: bool = False,
        plan_on_prior_mean: bool = False,
        discount: float = 1.0,
        exploration_noise: float = 0.3,
        exploration_epsilon: float = 0.1,
        fused_planning: bool = True,
        fast_conv: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
    ):
        check_spaces(observation_space, action_space, use_conv)
        super().__init__(
            observation_space,
            action_space,
            optimizer_class=optimizer_class,
            optimizer_kwargs={"eps": 1e-4} if optimizer_kwargs is None else optimizer_kwargs,
            normalize_images=False,
            squash_output=isinstance(action_space, spaces.Box),
        )
        self.discrete = isinstance(action_space, spaces.Discrete)
        self.action_dim = int(action_space.n) if self.discrete else int(np.prod(action_space.shape))
        # Sizes per clockwork cell are tuples (a saved model's JSON brings lists back).
        belief_size, state_size, cw_tau = (
            x if isinstance(x, int) else tuple(x) for x in (belief_size, state_size, cw_tau)
        )
        self.belief_size, self.state_size, self.hidden_size = belief_size, state_size, hidden_size
        self.min_std, self.future_rnn, self.use_conv = min_std, future_rnn, use_conv
        self.cnn_depth, self.activation_fn, self.bit_depth = cnn_depth, activation_fn, bit_depth
        self.normalize_rewards = normalize_rewards
        self.transition_model, self.mean_only = transition_model, mean_only
        self.ma_ppn, self.ma_alpha, self.cw_tau, self.dumbnet = ma_ppn, ma_alpha, cw_tau, dumbnet
        self.tap_cell, self.tap_penalty_scale = tap_cell, tap_penalty_scale
        self.mlp_hidden_sizes, self.reward_hidden_sizes = tuple(mlp_hidden_sizes), tuple(reward_hidden_sizes)
        self.planning_horizon, self.n_candidates = planning_horizon, n_candidates
        self.fused_planning, self.fast_conv = fused_planning, fast_conv
        self.n_elites, self.n_iterations = n_elites, n_iterations
        self.warm_start, self.discount = warm_start, discount
        self.plan_on_prior_mean = plan_on_prior_mean
        self.exploration_noise, self.exploration_epsilon = exploration_noise, exploration_epsilon

        if use_conv:
            channels = observation_space.shape[0]
            if dumbnet:
                self.encoder: nn.Module = DumbConvEncoder(channels, activation_fn)
            else:
                self.encoder = ConvEncoder(channels, cnn_depth, activation_fn, channels_last=fast_conv)
            embedding_dim = self.encoder.features_dim
        else:
            obs_dim = observation_space.shape[0]
            if dumbnet:
                self.encoder = dumb_mlp_encoder(obs_dim, activation_fn)
                embedding_dim = self.encoder[0].out_features
            else:
                hidden = list(self.mlp_hidden_sizes)
                self.encoder = nn.Sequential(*create_mlp(obs_dim, -1, hidden, activation_fn))
                embedding_dim = self.mlp_hidden_sizes[-1] if self.mlp_hidden_sizes else obs_dim
        self.rssm = make_transition_model(
            transition_model,
            self.action_dim,
            embedding_dim,
            belief_size,
            state_size,
            hidden_size,
            min_std,
            activation_fn,
            future_rnn,
            mean_only,
            ma_ppn,
            ma_alpha,
            cw_tau,
        )
        self.tap: TransitionModel | None = None
        if tap_cell is not None:
            sizes = [x if isinstance(x, int) else sum(x) for x in (belief_size, state_size)]
            args = (hidden_size, min_std, activation_fn, future_rnn, mean_only, ma_ppn, ma_alpha)
            self.tap = make_transition_model(tap_cell, self.action_dim, embedding_dim, *sizes, *args)
            if (self.tap.feature_dim, self.tap.state_size) != (self.rssm.feature_dim, self.rssm.state_size):
                raise ValueError(
                    f"tap_cell={tap_cell!r} has {self.tap.feature_dim} features and a state of "
                    f"{self.tap.state_size}, the main model {self.rssm.feature_dim} and "
                    f"{self.rssm.state_size}; they must match (the heads decode both, the penalty compares "
                    "their states)"
                )
        feature_dim = self.rssm.feature_dim
        if use_conv and dumbnet:
            self.decoder: nn.Module = DumbConvDecoder(feature_dim, channels, activation_fn)
        elif use_conv:
            fast = dict(channels_last=fast_conv, dense_first_layer=fast_conv)
            self.decoder = ConvDecoder(feature_dim, channels, cnn_depth, activation_fn, **fast)
        elif dumbnet:
            self.decoder = dumb_mlp_decoder(feature_dim, obs_dim, activation_fn)
        else:
            self.decoder = nn.Sequential(
                *create_mlp(feature_dim, obs_dim, list(self.mlp_hidden_sizes), activation_fn)
            )
        self.reward_model = nn.Sequential(
            *create_mlp(feature_dim, 1, list(self.reward_hidden_sizes), activation_fn)
        )
        # The reward unit of normalize_rewards; 0 until measured (set_reward_scale). A buffer, so it is saved.
        self.register_buffer("reward_scale", th.zeros(()))

        cem_class = CategoricalCEM if self.discrete else GaussianCEM
        self.planner = cem_class(planning_horizon, self.action_dim, n_candidates, n_elites, n_iterations)
        self.state_spec = StateSpec(
            PlaNetState,
            {
                "belief": (self.rssm.belief_size,),
                "posterior_mean": (self.rssm.state_size,),
                "posterior_std": (self.rssm.state_size,),
                "posterior_sample": (self.rssm.state_size,),
                "prev_action": (self.action_dim,),
                "plan": (planning_horizon, self.action_dim),
                "episode_step": (1,),
                "tap_belief": (0 if self.tap is None else self.tap.belief_size,),
                "tap_mean": (0 if self.tap is None else self.tap.state_size,),
                "tap_std": (0 if self.tap is None else self.tap.state_size,),
                "tap_sample": (0 if self.tap is None else self.tap.state_size,),
            },
            owner="PlaNet",
        )
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        del data["normalize_images"]  # images are the model's to preprocess (bit depth), never SB3's
        # Every argument is kept under its own name, so the signature stays the one list of the settings.
        settings = list(inspect.signature(PlaNetPolicy.__init__).parameters)[4:]
        data.update({name: getattr(self, name) for name in settings}, lr_schedule=self._dummy_schedule)
        return data

    # ----------------------------------------------------------------------------------------------
    # World model
    # ----------------------------------------------------------------------------------------------
    def preprocess(
        self, observations: th.Tensor, noise: bool = True, generator: th.Generator | None = None
    ) -> th.Tensor:
        """Observations as the model sees them.

        Images ``(..., C, 64, 64)`` uint8: reduced to ``bit_depth`` bits, dequantisation noise (if ``noise``),
        centred on 0 (App. A; :func:`~sb3_mb.common.conv.preprocess_observation`). Vectors: float32 as given.
        """
        if self.use_conv:
            return preprocess_observation(
                observations, self.bit_depth, noise=noise, channels_last=False, generator=generator
            )
        return observations.float()

    def model_actions(self, actions: th.Tensor) -> th.Tensor:
        """Replay-buffer actions as RSSM inputs ``(..., action_dim)``.

        ``Discrete``: stored indices ``(..., 1)`` become one-hot; ``Box``: ``(..., action_dim)``, in [-1, 1].
        """
        if self.discrete:
            return F.one_hot(actions[..., 0].long(), self.action_dim).float()
        return actions.float()

    def set_reward_scale(self, rewards: np.ndarray) -> bool:
        """Measure ``reward_scale`` from rewards ``(n,)`` (``normalize_rewards``): the
        ``REWARD_SCALE_QUANTILE`` (10 %) quantile of the non-zero ``|r|``, kept once set, so the reward head's
        targets never move under it.

        A low quantile, not the median or the std: the symlog keeps absolute precision below the scale, and
        the best behaviour often earns the smallest rewards (costs near 0). On the double integrator the seed
        episodes' median ``|r|`` ranged from 23c to about 100c between seeds, which left the model unable to
        tell staying at position 1 (-c a step) from the origin (0); the 10 % quantile is about c (cost 11 ->
        0.5 at seed 2, see ``hyperparams/planet.yml``).

        :return: whether the scale is set (False while every reward is 0; zero rewards have the target 0
            whatever the scale, so nothing learnt before is lost when it is set later).
        """
        if self.reward_scale > 0:
            return True
        scale = reward_scale(rewards, REWARD_SCALE_QUANTILE)
        if scale is None:
            return False
        self.reward_scale.fill_(scale)
        return True

    def reward_target(self, rewards: th.Tensor) -> th.Tensor:
        """The reward head's target: ``symlog(r / reward_scale)`` with ``normalize_rewards``, else ``r``."""
        if not self.normalize_rewards:
            return rewards
        return symlog(rewards / self._reward_unit())

    def _reward_unit(self) -> th.Tensor:
        """``reward_scale``, or 1 while it is unmeasured (0)."""
        return th.where(self.reward_scale > 0, self.reward_scale, th.ones_like(self.reward_scale))

    def reward(self, features: th.Tensor) -> th.Tensor:
        """Predicted mean reward ``(...)`` in the env's units from features ``(..., feature_dim)``."""
        return self.reward_from_prediction(self.reward_model(features)[..., 0])

    def reward_from_prediction(self, prediction: th.Tensor) -> th.Tensor:
        """The reward head's output ``(...)`` in the env's units (:meth:`reward` after the head)."""
        if not self.normalize_rewards:
            return prediction
        return symexp(prediction) * self._reward_unit()

    def reward_nll(self, features: th.Tensor, rewards: th.Tensor) -> th.Tensor:
        """NLL (nats) of ``rewards`` ``(...)`` under the unit-variance Gaussian ``p(r_t | h_t, s_t)``, in the
        head's space (:meth:`reward_target`).

        :param features: ``(..., belief_size + state_size)``. :return: ``(...)``, no reduction.
        """
        return gaussian_nll(self.reward_target(rewards), self.reward_model(features)[..., 0])

    def observation_nll(self, features: th.Tensor, target: th.Tensor) -> th.Tensor:
        """NLL (nats) of ``target`` under the unit-variance Gaussian decoder ``p(o_t | h_t, s_t)``, summed
        over the observation's dims (the reconstruction term of Sec. 3, Eq. 3).

        :param features: ``(..., belief_size + state_size)``.
        :param target: preprocessed observations ``(..., *obs_shape)``.
        :return: ``(...)``.
        """
        nll = gaussian_nll(target, self.decoder(features))
        return nll.sum(dim=tuple(range(features.dim() - 1, nll.dim())))

    def pairwise_observation_nll(self, features: th.Tensor, targets: th.Tensor) -> th.Tensor:
        """:meth:`observation_nll` of every target of a sequence under the decoder's mean from every feature
        of it, without decoding pairs: ``0.5 ||x_i - mu_j||^2 + 0.5 D log(2 pi)``.

        :param features: ``(batch, seq_len, feature_dim)``.
        :param targets: preprocessed observations ``(batch, seq_len, *obs_shape)``.
        :return: ``(batch, seq_len, seq_len)``, ``[b, j, i]`` the NLL of target ``i`` from features ``j``.
        """
        means, x = self.decoder(features).flatten(2), targets.flatten(2)
        squared = (
            (means**2).sum(-1)[:, :, None] + (x**2).sum(-1)[:, None, :] - 2.0 * means @ x.transpose(1, 2)
        )
        return 0.5 * squared.clamp(min=0.0) + 0.5 * LOG_2PI * x.shape[-1]

    def tap_penalty(self, priors: RSSMState, tap_priors: RSSMState, rewards: th.Tensor) -> th.Tensor:
        """The planning penalty of time-agnostic prediction (Rose's fork, ``control/planning.py``): per step
        ``(sigmoid(KL) - 0.5) * 2 * tap_penalty_scale * std(rewards)``, with ``KL = KL(main || tap)`` averaged
        over the state's dims: between 0 (the tap cell agrees) and ``tap_penalty_scale`` reward stds.

        The fork computed the KL with guards against TensorFlow's floating-point errors (``epsilon`` 0.1 in
        the log and the denominator); both stds are at least ``min_std`` here, so this is the exact KL. The
        fork took the std over the rewards of every env at once; here it is each env's own.

        :param priors: the main model's rollout, fields ``(n_envs, n_candidates, horizon, ...)``.
        :param tap_priors: the tap cell's rollout under the same actions, likewise.
        :param rewards: the predicted rewards ``(n_envs, n_candidates, horizon)``.
        :return: ``(n_envs, n_candidates, horizon)``, to subtract from the rewards.
        """
        kl = gaussian_kl(priors.mean, priors.std, tap_priors.mean, tap_priors.std) / priors.mean.shape[-1]
        reward_std = rewards.std(dim=(1, 2), unbiased=False, keepdim=True)
        return (th.sigmoid(kl) - 0.5) * 2.0 * self.tap_penalty_scale * reward_std

    # ----------------------------------------------------------------------------------------------
    # Planning and acting
    # ----------------------------------------------------------------------------------------------
    def planning_objective(
        self,
        start: RSSMState,
        generator: th.Generator | None,
        time: th.Tensor | None = None,
        tap_start: RSSMState | None = None,
    ) -> Callable[[th.Tensor], th.Tensor]:
        """The CEM's objective from the state at ``t``: the discounted predicted rewards of a prior rollout
        (less the :meth:`tap_penalty` of a rollout of the tap cell from ``tap_start``, with ``tap_cell``).

        :param start: the filtered state, fields ``(n_envs, ...)``.
        :param generator: ``torch.Generator`` for the prior samples.
        :param time: ``t`` per env, ``(n_envs,)`` int64, for a clocked model (None: 0).
        :param tap_start: the tap cell's filtered state, fields ``(n_envs, ...)``; needed with ``tap_cell``.
        :return: a function from ``(n_envs, n_candidates, planning_horizon, action_dim)`` action sequences to
            ``(n_envs, n_candidates)`` returns; all candidates are one batch of ``n_envs * n_candidates`` rows
            rolled out by the transition model's :meth:`~sb3_mb.planet.rssm.TransitionModel.imagine` (the
            reference path), or with ``fused_planning`` and outside autograd by
            :func:`~sb3_mb.planet.fused.fused_prior_returns` where it applies (the same math and random
            numbers, to float rounding).
        """
        horizon = self.planning_horizon
        weights = self.discount ** th.arange(horizon, device=start.belief.device, dtype=th.float32)
        fused = (
            self.fused_planning
            and self.tap is None
            and supports_fused_objective(self.rssm, self.reward_model)
        )
        prepared: dict[str, Any] = {}  # the fused loop's weights, laid out once for the CEM's iterations

        def fused_weights_now() -> FusedWeights:
            versions = parameter_versions(self.rssm, self.reward_model)
            if prepared.get("versions") != versions:  # first call, or the weights changed since
                prepared.update(versions=versions, weights=fused_weights(self.rssm, self.reward_model))
            return prepared["weights"]

        def objective(actions: th.Tensor) -> th.Tensor:
            n_envs, n_candidates = actions.shape[:2]
            rows, sample = n_envs * n_candidates, not self.plan_on_prior_mean

            def rows_of(state: RSSMState) -> RSSMState:  # every env's state once per candidate
                return state.map(lambda x: x[:, None].expand(n_envs, n_candidates, -1).reshape(rows, -1))

            def by_env(state: RSSMState) -> RSSMState:
                return state.map(lambda x: x.reshape(n_envs, n_candidates, horizon, -1))

            times = None if time is None else time.repeat_interleave(n_candidates)
            actions = actions.reshape(rows, horizon, -1)
            if fused and not th.is_grad_enabled():
                returns = fused_prior_returns(
                    self.rssm,
                    self.reward_model,
                    self.reward_from_prediction,
                    rows_of(start),
                    actions,
                    weights,
                    generator,
                    sample,
                    fused_weights_now(),
                )
                return returns.reshape(n_envs, n_candidates)
            priors = by_env(self.rssm.imagine(rows_of(start), actions, generator, sample, time=times))
            rewards = self.reward(self.rssm.features(priors))  # (n_envs, n_candidates, horizon)
            if self.tap is not None:
                tap_priors = by_env(self.tap.imagine(rows_of(tap_start), actions, generator, sample))
                rewards = rewards - self.tap_penalty(priors, tap_priors, rewards)
            return (rewards * weights).sum(dim=2)

        return objective

    def plan(
        self,
        start: RSSMState,
        initial_plan: th.Tensor,
        generator: th.Generator | None,
        time: th.Tensor | None = None,
        tap_start: RSSMState | None = None,
    ) -> PlanResult:
        """CEM in latent space from the filtered states of ``n_envs`` envs, all candidates in one batch.

        :param start: fields ``(n_envs, ...)``. :param time: their times ``(n_envs,)`` (clockwork; None: 0).
        :param tap_start: the tap cell's filtered state (``tap_cell``), fields ``(n_envs, ...)``.
        :param initial_plan: ``(n_envs, planning_horizon, action_dim)`` mean (Box) or logits (Discrete).
        :param generator: ``torch.Generator`` for the candidates and the prior samples.
        :return: the planner's :class:`~sb3_mb.common.planners.PlanResult`.
        """
        objective = self.planning_objective(start, generator, time, tap_start)
        return self.planner.plan(objective, initial_plan, generator=generator, device=start.belief.device)

    @th.no_grad()
    def act(
        self,
        observation: th.Tensor,
        state: PlaNetState | tuple[np.ndarray, ...] | None,
        episode_start: np.ndarray | None,
        deterministic: bool,
        generator: th.Generator | None,
    ) -> tuple[np.ndarray, PlaNetState, PlanResult]:
        """Filter ``o_t`` and plan, for ``n_envs`` envs at once.

        :param observation: ``(n_envs, *obs_shape)`` tensor on the policy's device (images raw uint8).
        :param state: the previous :class:`PlaNetState` (a plain tuple in its field order will do), or None
            for zeros.
        :param episode_start: ``(n_envs,)`` booleans; true rows of the state are set to zeros. None: no reset.
        :param deterministic: no exploration (True) or Gaussian / ε-greedy exploration (False).
        :param generator: ``torch.Generator`` on the policy's device for every random draw here.
        :return: ``(action, state, plan)``: the action for ``env.step`` (``(n_envs, *action_shape)`` within
            the ``Box`` bounds, or ``(n_envs,)`` int64 indices), the new state and the CEM's outcome.
        :raises ValueError: if the state does not have the fields and shapes of :class:`PlaNetState` for
            ``n_envs`` envs, or ``episode_start`` not one entry per env.
        """
        n_envs, device = observation.shape[0], self.device
        state = self.state_spec.prepare(state, episode_start, n_envs)
        belief, mean, std, sample, prev_action, plan, episode_step, *tap_prev = (
            th.as_tensor(part, dtype=th.float32, device=device) for part in state
        )
        time = episode_step[:, 0].round().long()
        embedding = self.encoder(self.preprocess(observation, noise=True, generator=generator))
        prev = RSSMState(belief, mean, std, sample)
        _, posterior = self.rssm.obs_step(prev, prev_action, embedding, generator, time=time)
        initial_plan = plan if self.warm_start else th.zeros_like(plan)
        # The filter carries the posterior sample either way; the plan may start from the mean.
        start = posterior._replace(sample=posterior.mean) if self.plan_on_prior_mean else posterior
        tap_posterior = tap_start = RSSMState(*tap_prev)
        if self.tap is not None:
            _, tap_posterior = self.tap.obs_step(tap_posterior, prev_action, embedding, generator)
            tap_start = (
                tap_posterior._replace(sample=tap_posterior.mean)
                if self.plan_on_prior_mean
                else tap_posterior
            )
        result = self.plan(start, initial_plan, generator, time, tap_start)

        if self.discrete:
            index = result.action_index
            if not deterministic and self.exploration_epsilon > 0:
                explore = th.rand(n_envs, generator=generator, device=device) < self.exploration_epsilon
                random_index = th.randint(0, self.action_dim, (n_envs,), generator=generator, device=device)
                index = th.where(explore, random_index, index)
            model_action = F.one_hot(index, self.action_dim).float()
            action = index.cpu().numpy().astype(np.int64)
        else:
            model_action = result.action
            if not deterministic and self.exploration_noise > 0:
                noise = th.randn(model_action.shape, generator=generator, device=device)
                model_action = th.clamp(model_action + self.exploration_noise * noise, -1.0, 1.0)
            space = self.action_space
            action = self.unscale_action(model_action.cpu().numpy()).reshape((n_envs, *space.shape))
            action = np.clip(action, space.low, space.high).astype(space.dtype)

        parts = (*posterior, model_action, result.warm_start, episode_step + 1, *tap_posterior)
        new_state = PlaNetState(*(x.cpu().numpy() for x in parts))
        return action, new_state, result

    def make_generator(self, seed_inputs: Sequence[np.ndarray] | None = None) -> th.Generator:
        """A ``torch.Generator`` on the policy's device for one call's random draws (posterior sample, CEM
        candidates, image dequantisation noise, exploration).

        With ``seed_inputs`` (``predict(..., deterministic=True)``: the observation and the state after the
        ``episode_start`` reset, its plan only with ``warm_start``) it is seeded from a hash of those arrays,
        so the action is a function of ``predict``'s arguments alone: a saved and reloaded agent, in any
        process and whatever the global RNGs, replays the same actions, while successive steps still draw
        different noise (one fixed seed would repeat the posterior sample's noise at every step and bias the
        belief: the point-mass learning test fell from -14 to -22). Without, it is seeded from torch's global
        RNG, so ``model.set_random_seed(s)`` (which seeds torch) makes every later exploring call
        reproducible.
        """
        if seed_inputs is None:
            seed = int(th.randint(0, 2**62, (1,)).item())
        else:
            digest = hashlib.blake2b(digest_size=8)
            for part in seed_inputs:
                array = np.ascontiguousarray(part)
                if np.issubdtype(array.dtype, np.floating):
                    array = array + 0.0  # -0.0 (a reset row: state * 0) hashes as 0.0
                digest.update(f"{array.dtype}{array.shape}".encode())
                digest.update(array.tobytes())
            seed = int.from_bytes(digest.digest(), "little") >> 2
        return th.Generator(device=self.device).manual_seed(seed)

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: PlaNetState | tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, PlaNetState]:
        """Action(s) and the next state, sb3-contrib RecurrentPPO's contract.

        :param observation: one observation ``obs_shape`` or a batch ``(n_envs, *obs_shape)``.
        :param state: the :class:`PlaNetState` returned by the previous call, or None for zeros.
        :param episode_start: ``(n_envs,)`` booleans resetting the state's rows; None: no reset.
        :param deterministic: without exploration noise, and with a generator seeded from the observation
            and the state (:meth:`make_generator`): the same arguments give the same actions.
        :return: ``(action, state)``; the action is unbatched when the observation was.
        :raises ValueError: for ``Dict`` observations; see :meth:`act` for the state and ``episode_start``.
        :raises FloatingPointError: for an observation holding NaN or inf (naming the envs).
        """
        self.set_training_mode(False)
        if isinstance(observation, dict):
            raise ValueError("PlaNet does not support Dict observation spaces; it needs a Box observation")
        observation = np.asarray(observation)
        if np.issubdtype(observation.dtype, np.floating) and not np.all(np.isfinite(observation)):
            batch = observation if observation.ndim > len(self.observation_space.shape) else observation[None]
            bad = np.flatnonzero(~np.isfinite(batch.reshape(len(batch), -1)).all(axis=1))
            raise FloatingPointError(
                f"PlaNet: predict got an observation with NaN or inf (env {', '.join(map(str, bad))}): "
                f"{describe_non_finite(observation)}; it would plan from a meaningless belief"
            )
        obs_tensor, vectorized_env = self.obs_to_tensor(observation)
        state = self.state_spec.prepare(state, episode_start, obs_tensor.shape[0])
        # The inputs the action depends on: the carried plan only with warm start.
        seed_inputs = (
            observation.astype(self.observation_space.dtype, copy=False),
            state.belief,
            state.posterior_mean,
            state.posterior_std,
            state.posterior_sample,
            state.prev_action,
            state.episode_step,
            state.tap_belief,
            state.tap_mean,
            state.tap_std,
            state.tap_sample,
            *((state.plan,) if self.warm_start else ()),
        )
        generator = self.make_generator(seed_inputs if deterministic else None)
        action, new_state, _ = self.act(obs_tensor, state, None, deterministic, generator)
        return (action if vectorized_env else action.squeeze(axis=0)), new_state

    def _predict(self, observation: th.Tensor, deterministic: bool = False) -> th.Tensor:
        """Stateless action from a zero state; :meth:`predict` is the stateful entry point."""
        generator = self.make_generator((observation.cpu().numpy(),) if deterministic else None)
        action, _, _ = self.act(observation, None, None, deterministic, generator)
        return th.as_tensor(action)


class CnnPolicy(PlaNetPolicy):
    """PlaNet with the 64x64 conv encoder / decoder (image observations)."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs["use_conv"] = True
        super().__init__(*args, **kwargs)


MlpPolicy = PlaNetPolicy
