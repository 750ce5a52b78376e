"""Gymnasium environments of sb3-mb, registered when :mod:`sb3_mb` (or this module) is imported.

``gymnasium.make("sb3_mb:sb3_mb/<Id>")`` works without a prior import: Gymnasium imports the module
named before the colon, which registers the ids.

Registration imports nothing heavy: dm_control, ale_py, stable_retro, cv2 and the MuJoCo bindings are
imported inside the entry points (``sb3_mb.envs.dmc``, ``atari``, ``distractors``, ``retro``), so
``import sb3_mb`` stays fast and works without the optional extras.

Families (see each module for the source in the spec):

- ``sb3_mb/Cartpole{Balance,Swingup,SwingupSparse}[Pixels][Discrete5|Discrete9]-v0``: DeepMind Control
  cartpole through shimmy, PlaNet action repeat, optional 64x64 pixels and discrete action tables
  (spec planet.md 3.1, 3.2).
- ``sb3_mb/{Breakout,Qbert,Freeway}PlaNet-v0``: Atari with the PlaNet fork's preprocessing (planet.md 3.2).
- ``sb3_mb/HopperDistracted[5|10|15]-v0``: Hopper-v5 with distracting dimensions (mbpo_vagram.md 2.5).
- ``sb3_mb/{SonicTheHedgehog,SonicTheHedgehog2,SonicAndKnuckles3}-v0`` and ``sb3_mb/AirstrikerContest-v0``:
  stable-retro with the Retro-contest wrapper chain (world_models.md 4.3).
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


# DeepMind Control cartpole (planet.md 3.1 / 3.2). The entry point adds the TimeLimit itself because the
# episode length in agent steps depends on the ``action_repeat`` kwarg (1000 env steps / action_repeat).
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

# Atari, PlaNet fork preprocessing (planet.md 3.2); the episode cap is a kwarg, so the entry point adds it.
_register("BreakoutPlaNet-v0", "sb3_mb.envs.atari:make_planet_atari", game="breakout")
_register("QbertPlaNet-v0", "sb3_mb.envs.atari:make_planet_atari", game="qbert")
_register("FreewayPlaNet-v0", "sb3_mb.envs.atari:make_planet_atari", game="freeway")

# Hopper-v5 with distracting dimensions (mbpo_vagram.md 2.5); Hopper-v5's own 1000-step limit.
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

# stable-retro, Retro-contest chain (world_models.md 4.3). The time limit is part of the chain (a kwarg).
_register("SonicTheHedgehog-v0", "sb3_mb.envs.retro:make_retro_contest", game="SonicTheHedgehog-Genesis-v0")
_register("SonicTheHedgehog2-v0", "sb3_mb.envs.retro:make_retro_contest", game="SonicTheHedgehog2-Genesis-v0")
_register("SonicAndKnuckles3-v0", "sb3_mb.envs.retro:make_retro_contest", game="SonicAndKnuckles3-Genesis-v0")
_register("AirstrikerContest-v0", "sb3_mb.envs.retro:make_retro_contest", game="Airstriker-Genesis-v0")

del _task, _task_name, _pixels, _action_set, _name, _dims

__all__ = ["NAMESPACE", "DiscreteActionTable", "list_env_ids"]
