"""The Sonic fork's world model (VAE5, inverse model, joint loss) and its PPO controller (WorldModelsPPO)."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.callbacks import EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.vec_env import DummyVecEnv, VecTransposeImage

from sb3_mb.worldmodels import (
    LOSS_WEIGHTS,
    VAE5,
    ForkWorldModel,
    InverseModel,
    LossWeights,
    WorldModelFeatureVecEnv,
    WorldModelsPPO,
    curiosity_reward,
    joint_loss,
)

TINY = dict(
    image_size=16,
    z_dim=8,
    hidden_size=16,
    n_mixtures=2,
    vae_channels=(8, 16),
    stem_channels=8,
    bottleneck_channels=4,
    inverse_hidden_size=16,
)
TINY_VAE = dict(image_size=16, z_dim=8, channels=(8, 16), stem_channels=8, bottleneck_channels=4)


class DotEnv(gym.Env):
    """A 16x16 RGB image of a bar that actions 0/1/2 move left / keep / right; reward = the move (or a
    constant); 20-step episodes."""

    observation_space = spaces.Box(0, 255, (16, 16, 3), np.uint8)
    action_space = spaces.Discrete(3)

    def __init__(self, constant_reward: float | None = None, episode_steps: int = 20):
        self.constant_reward, self.episode_steps = constant_reward, episode_steps

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.x, self.t = 8, 0
        return self._obs(), {}

    def _obs(self):
        image = np.zeros((16, 16, 3), np.uint8)
        image[4:12, self.x - 1 : self.x + 1] = (255, 128, 64)
        return image

    def step(self, action):
        dx = int(action) - 1
        self.x, self.t = int(np.clip(self.x + dx, 1, 15)), self.t + 1
        reward = float(dx) if self.constant_reward is None else self.constant_reward
        return self._obs(), reward, False, self.t >= self.episode_steps, {}


def _model(env=None, **kwargs):
    defaults = dict(n_steps=32, batch_size=16, n_epochs=1, world_model_learning_rate=1e-3, seed=0)
    defaults.update(kwargs)
    return WorldModelsPPO("CnnPolicy", env or DotEnv(), policy_kwargs=TINY, **defaults)


# ------------------------------------------------------------------------------------------ VAE5
def test_vae5_default_shapes():
    th.manual_seed(0)
    vae = VAE5()  # the fork's 128x128, z = 512
    images = th.randint(0, 256, (2, 3, 128, 128), dtype=th.uint8)
    mu, log_var = vae.encode(images)
    assert mu.shape == log_var.shape == (2, 512)
    assert vae.mu.in_features == 8192  # 128 channels x 8 x 8
    assert vae.decode(mu).shape == (2, 3, 128, 128)
    error, kl, z = vae.losses(images)
    assert error.shape == kl.shape == (2,) and z.shape == (2, 512)
    assert th.all(log_var.abs() <= -math.log(1e-8) + 1e-4)
    with pytest.raises(ValueError, match="divisible"):
        VAE5(image_size=100)


def test_vae5_sample_uses_half_log_var():
    # The fork's QUIRK used std = exp(log_var); here std = exp(0.5 log_var): log_var = log 4 -> std 2, not 4.
    th.manual_seed(0)
    z = VAE5.sample(th.zeros(200_000), th.full((200_000,), math.log(4.0)))
    assert abs(float(z.std()) - 2.0) < 0.02


def test_vae5_reconstruction_improves():
    th.manual_seed(0)
    vae = VAE5(**TINY_VAE)
    rng = np.random.default_rng(0)
    images = th.as_tensor(rng.integers(0, 2, (8, 3, 4, 4)).repeat(4, 2).repeat(4, 3) * 255, dtype=th.uint8)
    optimizer = th.optim.Adam(vae.parameters(), lr=3e-3)
    errors = []
    for _ in range(60):
        error, kl, _ = vae.losses(images)
        loss = (error + 0.1 * kl).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        errors.append(float(error.mean().detach()))
    assert np.mean(errors[-5:]) < 0.5 * np.mean(errors[:5]), errors


# ------------------------------------------------------------------------------------------ inverse model
def test_inverse_model_learns_actions_on_synthetic_latents():
    th.manual_seed(0)
    n_actions, z_dim = 5, 6
    directions = th.randn(n_actions, z_dim)
    model = InverseModel(z_dim, n_actions, hidden_size=64)
    optimizer = th.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(200):
        z = th.randn(256, z_dim)
        actions = th.randint(0, n_actions, (256,))
        z_next = z + directions[actions] + 0.05 * th.randn(256, z_dim)
        loss = th.nn.functional.cross_entropy(model(z, z_next), actions)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    z = th.randn(1000, z_dim)
    actions = th.randint(0, n_actions, (1000,))
    accuracy = (model(z, z + directions[actions]).argmax(-1) == actions).float().mean()
    assert accuracy > 0.95


# ------------------------------------------------------------------------------------------ joint loss
def test_joint_loss_matches_its_formula():
    error, kl, mdn, inverse = (
        th.tensor([30.0, 12.0]),
        th.tensor([4.0, -2.0]),
        th.tensor([1.5, 0.5]),
        th.tensor([2.0, 1.0]),
    )
    weights = LossWeights(kld=0.3, finv=0.07, vae=0.2)
    losses = joint_loss(error, kl, mdn, inverse, weights, n_pixels=48, z_dim=8, n_actions=3)
    recon, kld = 1000 * error / 48, 1000 * kl / 48
    expected = 0.2 * (recon + 0.3 * kld.abs()) + 1000 * mdn / 8 + 0.07 * 1000 * inverse / 3
    th.testing.assert_close(losses.loss, expected)
    th.testing.assert_close(losses.reconstruction, recon)
    th.testing.assert_close(losses.kld, kld)
    th.testing.assert_close(losses.mdn, 1000 * mdn / 8)
    th.testing.assert_close(losses.inverse, 1000 * inverse / 3)
    # each weight matters: setting one to 1 changes the loss
    for field in weights._fields:
        other = joint_loss(error, kl, mdn, inverse, weights._replace(**{field: 1.0}), 48, 8, 3)
        assert not th.allclose(other.loss, losses.loss), field


def test_loss_weight_presets():
    assert LOSS_WEIGHTS["curiosity"] == LossWeights(kld=1 / 10, finv=1 / 50, vae=1 / 8)
    assert LOSS_WEIGHTS["no_curiosity"] == LossWeights(kld=1 / 12, finv=1 / 200, vae=1 / 8)
    assert LOSS_WEIGHTS["test"] == LossWeights(kld=1 / 1024, finv=1 / 100, vae=1 / 16)
    assert LOSS_WEIGHTS["default"] == LossWeights(kld=1 / 4, finv=0.01, vae=1.0)


def test_world_model_losses_normalise_by_the_pixels_of_one_image():
    th.manual_seed(0)
    model = ForkWorldModel(3, 3, **{k: v for k, v in TINY.items()}).eval()
    images = th.randint(0, 256, (4, 3, 16, 16), dtype=th.uint8)
    next_images = th.randint(0, 256, (4, 3, 16, 16), dtype=th.uint8)
    actions = th.tensor([0, 1, 2, 1])
    state = model.initial_state(4)
    losses = model.losses(images, actions, next_images, state, weights=LOSS_WEIGHTS["test"], sample=False)
    error, kl, _ = model.vae.losses(images, sample=False)
    th.testing.assert_close(losses.reconstruction, 1000 * error / (3 * 16 * 16))  # C H W, not seq C H
    th.testing.assert_close(losses.kld, 1000 * kl / (3 * 16 * 16))
    assert losses.loss.shape == (4,) and th.isfinite(losses.loss).all()
    # z_t enters M detached: M's loss gives V's encoder a gradient only through the target z_{t+1}
    model.train()
    losses = model.losses(images[:2], actions[:2], images[:2], model.initial_state(2), sample=False)
    model.zero_grad()
    losses.mdn.sum().backward()
    assert model.vae.mu.weight.grad is not None  # through the (not detached) target


# ------------------------------------------------------------------------------------------ curiosity
def test_curiosity_reward_rules():
    stats = RunningMeanStd(shape=())
    reduction = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    reward = curiosity_reward(reduction, stats, weight=2.0, boredom=1.0)
    assert stats.count > len(reduction) - 1  # the statistics were updated first
    std = math.sqrt(stats.var)
    expected = 2.0 * ((reduction - stats.mean) / std - 1.0)
    np.testing.assert_allclose(reward, expected, rtol=1e-5)
    assert np.all(np.diff(reward) > 0)  # more learning, more reward
    # a reduction `boredom` std above the mean scores 0
    zero = curiosity_reward(np.array([stats.mean + std]), RunningMeanStd(shape=()), weight=1.0, boredom=0.0)
    assert zero.shape == (1,)
    np.testing.assert_allclose(curiosity_reward(reduction, RunningMeanStd(shape=()), 0.0, 1.0), 0.0)


def test_curiosity_only_replaces_the_extrinsic_reward():
    env = DotEnv(constant_reward=100.0, episode_steps=1000)  # no episode end inside the rollout
    model = _model(env, curiosity_weight=1.0, curiosity_only=True)
    model.learn(32)
    rewards = model.rollout_buffer.rewards
    assert np.abs(rewards).max() < 20 and np.std(rewards) > 0
    model = _model(DotEnv(constant_reward=100.0, episode_steps=1000), curiosity_weight=1.0)
    model.learn(32)
    assert abs(model.rollout_buffer.rewards.mean() - 100.0) < 5 and np.std(model.rollout_buffer.rewards) > 0


def test_advantages_are_computed_from_the_curious_rewards():
    model = _model(curiosity_weight=1.0, learning_rate=0.0)  # PPO's update leaves the critic as it was
    model.learn(32)
    buffer = model.rollout_buffer
    advantages = buffer.advantages.copy()
    with th.no_grad():
        last_values = model.policy.predict_values(th.as_tensor(model._last_obs))
    buffer.compute_returns_and_advantage(last_values, model._last_episode_starts)
    np.testing.assert_allclose(advantages, buffer.advantages, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------ the algorithm
def test_feature_wrapper_replaces_terminal_observations_and_resets_the_state():
    th.manual_seed(0)
    model = ForkWorldModel(3, 3, **TINY).eval()
    env = WorldModelFeatureVecEnv(VecTransposeImage(DummyVecEnv([lambda: DotEnv(episode_steps=3)])), model)
    features = env.reset()
    assert features.shape == (1, 8 + 16) and np.all(features[0, 8:] == 0)
    env.start_recording()
    for step in range(3):
        features, _, dones, infos = env.step(np.array([2]))
        assert bool(dones[0]) == (step == 2)
    assert infos[0]["terminal_observation"].shape == (24,)
    assert np.all(features[0, 8:] == 0)  # M's state is zeroed at the new episode
    record = env.stop_recording()
    assert record["images"].shape == (3, 1, 3, 16, 16) and record["hidden"].shape == (3, 1, 16)
    np.testing.assert_array_equal(record["next_images"][1], record["images"][2])


def test_end_to_end_save_load_and_evaluate(tmp_path):
    model = _model(curiosity_weight=0.1)
    before = [p.detach().clone() for p in model.policy.world_model.parameters()]
    model.learn(64)
    after = list(model.policy.world_model.parameters())
    assert any(not th.equal(a, b) for a, b in zip(before, after, strict=True)), (
        "the world model was not trained"
    )
    images = np.stack([DotEnv().reset()[0] for _ in range(2)])
    actions, state = model.predict(images, deterministic=True)
    assert actions.shape == (2,) and state.cell.shape == (2, 16)
    single, _ = model.predict(images[0], deterministic=True)
    assert np.shape(single) == ()
    _, carried = model.predict(images, state=state, deterministic=True)
    assert np.abs(carried.cell).sum() > 0
    _, restarted = model.predict(images, state=carried, episode_start=np.ones(2, bool), deterministic=True)
    np.testing.assert_array_equal(restarted.cell, state.cell)  # episode_start zeroes the carried state
    model.save(tmp_path / "model.zip")
    loaded = WorldModelsPPO.load(tmp_path / "model.zip")
    rng = np.random.default_rng(0)
    s1 = s2 = None
    for _ in range(5):
        obs = rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
        a1, s1 = model.predict(obs, state=s1, deterministic=True)
        a2, s2 = loaded.predict(obs, state=s2, deterministic=True)
        np.testing.assert_array_equal(a1, a2)
        np.testing.assert_array_equal(s1.cell, s2.cell)
    mean, _ = evaluate_policy(loaded, DotEnv(), n_eval_episodes=1)
    assert np.isfinite(mean)
    loaded.set_env(DotEnv())
    loaded.learn(32, reset_num_timesteps=False)
    assert loaded.num_timesteps == 96
    resumed = WorldModelsPPO.load(tmp_path / "model.zip", env=DotEnv()).learn(32, reset_num_timesteps=False)
    assert resumed.num_timesteps == 96 and isinstance(resumed.env, WorldModelFeatureVecEnv)


def test_seeded_runs_are_identical_and_a_frozen_world_model_stays():
    # made and trained in turn: both draw from the global RNG seeded at construction
    first = _model().learn(32)
    second = _model().learn(32)
    for a, b in zip(first.policy.parameters(), second.policy.parameters(), strict=True):
        assert th.equal(a, b)
    frozen = _model(train_world_model=False)
    before = [p.detach().clone() for p in frozen.policy.world_model.parameters()]
    frozen.learn(32)
    assert all(th.equal(a, b) for a, b in zip(before, frozen.policy.world_model.parameters(), strict=True))


def test_unsupported_spaces_and_settings_are_clear_errors():
    class BoxActions(DotEnv):
        action_space = spaces.Box(-1, 1, (2,), np.float32)

    with pytest.raises(ValueError, match="action space"):
        _model(BoxActions())
    with pytest.raises(ValueError, match="observation space"):
        WorldModelsPPO("CnnPolicy", "CartPole-v1")
    with pytest.raises(ValueError, match="train_world_model"):
        _model(curiosity_weight=0.1, train_world_model=False)
    with pytest.raises(ValueError, match="loss_weights"):
        _model(loss_weights="nope")


def test_env_as_first_argument_vec_envs_and_eval_callback(tmp_path):
    model = WorldModelsPPO(DotEnv(), n_steps=16, batch_size=16, n_epochs=1, policy_kwargs=TINY, seed=0)
    assert model.policy_class is WorldModelsPPO.policy_aliases["CnnPolicy"]
    model = _model(make_vec_env(DotEnv, n_envs=2, seed=0), n_steps=16, curiosity_weight=0.1)
    callback = EvalCallback(DotEnv(), eval_freq=8, n_eval_episodes=1, log_path=str(tmp_path))
    model.learn(64, callback=callback)
    assert model.num_timesteps == 64 and model.rollout_buffer.rewards.shape == (16, 2)
    assert np.isfinite(np.load(tmp_path / "evaluations.npz")["results"]).all()


def test_non_finite_reward_is_a_clear_error():
    class NaNReward(DotEnv):
        def step(self, action):
            obs, reward, terminated, truncated, info = super().step(action)
            return obs, (float("nan") if self.t == 3 else reward), terminated, truncated, info

    with pytest.raises(FloatingPointError, match=r"non-finite reward at env step 3 \(env 0\)"):
        _model(NaNReward()).learn(32)


def test_runs_on_airstriker():
    env = gym.make("sb3_mb/AirstrikerContest-v0", size=(32, 32), max_episode_steps=40)
    try:
        kwargs = dict(TINY, image_size=32, vae_channels=(8, 16, 16))
        model = WorldModelsPPO(
            "CnnPolicy", env, n_steps=32, batch_size=16, n_epochs=1, policy_kwargs=kwargs, seed=0
        )
        model.learn(64)
        mean, _ = evaluate_policy(model, model.get_env(), n_eval_episodes=1)
        assert np.isfinite(mean)
    finally:
        env.close()
