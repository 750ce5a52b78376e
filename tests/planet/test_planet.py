"""PlaNet: RSSM verbs, stateful predict, losses and options, save/load, and learning checks.

The learning checks use a 2-D point mass (move to the origin, reward ``-||x||``, 25 steps) with small
sizes, continuous and with 5 discrete actions, on one CPU thread with fixed seeds. Thresholds are set
between PlaNet's return at the tested seed and the best return of a broken PlaNet (see the test); the
double-integrator tests against the computed optimum are in ``test_planet_lqr.py``.
"""

from __future__ import annotations

import json
import zipfile

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from point_mass import PointMass
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import KVWriter, Logger, Video

from sb3_mb import PlaNet
from sb3_mb.common.base_class import WorldModelAlgorithm
from sb3_mb.common.buffers import EpisodeReplayBuffer
from sb3_mb.envs import DiscreteActionTable
from sb3_mb.planet import RSSM, CnnPolicy, MlpPolicy, PlaNetState, RSSMState


def make_point_mass(discrete: bool = False) -> gym.Env:
    env = PointMass()
    if discrete:
        env = DiscreteActionTable(env, [[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1]])
    return env


SMALL_POLICY = dict(
    belief_size=32,
    state_size=8,
    hidden_size=32,
    planning_horizon=5,
    n_candidates=100,
    n_elites=10,
    n_iterations=5,
    mlp_hidden_sizes=(32,),
    reward_hidden_sizes=(32,),
)
SMALL = dict(
    batch_size=16, sequence_length=10, seed_episodes=5, updates_per_episode=50, policy_kwargs=SMALL_POLICY
)
TINY_POLICY = dict(
    belief_size=8,
    state_size=4,
    hidden_size=8,
    planning_horizon=3,
    n_candidates=12,
    n_elites=3,
    n_iterations=2,
    mlp_hidden_sizes=(8,),
    reward_hidden_sizes=(8,),
)
TINY = dict(
    buffer_size=2000,
    batch_size=4,
    sequence_length=8,
    seed_episodes=1,
    updates_per_episode=2,
    policy_kwargs=TINY_POLICY,
)


def tiny(**policy_kwargs) -> dict:
    """TINY with some policy settings changed."""
    return dict(TINY, policy_kwargs=dict(TINY_POLICY, **policy_kwargs))


class CaptureWriter(KVWriter):
    def __init__(self):
        self.records: list[dict] = []

    def write(self, key_values, key_excluded, step=0):
        self.records.append(dict(key_values))


def _random_return(env, n_episodes: int = 20) -> float:
    class RandomAgent:
        def predict(self, obs, state=None, episode_start=None, deterministic=False):
            return np.array([env.action_space.sample() for _ in range(len(obs))]), None

    env.action_space.seed(0)
    return evaluate_policy(RandomAgent(), env, n_eval_episodes=n_episodes)[0]


# ------------------------------------------------------------------------------------------------------
# RSSM
# ------------------------------------------------------------------------------------------------------
def test_rssm_observe_and_imagine_shapes():
    th.manual_seed(0)
    rssm = RSSM(action_dim=2, embedding_dim=6, belief_size=10, state_size=3, hidden_size=7, min_std=0.1)
    priors, posteriors = rssm.observe(th.randn(4, 5, 6), th.randn(4, 5, 2))
    for state in (priors, posteriors):
        assert state.belief.shape == (4, 5, 10)
        assert state.mean.shape == state.std.shape == state.sample.shape == (4, 5, 3)
        assert (state.std >= 0.1).all()
    th.testing.assert_close(priors.belief, posteriors.belief)
    assert RSSM.features(posteriors).shape == (4, 5, 13)
    start = RSSMState(th.randn(6, 10), th.randn(6, 3), th.rand(6, 3) + 0.1, th.randn(6, 3))
    imagined = rssm.imagine(start, th.randn(6, 7, 2))
    assert imagined.belief.shape == (6, 7, 10) and imagined.sample.shape == (6, 7, 3)


def test_rssm_is_first_resets_belief_state_and_action():
    th.manual_seed(0)
    rssm = RSSM(action_dim=2, embedding_dim=6, belief_size=10, state_size=3, hidden_size=7, min_std=0.1)
    embeddings, actions = th.randn(2, 4, 6), th.randn(2, 4, 2)
    is_first = th.zeros(2, 4, dtype=th.bool)
    is_first[:, 2] = True
    _, posteriors = rssm.observe(embeddings, actions, is_first)
    prior = rssm.img_step(rssm.initial_state(2), th.zeros(2, 2))
    # After a reset the belief depends neither on the past nor on the stored action.
    th.testing.assert_close(posteriors.belief[:, 2], prior.belief)


def test_imagine_batched_rows_match_one_by_one():
    th.manual_seed(0)
    rssm = RSSM(action_dim=1, embedding_dim=4, belief_size=8, state_size=3, hidden_size=5, min_std=0.1)
    start = RSSMState(th.randn(5, 8), th.randn(5, 3), th.rand(5, 3) + 0.1, th.randn(5, 3))
    actions = th.randn(5, 6, 1)
    batched = rssm.imagine(start, actions, sample=False)
    for i in range(5):
        single = rssm.imagine(RSSMState(*(x[i : i + 1] for x in start)), actions[i : i + 1], sample=False)
        th.testing.assert_close(batched.belief[i : i + 1], single.belief, rtol=1e-5, atol=1e-6)
        th.testing.assert_close(batched.mean[i : i + 1], single.mean, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------------
# Acting
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("discrete", [False, True], ids=["box", "discrete"])
@pytest.mark.parametrize("warm_start", [False, True], ids=["cold", "warm"])
def test_predict_state_fields(discrete, warm_start):
    env = make_vec_env(lambda: make_point_mass(discrete), n_envs=3, seed=0)
    model = PlaNet("MlpPolicy", env, seed=0, **tiny(warm_start=warm_start))
    obs = env.reset()
    action, state = model.predict(obs, episode_start=np.ones(3, dtype=bool))
    n_actions = 5 if discrete else 2
    # The plan is carried with or without warm start: the layout does not depend on a setting.
    assert isinstance(state, PlaNetState)
    assert state.belief.shape == (3, 8) and state.posterior_sample.shape == (3, 4)
    assert state.posterior_mean.shape == state.posterior_std.shape == (3, 4)
    assert state.prev_action.shape == (3, n_actions) and state.plan.shape == (3, 3, n_actions)
    assert all(part.dtype == np.float32 for part in state)
    if discrete:
        assert action.shape == (3,) and np.issubdtype(action.dtype, np.integer)
        np.testing.assert_array_equal(state.prev_action, np.eye(5, dtype=np.float32)[action])
    else:
        assert action.shape == (3, 2) and np.all(np.abs(action) <= 1)
    assert state.plan.any() and not state.plan[:, -1].any()  # the CEM's plan shifted, zeros appended
    # Warm start: the next CEM starts from the carried plan, so the plan changes the action; cold it does not.
    zero_plan = state._replace(plan=np.zeros_like(state.plan))
    random_plan = 3 * np.random.default_rng(0).normal(size=state.plan.shape).astype(np.float32)
    other_plan = state._replace(plan=random_plan)
    actions = []
    for carried in (zero_plan, other_plan):
        model.set_random_seed(1)
        actions.append(model.predict(obs, state=carried, deterministic=True)[0])
    assert np.array_equal(actions[0], actions[1]) != warm_start


def test_wrong_state_or_episode_start_is_a_clear_error():
    env = make_vec_env(make_point_mass, n_envs=3, seed=0)
    model = PlaNet(env, seed=0, **TINY)
    obs = env.reset()
    _, state = model.predict(obs, episode_start=np.ones(3, dtype=bool))
    two_envs = PlaNetState(*(part[:2] for part in state))
    with pytest.raises(ValueError, match=r"PlaNet's state field 'belief' must have shape \(3, 8\)"):
        model.predict(obs, state=two_envs)
    with pytest.raises(ValueError, match="PlaNet's state has the 11 fields"):
        model.predict(obs, state=tuple(state)[:3])
    with pytest.raises(ValueError, match=r"episode_start has 2 entries, expected one per env \(3\)"):
        model.predict(obs, state=state, episode_start=np.ones(2, dtype=bool))


def test_state_round_trips_through_evaluate_policy():
    """evaluate_policy hands predict's state back at every step, with episode_start after each episode end."""
    model = PlaNet(make_point_mass(), seed=0, **TINY)
    seen = []
    predict = model.predict

    def recording_predict(observation, state=None, episode_start=None, deterministic=False):
        action, new_state = predict(observation, state, episode_start, deterministic)
        seen.append((state, episode_start.copy(), new_state))
        return action, new_state

    model.predict = recording_predict
    eval_env = make_vec_env(make_point_mass, n_envs=2, seed=3)
    mean_reward, _ = evaluate_policy(model, eval_env, n_eval_episodes=2)
    assert np.isfinite(mean_reward) and len(seen) >= 25
    assert seen[0][0] is None and seen[0][1].all()
    for (_, _, returned), (given, _, _) in zip(seen[:-1], seen[1:], strict=True):
        assert given is returned and isinstance(given, PlaNetState)


def test_default_policy_follows_the_observations():
    """PlaNet(env): CnnPolicy for uint8 images, MlpPolicy for vectors (build only)."""
    pixels = PlaNet("sb3_mb/CartpoleBalancePixels-v0", **tiny(cnn_depth=2, reward_hidden_sizes=(4,)))
    assert isinstance(pixels.policy, CnnPolicy) and pixels.observation_space.shape == (3, 64, 64)
    vector = PlaNet("Pendulum-v1", **TINY)
    assert type(vector.policy) is MlpPolicy and vector.policy.belief_size == 8
    assert isinstance(vector, WorldModelAlgorithm)


def test_box_actions_are_unscaled_to_the_env_bounds():
    model = PlaNet("MlpPolicy", "Pendulum-v1", seed=0, **TINY)  # actions in [-2, 2]
    model.learn(250)
    actions = np.stack([model.predict(model.observation_space.sample())[0] for _ in range(30)])
    assert np.all(np.abs(actions) <= 2.0) and np.abs(actions).max() > 1.0
    # Buffer stores actions scaled to [-1, 1].
    stored = model.replay_buffer.actions[: model.replay_buffer.n_records]
    assert np.all(np.abs(stored) <= 1.0)


# ------------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------------
def test_space_errors():
    image_env = gym.make("sb3_mb/CartpoleSwingupPixels-v0")
    with pytest.raises(ValueError, match="CnnPolicy"):
        PlaNet("MlpPolicy", image_env, **TINY)
    with pytest.raises(ValueError, match="image"):
        PlaNet("CnnPolicy", make_point_mass(), **TINY)

    class Unbounded(PointMass):
        action_space = spaces.Box(-np.inf, np.inf, (2,), np.float32)

    with pytest.raises(ValueError, match="bounded"):
        PlaNet("MlpPolicy", Unbounded(), **TINY)

    class MatrixActions(PointMass):
        action_space = spaces.Box(-1, 1, (2, 2), np.float32)

    with pytest.raises(
        ValueError, match=r"flat Box action space of shape \(action_dim,\), got shape \(2, 2\)"
    ):
        PlaNet("MlpPolicy", MatrixActions(), **TINY)
    with pytest.raises(ValueError, match="Dict observation"):
        PlaNet("MlpPolicy", make_point_mass(), **TINY).predict({"x": np.zeros(2)})


def test_non_finite_observation_to_predict_is_a_clear_error():
    model = PlaNet("MlpPolicy", make_vec_env(make_point_mass, n_envs=3, seed=0), seed=0, **TINY)
    obs = np.zeros((3, *model.observation_space.shape), np.float32)
    obs[1, 0] = np.nan
    with pytest.raises(
        FloatingPointError, match=r"PlaNet: predict got an observation with NaN or inf \(env 1\)"
    ):
        model.predict(obs, episode_start=np.ones(3, dtype=bool))
    with pytest.raises(FloatingPointError, match=r"\(env 0\)"):
        model.predict(np.full(model.observation_space.shape, np.inf, np.float32))


def test_nan_loss_is_a_clear_error():
    model = PlaNet("MlpPolicy", make_point_mass(), seed=0, **TINY)
    model.learn(50)
    with th.no_grad():
        next(model.policy.reward_model.parameters()).fill_(float("nan"))
    with pytest.raises(
        FloatingPointError, match=r"PlaNet: loss is not finite at update \d+: .*reward_nll=nan"
    ):
        model.train(1)


# ------------------------------------------------------------------------------------------------------
# Losses, options, logging
# ------------------------------------------------------------------------------------------------------
def test_train_logs_loss_terms_and_planned_return():
    model = PlaNet("MlpPolicy", make_point_mass(), seed=0, **TINY)
    writer = CaptureWriter()
    model.set_logger(Logger(folder=None, output_formats=[writer]))
    model.learn(100, log_interval=1)
    keys = set().union(*(record.keys() for record in writer.records))
    for key in ("observation_nll", "reward_nll", "kl", "kl_loss", "loss", "grad_norm", "planned_return"):
        assert f"train/{key}" in keys
    assert model._n_updates == 2 * (model.replay_buffer.n_episodes_added - model.seed_episodes + 1)


def test_overshooting_and_global_kl_options():
    model = PlaNet(
        "MlpPolicy", make_point_mass(), seed=0, **dict(TINY, overshooting_distance=7, global_kl_scale=0.1)
    )
    model.learn(50)
    samples = model.replay_buffer.sample_sequences(4, 8)
    losses = model._compute_losses(samples)
    assert {"global_kl", "overshooting_kl", "overshooting_reward_nll"} <= set(losses)
    assert all(th.isfinite(value) for value in losses.values())
    assert losses["overshooting_kl"] >= model.free_nats
    model.train(2)


def test_replay_buffer_save_and_load_then_training_continues(tmp_path):
    """SB3's save_replay_buffer / load_replay_buffer round-trip the EpisodeReplayBuffer."""
    model = PlaNet("MlpPolicy", make_point_mass(), seed=0, **TINY)
    model.learn(60)
    path = tmp_path / "buffer.pkl"
    model.save_replay_buffer(path)
    other = PlaNet("MlpPolicy", make_point_mass(), seed=1, **TINY)
    other.load_replay_buffer(path)
    assert isinstance(other.replay_buffer, EpisodeReplayBuffer)
    assert other.replay_buffer.n_episodes == model.replay_buffer.n_episodes == 2
    np.testing.assert_array_equal(other.replay_buffer.observations, model.replay_buffer.observations)
    # The 10 steps staged at the save close as a truncated episode when learn resets the env; then one more
    # episode: C updates for each of the 4, on the loaded episodes as well.
    other.learn(25)
    assert other.replay_buffer.n_episodes == 4 and other._n_updates == 2 * 4


def test_saved_zip_holds_no_unused_off_policy_setting(tmp_path):
    model = PlaNet("MlpPolicy", make_point_mass(), seed=0, **TINY)
    model.save(tmp_path / "planet.zip")
    with zipfile.ZipFile(tmp_path / "planet.zip") as archive:
        data = json.loads(archive.read("data"))
    for name in ("tau", "gamma", "gradient_steps", "train_freq", "action_noise", "learning_starts"):
        assert name not in data, name
    assert data["sequence_length"] == 8 and data["policy_kwargs"]["n_candidates"] == 12
    assert "belief_size" not in data and "adam_eps" not in data


def test_policy_save_and_load_keep_every_setting(tmp_path):
    model = PlaNet(make_point_mass(discrete=True), seed=0, **tiny(warm_start=True, exploration_epsilon=0.2))
    model.policy.save(tmp_path / "policy.pt")
    loaded = type(model.policy).load(tmp_path / "policy.pt")
    assert loaded.n_candidates == 12 and loaded.warm_start and loaded.exploration_epsilon == 0.2
    assert loaded.optimizer_kwargs == {"eps": 1e-4}
    for key, value in model.policy.state_dict().items():
        th.testing.assert_close(loaded.state_dict()[key], value)


def test_load_with_a_one_record_buffer_as_the_zoo_enjoy_does(tmp_path):
    model = PlaNet("MlpPolicy", make_point_mass(), seed=0, **TINY)
    model.learn(30)
    model.save(tmp_path / "planet.zip")
    loaded = PlaNet.load(tmp_path / "planet.zip", buffer_size=1)
    obs = np.zeros((1, 2), dtype=np.float32)
    action, state = loaded.predict(obs, episode_start=np.ones(1, dtype=bool), deterministic=True)
    assert action.shape == (1, 2) and state.belief.shape == (1, 8)
    assert loaded.buffer_size == 1 and loaded.replay_buffer.buffer_size == 2


# ------------------------------------------------------------------------------------------------------
# Pixels
# ------------------------------------------------------------------------------------------------------
def test_pixel_cartpole_smoke_and_open_loop_video(tmp_path):
    """CnnPolicy on 64x64 cartpole: trains, plans, logs an open-loop video, saves and loads."""
    env = make_vec_env("sb3_mb/CartpoleSwingupPixels-v0", n_envs=1, seed=0)
    kwargs = dict(tiny(cnn_depth=4, reward_hidden_sizes=(8,)), video_interval=2)
    model = PlaNet("CnnPolicy", env, seed=0, **kwargs)
    assert model.observation_space.shape == (3, 64, 64)
    writer = CaptureWriter()
    model.set_logger(Logger(folder=None, output_formats=[writer]))
    model.learn(140)  # one random episode of 125 steps, 2 updates, then planning
    model.logger.dump(model.num_timesteps)
    assert model._n_updates >= 2
    videos = [record["train/open_loop"] for record in writer.records if "train/open_loop" in record]
    assert videos and isinstance(videos[0], Video)
    frames = videos[0].frames
    assert frames.dtype == th.uint8 and frames.shape == (1, 8, 3, 4 * 64, 2 * 64)
    action, state = model.predict(env.reset(), episode_start=np.ones(1, dtype=bool), deterministic=True)
    assert action.shape == (1, 1) and state.belief.shape == (1, 8)
    model.save(tmp_path / "planet_pixels.zip")
    loaded = PlaNet.load(tmp_path / "planet_pixels.zip")
    assert loaded.policy.use_conv


@pytest.mark.parametrize(
    "env_id",
    [
        "sb3_mb/BreakoutPlaNet-v0",
        "sb3_mb/QbertPlaNet-v0",
        "sb3_mb/FreewayPlaNet-v0",
        "sb3_mb/CartpoleBalancePixelsDiscrete9-v0",
    ],
)
def test_discrete_image_presets_train_and_plan_with_two_envs(env_id):
    """The Atari presets (1- and 3-channel) and a discrete pixel cartpole: seed episode, updates, planning."""
    env = make_vec_env(env_id, n_envs=2, seed=0)
    kwargs = dict(tiny(cnn_depth=4, reward_hidden_sizes=(8,)), buffer_size=1200)
    model = PlaNet("CnnPolicy", env, seed=0, **kwargs)
    n_steps = 2 * env.get_attr("spec")[0].max_episode_steps + 2 * 8
    model.learn(n_steps)  # one seed episode per env, then updates and 8 planned steps per env
    assert model._n_updates >= 2
    actions, state = model.predict(env.reset(), episode_start=np.ones(2, dtype=bool), deterministic=True)
    assert actions.shape == (2,) and all(env.action_space.contains(int(a)) for a in actions)
    assert state.belief.shape[0] == 2


# ------------------------------------------------------------------------------------------------------
# Learning checks
# ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "discrete, threshold", [(False, -11.0), (True, -12.0)], ids=["continuous", "discrete"]
)
def test_planning_with_the_learned_model_beats_random_and_a_broken_model(discrete, threshold):
    """5 random + 15 planned episodes of 25 steps, 50 updates per episode; about 15 s each on one thread.

    Discrete: ε = 0.3 (the fork sweeps 0.1-0.3); with 0.1 one seed in four under-explores one action.
    Measured at seed 0 (20 eval episodes), continuous / discrete: PlaNet -7.7 / -8.4; moving straight to the
    origin -1.4, doing nothing -19.5, random -24.2 / -25.4. The thresholds fail every PlaNet broken by hand:
    reward head output zeroed -21.0 / -23.6, actions fed to the RSSM one step late -18.3 / -17.3, no free nats
    -16.5 / -19.4, the paper's raw reward likelihood (``normalize_rewards=False``) -13.7 / -15.4. (Before the
    reward normalisation PlaNet itself scored -14.1 / -14.9 against thresholds of -15 / -17.)
    """
    env = make_vec_env(lambda: make_point_mass(discrete), seed=0)
    eval_env = make_vec_env(lambda: make_point_mass(discrete), n_envs=4, seed=100)
    random_return = _random_return(eval_env)
    kwargs = dict(SMALL, policy_kwargs=dict(SMALL_POLICY, exploration_epsilon=0.3)) if discrete else SMALL
    model = PlaNet("MlpPolicy", env, seed=0, **kwargs).learn(500)
    planet_return, _ = evaluate_policy(model, eval_env, n_eval_episodes=20)
    assert random_return < -20.0
    assert planet_return > threshold, f"PlaNet {planet_return:.1f} vs random {random_return:.1f}"


@pytest.mark.slow
def test_cartpole_balance_from_state_beats_random():
    """DMC cartpole-balance from state (action repeat 8, 125 steps): PlaNet with small sizes vs random."""
    env = make_vec_env("sb3_mb/CartpoleBalance-v0", seed=0)
    eval_env = make_vec_env("sb3_mb/CartpoleBalance-v0", n_envs=5, seed=100)
    random_return = _random_return(eval_env, n_episodes=10)
    policy_kwargs = dict(
        belief_size=64,
        state_size=16,
        hidden_size=64,
        planning_horizon=12,
        n_candidates=200,
        n_elites=20,
        n_iterations=6,
        mlp_hidden_sizes=(64,),
        reward_hidden_sizes=(64, 64),
    )
    kwargs = dict(SMALL, batch_size=32, sequence_length=30, policy_kwargs=policy_kwargs)
    model = PlaNet("MlpPolicy", env, seed=0, **kwargs).learn(125 * 20)
    planet_return, _ = evaluate_policy(model, eval_env, n_eval_episodes=10)
    assert planet_return > random_return + 100, f"PlaNet {planet_return:.1f} vs random {random_return:.1f}"
