"""A linear double integrator with quadratic cost: the easiest dynamics a model can learn, optimum known.

State ``s = (position, velocity)``, action an acceleration ``a`` in ``[-max_acceleration, max_acceleration]``,
time step ``dt``, semi-implicit Euler::

    velocity' = velocity + a dt
    position' = position + velocity' dt          i.e.  s' = A s + B a,  A = [[1, dt], [0, 1]],  B = [dt^2, dt]

reward ``-(position_cost * position'^2 + action_cost * a^2)``, episodes of ``horizon`` steps from rest at
``position = start_position`` (no termination, truncation at the horizon). With the defaults (``dt = 1``,
bound 1, ``start_position = 1``, no action cost) the optimum is 0: one step to the origin (``a = -1``), one
to stop (``a = +1``); doing nothing costs ``position_cost * horizon``.

:meth:`DoubleIntegrator.lqr` gives the finite-horizon linear-quadratic optimum (the backward Riccati
recursion, e.g. Bertsekas, "Dynamic Programming and Optimal Control", Vol. I, Sec. 4.1): its feedback
gains and the optimal return from the start state. It is the optimum of the bounded task as long as the
optimal actions stay within the bound (:meth:`DoubleIntegrator.lqr` says whether they do).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
from gymnasium import spaces

__all__ = ["DoubleIntegrator", "LQRSolution"]


class LQRSolution(NamedTuple):
    """The finite-horizon LQR optimum from the start state.

    :ivar gains: ``(horizon, 1, 2)`` feedback gains ``K_t``; the optimal action is ``a_t = -K_t s_t``.
    :ivar actions: ``(horizon,)`` the optimal actions along the optimal trajectory.
    :ivar optimal_return: the return of that trajectory (the sum of rewards, ``<= 0``).
    :ivar within_bounds: the optimal actions respect ``max_acceleration``, so this is the bounded optimum.
    """

    gains: np.ndarray
    actions: np.ndarray
    optimal_return: float
    within_bounds: bool


class DoubleIntegrator(gym.Env):
    """Double integrator with quadratic cost (module docstring).

    :param position_cost: ``c`` of the reward ``-c position'^2`` (1; the learning tests also use 1e-3, 1e3).
    :param action_cost: ``r`` of the reward's ``-r a^2`` (0).
    :param dt: time step (1).
    :param max_acceleration: the action bound (1).
    :param horizon: steps per episode (30).
    :param start_position: position at reset, at rest (1).
    :param render_mode: ``"rgb_array"`` (a 64 x 128 frame: the mass on a track over ``[-2, 2]``) or None.
    :raises ValueError: for a negative cost or a non-positive ``dt``, bound or horizon.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(
        self,
        position_cost: float = 1.0,
        action_cost: float = 0.0,
        dt: float = 1.0,
        max_acceleration: float = 1.0,
        horizon: int = 30,
        start_position: float = 1.0,
        render_mode: str | None = None,
    ):
        if position_cost < 0 or action_cost < 0 or dt <= 0 or max_acceleration <= 0 or horizon < 1:
            raise ValueError(
                "DoubleIntegrator needs position_cost, action_cost >= 0 and dt, max_acceleration, "
                f"horizon > 0; got {position_cost}, {action_cost}, {dt}, {max_acceleration}, {horizon}"
            )
        self.position_cost, self.action_cost, self.dt = float(position_cost), float(action_cost), float(dt)
        self.max_acceleration, self.horizon = float(max_acceleration), int(horizon)
        self.start_position = float(start_position)
        self.render_mode = render_mode
        self.observation_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)
        self.action_space = spaces.Box(-self.max_acceleration, self.max_acceleration, (1,), np.float32)
        self.A = np.array([[1.0, dt], [0.0, 1.0]])
        self.B = np.array([[dt * dt], [dt]])
        self.Q = np.diag([self.position_cost, 0.0])
        self.R = np.array([[self.action_cost]])
        self._state = np.zeros(2)
        self._t = 0

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._state = np.array([self.start_position, 0.0])
        self._t = 0
        return self._state.astype(np.float32), {}

    def step(self, action: np.ndarray):
        a = float(
            np.clip(
                np.asarray(action, dtype=np.float64).reshape(-1)[0],
                -self.max_acceleration,
                self.max_acceleration,
            )
        )
        self._state = self.A @ self._state + self.B[:, 0] * a
        self._t += 1
        reward = -(self.position_cost * self._state[0] ** 2 + self.action_cost * a * a)
        return self._state.astype(np.float32), float(reward), False, self._t >= self.horizon, {}

    def render(self) -> np.ndarray | None:
        """``(64, 128, 3)`` uint8: the origin as a grey line, the mass as a white square (``rgb_array``)."""
        if self.render_mode != "rgb_array":
            return None
        frame = np.zeros((64, 128, 3), dtype=np.uint8)
        frame[:, 63:65] = 96
        column = int(np.clip(np.round((self._state[0] + 2.0) / 4.0 * 127), 0, 127))
        frame[26:38, max(column - 6, 0) : column + 6] = 255
        return frame

    def lqr(self) -> LQRSolution:
        """The finite-horizon LQR optimum of this task from its start state.

        Cost ``sum_t s_{t+1}' Q s_{t+1} + a_t' R a_t`` with ``Q = diag(position_cost, 0)``,
        ``R = action_cost``; backward recursion ``P_H = 0``,
        ``K_t = (R + B' (Q + P_{t+1}) B)^+ B' (Q + P_{t+1}) A``,
        ``P_t = A' (Q + P_{t+1}) (A - B K_t)`` (the pseudo-inverse covers ``R = 0`` with
        ``position_cost = 0``).
        """
        P = np.zeros((2, 2))
        gains = np.zeros((self.horizon, 1, 2))
        for t in reversed(range(self.horizon)):
            M = self.Q + P
            gains[t] = np.linalg.pinv(self.R + self.B.T @ M @ self.B) @ self.B.T @ M @ self.A
            P = self.A.T @ M @ (self.A - self.B @ gains[t])
        state, total, actions = np.array([self.start_position, 0.0]), 0.0, []
        for t in range(self.horizon):
            a = float(-(gains[t] @ state)[0])
            state = self.A @ state + self.B[:, 0] * a
            total -= self.position_cost * state[0] ** 2 + self.action_cost * a * a
            actions.append(a)
        actions_array = np.array(actions)
        within = bool(np.all(np.abs(actions_array) <= self.max_acceleration + 1e-9))
        return LQRSolution(gains, actions_array, float(total), within)
