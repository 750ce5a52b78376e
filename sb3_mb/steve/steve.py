"""STEVE: Stochastic Ensemble Value Expansion (Buckman, Hafner, Tucker, Brevdo, Lee, NeurIPS 2018), with
the MVE targets (Feinberg et al. 2018) and plain DDPG as choices of ``target_mode``.
Spec: ``shared/spec/steve.md``.

STEVE is DDPG whose critic target interpolates between H + 1 model-based value expansions, each weighted by
the inverse of its variance across ensembles (paper, section "Stochastic Ensemble Value Expansion"; the
section and equation numbers are not checked here, the code references are ``valuerl.py``)::

    for each environment step:
        act with the DDPG policy (explore_chance per dimension), store it     # SB3 collect_rollouts
        once, at learning_starts: model_pretrain_steps world-model updates    # train_world_model
        model_gradient_steps world-model updates on real batches              # train_world_model
        gradient_steps value updates; for each real (s, a, r, s', d):         # train
            from s' roll H steps with the current policy through every
            transition member                                                 # expansion
            candidates T_0 .. T_H, each with N x M x L samples (transition x reward x Q member)
            target = sum_k w_k mean_k,  w_k proportional to 1 / (var_k + 1e-8)
            Q loss 0.5 (Q_m(s, a) - target)^2 (a random member m per example); DDPG policy loss
        every target_update_interval updates: hard copy Q -> target Q
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple, TypeVar

import numpy as np
import torch as th
from stable_baselines3.common.base_class import maybe_make_env
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, ReplayBufferSamples, Schedule
from stable_baselines3.common.utils import polyak_update
from stable_baselines3.ddpg import DDPG

from sb3_mb.common.model_env import ModelEnv
from sb3_mb.common.spaces import check_flat_box_spaces
from sb3_mb.steve.policies import MlpPolicy, STEVEPolicy, STEVEWorldModel, split_by_member

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
    """STEVE's weights over candidate targets (``valuerl.py``, ``steve_reweight``).

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
    """Every candidate target of every rollout source, per ensemble sample (``build_Q_expansion_graph``).

    With ``F = H + 1`` frames (frame 0 is ``s'``), ``c_t`` the probability of being alive at frame ``t`` and
    ``c~_t = c_{t-1}`` (``c~_0 = 1``), the target from source frame ``i`` ending at frame ``j >= i`` is::

        T_ij = sum_{t=i..j} gamma^(t-i) (c~_t / c~_i) r_t + gamma^(j+1-i) (c_j / c~_i) Q(s_j, pi(s_j))

    (``c~_i + 1e-8`` in the denominators, as the original). Source 0 gives the targets of ``Q(s, a)``
    (spec steve 5.3: ``T_k = T_0k``); source ``i >= 1`` those of ``Q(s_{i-1}, a_{i-1})`` (the TD-k trick).
    Entries ``j < i`` are 0.

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

    - ``"steve"``: :func:`inverse_variance_weights` over ``j >= i``;
    - ``"mve"``: the longest candidate ``j = H`` (Feinberg et al.; ``tdk_trick``);
    - ``"mve_mean"``: the mean of the candidates ``j >= i`` (``mean_k_return``);
    - ``"mve_lambda"``: TD(lambda) over the candidates, ``(1 - lambda) lambda^j`` for ``j < H`` and
      ``lambda^H`` for ``j = H`` (``lambda_return``; as the original the exponent is ``j``, which is the
      TD(lambda) weighting for source 0, the only source this mode uses).

    :param variances: ``(batch, F, F)`` sample variances of the candidates.
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
class STEVE(DDPG):
    """STEVE on SB3's DDPG: ensemble Q, learned transition / reward / done ensembles, expanded targets.

    Defaults are the spec's (steve.md 5.1-5.3; the paper's MuJoCo configuration, ``config/algos/steve.json``).
    Paper sizes: policy and Q ``3 x 128`` ReLU (``policy_kwargs=dict(net_arch=[128, 128, 128])``, the
    default), ``L = 4`` Q members, transition ``N = 4`` x ``7 x 512``, reward ``M = 4`` x ``3 x 128``, done
    ``N`` x ``3 x 128``; Adam 3e-4, batch 512, 4 updates per env step, hard target copy every 500 updates,
    10 000 random warm-up steps then 10 000 world-model pretraining updates.

    Choices and deviations (spec QUIRKs):

    - Exploration: the released code reads ``ddpg_explore_chance``, a key no config sets, so it acts greedily
      after the random warm-up (spec 5.1 QUIRK). Here the intended rule is the default: with probability
      ``explore_chance = 0.05`` per action dimension the action is ``tanh(pretanh + N(0, 1))`` instead of
      ``tanh(pretanh)`` (``explore_chance=0`` reproduces the released code). ``predict(deterministic=True)``
      (evaluation) is greedy.
    - Synchronous: the original runs interactors and learners in separate processes, the value learner
      reloading a world-model checkpoint every 500 updates; here model and value updates alternate after each
      env step (``model_gradient_steps`` then ``gradient_steps``) and the current model is used.
    - Random member per example: each batch is randomly split into equal parts, one per member (the
      ``batch_size % E`` left-over examples are skipped by that net), instead of evaluating every member on
      every example and keeping one; same distribution of member per example, ``1 / E`` of the compute.
    - Ensembles in every mode: ``"mve*"`` and ``"ddpg"`` keep the ensembles (means over their samples, the
      paper's "ensemble MVE" ablation); the paper's MVE / DDPG baselines use single nets
      (``q_ensemble_size=1, transition_ensemble_size=1, reward_ensemble_size=1``). ``"ddpg"`` builds and
      trains no world model.
    - Timeouts: a truncated episode is not a termination (SB3's replay buffer), as the original's "done".

    Logged (SB3 logger): ``model/transition_loss``, ``model/reward_loss``, ``model/done_loss``,
    ``model/l2_loss``; ``train/critic_loss`` (Q loss), ``train/actor_loss`` (policy loss, with the
    regulariser), ``train/policy_reg_loss``; with a model, ``train/steve_weight_k`` (the mean weight of
    candidate ``T_k`` in the target of ``Q(s, a)``, for every mode), ``train/model_usage`` ``= 1 - w_0`` and
    ``train/target_mean``. The original's ``greedy.csv`` evaluation log:
    :class:`sb3_mb.steve.callbacks.GreedyCSVCallback`.

    SB3 arguments are DDPG's (see :class:`stable_baselines3.DDPG`); ``tau`` is the coefficient of the target
    update made every ``target_update_interval`` updates (1.0: a hard copy, STEVE). ``gradient_steps`` and
    ``model_gradient_steps`` count per ``train`` call, i.e. per vectorised env step (the paper: 4 per frame
    with one env; with ``n_envs`` envs divide by ``n_envs`` for updates per frame).

    :param target_mode: ``"steve"`` (inverse-variance weighting), ``"mve"`` (longest candidate with the TD-k
        trick: the Q loss is also applied at every imagined ``(s_i, a_i)``, ``i < H``, with target the
        longest remaining candidate, weighted by the probability of reaching ``s_i``), ``"mve_mean"`` (mean of
        the candidates), ``"mve_lambda"`` (TD(``td_lambda``)) or ``"ddpg"`` (one-step target, no model).
    :param value_expansion_horizon: ``H``, model steps of the expansion (3); ``H + 1`` candidates.
    :param target_update_interval: value updates between target-Q updates (500).
    :param q_ensemble_size: ``L`` (4). :param explore_chance: see above (0.05).
    :param policy_reg_coef: coefficient of ``mean(pretanh^2)`` in the policy loss (1e-3).
    :param td_lambda: lambda of ``"mve_lambda"`` (0.25).
    :param transition_ensemble_size: ``N`` (4), also the done ensemble's size.
    :param reward_ensemble_size: ``M`` (4).
    :param transition_n_layers: hidden layers of the transition nets (7).
    :param transition_hidden_size: (512).
    :param aux_n_layers: hidden layers of the reward and done nets (3). :param aux_hidden_size: (128).
    :param model_l2_coef: world-model L2 coefficient (1e-4). :param model_learning_rate: Adam (3e-4).
    :param model_batch_size: world-model batch (512).
    :param model_gradient_steps: world-model updates per ``train`` call, i.e. per env step (4).
    :param model_pretrain_steps: world-model updates made once, at ``learning_starts``, before the first value
        update uses the model (10 000).
    :raises ValueError: for an unknown ``target_mode`` (listing the valid ones), a
        ``value_expansion_horizon < 1`` with a model mode, an observation space other than a flat ``Box`` or
        an action space other than ``Box``.
    """

    policy_aliases: ClassVar[dict[str, type[STEVEPolicy]]] = {"MlpPolicy": MlpPolicy}
    policy: STEVEPolicy
    world_model: STEVEWorldModel | None
    model_env: ModelEnv | None
    model_optimizer: th.optim.Optimizer | None

    def __init__(
        self,
        policy: str | type[STEVEPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-4,
        buffer_size: int = 1_000_000,
        learning_starts: int = 10_000,
        batch_size: int = 512,
        tau: float = 1.0,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 4,
        action_noise: ActionNoise | None = None,
        replay_buffer_class: type[ReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        optimize_memory_usage: bool = False,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        # STEVE
        target_mode: str = "steve",
        value_expansion_horizon: int = 3,
        target_update_interval: int = 500,
        q_ensemble_size: int = 4,
        explore_chance: float = 0.05,
        policy_reg_coef: float = 1e-3,
        td_lambda: float = 0.25,
        transition_ensemble_size: int = 4,
        reward_ensemble_size: int = 4,
        transition_n_layers: int = 7,
        transition_hidden_size: int = 512,
        aux_n_layers: int = 3,
        aux_hidden_size: int = 128,
        model_l2_coef: float = 1e-4,
        model_learning_rate: float = 3e-4,
        model_batch_size: int = 512,
        model_gradient_steps: int = 4,
        model_pretrain_steps: int = 10_000,
        _init_setup_model: bool = True,
    ):
        if target_mode not in TARGET_MODES:
            raise ValueError(
                f"Unknown target_mode {target_mode!r}; expected one of {', '.join(TARGET_MODES)}"
            )
        if target_mode != "ddpg" and value_expansion_horizon < 1:
            raise ValueError(
                f"target_mode {target_mode!r} needs value_expansion_horizon >= 1, "
                f"got {value_expansion_horizon}"
            )
        if isinstance(env, str):
            env = maybe_make_env(env, verbose)  # made here so the space check below sees it
        check_flat_box_spaces(env, "STEVE")
        policy_kwargs = dict(policy_kwargs or {})
        policy_kwargs.update(q_ensemble_size=q_ensemble_size, explore_chance=explore_chance)
        super().__init__(
            policy,
            env,
            learning_rate=learning_rate,
            buffer_size=buffer_size,
            learning_starts=learning_starts,
            batch_size=batch_size,
            tau=tau,
            gamma=gamma,
            train_freq=train_freq,
            gradient_steps=gradient_steps,
            action_noise=action_noise,
            replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs,
            optimize_memory_usage=optimize_memory_usage,
            tensorboard_log=tensorboard_log,
            policy_kwargs=policy_kwargs,
            verbose=verbose,
            seed=seed,
            device=device,
            _init_setup_model=False,
        )
        # DDPG asks its policy for one critic; STEVE's policy has a Q ensemble of q_ensemble_size instead.
        self.policy_kwargs.pop("n_critics", None)
        self.target_mode, self.value_expansion_horizon = target_mode, int(value_expansion_horizon)
        self.target_update_interval = int(target_update_interval)
        self.q_ensemble_size, self.explore_chance = q_ensemble_size, explore_chance
        self.policy_reg_coef, self.td_lambda = policy_reg_coef, td_lambda
        self.transition_ensemble_size = transition_ensemble_size
        self.reward_ensemble_size = reward_ensemble_size
        self.transition_n_layers, self.transition_hidden_size = transition_n_layers, transition_hidden_size
        self.aux_n_layers, self.aux_hidden_size = aux_n_layers, aux_hidden_size
        self.model_l2_coef, self.model_learning_rate = model_l2_coef, model_learning_rate
        self.model_batch_size, self.model_gradient_steps = model_batch_size, model_gradient_steps
        self.model_pretrain_steps = model_pretrain_steps
        self._model_pretrained = False
        self._n_model_updates = 0
        if _init_setup_model:
            self._setup_model()

    # ------------------------------------------------------------------------------------ set-up
    @property
    def uses_model(self) -> bool:
        """Whether the target needs the world model (every mode but ``"ddpg"``)."""
        return self.target_mode != "ddpg"

    def _setup_model(self) -> None:
        # TD3's _setup_model also gathers the batch-norm statistics of a target actor; STEVE has no target
        # actor (targets use the current policy): replay buffer and policy come from OffPolicyAlgorithm.
        OffPolicyAlgorithm._setup_model(self)
        self._create_aliases()
        self.world_model, self.model_env, self.model_optimizer = None, None, None
        if not self.uses_model:
            return
        self.world_model = STEVEWorldModel(
            self.policy.obs_dim,
            self.policy.action_dim,
            transition_ensemble_size=self.transition_ensemble_size,
            reward_ensemble_size=self.reward_ensemble_size,
            transition_n_layers=self.transition_n_layers,
            transition_hidden_size=self.transition_hidden_size,
            aux_n_layers=self.aux_n_layers,
            aux_hidden_size=self.aux_hidden_size,
            l2_coef=self.model_l2_coef,
        ).to(self.device)
        self.model_optimizer = th.optim.Adam(self.world_model.parameters(), lr=self.model_learning_rate)
        # Every transition member follows its own rollout ("all"); the done model gives probabilities.
        self.model_env = ModelEnv(
            self.world_model.transition,
            self.policy.obs_dim,
            termination_fn=self.world_model.done_probs,
            reward_fn=self.world_model.rewards,
            propagation="all",
            soft_termination=True,
        )

    def _create_aliases(self) -> None:
        self.actor = self.policy.actor
        self.critic = self.policy.critic
        self.critic_target = self.policy.critic_target

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "model_env"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts = ["policy", "actor.optimizer", "critic.optimizer"]
        if self.uses_model:
            state_dicts += ["world_model", "model_optimizer"]
        return state_dicts, []

    # ------------------------------------------------------------------------------------ replay
    def _sample(self, batch_size: int) -> ReplayBufferSamples:
        """A replay batch with float32 observations: SB3's buffer keeps the observation space's dtype (float64
        for MuJoCo envs), which the float32 networks and batched ensembles do not take."""
        assert self.replay_buffer is not None
        data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)
        return data._replace(
            observations=data.observations.float(), next_observations=data.next_observations.float()
        )

    # ------------------------------------------------------------------------------------ world model
    def train_world_model(self, n_updates: int) -> dict[str, float]:
        """``n_updates`` world-model updates on real batches of ``model_batch_size``; mean losses.

        :raises RuntimeError: for ``target_mode="ddpg"`` (no world model).
        """
        if self.world_model is None or self.model_optimizer is None:
            raise RuntimeError("target_mode='ddpg' has no world model")
        assert self.replay_buffer is not None
        self.world_model.train(True)
        totals: dict[str, float] = {}
        for _ in range(n_updates):
            data = self._sample(self.model_batch_size)
            losses = self.world_model.loss(
                data.observations,
                data.actions,
                data.next_observations,
                data.rewards.flatten(),
                data.dones.flatten(),
            )
            self.model_optimizer.zero_grad()
            losses["total"].backward()
            self.model_optimizer.step()
            self._n_model_updates += 1
            for key, value in losses.items():
                totals[key] = totals.get(key, 0.0) + value.item()
        self.world_model.train(False)
        means = {key: value / max(n_updates, 1) for key, value in totals.items()}
        for key, value in means.items():
            self.logger.record(f"model/{key}_loss", value)
        self.logger.record("model/n_updates", self._n_model_updates, exclude="tensorboard")
        return means

    # ------------------------------------------------------------------------------------ targets
    @th.no_grad()
    def expansion(self, data: ReplayBufferSamples) -> ValueExpansion:
        """All candidate targets of a real batch in one batched pass (spec steve 5.3).

        From ``s_0 = s'`` every transition member ``n`` rolls ``H`` steps with ``a_t = pi(s_t)`` (its own
        rollout throughout: the ``N`` rollouts are the leading axis of one batched forward pass per step);
        rewards from every reward member, continue probabilities from the paired done member, ``Q`` from every
        target-Q member at every frame. Only the ``H`` steps are a Python loop.

        :param data: a replay batch (``observations (batch, obs_dim)`` ... ``dones (batch, 1)``).
        :return: :class:`ValueExpansion`.
        """
        assert self.model_env is not None
        states = [self.model_env.reset(data.next_observations)]  # (N, batch, obs_dim)
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
        n_members = obs.shape[2]
        real_reward = data.rewards.view(-1, 1, 1, 1).expand(-1, 1, n_members, self.reward_ensemble_size)
        all_rewards = th.cat([real_reward, th.stack(rewards).permute(2, 0, 1, 3)], dim=1)
        real_not_done = (1.0 - data.dones).view(-1, 1, 1).expand(-1, 1, n_members)
        not_done = th.cat([real_not_done, 1.0 - th.stack(dones).permute(2, 0, 1)], dim=1)
        continues = th.cumprod(not_done, dim=1)  # (batch, F, N)
        values = STEVEPolicy.q_of(self.critic_target, obs, acts).permute(1, 2, 3, 0)  # (batch, F, N, L)
        samples = candidate_samples(all_rewards, continues, values, self.gamma)
        means = samples.mean(-1)
        variances = samples.var(-1, unbiased=False)
        weights = candidate_weights(self.target_mode, variances, self.td_lambda)
        targets = (weights * means).sum(-1)
        return ValueExpansion(samples, means, variances, weights, targets, obs, acts, continues)

    @th.no_grad()
    def ddpg_targets(self, data: ReplayBufferSamples) -> th.Tensor:
        """``r + gamma (1 - d) mean_l Q'_l(s', pi(s'))``, ``(batch,)`` (``valuerl.py``, no world model)."""
        next_obs = data.next_observations
        next_q = STEVEPolicy.q_of(self.critic_target, next_obs, self.actor(next_obs))
        return data.rewards.flatten() + self.gamma * (1.0 - data.dones.flatten()) * next_q.mean(0)

    # ------------------------------------------------------------------------------------ value learning
    def _critic_loss(self, data: ReplayBufferSamples, stats: dict[str, list[float]]) -> th.Tensor:
        """``0.5 (Q_m(s, a) - target)^2``, a random member ``m`` per example; with ``"mve"`` (TD-k trick) also
        at the imagined ``(s_i, a_i)``, ``i < H`` (mean over transition members of ``Q_m``), weighted by the
        probability of reaching ``s_i``; mean over examples (and sources)."""
        member = split_by_member(data.observations.shape[0], self.q_ensemble_size, self.device)  # (L, n)
        q_real = STEVEPolicy.q_of_members(self.critic, data.observations[member], data.actions[member])
        if not self.uses_model:
            return 0.5 * (q_real - self.ddpg_targets(data)[member]).pow(2).mean()
        exp = self.expansion(data)
        w0 = exp.weights[:, 0].mean(0)
        for k, w in enumerate(w0.tolist()):
            stats.setdefault(f"steve_weight_{k}", []).append(w)
        stats.setdefault("model_usage", []).append(1.0 - w0[0].item())
        stats.setdefault("target_mean", []).append(exp.targets[:, 0].mean().item())
        if self.target_mode != "mve":
            return 0.5 * (q_real - exp.targets[member, 0]).pow(2).mean()
        # TD-k trick: guesses at s_0 .. s_{H-1} of every rollout, target the longest candidate from there.
        q_imagined = STEVEPolicy.q_of_members(
            self.critic, exp.obs[member][:, :, :-1], exp.actions[member][:, :, :-1]
        ).mean(-1)  # (L, n, H)
        guesses = th.cat([q_real.unsqueeze(-1), q_imagined], dim=-1)  # (L, n, F)
        reach = exp.continues.mean(-1)  # (batch, F)
        reach = th.cat([th.ones_like(reach[:, :1]), reach[:, :-1]], dim=1)
        return (0.5 * (guesses - exp.targets[member]).pow(2) * reach[member]).mean()

    def train(self, gradient_steps: int, batch_size: int = 512) -> None:
        """World-model updates (and the one-off pretraining), then ``gradient_steps`` value updates."""
        assert self.replay_buffer is not None
        if self.uses_model:
            if not self._model_pretrained:
                self.train_world_model(self.model_pretrain_steps)
                self._model_pretrained = True
            self.train_world_model(self.model_gradient_steps)
        self.policy.set_training_mode(True)
        self._update_learning_rate([self.actor.optimizer, self.critic.optimizer])
        stats: dict[str, list[float]] = {}
        critic_losses, actor_losses, reg_losses = [], [], []
        for _ in range(gradient_steps):
            self._n_updates += 1
            data = self._sample(batch_size)

            critic_loss = self._critic_loss(data, stats)
            self.critic.optimizer.zero_grad()
            critic_loss.backward()
            self.critic.optimizer.step()

            # Policy: -mean_batch of the ensemble-mean Q (only the actor steps; the critic's gradients from
            # this loss are cleared by the next critic zero_grad) + 1e-3 mean(pretanh^2).
            pretanh = self.actor.pretanh(data.observations)
            q_mean = STEVEPolicy.q_of(self.critic, data.observations, th.tanh(pretanh)).mean(0)
            reg_loss = self.policy_reg_coef * pretanh.pow(2).mean()
            actor_loss = -q_mean.mean() + reg_loss
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
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )
