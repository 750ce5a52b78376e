"""A 2-D point mass, the tiny task of the learning tests (MBPO, PlaNet).

``x' = clip(x + step_size * clip(a, -1, 1), -2, 2)`` from ``x_0 ~ U[-1, 1]^2``; reward ``-||x'||``;
truncated after ``n_steps``. Doing nothing returns about ``-0.77 * n_steps``.
"""

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class PointMass(gym.Env):
    observation_space = spaces.Box(-2, 2, (2,), np.float32)
    action_space = spaces.Box(-1, 1, (2,), np.float32)

    def __init__(self, step_size: float = 0.2, n_steps: int = 25):
        self.step_size = step_size
        self.n_steps = n_steps

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x = self.np_random.uniform(-1, 1, 2).astype(np.float32)
        self.t = 0
        return self.x.copy(), {}

    def step(self, action):
        self.x = np.clip(self.x + self.step_size * np.clip(action, -1, 1), -2, 2).astype(np.float32)
        self.t += 1
        return self.x.copy(), -float(np.linalg.norm(self.x)), False, self.t >= self.n_steps, {}
