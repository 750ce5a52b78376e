"""Gymnasium environments of sb3-mb, registered when :mod:`sb3_mb` (or this module) is imported.

``gymnasium.make("sb3_mb:sb3_mb/<Id>")`` works without a prior import: Gymnasium imports the module
named before the colon, which registers the ids.

Registration imports nothing heavy: dm_control, ale_py, stable_retro, cv2 and the MuJoCo bindings are
imported inside the entry points (``sb3_mb.envs.dmc``, ``atari``, ``distractors``, ``retro``), so
``import sb3_mb`` stays fast and works without the optional extras.

Families (each module names its sources):

- ``sb3_mb/Cartpole{Balance,Swingup,SwingupSparse}[Pixels][Discrete5|Discrete9]-v0``: DeepMind Control
  Suite cartpole (Tassa et al. 2018, arXiv:1801.00690) through shimmy, with PlaNet's action repeat and
  optional 64x64 pixels (Hafner et al. 2019, arXiv:1811.04551, Sec. 5 and App. A) and the discrete
  action tables of the discrete-action adaptation of Alex Rose's PlaNet fork.
- ``sb3_mb/{ReacherEasy,CheetahRun,FingerSpin,CupCatch,WalkerWalk}[Pixels]-v0``: PlaNet's other five DeepMind
  Control tasks (arXiv:1811.04551, Sec. 5, App. A), continuous actions, with PlaNet's action repeats 4, 4, 2,
  4, 2 (Rose's fork ran cup-catch with 6: ``action_repeat=6``).
- ``sb3_mb/{Breakout,Qbert,Freeway}PlaNet-v0``: Atari (ALE, Bellemare et al. 2013, arXiv:1207.4708) with
  the frame preprocessing of Rose's PlaNet fork.
- ``sb3_mb/HopperDistracted[5|10|15]-v0``: Hopper-v5 with the distracting dimensions of VaGraM's
  distraction experiment (Voelcker, Liao, Garg, Farahmand 2022, arXiv:2204.01464).
- ``sb3_mb/DoubleIntegrator-v0``: a linear double integrator with quadratic cost, whose optimum is known
  (:mod:`sb3_mb.envs.linear`): the learning tests' linear-quadratic task.
- ``sb3_mb/MovingBar-v0``: a 16x16 RGB frame of a bar that three discrete actions move
  (:mod:`sb3_mb.envs.synthetic`), the shared tests' cheap image task.
- ``sb3_mb/{SonicTheHedgehog,SonicTheHedgehog2,SonicAndKnuckles3}-v0`` and ``sb3_mb/AirstrikerContest-v0``:
  stable-retro with the wrapper chain of the Retro contest (Nichol et al. 2018, "Gotta Learn Fast",
  arXiv:1804.03720) as wassname's Sonic World Models configures it; the Sonic ids draw from the contest's
  training levels (``split="validation"`` for the held-out ones).
"""

from __future__ import annotations

from typing import Any

import gymnasium

from sb3_mb.envs.wrappers import DiscreteActionTable

NAMESPACE = "sb3_mb"

_REGISTERED: list[str] = []


def _register(name: str, entry_point: str, max_episode_steps: int | None = None, **kwargs: Any) -> None:
    env_id = f"{NAMESPACE}/{name}"
    if env_id not in gymnasium.registry:
        gymnasium.register(
            env_id, entry_point=entry_point, max_episode_steps=max_episode_steps, kwargs=kwargs
        )
    if env_id not in _REGISTERED:
        _REGISTERED.append(env_id)


def list_env_ids() -> list[str]:
    """Every id registered by sb3-mb, e.g. ``"sb3_mb/CartpoleSwingupPixels-v0"``, in registration order."""
    return list(_REGISTERED)


# DeepMind Control cartpole (PlaNet, Hafner et al. 2019, App. A; Rose's fork). The entry point adds the
# TimeLimit itself because the episode length in agent steps depends on the ``action_repeat`` kwarg
# (1000 env steps / action_repeat).
for _task, _task_name in (
    ("balance", "Balance"),
    ("swingup", "Swingup"),
    ("swingup_sparse", "SwingupSparse"),
):
    for _pixels in (False, True):
        for _action_set in (None, "discrete5", "discrete9"):
            _name = "Cartpole" + _task_name + ("Pixels" if _pixels else "")
            _name += {None: "", "discrete5": "Discrete5", "discrete9": "Discrete9"}[_action_set]
            _register(
                f"{_name}-v0",
                "sb3_mb.envs.dmc:make_cartpole",
                task=_task,
                pixels=_pixels,
                action_set=_action_set,
            )

# PlaNet's other five DeepMind Control tasks (App. A): continuous, state or 64x64 pixels, PlaNet's action
# repeat (sb3_mb.envs.dmc.PLANET_ACTION_REPEAT); the entry point adds the TimeLimit, as for cartpole.
for _name, _domain, _task in (
    ("ReacherEasy", "reacher", "easy"),
    ("CheetahRun", "cheetah", "run"),
    ("FingerSpin", "finger", "spin"),
    ("CupCatch", "ball_in_cup", "catch"),
    ("WalkerWalk", "walker", "walk"),
):
    for _pixels in (False, True):
        _register(
            f"{_name}{'Pixels' if _pixels else ''}-v0",
            "sb3_mb.envs.dmc:make_dmc",
            domain=_domain,
            task=_task,
            pixels=_pixels,
        )

# Atari with the preprocessing of Rose's PlaNet fork; the episode cap is a kwarg, so the entry point adds it.
_register("BreakoutPlaNet-v0", "sb3_mb.envs.atari:make_planet_atari", game="breakout")
_register("QbertPlaNet-v0", "sb3_mb.envs.atari:make_planet_atari", game="qbert")
_register("FreewayPlaNet-v0", "sb3_mb.envs.atari:make_planet_atari", game="freeway")

# Hopper-v5 with VaGraM's distracting dimensions (arXiv:2204.01464); Hopper-v5's own 1000-step limit.
_register(
    "HopperDistracted-v0",
    "sb3_mb.envs.distractors:make_hopper_distracted",
    max_episode_steps=1000,
    distraction_dims=10,
    pure_noise=False,
)
for _dims in (5, 10, 15):
    _register(
        f"HopperDistracted{_dims}-v0",
        "sb3_mb.envs.distractors:make_hopper_distracted",
        max_episode_steps=1000,
        distraction_dims=_dims,
        pure_noise=False,
    )

# Linear double integrator, quadratic cost (the LQR learning tests); 30 steps, the entry point truncates.
_register("DoubleIntegrator-v0", "sb3_mb.envs.linear:DoubleIntegrator")

# A bar in a 16x16 RGB frame, moved by 3 discrete actions: the shared tests' cheap image task; 20 steps.
_register("MovingBar-v0", "sb3_mb.envs.synthetic:MovingBar", max_episode_steps=20)

# stable-retro, Retro-contest chain (Nichol et al. 2018, arXiv:1804.03720). The time limit is part of the
# chain (a kwarg).
_register("SonicTheHedgehog-v0", "sb3_mb.envs.retro:make_retro_contest", game="SonicTheHedgehog-Genesis-v0")
_register("SonicTheHedgehog2-v0", "sb3_mb.envs.retro:make_retro_contest", game="SonicTheHedgehog2-Genesis-v0")
_register("SonicAndKnuckles3-v0", "sb3_mb.envs.retro:make_retro_contest", game="SonicAndKnuckles3-Genesis-v0")
_register(
    "AirstrikerContest-v0", "sb3_mb.envs.retro:make_retro_contest", game="Airstriker-Genesis-v0", split=None
)

del _task, _task_name, _pixels, _action_set, _name, _domain, _dims

__all__ = ["NAMESPACE", "DiscreteActionTable", "list_env_ids"]
