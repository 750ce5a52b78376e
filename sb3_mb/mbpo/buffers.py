"""MBPO's replay: the real transitions and the model-generated ones, mixed in every SAC batch.

MBPO (Janner et al. 2019, arXiv:1906.08253, Alg. 2) trains SAC on data drawn from two stores: the real
environment buffer ``D_env`` and the model buffer ``D_model``, filled with short model rollouts and
emptied of older rollouts as new ones arrive. :class:`MBPOReplayBuffer` is SB3's
:class:`~stable_baselines3.common.buffers.ReplayBuffer` of the real data that owns the model buffer, so SB3
sees one replay buffer: ``SAC.train`` samples it, ``save_replay_buffer`` / ``load_replay_buffer`` pickle
both stores in one file.
"""

from __future__ import annotations

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.utils import get_device
from stable_baselines3.common.vec_env import VecNormalize

__all__ = ["MODEL_DATA_MIXINGS", "MBPOReplayBuffer", "ModelReplayBuffer"]

#: How a SAC batch mixes model and real data (see :class:`MBPOReplayBuffer`).
MODEL_DATA_MIXINGS = ("batch", "sample")


class ModelReplayBuffer(ReplayBuffer):
    """Replay buffer of model-generated transitions: one env column, no timeouts, filled in batches.

    :param buffer_size: capacity in transitions (at least 1).
    """

    def __init__(
        self,
        buffer_size: int,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        device: th.device | str = "auto",
    ):
        super().__init__(
            max(int(buffer_size), 1),
            observation_space,
            action_space,
            device,
            n_envs=1,
            handle_timeout_termination=False,
        )

    def extend(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        next_obs: np.ndarray,
        rewards: np.ndarray,
        dones: np.ndarray,
    ) -> None:
        """Append ``n`` transitions, overwriting the oldest when full.

        Shapes: ``(n, obs_dim)``, ``(n, action_dim)``, ``(n, obs_dim)``, ``(n,)``, ``(n,)``.
        """
        n = len(obs)
        if n == 0:
            return
        if n > self.buffer_size:
            obs, actions, next_obs, rewards, dones = (
                x[-self.buffer_size :] for x in (obs, actions, next_obs, rewards, dones)
            )
            n = self.buffer_size
        idx = (self.pos + np.arange(n)) % self.buffer_size
        self.observations[idx, 0] = obs
        self.next_observations[idx, 0] = next_obs
        self.actions[idx, 0] = actions.reshape(n, self.action_dim)
        self.rewards[idx, 0] = rewards
        self.dones[idx, 0] = dones
        self.full = self.full or self.pos + n >= self.buffer_size
        self.pos = int((self.pos + n) % self.buffer_size)

    def resized(self, buffer_size: int) -> ModelReplayBuffer:
        """A buffer of the new capacity holding the newest transitions of this one, oldest first."""
        new = ModelReplayBuffer(buffer_size, self.observation_space, self.action_space, self.device)
        order = np.arange(self.pos)
        if self.full:
            order = np.concatenate([np.arange(self.pos, self.buffer_size), order])
        new.extend(
            self.observations[order, 0],
            self.actions[order, 0],
            self.next_observations[order, 0],
            self.rewards[order, 0],
            self.dones[order, 0],
        )
        return new


class MBPOReplayBuffer(ReplayBuffer):
    """SB3's replay buffer of the real transitions, owning the model buffer; ``sample`` mixes the two.

    The arguments before ``model_buffer_size`` are :class:`~stable_baselines3.common.buffers.ReplayBuffer`'s
    and describe the real data. MBPO sets :attr:`model_data_mixing` from its own argument at set-up and
    :attr:`model_data_ratio` before every ``train()``, and resizes the model buffer with
    :meth:`resize_model_buffer` when the rollout length changes.

    :param model_buffer_size: capacity of the model buffer in transitions.
    :param model_data_mixing: how a batch of ``batch_size`` mixes the data with ``p = model_data_ratio``:

        - ``"batch"`` (VaGraM, Voelcker et al. 2022, arXiv:2204.01464, and mbrl-lib's MBPO): the whole
          batch comes from the model buffer with probability ``p``, else from the real buffer; real while
          the model buffer holds fewer than ``batch_size`` transitions;
        - ``"sample"`` (MBPO's released code, its ``real_ratio = 1 - p``): every batch holds
          ``round(p * batch_size)`` model transitions and the rest real ones.

        Either way the batch is all real while the model buffer is empty or ``p <= 0``.

    :attr:`reward_scale` (``None``, or ``kappa > 0`` set by MBPO's ``reward_scale`` option): ``sample``
    returns the rewards divided by it, real and model alike; the stores keep raw rewards (the model trains on
    them) and :meth:`real_transitions` returns them raw.
    :raises ValueError: for an unknown ``model_data_mixing``.
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
        model_buffer_size: int = 1,
        model_data_mixing: str = "batch",
    ):
        if model_data_mixing not in MODEL_DATA_MIXINGS:
            raise ValueError(
                f"model_data_mixing must be one of {MODEL_DATA_MIXINGS}, got {model_data_mixing!r}"
            )
        super().__init__(
            buffer_size,
            observation_space,
            action_space,
            device,
            n_envs=n_envs,
            optimize_memory_usage=optimize_memory_usage,
            handle_timeout_termination=handle_timeout_termination,
        )
        self.model_buffer = ModelReplayBuffer(model_buffer_size, observation_space, action_space, self.device)
        self.model_data_mixing = model_data_mixing
        #: ``p``: probability (``"batch"``) or fraction (``"sample"``) of model data in a batch.
        self.model_data_ratio = 0.0
        #: ``kappa``: ``sample`` divides the rewards by it (``None``: raw rewards).
        self.reward_scale: float | None = None
        #: Transitions sampled in all, and of them from the model buffer (for the sample-fraction log).
        self.n_samples = self.n_model_samples = 0

    @property
    def device(self) -> th.device:
        """Device of the sampled tensors; setting it (as SB3's ``load_replay_buffer`` does) sets the model
        buffer's too."""
        return self._device

    @device.setter
    def device(self, device: th.device | str) -> None:
        self._device = get_device(device)
        if "model_buffer" in self.__dict__:
            self.model_buffer.device = self._device

    def resize_model_buffer(self, buffer_size: int) -> None:
        """Give the model buffer a new capacity, keeping its newest transitions (nothing when unchanged)."""
        if max(int(buffer_size), 1) != self.model_buffer.buffer_size:
            self.model_buffer = self.model_buffer.resized(buffer_size)

    def real_transitions(self) -> tuple[th.Tensor, th.Tensor, th.Tensor, th.Tensor]:
        """Every stored real transition as float32 tensors on :attr:`device`, row ``position * n_envs + env``.

        :return: ``obs (n, obs_dim)``, ``actions (n, action_dim)`` (as stored: scaled to ``[-1, 1]``),
            ``next_obs (n, obs_dim)``, ``rewards (n,)``, ``n = size() * n_envs``.
        """
        n = self.size()

        def rows(x: np.ndarray) -> th.Tensor:
            flat = x[:n].reshape(n * self.n_envs, -1)
            return th.as_tensor(np.asarray(flat, dtype=np.float32), device=self.device)

        obs, actions, next_obs = rows(self.observations), rows(self.actions), rows(self.next_observations)
        return obs, actions, next_obs, rows(self.rewards)[:, 0]

    def _n_model_samples(self, batch_size: int) -> int:
        p = self.model_data_ratio
        if self.model_buffer.size() == 0 or p <= 0:
            return 0
        if self.model_data_mixing == "batch":
            use_model = self.model_buffer.size() >= batch_size and np.random.random() < p  # noqa: NPY002
            return batch_size if use_model else 0
        return min(int(round(p * batch_size)), batch_size)

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> ReplayBufferSamples:
        """``batch_size`` transitions, model and real mixed by ``model_data_mixing`` (real ones first),
        rewards ``(batch_size, 1)`` divided by :attr:`reward_scale` when it is set.

        Both stores sample uniformly with SB3's global NumPy state; ``env`` normalises both alike.
        """
        n_model = self._n_model_samples(batch_size)
        self.n_samples += batch_size
        self.n_model_samples += n_model
        if n_model == 0:
            samples = super().sample(batch_size, env=env)
        elif n_model == batch_size:
            samples = self.model_buffer.sample(batch_size, env=env)
        else:
            real = super().sample(batch_size - n_model, env=env)
            model = self.model_buffer.sample(n_model, env=env)
            samples = ReplayBufferSamples(*(th.cat([a, b]) for a, b in zip(real[:5], model[:5], strict=True)))
        if self.reward_scale is None:
            return samples
        return samples._replace(rewards=samples.rewards / self.reward_scale)
