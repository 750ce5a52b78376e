"""PlaNet's fused planning objective (issue 15, sb3_mb.planet.fused) against the reference path: the same
returns on one batch to float rounding, the same random numbers, the argument that turns it off, and the
cases that keep the reference path (other transition models, autograd). Tiny sizes; no timing (speed is
measured in benchmarks/planner_speed.py).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from sb3_mb.planet import fused
from sb3_mb.planet.policies import PlaNetPolicy
from sb3_mb.planet.rssm import RSSMState

SIZES = dict(belief_size=8, state_size=4, hidden_size=8, mlp_hidden_sizes=(8,), reward_hidden_sizes=(8, 8))


def _policy(**kwargs) -> PlaNetPolicy:
    th.manual_seed(0)
    policy = PlaNetPolicy(
        spaces.Box(-np.inf, np.inf, (3,), np.float32),
        spaces.Box(-1, 1, (2,), np.float32),
        lambda _: 1e-3,
        planning_horizon=5,
        n_candidates=16,
        n_elites=4,
        n_iterations=2,
        **{**SIZES, **kwargs},
    )
    with th.no_grad():  # weights and biases far from 0, so every term matters
        for parameter in policy.parameters():
            parameter.normal_(0.0, 0.5)
    policy.set_training_mode(False)
    return policy


def _start(policy: PlaNetPolicy, n_envs: int = 2) -> RSSMState:
    g = th.Generator().manual_seed(1)
    rssm = policy.rssm
    belief = th.randn(n_envs, rssm.belief_size, generator=g)
    mean, sample = (
        th.randn(n_envs, rssm.state_size, generator=g),
        th.randn(n_envs, rssm.state_size, generator=g),
    )
    return RSSMState(belief, mean, th.rand(n_envs, rssm.state_size, generator=g) + 0.1, sample)


def _actions(policy: PlaNetPolicy, n_envs: int = 2) -> th.Tensor:
    g = th.Generator().manual_seed(2)
    shape = (n_envs, policy.n_candidates, policy.planning_horizon, policy.action_dim)
    return th.rand(shape, generator=g) * 2 - 1


def _returns(policy: PlaNetPolicy, use_fused: bool, seed: int = 3) -> tuple[th.Tensor, th.Tensor]:
    """The objective's returns and the generator's state after the call."""
    policy.fused_planning = use_fused
    generator = th.Generator().manual_seed(seed)
    with th.no_grad():
        returns = policy.planning_objective(_start(policy), generator)(_actions(policy))
    return returns, generator.get_state()


@pytest.mark.parametrize(
    "kwargs",
    [
        {},  # the paper's: sampled prior, undiscounted, reward scale unmeasured
        {"discount": 0.7, "normalize_rewards": False},
        {"future_rnn": False},
        {"plan_on_prior_mean": True},
        {"mean_only": True},
    ],
)
def test_fused_objective_equals_the_reference_with_the_same_random_numbers(kwargs):
    """Fused and reference objective: the same returns on one batch (to float rounding: summation order) and
    the same random numbers drawn (the generator ends in the same state)."""
    policy = _policy(**kwargs)
    policy.reward_scale.fill_(0.5)
    reference, reference_rng = _returns(policy, use_fused=False)
    fast, fast_rng = _returns(policy, use_fused=True)
    assert reference.shape == (2, policy.n_candidates)
    assert reference.std() > 0.1  # the candidates differ, so equality means something
    th.testing.assert_close(fast, reference, rtol=1e-4, atol=1e-5)
    assert th.equal(fast_rng, reference_rng)


def test_fused_objective_reads_the_current_weights():
    """One objective (the CEM calls it once per iteration) lays out the fused weights once, and again after
    the weights change in place (as by an optimizer step between two calls): never stale."""
    policy = _policy(plan_on_prior_mean=True)  # no sampling: the calls compare without a generator
    start, actions = _start(policy), _actions(policy)
    with th.no_grad():
        objective = policy.planning_objective(start, None)
        before = objective(actions)
        for parameter in policy.parameters():
            parameter.mul_(0.9)
        after = objective(actions)
        policy.fused_planning = False
        expected = policy.planning_objective(start, None)(actions)
    assert (after - before).abs().max() > 1e-3
    th.testing.assert_close(after, expected, rtol=1e-4, atol=1e-5)


def test_fused_objective_samples_and_is_deterministic():
    """The fused rollout samples the prior (another seed, other returns) and a seed fixes it."""
    policy = _policy()
    first, _ = _returns(policy, use_fused=True, seed=3)
    again, _ = _returns(policy, use_fused=True, seed=3)
    other, _ = _returns(policy, use_fused=True, seed=4)
    assert th.equal(first, again)
    assert (first - other).abs().max() > 1e-3


def test_fused_planning_is_on_by_default_and_off_with_its_argument(monkeypatch):
    """``fused_planning`` (default True) runs the fused loop in ``plan``; False, a tap cell, another
    transition model or autograd keep the reference path."""
    calls = []
    original = fused.fused_prior_returns

    def counting(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr("sb3_mb.planet.policies.fused_prior_returns", counting)
    policy = _policy()
    assert policy.fused_planning
    generator = th.Generator().manual_seed(0)
    with th.no_grad():
        policy.plan(_start(policy), policy.planner.initial_plan(2), generator)
    assert len(calls) == policy.n_iterations

    for kwargs in ({"fused_planning": False}, {"transition_model": "ssm"}, {"tap_cell": "rssm"}):
        calls.clear()
        policy = _policy(**kwargs)
        start = _start(policy)
        with th.no_grad():
            policy.plan(start, policy.planner.initial_plan(2), generator, tap_start=start)
        assert not calls, kwargs

    policy = _policy()
    returns = policy.planning_objective(_start(policy), generator)(_actions(policy))  # autograd on
    assert not calls and returns.requires_grad
