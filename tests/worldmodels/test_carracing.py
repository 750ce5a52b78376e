"""CarRacingActions: the original World Models map of C's output onto CarRacing's controls (its
``carracing/model.py``), so that a zero C drives."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from sb3_mb import WorldModels
from sb3_mb.worldmodels import CarRacingActions, make_carracing

pytest.importorskip("Box2D")


@pytest.mark.parametrize(
    "action, controls",
    [
        ([0.0, 0.0, 0.0], [0.0, 0.5, 0.0]),  # a zero C: straight, half gas, no brake
        ([1.0, 1.0, 1.0], [1.0, 1.0, 1.0]),
        ([-1.0, -1.0, -1.0], [-1.0, 0.0, 0.0]),
        ([-0.4, 0.2, 0.6], [-0.4, 0.6, 0.6]),
        ([3.0, -5.0, -0.3], [1.0, 0.0, 0.0]),  # clipped to [-1, 1] first
    ],
)
def test_the_original_map(action, controls):
    env = make_carracing()
    np.testing.assert_allclose(env.action(np.array(action, np.float32)), controls, rtol=0, atol=1e-7)
    assert env.action_space == spaces.Box(-1.0, 1.0, (3,), np.float32)


def test_random_actions_map_into_carracings_controls_with_no_brake_half_the_time():
    env = make_carracing()
    env.action_space.seed(0)
    controls = np.stack([env.action(env.action_space.sample()) for _ in range(2000)])
    assert env.env.action_space.contains(controls.min(0)) and env.env.action_space.contains(controls.max(0))
    assert 0.45 < np.mean(controls[:, 2] == 0.0) < 0.55
    assert 0.45 < controls[:, 1].mean() < 0.55


def test_a_zero_controller_drives_with_the_map_and_barely_moves_without():
    """100 steps of a zero C (CMA-ES's start) at the same track seed: it collects tiles with the original map
    (gas 0.5, no brake; about 48-61 over 150 steps on seeds 0-2) and hardly any through the affine map of
    CarRacing's own bounds (gas 0.5, brake 0.5; 3-7)."""
    returns = {}
    for name, env in (("original", make_carracing()), ("affine", gym.make("CarRacing-v3"))):
        model = WorldModels("CnnPolicy", env, seed=0, policy_kwargs=dict(cnn_depth=4, hidden_size=8))
        model.policy.controller.set_vector(np.zeros(model.policy.controller.n_parameters))
        obs, _ = env.reset(seed=0)
        state, total = None, 0.0
        for _ in range(100):
            action, state = model.predict(obs, state, deterministic=True)
            obs, reward, _, _, _ = env.step(action)
            total += float(reward)
        returns[name] = total
        expected = [0.0, 0.5, 0.0] if name == "original" else [0.0, 0.5, 0.5]
        controls = env.action(action) if name == "original" else action
        np.testing.assert_allclose(controls, expected, atol=1e-6)
    assert returns["original"] > returns["affine"] + 20.0, returns


def test_other_action_spaces_are_refused():
    with pytest.raises(ValueError, match="continuous=True"):
        CarRacingActions(gym.make("CarRacing-v3", continuous=False))
