"""Episode / sequence replay: whole episodes from ``n_envs`` parallel envs, sampled as windows of length T.

Used by PlaNet (batches of 50 sequences x 50 steps, Hafner et al. 2019, arXiv:1811.04551, App. A), World
Models (contiguous sequences for the MDN-RNN, Ha & Schmidhuber 2018, arXiv:1803.10122) and the
gamma-models' transition pool (Janner et al. 2020, arXiv:2010.14496).

Storage convention (Dreamer / PlaNet "time step" records). An episode of ``L`` environment steps
``o_0, a_0, r_0, o_1, ..., a_{L-1}, r_{L-1}, o_L`` is stored as ``L + 1`` records ``k = 0..L``:

====================  =========================================================================
``observations[k]``   ``o_k`` (stored in the observation space's dtype: ``uint8`` for images)
``actions[k]``        ``a_{k-1}``, the action that led to ``o_k`` (zeros for ``k = 0``)
``rewards[k]``        ``r_{k-1}``, the reward of the transition ``(o_{k-1}, a_{k-1}) -> o_k`` (0 at k=0)
``is_first[k]``       ``k == 0``
``terminated[k]``     ``k == L`` and the episode ended in a true terminal state
``truncated[k]``      ``k == L`` and the episode was cut by a time limit (``TimeLimit.truncated``)
====================  =========================================================================

So PlaNet pairs ``o_t`` with ``a_{t-1}`` and ``r_{t-1}`` at the same index ``t`` of a sampled window:
``h_t = f(h_{t-1}, s_{t-1}, a_{t-1})`` and the posterior at ``t`` sees ``o_t``; the reward head at ``t``
predicts ``rewards[:, t]``. A method that wants the action *taken at* ``o_t`` (World Models' MDN-RNN
input ``[z_t, a_t]``) uses ``actions[:, 1:]`` next to ``observations[:, :-1]``.

Only complete episodes are sampled; the episode in progress in each env is staged until it ends.
Windows never cross an episode end. Episodes with fewer than ``seq_len`` records are skipped by
:meth:`EpisodeReplayBuffer.sample_sequences` (no padding, no mask), and sampling is uniform over all
valid windows (so an episode's weight is proportional to ``n_records - seq_len + 1``).
"""

from __future__ import annotations

import warnings
from collections import deque
from typing import Any, NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import BaseBuffer, ReplayBuffer
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.vec_env import VecNormalize

try:  # psutil is optional in SB3 as well
    import psutil
except ImportError:  # pragma: no cover
    psutil = None

RandomGenerator = np.random.Generator | np.random.RandomState | None


class SequenceSamples(NamedTuple):
    """A batch of ``batch_size`` windows of ``seq_len`` consecutive records of one episode each.

    Shapes: ``observations (B, T, *obs_shape)`` (stored dtype, e.g. ``uint8``), ``actions (B, T,
    action_dim)`` float32 (``a_{t-1}``), ``rewards (B, T)`` float32 (``r_{t-1}``), and boolean ``is_first``,
    ``terminated``, ``truncated`` of shape ``(B, T)``. See the module docstring for the alignment.
    """

    observations: th.Tensor
    actions: th.Tensor
    rewards: th.Tensor
    is_first: th.Tensor
    terminated: th.Tensor
    truncated: th.Tensor


def _randint(rng: RandomGenerator, high: int, size: int) -> np.ndarray:
    """Uniform integers in ``[0, high)``; ``rng=None`` uses NumPy's global state (seeded by SB3)."""
    if rng is None:
        return np.random.randint(0, high, size=size)  # noqa: NPY002  (SB3 seeds the global state)
    if isinstance(rng, np.random.Generator):
        return rng.integers(0, high, size=size)
    return rng.randint(0, high, size=size)


class EpisodeReplayBuffer(ReplayBuffer):
    """Replay of whole episodes, sampled as sequences that never cross an episode end.

    A drop-in ``replay_buffer_class`` for :class:`~stable_baselines3.common.off_policy_algorithm.
    OffPolicyAlgorithm`: the constructor takes SB3's arguments and :meth:`add` has SB3's signature, so
    ``_store_transition`` (which substitutes ``infos[i]["terminal_observation"]`` into ``next_obs``) feeds
    it unchanged. It subclasses :class:`ReplayBuffer` only so that SB3's ``load_replay_buffer`` accepts it;
    none of the parent's arrays are allocated.

    Storage is a ring of ``buffer_size`` records (see the module docstring; an episode of ``L`` steps
    takes ``L + 1`` records). When a finished episode does not fit, the oldest episodes are evicted
    whole. Episodes may wrap around the end of the ring; indices are taken modulo ``buffer_size``.

    :param buffer_size: capacity in stored records (observations), all envs together.
    :param observation_space: a ``Box`` (images as ``uint8``, channel-first or channel-last as given).
    :param action_space: ``Box``, ``Discrete`` (stored as the index, ``action_dim = 1``) or ``MultiDiscrete``.
    :param device: device of the sampled tensors.
    :param n_envs: number of parallel environments feeding :meth:`add`.
    :param optimize_memory_usage: accepted for SB3 compatibility; must be False (storage is already
        one observation per step).
    :param handle_timeout_termination: if True, a ``done`` with ``infos[i]["TimeLimit.truncated"]`` is
        recorded as truncated (not terminated); if False every ``done`` is terminated (SB3's meaning).
    :raises TypeError: for ``Dict`` observation spaces.
    :raises ValueError: for ``buffer_size < 2`` or ``optimize_memory_usage=True``.
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: th.device | str = "auto",
        n_envs: int = 1,
        optimize_memory_usage: bool = False,
        handle_timeout_termination: bool = True,
    ):
        if isinstance(observation_space, spaces.Dict):
            raise TypeError("EpisodeReplayBuffer does not support Dict observation spaces")
        if optimize_memory_usage:
            raise ValueError(
                "EpisodeReplayBuffer stores one observation per step; optimize_memory_usage must be False"
            )
        if buffer_size < 2:
            raise ValueError(f"buffer_size must be >= 2 records, got {buffer_size}")
        # Deliberately skip ReplayBuffer.__init__ (it would allocate (buffer_size, n_envs, ...) arrays).
        BaseBuffer.__init__(self, buffer_size, observation_space, action_space, device, n_envs=n_envs)
        self.optimize_memory_usage = False
        self.handle_timeout_termination = handle_timeout_termination

        obs_dtype = observation_space.dtype if observation_space.dtype is not None else np.float32
        if np.issubdtype(obs_dtype, np.floating):
            obs_dtype = np.float32
        self.observations = np.zeros((buffer_size, *self.obs_shape), dtype=obs_dtype)
        self.actions = np.zeros((buffer_size, self.action_dim), dtype=np.float32)
        self.rewards = np.zeros(buffer_size, dtype=np.float32)
        self.is_first = np.zeros(buffer_size, dtype=bool)
        self.terminated = np.zeros(buffer_size, dtype=bool)
        self.truncated = np.zeros(buffer_size, dtype=bool)

        if psutil is not None:
            total = self.observations.nbytes + self.actions.nbytes + self.rewards.nbytes + 3 * buffer_size
            available = psutil.virtual_memory().available
            if total > available:
                warnings.warn(
                    f"This system does not have apparently enough memory to store the complete replay buffer "
                    f"{total / 1e9:.2f}GB > {available / 1e9:.2f}GB"
                )

        # Ring bookkeeping: complete episodes as (start, n_records), oldest first.
        self._episodes: deque[tuple[int, int]] = deque()
        self._head = 0  # next record to write
        self._n_records = 0  # records held by complete episodes
        self._n_episodes_added = 0
        self._index_cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        # Per-env staging of the episode in progress: lists of records.
        self._staging: list[dict[str, list]] = [self._empty_staging() for _ in range(n_envs)]

    # ----------------------------------------------------------------------------------------------
    # Sizes
    # ----------------------------------------------------------------------------------------------
    @property
    def n_episodes(self) -> int:
        """Number of complete episodes currently stored."""
        return len(self._episodes)

    @property
    def n_records(self) -> int:
        """Number of stored records (observations) of complete episodes, at most ``buffer_size``."""
        return self._n_records

    @property
    def n_transitions(self) -> int:
        """Stored environment steps (transitions) of complete episodes: ``n_records - n_episodes``."""
        return self._n_records - len(self._episodes)

    @property
    def n_episodes_added(self) -> int:
        """Number of episodes ever completed (evicted ones included)."""
        return self._n_episodes_added

    @property
    def n_staged_steps(self) -> int:
        """Number of environment steps of the episodes still in progress (not yet sampleable)."""
        return sum(max(len(s["rewards"]) - 1, 0) for s in self._staging)

    @property
    def episode_lengths(self) -> np.ndarray:
        """Records per stored episode, oldest first, shape ``(n_episodes,)``."""
        return np.array([n for _, n in self._episodes], dtype=np.int64)

    def stored_rewards(self) -> np.ndarray:
        """The reward of every stored transition (records ``k >= 1`` of each complete episode), oldest first,
        shape ``(n_transitions,)`` float32 (PlaNet measures its reward scale on them)."""
        if not self._episodes:
            return np.zeros(0, dtype=np.float32)
        index = np.concatenate([np.arange(start + 1, start + n) for start, n in self._episodes])
        return self.rewards[index % self.buffer_size]

    def size(self) -> int:
        """Number of stored records (SB3's ``size``)."""
        return self._n_records

    def reset(self) -> None:
        """Drop every stored and staged episode."""
        self._episodes.clear()
        self._head = 0
        self._n_records = 0
        self._index_cache = {}
        self._staging = [self._empty_staging() for _ in range(self.n_envs)]
        self.pos, self.full = 0, False

    # ----------------------------------------------------------------------------------------------
    # Adding data
    # ----------------------------------------------------------------------------------------------
    @staticmethod
    def _empty_staging() -> dict[str, list]:
        return {"observations": [], "actions": [], "rewards": []}

    @staticmethod
    def terminal_next_obs(new_obs: np.ndarray, dones: np.ndarray, infos: list[dict[str, Any]]) -> np.ndarray:
        """The true next observations of a VecEnv step (what SB3's ``_store_transition`` builds).

        :param new_obs: observations returned by ``VecEnv.step``, shape ``(n_envs, *obs_shape)``; where
            ``dones[i]`` they are already the reset observation.
        :return: a copy with ``infos[i]["terminal_observation"]`` substituted where ``dones[i]``.
        """
        next_obs = np.array(new_obs, copy=True)
        for i, done in enumerate(dones):
            if done and infos[i].get("terminal_observation") is not None:
                next_obs[i] = infos[i]["terminal_observation"]
        return next_obs

    def add(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        """Add one VecEnv step of every env (SB3's ``ReplayBuffer.add`` signature and semantics).

        :param obs: ``o_t``, shape ``(n_envs, *obs_shape)``. Starts an episode in env ``i`` if none is in
            progress there, or if it differs from the last staged observation (the env was reset without
            a ``done``; the staged episode is then stored as truncated).
        :param next_obs: the true ``o_{t+1}``, shape ``(n_envs, *obs_shape)``: on ``done`` the terminal
            observation, not the reset one (see :meth:`terminal_next_obs`).
        :param action: ``a_t``, shape ``(n_envs, action_dim)`` or ``(n_envs,)`` for ``Discrete``.
        :param reward: ``r_t``, shape ``(n_envs,)``.
        :param done: episode ended, shape ``(n_envs,)``.
        :param infos: one dict per env; ``"TimeLimit.truncated"`` marks a time-limit end.
        :raises ValueError: if an episode in progress outgrows ``buffer_size`` records.
        """
        obs = np.asarray(obs).reshape((self.n_envs, *self.obs_shape))
        next_obs = np.asarray(next_obs).reshape((self.n_envs, *self.obs_shape))
        action = np.asarray(action, dtype=np.float32).reshape((self.n_envs, self.action_dim))
        reward = np.asarray(reward, dtype=np.float32).reshape(self.n_envs)
        done = np.asarray(done).reshape(self.n_envs)
        for i in range(self.n_envs):
            stage = self._staging[i]
            if stage["observations"] and not np.array_equal(
                stage["observations"][-1], obs[i], equal_nan=True
            ):
                # The env was reset without a done (e.g. a new learn() call): close the episode as truncated.
                self._close_staged(i)
                stage = self._staging[i]
            if not stage["observations"]:
                stage["observations"].append(np.array(obs[i], dtype=self.observations.dtype))
                stage["actions"].append(np.zeros(self.action_dim, dtype=np.float32))
                stage["rewards"].append(0.0)
            stage["observations"].append(np.array(next_obs[i], dtype=self.observations.dtype))
            stage["actions"].append(action[i].copy())
            stage["rewards"].append(float(reward[i]))
            if len(stage["observations"]) > self.buffer_size:
                raise ValueError(
                    f"An episode in env {i} has more than buffer_size={self.buffer_size} records; "
                    "increase buffer_size"
                )
            if done[i]:
                truncated = bool(
                    self.handle_timeout_termination and infos[i].get("TimeLimit.truncated", False)
                )
                self._store_episode(stage, terminated=not truncated, truncated=truncated)
                self._staging[i] = self._empty_staging()

    def _close_staged(self, env_index: int) -> None:
        stage = self._staging[env_index]
        if len(stage["observations"]) > 1:
            self._store_episode(stage, terminated=False, truncated=True)
        self._staging[env_index] = self._empty_staging()

    def truncate_staged_episodes(self) -> None:
        """Store every episode in progress as truncated, and start afresh in each env.

        Call it when the envs are reset outside the collect loop (e.g. at the start of a new ``learn``
        call). :meth:`add` also does this by itself when an env's ``obs`` does not continue its staged
        episode, so windows never join two episodes.
        """
        for i in range(self.n_envs):
            self._close_staged(i)

    def add_episode(
        self,
        observations: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        terminated: bool,
        truncated: bool = False,
    ) -> None:
        """Add one complete episode of ``L`` steps at once.

        :param observations: ``o_0..o_L``, shape ``(L + 1, *obs_shape)``.
        :param actions: ``a_0..a_{L-1}``, shape ``(L, action_dim)`` (or ``(L,)`` for ``Discrete``).
        :param rewards: ``r_0..r_{L-1}``, shape ``(L,)``.
        :param terminated: the episode ended in a true terminal state.
        :param truncated: the episode was cut by a time limit.
        :raises ValueError: on inconsistent lengths, ``L < 1`` or ``L + 1 > buffer_size``.
        """
        observations = np.asarray(observations)
        n_steps = len(observations) - 1
        actions = np.asarray(actions, dtype=np.float32).reshape((-1, self.action_dim))
        rewards = np.asarray(rewards, dtype=np.float32).reshape(-1)
        if n_steps < 1 or len(actions) != n_steps or len(rewards) != n_steps:
            raise ValueError(
                f"Expected L+1 observations, L actions and L rewards with L >= 1, got {len(observations)}, "
                f"{len(actions)}, {len(rewards)}"
            )
        if observations.shape[1:] != self.obs_shape:
            raise ValueError(f"Observation shape {observations.shape[1:]} != {self.obs_shape}")
        if n_steps + 1 > self.buffer_size:
            raise ValueError(f"Episode of {n_steps + 1} records exceeds buffer_size={self.buffer_size}")
        stage = {
            "observations": observations,
            "actions": np.concatenate([np.zeros((1, self.action_dim), np.float32), actions]),
            "rewards": np.concatenate([np.zeros(1, np.float32), rewards]),
        }
        self._store_episode(stage, terminated=terminated, truncated=truncated)

    def _store_episode(self, stage: dict, terminated: bool, truncated: bool) -> None:
        n = len(stage["observations"])
        while self.buffer_size - self._n_records < n:  # evict the oldest episodes whole
            _, n_old = self._episodes.popleft()
            self._n_records -= n_old
        idx = (self._head + np.arange(n)) % self.buffer_size
        self.observations[idx] = np.asarray(stage["observations"], dtype=self.observations.dtype)
        self.actions[idx] = np.asarray(stage["actions"], dtype=np.float32)
        self.rewards[idx] = np.asarray(stage["rewards"], dtype=np.float32)
        self.is_first[idx] = False
        self.terminated[idx] = False
        self.truncated[idx] = False
        self.is_first[idx[0]] = True
        self.terminated[idx[-1]] = terminated
        self.truncated[idx[-1]] = truncated
        self._episodes.append((self._head, n))
        self._head = (self._head + n) % self.buffer_size
        self._n_records += n
        self._n_episodes_added += 1
        self._index_cache = {}
        self.pos, self.full = self._head, self._n_records == self.buffer_size

    # ----------------------------------------------------------------------------------------------
    # Sampling
    # ----------------------------------------------------------------------------------------------
    def _window_index(self, seq_len: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Episodes with at least ``seq_len`` records: (starts, windows per episode, cumulative windows)."""
        if seq_len not in self._index_cache:
            table = np.array(list(self._episodes), dtype=np.int64).reshape(-1, 2)
            starts, lengths = table[:, 0], table[:, 1]
            n_windows = np.maximum(lengths - seq_len + 1, 0)
            keep = n_windows > 0
            self._index_cache[seq_len] = (starts[keep], n_windows[keep], np.cumsum(n_windows[keep]))
        return self._index_cache[seq_len]

    def sample_window_indices(self, batch_size: int, seq_len: int, rng: RandomGenerator = None) -> np.ndarray:
        """Ring indices of ``batch_size`` windows, uniform over every valid window of every episode.

        :return: int array ``(batch_size, seq_len)`` of record indices into the storage arrays.
        :raises ValueError: if ``batch_size`` or ``seq_len`` < 1, or no episode has ``seq_len`` records.
        """
        if batch_size < 1 or seq_len < 1:
            raise ValueError(f"batch_size and seq_len must be >= 1, got {batch_size}, {seq_len}")
        starts, n_windows, cum_windows = self._window_index(seq_len)
        if len(starts) == 0:
            longest = int(self.episode_lengths.max()) if self.n_episodes else 0
            raise ValueError(
                f"No stored episode has seq_len={seq_len} records ({self.n_episodes} complete episodes, "
                f"longest {longest} records); collect more or shorten seq_len"
            )
        flat = _randint(rng, int(cum_windows[-1]), batch_size)
        episode = np.searchsorted(cum_windows, flat, side="right")
        offset = flat - (cum_windows[episode] - n_windows[episode])
        first = starts[episode] + offset
        return (first[:, None] + np.arange(seq_len)[None, :]) % self.buffer_size

    def sample_sequences(self, batch_size: int, seq_len: int, rng: RandomGenerator = None) -> SequenceSamples:
        """Sample ``batch_size`` windows of ``seq_len`` consecutive records, never across an episode end.

        Uniform over all valid windows; episodes with fewer than ``seq_len`` records are skipped.
        PlaNet uses ``batch_size=50, seq_len=50`` (Hafner et al. 2019, arXiv:1811.04551, App. A).

        :param batch_size: B.
        :param seq_len: T, in records (see the module docstring for the ``o_t`` / ``a_{t-1}`` alignment).
        :param rng: a ``np.random.Generator`` (or ``RandomState``); None uses NumPy's global state.
        :return: :class:`SequenceSamples` of tensors on ``self.device`` with leading dims ``(B, T)``.
        :raises ValueError: see :meth:`sample_window_indices`.
        """
        idx = self.sample_window_indices(batch_size, seq_len, rng)
        return SequenceSamples(
            observations=self.to_torch(self.observations[idx], copy=False),
            actions=self.to_torch(self.actions[idx], copy=False),
            rewards=self.to_torch(self.rewards[idx], copy=False),
            is_first=self.to_torch(self.is_first[idx], copy=False),
            terminated=self.to_torch(self.terminated[idx], copy=False),
            truncated=self.to_torch(self.truncated[idx], copy=False),
        )

    def sample_transitions(
        self, batch_size: int, rng: RandomGenerator = None, env: VecNormalize | None = None
    ) -> ReplayBufferSamples:
        """Sample single transitions ``(o_t, a_t, r_t, o_{t+1}, terminated)`` uniformly (gamma-models' pool).

        :return: SB3's :class:`ReplayBufferSamples`: ``observations (B, *obs_shape)``, ``actions (B,
            action_dim)``, ``next_observations``, ``dones (B, 1)`` (1 only for true terminations, never
            for truncations) and ``rewards (B, 1)``, as float tensors on ``self.device``.
        :raises ValueError: if the buffer holds no complete episode.
        """
        idx = self.sample_window_indices(batch_size, 2, rng)
        cur, nxt = idx[:, 0], idx[:, 1]
        data = (
            self._normalize_obs(self.observations[cur], env),
            self.actions[nxt],
            self._normalize_obs(self.observations[nxt], env),
            self.terminated[nxt].astype(np.float32).reshape(-1, 1),
            self._normalize_reward(self.rewards[nxt].reshape(-1, 1), env),
        )
        return ReplayBufferSamples(*tuple(map(self.to_torch, data)))

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> ReplayBufferSamples:
        """SB3's ``sample``: uniform single transitions (see :meth:`sample_transitions`)."""
        return self.sample_transitions(batch_size, env=env)

    def _get_samples(self, batch_inds: np.ndarray, env: VecNormalize | None = None) -> ReplayBufferSamples:
        raise NotImplementedError("Use sample_sequences or sample_transitions")

    def __getstate__(self) -> dict:
        state = self.__dict__.copy()
        state["_index_cache"] = {}
        return state
