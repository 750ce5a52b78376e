"""The documented rules of World Models, each pinned so that breaking it fails: M's input / target alignment
on the stored episodes, the agent's step order (the original ``model.py``), the stage schedule."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.logger import KVWriter, Logger

from sb3_mb import WorldModels
from sb3_mb.worldmodels import MDNRNN


class _Counter(gym.Env):
    """Observation ``[t, t^2 / 100]``; Box(1) actions; reward ``10 t + a``; 10 steps, then terminated."""

    observation_space = spaces.Box(-1000, 1000, (2,), np.float32)
    action_space = spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def _obs(self):
        return np.array([self.t, self.t**2 / 100], np.float32)

    def step(self, action):
        reward = 10.0 * self.t + float(action[0])
        self.t += 1
        return self._obs(), reward, self.t >= 10, False, {}


SMALL = dict(
    n_random_rollouts=2,
    vae_batch_size=8,
    mdn_epochs=1,
    batch_size=2,
    sequence_length=4,
    population_size=4,
    rollouts_per_candidate=1,
    n_generations=1,
    policy_kwargs=dict(z_dim=2, hidden_size=4, n_mixtures=2, mlp_hidden_sizes=(8,)),
)


def test_m_reads_z_t_with_the_action_taken_at_o_t_and_predicts_r_t_and_done_t():
    """On a stored episode ``o_0, a_0, r_0, ..., o_L``: M's inputs are ``[z_t, a_t]`` for ``t < L``, its
    targets ``z_{t+1}``, ``r_t`` and ``done`` only at ``t = L - 1``."""
    model = WorldModels("MlpPolicy", _Counter(), seed=0, **SMALL)
    length = 10
    observations = np.stack([[t, t**2 / 100] for t in range(length + 1)]).astype(np.float32)
    actions = np.linspace(-1, 1, length, dtype=np.float32)[:, None]
    rewards = (10.0 * np.arange(length) + actions[:, 0]).astype(np.float32)
    model.replay_buffer.add_episode(observations, actions, rewards, terminated=True)
    seen = {}
    mdn_rnn = model.policy.mdn_rnn
    forward = mdn_rnn.forward

    def spy(z, a, hidden=None):
        seen["z"], seen["a"] = z.detach().clone(), a.detach().clone()
        params, h = forward(z, a, hidden)
        seen["params"] = params
        return params, h

    mdn_rnn.forward = spy
    model.policy.vae.sample = lambda mu, log_var, generator=None: mu  # z = the posterior mean, to compare
    index = model.replay_buffer.sample_window_indices(1, length + 1)
    mu, _ = model.encode_records(index)
    losses = model.mdn_losses(index)
    th.testing.assert_close(seen["a"][0], th.as_tensor(actions))
    assert seen["z"].shape == (1, length, 2)
    # Inputs: V's latents of o_0..o_{L-1}; targets: those of o_1..o_L.
    th.testing.assert_close(seen["z"], th.as_tensor(mu[:, :-1]))
    th.testing.assert_close(losses["nll"], MDNRNN.nll(seen["params"], th.as_tensor(mu[:, 1:])).mean())
    expected_reward = ((seen["params"].reward[0] - th.as_tensor(rewards)) ** 2).mean()
    th.testing.assert_close(losses["reward_loss"], expected_reward)
    dones = th.zeros(length)
    dones[-1] = 1.0
    expected_done = th.nn.functional.binary_cross_entropy_with_logits(seen["params"].done_logit[0], dones)
    th.testing.assert_close(losses["done_loss"], expected_done)


def test_predict_follows_the_original_step_order():
    """``z_t = mu(o_t)``; ``a_t = C([z_t, h_t])``; ``(h_{t+1}, c_{t+1}) = LSTM([z_t, a_t], (h_t, c_t))``."""
    model = WorldModels("MlpPolicy", _Counter(), seed=0, **SMALL)
    policy = model.policy
    rng = np.random.default_rng(0)
    policy.controller.set_vector(rng.normal(size=policy.controller.n_parameters))
    obs = np.array([[3.0, 0.09], [5.0, 0.25]], np.float32)
    h0 = rng.normal(size=(2, 4)).astype(np.float32)
    c0 = rng.normal(size=(2, 4)).astype(np.float32)
    action, state = model.predict(obs, state=(h0, c0), episode_start=np.zeros(2, bool), deterministic=True)
    with th.no_grad():
        z = policy.vae.encode(th.as_tensor(obs))[0]
        squashed = th.tanh(policy.controller(th.cat([z, th.as_tensor(h0)], dim=-1)))
        h1, c1 = policy.mdn_rnn.step(z, squashed, (th.as_tensor(h0), th.as_tensor(c0)))
    np.testing.assert_allclose(action, squashed.numpy(), rtol=1e-6)  # bounds [-1, 1]: the tanh itself
    np.testing.assert_allclose(state.hidden, h1.numpy(), rtol=1e-6)
    np.testing.assert_allclose(state.cell, c1.numpy(), rtol=1e-6)
    # episode_start: the step starts from h = c = 0.
    _, fresh = model.predict(obs, state=(h0, c0), episode_start=np.ones(2, bool), deterministic=True)
    _, zero = model.predict(obs, state=None, deterministic=True)
    np.testing.assert_array_equal(fresh.hidden, zero.hidden)


def test_rounds_follow_the_random_rollouts_then_every_train_interval_episodes():
    """Episodes of 10 steps, 2 random rollouts, ``train_interval=3``: 100 steps (10 episodes) give rounds at
    episodes 2, 5 and 8, so 3 CMA-ES generations of one each; ``train_interval=0`` gives one round."""
    for train_interval, rounds in ((3, 3), (0, 1)):
        model = WorldModels("MlpPolicy", _Counter(), seed=0, train_interval=train_interval, **SMALL)
        model.learn(100)
        assert model.replay_buffer.n_episodes_added == 10
        assert model.es.generation == rounds, train_interval


class _NaNReward(_Counter):
    def step(self, action):
        obs, _, terminated, truncated, info = super().step(action)
        return obs, float("nan"), terminated, truncated, info


def test_a_non_finite_candidate_return_is_a_clear_error_before_cma_es_is_told():
    model = WorldModels("MlpPolicy", _Counter(), seed=0, controller_env_fn=_NaNReward, **SMALL)
    with pytest.raises(FloatingPointError, match="candidates' return is not finite at CMA-ES generation 1"):
        model.learn(30)
    assert model.es.generation == 0


def test_horizon_nll_runs_m_open_loop_from_the_first_latent(monkeypatch):
    """Step 1 scores ``z_1`` after ``[z_0, a_0]`` (the one-step NLL M trains on); step ``k > 1`` after M was
    fed its own sample of step ``k - 1``, never the stored ``z_{k-1}``; actions are the recorded ones."""
    model = WorldModels("MlpPolicy", _Counter(), seed=0, **SMALL)
    model.learn(30)
    policy = model.policy
    monkeypatch.setattr(policy.vae, "sample", lambda mu, log_var, generator=None: mu)  # z = posterior mean
    fed, sampled = [], []
    step, sample = policy.mdn_rnn.step, MDNRNN.sample

    def spy_step(z, action, hidden):
        fed.append((z.clone(), action.clone()))
        return step(z, action, hidden)

    def spy_sample(params, temperature=1.0, generator=None):
        sampled.append(sample(params, temperature, generator))
        return sampled[-1]

    monkeypatch.setattr(policy.mdn_rnn, "step", spy_step)
    monkeypatch.setattr(MDNRNN, "sample", staticmethod(spy_sample))
    index = model.replay_buffer.sample_window_indices(3, 6)
    nll = model.horizon_nll(index, th.Generator().manual_seed(0))
    assert nll.shape == (5,)
    mu = th.as_tensor(model.encode_records(index)[0])
    actions = th.as_tensor(model.replay_buffer.actions[index[:, 1:]])
    th.testing.assert_close(fed[0][0], mu[:, 0])
    for k in range(1, 5):
        th.testing.assert_close(fed[k][0], sampled[k - 1])  # its own sample, not mu[:, k]
        assert not th.allclose(fed[k][0], mu[:, k])
    for k in range(5):
        th.testing.assert_close(fed[k][1], actions[:, k])
    with th.no_grad():
        teacher_forced = MDNRNN.nll(policy.mdn_rnn(mu[:, :-1], actions)[0], mu[:, 1:]).mean(dim=0)
    assert nll[0] == pytest.approx(float(teacher_forced[0]), rel=1e-5)
    assert not np.allclose(nll[1:], teacher_forced[1:].numpy())


class _Recorder(KVWriter):
    def __init__(self):
        self.records: list[dict] = []

    def write(self, key_values, key_excluded, step=0):
        self.records.append(dict(key_values))


def test_m_stage_logs_its_nll_per_step_of_the_horizon_without_moving_the_global_rngs():
    """``nll_horizon=4`` on episodes of 10 steps: ``train/mdn_nll_step_1..4``; the same seed logs the same
    values; the diagnostic draws from RNGs of its own, so the run's CMA-ES result is that of ``nll_horizon=0``
    (which logs none)."""
    runs = {}
    for name, horizon in (("a", 4), ("b", 4), ("off", 0)):
        model = WorldModels("MlpPolicy", _Counter(), seed=0, nll_horizon=horizon, **SMALL)
        recorder = _Recorder()
        model.set_logger(Logger(None, [recorder]))
        model.learn(30)
        model.logger.dump()  # 3 episodes: before the first log_interval
        logged = {k: v for record in recorder.records for k, v in record.items() if "mdn_nll_step" in k}
        runs[name] = (logged, model.es.mean.copy())
    assert sorted(runs["a"][0]) == [f"train/mdn_nll_step_{k}" for k in (1, 2, 3, 4)]
    assert all(np.isfinite(list(runs["a"][0].values())))
    assert runs["a"][0] == runs["b"][0]
    assert runs["off"][0] == {}
    np.testing.assert_array_equal(runs["a"][1], runs["off"][1])
