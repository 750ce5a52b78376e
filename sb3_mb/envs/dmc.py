"""DeepMind Control tasks through shimmy as PlaNet sees them, and the discrete fork's cartpole action tables.

Sources: the DeepMind Control Suite (Tassa et al. 2018, arXiv:1801.00690); PlaNet's six tasks, their image
observations and action repeats (Hafner et al. 2019, arXiv:1811.04551, Sec. 5 and App. A); the discrete
action tables of the discrete-action adaptation of Alex Rose's PlaNet fork, a code release without a paper.

Chain built by :func:`make_dmc` (and :func:`make_cartpole`), inner to outer::

    DmControlCompatibilityV0(dm_control.suite.load(domain, task))   # shimmy; dict obs, Box(-1, 1) float64
    -> RepeatAction(action_repeat)                 # gymnasium; rewards summed, stops at the episode end
    -> state: FlattenObservation + float32 cast        or     pixels: PixelObservation (64x64x3 uint8)
    -> action: Box(-1, 1, (action_dim,), float32)  or     DiscreteActionTable (cartpole: Discrete(5) / (9))
    -> TimeLimit(ceil(1000 / action_repeat))       # same step as dm_control's own 1000-step limit

Every task here is 1000 environment steps an episode (dm_control's time limit: 10 s at 0.01 s for cartpole
and cheetah, 20 s at 0.02 s for reacher, finger and ball_in_cup, 25 s at 0.025 s for walker), reported as
``truncated``; the outer ``TimeLimit`` only makes ``env.spec.max_episode_steps`` give the length in agent
steps for the chosen ``action_repeat`` and truncates at the same step. None of these tasks terminates.

Needs the MuJoCo OpenGL backend for pixels and ``render()``: set ``MUJOCO_GL=egl`` (headless) or ``osmesa``.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.wrappers import (
    FlattenObservation,
    RepeatAction,
    TimeLimit,
    TransformAction,
    TransformObservation,
)

from sb3_mb.envs.wrappers import DiscreteActionTable

#: Discrete action tables of Rose's PlaNet fork: its ``_da`` (5 actions) and ``_daf`` "fine" (9) tasks.
ACTION_SETS: dict[str, tuple[float, ...]] = {
    "discrete5": (-1.0, -0.25, 0.0, 0.25, 1.0),
    "discrete9": (-1.0, -0.25, -0.05, -0.01, 0.0, 0.01, 0.05, 0.25, 1.0),
}

#: dm_control episode length in environment steps (10 s at a 0.01 s control step).
EPISODE_ENV_STEPS = 1000

TASKS = ("balance", "swingup", "swingup_sparse")

#: PlaNet's action repeat per ``(domain, task)`` (arXiv:1811.04551, App. A). Rose's fork (and arXiv v1) ran
#: cup-catch with 6: ``gymnasium.make("sb3_mb/CupCatch-v0", action_repeat=6)``.
PLANET_ACTION_REPEAT: dict[tuple[str, str], int] = {
    ("cartpole", "balance"): 8,
    ("cartpole", "swingup"): 8,
    ("cartpole", "swingup_sparse"): 8,
    ("reacher", "easy"): 4,
    ("cheetah", "run"): 4,
    ("finger", "spin"): 2,
    ("ball_in_cup", "catch"): 4,
    ("walker", "walk"): 2,
}


def fast_render_settings(physics: Any) -> None:
    """Switch off shadows and multi-sample anti-aliasing of a dm_control ``physics`` (before any render).

    Measured on this project's shared 2-core machine with software EGL (mujoco 3.17, dm_control 1.0.50), a
    64x64 cartpole frame from camera 0 costs 15-22 ms with dm_control's defaults (shadowsize 2048,
    offsamples 4) and 3-4 ms with ``shadowsize = 0`` and ``offsamples = 0`` (a 240x320 ``render()`` ~9 ms).
    The frames differ by about 1.4 grey levels on average (no shadow under the cart, aliased edges).
    Turning the ``shadow``/``reflection`` render flags off as well changes nothing visible and saves no
    measurable time; the skybox is kept, since switching it off changes the background.
    """
    physics.model.vis.quality.shadowsize = 0
    physics.model.vis.quality.offsamples = 0


class PixelObservation(gymnasium.ObservationWrapper, gymnasium.utils.RecordConstructorArgs):
    """Replace the dm_control observation by an RGB frame rendered from ``camera_id`` (PlaNet's image input).

    Gymnasium's ``AddRenderObservation`` would tie the observation to ``render_mode``/``render()``; this
    renders its own size and camera so ``render()`` stays free for videos.

    Observation: ``Box(0, 255, (height, width, 3), uint8)``, channel-last RGB.

    :param env: a shimmy ``DmControlCompatibilityV0`` (possibly wrapped); its ``unwrapped.physics`` is used.
    :param size: ``(height, width)`` in pixels, PlaNet: ``(64, 64)``.
    :param camera_id: MuJoCo camera index; cartpole's camera 0 is the fixed side view PlaNet uses.
    """

    def __init__(self, env: gymnasium.Env, size: tuple[int, int] = (64, 64), camera_id: int = 0):
        gymnasium.utils.RecordConstructorArgs.__init__(self, size=size, camera_id=camera_id)
        gymnasium.ObservationWrapper.__init__(self, env)
        self.size = (int(size[0]), int(size[1]))
        self.camera_id = camera_id
        self.observation_space = spaces.Box(0, 255, (*self.size, 3), np.uint8)

    def observation(self, observation: Any) -> np.ndarray:
        height, width = self.size
        return self.env.unwrapped.physics.render(height=height, width=width, camera_id=self.camera_id)


def _dm_control_compatibility_class() -> type:
    from shimmy.dm_control_compatibility import DmControlCompatibilityV0

    class HeadlessDmControlCompatibility(DmControlCompatibilityV0):
        """shimmy's wrapper with the render modes that work headless (``rgb_array``, ``depth_array``).

        Overridden because shimmy's ``human`` mode opens a GLFW window and its ``multi_camera`` mode refuses
        the ``camera_id`` this module passes; shimmy also writes ``render_fps`` into its class-level
        metadata (as ``control_timestep * 1000``), here it is an instance value ``1 / control_timestep``.
        """

        metadata = {"render_modes": ["rgb_array", "depth_array"], "render_fps": 100}

        def __init__(self, env: Any, render_mode: str | None = None, render_kwargs: dict | None = None):
            if render_mode is not None and render_mode not in self.metadata["render_modes"]:
                raise ValueError(
                    f"Unsupported render_mode {render_mode!r}; "
                    f"expected None or one of {self.metadata['render_modes']}"
                )
            super().__init__(env, render_mode=render_mode, render_kwargs=render_kwargs)
            self.metadata = {
                "render_modes": ["rgb_array", "depth_array"],
                "render_fps": 1.0 / env.control_timestep(),
            }

    return HeadlessDmControlCompatibility


def _to_float32(observation: np.ndarray) -> np.ndarray:
    # Module-level, not a lambda: wrapper specs then compare equal and the env can be re-made from its spec.
    return np.asarray(observation, dtype=np.float32)


def _to_float64(action: np.ndarray) -> np.ndarray:
    return np.asarray(action, dtype=np.float64)


def make_dmc(
    domain: str,
    task: str,
    pixels: bool = False,
    action_set: str | None = None,
    action_repeat: int | None = None,
    size: tuple[int, int] = (64, 64),
    camera_id: int = 0,
    fast_render: bool = True,
    render_mode: str | None = None,
    render_size: tuple[int, int] = (240, 320),
    environment_kwargs: dict[str, Any] | None = None,
) -> gymnasium.Env:
    """A DeepMind Control task as PlaNet sees it (arXiv:1811.04551, Sec. 5, App. A).

    :param domain: ``dm_control.suite`` domain of :data:`PLANET_ACTION_REPEAT`, e.g. ``"cheetah"``,
        ``"ball_in_cup"``.
    :param task: its task, e.g. ``"run"``, ``"catch"``.
    :param pixels: observations are ``(64, 64, 3)`` uint8 RGB frames from ``camera_id`` (rendered once per
        agent step) instead of the flat state ``(obs_dim,)`` float32 (dm_control's observation dict
        flattened in key order, e.g. cheetah: position (8) then velocity (9)).
    :param action_set: ``None`` for ``Box(-1, 1, (action_dim,), float32)``; ``"discrete5"`` /
        ``"discrete9"``: ``Discrete(5)`` / ``Discrete(9)`` mapping to :data:`ACTION_SETS` (1-D actions:
        cartpole, see :func:`make_cartpole`).
    :param action_repeat: environment steps per agent step, rewards summed; default PlaNet's
        (:data:`PLANET_ACTION_REPEAT`). The episode is ``ceil(1000 / action_repeat)`` agent steps, ended by
        ``truncated=True``; there is no termination.
    :param size: pixel observation ``(height, width)``.
    :param camera_id: camera for pixel observations and ``render()``; 0, as PlaNet's wrapper, for all six.
    :param fast_render: no shadows, no anti-aliasing (see :func:`fast_render_settings`); applies to
        ``render()`` too.
    :param render_mode: ``None``, ``"rgb_array"`` (``render()`` gives a ``(*render_size, 3)`` uint8 RGB
        frame) or ``"depth_array"``; raises ``ValueError`` otherwise (use gymnasium's ``HumanRendering``).
    :param render_size: ``(height, width)`` of ``render()`` frames.
    :param environment_kwargs: passed to ``dm_control.suite.load`` (e.g. ``{"flat_observation": False}``).
    :raises ValueError: a ``(domain, task)`` not in :data:`PLANET_ACTION_REPEAT`, an unknown
        ``action_set`` or ``render_mode``, a table for a task of more than one action dimension, or
        ``action_repeat < 1``.
    """
    if (domain, task) not in PLANET_ACTION_REPEAT:
        known = sorted(PLANET_ACTION_REPEAT)
        raise ValueError(f"Unknown DeepMind Control task {(domain, task)!r}; expected one of {known}")
    if action_set is not None and action_set not in ACTION_SETS:
        raise ValueError(f"Unknown action_set {action_set!r}; expected None or one of {sorted(ACTION_SETS)}")
    if action_repeat is None:
        action_repeat = PLANET_ACTION_REPEAT[domain, task]
    if int(action_repeat) != action_repeat or action_repeat < 1:
        raise ValueError(f"action_repeat must be a positive integer, got {action_repeat!r}")
    action_repeat = int(action_repeat)

    from dm_control import suite

    dm_env = suite.load(domain, task, environment_kwargs=environment_kwargs)
    if fast_render:
        fast_render_settings(dm_env.physics)
    render_kwargs = {"camera_id": camera_id, "height": render_size[0], "width": render_size[1]}
    env: gymnasium.Env = _dm_control_compatibility_class()(
        dm_env, render_mode=render_mode, render_kwargs=render_kwargs
    )

    env = RepeatAction(env, num_repeats=action_repeat)
    if pixels:
        env = PixelObservation(env, size=size, camera_id=camera_id)
    else:
        env = FlattenObservation(env)
        float32_space = spaces.Box(-np.inf, np.inf, env.observation_space.shape, np.float32)
        env = TransformObservation(env, _to_float32, float32_space)
    if action_set is None:
        # dm_control takes float64; SB3 and the planners work in float32.
        low, high = env.action_space.low, env.action_space.high  # [-1, 1] for every task here
        env = TransformAction(env, _to_float64, spaces.Box(low.astype(np.float32), high.astype(np.float32)))
    elif env.action_space.shape != (1,):
        raise ValueError(
            f"action_set={action_set!r} is a table of one-dimensional actions (cartpole); {domain}-{task} "
            f"has actions of shape {env.action_space.shape}"
        )
    else:
        env = DiscreteActionTable(env, np.asarray(ACTION_SETS[action_set]).reshape(-1, 1))
    return TimeLimit(env, max_episode_steps=math.ceil(EPISODE_ENV_STEPS / action_repeat))


def make_cartpole(
    task: str = "swingup",
    pixels: bool = False,
    action_set: str | None = None,
    action_repeat: int | None = None,
    **kwargs: Any,
) -> gymnasium.Env:
    """DeepMind Control cartpole as PlaNet sees it (arXiv:1811.04551, Sec. 5, App. A), or discretised as in
    Rose's PlaNet fork.

    :param task: ``"balance"``, ``"swingup"`` or ``"swingup_sparse"``.
    :param pixels: observations are ``(64, 64, 3)`` uint8 RGB frames from ``camera_id`` (rendered once per
        agent step) instead of the flat state ``(5,)`` float32 (position (3) then velocity (2)).
    :param action_set: ``None`` for ``Box(-1, 1, (1,), float32)``; ``"discrete5"`` / ``"discrete9"`` for
        ``Discrete(5)`` / ``Discrete(9)`` mapping to :data:`ACTION_SETS`.
    :param action_repeat: environment steps per agent step, rewards summed; default 8 (continuous, as
        PlaNet's cartpole, App. A) or 4 (discrete, as the fork). The episode is ``ceil(1000 / action_repeat)``
        agent steps (125 or 250), ended by ``truncated=True``; there is no termination.
    :param kwargs: :func:`make_dmc`'s rendering arguments (``size``, ``camera_id``, ``fast_render``: about
        3 ms instead of 15-18 ms a 64x64 cartpole frame, ``render_mode``, ``render_size``) and
        ``environment_kwargs``.
    :raises ValueError: unknown ``task``, ``action_set`` or ``render_mode``, or ``action_repeat < 1``.
    """
    if task not in TASKS:
        raise ValueError(f"Unknown cartpole task {task!r}; expected one of {TASKS}")
    if action_repeat is None and action_set is not None:
        action_repeat = 4
    return make_dmc(
        "cartpole", task, pixels=pixels, action_set=action_set, action_repeat=action_repeat, **kwargs
    )
