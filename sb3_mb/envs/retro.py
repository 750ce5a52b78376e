"""Sonic (and Airstriker) through stable-retro with the Retro-contest wrapper chain.

Sources: the Retro contest's Sonic benchmark (Nichol et al. 2018, "Gotta Learn Fast: A New Benchmark for
Generalization in RL", arXiv:1804.03720: level states, sticky frame skip, 4500-step episodes, x-progress
reward) and the settings of wassname's Sonic World Models, a World Models agent (after Ha & Schmidhuber
2018, arXiv:1803.10122) for the contest released as code without a paper (10 button combos, reward
scale, 128x128 frames).

Chain built by :func:`make_retro_contest` (inner to outer), as composable wrappers::

    stable_retro.make(game, state, scenario, use_restricted_actions=FILTERED, render_mode="rgb_array")
    -> RandomStateReset(states)              # a random level state of the game at every reset
    -> DiscreteActionTable(button combos)    # "wassname" 10 combos or "retro_baselines" 7 combos
    -> StochasticFrameSkip(n=4, stickprob=0.25)
    -> TimeLimit(4500)                       # the contest: 4500 agent steps = 18 000 frames (wassname: 4000)
    -> RewardScaler(0.005)                   # wassname's RewardScaler (retro-baselines: 0.01)
    -> ResizeObservation((128, 128))         # wassname's WarpFrame: 128x128 RGB, cv2.INTER_AREA

Observations stay ``uint8`` so SB3 recognises images; wassname's ``ScaledFloatFrame`` (/255) is left to the
model's preprocessing (SB3 divides image observations by 255 itself).

The Sonic ROMs are not distributable; import one with ``python -m stable_retro.import /path/to/roms``.
Only ``Airstriker-Genesis-v0`` ships with stable-retro, which is why ``sb3_mb/AirstrikerContest-v0`` exists:
it runs the same chain (same 12 Genesis buttons, one state ``Level1``) so the chain can be tested anywhere.

stable-retro allows **one emulator per process**: ``close()`` an env before making another one, and use
``SubprocVecEnv`` for several.
"""

from __future__ import annotations

from typing import Any, Sequence

import gymnasium
import numpy as np
from gymnasium.wrappers import ResizeObservation, TimeLimit

from sb3_mb.envs.wrappers import DiscreteActionTable

#: Genesis button order of stable-retro's ``RetroEnv.buttons`` (checked by :func:`make_retro_contest`).
GENESIS_BUTTONS = ("B", "A", "MODE", "START", "UP", "DOWN", "LEFT", "RIGHT", "C", "Y", "X", "Z")

#: Button combos of the discrete action sets. B is jump.
ACTION_SETS: dict[str, tuple[tuple[str, ...], ...]] = {
    # ``SonicDiscretizer`` of the contest's baseline code, retro-baselines (7 combos)
    "retro_baselines": (
        ("LEFT",),
        ("RIGHT",),
        ("LEFT", "DOWN"),
        ("RIGHT", "DOWN"),
        ("DOWN",),
        ("DOWN", "B"),
        ("B",),
    ),
    # ``SonicDiscretizer`` of wassname's Sonic World Models (10 combos, with no-op)
    "wassname": (
        (),
        ("LEFT",),
        ("RIGHT",),
        ("LEFT", "DOWN"),
        ("RIGHT", "DOWN"),
        ("DOWN",),
        ("DOWN", "B"),
        ("LEFT", "B"),
        ("RIGHT", "B"),
        ("B",),
    ),
}

#: Scenario per game: the contest scenario (reward = x progress, done at the level end) where it exists.
SCENARIOS: dict[str, str | None] = {
    "SonicTheHedgehog-Genesis-v0": "contest",
    "SonicTheHedgehog2-Genesis-v0": "contest",
    "SonicAndKnuckles3-Genesis-v0": "contest",
}


def button_table(action_set: str, buttons: Sequence[str] = GENESIS_BUTTONS) -> np.ndarray:
    """``(n_combos, len(buttons))`` int8 0/1 table of the combos of ``action_set``.

    :raises ValueError: unknown ``action_set`` or a button the console lacks.
    """
    if action_set not in ACTION_SETS:
        raise ValueError(f"Unknown action_set {action_set!r}; expected one of {sorted(ACTION_SETS)}")
    table = np.zeros((len(ACTION_SETS[action_set]), len(buttons)), dtype=np.int8)
    for row, combo in enumerate(ACTION_SETS[action_set]):
        for button in combo:
            if button not in buttons:
                raise ValueError(
                    f"Button {button!r} of action set {action_set!r} is not one of {list(buttons)}"
                )
            table[row, list(buttons).index(button)] = 1
    return table


class StochasticFrameSkip(gymnasium.Wrapper, gymnasium.utils.RecordConstructorArgs):
    """Repeat each action ``n`` frames; on the first frame the previous action sticks with ``stickprob``.

    The sticky frame skip of the Retro contest (Nichol et al. 2018, arXiv:1804.03720), as its baseline code
    retro-baselines implements it (``StochasticFrameSkip``): the first agent step after ``reset`` uses its
    action on every frame; afterwards the previous action persists on the first frame with probability
    ``stickprob`` and the new one always runs from the second frame on. Rewards are summed; the loop stops
    at the episode end. Gymnasium's ``StickyAction`` re-draws the stickiness on every frame, so it is not
    used. The draws come from the wrapped env's ``np_random`` (seeded by ``reset(seed=...)``).

    :param n: frames per agent step.
    :param stickprob: probability that the previous action persists on the first frame.
    :raises ValueError: ``n < 1`` or ``stickprob`` outside [0, 1].
    """

    def __init__(self, env: gymnasium.Env, n: int = 4, stickprob: float = 0.25):
        gymnasium.utils.RecordConstructorArgs.__init__(self, n=n, stickprob=stickprob)
        gymnasium.Wrapper.__init__(self, env)
        if int(n) != n or n < 1:
            raise ValueError(f"n must be a positive integer, got {n!r}")
        if not 0.0 <= stickprob <= 1.0:
            raise ValueError(f"stickprob must be in [0, 1], got {stickprob!r}")
        self.n = int(n)
        self.stickprob = float(stickprob)
        self.current_action: Any = None

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        self.current_action = None
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        total_reward = 0.0
        terminated = truncated = False
        for frame in range(self.n):
            if self.current_action is None or frame == 1:
                self.current_action = action
            elif frame == 0 and self.np_random.random() > self.stickprob:
                self.current_action = action
            obs, reward, terminated, truncated, info = self.env.step(self.current_action)
            total_reward += float(reward)
            if terminated or truncated:
                break
        return obs, total_reward, terminated, truncated, info


class RandomStateReset(gymnasium.Wrapper, gymnasium.utils.RecordConstructorArgs):
    """Load a level state drawn uniformly from ``states`` before every reset (wassname's ``RandomGameReset``).

    Must wrap the ``RetroEnv`` directly. The draw uses the env's ``np_random``; ``reset(seed=s)`` seeds it
    first (as ``RetroEnv.reset`` would), so the same seed gives the same level. ``info["state"]`` names the
    level.

    :param states: state names of the game (``stable_retro.data.list_states(game)``).
    :raises ValueError: if ``states`` is empty.
    """

    def __init__(self, env: gymnasium.Env, states: Sequence[str]):
        gymnasium.utils.RecordConstructorArgs.__init__(self, states=list(states))
        gymnasium.Wrapper.__init__(self, env)
        if len(states) == 0:
            raise ValueError("states must name at least one level state")
        self.states = list(states)
        self.state: str | None = None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        if seed is not None:
            from gymnasium.utils import seeding

            self.env.unwrapped.np_random, _ = seeding.np_random(seed)
        self.state = self.states[int(self.np_random.integers(len(self.states)))]
        self.env.unwrapped.load_state(self.state)
        obs, info = self.env.reset(options=options)
        return obs, {**info, "state": self.state}


class RewardScaler(gymnasium.RewardWrapper, gymnasium.utils.RecordConstructorArgs):
    """Multiply the reward by ``scale`` (wassname / retro-baselines ``RewardScaler``).

    Gymnasium's ``TransformReward`` would do with a function, but a recorded function breaks re-making the
    env from its spec (functions compare by identity); a number does not.
    """

    def __init__(self, env: gymnasium.Env, scale: float = 0.005):
        gymnasium.utils.RecordConstructorArgs.__init__(self, scale=scale)
        gymnasium.RewardWrapper.__init__(self, env)
        self.scale = float(scale)

    def reward(self, reward: float) -> float:
        return float(reward) * self.scale


def missing_rom_error(game: str) -> FileNotFoundError:
    """The error raised when ``game``'s ROM has not been imported into stable-retro."""
    return FileNotFoundError(
        f"The ROM of {game} is not imported into stable-retro (Sega ROMs are not distributable). "
        f"Import your copy with: python -m stable_retro.import /path/to/your/roms "
        "(Steam's 'SEGA Mega Drive & Genesis Classics' ROMs: "
        "python -m stable_retro.scripts.import_sega_classics)."
    )


def make_retro_contest(
    game: str = "SonicTheHedgehog-Genesis-v0",
    states: Sequence[str] | None = None,
    scenario: str | None = "default",
    action_set: str = "wassname",
    frame_skip: int = 4,
    stickprob: float = 0.25,
    max_episode_steps: int | None = 4500,
    reward_scale: float = 0.005,
    size: tuple[int, int] = (128, 128),
    render_mode: str | None = "rgb_array",
) -> gymnasium.Env:
    """A stable-retro game with the Retro-contest chain (arXiv:1804.03720) of wassname's Sonic World Models.

    Spaces: observation ``Box(0, 255, (128, 128, 3), uint8)`` RGB (native frame ``(224, 320, 3)``); action
    ``Discrete(10)`` (``"wassname"``) or ``Discrete(7)`` (``"retro_baselines"``), see :data:`ACTION_SETS`.
    One agent step is ``frame_skip`` emulator frames (1/60 s each); reward is the scenario's reward summed
    over the frames times ``reward_scale``; episodes end at the game's done or after ``max_episode_steps``.

    :param game: stable-retro game id, e.g. ``"SonicTheHedgehog2-Genesis-v0"``.
    :param states: level states to draw from at each reset; default every state of the game
        (``stable_retro.data.list_states(game)``: 17 for Sonic 1; the contest's training set has 47 level
        states over the three games, Nichol et al. 2018).
    :param scenario: stable-retro scenario; ``"default"`` picks ``"contest"`` for the Sonic games and the
        game's default scenario otherwise; ``None`` is stable-retro's default.
    :param action_set: ``"wassname"`` (10 combos) or ``"retro_baselines"`` (7 combos).
    :param frame_skip: emulator frames per agent step.
    :param stickprob: sticky-action probability of the first frame.
    :param max_episode_steps: agent steps before ``truncated=True``; ``None`` for none.
    :param reward_scale: reward multiplier.
    :param size: ``(height, width)`` of the observation.
    :param render_mode: ``"rgb_array"`` (``render()`` gives the native ``(224, 320, 3)`` frame), ``"human"``.
    :raises FileNotFoundError: the game's ROM is not imported (see :func:`missing_rom_error`).
    :raises ValueError: unknown ``action_set``, empty ``states``, a state the game does not have.
    :raises ImportError: stable-retro or opencv missing (``pip install 'sb3-mb[retro]'``).
    """
    table = button_table(action_set)  # validate before starting the emulator
    try:
        import cv2  # noqa: F401
        import stable_retro
    except ImportError as error:
        raise ImportError(
            "The Retro environments need stable-retro and opencv: pip install 'sb3-mb[retro]'"
        ) from error

    try:
        stable_retro.data.get_romfile_path(game)
    except FileNotFoundError as error:
        raise missing_rom_error(game) from error

    known_states = stable_retro.data.list_states(game)
    states = list(known_states) if states is None else list(states)
    unknown = sorted(set(states) - set(known_states))
    if not states:
        raise ValueError(f"states must name at least one level state of {game}; known: {known_states}")
    if unknown:
        raise ValueError(f"Unknown states {unknown} for {game}; known: {known_states}")
    if scenario == "default":
        scenario = SCENARIOS.get(game)

    env: gymnasium.Env = stable_retro.make(
        game=game,
        state=states[0],
        scenario=scenario,
        use_restricted_actions=stable_retro.Actions.FILTERED,
        render_mode=render_mode,
    )
    if tuple(env.unwrapped.buttons) != GENESIS_BUTTONS:
        env.close()
        raise ValueError(
            f"{game} has buttons {env.unwrapped.buttons}; the action sets need {GENESIS_BUTTONS}"
        )
    env = RandomStateReset(env, states)
    env = DiscreteActionTable(env, table)
    env = StochasticFrameSkip(env, n=frame_skip, stickprob=stickprob)
    if max_episode_steps is not None:
        env = TimeLimit(env, max_episode_steps=int(max_episode_steps))
    env = RewardScaler(env, scale=reward_scale)
    return ResizeObservation(env, (int(size[0]), int(size[1])))
