"""Latent dumps and the linear probe: the probe's rule on known maps, and a short dump on cartpole."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from point_mass import PointMass

from sb3_mb import PlaNet
from sb3_mb.planet.latents import collect_latents, linear_probe_r2

TINY = dict(
    buffer_size=2000,
    batch_size=4,
    sequence_length=8,
    seed_episodes=1,
    updates_per_episode=2,
    policy_kwargs=dict(
        belief_size=8,
        state_size=4,
        hidden_size=8,
        planning_horizon=3,
        n_candidates=12,
        n_elites=3,
        n_iterations=2,
        mlp_hidden_sizes=(8,),
        reward_hidden_sizes=(8,),
    ),
)


def test_linear_probe_rule():
    rng = np.random.default_rng(0)
    features = rng.normal(size=(2000, 6))
    weights, bias = rng.normal(size=(6, 3)), rng.normal(size=3)
    r2 = linear_probe_r2(features, features @ weights + bias)
    assert r2.shape == (3,)
    np.testing.assert_allclose(r2, 1.0, atol=1e-9)
    noise = linear_probe_r2(features, rng.normal(size=(2000, 2)))
    assert noise.shape == (2,) and np.all(np.abs(noise) < 0.05)
    assert linear_probe_r2(features, features[:, 0]).shape == (1,)
    with pytest.raises(ValueError, match="holdout"):
        linear_probe_r2(features, features, holdout=1.0)


class PhysicsLog(gym.Wrapper):
    """Remembers the physical state (qpos, qvel) after every reset and step, as the env returns it."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        self.log: list[np.ndarray] = []

    def _record(self) -> None:
        data = self.env.unwrapped.physics.data
        self.log.append(np.concatenate([data.qpos, data.qvel]).copy())

    def reset(self, **kwargs):
        result = self.env.reset(**kwargs)
        self._record()
        return result

    def step(self, action):
        result = self.env.step(action)
        terminated, truncated = result[2], result[3]
        if not (terminated or truncated):  # the state after the last step is never read by the agent
            self._record()
        return result


def test_collect_latents_cartpole(tmp_path):
    env = PhysicsLog(gym.make("sb3_mb/CartpoleBalance-v0", action_repeat=8, max_episode_steps=5))
    env.reset(seed=0)
    model = PlaNet("MlpPolicy", env, seed=0, **TINY)
    path = tmp_path / "latents.npz"
    data = collect_latents(model, env, n_episodes=2, path=path)
    n_steps = 10
    assert set(data) == {
        "posterior_sample",
        "posterior_mean",
        "belief",
        "physical_state",
        "action",
        "episode",
    }
    assert data["posterior_sample"].shape == data["posterior_mean"].shape == (n_steps, 4)
    assert data["belief"].shape == (n_steps, 8)
    physics = env.unwrapped.physics
    assert data["physical_state"].shape == (n_steps, physics.model.nq + physics.model.nv)
    np.testing.assert_array_equal(data["episode"], [0] * 5 + [1] * 5)
    np.testing.assert_array_equal(data["physical_state"], np.stack(env.log[-n_steps:]))
    assert not np.allclose(data["physical_state"][0], data["physical_state"][4])  # the cart moved
    with np.load(path) as loaded:
        assert set(loaded.files) == set(data)
        for key, value in data.items():
            np.testing.assert_array_equal(loaded[key], value)
    assert [p.name for p in tmp_path.iterdir()] == ["latents.npz"]  # no temporary file left beside it


def test_collect_latents_needs_dm_control():
    env = PointMass()
    model = PlaNet("MlpPolicy", env, seed=0, **TINY)
    with pytest.raises(ValueError, match="dm_control"):
        collect_latents(model, env, n_episodes=1)
    with pytest.raises(ValueError, match="n_episodes"):
        collect_latents(model, env, n_episodes=0)
