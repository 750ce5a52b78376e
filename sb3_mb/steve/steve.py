"""STEVE: Stochastic Ensemble Value Expansion (Buckman, Hafner, Tucker, Brevdo, Lee, NeurIPS 2018,
arXiv:1807.01675), with the MVE targets (Feinberg et al. 2018, arXiv:1803.00101) and plain DDPG (Lillicrap et
al. 2015, arXiv:1509.02971) as choices of ``target_mode``.

STEVE is DDPG whose critic target interpolates between H + 1 model-based value expansions, each weighted by
the inverse of its variance across ensembles (Buckman et al. 2018, Sec. 3)::

    for each environment step:
        act with the DDPG policy (random during the warm-up), store it        # SB3 collect_rollouts
        once, at learning_starts: model_pretrain_steps world-model updates    # train_world_model
        model_gradient_steps world-model updates on real batches              # train_world_model
        gradient_steps value updates; for each real (s, a, r, s', d):         # train
            from s' roll H steps with the current policy through every
            transition member                                                 # expansion
            candidates T_0 .. T_H, each with N x M x L samples (transition x reward x Q member)
            target = sum_k w_k mean_k,  w_k proportional to 1 / (var_k + 1e-8)
            Q loss 0.5 (Q_l(s, a) - target)^2 (a random member l per example); DDPG policy loss
        every target_update_interval updates: hard copy Q -> target Q
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, ReplayBufferSamples, Schedule
from stable_baselines3.common.utils import polyak_update
from torch.nn import functional as F

from sb3_mb.common.base_class import SafeAlgorithmMixin
from sb3_mb.common.ensemble import random_member_split
from sb3_mb.common.model_env import ModelEnv
from sb3_mb.common.spaces import check_flat_box_spaces
from sb3_mb.common.symlog import fixed_scale, reward_scale, symexp, symlog
from sb3_mb.common.utils import frozen, make_progress_bar, own_parameters, resolve_policy_and_env
from sb3_mb.steve.fused import configure_adam, ensemble_mean, l2_value
from sb3_mb.steve.policies import MlpPolicy, STEVEActor, STEVEPolicy, STEVEWorldModel

__all__ = [
    "STEVE",
    "TARGET_MODES",
    "ValueExpansion",
    "candidate_samples",
    "candidate_weights",
    "inverse_variance_weights",
]

SelfSTEVE = TypeVar("SelfSTEVE", bound="STEVE")

#: ``target_mode`` values: STEVE, MVE with the TD-k trick, the mean of the candidates, TD(lambda), DDPG.
TARGET_MODES = ("steve", "mve", "mve_mean", "mve_lambda", "ddpg")


# ------------------------------------------------------------------------------------------ the target rule
def inverse_variance_weights(
    variances: th.Tensor, valid: th.Tensor | None = None, eps: float = 1e-8
) -> th.Tensor:
    """STEVE's weights over candidate targets (Buckman et al. 2018, Sec. 3).

    ``w_k = (1 / (var_k + eps)) / sum_j (1 / (var_j + eps))`` over the last axis, candidates outside ``valid``
    getting weight 0. The target is then ``sum_k w_k mean_k``: with one zero-variance candidate among
    candidates of variance ``>> eps`` the weight concentrates on it.

    :param variances: ``(..., K)`` non-negative sample variances of the ``K`` candidates.
    :param valid: optional bool ``(..., K)`` (broadcastable) mask of the candidates that exist.
    :param eps: the variance floor (STEVE: 1e-8).
    :return: ``(..., K)`` weights summing to 1 over the valid candidates.
    """
    confidence = 1.0 / (variances + eps)
    if valid is not None:
        confidence = confidence * valid.to(confidence.dtype)
    return confidence / confidence.sum(-1, keepdim=True)


def candidate_samples(rewards: th.Tensor, continues: th.Tensor, values: th.Tensor, gamma: float) -> th.Tensor:
    """Every candidate target of every rollout source, per ensemble sample (Buckman et al. 2018, Sec. 3).

    With ``F = H + 1`` frames (frame 0 is ``s'``), ``c_t`` the probability of being alive at frame ``t`` and
    ``c~_t = c_{t-1}`` (``c~_0 = 1``), the target from source frame ``i`` ending at frame ``j >= i`` is::

        T_ij = sum_{t=i..j} gamma^(t-i) (c~_t / c~_i) r_t + gamma^(j+1-i) (c_j / c~_i) Q(s_j, pi(s_j))

    (``c~_i + 1e-8`` in the denominators, as the released code). Source 0 gives the paper's candidates
    ``T_j`` of ``Q(s, a)``; source ``i >= 1`` those of ``Q(s_{i-1}, a_{i-1})`` (MVE's TD-k trick, Feinberg et
    al. 2018, Sec. 3). Entries ``j < i`` are 0.

    :param rewards: ``(batch, F, N, M)``: ``r_0`` the real reward, ``r_t = R_m(s_{t-1}, a_{t-1}, s_t)`` along
        transition member ``n``'s rollout, for reward member ``m``.
    :param continues: ``(batch, F, N)``: ``c_0 = 1 - d`` (real), ``c_t = c_{t-1} (1 - p_done(s_t))``.
    :param values: ``(batch, F, N, L)``: target-Q member ``l`` at ``(s_t, pi(s_t))``.
    :param gamma: discount.
    :return: ``(batch, F, F, N * M * L)``: ``[b, i, j, sample]``, samples ordered ``(n, m, l)``.
    """
    n_frames = rewards.shape[1]
    frame = th.arange(n_frames, device=rewards.device)
    steps = (frame[None, :] - frame[:, None]).to(rewards.dtype)  # [i, j] = j - i
    upper = steps >= 0
    reward_coef = th.where(upper, gamma**steps, th.zeros_like(steps))  # [i, t]
    value_coef = th.where(upper, gamma ** (steps + 1), th.zeros_like(steps))  # [i, j]
    shifted = th.cat([th.ones_like(continues[:, :1]), continues[:, :-1]], dim=1)  # c~: (batch, F, N)
    reward_continue = shifted[:, None] / (shifted[:, :, None] + 1e-8)  # (batch, i, t, N)
    value_continue = continues[:, None] / (shifted[:, :, None] + 1e-8)  # (batch, i, j, N)
    disc_rewards = rewards[:, None] * (reward_coef[None, :, :, None] * reward_continue)[..., None]
    returns = disc_rewards.cumsum(dim=2)  # (batch, i, j, N, M)
    disc_values = values[:, None] * (value_coef[None, :, :, None] * value_continue)[..., None]  # (.., N, L)
    samples = returns[..., :, None] + disc_values[..., None, :]  # (batch, i, j, N, M, L)
    return samples.flatten(-3)


def candidate_weights(
    target_mode: str, variances: th.Tensor, td_lambda: float = 0.25, eps: float = 1e-8
) -> th.Tensor:
    """How each ``target_mode`` combines the candidates ``T_ij`` of every source ``i``: ``(batch, F, F)``.

    - ``"steve"``: :func:`inverse_variance_weights` over ``j >= i`` (Buckman et al. 2018, Sec. 3);
    - ``"mve"``: the longest candidate ``j = H`` (Feinberg et al. 2018, Sec. 3);
    - ``"mve_mean"``: the mean of the candidates ``j >= i``;
    - ``"mve_lambda"``: TD(lambda) over the candidates, ``(1 - lambda) lambda^j`` for ``j < H`` and
      ``lambda^H`` for ``j = H`` (as the released code the exponent is ``j``, which is the TD(lambda)
      weighting for source 0, the only source this mode uses).

    :param variances: ``(batch, F, F)`` sample variances of the candidates.
    :param td_lambda: lambda of ``"mve_lambda"``. :param eps: the variance floor of ``"steve"``.
    :raises ValueError: for ``"ddpg"`` or an unknown mode.
    """
    n_frames = variances.shape[-1]
    frame = th.arange(n_frames, device=variances.device)
    valid = frame[None, :] >= frame[:, None]  # [i, j]
    if target_mode == "steve":
        return inverse_variance_weights(variances, valid, eps)
    if target_mode == "mve":
        weights = th.zeros_like(variances)
        weights[..., -1] = 1.0
        return weights
    if target_mode == "mve_mean":
        weights = valid.to(variances.dtype).expand_as(variances)
        return weights / weights.sum(-1, keepdim=True)
    if target_mode == "mve_lambda":
        lam = td_lambda ** frame.to(variances.dtype)
        stop = th.full_like(lam, 1.0 - td_lambda)
        stop[-1] = 1.0
        return (valid * lam * stop).to(variances.dtype).expand_as(variances).clone()
    raise ValueError(f"No candidate weights for target_mode {target_mode!r}; model modes: {TARGET_MODES[:4]}")


class ValueExpansion(NamedTuple):
    """What one batched expansion pass (:meth:`STEVE.expansion`) computes; ``F = H + 1``, ``H`` the horizon.

    :param samples: ``(batch, F, F, N * M * L)`` candidate samples (:func:`candidate_samples`).
    :param means: ``(batch, F, F)`` sample means ``mu_ij``. :param variances: ``(batch, F, F)`` (population).
    :param weights: ``(batch, F, F)`` the ``target_mode``'s weights (:func:`candidate_weights`).
    :param targets: ``(batch, F)``: ``sum_j w_ij mu_ij``; column 0 is the target of ``Q(s, a)``.
    :param obs: ``(batch, F, N, obs_dim)`` imagined states ``s_0 = s' .. s_H`` of every transition member.
    :param actions: ``(batch, F, N, action_dim)`` policy actions ``pi(s_t)`` (in ``[-1, 1]``).
    :param continues: ``(batch, F, N)`` alive probabilities ``c_t``.
    """

    samples: th.Tensor
    means: th.Tensor
    variances: th.Tensor
    weights: th.Tensor
    targets: th.Tensor
    obs: th.Tensor
    actions: th.Tensor
    continues: th.Tensor


# ------------------------------------------------------------------------------------------ the algorithm
class STEVE(SafeAlgorithmMixin, OffPolicyAlgorithm):
    """STEVE: DDPG with a Q ensemble, learned transition / reward / done ensembles and expanded targets.

    The defaults are the paper's MuJoCo configuration (Buckman et al. 2018, Sec. 4 and appendix): Adam
    3e-4, batch 512, 4 updates per env step, hard target copy every 500 updates, 10 000 random warm-up steps
    then 10 000 world-model pretraining updates, horizon ``H = 3``. Network sizes travel in ``policy_kwargs``
    (:class:`STEVEPolicy`: ``net_arch``, ``activation_fn``, ``n_critics`` = ``L``, ``model_net_arch``,
    ``model_ensemble_size`` = ``N = M``); ``target_mode`` decides whether the policy has a world model
    (``"ddpg"``: none).

    Choices and deviations from the released code:

    - Exploration: with probability ``explore_chance`` per action dimension the collected action is
      ``tanh(pretanh + N(0, 1))`` instead of ``tanh(pretanh)``. The paper meant it for the DDPG baseline; the
      released code reads a configuration key no configuration sets, so every mode acts greedily after the
      random warm-up. Here the default follows the intent: 0.05 with ``target_mode="ddpg"``, 0 (greedy) in
      the model modes; an explicit value applies in any mode. ``predict`` is greedy, as SB3's TD3.
    - Synchronous: the original runs interactors and learners in separate processes, the value learner
      reloading a world-model checkpoint every 500 updates; here model and value updates alternate after each
      env step (``model_gradient_steps`` then ``gradient_steps``) and the current model is used.
    - Random member per example: each batch is randomly split into equal parts, one per member
      (:func:`~sb3_mb.common.ensemble.random_member_split`; the ``batch_size % E`` left-over examples are
      skipped by that net), instead of evaluating every member on every example and keeping one; same
      distribution of member per example, ``1 / E`` of the compute.
    - Ensembles in every mode: ``"mve*"`` and ``"ddpg"`` keep the ensembles (means over their samples, the
      paper's "ensemble MVE" ablation); the paper's MVE / DDPG baselines use single nets
      (``policy_kwargs=dict(n_critics=1, model_ensemble_size=1)``).
    - Timeouts: a truncated episode is not a termination (SB3's replay buffer), as the original's "done".

    Logged (SB3 logger): ``model/transition_loss``, ``model/reward_loss``, ``model/done_loss``,
    ``model/l2_loss``; ``train/critic_loss`` (Q loss), ``train/actor_loss`` (policy loss, with the
    regulariser), ``train/policy_reg_loss``; with a model, ``train/steve_weight_k`` (the mean weight of
    candidate ``T_k`` in the target of ``Q(s, a)``, for every mode), ``train/model_usage`` ``= 1 - w_0`` and
    ``train/target_mean``. The original's ``greedy.csv`` evaluation log:
    :class:`sb3_mb.steve.callbacks.GreedyCSVCallback`.

    SB3 arguments are those of :class:`~stable_baselines3.common.off_policy_algorithm.OffPolicyAlgorithm`;
    ``tau`` is the coefficient of the target update made every ``target_update_interval`` updates (1.0: a
    hard copy). ``gradient_steps`` and ``model_gradient_steps`` count per ``train`` call, i.e. per vectorised
    env step (the paper: 4 per frame with one env; with ``n_envs`` envs divide by ``n_envs``).

    :param policy: ``"MlpPolicy"`` or a :class:`STEVEPolicy` class; or the env itself (``STEVE(env)``).
    :param env: the env (flat ``Box`` observations, ``Box`` actions), a ``VecEnv`` or a registered id.
    :param target_mode: ``"steve"`` (inverse-variance weighting), ``"mve"`` (longest candidate with the TD-k
        trick: the Q loss is also applied at every imagined ``(s_i, a_i)``, ``i < H``, with target the longest
        remaining candidate, weighted by the probability of reaching ``s_i``), ``"mve_mean"`` (mean of the
        candidates), ``"mve_lambda"`` (TD(``td_lambda``)) or ``"ddpg"`` (one-step target, no model).
    :param value_expansion_horizon: ``H``, model steps of the expansion; ``H + 1`` candidates.
    :param target_update_interval: value updates between target-Q updates.
    :param explore_chance: per action dimension, the chance of exploring (see above); ``None``: 0.05 with
        ``"ddpg"``, 0 otherwise.
    :param policy_reg_coef: coefficient of ``mean(pretanh^2)`` in the policy loss.
    :param td_lambda: lambda of ``"mve_lambda"``.
    :param model_learning_rate: Adam learning rate of the world model.
    :param model_weight_decay: ``c`` of the world model's L2 term ``c * sum 0.5 ||theta||^2`` over every
        weight and bias of its three nets.
    :param model_batch_size: world-model batch.
    :param model_gradient_steps: world-model updates per ``train`` call, i.e. per env step.
    :param model_pretrain_steps: world-model updates made once, at ``learning_starts``, before the first value
        update uses the model.
    :param fused_update: the same math in fewer, cheaper operations (:mod:`sb3_mb.steve.fused`, issue 15):
        the expansion's rollout as gradient-free ``baddbmm`` passes into reused buffers, with ``pi`` and
        ``Q`` at the shared start state evaluated once; the world model's L2 term as Adam's weight decay
        (its gradient ``c * theta``; its value computed without a graph for the log); torch's fused Adam
        kernels; the policy loss without the critic's weight gradients (which the reference computes and
        discards). Same random numbers and order of updates as ``False`` (the reference code path, kept for
        tests and comparison); results equal to float32 rounding. Nothing is compiled: ``torch.compile``
        of the transition pass or of the world-model loss (forward and backward) took 12-16 s to compile
        and ran no faster on one CPU thread. At the paper's sizes on one CPU thread, per env step 1900 ->
        1380 ms, expansion pass 336 -> 259 ms, world-model update 127 -> 76 ms
        (``benchmarks/steve_speed.py``).
    :raises ValueError: for an unknown ``target_mode`` (listing the valid ones), a
        ``value_expansion_horizon < 1`` with a model mode, an ``explore_chance`` outside ``[0, 1]``, a
        ``policy_kwargs["use_world_model"]`` that contradicts ``target_mode``, an observation space other than
        a flat ``Box`` or an action space other than ``Box``.
    """

    policy_aliases: ClassVar[dict[str, type[STEVEPolicy]]] = {"MlpPolicy": MlpPolicy}
    policy: STEVEPolicy
    actor: STEVEActor
    world_model: STEVEWorldModel | None
    model_env: ModelEnv | None
    model_optimizer: th.optim.Optimizer | None

    def __init__(
        self,
        policy: str | type[STEVEPolicy] | GymEnv,
        env: GymEnv | str | None = None,
        learning_rate: float | Schedule = 3e-4,
        buffer_size: int = 1_000_000,
        learning_starts: int = 10_000,
        batch_size: int = 512,
        tau: float = 1.0,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 4,
        replay_buffer_class: type[ReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        optimize_memory_usage: bool = False,
        target_mode: str = "steve",
        value_expansion_horizon: int = 3,
        target_update_interval: int = 500,
        explore_chance: float | None = None,
        policy_reg_coef: float = 1e-3,
        td_lambda: float = 0.25,
        model_learning_rate: float = 3e-4,
        model_weight_decay: float = 1e-4,
        model_batch_size: int = 512,
        model_gradient_steps: int = 4,
        model_pretrain_steps: int = 10_000,
        symlog_scale: float | str | None = None,
        fused_update: bool = True,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        policy, env = resolve_policy_and_env(policy, env, self.policy_aliases, "STEVE", verbose)
        check_flat_box_spaces(env, "STEVE")
        if target_mode not in TARGET_MODES:
            raise ValueError(
                f"Unknown target_mode {target_mode!r}; expected one of {', '.join(TARGET_MODES)}"
            )
        if target_mode != "ddpg" and value_expansion_horizon < 1:
            raise ValueError(
                f"target_mode {target_mode!r} needs value_expansion_horizon >= 1, "
                f"got {value_expansion_horizon}"
            )
        if explore_chance is None:
            explore_chance = 0.05 if target_mode == "ddpg" else 0.0
        if not 0.0 <= explore_chance <= 1.0:
            raise ValueError(f"explore_chance must lie in [0, 1], got {explore_chance}")
        value_scale = fixed_scale(symlog_scale, "symlog_scale")
        super().__init__(
            policy,
            env,
            learning_rate,
            buffer_size=buffer_size,
            learning_starts=learning_starts,
            batch_size=batch_size,
            tau=tau,
            gamma=gamma,
            train_freq=train_freq,
            gradient_steps=gradient_steps,
            replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs,
            optimize_memory_usage=optimize_memory_usage,
            policy_kwargs=dict(policy_kwargs or {}),
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            seed=seed,
            sde_support=False,
            supported_action_spaces=(spaces.Box,),
            support_multi_env=True,
        )
        self.target_mode, self.value_expansion_horizon = target_mode, int(value_expansion_horizon)
        self.target_update_interval = int(target_update_interval)
        self.explore_chance = float(explore_chance)
        self.policy_reg_coef, self.td_lambda = policy_reg_coef, td_lambda
        self.model_learning_rate, self.model_weight_decay = model_learning_rate, model_weight_decay
        self.model_batch_size, self.model_gradient_steps = model_batch_size, model_gradient_steps
        self.model_pretrain_steps = model_pretrain_steps
        self.symlog_scale = symlog_scale
        self.fused_update = bool(fused_update)
        # kappa of symlog(x / kappa): the given number, or set from the replay buffer by the first train().
        self._value_scale = value_scale
        self._return_bounds: tuple[float, float] | None = None
        self._model_pretrained = False
        self._n_model_updates = 0
        self._workspace: dict = {}  # the fused path's reused buffers (sb3_mb.steve.fused.ensemble_mean)
        self._progress_bar = False  # learn(progress_bar=True) also draws the pretraining's bar
        if _init_setup_model:
            self._setup_model()

    # ------------------------------------------------------------------------------------ set-up
    @property
    def uses_model(self) -> bool:
        """Whether the target needs the world model (every mode but ``"ddpg"``)."""
        return self.target_mode != "ddpg"

    def _setup_model(self) -> None:
        declared = self.policy_kwargs.get("use_world_model", self.uses_model)
        if declared != self.uses_model:
            raise ValueError(
                f"policy_kwargs use_world_model={declared} contradicts target_mode={self.target_mode!r}; "
                "leave it out: target_mode decides it"
            )
        # The policy gets use_world_model from target_mode; policy_kwargs keeps only what the user declared.
        policy_kwargs = self.policy_kwargs
        self.policy_kwargs = {**policy_kwargs, "use_world_model": self.uses_model}
        try:
            super()._setup_model()
        finally:
            self.policy_kwargs = policy_kwargs
        self._create_aliases()
        self.model_env, self.model_optimizer = None, None
        if self.world_model is None:
            return
        self.model_optimizer = th.optim.Adam(self.world_model.parameters(), lr=self.model_learning_rate)
        # Every transition member follows its own rollout ("all"); the done model gives probabilities.
        self.model_env = ModelEnv(
            self.world_model.transition,
            termination_fn=self.world_model.done_probs,
            reward_fn=self._model_rewards,
            propagation="all",
            soft_termination=True,
        )

    def _create_aliases(self) -> None:
        self.actor = self.policy.actor
        self.critic = self.policy.critic
        self.critic_target = self.policy.critic_target
        self.world_model = self.policy.world_model

    def _excluded_save_params(self) -> list[str]:
        return [
            *super()._excluded_save_params(),
            "actor",
            "critic",
            "critic_target",
            "world_model",
            "model_env",
            "_progress_bar",
            "_workspace",
        ]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts = ["policy", "actor.optimizer", "critic.optimizer"]
        if self.model_optimizer is not None:
            state_dicts.append("model_optimizer")
        return state_dicts, []

    # ------------------------------------------------------------------------------------ acting
    def _sample_action(
        self, learning_starts: int, action_noise: ActionNoise | None = None, n_envs: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """The collected action: uniform during the warm-up, then ``tanh(pretanh)`` with each dimension
        replaced with probability ``explore_chance`` by ``tanh(pretanh + N(0, 1))`` (the released code's DDPG
        exploration, on in the modes the class docstring says).

        :return: ``(action in the env's bounds, action in [-1, 1] for the buffer)``, each
            ``(n_envs, action_dim)``.
        """
        if self.num_timesteps < learning_starts or self.explore_chance == 0.0:
            return super()._sample_action(learning_starts, action_noise, n_envs)
        assert self._last_obs is not None
        obs, _ = self.policy.obs_to_tensor(self._last_obs)
        with th.no_grad():
            pretanh = self.actor.pretanh(obs.float().reshape(-1, self.policy.obs_dim))
            explore = th.rand_like(pretanh) < self.explore_chance
            pretanh = th.where(explore, pretanh + th.randn_like(pretanh), pretanh)
        buffer_action = th.tanh(pretanh).cpu().numpy()
        return self.policy.unscale_action(buffer_action), buffer_action

    # ------------------------------------------------------------------------------------ replay
    def _sample(self, batch_size: int) -> ReplayBufferSamples:
        """A replay batch with float32 observations: SB3's buffer keeps the observation space's dtype (float64
        for MuJoCo envs), which the float32 networks and batched ensembles do not take."""
        assert self.replay_buffer is not None
        data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)
        return data._replace(
            observations=data.observations.float(), next_observations=data.next_observations.float()
        )

    # ------------------------------------------------------------------------------- value representation
    def _encode(self, values: th.Tensor) -> th.Tensor:
        """What the critic and the reward model regress on: ``symlog(x / kappa)`` with ``symlog_scale``, else
        ``x`` (values in reward units, any shape)."""
        if self.symlog_scale is None:
            return values
        return symlog(values / (self._value_scale or 1.0))

    def _decode(self, outputs: th.Tensor) -> th.Tensor:
        """A critic or reward-model output in reward units: ``kappa symexp(y)`` with ``symlog_scale``, else
        ``y`` (any shape)."""
        if self.symlog_scale is None:
            return outputs
        return (self._value_scale or 1.0) * symexp(outputs)

    def _target_q_values(self, obs: th.Tensor, actions: th.Tensor) -> th.Tensor:
        """Every target-Q member at ``(obs (..., obs_dim), actions (..., action_dim))`` in reward units,
        ``(L, ...)``; with ``symlog_scale``, clipped to the return bounds (:meth:`_update_value_scale`)."""
        values = self._decode(self.policy.q_values(obs, actions, target=True))
        if self._return_bounds is None:
            return values
        return values.clamp(*self._return_bounds)

    def _model_rewards(self, obs: th.Tensor, actions: th.Tensor, next_obs: th.Tensor) -> th.Tensor:
        """Every reward member's prediction in reward units, ``(..., M)``: the rollouts' reward function."""
        assert self.world_model is not None
        return self._decode(self.world_model.rewards(obs, actions, next_obs))

    def _update_value_scale(self) -> None:
        """With ``symlog_scale``: ``kappa`` from the replay buffer at the first call with a non-zero reward
        (``"auto"``: :func:`~sb3_mb.common.symlog.reward_scale`, the 10 % quantile of ``|r|``), and the bounds
        ``[min(r_min, r_min / (1 - gamma)), max(r_max, r_max / (1 - gamma))]`` that hold every discounted
        return of rewards within the ``[r_min, r_max]`` seen so far."""
        if self.symlog_scale is None:
            return
        assert self.replay_buffer is not None
        rewards = self.replay_buffer.rewards[: self.replay_buffer.size()]
        if rewards.size == 0:
            return
        if self._value_scale is None:
            self._value_scale = reward_scale(rewards)
        if self.gamma < 1:
            low, high, horizon = float(rewards.min()), float(rewards.max()), 1.0 / (1.0 - self.gamma)
            self._return_bounds = (min(low, low * horizon), max(high, high * horizon))

    # ------------------------------------------------------------------------------------ world model
    def world_model_losses(self, data: ReplayBufferSamples) -> dict[str, th.Tensor]:
        """World-model loss on a real batch; every example trains one random member of each net.

        ``0.5 * sum_dims (s' - s_hat')^2 + 0.5 * (r - r_hat)^2 + BCE(done)`` averaged over the batch, plus
        ``model_weight_decay * sum 0.5 ||theta||^2`` (Buckman et al. 2018, Sec. 4 and appendix). This is the
        reference form, the L2 term in the graph; the fused update (``fused_update``) takes the first three
        terms from here too and the L2 term's gradient from Adam's ``weight_decay``.

        :param data: a replay batch (``observations (batch, obs_dim)`` ... ``dones (batch, 1)``).
        :return: ``{"transition", "reward", "done", "l2", "total"}`` scalar tensors.
        """
        assert self.world_model is not None
        losses = self._world_model_data_losses(data)
        l2 = self.model_weight_decay * 0.5 * sum(p.pow(2).sum() for p in self.world_model.parameters())
        total = losses["transition"] + losses["reward"] + losses["done"] + l2
        return {**losses, "l2": l2, "total": total}

    def _world_model_data_losses(self, data: ReplayBufferSamples) -> dict[str, th.Tensor]:
        """The transition, reward and done terms of :meth:`world_model_losses` (three random member splits,
        in this order)."""
        assert self.world_model is not None
        model, batch = self.world_model, data.observations.shape[0]
        obs, actions, next_obs = data.observations, data.actions, data.next_observations
        rewards, dones = data.rewards.flatten(), data.dones.flatten()

        rows = random_member_split(batch, model.transition.ensemble_size, device=self.device)
        predicted = model.transition(model.transition.inputs(obs[rows], actions[rows]))[0]
        errors = predicted - model.transition.targets(obs[rows], next_obs[rows])
        transition = 0.5 * errors.pow(2).sum(-1).mean()

        rows = random_member_split(batch, model.reward.ensemble_size, device=self.device)
        predicted = model.member_rewards(obs[rows], actions[rows], next_obs[rows])
        reward = 0.5 * (predicted - self._encode(rewards[rows])).pow(2).mean()

        rows = random_member_split(batch, model.done.ensemble_size, device=self.device)
        logits = model.done_logits(obs[rows], actions[rows], next_obs[rows])
        done = F.binary_cross_entropy_with_logits(logits, dones[rows])
        return {"transition": transition, "reward": reward, "done": done}

    def _world_model_losses_fused(self, data: ReplayBufferSamples) -> tuple[th.Tensor, dict[str, th.Tensor]]:
        """``(loss to differentiate, the terms of world_model_losses)`` for the fused update: the L2 term's
        value without a graph (its gradient ``c * theta`` is Adam's ``weight_decay``)."""
        assert self.world_model is not None
        losses = self._world_model_data_losses(data)
        data_loss = losses["transition"] + losses["reward"] + losses["done"]
        l2 = l2_value(list(self.world_model.parameters()), self.model_weight_decay)
        return data_loss, {**losses, "l2": l2, "total": data_loss.detach() + l2}

    def train_world_model(self, n_updates: int, progress_bar: bool = False) -> dict[str, float]:
        """``n_updates`` world-model updates on real batches of ``model_batch_size``; mean losses.

        :param progress_bar: draw a bar of the updates (tqdm / rich, as SB3's ``progress_bar=True``); the
            one-off pretraining draws it when ``learn(..., progress_bar=True)``: its 10 000 updates take
            about half an hour on a CPU at the default sizes.
        :raises RuntimeError: for ``target_mode="ddpg"`` (no world model).
        :raises FloatingPointError: if a term of the loss is NaN or infinite, before the update.
        """
        if self.world_model is None or self.model_optimizer is None:
            raise RuntimeError("target_mode='ddpg' has no world model")
        totals: dict[str, float] = {}
        bar = make_progress_bar(n_updates, "STEVE world-model updates", progress_bar)
        try:
            decay = self.model_weight_decay if self.fused_update else 0.0  # fused: the L2 term's gradient
            configure_adam(self.model_optimizer, self.fused_update, decay)
            for _ in range(n_updates):
                data = self._sample(self.model_batch_size)
                if self.fused_update:
                    loss, losses = self._world_model_losses_fused(data)
                else:
                    losses = self.world_model_losses(data)
                    loss = losses["total"]
                self._check_finite(losses, "world-model loss", self._n_model_updates + 1, unit="model update")
                self.model_optimizer.zero_grad()
                loss.backward()
                self.model_optimizer.step()
                self._n_model_updates += 1
                for key, value in losses.items():
                    totals[key] = totals.get(key, 0.0) + value.item()
                bar.update(1)
        finally:
            bar.close()
        means = {key: value / max(n_updates, 1) for key, value in totals.items()}
        for key, value in means.items():
            self.logger.record(f"model/{key}_loss", value)
        self.logger.record("model/n_updates", self._n_model_updates, exclude="tensorboard")
        return means

    # ------------------------------------------------------------------------------------ targets
    @th.no_grad()
    def expansion(self, data: ReplayBufferSamples) -> ValueExpansion:
        """All candidate targets of a real batch in one batched pass (Buckman et al. 2018, Sec. 3).

        From ``s_0 = s'`` every transition member ``n`` rolls ``H`` steps with ``a_t = pi(s_t)`` (its own
        rollout throughout: the ``N`` rollouts are the leading axis of one batched forward pass per step);
        rewards from every reward member, continue probabilities from the paired done member, ``Q`` from every
        target-Q member at every frame. Only the ``H`` steps are a Python loop. With ``fused_update`` the
        rollout runs :func:`~sb3_mb.steve.fused.ensemble_mean` and evaluates ``pi`` and ``Q`` at the shared
        ``s_0`` once instead of once per transition member (the same values), and the variances in two
        passes.

        :param data: a replay batch (``observations (batch, obs_dim)`` ... ``dones (batch, 1)``).
        :return: :class:`ValueExpansion`.
        """
        rollout = self._rollout_fused if self.fused_update else self._rollout
        obs, acts, rewards, dones, values = rollout(data.next_observations)
        n_members, m_members = obs.shape[2], rewards.shape[-1]
        real_reward = data.rewards.view(-1, 1, 1, 1).expand(-1, 1, n_members, m_members)
        all_rewards = th.cat([real_reward, rewards], dim=1)
        real_not_done = (1.0 - data.dones).view(-1, 1, 1).expand(-1, 1, n_members)
        not_done = th.cat([real_not_done, 1.0 - dones], dim=1)
        continues = th.cumprod(not_done, dim=1)  # (batch, F, N)
        samples = candidate_samples(all_rewards, continues, values, self.gamma)
        if self.fused_update:  # the two-pass population variance: 2-8 x faster than torch's var here
            means = samples.mean(-1)
            deviations = samples - means.unsqueeze(-1)
            variances = (deviations * deviations).mean(-1)
        else:
            means = samples.mean(-1)
            variances = samples.var(-1, unbiased=False)
        weights = candidate_weights(self.target_mode, variances, self.td_lambda)
        targets = (weights * means).sum(-1)
        return ValueExpansion(samples, means, variances, weights, targets, obs, acts, continues)

    def _rollout(self, start: th.Tensor) -> tuple[th.Tensor, ...]:
        """The reference rollout of :meth:`expansion` through :class:`~sb3_mb.common.model_env.ModelEnv`.

        :param start: ``s' (batch, obs_dim)``.
        :return: ``obs (batch, F, N, obs_dim)``, ``actions (batch, F, N, action_dim)``, model rewards
            ``(batch, H, N, M)``, done probabilities ``(batch, H, N)``, target-Q values ``(batch, F, N, L)``.
        """
        assert self.model_env is not None
        states = [self.model_env.reset(start)]  # (N, batch, obs_dim)
        actions, rewards, dones = [], [], []
        for _ in range(self.value_expansion_horizon):
            actions.append(self.actor(states[-1]))
            next_obs, reward, done = self.model_env.step(actions[-1])
            states.append(next_obs)
            rewards.append(reward)  # (N, batch, M)
            dones.append(done)  # (N, batch)
        actions.append(self.actor(states[-1]))
        obs = th.stack(states).permute(2, 0, 1, 3)  # (F, N, batch, obs_dim) -> (batch, F, N, obs_dim)
        acts = th.stack(actions).permute(2, 0, 1, 3)
        values = self._target_q_values(obs, acts).permute(1, 2, 3, 0)  # (batch, F, N, L)
        return obs, acts, th.stack(rewards).permute(2, 0, 1, 3), th.stack(dones).permute(2, 0, 1), values

    def _rollout_fused(self, start: th.Tensor) -> tuple[th.Tensor, ...]:
        """:meth:`_rollout` in :func:`~sb3_mb.steve.fused.ensemble_mean` passes, ``pi(s_0)`` and
        ``Q(s_0, pi(s_0))`` once for the ``N`` identical copies of ``s_0``; the same values (float32
        rounding) and no random numbers, as the reference."""
        assert self.world_model is not None
        model = self.world_model
        n_members = model.transition.ensemble_size
        ws = self._workspace
        start = start.to(device=self.device, dtype=th.float32)
        action = self.actor(start)  # (batch, action_dim)
        q_start = ensemble_mean(self.critic_target, th.cat([start, action], dim=-1), ws)[..., 0]  # (L, batch)
        state = start.expand(n_members, -1, -1)
        states, actions, rewards, dones = [state], [action.expand(n_members, -1, -1)], [], []
        for step in range(self.value_expansion_horizon):
            inputs = (start, action) if step == 0 else (state, actions[-1])  # s_0: one row for N members
            delta = ensemble_mean(model.transition, model.transition.inputs(*inputs), ws)
            next_state = model.transition.transition(state, delta)[0]  # (N, batch, obs_dim)
            aux = th.cat([state, actions[-1], next_state], dim=-1)  # (N, batch, 2 obs_dim + action_dim)
            reward = ensemble_mean(model.reward, aux.reshape(-1, aux.shape[-1]), ws)[..., 0]  # (M, N * batch)
            rewards.append(self._decode(reward.transpose(0, 1).reshape(*aux.shape[:-1], -1)))  # (N, batch, M)
            dones.append(th.sigmoid(ensemble_mean(model.done, aux, ws)[..., 0]))  # (N, batch)
            state = next_state
            states.append(state)
            actions.append(self.actor(state))
        obs = th.stack(states).permute(2, 0, 1, 3)  # (batch, F, N, obs_dim)
        acts = th.stack(actions).permute(2, 0, 1, 3)
        later = th.cat([obs[:, 1:], acts[:, 1:]], dim=-1)  # (batch, H, N, obs_dim + action_dim)
        q_later = ensemble_mean(self.critic_target, later.reshape(-1, later.shape[-1]), ws)[..., 0]
        q = th.cat(
            [
                q_start[:, :, None, None].expand(-1, -1, 1, n_members),
                q_later.reshape(-1, *later.shape[:-1]),
            ],
            dim=2,
        )  # (L, batch, F, N)
        values = self._decode(q)
        if self._return_bounds is not None:
            values = values.clamp(*self._return_bounds)
        return (
            obs,
            acts,
            th.stack(rewards).permute(2, 0, 1, 3),
            th.stack(dones).permute(2, 0, 1),
            values.permute(1, 2, 3, 0),
        )

    @th.no_grad()
    def ddpg_targets(self, data: ReplayBufferSamples) -> th.Tensor:
        """``r + gamma (1 - d) mean_l Q'_l(s', pi(s'))``, ``(batch,)`` (Lillicrap et al. 2015, Sec. 3, with
        the current policy and the ensemble mean)."""
        next_obs = data.next_observations
        next_q = self._target_q_values(next_obs, self.actor(next_obs))
        return data.rewards.flatten() + self.gamma * (1.0 - data.dones.flatten()) * next_q.mean(0)

    # ------------------------------------------------------------------------------------ value learning
    def _critic_loss(self, data: ReplayBufferSamples, stats: dict[str, list[float]]) -> th.Tensor:
        """``0.5 (Q_l(s, a) - target)^2``, a random member ``l`` per example; with ``"mve"`` (TD-k trick) also
        at the imagined ``(s_i, a_i)``, ``i < H`` (mean over transition members of ``Q_l``), weighted by the
        probability of reaching ``s_i``; mean over examples (and sources)."""
        rows = random_member_split(data.observations.shape[0], self.critic.ensemble_size, device=self.device)
        q_real = self.policy.member_q_values(data.observations[rows], data.actions[rows])  # (L, n)
        if not self.uses_model:
            return 0.5 * (q_real - self._encode(self.ddpg_targets(data)[rows])).pow(2).mean()
        exp = self.expansion(data)
        w0 = exp.weights[:, 0].mean(0)
        for k, w in enumerate(w0.tolist()):
            stats.setdefault(f"steve_weight_{k}", []).append(w)
        stats.setdefault("model_usage", []).append(1.0 - w0[0].item())
        stats.setdefault("target_mean", []).append(exp.targets[:, 0].mean().item())
        if self.target_mode != "mve":
            return 0.5 * (q_real - self._encode(exp.targets[rows, 0])).pow(2).mean()
        # TD-k trick: guesses at s_0 .. s_{H-1} of every rollout, target the longest candidate from there.
        q_imagined = self.policy.member_q_values(exp.obs[rows][:, :, :-1], exp.actions[rows][:, :, :-1]).mean(
            -1
        )  # (L, n, H)
        guesses = th.cat([q_real.unsqueeze(-1), q_imagined], dim=-1)  # (L, n, F)
        reach = exp.continues.mean(-1)  # (batch, F)
        reach = th.cat([th.ones_like(reach[:, :1]), reach[:, :-1]], dim=1)
        return (0.5 * (guesses - self._encode(exp.targets[rows])).pow(2) * reach[rows]).mean()

    def train(self, gradient_steps: int, batch_size: int = 512) -> None:
        """World-model updates (and the one-off pretraining), then ``gradient_steps`` value updates.

        :raises FloatingPointError: if the critic or the actor loss is NaN or infinite, before its update.
        """
        self.policy.set_training_mode(True)
        self._update_value_scale()
        if self.uses_model:
            if not self._model_pretrained:
                self.train_world_model(self.model_pretrain_steps, progress_bar=self._progress_bar)
                self._model_pretrained = True
            self.train_world_model(self.model_gradient_steps)
        self._update_learning_rate([self.actor.optimizer, self.critic.optimizer])
        for optimizer in (self.actor.optimizer, self.critic.optimizer):
            configure_adam(optimizer, self.fused_update, optimizer.defaults.get("weight_decay", 0.0))
        # The fused update skips the critic's weight gradients of the policy loss (the reference computes
        # them and the next critic zero_grad discards them).
        critic_params = own_parameters(self.critic, shared_with=self.actor) if self.fused_update else []
        stats: dict[str, list[float]] = {}
        critic_losses, actor_losses, reg_losses = [], [], []
        for _ in range(gradient_steps):
            self._n_updates += 1
            data = self._sample(batch_size)

            critic_loss = self._critic_loss(data, stats)
            self._check_finite(critic_loss, "critic loss")
            self.critic.optimizer.zero_grad()
            critic_loss.backward()
            self.critic.optimizer.step()

            # Policy: -mean_batch of the ensemble-mean Q (only the actor steps; the critic's gradients from
            # this loss are cleared by the next critic zero_grad) + policy_reg_coef * mean(pretanh^2).
            with frozen(critic_params):
                pretanh = self.actor.pretanh(data.observations)
                q_mean = self.policy.q_values(data.observations, th.tanh(pretanh)).mean(0)
                reg_loss = self.policy_reg_coef * pretanh.pow(2).mean()
                actor_loss = -q_mean.mean() + reg_loss
                self._check_finite(actor_loss, "actor loss")
                self.actor.optimizer.zero_grad()
                actor_loss.backward()
            self.actor.optimizer.step()

            if self._n_updates % self.target_update_interval == 0:
                polyak_update(self.critic.parameters(), self.critic_target.parameters(), self.tau)
            critic_losses.append(critic_loss.item())
            actor_losses.append(actor_loss.item())
            reg_losses.append(reg_loss.item())

        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        self.logger.record("train/critic_loss", np.mean(critic_losses))
        self.logger.record("train/actor_loss", np.mean(actor_losses))
        self.logger.record("train/policy_reg_loss", np.mean(reg_losses))
        for key, values in stats.items():
            self.logger.record(f"train/{key}", float(np.mean(values)))

    def learn(
        self: SelfSTEVE,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "STEVE",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfSTEVE:
        """SB3's ``learn``; ``progress_bar=True`` also draws a bar of the world-model pretraining."""
        self._progress_bar = progress_bar
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
