"""MBPO (sb3_mb.mbpo): model losses and their gradient cache, buffers, policy, schedules, save/load,
learning."""

import functools

import numpy as np
import pytest
import torch
from gymnasium import spaces
from point_mass import PointMass as _PointMass
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.sac.policies import SACPolicy

import sb3_mb
from sb3_mb import MBPO
from sb3_mb.common.dynamics import DynamicsModel
from sb3_mb.common.termination import no_termination
from sb3_mb.mbpo.buffers import MBPOReplayBuffer, ModelReplayBuffer
from sb3_mb.mbpo.mbpo import truncated_linear
from sb3_mb.mbpo.model_losses import IterVAMLLoss, VaGraMLoss, make_model_loss
from sb3_mb.mbpo.policies import MBPOPolicy, mean_action_values
from zoo.hyperparams import load_hyperparams

# The shared tests' settings (sb3_mb.registry), at smaller sizes: the learning thresholds below were
# measured with these.
TINY = {
    **sb3_mb.ALGOS["mbpo"].test_kwargs,
    "model_max_epochs": 2,
    "gradient_steps": 1,
    "policy_kwargs": dict(
        net_arch=[16, 16], model_net_arch=[16, 16], model_ensemble_size=3, model_n_elites=2
    ),
}


# Doing nothing returns about -23; heading straight for the origin about -4.
PointMass = functools.partial(_PointMass, step_size=0.1, n_steps=30)


def _tiny_mbpo(**kwargs):
    params = dict(TINY)
    params.update(kwargs)
    return MBPO("MlpPolicy", make_vec_env("Pendulum-v1", n_envs=1, seed=0), seed=0, **params)


OBS_SPACE, ACT_SPACE = spaces.Box(-1, 1, (2,), np.float32), spaces.Box(-1, 1, (1,), np.float32)


# ------------------------------------------------------------------------------ schedules, buffers
def test_truncated_linear_schedule_matches_mbrl_lib():
    hopper = (20, 150, 1, 5)
    assert truncated_linear(hopper, 1) == 1 and truncated_linear(hopper, 20) == 1
    assert truncated_linear(hopper, 85) == pytest.approx(3.0)
    assert truncated_linear(hopper, 150) == 5 and truncated_linear(hopper, 1000) == 5
    assert truncated_linear((0, 20, 0.0, 0.95), 10) == pytest.approx(0.475)
    model = _tiny_mbpo(rollout_schedule=(1, 3, 1, 5))
    model.num_timesteps = 50 + 2 * 50  # epoch 2 -> x = 3 -> length 5
    assert model.epoch == 2 and model.rollout_length == 5


def test_model_buffer_extend_wraps_and_resize_keeps_newest():
    buf = ModelReplayBuffer(5, OBS_SPACE, ACT_SPACE, device="cpu")

    def batch(start, n):
        x = np.arange(start, start + n, dtype=np.float32)
        return np.stack([x, x], 1), x[:, None], np.stack([x, x], 1) + 1, x, np.zeros(n)

    buf.extend(*batch(0, 3))
    assert buf.size() == 3 and not buf.full
    buf.extend(*batch(3, 4))
    assert buf.full and buf.size() == 5
    assert sorted(buf.rewards[:, 0].tolist()) == [2, 3, 4, 5, 6]
    small = buf.resized(3)
    assert sorted(small.rewards[: small.size(), 0].tolist()) == [4, 5, 6]
    big = buf.resized(10)
    assert big.size() == 5 and big.rewards[:5, 0].tolist() == [2, 3, 4, 5, 6]


def _mixed_buffer(mixing, ratio, n_model=50):
    """Real transitions with reward 0, model transitions with reward 1 (a batch's reward sum counts them)."""
    buf = MBPOReplayBuffer(50, OBS_SPACE, ACT_SPACE, "cpu", model_buffer_size=50, model_data_mixing=mixing)
    for _ in range(50):
        obs = np.zeros((1, 2), np.float32)
        buf.add(obs, obs, np.zeros((1, 1), np.float32), np.zeros(1), np.zeros(1), [{}])
    zeros = np.zeros((n_model, 2), np.float32)
    buf.model_buffer.extend(zeros, zeros[:, :1], zeros, np.ones(n_model), np.zeros(n_model))
    buf.model_data_ratio = ratio
    return buf


def test_mixed_buffer_ratio_in_sample_mode():
    buf = _mixed_buffer("sample", 0.25)
    assert buf.sample(8).rewards.sum() == 2  # round(0.25 * 8) model transitions in every batch
    assert buf.sample(7).rewards.sum() == 2  # round(1.75)
    buf.model_data_ratio = 1.0
    assert buf.sample(8).rewards.sum() == 8
    buf.model_data_ratio = 0.0
    assert buf.sample(8).rewards.sum() == 0
    assert (buf.n_samples, buf.n_model_samples) == (31, 12)


def test_mixed_buffer_ratio_in_batch_mode():
    buf = _mixed_buffer("batch", 1.0)
    assert buf.sample(8).rewards.sum() == 8
    buf.model_data_ratio = 0.0
    assert buf.sample(8).rewards.sum() == 0
    np.random.seed(0)  # noqa: NPY002 (SB3 samples with the global NumPy state)
    buf.model_data_ratio = 0.5
    sums = [buf.sample(4).rewards.sum().item() for _ in range(200)]
    assert set(sums) == {0.0, 4.0} and 0.4 < np.mean(sums) / 4 < 0.6  # whole batches, half of them model
    assert buf.n_model_samples == 8 + sum(sums)


def test_mixed_buffer_uses_model_data_only_when_present():
    for mixing in ("batch", "sample"):
        empty = _mixed_buffer(mixing, 1.0, n_model=0)
        assert empty.sample(8).rewards.sum() == 0 and empty.n_model_samples == 0
    # "batch": a model buffer smaller than the batch gives real batches; "sample" draws what it has.
    assert _mixed_buffer("batch", 1.0, n_model=4).sample(8).rewards.sum() == 0
    assert _mixed_buffer("sample", 1.0, n_model=4).sample(8).rewards.sum() == 8
    with pytest.raises(ValueError, match="model_data_mixing"):
        MBPOReplayBuffer(10, OBS_SPACE, ACT_SPACE, model_data_mixing="bogus")


def test_mixed_buffer_device_reaches_the_model_buffer_and_resize_keeps_data():
    buf = _mixed_buffer("batch", 0.5)
    buf.device = "meta"
    assert buf.device == buf.model_buffer.device == torch.device("meta")
    buf.device = "cpu"
    buf.resize_model_buffer(20)
    assert buf.model_buffer.buffer_size == 20 and buf.model_buffer.size() == 20
    assert buf.model_buffer.device == torch.device("cpu")


def test_replay_buffer_class_must_be_mbpos():
    class Custom(MBPOReplayBuffer):
        pass

    assert isinstance(_tiny_mbpo(replay_buffer_class=Custom).replay_buffer, Custom)
    assert isinstance(_tiny_mbpo(replay_buffer_class=None).replay_buffer, MBPOReplayBuffer)
    with pytest.raises(ValueError, match="MBPOReplayBuffer"):
        _tiny_mbpo(replay_buffer_class=ReplayBuffer)


# ------------------------------------------------------------------------------------------ model losses
# The losses read predictions through the model's layout: 3 state deltas then the reward (Pendulum).
DYNAMICS = DynamicsModel(3, 1, ensemble_size=2, net_arch=[8], deterministic=True)


@pytest.fixture(scope="module")
def policy():
    torch.manual_seed(0)
    return _tiny_mbpo(policy_kwargs=dict(net_arch=[32, 32])).policy


def _direct_gradient(policy, state, k):
    """grad_s V_k(s) for one value function alone (no shared .grad accumulation)."""
    s = state.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(mean_action_values(policy, s)[:, k].sum(), s)
    return grad


def test_vagram_cache_is_keyed_by_replay_index_and_invalidated(policy):
    torch.manual_seed(1)
    table = torch.randn(20, 3)
    loss = VaGraMLoss(DYNAMICS, bounded=True, clip_quantile=None)
    loss.begin_training(policy, table, critic_version=0)
    idx = torch.tensor([[0, 1, 2, 3], [5, 6, 7, 0]])  # members see different transitions
    pred, target = torch.randn(2, 4, 4), torch.randn(2, 4, 4)
    value = loss(pred, None, target, idx)
    assert value.shape == (2,) and loss.cache.n_computed == 7
    # each member reads the gradient of its own transition, four independent value functions
    grads = loss.cache.values
    for row in (0, 5, 7):
        for k in range(4):
            torch.testing.assert_close(grads[row, k], _direct_gradient(policy, table[row : row + 1], k)[0])
    # the loss is the gradient-weighted squared error + reward error
    d, dr = pred[..., :3] - target[..., :3], pred[..., 3] - target[..., 3]
    g = grads[idx]  # (2, 4, 4, 3)
    expected = ((g * d.unsqueeze(2)) ** 2).sum(-1).mean(-1) + dr**2
    torch.testing.assert_close(value, expected.mean(-1))
    # a second epoch computes nothing new; a changed critic invalidates
    loss(pred, None, target, idx)
    assert loss.cache.n_computed == 7
    loss.begin_training(policy, table, critic_version=0)
    assert loss.cache.n_computed == 7
    loss.begin_training(policy, table, critic_version=1)
    assert loss.cache.n_computed == 0
    loss(pred, None, target, idx)
    assert loss.cache.n_computed == 7


def test_vagram_unbounded_and_mse_warmup(policy):
    table = torch.randn(10, 3)
    loss = VaGraMLoss(DYNAMICS, bounded=False, clip_quantile=None)
    loss.begin_training(policy, table, critic_version=0)
    idx = torch.arange(6).view(1, 6)
    pred, target = torch.randn(1, 6, 4), torch.randn(1, 6, 4)
    value = loss(pred, None, target, idx)
    g = loss.cache.values[idx]
    d, dr = pred[..., :3] - target[..., :3], pred[..., 3] - target[..., 3]
    expected = ((g * d.unsqueeze(2)).sum(-1) ** 2).mean(-1) + dr**2
    torch.testing.assert_close(value, expected.mean(-1))
    loss.add_mse = True
    torch.testing.assert_close(loss(pred, None, target, idx), value + ((pred - target) ** 2).mean(dim=(1, 2)))


def test_vagram_gradient_clipping_at_batch_quantile():
    loss = VaGraMLoss(DynamicsModel(2, 1), clip_quantile=0.95)
    grads = torch.zeros(1, 20, 1, 2)
    grads[..., 0] = 1.0
    grads[0, 7, 0] = torch.tensor([60.0, 80.0])  # norm 100
    clipped = loss.clip(grads)
    q = 1 + 0.05 * 99  # 0.95 quantile of nineteen 1s and one 100 (linear interpolation)
    torch.testing.assert_close(clipped[0, 7, 0].norm(), torch.tensor(q), rtol=1e-4, atol=0)
    torch.testing.assert_close(clipped[0, 7, 0] / q, torch.tensor([0.6, 0.8]), rtol=1e-4, atol=0)
    others = torch.arange(20) != 7
    torch.testing.assert_close(clipped[0, others], grads[0, others])


def test_itervaml_loss_values_and_gradient(policy):
    table = torch.randn(10, 3)
    loss = IterVAMLLoss(DYNAMICS)
    loss.begin_training(policy, table, critic_version=0)
    idx = torch.tensor([[1, 2, 3], [4, 5, 1]])
    target = torch.randn(2, 3, 4)
    exact = target.clone().requires_grad_(True)
    value = loss(exact, None, target, idx)
    torch.testing.assert_close(value, torch.zeros(2))  # d = 0, reward exact
    pred = (target + 0.1 * torch.randn(2, 3, 4)).requires_grad_(True)
    value = loss(pred, None, target, idx)
    with torch.no_grad():
        v_real = mean_action_values(policy, table[idx].view(-1, 3)).view(2, 3, 4)
        v_pred = mean_action_values(policy, (table[idx] + pred[..., :3] - target[..., :3]).view(-1, 3)).view(
            2, 3, 4
        )
    expected = ((v_pred - v_real) ** 2).mean(-1) + (pred[..., 3] - target[..., 3]) ** 2
    torch.testing.assert_close(value, expected.mean(-1).detach())
    value.sum().backward()
    assert pred.grad is not None and pred.grad[..., :3].abs().sum() > 0


def test_make_model_loss_names():
    assert make_model_loss("nll", DYNAMICS) == "nll" and make_model_loss("mse", DYNAMICS) == "mse"
    vagram = make_model_loss("vagram", DYNAMICS)
    assert isinstance(vagram, VaGraMLoss) and vagram.bounded and vagram.model is DYNAMICS
    assert not make_model_loss("vagram_unbounded", DYNAMICS).bounded
    assert isinstance(make_model_loss("itervaml", DYNAMICS), IterVAMLLoss)
    with pytest.raises(ValueError, match="model_loss"):
        make_model_loss("bogus", DYNAMICS)
    with pytest.raises(ValueError, match="model_loss"):
        _tiny_mbpo(model_loss="bogus")


# ------------------------------------------------------------------------------------------ algorithm
def test_learn_logs_trains_model_and_fills_model_buffer():
    model = _tiny_mbpo(model_loss="vagram")
    model.learn(150)
    model_buffer = model.replay_buffer.model_buffer
    assert model._model_train_count >= 2 and model_buffer.size() > 0
    # capacity: rollout_length (2 at epoch 2) * n_rollouts_per_step * epoch_length * model_retain_epochs
    assert model.rollout_length == 2 and model_buffer.buffer_size == 2 * 4 * 50
    assert model.dynamics.deterministic and model.dynamics is model.policy.dynamics
    loss = model._model_loss_fn
    model.train_dynamics()
    model.rollout_model()
    logged = model.logger.name_to_value
    keys = (
        "model/vagram_train_loss",
        "model/vagram_holdout_loss",
        "model/n_epochs",
        "model/rollout_length",
        "model/model_sample_fraction",
    )
    for key in keys:
        assert key in logged, key
    assert "model/elites" in logged
    # the gradient cache belongs to the critic of the last model training ...
    n_real = model.replay_buffer.size()
    assert loss._version == model._n_updates and 0 < loss.cache.n_computed <= n_real
    known = loss.cache.known
    # ... and is rebuilt after the critic changed (SAC updates between two model trainings)
    model._last_model_train = model.num_timesteps  # no model training inside train()
    model.train(gradient_steps=2, batch_size=32)
    assert loss._version != model._n_updates
    model.train_dynamics()
    assert loss._version == model._n_updates and 0 < loss.cache.n_computed <= n_real
    assert loss.cache.known is not known  # reset and refilled


def test_save_load_keeps_the_model_in_the_policy(tmp_path):
    model = _tiny_mbpo(policy_kwargs={**TINY["policy_kwargs"], "log_std_bounds": (-5, 2)})
    model.learn(120)
    norm_mean = model.dynamics.input_normalizer.mean.clone()
    assert norm_mean.abs().sum() > 0
    model.save(tmp_path / "mbpo.zip")
    loaded = MBPO.load(tmp_path / "mbpo.zip")
    assert loaded.dynamics is loaded.policy.dynamics
    torch.testing.assert_close(loaded.dynamics.input_normalizer.mean, norm_mean)
    for key, value in model.dynamics.state_dict().items():
        torch.testing.assert_close(loaded.dynamics.state_dict()[key], value, rtol=0, atol=0)
    for key, value in model.model_optimizer.state_dict()["state"][0].items():
        torch.testing.assert_close(loaded.model_optimizer.state_dict()["state"][0][key], value)
    assert loaded.dynamics.elite_idx.tolist() == model.dynamics.elite_idx.tolist()
    assert loaded.actor.log_std_bounds == (-5.0, 2.0) and loaded.dynamics.ensemble_size == 3
    assert loaded.termination_fn is no_termination


def test_sb3_save_load_replay_buffer_round_trips_both_buffers(tmp_path):
    model = _tiny_mbpo()
    model.learn(120)
    real, sim = model.replay_buffer, model.replay_buffer.model_buffer
    assert sim.size() > 0
    # As if saved on another device: SB3's load sets the buffer's device, which must reach the model buffer.
    sim.device = torch.device("meta")
    model.save_replay_buffer(tmp_path / "buffers.pkl")
    loaded = _tiny_mbpo()
    loaded.load_replay_buffer(tmp_path / "buffers.pkl")
    buffer = loaded.replay_buffer
    assert isinstance(buffer, MBPOReplayBuffer)
    assert buffer.size() == real.size() and buffer.model_buffer.size() == sim.size()
    np.testing.assert_array_equal(buffer.observations, real.observations)
    np.testing.assert_array_equal(buffer.model_buffer.rewards, sim.rewards)
    np.testing.assert_array_equal(buffer.model_buffer.next_observations, sim.next_observations)
    assert buffer.device == buffer.model_buffer.device == loaded.device
    loaded.replay_buffer.model_data_ratio = 1.0
    assert buffer.sample(8).observations.device == loaded.device
    loaded.learn(60, reset_num_timesteps=False)  # trains on the loaded data


def test_mbpo_of_an_env_alone():
    model = MBPO("Pendulum-v1", **TINY)
    assert isinstance(model.policy, MBPOPolicy) and model.env.num_envs == 1
    model = MBPO(make_vec_env("Pendulum-v1", n_envs=1), **TINY)
    assert isinstance(model.policy, MBPOPolicy)
    with pytest.raises(ValueError, match="MBPOPolicy"):
        MBPO(SACPolicy, "Pendulum-v1", **TINY)


def test_model_head_follows_model_loss():
    assert not _tiny_mbpo(model_loss="nll").dynamics.deterministic
    assert _tiny_mbpo(model_loss="mse").dynamics.deterministic
    ok = _tiny_mbpo(model_loss="vagram", policy_kwargs={**TINY["policy_kwargs"], "model_deterministic": True})
    assert ok.dynamics.deterministic
    for loss, deterministic in (("nll", True), ("vagram", False)):
        kwargs = {**TINY["policy_kwargs"], "model_deterministic": deterministic}
        with pytest.raises(ValueError, match="contradicts model_loss"):
            _tiny_mbpo(model_loss=loss, policy_kwargs=kwargs)


def test_log_std_bounds_clamp_the_actor():
    obs = torch.zeros(4, 3)
    for bounds, expected in (((-5, 2), -5.0), (None, -10.0), ((-20, -12), -12.0)):
        kwargs = dict(TINY["policy_kwargs"])
        if bounds is not None:
            kwargs["log_std_bounds"] = bounds
        actor = _tiny_mbpo(policy_kwargs=kwargs).actor
        with torch.no_grad():
            actor.log_std.weight.zero_()
            actor.log_std.bias.fill_(-10.0)  # inside SB3's [-20, 2]: only other bounds change it
        _, log_std, _ = actor.get_action_dist_params(obs)
        torch.testing.assert_close(log_std, torch.full((4, 1), expected))
    with pytest.raises(ValueError, match="log_std_bounds"):
        _tiny_mbpo(policy_kwargs={**TINY["policy_kwargs"], "log_std_bounds": (2, -5)})


def test_termination_fn_lookup_and_override():
    assert _tiny_mbpo().termination_fn is no_termination  # Pendulum-v1

    def custom(obs, act, next_obs):
        return next_obs[..., 0] > 0

    model = _tiny_mbpo(termination_fn=custom)
    assert model.model_env.termination_fn is custom
    with pytest.warns(UserWarning, match="never terminate"):
        MBPO("MlpPolicy", make_vec_env(PointMass, n_envs=1), **TINY)
    with pytest.raises(ValueError, match="action space"):
        MBPO("MlpPolicy", "CartPole-v1")


@functools.cache
def _point_mass_return(model_loss: str = "nll", model_data_ratio: float = 0.5) -> float:
    """Mean return over 10 episodes after 400 env steps of MBPO on PointMass (no-op: about -23, optimum: -4).

    The model trains to early stopping (patience 3, at most 200 epochs): with the former cap of 20 epochs (40
    gradient steps on 80 transitions) its variance was still that of the data and its sampled transitions
    were noise (next-state error 0.06 where the state moves by 0.045); it scored -9.3, below a model that
    predicts nothing (-8.8). ``model_data_ratio=0`` is plain SAC with the same settings.
    """
    model = MBPO(
        "MlpPolicy",
        make_vec_env(PointMass, n_envs=1, seed=0),
        seed=0,
        model_loss=model_loss,
        termination_fn=no_termination,
        learning_starts=100,
        model_train_freq=100,
        epoch_length=100,
        n_rollouts_per_step=20,
        rollout_schedule=(0, 1, 1, 1),
        model_data_ratio_schedule=(0, 1, model_data_ratio, model_data_ratio),
        model_data_mixing="sample",
        model_batch_size=64,
        model_max_epochs=200,
        model_patience=3,
        gradient_steps=5,
        batch_size=128,
        gamma=0.95,
        policy_kwargs=dict(
            net_arch=[64, 64], model_net_arch=[64, 64], model_ensemble_size=5, model_n_elites=3
        ),
    )
    model.learn(400)
    mean_return, _ = evaluate_policy(model, make_vec_env(PointMass, n_envs=1, seed=100), n_eval_episodes=10)
    return float(mean_return)


@pytest.mark.parametrize("model_loss", ["nll", "mse", "vagram", "vagram_unbounded", "itervaml"])
def test_learns_point_mass_close_to_plain_sac(model_loss):
    """Model data (half of every batch) cost at most 3 against plain SAC with the same settings and budget
    (model data off: -3.9, the optimum). Measured: nll -4.8, mse -5.9, vagram -6.1, vagram_unbounded -6.1,
    itervaml -5.9; a model that predicts nothing (next state = state, reward 0) scores -8.9 and fails, as did
    the former 20-epoch model (-9.3), which the former bound (-12, model-free -3.9) let pass. On this task
    and budget no model loss beats plain SAC."""
    plain_sac = _point_mass_return(model_data_ratio=0.0)
    assert plain_sac >= -5, plain_sac
    mean_return = _point_mass_return(model_loss)
    assert mean_return >= plain_sac - 3.0, (mean_return, plain_sac)


# The zoo's Pendulum-v1 entry (hyperparams/mbpo.yml), so that its stated result is the one tested here.
PENDULUM_KWARGS = load_hyperparams("mbpo", "Pendulum-v1")


@pytest.mark.slow
@pytest.mark.timeout(1800)  # 788 s on a machine shared by 4 processes (the default limit is 600 s)
def test_pendulum_reaches_minus_400_within_3000_steps():
    """Default loss (NLL) and ensemble (7 x 4 x 200): mean return >= -400 over 5 episodes after 1500 steps
    (the issue's bound is 3000; the 3 benchmark seeds cross -200 after 750-1250)."""
    model = MBPO("MlpPolicy", make_vec_env("Pendulum-v1", n_envs=1, seed=0), seed=0, **PENDULUM_KWARGS)
    model.learn(1500)
    mean_return, _ = evaluate_policy(
        model, make_vec_env("Pendulum-v1", n_envs=1, seed=1000), n_eval_episodes=5
    )
    assert mean_return >= -400, mean_return


def test_diverging_sac_is_a_clear_error_naming_the_loss_not_nan_weights():
    """SAC's losses are computed inside SB3's SAC.train: their gradients are checked before every step."""
    model = _tiny_mbpo(learning_rate=1e30, gradient_steps=3)
    with pytest.raises(
        FloatingPointError, match=r"^MBPO: the gradient of the SAC (critic|actor) loss is not finite"
    ):
        model.learn(300)
    assert all(torch.isfinite(p).all() for p in model.policy.parameters()), "the weights turned NaN"
    assert model.replay_buffer.size() < 300
