"""The dream: M as a Gymnasium environment (Ha & Schmidhuber 2018, arXiv:1803.10122, Sec. 4, "Learning
Inside of a Dream").

An episode starts from a latent ``z_0`` drawn from the posterior of a real first frame (the original's
``initial_z``: the VAE's ``(mu, log_var)`` of stored episode starts) and a zero LSTM state. A step feeds
``[z_t, a_t]`` to the LSTM, samples ``z_{t+1}`` from the mixture at temperature ``tau`` (Doom: 1.15; higher is
harder to exploit, Sec. 4.4), and takes the reward and the termination from M's heads.

Observation: ``[z_t, h_t]`` (``observation="features"``, the controller's input, ``z_dim + hidden_size``) or
``z_t`` alone (``observation="latent"``), float32 in an unbounded ``Box``. Actions: the real env's action
space (``Box`` actions are clipped to its bounds and scaled to ``[-1, 1]`` for M; ``Discrete`` one-hot).
Reward: the reward head's prediction (env units). ``terminated``: drawn with the done head's probability
(``done_threshold=None``, the default: terminations are rare in the data, so their predicted probability
per step stays small and a threshold of 0.5 would never end a dream, leaving C no signal to avoid them), or
that probability above ``done_threshold``. Without a done head it never terminates. ``truncated`` after
``max_episode_steps``. Every draw comes from a ``torch.Generator`` seeded at ``reset`` from the env's
``np_random``, so a seeded reset replays the same dream.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch as th
from gymnasium import spaces
from torch.nn import functional as F

from sb3_mb.worldmodels.mdn_rnn import MDNRNN

__all__ = ["DreamEnv", "model_action"]


def model_action(action: np.ndarray | th.Tensor, action_space: spaces.Space) -> th.Tensor:
    """Env actions ``(batch, *action_shape)`` (or ``(batch,)`` indices) as M reads them:
    ``(batch, action_dim)`` floats, ``Box`` clipped and scaled to ``[-1, 1]``, ``Discrete`` one-hot.

    :raises ValueError: for another action space.
    """
    a = th.as_tensor(np.asarray(action))
    if isinstance(action_space, spaces.Discrete):
        return F.one_hot(a.reshape(-1).long() - int(action_space.start), int(action_space.n)).float()
    if isinstance(action_space, spaces.Box):
        low = th.as_tensor(action_space.low, dtype=th.float32).reshape(-1)
        high = th.as_tensor(action_space.high, dtype=th.float32).reshape(-1)
        a = a.reshape(a.shape[0], -1).float()
        a = th.minimum(th.maximum(a, low), high)
        return 2.0 * (a - low) / (high - low) - 1.0
    raise ValueError(
        f"World Models supports Box or Discrete action spaces, got the action space {action_space}"
    )


class DreamEnv(gym.Env):
    """M (an :class:`~sb3_mb.worldmodels.mdn_rnn.MDNRNN` with a reward head) as a Gymnasium env (module
    docstring).

    :param mdn_rnn: the trained M; it needs ``predict_reward`` (and ``predict_done`` for terminations).
    :param initial_mu: ``(n_starts, z_dim)`` posterior means of real first frames.
    :param initial_log_var: ``(n_starts, z_dim)`` their log-variances.
    :param action_space: the real env's ``Box`` (bounded) or ``Discrete`` action space.
    :param temperature: tau (> 0). :param max_episode_steps: truncation length.
    :param observation: ``"features"`` (``[z, h]``) or ``"latent"`` (``z``).
    :param done_threshold: None: terminate with the done head's probability; a number: when that probability
        exceeds it.
    :raises ValueError: for an M without reward head, a non-positive temperature, an unknown ``observation``,
        an unsupported action space or empty / mis-shaped initial latents.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(
        self,
        mdn_rnn: MDNRNN,
        initial_mu: np.ndarray,
        initial_log_var: np.ndarray,
        action_space: spaces.Space,
        temperature: float = 1.0,
        max_episode_steps: int = 1000,
        observation: str = "features",
        done_threshold: float | None = None,
    ):
        if not mdn_rnn.predict_reward:
            raise ValueError("DreamEnv needs an MDN-RNN with a reward head (predict_reward=True)")
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if observation not in ("features", "latent"):
            raise ValueError(f"observation must be 'features' or 'latent', got {observation!r}")
        if not isinstance(action_space, spaces.Box | spaces.Discrete):
            raise ValueError(
                f"DreamEnv supports Box or Discrete action spaces, got the action space {action_space}"
            )
        initial_mu = np.asarray(initial_mu, dtype=np.float32)
        initial_log_var = np.asarray(initial_log_var, dtype=np.float32)
        if initial_mu.ndim != 2 or initial_mu.shape[0] == 0 or initial_mu.shape[1] != mdn_rnn.z_dim:
            raise ValueError(f"initial_mu must be (n_starts >= 1, {mdn_rnn.z_dim}), got {initial_mu.shape}")
        if initial_log_var.shape != initial_mu.shape:
            raise ValueError(f"initial_log_var {initial_log_var.shape} != initial_mu {initial_mu.shape}")
        self.mdn_rnn = mdn_rnn
        self.initial_mu, self.initial_log_var = initial_mu, initial_log_var
        self.action_space = action_space
        self.temperature, self.max_episode_steps = temperature, max_episode_steps
        self.observation, self.done_threshold = observation, done_threshold
        size = mdn_rnn.z_dim + (mdn_rnn.hidden_size if observation == "features" else 0)
        self.observation_space = spaces.Box(-np.inf, np.inf, (size,), np.float32)
        self._device = next(mdn_rnn.parameters()).device
        self._generator: th.Generator | None = None
        self._z = self._h = self._c = None
        self._t = 0

    def _observe(self) -> np.ndarray:
        parts = [self._z] if self.observation == "latent" else [self._z, self._h]
        return th.cat(parts, dim=-1)[0].cpu().numpy().astype(np.float32)

    @th.no_grad()
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._generator = th.Generator(device=self._device).manual_seed(int(self.np_random.integers(2**62)))
        index = int(self.np_random.integers(len(self.initial_mu)))
        mu = th.as_tensor(self.initial_mu[index : index + 1], device=self._device)
        log_var = th.as_tensor(self.initial_log_var[index : index + 1], device=self._device)
        eps = th.randn(mu.shape, generator=self._generator, device=self._device)
        self._z = mu + th.exp(0.5 * log_var) * eps
        self._h = th.zeros(1, self.mdn_rnn.hidden_size, device=self._device)
        self._c = th.zeros_like(self._h)
        self._t = 0
        return self._observe(), {}

    @th.no_grad()
    def step(self, action: Any):
        if self._z is None:
            raise RuntimeError("DreamEnv.step called before reset")
        a = model_action(np.asarray(action)[None], self.action_space).to(self._device)
        self._h, self._c = self.mdn_rnn.step(self._z, a, (self._h, self._c))
        params = self.mdn_rnn.mixture(self._h)
        self._z = MDNRNN.sample(params, self.temperature, self._generator)
        self._t += 1
        reward = float(params.reward[0])
        terminated = False
        if self.mdn_rnn.predict_done:
            p_done = th.sigmoid(params.done_logit[0])
            if self.done_threshold is None:
                terminated = bool(th.rand((), generator=self._generator, device=self._device) < p_done)
            else:
                terminated = float(p_done) > self.done_threshold
        truncated = self._t >= self.max_episode_steps
        return self._observe(), reward, bool(terminated), bool(truncated), {}
