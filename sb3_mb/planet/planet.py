"""PlaNet: a recurrent state-space model learnt from sequences, and planning in its latent space.

Hafner et al. 2019, "Learning Latent Dynamics for Planning from Pixels", arXiv:1811.04551, Alg. 1; for
``Discrete`` actions, the discrete-action adaptation of Rose's PlaNet fork (github.com/rosea-tf/planet). The
algorithm box as :class:`PlaNet` runs it (the paper's symbols in brackets)::

    collect seed_episodes episodes with uniformly random actions                          [S]
    loop:
        updates_per_episode model updates per newly completed episode                    [C]
            on batch_size sequences of sequence_length steps from the replay buffer      [B, L]
            loss = observation NLL + reward_loss_scale * reward NLL
                 + kl_scale * max(free_nats, KL(posterior || prior))                     (Sec. 3, Eq. 3)
                 [+ global_kl_scale * KL(posterior || N(0, I))]                          (arXiv v1)
                 [+ cell_as_prior * sum_i KL(posterior_{i-1} || posterior_i)]            (Rose's fork)
                 [+ min-over-later-targets NLLs of the tap cell, its KL]                 (TAP, Rose's fork)
                 [+ latent overshooting]                                                  (Sec. 4, Eq. 7)
        collect one step of every env: filter o_t into (h_t, s_t), plan with the CEM on the prior,
            add exploration noise, step        [random_dataset (Rose's fork): uniformly random actions]

The paper collects one episode after every C updates; here the C updates follow each completed episode, which
is the same schedule for one env and stays C per episode for a ``VecEnv`` of any size. Action repeat
[R] belongs to the environment (``sb3_mb/CartpoleSwingup-v0`` repeats 8 times), so PlaNet acts once per
``env.step``.

Deviation from the paper, on by default (``policy_kwargs=dict(normalize_rewards=False)`` restores it): the
reward NLL is taken on ``symlog(r / reward_scale)``, the scale measured on the replay buffer at the first
update, so that the reward term does not depend on the reward's units (issue 11: rewards x1e-3 and x1e3 on the
double integrator; :class:`~sb3_mb.planet.policies.PlaNetPolicy`).

The networks and the planner, and all their settings, are :class:`~sb3_mb.planet.policies.PlaNetPolicy`'s.
"""

from __future__ import annotations

import warnings
from collections import defaultdict
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.logger import Video
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import update_learning_rate

from sb3_mb.common.base_class import WorldModelAlgorithm
from sb3_mb.common.buffers import EpisodeReplayBuffer, SequenceSamples
from sb3_mb.common.conv import postprocess_observation
from sb3_mb.common.distributions import gaussian_kl, gaussian_nll, standard_normal_kl
from sb3_mb.common.utils import resolve_policy_and_env
from sb3_mb.planet.policies import (
    CnnPolicy,
    MlpPolicy,
    PlaNetPolicy,
    PlaNetState,
    check_action_space,
    check_spaces,
)
from sb3_mb.planet.rssm import RSSMState
from sb3_mb.planet.transition import ClockworkRSSM

SelfPlaNet = TypeVar("SelfPlaNet", bound="PlaNet")


class PlaNet(WorldModelAlgorithm):
    """PlaNet (Hafner et al. 2019, arXiv:1811.04551) on SB3's off-policy machinery.

    The arguments here are the learning rule, with the paper's camera-ready values (App. A) as defaults; the
    sizes of the networks and of the planner, and the exploration, are ``policy_kwargs`` of
    :class:`~sb3_mb.planet.policies.PlaNetPolicy`. ``PlaNet(env)`` picks ``CnnPolicy`` for uint8 image
    observations and ``MlpPolicy`` otherwise. ``predict`` is stateful: it carries a
    :class:`~sb3_mb.planet.policies.PlaNetState` (numpy arrays, env dimension first), so ``evaluate_policy``
    and ``EvalCallback`` work unchanged.

    :param policy: ``"MlpPolicy"`` (vector observations), ``"CnnPolicy"`` (64x64 images) or a policy class;
        or the env itself, with ``env`` left out.
    :param env: a Gymnasium env, a ``VecEnv`` or a registered env id; bounded ``Box`` or ``Discrete`` actions.
    :param learning_rate: Adam's learning rate (1e-3), or an SB3 schedule of the progress remaining.
    :param learning_rate_warmup: linear warm-up over this many model updates (Rose's fork and the arXiv v1
        code: 10 000; camera-ready: none): update ``n`` (counted from 1 over the whole training) uses
        ``learning_rate(progress) * min(1, n / learning_rate_warmup)``. The fork's ramp starts at 0 on its
        first update; here the first update takes ``1 / learning_rate_warmup`` of the rate. 0: off.
    :param buffer_size: replay capacity in stored observations; an episode of ``L`` steps takes ``L + 1``.
    :param batch_size: sequences per update, B (50).
    :param sequence_length: steps per sequence, L (50); shorter episodes are never sampled. While every stored
        episode is shorter, whole episodes are (with a warning).
    :param seed_episodes: episodes of uniformly random actions before the first update, S (5).
    :param updates_per_episode: model updates per collected episode, C (100).
    :param random_dataset: the "random dataset" protocol of Rose's fork: every episode is collected with
        uniformly random actions, as the seed episodes are, so the model learns from random-policy data
        only and the planner never collects (``predict`` and evaluation still plan). False: Alg. 1.
    :param free_nats: KL below this many nats per step is not penalised (3; arXiv v1: 2).
    :param reward_loss_scale: weight of the reward NLL (10).
    :param kl_scale: weight of ``KL(posterior || prior)`` (1).
    :param global_kl_scale: weight of ``KL(posterior || N(0, I))`` (0; arXiv v1: 0.1).
    :param cell_as_prior: Rose's fork's ``cell_as_prior: x`` for the clockwork RSSM (``policy_kwargs``
        ``cw_tau``; the fork used 0.1): adds ``x * sum_i KL(post_{i-1} || post_i)`` between the posteriors
        of adjacent cells, faster first, per step (no free nats), so each slower cell's posterior acts as
        a prior for the next faster one. 0: off.
    :param overshooting_distance: latent overshooting distance D (0 = off; arXiv v1: 49 = L - 1).
    :param overshooting_kl_scale: weight of the overshooting KL, averaged over distances 2..D (arXiv v1: 1).
    :param overshooting_reward_scale: weight of the overshooting reward NLL (arXiv v1: 100).
    :param max_grad_norm: global-norm gradient clip (1000).
    :param video_interval: log an open-loop prediction video every this many updates (image observations,
        TensorBoard output); 0 disables.
    :param open_loop_context: posterior frames before the open-loop predictions of the video (5).
    :param replay_buffer_class: an :class:`~sb3_mb.common.buffers.EpisodeReplayBuffer` (or a subclass).
    :param replay_buffer_kwargs: its extra arguments (e.g. ``handle_timeout_termination``).
    :param policy_kwargs: :class:`~sb3_mb.planet.policies.PlaNetPolicy`'s arguments: network and planner
        sizes, exploration, optimizer.
    :param stats_window_size: episodes in the rollout statistics. :param tensorboard_log: log folder.
    :param verbose: 0, 1 or 2. :param seed: random seed. :param device: torch device.
    :raises ValueError: for an unsupported observation or action space (the message names it and what is
        expected: a flat bounded ``Box`` or a ``Discrete`` action space); ``cell_as_prior`` without a
        clockwork RSSM of equal state sizes; a negative or fractional ``learning_rate_warmup``.
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": MlpPolicy, "CnnPolicy": CnnPolicy}
    policy: PlaNetPolicy
    replay_buffer: EpisodeReplayBuffer

    def __init__(
        self,
        policy: str | type[PlaNetPolicy] | GymEnv,
        env: GymEnv | str | None = None,
        learning_rate: float | Schedule = 1e-3,
        learning_rate_warmup: int = 0,
        buffer_size: int = 100_000,
        batch_size: int = 50,
        sequence_length: int = 50,
        seed_episodes: int = 5,
        updates_per_episode: int = 100,
        random_dataset: bool = False,
        free_nats: float = 3.0,
        reward_loss_scale: float = 10.0,
        kl_scale: float = 1.0,
        global_kl_scale: float = 0.0,
        cell_as_prior: float = 0.0,
        overshooting_distance: int = 0,
        overshooting_kl_scale: float = 1.0,
        overshooting_reward_scale: float = 100.0,
        max_grad_norm: float = 1000.0,
        video_interval: int = 1000,
        open_loop_context: int = 5,
        replay_buffer_class: type[EpisodeReplayBuffer] = EpisodeReplayBuffer,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        policy, env = resolve_policy_and_env(policy, env, self.policy_aliases, "PlaNet", verbose)
        if env is not None:
            check_action_space(env.action_space)  # before SB3's own assertions, with a clearer message
        super().__init__(
            policy,
            env,
            learning_rate,
            buffer_size=buffer_size,
            batch_size=batch_size,
            replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs,
            policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            seed=seed,
            supported_action_spaces=(spaces.Box, spaces.Discrete),
        )
        self.sequence_length, self.seed_episodes = sequence_length, seed_episodes
        self.updates_per_episode = updates_per_episode
        if int(learning_rate_warmup) != learning_rate_warmup or learning_rate_warmup < 0:
            raise ValueError(
                f"learning_rate_warmup must be a non-negative integer, got {learning_rate_warmup!r}"
            )
        self.learning_rate_warmup, self.random_dataset = int(learning_rate_warmup), random_dataset
        self.free_nats, self.reward_loss_scale, self.kl_scale = free_nats, reward_loss_scale, kl_scale
        self.global_kl_scale, self.cell_as_prior = global_kl_scale, cell_as_prior
        self.overshooting_distance = overshooting_distance
        self.overshooting_kl_scale = overshooting_kl_scale
        self.overshooting_reward_scale = overshooting_reward_scale
        self.max_grad_norm = max_grad_norm
        self.video_interval, self.open_loop_context = video_interval, open_loop_context
        self._episodes_trained = 0
        self._planned_returns: list[float] = []
        self._plan_returns_first_last: list[tuple[float, float]] = []
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        # The policy's space errors, before SB3 builds the replay buffer on the spaces.
        use_conv = issubclass(self.policy_class, CnnPolicy) or bool(self.policy_kwargs.get("use_conv"))
        check_spaces(self.observation_space, self.action_space, use_conv)
        super()._setup_model()
        rssm = self.policy.rssm
        if self.cell_as_prior > 0 and not (
            isinstance(rssm, ClockworkRSSM) and len(set(rssm.state_sizes)) == 1
        ):
            sizes = getattr(rssm, "state_sizes", (rssm.state_size,))
            raise ValueError(
                f"cell_as_prior={self.cell_as_prior} needs a clockwork RSSM (policy_kwargs cw_tau with 2 or "
                f"more periods) whose cells have equal state sizes; got {type(rssm).__name__} with state "
                f"sizes {sizes}"
            )

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_planned_returns", "_plan_returns_first_last"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "policy.optimizer"], []

    def learn(
        self: SelfPlaNet,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "PlaNet",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfPlaNet:
        """:meth:`~sb3_mb.common.base_class.WorldModelAlgorithm.learn`, logged under ``PlaNet``."""
        return super().learn(
            total_timesteps, callback, log_interval, tb_log_name, reset_num_timesteps, progress_bar
        )

    # ----------------------------------------------------------------------------------------------
    # Collecting (Alg. 1)
    # ----------------------------------------------------------------------------------------------
    def _in_warmup(self) -> bool:
        """Uniformly random actions until ``seed_episodes`` episodes have been completed (always with
        ``random_dataset``)."""
        return self.random_dataset or self.replay_buffer.n_episodes_added < self.seed_episodes

    def _explore(
        self, observation: np.ndarray, state: PlaNetState | None, episode_start: np.ndarray
    ) -> tuple[np.ndarray, PlaNetState]:
        """Filter, plan, add exploration noise.

        Logged at the next :meth:`train`, averaged over the steps and envs since the last one: the CEM's
        planned return (``train/planned_return``) and, as the fork's ``summarise_plan_returns``, the mean
        return of all candidates at the first and at the last CEM iteration (``train/plan_return_first``,
        ``train/plan_return_last``): how much the CEM improves on its initial distribution.
        """
        obs_tensor, _ = self.policy.obs_to_tensor(observation)
        generator = self.policy.make_generator()
        action, state, plan = self.policy.act(obs_tensor, state, episode_start, False, generator)
        self._planned_returns.append(float(plan.planned_return.mean()))
        candidate_returns = plan.candidate_returns  # (n_iterations, n_envs)
        self._plan_returns_first_last.append(
            (float(candidate_returns[0].mean()), float(candidate_returns[-1].mean()))
        )
        return action, state

    def _gradient_steps_due(self) -> int:
        """Updates owed for the episodes completed since the last training: C per episode.

        None before ``seed_episodes`` episodes exist; then C for the seed data, and C per later episode.
        """
        added = self.replay_buffer.n_episodes_added
        if added < self.seed_episodes or added <= self._episodes_trained:
            return 0
        new = added - max(self._episodes_trained, self.seed_episodes - 1)
        self._episodes_trained = added
        return self.updates_per_episode * new

    def _window_length(self) -> int:
        """Steps per sampled sequence: ``sequence_length``, or the longest stored episode's records when every
        stored episode is shorter (with a warning).

        Episodes shorter than L are never sampled, so with only short episodes (30 steps hold 31 records,
        fewer than the paper's L = 50) PlaNet would otherwise never train.
        """
        longest = int(self.replay_buffer.episode_lengths.max())
        if longest >= self.sequence_length:
            return self.sequence_length
        warnings.warn(
            f"PlaNet: every stored episode is shorter than sequence_length={self.sequence_length} records; "
            f"training on whole episodes of {longest} records (set sequence_length <= {longest})"
        )
        return longest

    # ----------------------------------------------------------------------------------------------
    # Learning
    # ----------------------------------------------------------------------------------------------
    def _compute_losses(self, samples: SequenceSamples) -> dict[str, th.Tensor]:
        """PlaNet's loss on a batch of sequences (Sec. 3, Eq. 3 with free nats), averaged over batch and time.

        :param samples: ``(batch, seq_len)`` windows from :meth:`EpisodeReplayBuffer.sample_sequences`.
        :return: ``loss`` and its terms: ``observation_nll`` (nats per step, summed over the observation's
            dims), ``reward_nll``, ``kl`` (nats per step, before free nats), ``kl_loss`` (after), and with
            their options ``global_kl``, ``cell_as_prior_kl``, ``overshooting_kl``,
            ``overshooting_reward_nll``, and those of :meth:`_tap_losses`.
        """
        policy = self.policy
        observations = policy.preprocess(samples.observations, noise=True)
        actions = policy.model_actions(samples.actions)
        is_first = samples.is_first.bool()
        embeddings = policy.encoder(observations)
        priors, posteriors = policy.rssm.observe(embeddings, actions, is_first)
        features = policy.rssm.features(posteriors)

        observation_nll = policy.observation_nll(features, observations).mean()
        reward_mask = (~is_first).float()  # the record at an episode start holds no reward
        reward_nll = (policy.reward_nll(features, samples.rewards) * reward_mask).sum()
        reward_nll = reward_nll / reward_mask.sum().clamp(min=1.0)
        kl = gaussian_kl(posteriors.mean, posteriors.std, priors.mean, priors.std)
        kl_loss = th.clamp(kl, min=self.free_nats).mean()
        loss = observation_nll + self.reward_loss_scale * reward_nll + self.kl_scale * kl_loss
        losses = {
            "observation_nll": observation_nll,
            "reward_nll": reward_nll,
            "kl": kl.mean(),
            "kl_loss": kl_loss,
        }
        if self.global_kl_scale > 0:
            global_kl = standard_normal_kl(posteriors.mean, posteriors.std).mean()
            loss = loss + self.global_kl_scale * global_kl
            losses["global_kl"] = global_kl
        if self.cell_as_prior > 0:
            cells = policy.rssm.split(posteriors)
            kls = [
                gaussian_kl(f.mean, f.std, s.mean, s.std) for f, s in zip(cells[:-1], cells[1:], strict=True)
            ]
            cell_kl = th.stack(kls).sum(dim=0).mean()
            loss = loss + self.cell_as_prior * cell_kl
            losses["cell_as_prior_kl"] = cell_kl
        if policy.tap is not None:
            tap = self._tap_losses(embeddings, actions, is_first, observations, samples.rewards)
            loss = loss + tap["tap_observation_nll"] + self.reward_loss_scale * tap["tap_reward_nll"]
            loss = loss + self.kl_scale * tap["tap_kl_loss"]
            losses.update(tap)
        distance = min(self.overshooting_distance, samples.rewards.shape[1] - 1)
        if distance >= 2:
            overshooting_kl, overshooting_reward = self._overshooting(
                posteriors, actions, samples.rewards, distance
            )
            loss = loss + self.overshooting_kl_scale * overshooting_kl
            loss = loss + self.overshooting_reward_scale * overshooting_reward
            losses["overshooting_kl"] = overshooting_kl
            losses["overshooting_reward_nll"] = overshooting_reward
        losses["loss"] = loss
        return losses

    def _tap_losses(
        self,
        embeddings: th.Tensor,
        actions: th.Tensor,
        is_first: th.Tensor,
        observations: th.Tensor,
        rewards: th.Tensor,
    ) -> dict[str, th.Tensor]:
        """Time-agnostic prediction (Rose's fork, ``tap_cell``; after Jayaraman et al. 2019, "Time-Agnostic
        Prediction", arXiv:1808.07784): the tap cell's posterior features at ``j`` are decoded against every
        *later* target ``i > j`` and only the best match counts, ``min_{i > j} NLL(target_i | features_j)``,
        for the observation and the reward heads separately, averaged over the ``j`` that have a later
        target. Weighted as the main terms (observation 1, reward ``reward_loss_scale``), as in the fork.

        The two QUIRKs of the fork (spec 3.2), fixed:

        - its loss decoded the *main* model's posterior features, so the tap cell, which the planner unrolls,
          was never trained; here the features are the tap cell's own (it observes the same embeddings), and
          its prior, which the planner rolls out, learns from the tap cell's own ``KL(posterior || prior)``
          with free nats (weight ``kl_scale``; the fork had none, "we will never be open-loop unrolling this
          thing"). The agent also carries the tap cell's filtered state from step to step (the fork's never
          stored it);
        - its min ran over masked entries set to 0, and every ``j`` has such entries (``i <= j``) while every
          unit-variance NLL is above 0, so the min was 0 and the loss trained nothing; here masked entries
          are ``+inf`` before the min, and the last index (no later target) is left out.

        :param embeddings: ``(batch, seq_len, embedding_dim)``. :param actions: ``(batch, seq_len,
            action_dim)``. :param is_first: ``(batch, seq_len)``. :param observations: preprocessed
            ``(batch, seq_len, *obs_shape)``. :param rewards: ``(batch, seq_len)``.
        :return: ``tap_observation_nll``, ``tap_reward_nll`` (the min-over-later-targets NLLs), ``tap_kl``
            and ``tap_kl_loss`` (the tap cell's KL before and after free nats).
        """
        policy = self.policy
        priors, posteriors = policy.tap.observe(embeddings, actions, is_first)
        features = policy.tap.features(posteriors)
        seq_len = rewards.shape[1]
        ones = th.ones(seq_len, seq_len, dtype=th.bool, device=rewards.device)
        later = ones.triu(diagonal=1)  # [j, i]: target i later than features j
        targets = policy.reward_target(rewards)
        reward_nll = gaussian_nll(targets[:, None, :], policy.reward_model(features)[..., 0][:, :, None])
        reward_valid = later[None] & ~is_first[:, None, :]  # the record at an episode start holds no reward
        terms = {}
        for name, nll, valid in (
            ("tap_observation_nll", policy.pairwise_observation_nll(features, observations), later[None]),
            ("tap_reward_nll", reward_nll, reward_valid),
        ):
            best = th.where(valid, nll, th.full_like(nll, float("inf"))).min(dim=2).values  # (batch, seq_len)
            has_later = valid.any(dim=2).expand_as(best)
            terms[name] = best[has_later].sum() / has_later.sum().clamp(min=1)
        kl = gaussian_kl(posteriors.mean, posteriors.std, priors.mean, priors.std)
        terms["tap_kl"], terms["tap_kl_loss"] = kl.mean(), th.clamp(kl, min=self.free_nats).mean()
        return terms

    def _overshooting(
        self, posteriors: RSSMState, actions: th.Tensor, rewards: th.Tensor, distance: int
    ) -> tuple[th.Tensor, th.Tensor]:
        """Latent overshooting (Sec. 4, Eq. 7; on in arXiv v1, off in the camera-ready): open-loop priors
        ``d = 2..D`` steps ahead of every posterior, matched with free nats to the posterior there (its
        gradient stopped, as in the original code), and their reward NLL.

        Windows never cross an episode start after index 0, so the rollouts need no reset.

        :param posteriors: fields ``(batch, seq_len, ...)``. :param actions: ``(batch, seq_len, action_dim)``.
        :param rewards: ``(batch, seq_len)``. :param distance: D, ``2 <= D < seq_len``.
        :return: the mean overshooting KL and the mean reward NLL over all (start, distance) pairs.
        """
        rssm = self.policy.rssm
        target = posteriors.detach()
        batch, seq_len = rewards.shape
        state = posteriors
        kls, reward_nlls = [], []
        for d in range(1, distance + 1):
            n = seq_len - d
            prior = rssm.img_step(
                RSSMState(*(x[:, :n].reshape(batch * n, -1) for x in state)),
                actions[:, d:].reshape(batch * n, -1),
                time=(th.arange(n, device=rewards.device) + d).repeat(batch),  # the windows' clock
            )
            state = RSSMState(*(x.reshape(batch, n, -1) for x in prior))
            if d >= 2:
                kl = gaussian_kl(target.mean[:, d:], target.std[:, d:], state.mean, state.std)
                kls.append(th.clamp(kl, min=self.free_nats).reshape(-1))
                nll = self.policy.reward_nll(rssm.features(state), rewards[:, d:])
                reward_nlls.append(nll.reshape(-1))
        return th.cat(kls).mean(), th.cat(reward_nlls).mean()

    @th.no_grad()
    def open_loop_video(self, samples: SequenceSamples, n_sequences: int = 4, fps: float = 10.0) -> Video:
        """Open-loop prediction video, as the original code's summaries (context 5): for each of
        ``n_sequences`` sequences, ``open_loop_context`` posterior reconstructions, then prior predictions
        (the means, no sampling) under the true actions, beside the truth.

        :return: :class:`~stable_baselines3.common.logger.Video` of uint8 frames ``(1, T, C, n * 64, 2 * 64)``
            (sequences stacked vertically; truth left, model right).
        :raises ValueError: for vector observations (nothing to show as images).
        """
        policy = self.policy
        if not policy.use_conv:
            raise ValueError("open-loop videos need image observations (CnnPolicy)")
        n = min(n_sequences, samples.observations.shape[0])
        context = min(self.open_loop_context, samples.observations.shape[1] - 1)
        observations = policy.preprocess(samples.observations[:n], noise=False)
        actions = policy.model_actions(samples.actions[:n])
        embeddings = policy.encoder(observations[:, :context])
        _, posteriors = policy.rssm.observe(embeddings, actions[:, :context], samples.is_first[:n, :context])
        priors = policy.rssm.imagine(
            RSSMState(*(x[:, -1] for x in posteriors)),
            actions[:, context:],
            sample=False,
            time=th.full((n,), context - 1, device=actions.device),
        )
        reconstructions = policy.decoder(policy.rssm.features(posteriors))
        predictions = policy.decoder(policy.rssm.features(priors))
        model = th.cat([reconstructions, predictions], dim=1)  # (n, T, C, H, W)
        frames = th.cat([observations, model], dim=-1)  # truth | model
        frames = th.cat(list(frames), dim=-2)  # sequences stacked vertically: (T, C, n * H, 2 * W)
        video = postprocess_observation(frames, policy.bit_depth, channels_last=False)
        return Video(th.from_numpy(video)[None], fps=fps)

    def _learning_rate(self, update: int) -> float:
        """Adam's rate for the ``update``-th model update (from 1): the schedule at the current progress,
        times ``min(1, update / learning_rate_warmup)`` with a warm-up."""
        rate = self.lr_schedule(self._current_progress_remaining)
        if self.learning_rate_warmup > 0:
            rate *= min(1.0, update / self.learning_rate_warmup)
        return rate

    def train(self, gradient_steps: int, batch_size: int | None = None) -> None:
        """``gradient_steps`` model updates on sampled sequences, then ``logger.record`` of the mean terms.

        :raises FloatingPointError: if the loss or its gradient norm is NaN or infinite, before the update
            (the message lists the loss terms).
        """
        batch_size = batch_size or self.batch_size
        policy = self.policy
        policy.set_training_mode(True)
        if policy.normalize_rewards:
            policy.set_reward_scale(self.replay_buffer.stored_rewards())
        window = self._window_length()
        totals: dict[str, float] = defaultdict(float)
        for _ in range(gradient_steps):
            samples = self.replay_buffer.sample_sequences(batch_size, window)
            losses = self._compute_losses(samples)
            loss = losses["loss"]
            self._check_finite(losses, "loss", step=self._n_updates + 1)
            learning_rate = self._learning_rate(self._n_updates + 1)
            update_learning_rate(policy.optimizer, learning_rate)
            policy.optimizer.zero_grad()
            loss.backward()
            grad_norm = th.nn.utils.clip_grad_norm_(policy.parameters(), self.max_grad_norm)
            self._check_finite(grad_norm, "gradient norm", step=self._n_updates + 1)
            policy.optimizer.step()
            self._n_updates += 1
            for key, value in losses.items():
                totals[key] += float(value.detach())
            totals["grad_norm"] += float(grad_norm)
            if self.video_interval > 0 and policy.use_conv and self._n_updates % self.video_interval == 0:
                self.logger.record(
                    "train/open_loop", self.open_loop_video(samples), exclude=("stdout", "log", "json", "csv")
                )
        policy.set_training_mode(False)
        for key, value in totals.items():
            self.logger.record(f"train/{key}", value / max(gradient_steps, 1))
        if gradient_steps > 0:
            self.logger.record("train/learning_rate", learning_rate)
        if self._planned_returns:
            self.logger.record("train/planned_return", float(np.mean(self._planned_returns)))
            self._planned_returns = []
        if self._plan_returns_first_last:
            first, last = np.mean(self._plan_returns_first_last, axis=0)
            self.logger.record("train/plan_return_first", float(first))
            self.logger.record("train/plan_return_last", float(last))
            self._plan_returns_first_last = []
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
