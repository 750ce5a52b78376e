"""Typed recurrent state (sb3_mb.common.states) and the env-first constructor (sb3_mb.common.utils)."""

from typing import NamedTuple

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env

from sb3_mb.common.states import StateSpec
from sb3_mb.common.utils import default_policy, resolve_policy_and_env


class ToyState(NamedTuple):
    hidden: np.ndarray
    plan: np.ndarray


SPEC = StateSpec(ToyState, {"hidden": (3,), "plan": (4, 2)}, owner="Toy")


def _filled(n_envs):
    return ToyState(np.arange(n_envs * 3, dtype=np.float32).reshape(n_envs, 3) + 1, np.ones((n_envs, 4, 2)))


def test_zeros_have_the_env_dimension_first():
    state = SPEC.zeros(5)
    assert isinstance(state, ToyState)
    assert state.hidden.shape == (5, 3) and state.plan.shape == (5, 4, 2)
    assert state.hidden.dtype == np.float32 and not state.hidden.any() and not state.plan.any()


def test_reset_zeroes_only_the_starting_envs():
    state = _filled(3)
    reset = SPEC.reset(state, np.array([False, True, False]))
    assert isinstance(reset, ToyState)
    np.testing.assert_array_equal(reset.hidden[[0, 2]], state.hidden[[0, 2]])
    assert not reset.hidden[1].any() and not reset.plan[1].any() and reset.plan[[0, 2]].all()
    assert state.hidden[1].all(), "reset must not modify the caller's arrays"
    assert SPEC.reset(state, None) is state
    assert SPEC.reset(state, np.zeros(3, dtype=bool)) is state


def test_check_accepts_plain_tuples_and_names_the_wrong_field():
    state = _filled(2)
    checked = SPEC.check(tuple(state), n_envs=2)
    assert isinstance(checked, ToyState) and checked.hidden is state.hidden
    with pytest.raises(ValueError, match=r"Toy's state field 'hidden' must have shape \(3, 3\)"):
        SPEC.check(state, n_envs=3)  # a state carried over from another number of envs
    with pytest.raises(ValueError, match="2 fields"):
        SPEC.check(state[:1], n_envs=2)


def test_prepare_starts_from_zeros_and_checks_episode_start():
    state = SPEC.prepare(None, None, n_envs=2)
    assert not state.hidden.any()
    carried = SPEC.prepare(_filled(2), np.array([True, False]), n_envs=2)
    assert not carried.hidden[0].any() and carried.hidden[1].all()
    with pytest.raises(ValueError, match="episode_start has 3 entries, expected one per env \\(2\\)"):
        SPEC.prepare(_filled(2), np.ones(3, dtype=bool), n_envs=2)
    with pytest.raises(ValueError, match="episode_start has 1 entries"):
        SPEC.prepare(None, np.ones(1, dtype=bool), n_envs=2)


def test_spec_must_name_the_fields():
    with pytest.raises(ValueError, match="fields"):
        StateSpec(ToyState, {"hidden": (3,)}, owner="Toy")


ALIASES = {"MlpPolicy": object, "CnnPolicy": object}


def test_default_policy_follows_the_observation_space():
    image = spaces.Box(0, 255, (64, 64, 3), np.uint8)
    assert default_policy(image, ALIASES) == "CnnPolicy"
    assert default_policy(spaces.Box(0, 255, (3, 64, 64), np.uint8), ALIASES) == "CnnPolicy"
    assert default_policy(spaces.Box(-1, 1, (5,), np.float32), ALIASES) == "MlpPolicy"
    assert (
        default_policy(image, {"MlpPolicy": object}) == "MlpPolicy"
    )  # no CnnPolicy: the space check decides


def test_resolve_policy_and_env():
    policy, env = resolve_policy_and_env("Pendulum-v1", None, ALIASES, "Algo")
    assert policy == "MlpPolicy" and isinstance(env, gym.Env) and env.spec.id == "Pendulum-v1"
    vec = make_vec_env("Pendulum-v1", n_envs=2)
    assert resolve_policy_and_env(vec, None, ALIASES, "Algo") == ("MlpPolicy", vec)
    plain = gym.make("Pendulum-v1")
    assert resolve_policy_and_env(plain, None, ALIASES, "Algo") == ("MlpPolicy", plain)
    # the SB3 form is unchanged; an id given as env is made here
    policy, env = resolve_policy_and_env("CnnPolicy", "Pendulum-v1", ALIASES, "Algo")
    assert policy == "CnnPolicy" and isinstance(env, gym.Env)
    with pytest.raises(ValueError, match="neither a policy of Algo"):
        resolve_policy_and_env("NoSuchThing-v0", None, ALIASES, "Algo")
    with pytest.raises(ValueError, match="needs an environment"):
        resolve_policy_and_env("MlpPolicy", None, ALIASES, "Algo")
    with pytest.raises(ValueError, match="takes a policy"):
        resolve_policy_and_env(3, None, ALIASES, "Algo")
