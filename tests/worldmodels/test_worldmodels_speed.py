"""World Models' fast paths (issue 15) against their references: M's one-step LSTM cell against the LSTM
module, C's batched candidates against ``set_vector``, and CMA-ES scoring in lockstep
(``BatchedRolloutEvaluator``, ``controller_batch_envs > 1``) against one episode after the other."""

from __future__ import annotations

import functools

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.logger import configure

from sb3_mb import WorldModels
from sb3_mb.registry import get_test_spec
from sb3_mb.worldmodels.cmaes import BatchedRolloutEvaluator, RolloutEvaluator
from sb3_mb.worldmodels.mdn_rnn import MDNRNN
from sb3_mb.worldmodels.policies import Controller

#: The registry's test sizes (population 4), two episodes per candidate.
SMALL = {**get_test_spec("worldmodels").test_kwargs, "rollouts_per_candidate": 2, "max_episode_steps": 30}


def test_lstm_cell_step_equals_the_lstm_module():
    """``MDNRNN.step`` (``torch.lstm_cell``) gives the hidden and cell state of ``self.lstm`` run over a
    one-step sequence, and the same gradients."""
    th.manual_seed(0)
    m = MDNRNN(z_dim=4, action_dim=2, hidden_size=8)
    z, a, h, c = th.randn(5, 4), th.randn(5, 2), th.randn(5, 8), th.randn(5, 8)
    h1, c1 = m.step(z, a, (h, c))
    _, (h2, c2) = m.lstm(th.cat([z, a], -1)[:, None], (h[None], c[None]))
    th.testing.assert_close(h1, h2[0])
    th.testing.assert_close(c1, c2[0])
    grads = [th.autograd.grad((h_ + c_).sum(), list(m.lstm.parameters())) for h_, c_ in ((h1, c1), (h2, c2))]
    for fast, reference in zip(*grads, strict=True):
        th.testing.assert_close(fast, reference)


def test_batched_controllers_equal_set_vector():
    """Row ``k`` of ``Controller.batched(vectors, features)`` is C's output with ``set_vector(vectors[k])``
    (hidden tanh layer included, so the per-layer slicing of the vector is checked)."""
    th.manual_seed(0)
    controller = Controller(6, 3, hidden_sizes=(5,))
    vectors = th.randn(4, controller.n_parameters, dtype=th.float64)
    features = th.randn(4, 6)
    batched = controller.batched(vectors.float(), features)
    for k in range(4):
        controller.set_vector(vectors[k].numpy())
        th.testing.assert_close(batched[k], controller(features[k]))


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_lockstep_scores_equal_one_after_the_other(env_id):
    """Five candidates x two seeds in three envs (so episodes of several candidates share a batch, end at
    different steps on CartPole, and run in chunks): the same mean returns and env steps as
    ``RolloutEvaluator`` scoring each candidate's episodes one after the other; V, M and C are random."""
    model = WorldModels("MlpPolicy", env_id, seed=0, **SMALL)
    policy = model.policy
    rng = np.random.default_rng(0)
    candidates = rng.normal(0.0, 1.0, (5, policy.controller.n_parameters))
    seeds = [[int(s) for s in rng.integers(0, 2**31, 2)] for _ in range(5)]
    one_by_one = RolloutEvaluator(policy, gym.make(env_id), max_episode_steps=40)
    reference = np.array([one_by_one.evaluate(c, s) for c, s in zip(candidates, seeds, strict=True)])
    lockstep = BatchedRolloutEvaluator(policy, [gym.make(env_id) for _ in range(3)], max_episode_steps=40)
    returns = lockstep.evaluate_population(candidates, seeds)
    np.testing.assert_allclose(returns, reference, rtol=1e-5, atol=1e-4)
    assert lockstep.env_steps == one_by_one.env_steps
    assert len(set(np.round(reference, 3))) > 1  # the candidates differ, so a row mix-up would show


def test_train_controller_uses_lockstep_and_gives_the_same_generation(monkeypatch):
    """``controller_batch_envs=4`` (lockstep, with ``controller_env_fn``) and ``1`` (one by one) tell CMA-ES
    the same returns: the same statistics and the same new mean after one generation."""
    calls = []
    episode_returns = BatchedRolloutEvaluator.episode_returns
    monkeypatch.setattr(
        BatchedRolloutEvaluator,
        "episode_returns",
        lambda self, vectors, seeds: calls.append(len(seeds)) or episode_returns(self, vectors, seeds),
    )
    results = []
    for batch_envs in (1, 4):
        model = WorldModels(
            "MlpPolicy",
            "CartPole-v1",
            seed=0,
            controller_batch_envs=batch_envs,
            controller_env_fn=functools.partial(gym.make, "CartPole-v1"),
            **SMALL,
        )
        model.set_logger(configure(None, []))
        results.append((model.train_controller(), model.es.mean))
    assert calls == [4, 4]  # 4 candidates x 2 episodes in 4 envs, with controller_batch_envs=4 only
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-6)
    np.testing.assert_allclose(results[1][1], results[0][1], rtol=1e-6)


def test_controller_batch_envs_must_be_positive():
    with pytest.raises(ValueError, match="controller_batch_envs"):
        WorldModels("MlpPolicy", "CartPole-v1", controller_batch_envs=0, **SMALL)
