"""Shared parametrised tests over every registered algorithm (in the manner of SB3's test_save_load.py).

An algorithm joins by one line in ``sb3_mb.registry._BUILTIN``; its ``AlgoSpec`` names the test
environment and policy (``Pendulum-v1`` / ``"MlpPolicy"`` for vector observations and ``Box`` actions,
``sb3_mb/MovingBar-v0`` / ``"CnnPolicy"`` for image-only, discrete-action methods), small constructor
arguments and a learn budget. Checks that cannot apply to a method are skipped with the reason:
- the replay-buffer checks for on-policy methods (``off_policy=False``: a rollout buffer, not saved); the
  non-finite check counts the rollout buffer's steps instead;
- the float64-observation check and the non-finite observation for image test envs (uint8 frames: no
  float64 images, no NaN / inf in a frame).

Its ``test_variants`` (e.g. PlaNet's transition models, ``planet[ssm]``) go through the first two checks too.

Contract checked here:
- ``save`` / ``load`` round trip gives identical deterministic predictions (and identical parameters), for
  every algorithm and test variant;
- two runs with the same seed learn identical parameters and predictions, and another seed differs (every
  algorithm and test variant);
- ``predict`` on a single and on a vectorised observation, with and without a recurrent ``state`` and
  ``episode_start`` (RecurrentPPO's contract for stateful agents);
- ``evaluate_policy`` and ``EvalCallback`` work unchanged;
- float64 ``Box`` observations (MuJoCo's dtype) train and predict like float32 ones;
- an unsupported observation or action space raises a ``ValueError`` (the one type for every algorithm)
  naming it;
- a NaN / inf reward or observation from the env raises ``FloatingPointError`` naming the env step, before
  that step is stored;
- ``load`` of a file of another algorithm, of a plain SB3 agent, of a truncated or foreign file says so;
  ``load_replay_buffer`` refuses a buffer of another type or space and keeps the model's own;
- ``predict(..., deterministic=True)`` of a reloaded agent replays the same actions whatever the global RNGs;
- ``Algo(env)`` (an env, a ``VecEnv`` or a registered id as the only argument) picks the policy from the
  observation space and learns; ``Algo("MlpPolicy", env)`` keeps working.
"""

from __future__ import annotations

import random

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3 import SAC
from stable_baselines3.common.buffers import ReplayBuffer, RolloutBuffer
from stable_baselines3.common.callbacks import EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.preprocessing import is_image_space, is_image_space_channels_first
from stable_baselines3.common.vec_env import VecTransposeImage

import sb3_mb
from sb3_mb.common.buffers import EpisodeReplayBuffer
from sb3_mb.registry import ALGOS, get_test_spec, list_test_variants

ALGO_NAMES = sb3_mb.list_algorithms()
# Algorithms and their test variants ("planet[ssm]"): the save / load and seeded-determinism tests.
SPEC_NAMES = ALGO_NAMES + list_test_variants()


def test_at_least_one_algorithm_is_registered():
    assert ALGO_NAMES, "no algorithm registered: the shared tests below would not run"


@pytest.fixture(params=ALGO_NAMES)
def spec(request):
    return ALGOS[request.param]


@pytest.fixture(params=SPEC_NAMES)
def spec_or_variant(request):
    return get_test_spec(request.param)


def _make_model(spec, seed=0, env=None, **overrides):
    cls = spec.load_class()
    kwargs = dict(spec.test_kwargs)
    kwargs.update(overrides)
    env = env if env is not None else make_vec_env(spec.test_env, n_envs=1, seed=seed)
    return cls(spec.test_policy, env, seed=seed, **kwargs)


def _rollout_actions(model, n_envs=2, n_steps=12, seed=7):
    """Deterministic actions along a seeded trajectory, carrying the recurrent state like evaluate_policy."""
    env = make_vec_env(model._sb3_mb_spec.test_env, n_envs=n_envs, seed=seed)
    model.set_random_seed(123)
    obs = env.reset()
    state = None
    episode_start = np.ones(env.num_envs, dtype=bool)
    actions = []
    for _ in range(n_steps):
        action, state = model.predict(obs, state=state, episode_start=episode_start, deterministic=True)
        actions.append(np.array(action, copy=True))
        obs, _, dones, _ = env.step(action)
        episode_start = dones
    env.close()
    return np.stack(actions)


def _trained(spec, seed=0, **overrides):
    model = _make_model(spec, seed=seed, **overrides)
    model.learn(spec.test_timesteps)
    model._sb3_mb_spec = spec
    return model


def _flat_params(model):
    return {
        f"{name}.{key}": value.detach().cpu().clone()
        for name in model._get_torch_save_params()[0]
        for key, value in _get_module(model, name).state_dict().items()
        if th.is_tensor(value)
    }


def _get_module(model, dotted):
    obj = model
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def test_save_load_identical_predictions(spec_or_variant, tmp_path):
    spec = spec_or_variant
    model = _trained(spec)
    before = _rollout_actions(model)
    params = _flat_params(model)
    path = tmp_path / f"{spec.name}.zip"
    model.save(path)
    del model

    loaded = spec.load_class().load(path)
    loaded._sb3_mb_spec = spec
    np.testing.assert_array_equal(_rollout_actions(loaded), before)
    loaded_params = _flat_params(loaded)
    assert loaded_params.keys() == params.keys()
    for key, value in params.items():
        th.testing.assert_close(
            loaded_params[key], value, rtol=0, atol=0, msg=f"{key} changed in the round trip"
        )


def test_seeded_runs_are_identical(spec_or_variant):
    spec = spec_or_variant
    first, second = _trained(spec, seed=3), _trained(spec, seed=3)
    np.testing.assert_array_equal(_rollout_actions(first), _rollout_actions(second))
    p1, p2 = _flat_params(first), _flat_params(second)
    for key in p1:
        th.testing.assert_close(p1[key], p2[key], rtol=0, atol=0, msg=f"{key} differs between seeded runs")
    third = _trained(spec, seed=4)
    assert any(not th.equal(p1[key], _flat_params(third)[key]) for key in p1), "the seed has no effect"


def test_predict_single_and_vectorised(spec):
    model = _trained(spec)
    obs_space, act_space = model.observation_space, model.action_space
    single = obs_space.sample()
    action, state = model.predict(single, deterministic=True)
    assert np.shape(action) == act_space.shape
    assert act_space.contains(np.asarray(action, dtype=act_space.dtype))

    batch = np.stack([obs_space.sample() for _ in range(3)])
    actions, state = model.predict(batch, episode_start=np.ones(3, dtype=bool), deterministic=True)
    assert np.shape(actions) == (3, *act_space.shape)
    if spec.stateful:
        assert state is not None
        for part in state if isinstance(state, tuple) else (state,):
            assert 3 in np.shape(part), f"state part of shape {np.shape(part)} has no env dimension of size 3"
        # Carrying the state forward works, and episode_start resets it: same as starting with no state.
        model.set_random_seed(0)
        fresh, _ = model.predict(batch, state=None, episode_start=np.ones(3, dtype=bool), deterministic=True)
        model.set_random_seed(0)
        reset, _ = model.predict(batch, state=state, episode_start=np.ones(3, dtype=bool), deterministic=True)
        np.testing.assert_array_equal(fresh, reset)
        model.predict(batch, state=state, episode_start=np.zeros(3, dtype=bool), deterministic=True)
    else:
        assert state is None


def test_evaluate_policy_and_eval_callback(spec, tmp_path):
    model = _make_model(spec)
    eval_env = make_vec_env(spec.test_env, n_envs=2, seed=11)
    callback = EvalCallback(
        eval_env, eval_freq=max(spec.test_timesteps // 2, 1), n_eval_episodes=2, log_path=str(tmp_path)
    )
    model.learn(spec.test_timesteps, callback=callback)
    results = np.load(tmp_path / "evaluations.npz")
    assert results["results"].shape[0] >= 1 and np.isfinite(results["results"]).all()
    mean_reward, std_reward = evaluate_policy(model, eval_env, n_eval_episodes=2)
    assert np.isfinite(mean_reward) and np.isfinite(std_reward)


class _SpaceEnv(gym.Env):
    def __init__(self, observation_space, action_space):
        self.observation_space, self.action_space = observation_space, action_space

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


def _image_observations(spec) -> bool:
    return is_image_space(gym.make(spec.test_env).observation_space, check_channels=False)


def test_float64_observations_train_and_predict(spec):
    # float64 is the dtype of MuJoCo / dm_control observations.
    if _image_observations(spec):
        pytest.skip(f"{spec.test_env} gives uint8 frames: float64 is a dtype of vector observations")
    env = make_vec_env(
        spec.test_env,
        n_envs=1,
        seed=0,
        wrapper_class=gym.wrappers.DtypeObservation,
        wrapper_kwargs=dict(dtype=np.float64),
    )
    assert env.observation_space.dtype == np.float64
    model = _make_model(spec, env=env)
    model.learn(spec.test_timesteps)
    action, _ = model.predict(env.reset(), episode_start=np.ones(1, dtype=bool), deterministic=True)
    assert env.action_space.contains(action[0])


@pytest.mark.parametrize(
    "observation_space, action_space",
    [
        (None, spaces.MultiBinary(3)),
        (spaces.Tuple((spaces.Discrete(2), spaces.Discrete(3))), None),
    ],
    ids=["MultiBinary-action", "Tuple-observation"],
)
def test_unsupported_space_is_a_clear_error(spec, observation_space, action_space):
    # One space unsupported, the other the test env's (None), so the error is about the unsupported one.
    test_env = gym.make(spec.test_env)
    env = _SpaceEnv(observation_space or test_env.observation_space, action_space or test_env.action_space)
    with pytest.raises(
        ValueError, match="(?i)action space" if observation_space is None else "(?i)observation"
    ):
        _make_model(spec, env=env)


@pytest.mark.parametrize("given", ["env id", "gym env", "VecEnv"])
def test_env_as_first_argument_picks_the_policy(spec, given):
    cls = spec.load_class()
    env = {
        "env id": spec.test_env,
        "gym env": gym.make(spec.test_env),
        "VecEnv": make_vec_env(spec.test_env, n_envs=1, seed=0),
    }[given]
    model = cls(env, seed=0, **spec.test_kwargs)
    assert model.policy_class is cls.policy_aliases[spec.test_policy]  # chosen from the observation space
    space = gym.make(spec.test_env).observation_space
    if is_image_space(space, check_channels=False) and not is_image_space_channels_first(space):
        space = VecTransposeImage.transpose_space(space)  # SB3 moves image channels first
    assert model.env is not None and model.observation_space.shape == space.shape
    model.learn(spec.test_timesteps)
    # get_env(): the env as given (an algorithm may wrap model.env, e.g. into features)
    action, _ = model.predict(
        model.get_env().reset(), episode_start=np.ones(1, dtype=bool), deterministic=True
    )
    assert model.action_space.contains(action[0])
    if given == "VecEnv":  # the same run as the SB3 form on the same seeded VecEnv
        explicit = _make_model(spec, seed=0)
        explicit.learn(spec.test_timesteps)
        ours, theirs = _flat_params(model), _flat_params(explicit)
        assert ours.keys() == theirs.keys()
        for key, value in ours.items():
            th.testing.assert_close(
                value, theirs[key], rtol=0, atol=0, msg=f"{key} differs from Algo(policy, env)"
            )


def test_policy_alias_without_env_is_a_clear_error(spec):
    with pytest.raises(ValueError, match="needs an environment"):
        spec.load_class()(spec.test_policy)


# ------------------------------------------------------------------------------------------ loud failures
class _NonFinite(gym.Wrapper):
    """The test env whose ``bad_step``-th step (counted over episodes) returns a NaN reward or an inf
    observation."""

    def __init__(self, env, bad_step, what):
        super().__init__(env)
        self.bad_step, self.what, self.t = bad_step, what, 0

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.t += 1
        if self.t == self.bad_step:
            if self.what == "reward":
                reward = float("nan")
            else:
                obs = np.array(obs, copy=True)
                obs.flat[1] = np.inf
        return obs, reward, terminated, truncated, info


def _stored_steps(model):
    """Env steps the model holds: its replay buffer's, or the current rollout's (on-policy)."""
    buffer = model.replay_buffer if hasattr(model, "replay_buffer") else model.rollout_buffer
    if isinstance(buffer, EpisodeReplayBuffer):
        return buffer.n_transitions + buffer.n_staged_steps
    if isinstance(buffer, RolloutBuffer):
        return (buffer.buffer_size if buffer.full else buffer.pos) * buffer.n_envs
    return buffer.size() * buffer.n_envs


@pytest.mark.parametrize("what", ["reward", "observation"])
def test_non_finite_env_data_is_a_clear_error_before_it_is_stored(spec, what):
    bad_step = 7
    env = gym.make(spec.test_env)
    if what == "observation" and not np.issubdtype(env.observation_space.dtype, np.floating):
        pytest.skip(f"{spec.test_env}'s {env.observation_space.dtype} observations cannot hold NaN or inf")
    model = _make_model(spec, env=_NonFinite(env, bad_step, what))
    with pytest.raises(FloatingPointError, match=rf"non-finite {what} at env step {bad_step} \(env 0\)"):
        model.learn(spec.test_timesteps)
    assert _stored_steps(model) == bad_step - 1, "the non-finite step was stored"


def test_load_says_what_the_file_holds(spec, tmp_path):
    cls = spec.load_class()
    path = tmp_path / "model.zip"
    _make_model(spec).save(path)
    cls.load(path)  # its own class loads it

    for other in ALGO_NAMES:
        if other != spec.name:
            other_name = ALGOS[other].load_class().__name__
            with pytest.raises(
                ValueError, match=rf"holds an agent of another algorithm: {cls.__name__} .*not {other_name}"
            ):
                ALGOS[other].load_class().load(path)

    SAC("MlpPolicy", "Pendulum-v1", buffer_size=10).save(tmp_path / "sac.zip")  # any env: only the file
    with pytest.raises(ValueError, match=rf"holds an agent of another algorithm: SAC .*not {cls.__name__}"):
        cls.load(tmp_path / "sac.zip")

    data = path.read_bytes()
    for name, content in [
        ("truncated", data[: len(data) // 2]),
        ("emptied", b""),
        ("foreign", b"not a model"),
    ]:
        (tmp_path / f"{name}.zip").write_bytes(content)
        with pytest.raises(ValueError, match=r"is not a saved model.*truncated"):
            cls.load(tmp_path / f"{name}.zip")
    with pytest.raises(FileNotFoundError, match="No saved model at"):
        cls.load(tmp_path / "missing.zip")


def test_load_replay_buffer_checks_type_and_spaces(spec, tmp_path):
    if not spec.off_policy:
        pytest.skip(
            f"{spec.name} is on-policy: no replay buffer to save or load (its rollout buffer is not saved)"
        )
    model = _make_model(spec)
    model.learn(30)
    own = model.replay_buffer
    model.save_replay_buffer(tmp_path / "own.pkl")
    model.load_replay_buffer(tmp_path / "own.pkl")
    assert type(model.replay_buffer) is type(own)

    wrong_space = model.replay_buffer_class(
        100, spaces.Box(-1, 1, (5,), np.float32), model.action_space, n_envs=model.n_envs
    )
    cases = {"space.pkl": (wrong_space, "observation space")}
    if model.replay_buffer_class is not ReplayBuffer:
        cases["type.pkl"] = (
            ReplayBuffer(100, model.observation_space, model.action_space, n_envs=model.n_envs),
            f"holds a ReplayBuffer; {type(model).__name__} needs a {model.replay_buffer_class.__name__}",
        )
    for name, (buffer, message) in cases.items():
        model.replay_buffer = buffer
        model.save_replay_buffer(tmp_path / name)
        model.replay_buffer = own
        with pytest.raises(ValueError, match=message):
            model.load_replay_buffer(tmp_path / name)
        assert model.replay_buffer is own, "a refused buffer replaced the model's"
    (tmp_path / "cut.pkl").write_bytes((tmp_path / "own.pkl").read_bytes()[:100])
    with pytest.raises(ValueError, match="not a readable replay buffer"):
        model.load_replay_buffer(tmp_path / "cut.pkl")


def _deterministic_actions(model, n_steps=8):
    """Deterministic actions along a fixed observation sequence, carrying the state; no RNG is seeded."""
    rng, space = np.random.default_rng(5), model.observation_space
    obs = rng.uniform(space.low, space.high, (2, *space.shape)).astype(space.dtype)
    state, episode_start, actions = None, np.ones(2, dtype=bool), []
    for _ in range(n_steps):
        action, state = model.predict(obs, state=state, episode_start=episode_start, deterministic=True)
        actions.append(np.array(action, copy=True))
        obs = np.clip(obs + rng.normal(0, 0.1, obs.shape), space.low, space.high).astype(space.dtype)
        episode_start = np.zeros(2, dtype=bool)
    return np.stack(actions)


def test_reloaded_agent_replays_deterministic_actions_whatever_the_global_rngs(spec, tmp_path):
    model = _trained(spec)
    before = _deterministic_actions(model)
    np.testing.assert_array_equal(_deterministic_actions(model), before)  # no hidden draw from global RNGs
    model.save(tmp_path / "model.zip")
    for seed in (1, 2):
        th.manual_seed(1000 + seed), np.random.seed(1000 + seed), random.seed(seed)  # noqa: NPY002
        th.rand(seed * 7), np.random.random(seed * 3)  # noqa: NPY002
        loaded = spec.load_class().load(tmp_path / "model.zip")
        np.testing.assert_array_equal(_deterministic_actions(loaded), before)
