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

Every sb3-mb algorithm (MBPO, STEVE, and through :class:`WorldModelAlgorithm` PlaNet and the later world-model
methods) also derives from :class:`SafeAlgorithmMixin`: atomic saves, loads that say what a file holds, and
loud failures for non-finite environment data and losses.
"""

from __future__ import annotations

import io
import os
import pickle
from collections.abc import Iterable, Mapping
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
from sb3_mb.common.checks import check_finite, describe_non_finite
from sb3_mb.common.save_util import (
    SAVED_BY_KEY,
    atomic_write,
    check_replay_buffer,
    check_saved_algorithm,
    saved_by_marker,
)

__all__ = ["SafeAlgorithmMixin", "WorldModelAlgorithm"]

SelfWorldModelAlgorithm = TypeVar("SelfWorldModelAlgorithm", bound="WorldModelAlgorithm")
SelfSafeAlgorithm = TypeVar("SelfSafeAlgorithm", bound="SafeAlgorithmMixin")


def _non_finite_parts(value: Any, name: str) -> list[tuple[str, Any]]:
    """``(name, part)`` of every part of an observation / reward (array, dict or tuple) holding NaN or inf."""
    if isinstance(value, Mapping):
        return [bad for key, part in value.items() for bad in _non_finite_parts(part, f"{name}[{key!r}]")]
    if isinstance(value, tuple):
        return [bad for i, part in enumerate(value) for bad in _non_finite_parts(part, f"{name}[{i}]")]
    array = np.asarray(value)
    if np.issubdtype(array.dtype, np.number) and not np.all(np.isfinite(array)):
        return [(name, array)]
    return []


class SafeAlgorithmMixin:
    """What every sb3-mb algorithm adds to its SB3 base; listed first: ``MBPO(SafeAlgorithmMixin, SAC)``.

    - **Atomic saves.** :meth:`save` and :meth:`save_replay_buffer` write beside the target and rename
      (:func:`~sb3_mb.common.save_util.atomic_write`): a process killed mid-save leaves the old file or the
      new one, never a truncated one. rl-zoo3's checkpoints (``best_model.zip``, ``CheckpointCallback``'s
      model and replay buffer, the final model) go through these two methods.
    - **Loads that say what is wrong.** :meth:`load` reads which class saved the file (a marker every save
      writes; for plain SB3 files the ``policy_class``) before SB3 unpickles anything and refuses a model of
      another algorithm, a truncated or foreign file (``ValueError``); :meth:`load_replay_buffer` refuses a
      buffer of another type, spaces or number of envs (``ValueError``) and keeps the model's own buffer.
    - **Non-finite data fails loudly.** An observation or a reward with NaN or inf from the environment raises
      :class:`FloatingPointError` at the env step it appears, before that step is stored
      (:meth:`_store_transition`; the first observation after the reset in :meth:`_setup_learn`). Losses are
      checked by each algorithm with :meth:`_check_finite`, same exception type.

    The checks run in the algorithm's own loop rather than in a ``VecCheckNan`` around the env: an extra
    wrapper on the training env only would break SB3's ``sync_envs_normalization``, which walks the training
    and evaluation wrappers in step (rl-zoo3's ``EvalCallback`` with ``normalize: true``).
    """

    # ------------------------------------------------------------------------------------ saving
    def save(
        self,
        path: str | os.PathLike | io.BufferedIOBase,
        exclude: Iterable[str] | None = None,
        include: Iterable[str] | None = None,
    ) -> None:
        """SB3's ``save``, atomic for a path (a file object is written as given), recording the saving class.

        :raises IsADirectoryError: if the path is a folder (SB3 would write ``<path>_2`` silently).
        """
        self.__dict__[SAVED_BY_KEY] = saved_by_marker(type(self))
        try:
            if isinstance(path, str | os.PathLike):
                with atomic_write(path, suffix="zip") as temporary:
                    super().save(temporary, exclude=exclude, include=include)  # type: ignore[misc]
            else:
                super().save(path, exclude=exclude, include=include)  # type: ignore[misc]
        finally:
            self.__dict__.pop(SAVED_BY_KEY, None)

    def save_replay_buffer(self, path: str | os.PathLike | io.BufferedIOBase) -> None:
        """SB3's ``save_replay_buffer`` (a pickle), atomic for a path."""
        if isinstance(path, str | os.PathLike):
            with atomic_write(path, suffix="pkl") as temporary:
                super().save_replay_buffer(temporary)  # type: ignore[misc]
        else:
            super().save_replay_buffer(path)  # type: ignore[misc]

    # ------------------------------------------------------------------------------------ loading
    @classmethod
    def load(
        cls: type[SelfSafeAlgorithm],
        path: str | os.PathLike | io.BufferedIOBase,
        env: GymEnv | None = None,
        device: th.device | str = "auto",
        custom_objects: dict[str, Any] | None = None,
        print_system_info: bool = False,
        force_reset: bool = True,
        **kwargs: Any,
    ) -> SelfSafeAlgorithm:
        """SB3's ``load``, after checking what the file holds
        (:func:`~sb3_mb.common.save_util.check_saved_algorithm`).

        :raises FileNotFoundError: if there is no such file (nor with ``.zip``).
        :raises ValueError: for a file that is not a readable zip (truncated, another format), or a model of
            another algorithm (``"<file> holds a SAC agent ..., not MBPO"``).
        """
        check_saved_algorithm(path, cls)
        model = super().load(  # type: ignore[misc]
            path,
            env=env,
            device=device,
            custom_objects=custom_objects,
            print_system_info=print_system_info,
            force_reset=force_reset,
            **kwargs,
        )
        model.__dict__.pop(SAVED_BY_KEY, None)
        return model

    def load_replay_buffer(
        self, path: str | os.PathLike | io.BufferedIOBase, truncate_last_traj: bool = True
    ) -> None:
        """SB3's ``load_replay_buffer`` (the same unpickling), then a check that the buffer fits the model
        (:func:`~sb3_mb.common.save_util.check_replay_buffer`); on any error the model keeps its own buffer.

        :raises ValueError: for a buffer of another type (MBPO needs its ``MBPOReplayBuffer``, PlaNet an
            ``EpisodeReplayBuffer``), other spaces or another number of envs, or a file that is not a
            readable pickle (truncated, another format).
        """
        previous = self.replay_buffer
        try:
            try:
                super().load_replay_buffer(path, truncate_last_traj)  # type: ignore[misc]
            except (pickle.UnpicklingError, EOFError) as error:
                raise ValueError(
                    f"{path} is not a readable replay buffer (truncated, or a file of another format): "
                    f"{error}"
                ) from error
            except AssertionError as error:  # SB3 asserts the type
                raise ValueError(
                    f"{path} holds a {type(self.replay_buffer).__name__}, not a replay buffer "
                    f"({type(self).__name__} needs a {self.replay_buffer_class.__name__})"
                ) from error
            check_replay_buffer(self.replay_buffer, self, path)
        except BaseException:
            self.replay_buffer = previous
            raise

    # ------------------------------------------------------------------------------------ non-finite values
    def _check_finite(self, value: Any, what: str, step: int | None = None, unit: str = "update") -> None:
        """:func:`~sb3_mb.common.checks.check_finite` in this algorithm's name, at update ``step``
        (default: ``_n_updates``).

        :raises FloatingPointError: if ``value`` (a tensor, number or ``{term: value}``) holds NaN or inf.
        """
        check_finite(value, type(self).__name__, what, self._n_updates if step is None else step, unit)

    def _check_env_data(self, where: str, values: Mapping[str, Any], batched: bool = True) -> None:
        """Raise :class:`FloatingPointError` naming the first non-finite observation / reward of ``values``.

        :param where: when it was returned (``"at env step 7"``), for the message.
        :param values: ``{name: value}``; a value is an array, a dict or a tuple of arrays.
        :param batched: the values have the env dimension first (the message then names the envs).
        """
        for name, value in values.items():
            for part, array in _non_finite_parts(value, name):
                envs = ""
                if batched and array.ndim > 0:
                    rows = np.flatnonzero(~np.isfinite(array.reshape(len(array), -1)).all(axis=1))
                    envs = f" (env {', '.join(str(int(i)) for i in rows)})"
                raise FloatingPointError(
                    f"{type(self).__name__}: the environment returned a non-finite {part} {where}{envs}: "
                    f"{describe_non_finite(array)}. Nothing of this step was stored; fix the environment "
                    "(or replace its NaN and inf in a wrapper)"
                )

    def _store_transition(
        self,
        replay_buffer: ReplayBuffer,
        buffer_action: np.ndarray,
        new_obs: np.ndarray | dict[str, np.ndarray],
        reward: np.ndarray,
        dones: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        """SB3's ``_store_transition``, after a check of the step's observations (terminal too) and rewards.

        :raises FloatingPointError: naming the value, the env step and the env, before anything is stored.
        """
        where = f"at env step {self.num_timesteps}"
        self._check_env_data(where, {"reward": reward, "observation": new_obs})
        terminal = {
            f"terminal observation of env {i}": info["terminal_observation"]
            for i, info in enumerate(infos)
            if dones[i] and info.get("terminal_observation") is not None
        }
        self._check_env_data(where, terminal, batched=False)
        super()._store_transition(replay_buffer, buffer_action, new_obs, reward, dones, infos)  # type: ignore[misc]

    def _setup_learn(self, *args: Any, **kwargs: Any) -> Any:
        """SB3's ``_setup_learn``, then the check of the observation the env was reset to.

        :raises FloatingPointError: if that observation holds NaN or inf.
        """
        result = super()._setup_learn(*args, **kwargs)  # type: ignore[misc]
        if self._last_obs is not None:
            where = f"at reset (before env step {self.num_timesteps + 1})"
            self._check_env_data(where, {"observation": self._last_obs})
        return result


class WorldModelAlgorithm(SafeAlgorithmMixin, OffPolicyAlgorithm):
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
