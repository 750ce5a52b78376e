"""CEM planners: optimum of known objectives, batching, warm start, determinism, errors."""

import numpy as np
import pytest
import torch as th

from sb3_mb.common.planners import CategoricalCEM, GaussianCEM, shift_plan


def quadratic(target: th.Tensor):
    """Return -||a - a*||^2 summed over the horizon, for targets (batch, horizon, action_dim)."""
    calls = []

    def objective(actions: th.Tensor) -> th.Tensor:
        calls.append(tuple(actions.shape))
        return -((actions - target[:, None]) ** 2).sum(dim=(-1, -2))

    return objective, calls


def test_gaussian_cem_finds_quadratic_optimum_batched():
    g = th.Generator().manual_seed(0)
    cem = GaussianCEM(planning_horizon=12, action_dim=1)  # paper defaults: 1000 / 100 / 10
    target = th.rand((5, 12, 1), generator=g) * 1.6 - 0.8  # a* inside [-1, 1], one per problem
    objective, calls = quadratic(target)
    result = cem.plan(objective, cem.initial_plan(5), generator=g)
    assert calls == [(5, 1000, 12, 1)] * 10  # all candidates of all problems in one call per iteration
    assert (result.plan - target).abs().max() < 1e-2
    th.testing.assert_close(result.action, result.plan[:, 0])
    assert result.elite_returns.shape == (10, 5) and result.candidate_returns.shape == (10, 5)
    assert th.all(result.elite_returns[-1] > result.elite_returns[0])
    assert th.all(result.candidate_returns[-1] > result.candidate_returns[0])
    assert th.all(result.best_return >= result.planned_return) and th.all(result.planned_return > -1e-2)


def test_gaussian_cem_multi_dim_action_and_bounds():
    g = th.Generator().manual_seed(1)
    cem = GaussianCEM(planning_horizon=4, action_dim=2, action_low=[-1, 0], action_high=[1, 0.5])
    target = th.tensor([[[0.3, 0.2]] * 4, [[-0.5, 0.9]] * 4])  # second: dim 1 outside the bound
    objective, _ = quadratic(target)
    seen = []
    result = cem.plan(
        lambda a: (seen.append(a), objective(a))[1], np.zeros((2, 4, 2), np.float32), generator=g
    )
    candidates = th.stack(seen)
    assert (
        candidates[..., 0].min() >= -1 and candidates[..., 1].min() >= 0 and candidates[..., 1].max() <= 0.5
    )
    expected = th.tensor([[0.3, 0.2], [-0.5, 0.5]])
    assert (result.action - expected).abs().max() < 1e-2


def test_categorical_cem_finds_best_sequence():
    g = th.Generator().manual_seed(2)
    horizon, n_actions, batch = 6, 5, 3
    scores = th.randn((batch, horizon, n_actions), generator=g)  # per-step score table
    cem = CategoricalCEM(planning_horizon=horizon, n_actions=n_actions)

    def objective(one_hot: th.Tensor) -> th.Tensor:
        assert one_hot.shape == (batch, 1000, horizon, n_actions)
        assert th.all(one_hot.sum(-1) == 1)
        return (one_hot * scores[:, None]).sum(dim=(-1, -2))

    result = cem.plan(objective, cem.initial_plan(batch), generator=g)
    best = scores.argmax(-1)  # (batch, horizon)
    th.testing.assert_close(result.action_index, best[:, 0])
    th.testing.assert_close(result.action, th.nn.functional.one_hot(best[:, 0], n_actions).float())
    th.testing.assert_close(result.plan.argmax(-1), best)
    th.testing.assert_close(result.best_return, scores.max(-1).values.sum(-1))
    assert result.plan.shape == result.warm_start.shape == (batch, horizon, n_actions)


def test_warm_start_shift():
    plan = np.arange(2 * 3 * 2, dtype=np.float32).reshape(2, 3, 2) + 1
    shifted = shift_plan(plan)
    np.testing.assert_array_equal(shifted[:, :2], plan[:, 1:])
    assert np.all(shifted[:, 2] == 0)
    th.testing.assert_close(shift_plan(th.as_tensor(plan)), th.as_tensor(shifted))

    g = th.Generator().manual_seed(3)
    cem = GaussianCEM(planning_horizon=5, action_dim=1, n_candidates=200, n_elites=20, n_iterations=3)
    objective, _ = quadratic(th.full((2, 5, 1), 0.5))
    result = cem.plan(objective, cem.initial_plan(2), generator=g)
    th.testing.assert_close(result.warm_start[:, :-1], result.plan[:, 1:])
    assert th.all(result.warm_start[:, -1] == 0)


def test_warm_start_is_used_and_std_reset():
    """With one iteration and n_elites = n_candidates the new mean is the mean of the clipped samples."""
    cem = GaussianCEM(planning_horizon=3, action_dim=1, n_candidates=20000, n_elites=20000, n_iterations=1)
    init = np.array([[[0.4], [-0.3], [0.0]]], np.float32)
    result = cem.plan(lambda a: a.sum(dim=(-1, -2)), init, generator=th.Generator().manual_seed(4))
    # E[clip(N(m, 1), -1, 1)] for m = 0.4, -0.3, 0 (std reset to 1 whatever the previous std was)
    expected = th.tensor([0.2681, -0.2030, 0.0])
    assert (result.plan[0, :, 0] - expected).abs().max() < 0.02


def test_determinism_with_seeded_generator():
    target = th.rand((2, 12, 1), generator=th.Generator().manual_seed(5))
    objective, _ = quadratic(target)
    cem = GaussianCEM(planning_horizon=12, n_candidates=100, n_elites=10, n_iterations=3)
    a = cem.plan(objective, cem.initial_plan(2), generator=th.Generator().manual_seed(6))
    b = cem.plan(objective, cem.initial_plan(2), generator=th.Generator().manual_seed(6))
    c = cem.plan(objective, cem.initial_plan(2), generator=th.Generator().manual_seed(7))
    th.testing.assert_close(a.plan, b.plan, rtol=0, atol=0)
    assert not th.equal(a.plan, c.plan)
    cat = CategoricalCEM(planning_horizon=4, n_actions=3, n_candidates=50, n_elites=5, n_iterations=2)

    def score(x):
        return x[..., 0].sum(-1)

    d = cat.plan(score, cat.initial_plan(2), generator=th.Generator().manual_seed(8))
    e = cat.plan(score, cat.initial_plan(2), generator=th.Generator().manual_seed(8))
    th.testing.assert_close(d.plan, e.plan, rtol=0, atol=0)


def test_nan_returns_are_never_elites():
    cem = GaussianCEM(planning_horizon=2, action_dim=1, n_candidates=500, n_elites=50, n_iterations=5)

    def objective(a):
        r = -((a - 0.5) ** 2).sum(dim=(-1, -2))
        return th.where(a[..., 0, 0] < 0, th.full_like(r, float("nan")), r)

    result = cem.plan(objective, cem.initial_plan(1), generator=th.Generator().manual_seed(9))
    assert th.isfinite(result.plan).all() and (result.action - 0.5).abs().max() < 0.05


def test_errors():
    with pytest.raises(ValueError):
        GaussianCEM(n_candidates=10, n_elites=20)
    with pytest.raises(ValueError):
        GaussianCEM(action_low=1.0, action_high=-1.0)
    cem = GaussianCEM(planning_horizon=3, action_dim=2, n_candidates=10, n_elites=2, n_iterations=1)
    with pytest.raises(ValueError, match="initial_plan"):
        cem.plan(lambda a: a.sum((-1, -2)), np.zeros((1, 4, 2)))
    with pytest.raises(ValueError, match="objective"):
        cem.plan(lambda a: a.sum(-1), cem.initial_plan(1))
