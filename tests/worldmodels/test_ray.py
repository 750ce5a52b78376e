"""CMA-ES candidates scored by the actors of a local Ray instance (``parallel_backend="ray"``): the same
generation as in-process scoring, errors of the actors reported, a clear error without Ray.

One local instance (2 CPUs, no dashboard) serves the module and is shut down after it.
"""

from __future__ import annotations

import copy
import functools
import sys

import gymnasium as gym
import numpy as np
import pytest

from sb3_mb import WorldModels
from sb3_mb.worldmodels.cmaes import RolloutEvaluator, WorkerSpec, evaluate_population, make_pool

SMALL = dict(
    n_random_rollouts=3,
    vae_batch_size=16,
    mdn_epochs=1,
    batch_size=4,
    sequence_length=8,
    population_size=6,
    rollouts_per_candidate=2,
    n_generations=0,
    max_episode_steps=30,
    policy_kwargs=dict(z_dim=4, hidden_size=8, n_mixtures=2, mlp_hidden_sizes=(16,)),
)


@pytest.fixture(scope="module")
def ray():
    ray = pytest.importorskip("ray")
    if ray.is_initialized():  # pragma: no cover - another module's instance
        ray.shutdown()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def model() -> WorldModels:
    """V and M trained on CartPole, CMA-ES made, no generation run yet."""
    model = WorldModels(
        "MlpPolicy",
        "CartPole-v1",
        seed=0,
        controller_env_fn=functools.partial(gym.make, "CartPole-v1"),
        **SMALL,
    )
    model.learn(100)
    assert model.es is not None and model.es.generation == 0
    return model


def test_a_generation_on_ray_is_the_in_process_generation(ray, model):
    """One generation from the same CMA-ES state, scored in-process and by 2 Ray actors: the same statistics
    (best, mean, sigma) and the same new mean."""
    start, controller = copy.deepcopy(model.es), model.policy.controller.get_vector()
    results = {}
    for backend, n_workers in (("processes", 1), ("ray", 2)):
        model.es, model.n_generations = copy.deepcopy(start), 1
        model.parallel_backend, model.n_workers = backend, n_workers
        model.policy.controller.set_vector(controller)
        stats = model.train_controller()
        results[backend] = (stats, model.es.mean.copy())
    assert results["processes"][0] == results["ray"][0]
    np.testing.assert_array_equal(results["processes"][1], results["ray"][1])
    assert not np.array_equal(results["ray"][1], start.mean)  # the generation moved the mean
    model.es = start


def test_scores_do_not_depend_on_which_actor_runs_a_candidate(ray, model):
    """The same candidates and seeds, given to 2 actors in one order and in the reverse order (so other
    actors get them), score exactly as in-process; each candidate's score comes from its own seeds."""
    policy = model.policy
    spec = WorkerSpec(
        type(policy),
        policy._get_constructor_parameters(),
        {key: value.cpu() for key, value in policy.state_dict().items()},
        lambda _policy: gym.make("CartPole-v1"),
        30,
    )
    candidates = copy.deepcopy(model.es).ask()
    seeds = [model.es.rollout_seeds(i, 2) for i in range(len(candidates))]
    evaluator = RolloutEvaluator(policy, gym.make("CartPole-v1"), 30)
    expected, expected_steps = evaluate_population(candidates, seeds, evaluator)
    assert len(set(expected.tolist())) > 1  # the candidates are told apart
    pool = make_pool(2, spec, "ray")
    try:
        returns, steps = evaluate_population(candidates, seeds, pool=pool)
        reversed_returns, _ = evaluate_population(candidates[::-1], seeds[::-1], pool=pool)
    finally:
        pool.close()
    np.testing.assert_array_equal(returns, expected)
    np.testing.assert_array_equal(reversed_returns[::-1], expected)
    assert steps == expected_steps


def test_an_actor_that_cannot_build_its_env_is_reported(ray, model):
    def _broken_env(_policy):  # a local function: cloudpickled by value, as a user's would be
        raise OSError("no such env on this node")

    policy = model.policy
    spec = WorkerSpec(
        type(policy), policy._get_constructor_parameters(), policy.state_dict(), _broken_env, None
    )
    pool = make_pool(1, spec, "ray")
    try:
        with pytest.raises(RuntimeError, match="could not build its policy and env.*no such env"):
            evaluate_population(np.zeros((2, policy.controller.n_parameters)), [[0], [1]], pool=pool)
    finally:
        pool.close()


def test_without_ray_the_error_says_how_to_install_it(monkeypatch):
    """At construction, before any data is collected."""
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(ImportError, match=r"pip install 'sb3-mb\[ray\]'"):
        WorldModels("MlpPolicy", "CartPole-v1", controller_env="dream", parallel_backend="ray", **SMALL)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(parallel_backend="dask"), "parallel_backend must be one of"),
        (dict(n_workers=0), "n_workers must be >= 1"),
        (dict(parallel_backend="ray"), "controller_env_fn"),  # real env, workers, no env maker
    ],
)
def test_bad_parallel_settings_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WorldModels("MlpPolicy", "CartPole-v1", **kwargs)
