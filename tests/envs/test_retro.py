"""Retro-contest options: level splits, AllowBacktracking, time limits, scripted exploration.

Sonic ROMs are not distributable: the split draws are checked on a stub stable-retro, the chain on Airstriker
(its ROM ships with stable-retro).
"""

from __future__ import annotations

import sys
import types

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces

from sb3_mb.envs.retro import (
    CONTEST_MAX_EPISODE_STEPS,
    GENESIS_BUTTONS,
    SONIC_SPLITS,
    WASSNAME_MAX_EPISODE_STEPS,
    AllowBacktracking,
    ScriptedExploration,
    make_retro_contest,
    split_states,
)

SONIC_GAMES = ("SonicTheHedgehog-Genesis-v0", "SonicTheHedgehog2-Genesis-v0", "SonicAndKnuckles3-Genesis-v0")


def test_contest_splits_have_47_and_11_disjoint_states_of_the_three_games():
    import stable_retro

    train, validation = set(SONIC_SPLITS["train"]), set(SONIC_SPLITS["validation"])
    assert len(SONIC_SPLITS["train"]) == len(train) == 47
    assert len(SONIC_SPLITS["validation"]) == len(validation) == 11
    assert not train & validation
    every_state = {(game, state) for game in SONIC_GAMES for state in stable_retro.data.list_states(game)}
    assert train | validation == every_state  # 58 states, each a real stable-retro state
    assert [len(split_states(game, "validation")) for game in SONIC_GAMES] == [4, 3, 4]
    assert "GreenHillZone.Act2" in split_states(SONIC_GAMES[0], "validation")
    assert "GreenHillZone.Act1" in split_states(SONIC_GAMES[0], "train")


def test_split_errors():
    with pytest.raises(ValueError, match="Unknown split"):
        split_states(SONIC_GAMES[0], "test")
    with pytest.raises(ValueError, match="no level in the contest"):
        split_states("Airstriker-Genesis-v0", "train")


class _StubRetro(gymnasium.Env):
    """What make_retro_contest needs of stable-retro's RetroEnv: records the loaded states."""

    observation_space = spaces.Box(0, 255, (224, 320, 3), np.uint8)
    action_space = spaces.MultiBinary(12)
    buttons = GENESIS_BUTTONS

    def __init__(self):
        self.loaded: list[str] = []
        self.x = 0.0

    def load_state(self, state):
        self.loaded.append(state)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros((224, 320, 3), np.uint8), {}

    def step(self, action):
        return np.zeros((224, 320, 3), np.uint8), 1.0, False, False, {}


@pytest.fixture
def stub_retro(monkeypatch):
    import stable_retro

    made: list[_StubRetro] = []
    list_states = stable_retro.data.list_states

    def make(game, state, scenario, use_restricted_actions, render_mode):
        made.append(_StubRetro())
        return made[-1]

    data = types.SimpleNamespace(get_romfile_path=lambda game: "/stub.md", list_states=list_states)
    stub = types.SimpleNamespace(data=data, make=make, Actions=types.SimpleNamespace(FILTERED=1))
    monkeypatch.setitem(sys.modules, "stable_retro", stub)
    return made


@pytest.mark.parametrize("split", ["train", "validation"])
def test_a_reset_draws_only_from_the_chosen_split(stub_retro, split):
    game = SONIC_GAMES[0]
    env = make_retro_contest(game, split=split, size=(32, 32))
    drawn = {env.reset(seed=seed)[1]["state"] for seed in range(60)}
    assert drawn == set(split_states(game, split))  # every level of the split, nothing else
    assert set(stub_retro[-1].loaded) == drawn


def test_states_outside_the_split_are_refused(stub_retro):
    with pytest.raises(ValueError, match="not in the contest's 'train' split"):
        make_retro_contest(SONIC_GAMES[0], states=["GreenHillZone.Act2"])  # a validation level
    env = make_retro_contest(SONIC_GAMES[0], states=["GreenHillZone.Act2"], split="validation")
    assert env.reset(seed=0)[1]["state"] == "GreenHillZone.Act2"
    env = make_retro_contest(SONIC_GAMES[0], split=None)  # every state of the game
    assert len({env.reset(seed=seed)[1]["state"] for seed in range(200)}) == 17


def test_time_limits_and_backtracking_options(stub_retro):
    assert (CONTEST_MAX_EPISODE_STEPS, WASSNAME_MAX_EPISODE_STEPS) == (4500, 4000)
    env = make_retro_contest(SONIC_GAMES[1], max_episode_steps=WASSNAME_MAX_EPISODE_STEPS)
    limits = []
    wrapper = env
    while hasattr(wrapper, "env"):
        # By name: importing rl_zoo3 (the zoo tests) replaces gymnasium.wrappers.TimeLimit by its subclass.
        if type(wrapper).__name__ == "TimeLimit":
            limits.append(wrapper._max_episode_steps)
        wrapper = wrapper.env
    assert limits == [4000]
    env = make_retro_contest(SONIC_GAMES[1], allow_backtracking=True, reward_scale=1.0, stickprob=0.0)
    env.reset(seed=0)
    assert env.step(0)[1] == 4.0  # 4 frames of reward 1: new progress


def test_allow_backtracking_rewards_only_new_progress():
    class Moves(gymnasium.Env):
        observation_space = spaces.Discrete(1)
        action_space = spaces.Box(-10, 10, ())

        def reset(self, *, seed=None, options=None):
            return 0, {}

        def step(self, action):
            return 0, float(action), False, False, {}

    env = AllowBacktracking(Moves())
    env.reset()
    rewards = [env.step(dx)[1] for dx in (3.0, -2.0, 1.0, 2.0, -5.0, 6.0)]
    assert rewards == [3.0, 0.0, 0.0, 1.0, 0.0, 1.0]  # x: 3, 1, 2, 4, -1, 5; best: 3, 3, 3, 4, 4, 5
    env.reset()
    assert env.step(1.0)[1] == 1.0


def test_scripted_exploration_follows_the_fork_rule():
    explorer = ScriptedExploration(seed=0)
    assert (explorer.right, explorer.right_jump, explorer.n_actions) == (2, 8, 10)
    actions = [explorer.action(t) for t in range(1, 3001)]
    for t, action in enumerate(actions, start=1):
        if t % 3 == 0:
            assert action == 2
        elif t % 10 == 0:
            assert action == 8
    free = [a for t, a in enumerate(actions, start=1) if t % 3 and t % 10]
    assert set(free) == set(range(10))  # uniformly random otherwise
    # as a policy: counters per env, restarted by episode_start
    obs = np.zeros((2, 4))
    action, state = explorer.predict(obs)
    action, state = explorer.predict(obs, state)
    action, state = explorer.predict(obs, state, episode_start=np.array([False, True]))
    np.testing.assert_array_equal(state.t, [3, 1])
    assert action[0] == 2
    with pytest.raises(ValueError, match="RIGHT\\+B"):
        ScriptedExploration("retro_baselines")


def test_missing_sonic_rom_says_how_to_import_it():
    import stable_retro

    try:
        stable_retro.data.get_romfile_path(SONIC_GAMES[0])
        pytest.skip("a Sonic ROM is imported here")
    except FileNotFoundError:
        pass
    with pytest.raises(FileNotFoundError, match="python -m stable_retro.import"):
        gymnasium.make("sb3_mb/SonicTheHedgehog-v0", split="validation")


def test_airstriker_chain_with_the_options():
    env = gymnasium.make(
        "sb3_mb/AirstrikerContest-v0", allow_backtracking=True, max_episode_steps=5, size=(32, 32)
    )
    try:
        obs, info = env.reset(seed=0)
        assert obs.shape == (32, 32, 3) and info["state"] == "Level1"
        explorer, state = ScriptedExploration(seed=0), None
        for _ in range(5):
            action, state = explorer.predict(obs[None], state)
            obs, reward, terminated, truncated, _ = env.step(int(action[0]))
            assert reward >= 0.0  # AllowBacktracking never penalises
        assert truncated
    finally:
        env.close()
