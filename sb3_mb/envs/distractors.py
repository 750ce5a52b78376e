"""Hopper with distracting observation dimensions, as in VaGraM's distraction experiment.

VaGraM: Voelcker, Liao, Garg, Farahmand 2022, "Value Gradient weighted Model-Based Reinforcement
Learning", ICLR 2022, arXiv:2204.01464. This is a port of the distractor wrapper of VaGraM's code release
(built on mbrl-lib) with the settings of its Hopper distraction runs (``linear=False, switching=True,
correlated=False``), on Gymnasium's Hopper-v5 instead of gym's Hopper-v2. The dynamics below follow
that code release.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces

#: Bound of the distractor values; a component leaving [-SWITCH_BOUND, SWITCH_BOUND] is reset to ``c``.
SWITCH_BOUND = 20.0


class DistractionDimensions(gymnasium.ObservationWrapper, gymnasium.utils.RecordConstructorArgs):
    """Append ``D`` chaotic distractor dimensions, independent of the robot, to a flat observation.

    The distractor dynamics are fixed per instance, as in VaGraM's code release (arXiv:2204.01464):

    - ``W`` ~ N(0, 1) of shape ``(D, obs_dim + D)`` with the ``obs_dim`` columns acting on the real
      observation zeroed (``correlated=False``), so only ``W_dd = W[:, obs_dim:]`` acts;
    - ``P = N(0, 10)**2`` of shape ``(D, D)``, non-negative "frequencies". The original calls
      ``np.random.normal(0, 10, ...)``, whose second argument is the **standard deviation**: P's entries are
      squares of N(mean 0, std 10) draws;
    - ``c`` ~ N(0, 1)^D, the value a component is switched to when it leaves [-20, 20].

    Dynamics of the distractor state ``x`` (the observed distractors are ``x`` itself):

    - reset: ``x ~ N(0, 0.1)^D`` (0.1 is the std), then one update;
    - update, once per ``step``: ``x <- W_dd x``; ``x <- x + 0.1 sin(P x)``;
      ``x_i <- c_i`` where ``|x_i| > 20``.

    The observed distractors are in [-20, 20] or equal to ``c``. With ``pure_noise=True`` they are instead
    fresh N(0, 1)^D draws at every reset and step. Reward, termination and the robot are untouched.

    Seeding (the original draws from NumPy's global random state): W, P, c and the per-episode draws
    come from one ``numpy.random.Generator``, built from the constructor ``seed`` (fresh OS entropy when
    ``None``). ``reset(seed=s)`` makes the wrapper as if it had been constructed with ``seed=s``: the
    generator is rebuilt from ``s`` and W, P, c are redrawn, so the same seed gives the same distractors
    and trajectories in any process. ``reset()`` without a seed keeps W, P, c and continues the
    generator. The wrapped env is reset with the same ``seed``.

    Observation: ``Box(-inf, inf, (obs_dim + D,), float64)``, the real observation first.

    :param env: environment with a flat ``Box`` observation of ``obs_dim`` entries.
    :param distraction_dims: ``D >= 0``; ``D = 0`` leaves the observation unchanged.
    :param pure_noise: i.i.d. N(0, 1) distractors instead of the chaotic dynamics.
    :param seed: seed of the distractor generator.
    :raises ValueError: if ``D < 0`` or the observation space is not a flat ``Box``.
    """

    def __init__(
        self,
        env: gymnasium.Env,
        distraction_dims: int = 10,
        pure_noise: bool = False,
        seed: int | None = None,
    ):
        gymnasium.utils.RecordConstructorArgs.__init__(
            self, distraction_dims=distraction_dims, pure_noise=pure_noise, seed=seed
        )
        gymnasium.ObservationWrapper.__init__(self, env)
        space = env.observation_space
        if not isinstance(space, spaces.Box) or len(space.shape) != 1:
            raise ValueError(f"DistractionDimensions expects a flat Box observation space, got {space}")
        if int(distraction_dims) != distraction_dims or distraction_dims < 0:
            raise ValueError(f"distraction_dims must be a non-negative integer, got {distraction_dims!r}")
        self.distraction_dims = int(distraction_dims)
        self.pure_noise = bool(pure_noise)
        self.obs_dim = int(space.shape[0])
        dims = self.obs_dim + self.distraction_dims
        self.observation_space = spaces.Box(-np.inf, np.inf, (dims,), np.float64)
        self._draw_dynamics(seed)
        self.x = np.zeros(self.distraction_dims)

    def _draw_dynamics(self, seed: int | None) -> None:
        """Build the generator from ``seed`` and draw W, P, c (in this order)."""
        d = self.distraction_dims
        self.rng = np.random.default_rng(seed)
        self.W = self.rng.normal(0.0, 1.0, size=(d, self.obs_dim + d))
        self.W[:, : self.obs_dim] = 0.0  # correlated=False: independent of the robot
        self.P = self.rng.normal(0.0, 10.0, size=(d, d)) ** 2
        self.c = self.rng.normal(0.0, 1.0, size=d)

    @property
    def W_dd(self) -> np.ndarray:
        """``(D, D)`` block of ``W`` acting on the distractors."""
        return self.W[:, self.obs_dim :]

    def update(self, x: np.ndarray) -> np.ndarray:
        """One step of the distractor dynamics: ``(D,) -> (D,)``."""
        x = self.W_dd @ x
        x = x + 0.1 * np.sin(self.P @ x)
        return np.where(np.abs(x) > SWITCH_BOUND, self.c, x)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict]:
        if seed is not None:
            self._draw_dynamics(seed)
        obs, info = self.env.reset(seed=seed, options=options)
        if self.distraction_dims and not self.pure_noise:
            self.x = self.rng.normal(0.0, 0.1, size=self.distraction_dims)
        return self.observation(obs), info

    def observation(self, observation: np.ndarray) -> np.ndarray:
        if self.distraction_dims == 0:
            return np.asarray(observation, dtype=np.float64)
        if self.pure_noise:
            self.x = self.rng.normal(0.0, 1.0, size=self.distraction_dims)
        else:
            self.x = self.update(self.x)
        return np.concatenate([np.asarray(observation, dtype=np.float64), self.x])


def make_hopper_distracted(
    distraction_dims: int = 10,
    pure_noise: bool = False,
    seed: int | None = None,
    render_mode: str | None = None,
    **hopper_kwargs: Any,
) -> gymnasium.Env:
    """Gymnasium Hopper-v5 (11-D observation) wrapped in :class:`DistractionDimensions` (VaGraM's Hopper).

    Observation ``Box(-inf, inf, (11 + distraction_dims,), float64)``; action ``Box(-1, 1, (3,), float32)``;
    Hopper-v5's reward and termination; the 1000-step limit comes from the registration.

    :param hopper_kwargs: passed to ``gymnasium.envs.mujoco.hopper_v5.HopperEnv``.
    :raises ImportError: the MuJoCo bindings are missing (``pip install 'sb3-mb[mujoco]'``).
    """
    try:
        from gymnasium.envs.mujoco.hopper_v5 import HopperEnv
    except ImportError as error:
        raise ImportError("HopperDistracted needs MuJoCo: pip install 'sb3-mb[mujoco]'") from error
    env = HopperEnv(render_mode=render_mode, **hopper_kwargs)
    return DistractionDimensions(env, distraction_dims=distraction_dims, pure_noise=pure_noise, seed=seed)
