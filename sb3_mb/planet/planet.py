"""PlaNet: a recurrent state-space model learnt from sequences, and CEM planning in its latent space.

Hafner et al. 2019, "Learning Latent Dynamics for Planning from Pixels" (Alg. 1; spec ``planet.md`` 3.1),
with the discrete-action adaptation of the ``rosea-tf/planet`` fork (spec 3.2). The algorithm box::

    collect seed_episodes episodes with random actions
    loop:
        C = updates_per_episode model updates per newly completed episode, each on batch_size
            sequences of sequence_length steps:  loss = obs NLL + reward_loss_scale * reward NLL
            + kl_scale * max(free_nats, KL(posterior || prior))  [+ global KL] [+ latent overshooting]
        collect: filter o_t into (h_t, s_t), plan with the CEM on the prior, add exploration noise, step

Action repeat belongs to the environment (e.g. ``sb3_mb/CartpoleSwingup-v0`` repeats 8 times), so
``PlaNet`` acts once per ``env.step``.
"""

from __future__ import annotations

import io
import pathlib
import sys
import time
import warnings
from collections import defaultdict
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.logger import Video
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.save_util import load_from_pkl, save_to_pkl
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule
from stable_baselines3.common.utils import obs_as_tensor, safe_mean

from sb3_mb.common.buffers import EpisodeReplayBuffer, SequenceSamples
from sb3_mb.common.conv import postprocess_observation
from sb3_mb.planet.policies import (
    LOG_2PI,
    CnnPolicy,
    MlpPolicy,
    PlaNetPolicy,
    check_action_space,
    check_spaces,
)
from sb3_mb.planet.rssm import RSSM, gaussian_kl, standard_normal_kl

SelfPlaNet = TypeVar("SelfPlaNet", bound="PlaNet")


class PlaNet(BaseAlgorithm):
    """PlaNet (Hafner et al. 2019), an SB3 algorithm with a custom ``learn`` (like sb3-contrib's ARS).

    Defaults are the camera-ready settings (spec ``planet.md`` 3.1). ``predict`` is stateful: it carries
    ``(belief, posterior_sample, prev_action[, plan])`` as numpy arrays with the env dimension first
    (:mod:`sb3_mb.planet.policies`), so ``evaluate_policy`` and ``EvalCallback`` work unchanged.

    :param policy: ``"MlpPolicy"`` (vector observations) or ``"CnnPolicy"`` (64x64 images), or a class.
    :param env: a Gymnasium env, VecEnv or registered id; ``Box``/``Discrete`` actions.
    :param learning_rate: Adam learning rate (1e-3), or a schedule.
    :param buffer_size: replay capacity in stored observations (an episode of ``L`` steps takes ``L + 1``).
    :param batch_size: sequences per update (50). :param sequence_length: steps per sequence (50).
    :param seed_episodes: random episodes before the first update (5).
    :param updates_per_episode: model updates per collected episode, C (100).
    :param belief_size: GRU belief (200). :param state_size: stochastic state (30).
    :param hidden_size: RSSM dense layers (200). :param min_std: std floor of prior and posterior (0.1).
    :param free_nats: KL below this many nats per step is not penalised (3; arXiv v1: 2).
    :param reward_loss_scale: weight of the reward NLL (10). :param kl_scale: weight of the KL (1).
    :param global_kl_scale: weight of ``KL(posterior || N(0, I))`` (camera-ready 0; arXiv v1 0.1).
    :param overshooting_distance: latent overshooting distance D (camera-ready 0 = off; v1 49 = T - 1).
    :param overshooting_kl_scale: weight of the overshooting KL, averaged over distances 2..D (v1: 1).
    :param overshooting_reward_scale: weight of the overshooting reward NLL (v1: 100).
    :param max_grad_norm: global-norm gradient clip (1000). :param adam_eps: Adam epsilon (1e-4).
    :param bit_depth: image quantisation bits (5).
    :param planning_horizon: CEM horizon H (12). :param n_candidates: (1000). :param n_elites: (100).
    :param n_iterations: CEM iterations (10). :param warm_start: shift the previous plan as the CEM's start.
    :param discount: per-step discount of the planning objective (1 = the original; fork 0.99).
    :param exploration_noise: Gaussian action noise std in ``[-1, 1]`` units while collecting (0.3).
    :param exploration_epsilon: ε-greedy for ``Discrete`` actions while collecting (0.1).
    :param video_interval: log an open-loop prediction video every this many updates (image observations,
        needs a TensorBoard output); 0 disables.
    :param open_loop_context: posterior (context) frames before the open-loop prediction in the video (5).
    :param policy_kwargs: extra :class:`~sb3_mb.planet.policies.PlaNetPolicy` arguments (``cnn_depth``,
        ``mlp_hidden_sizes``, ``reward_hidden_sizes``, ``activation_fn``, ``future_rnn``, ...).
    :raises TypeError, ValueError: for unsupported observation or action spaces (message names the space).
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {"MlpPolicy": MlpPolicy, "CnnPolicy": CnnPolicy}
    policy: PlaNetPolicy
    replay_buffer: EpisodeReplayBuffer

    def __init__(
        self,
        policy: str | type[PlaNetPolicy],
        env: GymEnv | str | None,
        learning_rate: float | Schedule = 1e-3,
        buffer_size: int = 100_000,
        batch_size: int = 50,
        sequence_length: int = 50,
        seed_episodes: int = 5,
        updates_per_episode: int = 100,
        belief_size: int = 200,
        state_size: int = 30,
        hidden_size: int = 200,
        min_std: float = 0.1,
        free_nats: float = 3.0,
        reward_loss_scale: float = 10.0,
        kl_scale: float = 1.0,
        global_kl_scale: float = 0.0,
        overshooting_distance: int = 0,
        overshooting_kl_scale: float = 1.0,
        overshooting_reward_scale: float = 100.0,
        max_grad_norm: float = 1000.0,
        adam_eps: float = 1e-4,
        bit_depth: int = 5,
        planning_horizon: int = 12,
        n_candidates: int = 1000,
        n_elites: int = 100,
        n_iterations: int = 10,
        warm_start: bool = False,
        discount: float = 1.0,
        exploration_noise: float = 0.3,
        exploration_epsilon: float = 0.1,
        video_interval: int = 1000,
        open_loop_context: int = 5,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        if env is not None and isinstance(getattr(env, "action_space", None), spaces.Box):
            check_action_space(env.action_space)  # before SB3's own assertion on the bounds
        super().__init__(
            policy,
            env,
            learning_rate,
            policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            support_multi_env=True,
            seed=seed,
        )
        if self.env is not None:
            use_conv = issubclass(self.policy_class, CnnPolicy) or bool(self.policy_kwargs.get("use_conv"))
            check_spaces(self.observation_space, self.action_space, use_conv)
        self.buffer_size, self.batch_size, self.sequence_length = buffer_size, batch_size, sequence_length
        self.seed_episodes, self.updates_per_episode = seed_episodes, updates_per_episode
        self.belief_size, self.state_size, self.hidden_size, self.min_std = (
            belief_size,
            state_size,
            hidden_size,
            min_std,
        )
        self.free_nats, self.reward_loss_scale, self.kl_scale = free_nats, reward_loss_scale, kl_scale
        self.global_kl_scale = global_kl_scale
        self.overshooting_distance = overshooting_distance
        self.overshooting_kl_scale = overshooting_kl_scale
        self.overshooting_reward_scale = overshooting_reward_scale
        self.max_grad_norm, self.adam_eps, self.bit_depth = max_grad_norm, adam_eps, bit_depth
        self.planning_horizon, self.n_candidates = planning_horizon, n_candidates
        self.n_elites, self.n_iterations = n_elites, n_iterations
        self.warm_start, self.discount = warm_start, discount
        self.exploration_noise, self.exploration_epsilon = exploration_noise, exploration_epsilon
        self.video_interval, self.open_loop_context = video_interval, open_loop_context
        self._n_updates = 0
        self._episodes_trained = 0
        self._last_state: tuple[np.ndarray, ...] | None = None
        self._planned_returns: list[float] = []
        if _init_setup_model:
            self._setup_model()

    # ----------------------------------------------------------------------------------------------
    # SB3 contracts
    # ----------------------------------------------------------------------------------------------
    def _setup_model(self) -> None:
        self._setup_lr_schedule()
        self.set_random_seed(self.seed)
        self.replay_buffer = EpisodeReplayBuffer(
            max(self.buffer_size, 2),  # the zoo's enjoy loads off-policy models with buffer_size=1
            self.observation_space,
            self.action_space,
            device=self.device,
            n_envs=self.n_envs,
        )
        policy_kwargs = dict(
            belief_size=self.belief_size,
            state_size=self.state_size,
            hidden_size=self.hidden_size,
            min_std=self.min_std,
            bit_depth=self.bit_depth,
            planning_horizon=self.planning_horizon,
            n_candidates=self.n_candidates,
            n_elites=self.n_elites,
            n_iterations=self.n_iterations,
            warm_start=self.warm_start,
            discount=self.discount,
            exploration_noise=self.exploration_noise,
            exploration_epsilon=self.exploration_epsilon,
            optimizer_kwargs={"eps": self.adam_eps},
        )
        policy_kwargs.update(self.policy_kwargs)
        self.policy = self.policy_class(
            self.observation_space, self.action_space, self.lr_schedule, **policy_kwargs
        )
        self.policy = self.policy.to(self.device)

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_last_state", "_planned_returns"]

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        return ["policy", "policy.optimizer"], []

    def save_replay_buffer(self, path: str | pathlib.Path | io.BufferedIOBase) -> None:
        """Pickle the episode replay buffer (as SB3's ``OffPolicyAlgorithm.save_replay_buffer``)."""
        save_to_pkl(path, self.replay_buffer, self.verbose)

    def load_replay_buffer(self, path: str | pathlib.Path | io.BufferedIOBase) -> None:
        """Load a buffer written by :meth:`save_replay_buffer`.

        :raises TypeError: if the file does not hold an :class:`EpisodeReplayBuffer`.
        """
        buffer = load_from_pkl(path, self.verbose)
        if not isinstance(buffer, EpisodeReplayBuffer):
            raise TypeError(f"Expected an EpisodeReplayBuffer, got {type(buffer).__name__}")
        buffer.device = self.device
        self.replay_buffer = buffer

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """Filter the observation and plan; see :meth:`PlaNetPolicy.predict` for the state layout."""
        return self.policy.predict(observation, state, episode_start, deterministic)

    # ----------------------------------------------------------------------------------------------
    # Learning
    # ----------------------------------------------------------------------------------------------
    def _compute_losses(self, samples: SequenceSamples) -> dict[str, th.Tensor]:
        """PlaNet's loss on a batch of sequences (spec ``planet.md`` 3.1), averaged over batch and time.

        :param samples: ``(batch, seq_len)`` windows from :meth:`EpisodeReplayBuffer.sample_sequences`.
        :return: ``loss`` and its terms: ``observation_nll`` (nats per step, summed over observation
            dims), ``reward_nll``, ``kl`` (nats per step, before free nats), ``kl_loss`` (after),
            [``global_kl``, ``overshooting_kl``, ``overshooting_reward_nll``].
        """
        policy = self.policy
        observations = policy.preprocess(samples.observations, noise=True)
        actions = policy.model_actions(samples.actions)
        is_first = samples.is_first.bool()
        embeddings = policy.encoder(observations)
        priors, posteriors = policy.rssm.observe(embeddings, actions, is_first)
        features = RSSM.features(posteriors)

        observation_nll = policy.observation_nll(features, observations).mean()
        reward_mask = (~is_first).float()  # the record at an episode start holds no reward
        reward_error = 0.5 * ((policy.reward(features) - samples.rewards) ** 2 + LOG_2PI)
        reward_nll = (reward_error * reward_mask).sum() / reward_mask.sum().clamp(min=1.0)
        kl = gaussian_kl(posteriors, priors)
        kl_loss = th.clamp(kl, min=self.free_nats).mean()
        loss = observation_nll + self.reward_loss_scale * reward_nll + self.kl_scale * kl_loss
        losses = {
            "observation_nll": observation_nll,
            "reward_nll": reward_nll,
            "kl": kl.mean(),
            "kl_loss": kl_loss,
        }
        if self.global_kl_scale > 0:
            global_kl = standard_normal_kl(posteriors).mean()
            loss = loss + self.global_kl_scale * global_kl
            losses["global_kl"] = global_kl
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

    def _overshooting(
        self, posteriors: Any, actions: th.Tensor, rewards: th.Tensor, distance: int
    ) -> tuple[th.Tensor, th.Tensor]:
        """Latent overshooting (PlaNet arXiv v1, Sec. 4): open-loop priors ``d = 2..D`` steps ahead of
        every posterior, matched to the (stop-gradient) posterior there, with free nats, and their reward NLL.

        Windows never cross an episode start after index 0, so no reset is needed inside the rollout.
        :return: mean overshooting KL and mean reward NLL over all (start, distance) pairs.
        """
        rssm = self.policy.rssm
        target = posteriors.detach()
        batch, seq_len = rewards.shape
        belief, state = posteriors.belief, posteriors.sample
        kls, reward_nlls = [], []
        for d in range(1, distance + 1):
            n = seq_len - d
            prior = rssm.img_step(
                belief[:, :n].reshape(batch * n, -1),
                state[:, :n].reshape(batch * n, -1),
                actions[:, d:].reshape(batch * n, -1),
            )
            prior = type(prior)(*(x.reshape(batch, n, -1) for x in prior))
            belief, state = prior.belief, prior.sample
            if d >= 2:
                post = type(target)(*(x[:, d:] for x in target))
                kls.append(th.clamp(gaussian_kl(post, prior), min=self.free_nats).reshape(-1))
                error = self.policy.reward(RSSM.features(prior)) - rewards[:, d:]
                reward_nlls.append((0.5 * (error**2 + LOG_2PI)).reshape(-1))
        return th.cat(kls).mean(), th.cat(reward_nlls).mean()

    @th.no_grad()
    def open_loop_video(self, samples: SequenceSamples, n_sequences: int = 4, fps: float = 10.0) -> Video:
        """Open-loop prediction video (PlaNet summaries, context 5): for each of ``n_sequences`` sequences,
        ``open_loop_context`` posterior reconstructions then prior predictions under the true actions (the
        mean, no sampling), beside the truth.

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
            posteriors.belief[:, -1], posteriors.sample[:, -1], actions[:, context:], sample=False
        )
        reconstructions = policy.decoder(RSSM.features(posteriors))
        predictions = policy.decoder(RSSM.features(priors))
        model = th.cat([reconstructions, predictions], dim=1)  # (n, T, C, H, W)
        frames = th.cat([observations, model], dim=-1)  # truth | model
        frames = th.cat(list(frames), dim=-2)  # sequences stacked vertically: (T, C, n * H, 2 * W)
        video = postprocess_observation(frames, self.bit_depth, channels_last=False)
        return Video(th.from_numpy(video)[None], fps=fps)

    def train(self, gradient_steps: int, batch_size: int | None = None) -> None:
        """``gradient_steps`` model updates on sampled sequences, then ``logger.record`` of the mean terms.

        :raises FloatingPointError: if the loss is NaN or infinite (the message lists the terms).
        """
        batch_size = batch_size or self.batch_size
        policy = self.policy
        policy.set_training_mode(True)
        self._update_learning_rate(policy.optimizer)
        totals: dict[str, float] = defaultdict(float)
        for _ in range(gradient_steps):
            samples = self.replay_buffer.sample_sequences(batch_size, self.sequence_length)
            losses = self._compute_losses(samples)
            loss = losses["loss"]
            if not th.isfinite(loss):
                terms = {key: float(value.detach()) for key, value in losses.items()}
                raise FloatingPointError(
                    f"PlaNet loss is not finite after {self._n_updates} updates: {terms}"
                )
            policy.optimizer.zero_grad()
            loss.backward()
            grad_norm = th.nn.utils.clip_grad_norm_(policy.parameters(), self.max_grad_norm)
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
        if self._planned_returns:
            self.logger.record("train/planned_return", float(np.mean(self._planned_returns)))
            self._planned_returns = []
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")

    def _updates_due(self) -> int:
        """Updates owed for the episodes completed since the last training (C per episode, spec 3.1).

        None before ``seed_episodes`` episodes exist; then C for the seed data, and C per later episode.
        """
        added = self.replay_buffer.n_episodes_added
        if added < self.seed_episodes or added <= self._episodes_trained:
            return 0
        if not np.any(self.replay_buffer.episode_lengths >= self.sequence_length):
            warnings.warn(
                f"No stored episode has sequence_length={self.sequence_length} records yet; "
                "PlaNet postpones training (shorten sequence_length for short episodes)"
            )
            return 0
        new = added - max(self._episodes_trained, self.seed_episodes - 1)
        self._episodes_trained = added
        return self.updates_per_episode * new

    def _collect_step(self, callback: BaseCallback, log_interval: int | None) -> bool:
        """One ``VecEnv.step`` of every env: random actions for the seed episodes, else filter + plan +
        exploration noise; the transition goes to the replay buffer. Returns False if a callback stops."""
        assert self.env is not None and self._last_obs is not None
        n_envs = self.env.num_envs
        if self.replay_buffer.n_episodes_added < self.seed_episodes:
            env_action = np.array([self.action_space.sample() for _ in range(n_envs)])
            if isinstance(self.action_space, spaces.Box):
                buffer_action = self.policy.scale_action(env_action).astype(np.float32)
            else:
                buffer_action = env_action.astype(np.int64)
            self._last_state = None
        else:
            obs_tensor = obs_as_tensor(self._last_obs, self.device)
            generator = self.policy.make_generator()
            env_action, buffer_action, self._last_state, result = self.policy.act(
                obs_tensor, self._last_state, self._last_episode_starts, False, generator
            )
            self._planned_returns.append(float(result.planned_return.mean()))

        new_obs, rewards, dones, infos = self.env.step(env_action)
        self.num_timesteps += n_envs
        callback.update_locals(locals())
        if not callback.on_step():
            return False
        self._update_info_buffer(infos, dones)
        next_obs = EpisodeReplayBuffer.terminal_next_obs(new_obs, dones, infos)
        self.replay_buffer.add(self._last_obs, next_obs, buffer_action, rewards, dones, infos)
        self._last_obs = new_obs
        self._last_episode_starts = dones
        self._update_current_progress_remaining(self.num_timesteps, self._total_timesteps)
        for done in dones:
            if done:
                self._episode_num += 1
                if log_interval is not None and self._episode_num % log_interval == 0:
                    self.dump_logs()
        return True

    def learn(
        self: SelfPlaNet,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "PlaNet",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfPlaNet:
        """Collect ``total_timesteps`` env steps (all envs together), training C updates per episode.

        :param log_interval: dump the logs every this many episodes (None: never).
        See :meth:`stable_baselines3.common.base_class.BaseAlgorithm.learn` for the other parameters.
        """
        total_timesteps, callback = self._setup_learn(
            total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar
        )
        callback.on_training_start(locals(), globals())
        while self.num_timesteps < total_timesteps:
            if not self._collect_step(callback, log_interval):
                break
            n_updates = self._updates_due()
            if n_updates > 0:
                self.train(n_updates)
        callback.on_training_end()
        return self

    def dump_logs(self) -> None:
        """Write the episode statistics and timing (as SB3's off-policy algorithms)."""
        time_elapsed = max((time.time_ns() - self.start_time) / 1e9, sys.float_info.epsilon)
        fps = int((self.num_timesteps - self._num_timesteps_at_start) / time_elapsed)
        self.logger.record("time/episodes", self._episode_num, exclude="tensorboard")
        if self.ep_info_buffer is not None and len(self.ep_info_buffer) > 0:
            self.logger.record("rollout/ep_rew_mean", safe_mean([info["r"] for info in self.ep_info_buffer]))
            self.logger.record("rollout/ep_len_mean", safe_mean([info["l"] for info in self.ep_info_buffer]))
        self.logger.record("time/fps", fps)
        self.logger.record("time/time_elapsed", int(time_elapsed), exclude="tensorboard")
        self.logger.record("time/total_timesteps", self.num_timesteps, exclude="tensorboard")
        self.logger.dump(step=self.num_timesteps)
