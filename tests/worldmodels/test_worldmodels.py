"""WorldModels, the algorithm: stages and logging, CMA-ES in the real env and in the dream, images and
discrete actions, worker processes, save / load / resume.

The learning check runs on CartPole-v1 from state (MlpPolicy: an MLP VAE; a linear C on ``[z, h]`` with two
actions, the argmax of two outputs): 30 random episodes, then V, M and 8 CMA-ES generations of 12 candidates x
2 episodes in the real env. It measures the deterministic return of C over 10 evaluation episodes against the
uniformly random policy's (about 18; C reached 224 at seed 0 in 15 s).
"""

from __future__ import annotations

import copy
import functools

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import Image as LoggedImage
from stable_baselines3.common.logger import KVWriter, Logger, Video
from stable_baselines3.common.vec_env import VecNormalize

from sb3_mb import WorldModels
from sb3_mb.worldmodels import CnnPolicy, DreamEnv, MlpPolicy, WorldModelsState

SMALL = dict(
    n_random_rollouts=3,
    vae_batch_size=16,
    vae_epochs=2,
    mdn_epochs=1,
    batch_size=4,
    sequence_length=8,
    population_size=4,
    rollouts_per_candidate=2,
    n_generations=1,
    max_episode_steps=30,
    policy_kwargs=dict(z_dim=4, hidden_size=8, n_mixtures=2, mlp_hidden_sizes=(16,)),
)


class _Recorder(KVWriter):
    def __init__(self):
        self.records: list[dict] = []

    def write(self, key_values, key_excluded, step=0):
        self.records.append(dict(key_values))


class _RandomPolicy:
    """Uniformly random actions of one env, for evaluate_policy."""

    def __init__(self, action_space):
        self.action_space = action_space

    def predict(self, observation, state=None, episode_start=None, deterministic=False):
        return np.array([self.action_space.sample()]), None


class _ImageEnv(gym.Env):
    """96x96 RGB frames (channel-last), brightness following a position; Discrete(3) moves it; 12 steps."""

    observation_space = spaces.Box(0, 255, (96, 96, 3), np.uint8)
    action_space = spaces.Discrete(3)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.position, self.t = float(self.np_random.uniform(-1, 1)), 0
        return self._frame(), {}

    def _frame(self):
        return np.full((96, 96, 3), int(127 + 120 * self.position), np.uint8)

    def step(self, action):
        self.position = float(np.clip(self.position + 0.2 * (int(action) - 1), -1, 1))
        self.t += 1
        return self._frame(), -abs(self.position), False, self.t >= 12, {}


def test_stages_run_and_log_their_statistics():
    model = WorldModels("MlpPolicy", "CartPole-v1", seed=0, **SMALL)
    recorder = _Recorder()
    model.set_logger(Logger(None, [recorder]))
    model.learn(200)
    assert model.es is not None and model.es.generation == 1
    keys = set().union(*recorder.records)
    for key in [
        "train/vae_loss",
        "train/vae_reconstruction",
        "train/vae_kl",
        "train/mdn_nll",
        "train/mdn_loss",
    ]:
        assert key in keys, key
    for key in ["controller/best", "controller/mean", "controller/sigma", "controller/generation"]:
        assert key in keys, key
    # C took CMA-ES's mean, and the training env was reset and collected on after the scoring episodes.
    np.testing.assert_allclose(model.policy.controller.get_vector(), model.es.mean, rtol=1e-6, atol=1e-7)
    assert model.num_timesteps == 200


def test_cma_es_controller_beats_random_in_the_real_env():
    """Module docstring. Threshold: C's mean return over 10 episodes >= 3x the random policy's and 60."""
    model = WorldModels(
        "MlpPolicy",
        "CartPole-v1",
        seed=0,
        vae_learning_rate=1e-3,
        n_random_rollouts=30,
        vae_epochs=50,
        vae_batch_size=64,
        mdn_epochs=5,
        batch_size=8,
        sequence_length=20,
        population_size=12,
        rollouts_per_candidate=2,
        n_generations=8,
        sigma0=1.0,
        max_episode_steps=200,
        policy_kwargs=dict(z_dim=4, hidden_size=16, mlp_hidden_sizes=(32,)),
    )
    model.learn(700)
    assert model.es is not None and model.es.generation == 8
    env = make_vec_env("CartPole-v1", n_envs=1, seed=100)
    trained, _ = evaluate_policy(model, env, n_eval_episodes=10)

    env.action_space.seed(0)
    random_return, _ = evaluate_policy(_RandomPolicy(env.action_space), env, n_eval_episodes=10)
    assert trained > max(3 * random_return, 60), (trained, random_return)


@pytest.mark.slow
def test_dream_trained_controller_beats_random_in_the_real_env():
    """C trained only in the dream (M's reward and sampled terminations), scored in the real env: 30 random
    episodes, M on 5-step sequences, 8 generations of 12 x 2 dream episodes. Measured at seed 0: 67 +- 26
    against the random policy's 18 (16 s). Threshold: at least 2x the random return and 40."""
    model = WorldModels(
        "MlpPolicy",
        "CartPole-v1",
        seed=0,
        vae_learning_rate=1e-3,
        n_random_rollouts=30,
        vae_epochs=50,
        vae_batch_size=64,
        mdn_epochs=100,
        batch_size=32,
        sequence_length=5,
        population_size=12,
        rollouts_per_candidate=2,
        n_generations=8,
        sigma0=1.0,
        controller_env="dream",
        dream_max_episode_steps=200,
        policy_kwargs=dict(z_dim=4, hidden_size=16, mlp_hidden_sizes=(32,)),
    )
    model.learn(700)
    assert model.es is not None and model.es.generation == 8
    env = make_vec_env("CartPole-v1", n_envs=1, seed=100)
    trained, _ = evaluate_policy(model, env, n_eval_episodes=10)
    env.action_space.seed(0)
    random_return, _ = evaluate_policy(_RandomPolicy(env.action_space), env, n_eval_episodes=10)
    assert trained > max(2 * random_return, 40), (trained, random_return)


def test_controller_trains_in_the_dream():
    model = WorldModels(
        "MlpPolicy", "CartPole-v1", seed=0, controller_env="dream", dream_max_episode_steps=15, **SMALL
    )
    model.learn(150)
    dream = model.dream_env()
    assert isinstance(dream, DreamEnv) and dream.temperature == model.temperature
    assert model.es.generation == 1
    # The dream's first latents are V's posteriors of the stored first frames.
    assert len(dream.initial_mu) == model.replay_buffer.n_episodes_added


def test_images_and_discrete_actions():
    """96x96 channel-last frames: SB3 transposes them, V resizes them to 64x64; C picks one of 3 actions; C is
    scored in-process on the training env (channel-last there) and in the dream."""
    for controller_env in ("real", "dream"):
        model = WorldModels(
            _ImageEnv(),
            seed=0,
            controller_env=controller_env,
            dream_max_episode_steps=10,
            **{**SMALL, "policy_kwargs": dict(z_dim=4, hidden_size=8, n_mixtures=2, cnn_depth=4)},
        )
        assert model.policy_class is CnnPolicy
        assert model.observation_space.shape == (3, 96, 96)
        recorder = _Recorder()
        model.set_logger(Logger(None, [recorder]))
        model.learn(60)
        assert model.es.generation == 1
        (image,) = [
            r["train/vae_reconstructions"] for r in recorder.records if "train/vae_reconstructions" in r
        ]
        assert isinstance(image, LoggedImage) and tuple(image.image.shape) == (3, 8 * 64, 2 * 64)
        (video,) = [record["train/dream"] for record in recorder.records if "train/dream" in record]
        assert isinstance(video, Video) and tuple(video.frames.shape) == (1, 9, 3, 64, 2 * 64)  # 8 steps
        assert float(video.frames.min()) >= 0 and float(video.frames.max()) <= 1
        frames = np.stack([_ImageEnv().reset(seed=s)[0] for s in range(2)])
        actions, state = model.predict(frames, deterministic=True)  # channel-last, as the raw env gives
        assert actions.shape == (2,) and all(model.action_space.contains(int(a)) for a in actions)
        assert isinstance(state, WorldModelsState) and state.hidden.shape == (2, 8)
        transposed, _ = model.predict(np.moveaxis(frames, -1, 1), deterministic=True)
        np.testing.assert_array_equal(actions, transposed)


def test_box_actions_stay_in_bounds():
    env = gym.make("Pendulum-v1")
    model = WorldModels(env, seed=0, **SMALL)
    assert model.policy_class is MlpPolicy
    model.policy.controller.set_vector(np.full(model.policy.controller.n_parameters, 5.0))
    obs = np.stack([env.observation_space.sample() for _ in range(4)])
    actions, _ = model.predict(obs, deterministic=True)
    assert actions.shape == (4, 1) and np.all(np.abs(actions) <= 2.0)
    assert np.abs(actions).max() > 1.5  # large weights saturate the tanh: C's output reaches the bounds


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(controller_env="imagination"), "controller_env"),
        (dict(n_workers=2), "controller_env_fn"),
    ],
)
def test_bad_settings_are_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        WorldModels("MlpPolicy", "CartPole-v1", **kwargs)


def test_scoring_in_a_training_env_it_cannot_use_is_refused_before_collecting():
    env = VecNormalize(make_vec_env("CartPole-v1", n_envs=1, seed=0))
    model = WorldModels(env, seed=0, **SMALL)
    with pytest.raises(ValueError, match="VecNormalize; pass controller_env_fn"):
        model.learn(100)
    assert model.num_timesteps == 0
    # In the dream, or with an env of its own, C needs no training env.
    WorldModels(env, seed=0, controller_env="dream", **SMALL).learn(100)


def test_unbounded_box_actions_are_refused():
    class Unbounded(gym.Env):
        observation_space = spaces.Box(-1, 1, (2,), np.float32)
        action_space = spaces.Box(-np.inf, np.inf, (1,), np.float32)

    with pytest.raises(ValueError, match="bounded Box action space"):
        WorldModels("MlpPolicy", Unbounded())


def test_generation_does_not_depend_on_the_number_of_workers():
    """One generation from the same CMA-ES state, scored in-process and by 2 worker processes: the same
    statistics and the same new mean."""
    model = WorldModels(
        "MlpPolicy",
        "CartPole-v1",
        seed=0,
        controller_env_fn=functools.partial(gym.make, "CartPole-v1"),
        **{**SMALL, "n_generations": 0},
    )
    model.learn(100)
    assert model.es is not None and model.es.generation == 0
    start, controller = copy.deepcopy(model.es), model.policy.controller.get_vector()
    results = {}
    for n_workers in (1, 2):
        model.es, model.n_workers, model.n_generations = copy.deepcopy(start), n_workers, 1
        model.policy.controller.set_vector(controller)
        stats = model.train_controller()
        results[n_workers] = (stats, model.es.mean.copy())
    assert results[1][0] == results[2][0]
    np.testing.assert_array_equal(results[1][1], results[2][1])


def test_save_load_resumes_every_stage(tmp_path):
    """V, M and C weights, both optimizers and CMA-ES's state come back; the reloaded agent's next generation
    is the one the original would have run, and a resumed ``learn`` continues the generation count."""
    model = WorldModels("MlpPolicy", "CartPole-v1", seed=0, **SMALL)
    model.learn(150)
    model.save(tmp_path / "wm.zip")
    loaded = WorldModels.load(tmp_path / "wm.zip", env=make_vec_env("CartPole-v1", n_envs=1, seed=5))
    assert loaded.es is not None and loaded.es.generation == model.es.generation == 1
    np.testing.assert_array_equal(loaded.es.mean, model.es.mean)
    assert loaded.es.sigma == model.es.sigma
    for name in ("optimizer", "vae_optimizer"):
        ours, theirs = getattr(model.policy, name).state_dict(), getattr(loaded.policy, name).state_dict()
        for key, value in ours["state"].items():
            for field, tensor in value.items():
                th.testing.assert_close(theirs["state"][key][field], tensor, rtol=0, atol=0)

    # The next generation: same candidates (CMA-ES's RNG is saved), same seeds, same V and M: same result.
    expected = model.train_controller()
    loaded.set_logger(Logger(None, []))  # learn sets it; here train_controller is called alone
    assert loaded.train_controller() == expected
    np.testing.assert_array_equal(loaded.es.mean, model.es.mean)

    # Resuming learn: the random rollouts are collected again (the buffer is not in the zip), then a round
    # trains V and M further and continues CMA-ES.
    loaded.learn(150, reset_num_timesteps=False)
    assert loaded.es.generation == 3 and loaded.num_timesteps == 300


@pytest.mark.parametrize(
    "env_id, env_kwargs",
    [
        ("sb3_mb/CartpoleBalancePixels-v0", dict(action_repeat=8, max_episode_steps=12)),
        ("sb3_mb/AirstrikerContest-v0", dict(size=(32, 32), max_episode_steps=12)),
    ],
)
def test_cnn_policy_learns_and_predicts_on_the_pixel_cartpole_and_the_sonic_chain(env_id, env_kwargs):
    """``WorldModels("CnnPolicy", env).learn(n)`` on the registered pixel cartpole (Box actions) and the
    retro contest chain (Discrete actions, Airstriker's shipped ROM): every stage runs, C acts in bounds."""
    env = gym.make(env_id, **env_kwargs)
    try:
        kwargs = {**SMALL, "max_episode_steps": 12, "n_random_rollouts": 2}
        kwargs["policy_kwargs"] = dict(z_dim=4, hidden_size=8, n_mixtures=2, cnn_depth=4)
        model = WorldModels("CnnPolicy", env, seed=0, **kwargs)
        model.learn(30)
        assert model.es.generation == 1
        obs = model.get_env().reset()
        actions, _ = model.predict(obs, deterministic=True)
        space = model.action_space
        for action in actions:
            action = int(action) if isinstance(space, spaces.Discrete) else np.asarray(action, space.dtype)
            assert space.contains(action)
    finally:
        env.close()
