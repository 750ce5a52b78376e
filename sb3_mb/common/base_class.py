"""Base of the methods that learn a world model from replay and act statefully with it (PlaNet, World Models).

Their loop is SB3's off-policy loop with two differences: the agent carries a recurrent state while it
collects (a belief, an LSTM state, a warm-start plan), and the warm-up and the number of updates follow the
method's own schedule (PlaNet: seed episodes, then C updates per collected episode; Hafner et al. 2019,
arXiv:1811.04551, Alg. 1). :class:`WorldModelAlgorithm` subclasses SB3's
:class:`~stable_baselines3.common.off_policy_algorithm.OffPolicyAlgorithm` and keeps everything else of it:
the replay buffer built from ``replay_buffer_class`` (an :class:`~sb3_mb.common.buffers.EpisodeReplayBuffer`
by default), ``save_replay_buffer`` / ``load_replay_buffer``, ``collect_rollouts`` with its callbacks,
``_store_transition`` (terminal observations, ``VecNormalize``), the episode statistics and ``dump_logs``.

A subclass provides ``train(gradient_steps, batch_size)`` and may override three hooks:

- :meth:`_in_warmup`: act uniformly at random while it holds (default: never);
- :meth:`_gradient_steps_due`: updates owed after each collected step (default: none);
- :meth:`_explore`: the exploring action and the next state (default: ``predict(deterministic=False)``
  with the carried state).
"""

from __future__ import annotations

from typing import Any, ClassVar, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, Schedule

from sb3_mb.common.buffers import EpisodeReplayBuffer

__all__ = ["WorldModelAlgorithm"]

SelfWorldModelAlgorithm = TypeVar("SelfWorldModelAlgorithm", bound="WorldModelAlgorithm")


class WorldModelAlgorithm(OffPolicyAlgorithm):
    """SB3's off-policy machinery for a stateful agent with its own warm-up and update schedule.

    The arguments are SB3's (see :class:`~stable_baselines3.common.off_policy_algorithm.OffPolicyAlgorithm`);
    the loop collects one step of every env at a time (``train_freq=1``), so ``VecEnv``\\ s of any size work.
    Settings of ``OffPolicyAlgorithm`` that such a loop does not read (``learning_starts``, ``tau``,
    ``gamma``, ``gradient_steps``, ``train_freq``, ``action_noise``, ``n_steps``, gSDE) are fixed and kept
    out of the saved zip (:attr:`unused_off_policy_settings`).

    :param replay_buffer_class: the replay buffer (:class:`~sb3_mb.common.buffers.EpisodeReplayBuffer`).
    """

    #: Attributes of OffPolicyAlgorithm this loop does not use: set once by the constructor, never saved.
    unused_off_policy_settings: ClassVar[tuple[str, ...]] = (
        "learning_starts",
        "tau",
        "gamma",
        "gradient_steps",
        "train_freq",
        "action_noise",
        "n_steps",
        "use_sde_at_warmup",
        "sde_sample_freq",
    )

    def __init__(
        self,
        policy: str | type[BasePolicy],
        env: GymEnv | str | None,
        learning_rate: float | Schedule,
        buffer_size: int = 100_000,
        batch_size: int = 50,
        replay_buffer_class: type[ReplayBuffer] | None = EpisodeReplayBuffer,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        verbose: int = 0,
        device: th.device | str = "auto",
        seed: int | None = None,
        supported_action_spaces: tuple[type[spaces.Space], ...] | None = None,
    ):
        super().__init__(
            policy,
            env,
            learning_rate,
            buffer_size=buffer_size,
            learning_starts=0,
            batch_size=batch_size,
            train_freq=1,
            gradient_steps=0,
            replay_buffer_class=replay_buffer_class or EpisodeReplayBuffer,
            replay_buffer_kwargs=replay_buffer_kwargs,
            policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            support_multi_env=True,
            seed=seed,
            sde_support=False,
            supported_action_spaces=supported_action_spaces,
        )
        self._last_state: tuple[np.ndarray, ...] | None = None

    def _setup_model(self) -> None:
        if self.buffer_size < 2 and self.replay_buffer is None:
            # load(buffer_size=1), as the zoo's enjoy does for off-policy agents, asks for no replay: the
            # smallest episode buffer (2 records; EpisodeReplayBuffer refuses 1), which SB3's _setup_model
            # keeps. buffer_size itself stays as given.
            self.replay_buffer = self.replay_buffer_class(
                2,
                self.observation_space,
                self.action_space,
                device=self.device,
                n_envs=self.n_envs,
                **self.replay_buffer_kwargs,
            )
        super()._setup_model()

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "_last_state", *self.unused_off_policy_settings]

    # ------------------------------------------------------------------------------------ hooks
    def _in_warmup(self) -> bool:
        """Act uniformly at random while this holds (never by default)."""
        return False

    def _gradient_steps_due(self) -> int:
        """Updates to make after the step just collected (none by default)."""
        return 0

    def _explore(
        self, observation: np.ndarray, state: tuple[np.ndarray, ...] | None, episode_start: np.ndarray
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...] | None]:
        """The exploring env action ``(n_envs, *action_shape)`` and the next state, as ``predict`` gives."""
        return self.predict(observation, state=state, episode_start=episode_start, deterministic=False)

    # ------------------------------------------------------------------------------------ SB3 overrides
    def _sample_action(
        self, learning_starts: int, action_noise: ActionNoise | None = None, n_envs: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """SB3's ``_sample_action`` with the recurrent state carried from step to step.

        Random actions (and no state) while :meth:`_in_warmup`, else :meth:`_explore` from the state and the
        ``episode_start`` flags of the previous step. ``Box`` actions are stored scaled to ``[-1, 1]``.
        """
        if self._in_warmup():
            action = np.array([self.action_space.sample() for _ in range(n_envs)])
            self._last_state = None
        else:
            assert self._last_obs is not None, "self._last_obs was not set"
            action, self._last_state = self._explore(
                self._last_obs, self._last_state, self._last_episode_starts
            )
        if isinstance(self.action_space, spaces.Box):
            return action, self.policy.scale_action(action)
        return action, action

    def _store_transition(
        self,
        replay_buffer: ReplayBuffer,
        buffer_action: np.ndarray,
        new_obs: np.ndarray | dict[str, np.ndarray],
        reward: np.ndarray,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        """SB3's ``_store_transition``; the ``dones`` become the next step's ``episode_start``."""
        super()._store_transition(replay_buffer, buffer_action, new_obs, reward, dones, infos)
        self._last_episode_starts = dones

    def learn(
        self: SelfWorldModelAlgorithm,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "run",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfWorldModelAlgorithm:
        """Collect one step of every env at a time, then make the :meth:`_gradient_steps_due` updates.

        :param log_interval: dump the logs every this many episodes (None: never).
        See :meth:`stable_baselines3.common.base_class.BaseAlgorithm.learn` for the other parameters.
        """
        if reset_num_timesteps or self._last_obs is None:
            self._last_state = None  # the envs are reset below
        total_timesteps, callback = self._setup_learn(
            total_timesteps, callback, reset_num_timesteps, tb_log_name, progress_bar
        )
        callback.on_training_start(locals(), globals())
        assert self.env is not None and self.replay_buffer is not None
        while self.num_timesteps < total_timesteps:
            rollout = self.collect_rollouts(
                self.env, callback, self.train_freq, self.replay_buffer, log_interval=log_interval
            )
            if not rollout.continue_training:
                break
            gradient_steps = self._gradient_steps_due()
            if gradient_steps > 0:
                self.train(gradient_steps, self.batch_size)
        callback.on_training_end()
        return self
