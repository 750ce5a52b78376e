"""The protocol of Rose's PlaNet fork (issue 14): the linear learning-rate warm-up, the planned returns at the
first and last CEM iteration (``summarise_plan_returns``), the "random dataset" protocol, and the fork's
presets in ``hyperparams/planet.yml``."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from point_mass import PointMass
from stable_baselines3.common.logger import KVWriter, Logger

from sb3_mb import PlaNet
from sb3_mb.common.planners import PlanResult
from sb3_mb.registry import ALGOS

TINY = ALGOS["planet"].test_kwargs


def _planet(**kwargs) -> PlaNet:
    return PlaNet("MlpPolicy", PointMass(), seed=0, **{**TINY, **kwargs})


class _Records(KVWriter):
    def __init__(self):
        self.records: list[dict] = []

    def write(self, key_values, key_excluded, step=0):
        self.records.append(dict(key_values))


def _capture(model: PlaNet) -> _Records:
    writer = _Records()
    model.set_logger(Logger(folder=None, output_formats=[writer]))
    return writer


# ------------------------------------------------------------------------------------------------------
# Learning-rate warm-up
# ------------------------------------------------------------------------------------------------------
def _rates_used(model: PlaNet, n_updates: int) -> list[float]:
    """The rate in Adam's parameter group at each of ``n_updates`` optimizer steps of ``train``."""
    rates: list[float] = []
    optimizer = model.policy.optimizer
    step = optimizer.step

    def recording_step(*args, **kwargs):
        rates.append(optimizer.param_groups[0]["lr"])
        return step(*args, **kwargs)

    optimizer.step = recording_step
    model.train(n_updates)
    optimizer.step = step
    return rates


def _filled(**kwargs) -> PlaNet:
    """A model after one random episode (25 steps) and no update."""
    model = _planet(updates_per_episode=0, **kwargs).learn(25)
    assert model._n_updates == 0
    return model


def test_learning_rate_warmup_is_linear_in_the_updates_then_flat():
    """Update n (from 1) takes lr * min(1, n / warmup), across train calls; then the plain rate."""
    model = _filled(learning_rate=1e-3, learning_rate_warmup=4)
    rates = _rates_used(model, 3) + _rates_used(model, 3)
    np.testing.assert_allclose(rates, [0.25e-3, 0.5e-3, 0.75e-3, 1e-3, 1e-3, 1e-3], rtol=1e-12)
    model = _planet(learning_rate=1e-3, learning_rate_warmup=4).learn(30)
    assert model._n_updates == 2  # at the end of the seed episode, in learn
    np.testing.assert_allclose(_rates_used(model, 3), [0.75e-3, 1e-3, 1e-3], rtol=1e-12)


def test_learning_rate_warmup_multiplies_an_sb3_schedule_and_is_logged():
    model = _filled(learning_rate=lambda progress: 1e-3 * progress, learning_rate_warmup=10)
    model._current_progress_remaining = 0.5
    writer = _capture(model)
    np.testing.assert_allclose(_rates_used(model, 2), [0.5e-3 * 0.1, 0.5e-3 * 0.2], rtol=1e-12)
    model.logger.dump()
    assert writer.records[-1]["train/learning_rate"] == pytest.approx(0.5e-3 * 0.2)
    # off (the default): the schedule alone
    assert _rates_used(_filled(learning_rate=1e-3), 2) == [1e-3, 1e-3]


def test_learning_rate_warmup_survives_save_and_load(tmp_path):
    model = _planet(learning_rate_warmup=10)
    model.learn(30)
    model.save(tmp_path / "planet.zip")
    model.save_replay_buffer(tmp_path / "buffer.pkl")
    loaded = PlaNet.load(tmp_path / "planet.zip", env=PointMass())
    loaded.load_replay_buffer(tmp_path / "buffer.pkl")
    assert loaded.learning_rate_warmup == 10 and loaded._n_updates == model._n_updates == 2
    loaded._setup_learn(100, reset_num_timesteps=False)
    np.testing.assert_allclose(_rates_used(loaded, 1), [1e-3 * 3 / 10], rtol=1e-12)


def test_bad_learning_rate_warmup_is_a_clear_error():
    with pytest.raises(ValueError, match="learning_rate_warmup must be a non-negative integer"):
        _planet(learning_rate_warmup=-1)
    with pytest.raises(ValueError, match="learning_rate_warmup"):
        _planet(learning_rate_warmup=2.5)


# ------------------------------------------------------------------------------------------------------
# Planned returns at the first and last CEM iteration
# ------------------------------------------------------------------------------------------------------
def test_plan_returns_first_and_last_iteration_are_logged_from_the_cem():
    """``train/plan_return_first`` / ``_last`` are the mean candidate returns of the first / last CEM
    iteration, averaged over the planned steps since the last log; the CEM raises them on a trained model."""
    model = _planet(policy_kwargs={**TINY["policy_kwargs"], "n_iterations": 4})
    model.learn(50)  # seed episode, then a planned one; its updates log and clear the returns
    results: list[PlanResult] = []
    act = model.policy.act

    def recording_act(*args, **kwargs):
        action, state, plan = act(*args, **kwargs)
        results.append(plan)
        return action, state, plan

    model.policy.act = recording_act
    writer = _capture(model)
    model.learn(25, reset_num_timesteps=False, log_interval=1)  # one more episode, all planned
    model.policy.act = act
    model.logger.dump()  # SB3 dumps at an episode's end, before the updates (and their records) that follow
    assert len(results) == 25 and results[0].candidate_returns.shape == (4, 1)
    first = np.mean([float(plan.candidate_returns[0].mean()) for plan in results])
    last = np.mean([float(plan.candidate_returns[-1].mean()) for plan in results])
    logged = [record for record in writer.records if "train/plan_return_first" in record]
    assert len(logged) == 1
    assert logged[0]["train/plan_return_first"] == pytest.approx(first, rel=1e-6)
    assert logged[0]["train/plan_return_last"] == pytest.approx(last, rel=1e-6)
    assert last > first  # the refits move the candidates towards higher predicted returns
    assert not model._plan_returns_first_last  # cleared once logged


def test_plan_returns_are_not_logged_without_planning():
    model = _planet(random_dataset=True)
    writer = _capture(model)
    model.learn(60, log_interval=1)
    keys = set().union(*(record.keys() for record in writer.records))
    assert (
        "train/loss" in keys and "train/plan_return_first" not in keys and "train/planned_return" not in keys
    )


# ------------------------------------------------------------------------------------------------------
# Random dataset
# ------------------------------------------------------------------------------------------------------
def test_random_dataset_trains_the_model_on_random_actions_only_and_still_plans(tmp_path):
    model = _planet(random_dataset=True)
    calls = []
    act = model.policy.act
    model.policy.act = lambda *args, **kwargs: calls.append(1) or act(*args, **kwargs)
    model.learn(100)  # 4 episodes: the seed one, then 3 more, every one random
    model.policy.act = act
    assert calls == []  # the planner never collected
    assert model.replay_buffer.n_episodes_added == 4
    assert model._n_updates == 2 * 4  # C updates per episode, as Alg. 1
    # uniformly random in [-1, 1]^2 (stored scaled): spread over the box, not a planner's clipped means
    actions = model.replay_buffer.actions[: model.replay_buffer.size()].reshape(-1, 2)
    assert np.abs(actions).max() <= 1 and actions.std() > 0.5
    # prediction still plans with the learned model
    action, _ = model.predict(np.zeros((1, 2), np.float32), deterministic=True)
    assert action.shape == (1, 2)
    model.save(tmp_path / "planet.zip")
    assert PlaNet.load(tmp_path / "planet.zip").random_dataset is True


def test_without_random_dataset_the_planner_collects_after_the_seed_episodes():
    model = _planet()
    calls = []
    act = model.policy.act
    model.policy.act = lambda *args, **kwargs: calls.append(1) or act(*args, **kwargs)
    model.learn(50)
    model.policy.act = act
    assert len(calls) == 25  # the second episode


def test_random_dataset_model_learns_the_dynamics():
    """Trained on random data only, the one-step observation NLL falls (the protocol is a model study)."""
    model = _planet(random_dataset=True, updates_per_episode=10)
    model.learn(25)
    samples = model.replay_buffer.sample_sequences(4, 8)
    with th.no_grad():
        before = float(model._compute_losses(samples)["observation_nll"])
    model.learn(100, reset_num_timesteps=False)
    with th.no_grad():
        after = float(model._compute_losses(samples)["observation_nll"])
    assert after < before


# ------------------------------------------------------------------------------------------------------
# The fork's presets in hyperparams/planet.yml
# ------------------------------------------------------------------------------------------------------
FORK_ENTRIES = [
    "sb3_mb/CartpoleBalancePixelsDiscrete5-v0",
    "sb3_mb/CartpoleSwingupPixelsDiscrete5-v0",
    "sb3_mb/CartpoleBalancePixelsDiscrete9-v0",
    "sb3_mb/BreakoutPlaNet-v0",
    "sb3_mb/QbertPlaNet-v0",
    "sb3_mb/FreewayPlaNet-v0",
]


@pytest.mark.parametrize("env_id", FORK_ENTRIES)
def test_fork_presets_carry_the_forks_settings(env_id):
    """Batch 8 x 50, reward head 2 x 100, discount 0.99, a 10k-update warm-up, epsilon-greedy 0.1."""
    from zoo.hyperparams import constructor_kwargs, load_hyperparams

    kwargs = constructor_kwargs(load_hyperparams("planet", env_id))
    assert (kwargs["batch_size"], kwargs["sequence_length"], kwargs["learning_rate_warmup"]) == (
        8,
        50,
        10_000,
    )
    policy_kwargs = kwargs["policy_kwargs"]
    assert policy_kwargs["reward_hidden_sizes"] == (100, 100) and policy_kwargs["discount"] == 0.99
    assert policy_kwargs["exploration_epsilon"] == 0.1
