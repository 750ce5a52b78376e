"""The documented rules of MBPO and its value-aware model losses (sb3_mb.mbpo), each pinned so that breaking
it fails. No learning runs: every test builds a tiny agent, writes the data it needs and calls one step of the
algorithm box (``train_dynamics``, ``rollout_model``, ``train``) or one loss."""

import numpy as np
import pytest
import torch
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import Logger

from sb3_mb import MBPO
from sb3_mb.common.dynamics import DynamicsModel
from sb3_mb.mbpo.model_losses import VaGraMLoss
from sb3_mb.mbpo.policies import mean_action_values
from sb3_mb.registry import ALGOS

# The shared tests' sizes (sb3_mb.registry), with the schedule the tests below count on.
KWARGS = {
    **ALGOS["mbpo"].test_kwargs,
    "learning_starts": 50,
    "epoch_length": 50,
    "model_train_freq": 10,
    "n_rollouts_per_step": 2,
    "rollout_schedule": (0, 1, 3, 3),
    "model_max_epochs": 1,
}


def _mbpo(**kwargs) -> MBPO:
    model = MBPO("MlpPolicy", make_vec_env("Pendulum-v1", n_envs=1, seed=0), seed=0, **{**KWARGS, **kwargs})
    model.set_logger(Logger(folder=None, output_formats=[]))
    return model


def _fill(model: MBPO, n: int = 40, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` real transitions whose next states lie far from their states; returns ``(obs, next_obs)``."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(n, 3)).astype(np.float32)
    next_obs = (obs + rng.normal(size=(n, 3))).astype(np.float32)
    actions = rng.uniform(-1, 1, size=(n, 1)).astype(np.float32)
    rewards = rng.normal(size=n).astype(np.float32)
    for i in range(n):
        model.replay_buffer.add(
            obs[i : i + 1], next_obs[i : i + 1], actions[i : i + 1], rewards[i : i + 1], [0.0], [{}]
        )
    return obs, next_obs


# ------------------------------------------------------------------------------------------ model rollouts
def test_rollouts_stop_at_a_termination_and_store_done():
    """rollout_model: ``n_rollouts_per_step * model_train_freq`` rollouts from real states with the stochastic
    policy; 'a rollout stops at a termination', and the stored transition carries ``done``."""
    calls = []

    def termination_fn(obs, act, next_obs):
        calls.append(obs.shape[0])
        if len(calls) == 1:  # the first step: real start states decide
            return obs[:, 0] > 0
        return torch.zeros(obs.shape[0], dtype=torch.bool)

    model = _mbpo(termination_fn=termination_fn)
    real_obs, _ = _fill(model)
    added = model.rollout_model()
    buffer = model.replay_buffer.model_buffer
    size = buffer.size()
    obs, next_obs = buffer.observations[:size, 0], buffer.next_observations[:size, 0]
    actions, dones = buffer.actions[:size, 0], buffer.dones[:size, 0]

    n = 2 * 10
    first = obs[:n]
    assert all((row == real_obs).all(-1).any() for row in first)  # started from real states
    stop = first[:, 0] > 0
    n_alive = int((~stop).sum())
    assert 0 < n_alive < n
    assert calls == [n, n_alive, n_alive]  # terminated rollouts are not stepped again
    assert added == size == n + 2 * n_alive
    np.testing.assert_array_equal(dones[:n], stop.astype(np.float32))
    assert not dones[n:].any()
    # the survivors continue from their predicted next states, in order
    np.testing.assert_array_equal(obs[n : n + n_alive], next_obs[:n][~stop])
    np.testing.assert_array_equal(obs[n + n_alive :], next_obs[n : n + n_alive])
    with torch.no_grad():
        greedy = model.actor(torch.as_tensor(first), deterministic=True).numpy()
    assert not np.allclose(actions[:n], greedy, atol=1e-3)  # the stochastic policy acts


def test_model_buffer_holds_retain_epochs_of_rollouts():
    """'its capacity follows the rollout length: rollout_length * n_rollouts_per_step * epoch_length *
    model_retain_epochs'."""
    model = _mbpo(model_retain_epochs=3)
    _fill(model)
    model.rollout_model()
    assert model.rollout_length == 3
    assert model.replay_buffer.model_buffer.buffer_size == 3 * 2 * 50 * 3


# ------------------------------------------------------------------------------------------ schedules
def test_epoch_rollout_length_and_model_data_ratio_schedules():
    """Epochs count from ``learning_starts`` (0 during the warm-up); the rollout length and the model-data
    ratio are their schedules at ``epoch + 1``."""
    model = _mbpo(rollout_schedule=(1, 3, 1, 5), model_data_ratio_schedule=(1, 3, 0.2, 0.6))
    for timesteps, epoch, length, ratio in (
        (10, 0, 1, 0.2),  # warm-up
        (50 + 49, 0, 1, 0.2),
        (50 + 50, 1, 3, 0.4),
        (50 + 149, 2, 5, 0.6),
        (5000, 99, 5, 0.6),
    ):
        model.num_timesteps = timesteps
        assert (model.epoch, model.rollout_length) == (epoch, length), timesteps
        assert model.model_data_ratio == pytest.approx(ratio), timesteps


def test_model_is_retrained_every_model_train_freq_steps():
    model = _mbpo(model_train_freq=10)
    assert model._model_due()  # never trained
    model._last_model_train, model.num_timesteps = 95, 104
    assert not model._model_due()
    model.num_timesteps = 105
    assert model._model_due()
    model.num_timesteps = 3  # a new learn() with reset_num_timesteps
    assert model._model_due()


def test_train_mixes_model_data_at_the_scheduled_ratio():
    """MBPO.train sets the buffer's ``model_data_ratio`` from the schedule before SAC's updates."""
    model = _mbpo(model_data_ratio_schedule=(0, 1, 0.5, 0.5), model_data_mixing="sample")
    _fill(model)
    zeros = np.zeros((30, 3), np.float32)
    model.replay_buffer.model_buffer.extend(zeros, zeros[:, :1], zeros, np.ones(30), np.zeros(30))
    model.num_timesteps = model._last_model_train = 60  # no model training inside train()
    model.train(gradient_steps=2, batch_size=16)
    buffer = model.replay_buffer
    assert buffer.model_data_ratio == 0.5
    assert (buffer.n_samples, buffer.n_model_samples) == (32, 16)


def test_actor_has_its_own_learning_rate():
    model = _mbpo(learning_rate=1e-3, actor_learning_rate=1e-5)
    model._update_learning_rate([model.actor.optimizer, model.critic.optimizer])
    assert model.actor.optimizer.param_groups[0]["lr"] == pytest.approx(1e-5)
    assert model.critic.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3)


# ------------------------------------------------------------------------------------------ model losses
def test_vagram_call_clips_an_outlier_gradient_per_member_batch():
    """VaGraM's ``__call__`` clips the value gradients (not only ``clip()``): 'every g_k whose norm exceeds
    the batch's clip_quantile quantile of norms is rescaled to it', per member batch; ``None`` disables it."""
    n = 20
    grads = torch.zeros(n + 1, 1, 2)  # one value function; rows 0..19 norm 1, row 7 norm 100
    grads[:, 0, 0] = 1.0
    grads[7, 0] = torch.tensor([60.0, 80.0])
    rows = torch.arange(n)
    idx = torch.stack([rows, torch.where(rows == 7, n, rows)])  # member 1 never sees the outlier
    pred = torch.zeros(2, n, 3)
    pred[..., :2] = 1.0  # d = (1, 1), reward exact
    target = torch.zeros(2, n, 3)
    q = 1 + 0.05 * 99  # 0.95 quantile of nineteen norms 1 and one norm 100

    def loss_with(clip_quantile):
        loss = VaGraMLoss(DynamicsModel(2, 1), bounded=True, clip_quantile=clip_quantile)
        loss.value_gradients = lambda rows: grads[rows]  # the gradients themselves are tested elsewhere
        loss.begin_training(None, torch.zeros(n + 1, 2), critic_version=0)
        return loss(pred, None, target, idx)

    # member 0: nineteen (1 * 1)^2 and the clipped outlier (0.6 q)^2 + (0.8 q)^2 = q^2; member 1: all 1
    torch.testing.assert_close(loss_with(0.95), torch.tensor([(19 + q**2) / 20, 1.0]), rtol=1e-4, atol=0)
    torch.testing.assert_close(loss_with(None), torch.tensor([(19 + 100.0**2) / 20, 1.0]))


def test_value_cache_is_invalidated_by_a_new_data_table():
    """'The cache is invalidated ... whenever the critic version ... or the data table changes'."""
    loss = VaGraMLoss(DynamicsModel(2, 1), clip_quantile=None)
    loss.value_gradients = lambda rows: torch.ones(rows.shape[0], 1, 2)
    table = torch.zeros(5, 2)
    loss.begin_training(None, table, critic_version=0)
    loss(torch.zeros(1, 3, 3), None, torch.zeros(1, 3, 3), torch.arange(3)[None])
    assert loss.cache.n_computed == 3
    loss.begin_training(None, table, critic_version=0)
    assert loss.cache.n_computed == 3  # same critic, same table: kept
    loss.begin_training(None, table.clone(), critic_version=0)
    assert loss.cache.n_computed == 0


def test_value_functions_are_the_critics_and_targets_at_the_detached_mean_action():
    """``V_k(s) = Q_k(s, tanh(mu(s)))``, ``k`` over ``Q1, Q2, Q1', Q2'`` (``use_all_vf``) or ``Q1, Q2``; the
    action is detached, so the gradient reaches ``s`` only through Q's state input."""
    policy = _mbpo().policy
    with torch.no_grad():
        for p in policy.critic_target.parameters():
            p.add_(0.1)  # targets differ from the critics
    states = torch.randn(6, 3, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    action = policy.actor(states, deterministic=True).detach()
    expected = torch.cat([*policy.critic(states, action), *policy.critic_target(states, action)], 1)
    values = mean_action_values(policy, states)
    torch.testing.assert_close(values, expected)
    torch.testing.assert_close(mean_action_values(policy, states, use_all_vf=False), expected[:, :2])
    (grad,) = torch.autograd.grad(values.sum(), states)
    (expected_grad,) = torch.autograd.grad(expected.sum(), states)
    torch.testing.assert_close(grad, expected_grad)


def _value_gradients(policy, states):
    """``grad_s V_k(s)`` ``(n, 4, obs_dim)`` of each value function at ``states``."""
    states = states.clone().requires_grad_(True)
    values = mean_action_values(policy, states)
    return torch.stack(
        [torch.autograd.grad(values[:, k].sum(), states, retain_graph=True)[0] for k in range(4)], 1
    )


def test_vagram_value_gradient_is_taken_at_the_next_state():
    """'g_k = grad_{s'} V_k(s') at the real next state s'', through MBPO's own model training."""
    model = _mbpo(model_loss="vagram", vagram_clip_quantile=None)
    obs, next_obs = _fill(model)
    model.train_dynamics()
    loss = model._model_loss_fn
    torch.testing.assert_close(loss.next_obs, torch.as_tensor(next_obs))
    rows = loss.cache.known.nonzero()[:, 0]
    assert rows.numel() > 0
    at_next = _value_gradients(model.policy, torch.as_tensor(next_obs)[rows])
    at_obs = _value_gradients(model.policy, torch.as_tensor(obs)[rows])
    torch.testing.assert_close(loss.cache.values[rows], at_next)
    assert not torch.allclose(at_next, at_obs, atol=1e-3)  # s and s' give different gradients here


def test_value_aware_training_leaves_the_agent_untouched():
    """'The actor and critics are fixed while the model trains: no gradients accumulate in them' (IterVAML
    back-propagates through V), and they are trainable again afterwards."""
    model = _mbpo(model_loss="itervaml")
    _fill(model)
    agent = [p for net in (model.actor, model.critic, model.critic_target) for p in net.parameters()]
    trainable = [p.requires_grad for p in agent]
    model.train_dynamics()
    assert all(p.grad is None for p in agent)
    assert [p.requires_grad for p in agent] == trainable


def test_value_aware_losses_add_mse_during_the_warmup_epochs():
    """``mse_warmup_epochs``: 'epochs during which the value-aware losses add plain MSE'."""
    model = _mbpo(model_loss="vagram", mse_warmup_epochs=1)
    _fill(model)
    model.num_timesteps = 60  # epoch 0
    model.train_dynamics()
    assert model._model_loss_fn.add_mse
    model.num_timesteps = 100  # epoch 1
    model.train_dynamics()
    assert not model._model_loss_fn.add_mse
