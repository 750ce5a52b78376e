"""The linear double integrator (sb3_mb.envs.linear) and its LQR optimum."""

import gymnasium as gym
import numpy as np
import pytest

import sb3_mb  # noqa: F401  (registers the ids)
from sb3_mb.envs.linear import DoubleIntegrator


def _rollout(env, actions):
    env.reset(seed=0)
    total, truncated = 0.0, False
    for a in actions:
        _, reward, terminated, truncated, _ = env.step(np.array([a], dtype=np.float32))
        assert not terminated
        total += reward
    return total, truncated


@pytest.mark.parametrize("position_cost", [1e-3, 1.0, 1e3])
def test_two_steps_reach_the_optimum_and_doing_nothing_costs_the_horizon(position_cost):
    env = DoubleIntegrator(position_cost=position_cost)
    assert _rollout(env, [-1.0, 1.0] + [0.0] * 28) == (0.0, True)
    total, truncated = _rollout(env, [0.0] * 30)
    assert truncated and total == pytest.approx(-30 * position_cost)
    solution = env.lqr()
    assert solution.within_bounds and solution.optimal_return == pytest.approx(0.0, abs=1e-9)
    np.testing.assert_allclose(solution.actions[:2], [-1.0, 1.0], atol=1e-9)


def test_lqr_with_action_cost_beats_every_perturbation():
    env = DoubleIntegrator(action_cost=0.1)
    solution = env.lqr()
    assert solution.within_bounds and -1.0 < solution.optimal_return < 0.0
    replayed, _ = _rollout(env, solution.actions)
    assert replayed == pytest.approx(solution.optimal_return, abs=1e-6)
    rng = np.random.default_rng(0)
    for _ in range(20):  # the optimum: any small change of the action sequence costs more
        perturbed, _ = _rollout(env, solution.actions + 0.05 * rng.standard_normal(30))
        assert perturbed < solution.optimal_return


def test_registered_and_validated():
    env = gym.make("sb3_mb/DoubleIntegrator-v0", position_cost=1e3)
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs, [1.0, 0.0])
    assert env.action_space.shape == (1,) and env.observation_space.shape == (2,)
    with pytest.raises(ValueError, match="DoubleIntegrator"):
        DoubleIntegrator(dt=0.0)
