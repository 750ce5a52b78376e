"""Sonic (and Airstriker) through stable-retro with the Retro-contest wrapper chain.

Sources: the Retro contest's Sonic benchmark (Nichol et al. 2018, "Gotta Learn Fast: A New Benchmark for
Generalization in RL", arXiv:1804.03720: level states, sticky frame skip, 4500-step episodes, x-progress
reward) and the settings of wassname's Sonic World Models, a World Models agent (after Ha & Schmidhuber
2018, arXiv:1803.10122) for the contest released as code without a paper (10 button combos, reward
scale, 128x128 frames).

Chain built by :func:`make_retro_contest` (inner to outer), as composable wrappers::

    stable_retro.make(game, state, scenario, use_restricted_actions=FILTERED, render_mode="rgb_array")
    -> RandomStateReset(states)              # a random level state of the game's split at every reset
    -> DiscreteActionTable(button combos)    # "wassname" 10 combos or "retro_baselines" 7 combos
    -> StochasticFrameSkip(n=4, stickprob=0.25)
    -> TimeLimit(4500)                       # the contest: 4500 agent steps = 18 000 frames (wassname: 4000)
    [-> AllowBacktracking()]                 # optional: reward = increase of the best x progress
    -> RewardScaler(0.005)                   # wassname's RewardScaler (retro-baselines: 0.01)
    -> ResizeObservation((128, 128))         # wassname's WarpFrame: 128x128 RGB, cv2.INTER_AREA

Observations stay ``uint8`` so SB3 recognises images; wassname's ``ScaledFloatFrame`` (/255) is left to the
model's preprocessing (SB3 divides image observations by 255 itself).

Level splits (:data:`SONIC_SPLITS`): the contest's training split (47 level states over the three games) and
its validation split (11); a Sonic env draws from the training states of its game by default, so the
validation levels stay out of training (``split="validation"`` to evaluate on them, ``split=None`` for every
state of the game). :class:`ScriptedExploration` is the fork's data-collection policy (spec 4.4).

The Sonic ROMs are not distributable; import one with ``python -m stable_retro.import /path/to/roms``.
Only ``Airstriker-Genesis-v0`` ships with stable-retro, which is why ``sb3_mb/AirstrikerContest-v0`` exists:
it runs the same chain (same 12 Genesis buttons, one state ``Level1``) so the chain can be tested anywhere.

stable-retro allows **one emulator per process**: ``close()`` an env before making another one, and use
``SubprocVecEnv`` for several.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Sequence

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

#: Episode length of the contest in agent steps (4500 steps = 18 000 frames at frame skip 4; Nichol et al.
#: 2018).
CONTEST_MAX_EPISODE_STEPS = 4500
#: Episode length of wassname's training runs (``TimeLimit(max_episode_steps=4000)``; spec 4.3).
WASSNAME_MAX_EPISODE_STEPS = 4000

#: The Retro contest's level splits, ``(game, state)`` in the order of the contest's ``sonic-train.csv`` (47
#: states) and ``sonic-validation.csv`` (11), as shipped with the contest and copied into wassname's
#: ``data/sonic_env/``. Game ids are stable-retro's (``-v0``). Disjoint; together every state of the three
#: games (58).
SONIC_SPLITS: dict[str, tuple[tuple[str, str], ...]] = {
    "train": (
        ("SonicTheHedgehog-Genesis-v0", "SpringYardZone.Act3"),
        ("SonicTheHedgehog-Genesis-v0", "SpringYardZone.Act2"),
        ("SonicTheHedgehog-Genesis-v0", "GreenHillZone.Act3"),
        ("SonicTheHedgehog-Genesis-v0", "GreenHillZone.Act1"),
        ("SonicTheHedgehog-Genesis-v0", "StarLightZone.Act2"),
        ("SonicTheHedgehog-Genesis-v0", "StarLightZone.Act1"),
        ("SonicTheHedgehog-Genesis-v0", "MarbleZone.Act2"),
        ("SonicTheHedgehog-Genesis-v0", "MarbleZone.Act1"),
        ("SonicTheHedgehog-Genesis-v0", "MarbleZone.Act3"),
        ("SonicTheHedgehog-Genesis-v0", "ScrapBrainZone.Act2"),
        ("SonicTheHedgehog-Genesis-v0", "LabyrinthZone.Act2"),
        ("SonicTheHedgehog-Genesis-v0", "LabyrinthZone.Act1"),
        ("SonicTheHedgehog-Genesis-v0", "LabyrinthZone.Act3"),
        ("SonicTheHedgehog2-Genesis-v0", "EmeraldHillZone.Act1"),
        ("SonicTheHedgehog2-Genesis-v0", "EmeraldHillZone.Act2"),
        ("SonicTheHedgehog2-Genesis-v0", "ChemicalPlantZone.Act2"),
        ("SonicTheHedgehog2-Genesis-v0", "ChemicalPlantZone.Act1"),
        ("SonicTheHedgehog2-Genesis-v0", "MetropolisZone.Act1"),
        ("SonicTheHedgehog2-Genesis-v0", "MetropolisZone.Act2"),
        ("SonicTheHedgehog2-Genesis-v0", "OilOceanZone.Act1"),
        ("SonicTheHedgehog2-Genesis-v0", "OilOceanZone.Act2"),
        ("SonicTheHedgehog2-Genesis-v0", "MysticCaveZone.Act2"),
        ("SonicTheHedgehog2-Genesis-v0", "MysticCaveZone.Act1"),
        ("SonicTheHedgehog2-Genesis-v0", "HillTopZone.Act1"),
        ("SonicTheHedgehog2-Genesis-v0", "CasinoNightZone.Act1"),
        ("SonicTheHedgehog2-Genesis-v0", "WingFortressZone"),
        ("SonicTheHedgehog2-Genesis-v0", "AquaticRuinZone.Act2"),
        ("SonicTheHedgehog2-Genesis-v0", "AquaticRuinZone.Act1"),
        ("SonicAndKnuckles3-Genesis-v0", "LavaReefZone.Act2"),
        ("SonicAndKnuckles3-Genesis-v0", "CarnivalNightZone.Act2"),
        ("SonicAndKnuckles3-Genesis-v0", "CarnivalNightZone.Act1"),
        ("SonicAndKnuckles3-Genesis-v0", "MarbleGardenZone.Act1"),
        ("SonicAndKnuckles3-Genesis-v0", "MarbleGardenZone.Act2"),
        ("SonicAndKnuckles3-Genesis-v0", "MushroomHillZone.Act2"),
        ("SonicAndKnuckles3-Genesis-v0", "MushroomHillZone.Act1"),
        ("SonicAndKnuckles3-Genesis-v0", "DeathEggZone.Act1"),
        ("SonicAndKnuckles3-Genesis-v0", "DeathEggZone.Act2"),
        ("SonicAndKnuckles3-Genesis-v0", "FlyingBatteryZone.Act1"),
        ("SonicAndKnuckles3-Genesis-v0", "SandopolisZone.Act1"),
        ("SonicAndKnuckles3-Genesis-v0", "SandopolisZone.Act2"),
        ("SonicAndKnuckles3-Genesis-v0", "HiddenPalaceZone"),
        ("SonicAndKnuckles3-Genesis-v0", "HydrocityZone.Act2"),
        ("SonicAndKnuckles3-Genesis-v0", "IcecapZone.Act1"),
        ("SonicAndKnuckles3-Genesis-v0", "IcecapZone.Act2"),
        ("SonicAndKnuckles3-Genesis-v0", "AngelIslandZone.Act1"),
        ("SonicAndKnuckles3-Genesis-v0", "LaunchBaseZone.Act2"),
        ("SonicAndKnuckles3-Genesis-v0", "LaunchBaseZone.Act1"),
    ),
    "validation": (
        ("SonicTheHedgehog-Genesis-v0", "SpringYardZone.Act1"),
        ("SonicTheHedgehog-Genesis-v0", "GreenHillZone.Act2"),
        ("SonicTheHedgehog-Genesis-v0", "StarLightZone.Act3"),
        ("SonicTheHedgehog-Genesis-v0", "ScrapBrainZone.Act1"),
        ("SonicTheHedgehog2-Genesis-v0", "MetropolisZone.Act3"),
        ("SonicTheHedgehog2-Genesis-v0", "HillTopZone.Act2"),
        ("SonicTheHedgehog2-Genesis-v0", "CasinoNightZone.Act2"),
        ("SonicAndKnuckles3-Genesis-v0", "LavaReefZone.Act1"),
        ("SonicAndKnuckles3-Genesis-v0", "FlyingBatteryZone.Act2"),
        ("SonicAndKnuckles3-Genesis-v0", "HydrocityZone.Act1"),
        ("SonicAndKnuckles3-Genesis-v0", "AngelIslandZone.Act2"),
    ),
}


def split_states(game: str, split: str) -> list[str]:
    """The level states of ``game`` in the contest's ``split`` (``"train"`` or ``"validation"``).

    :raises ValueError: for an unknown split, or a game with no state in the contest's splits.
    """
    if split not in SONIC_SPLITS:
        raise ValueError(f"Unknown split {split!r}; expected one of {sorted(SONIC_SPLITS)} or None")
    states = [state for name, state in SONIC_SPLITS[split] if name == game]
    if not states:
        games = sorted({name for name, _ in SONIC_SPLITS[split]})
        raise ValueError(
            f"{game} has no level in the contest's {split!r} split (games: {games}); use split=None"
        )
    return states


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


class AllowBacktracking(gymnasium.Wrapper, gymnasium.utils.RecordConstructorArgs):
    """Reward only new progress: ``max(0, x - best x so far)``, ``x`` the episode's summed reward.

    retro-baselines' ``AllowBacktracking`` (the contest's PPO baseline, Nichol et al. 2018): with the
    x-progress reward, going back and forth is not penalised, so the agent may backtrack past obstacles.
    wassname's ``05_test.py`` uses it (its training has it commented out). Apply it to the unscaled reward.
    """

    def __init__(self, env: gymnasium.Env):
        gymnasium.utils.RecordConstructorArgs.__init__(self)
        gymnasium.Wrapper.__init__(self, env)
        self.current_x = self.max_x = 0.0

    def reset(self, **kwargs: Any) -> tuple[Any, dict]:
        self.current_x = self.max_x = 0.0
        return self.env.reset(**kwargs)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.current_x += float(reward)
        reward = max(0.0, self.current_x - self.max_x)
        self.max_x = max(self.max_x, self.current_x)
        return obs, reward, terminated, truncated, info


class ScriptedExplorationState(NamedTuple):
    """The step counter of :class:`ScriptedExploration`: ``t (n_envs,)`` int64, steps taken this episode."""

    t: np.ndarray


class ScriptedExploration:
    """The fork's scripted exploration for data collection (``01_generate_data.py``; spec 4.4).

    At the agent's ``t``-th step of an episode (1-based): ``t % 3 == 0`` -> RIGHT; else ``t % 10 == 0`` ->
    RIGHT+B (run and jump; the fork's comment says "up, right"); else a uniformly random action. The fork cuts
    its episodes at 300 steps (``make_retro_contest(max_episode_steps=300)``).

    Usable like an SB3 policy: ``predict(obs, state, episode_start)`` carries the counter
    (:class:`ScriptedExplorationState`), so ``evaluate_policy``-style loops collect with it.

    :param action_set: the env's action set (:data:`ACTION_SETS`), for the indices of RIGHT and RIGHT+B
        (``"wassname"``: 2 and 8).
    :param seed: seed of the random actions.
    :raises ValueError: if the action set lacks RIGHT or RIGHT+B (``"retro_baselines"`` has no RIGHT+B).
    """

    def __init__(self, action_set: str = "wassname", seed: int | None = None):
        if action_set not in ACTION_SETS:
            raise ValueError(f"Unknown action_set {action_set!r}; expected one of {sorted(ACTION_SETS)}")
        combos = [frozenset(combo) for combo in ACTION_SETS[action_set]]
        missing = [
            name for name, combo in (("RIGHT", {"RIGHT"}), ("RIGHT+B", {"RIGHT", "B"})) if combo not in combos
        ]
        if missing:
            raise ValueError(f"action set {action_set!r} has no {' or '.join(missing)} combo")
        self.n_actions = len(combos)
        self.right = combos.index(frozenset({"RIGHT"}))
        self.right_jump = combos.index(frozenset({"RIGHT", "B"}))
        self.rng = np.random.default_rng(seed)

    def action(self, t: int) -> int:
        """The action at the ``t``-th step of an episode (1-based)."""
        if t % 3 == 0:
            return self.right
        if t % 10 == 0:
            return self.right_jump
        return int(self.rng.integers(self.n_actions))

    def predict(
        self,
        observation: np.ndarray,
        state: ScriptedExplorationState | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, ScriptedExplorationState]:
        """Actions ``(n_envs,)`` for a batch of observations (only their number is read) and the next counter.

        :param state: the counters; None: new episodes.
        :param episode_start: ``(n_envs,)``, restarts the counters.
        :param deterministic: ignored (the script is random by design).
        """
        n = len(observation)
        t = np.zeros(n, dtype=np.int64) if state is None else np.array(state.t, dtype=np.int64)
        if episode_start is not None:
            t[np.asarray(episode_start, dtype=bool)] = 0
        t += 1
        return np.array([self.action(int(step)) for step in t]), ScriptedExplorationState(t)


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
    split: str | None = "train",
    scenario: str | None = "default",
    action_set: str = "wassname",
    frame_skip: int = 4,
    stickprob: float = 0.25,
    max_episode_steps: int | None = CONTEST_MAX_EPISODE_STEPS,
    allow_backtracking: bool = False,
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
    :param states: level states to draw from at each reset; default the game's states in ``split``. With a
        ``split``, every state must belong to it (a validation level in training is refused).
    :param split: ``"train"`` (the contest's 47 training states over the three Sonic games,
        :data:`SONIC_SPLITS`), ``"validation"`` (its 11 held-out states) or None (every state of the game,
        ``stable_retro.data.list_states(game)``: 17 for Sonic 1; games outside the contest need None).
    :param scenario: stable-retro scenario; ``"default"`` picks ``"contest"`` for the Sonic games and the
        game's default scenario otherwise; ``None`` is stable-retro's default.
    :param action_set: ``"wassname"`` (10 combos) or ``"retro_baselines"`` (7 combos).
    :param frame_skip: emulator frames per agent step.
    :param stickprob: sticky-action probability of the first frame.
    :param max_episode_steps: agent steps before ``truncated=True`` (the contest: 4500; wassname's runs:
        :data:`WASSNAME_MAX_EPISODE_STEPS` = 4000); ``None`` for none.
    :param allow_backtracking: reward only new x progress (:class:`AllowBacktracking`, before the scaling).
    :param reward_scale: reward multiplier.
    :param size: ``(height, width)`` of the observation.
    :param render_mode: ``"rgb_array"`` (``render()`` gives the native ``(224, 320, 3)`` frame), ``"human"``.
    :raises FileNotFoundError: the game's ROM is not imported (see :func:`missing_rom_error`).
    :raises ValueError: unknown ``action_set`` or ``split``, a game outside the split, empty ``states``, a
        state the game does not have or outside the split.
    :raises ImportError: stable-retro or opencv missing (``pip install 'sb3-mb[retro]'``).
    """
    table = button_table(action_set)  # validate before starting the emulator
    allowed = split_states(game, split) if split is not None else None
    if allowed is not None and states is not None:
        outside = sorted(set(states) - set(allowed))
        if outside:
            raise ValueError(
                f"States {outside} of {game} are not in the contest's {split!r} split: {allowed}"
            )
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
    if states is None:
        states = list(known_states) if allowed is None else allowed
    states = list(states)
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
    if allow_backtracking:
        env = AllowBacktracking(env)
    env = RewardScaler(env, scale=reward_scale)
    return ResizeObservation(env, (int(size[0]), int(size[1])))
