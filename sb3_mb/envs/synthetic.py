"""A cheap synthetic image task with discrete actions: the shared tests' image environment.

``sb3_mb/MovingBar-v0``: a ``size`` x ``size`` RGB frame (uint8, channel-last like Atari's) shows a vertical
bar; actions 0 / 1 / 2 move it one column left / keep it / move it right (clipped at the borders). The reward
is the column it actually moved (-1, 0 or +1), so always moving right scores the distance to the right
border. The start column is drawn from the env's seeded RNG; 20-step episodes (the registration's
``TimeLimit``). ``render_mode="rgb_array"`` gives the frame scaled up ``render_scale`` times (128 x 128 by
default), so that video recorders have a frame of a usual size.

It is what the shared algorithm tests and the zoo tests run image-only, discrete-action algorithms on
(``AlgoSpec.test_env``), as Pendulum-v1 is for vector-observation, continuous-action ones: a step costs
microseconds, so the test's time goes to the algorithm.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

#: RGB colour of the bar.
BAR_COLOUR = (255, 128, 64)


class MovingBar(gym.Env):
    """A bar in a ``size`` x ``size`` RGB frame that the actions move left / keep / move right.

    :param size: frame side in pixels (>= 4).
    :param render_mode: ``None`` or ``"rgb_array"``.
    :param render_scale: integer upscaling of the rendered frame (``size * render_scale`` pixels a side).
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, size: int = 16, render_mode: str | None = None, render_scale: int = 8):
        if size < 4:
            raise ValueError(f"MovingBar needs size >= 4, got {size}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"MovingBar renders 'rgb_array' only, got render_mode={render_mode!r}")
        self.size, self.render_mode, self.render_scale = size, render_mode, render_scale
        self.observation_space = spaces.Box(0, 255, (size, size, 3), np.uint8)
        self.action_space = spaces.Discrete(3)
        self.x = size // 2

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.x = int(self.np_random.integers(1, self.size - 1))
        return self._obs(), {}

    def _obs(self) -> np.ndarray:
        image = np.zeros((self.size, self.size, 3), np.uint8)
        top, bottom = self.size // 4, self.size - self.size // 4
        image[top:bottom, self.x - 1 : self.x + 1] = BAR_COLOUR
        return image

    def step(self, action: int):
        if not self.action_space.contains(action):
            raise ValueError(f"MovingBar takes actions 0, 1, 2, got {action!r}")
        x = int(np.clip(self.x + int(action) - 1, 1, self.size - 1))
        reward, self.x = float(x - self.x), x
        return self._obs(), reward, False, False, {}

    def render(self) -> np.ndarray | None:
        if self.render_mode != "rgb_array":
            return None
        return self._obs().repeat(self.render_scale, axis=0).repeat(self.render_scale, axis=1)
