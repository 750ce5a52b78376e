"""Latent dumps and the linear probe: the probe's rule on known maps, a short dump on cartpole, and the probe
logged during training (LatentProbeCallback)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from point_mass import PointMass
from stable_baselines3.common.logger import KVWriter, Logger

from sb3_mb import PlaNet
from sb3_mb.planet.latents import LatentProbeCallback, collect_latents, linear_probe_r2
from sb3_mb.registry import ALGOS

TINY = ALGOS["planet"].test_kwargs  # the shared tests' sizes
SIZES = TINY["policy_kwargs"]


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
    assert data["posterior_sample"].shape == data["posterior_mean"].shape == (n_steps, SIZES["state_size"])
    assert data["belief"].shape == (n_steps, SIZES["belief_size"])
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


class _Records(KVWriter):
    """Keeps every value the logger dumps."""

    def __init__(self):
        self.dumps: list[dict] = []

    def write(self, key_values, key_excluded, step=0):
        self.dumps.append(dict(key_values))

    def close(self):
        pass


def _cartpole(max_episode_steps=8):
    return gym.make("sb3_mb/CartpoleBalance-v0", action_repeat=8, max_episode_steps=max_episode_steps)


def _probed_run(probe_freq: int | None):
    model = PlaNet("MlpPolicy", _cartpole(), seed=0, **TINY)
    records = _Records()
    model.set_logger(Logger(None, [records]))
    callback = None
    if probe_freq is not None:
        callback = LatentProbeCallback(_cartpole(), probe_freq=probe_freq, n_episodes=2, seed=5)
    model.learn(24, callback=callback, log_interval=1)
    return model, records, callback


def test_latent_probe_callback_logs_finite_r2_and_leaves_training_unchanged():
    model, records, callback = _probed_run(probe_freq=12)
    probed = [dump for dump in records.dumps if "train/probe_r2_belief" in dump]
    assert probed, f"no probe logged; keys dumped: {sorted(set().union(*records.dumps))}"
    for dump in probed:
        assert np.isfinite(dump["train/probe_r2_belief"]) and np.isfinite(dump["train/probe_r2_posterior"])
        assert dump["train/probe_steps"] == 16  # 2 episodes of 8 steps
    assert callback.last_r2["belief"] <= 1.0 and callback.last_r2["posterior"] <= 1.0
    # The probe restores the global RNGs and seeds its own env: training learns the same without it.
    plain, plain_records, _ = _probed_run(probe_freq=None)
    assert not any("train/probe_r2_belief" in dump for dump in plain_records.dumps)
    for (name, a), b in zip(
        model.policy.state_dict().items(), plain.policy.state_dict().values(), strict=True
    ):
        assert th.equal(a, b), f"{name} differs with the probe on"
    with pytest.raises(ValueError, match="probe_freq"):
        LatentProbeCallback(_cartpole(), probe_freq=0)
