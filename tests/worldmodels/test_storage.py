"""The disk episode store (:mod:`sb3_mb.worldmodels.storage`): the same records and samples as the RAM buffer,
windows inside episodes, RSS flat while episodes stream to disk, pickles that hold the path, stores that
survive a killed writer, and WorldModels trained on it bit for bit as on the RAM buffer."""

from __future__ import annotations

import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from sb3_mb import WorldModels
from sb3_mb.common.buffers import EpisodeReplayBuffer
from sb3_mb.worldmodels.storage import DiskEpisodeReplayBuffer, RecordArray, latent_storage

IMAGE = spaces.Box(0, 255, (3, 8, 8), np.uint8)
ACTIONS = spaces.Box(-1.0, 1.0, (2,), np.float32)


def _episode(rng: np.random.Generator, length: int, space: spaces.Box = IMAGE):
    observations = rng.integers(0, 256, (length + 1, *space.shape), dtype=np.uint8)
    return observations, rng.uniform(-1, 1, (length, 2)), rng.normal(size=length)


def _fill_both(tmp_path, n_episodes=40, buffer_size=300, n_envs=2):
    """The same VecEnv steps (two envs, episodes of 3..25 steps, some truncated) into both buffers."""
    rng = np.random.default_rng(0)
    ram = EpisodeReplayBuffer(buffer_size, IMAGE, ACTIONS, device="cpu", n_envs=n_envs)
    disk = DiskEpisodeReplayBuffer(buffer_size, IMAGE, ACTIONS, device="cpu", n_envs=n_envs, path=tmp_path)
    obs = rng.integers(0, 256, (n_envs, *IMAGE.shape), dtype=np.uint8)
    left = rng.integers(3, 26, n_envs)
    while ram.n_episodes_added < n_episodes:
        next_obs = rng.integers(0, 256, (n_envs, *IMAGE.shape), dtype=np.uint8)
        action, reward = rng.uniform(-1, 1, (n_envs, 2)), rng.normal(size=n_envs)
        left -= 1
        done = left == 0
        infos = [{"TimeLimit.truncated": bool(rng.random() < 0.3)} for _ in range(n_envs)]
        for buffer in (ram, disk):
            buffer.add(obs, next_obs, action, reward, done, infos)
        reset = rng.integers(0, 256, (n_envs, *IMAGE.shape), dtype=np.uint8)
        obs = np.where(done[:, None, None, None], reset, next_obs)
        left = np.where(done, rng.integers(3, 26, n_envs), left)
    return ram, disk


def _stored(buffer: EpisodeReplayBuffer) -> dict[str, np.ndarray]:
    index = np.concatenate([np.arange(s, s + n) % buffer.buffer_size for s, n in buffer._episodes])
    names = ("observations", "actions", "rewards", "is_first", "terminated", "truncated")
    return {name: np.asarray(getattr(buffer, name)[index]) for name in names}


def _assert_same(ram: EpisodeReplayBuffer, disk: EpisodeReplayBuffer) -> None:
    assert list(disk._episodes) == list(ram._episodes)
    assert disk.n_episodes_added == ram.n_episodes_added and disk.n_records == ram.n_records
    for name, values in _stored(ram).items():
        np.testing.assert_array_equal(_stored(disk)[name], values, err_msg=name)


def test_record_array_indexes_like_numpy(tmp_path):
    array = RecordArray(tmp_path / "a.npy", (50, 3), np.float32, create=True)
    reference = np.zeros((50, 3), np.float32)
    rng = np.random.default_rng(1)
    for index in (np.arange(10, 20), np.array([5, 49, 0, 5]), 7, slice(30, 40), np.array([[1, 2], [48, 3]])):
        values = rng.normal(size=np.zeros(50)[index].shape + (3,)).astype(np.float32)
        array[index] = values
        reference[index] = values
        np.testing.assert_array_equal(array[index], reference[index])
    np.testing.assert_array_equal(np.asarray(array), reference)
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), reference)  # a standard .npy file
    with pytest.raises(IndexError):
        array[np.array([50])]
    with pytest.raises(ValueError, match="expected"):
        RecordArray(tmp_path / "a.npy", (50, 4), np.float32, create=False)


def test_episodes_round_trip_as_in_the_ram_buffer(tmp_path):
    """Episodes from add() (two envs, evictions, the ring wrapping) and add_episode() read back exactly, and
    the same random state samples the same windows."""
    ram, disk = _fill_both(tmp_path)
    assert ram.n_episodes < ram.n_episodes_added  # the ring evicted episodes
    rng = np.random.default_rng(2)
    observations, actions, rewards = _episode(rng, 12)
    for buffer in (ram, disk):
        buffer.add_episode(observations, actions, rewards, terminated=True)
    _assert_same(ram, disk)
    a, b = (buffer.sample_sequences(16, 5, np.random.default_rng(3)) for buffer in (ram, disk))
    for x, y in zip(a, b, strict=True):
        assert th.equal(x, y)
    np.testing.assert_array_equal(ram.stored_rewards(), disk.stored_rewards())


def test_sampled_windows_never_cross_an_episode(tmp_path):
    _, disk = _fill_both(tmp_path)
    owner = np.full(disk.buffer_size, -1)
    for k, (start, n) in enumerate(disk._episodes):
        owner[np.arange(start, start + n) % disk.buffer_size] = k
    index = disk.sample_window_indices(2000, 4, np.random.default_rng(0))
    assert (owner[index] >= 0).all() and (owner[index] == owner[index][:, :1]).all()
    samples = disk.sample_sequences(500, 4, np.random.default_rng(1))
    assert not samples.is_first[:, 1:].any()
    assert not (samples.terminated | samples.truncated)[:, :-1].any()


def _rss() -> int:
    """Resident set size of this process now, bytes (Linux)."""
    try:
        with open("/proc/self/statm") as statm:
            return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:  # pragma: no cover
        pytest.skip("needs /proc/self/statm")


def test_rss_stays_flat_while_episodes_stream_to_disk(tmp_path):
    """200 MB of 64x64x3 frames written and read back: resident memory grows by far less than that."""
    space = spaces.Box(0, 255, (3, 64, 64), np.uint8)
    buffer = DiskEpisodeReplayBuffer(20_000, space, ACTIONS, device="cpu", path=tmp_path)
    rng = np.random.default_rng(0)
    observations, actions, rewards = _episode(rng, 199, space)

    def write(n):
        for k in range(n):
            observations[:, 0, 0, 0] = k % 256
            buffer.add_episode(observations, actions, rewards, terminated=False, truncated=True)
        buffer.observations[buffer.sample_window_indices(256, 1)[:, 0]]

    write(5)
    before = _rss()
    write(80)  # 16 000 frames, 197 MB
    grown = _rss() - before
    assert buffer.n_records == 17_000 and buffer.disk_bytes() > 200e6
    assert grown < 40e6, f"RSS grew by {grown / 1e6:.0f} MB while writing 197 MB"


def test_pickle_holds_the_path_not_the_data(tmp_path):
    ram, disk = _fill_both(tmp_path)
    data = pickle.dumps(disk)
    assert len(data) < 50_000 < disk.disk_bytes()
    _assert_same(ram, pickle.loads(data))
    # The store changed after the pickle: the unpickled buffer holds what is on disk, and says so.
    episode = _episode(np.random.default_rng(5), 9)
    for buffer in (ram, disk):
        buffer.add_episode(*episode, terminated=True)
    with pytest.warns(UserWarning, match="has changed since"):
        _assert_same(ram, pickle.loads(data))


def test_reopening_a_store(tmp_path):
    ram, disk = _fill_both(tmp_path)
    _assert_same(ram, DiskEpisodeReplayBuffer(300, IMAGE, ACTIONS, n_envs=2, path=tmp_path))
    with pytest.raises(ValueError, match="another layout"):
        DiskEpisodeReplayBuffer(400, IMAGE, ACTIONS, n_envs=2, path=tmp_path)
    empty = DiskEpisodeReplayBuffer(400, IMAGE, ACTIONS, n_envs=2, path=tmp_path, mode="w")
    assert empty.n_episodes == 0 and empty.n_episodes_added == 0


WRITER = """
import sys, numpy as np
from gymnasium import spaces
from sb3_mb.worldmodels.storage import DiskEpisodeReplayBuffer
space = spaces.Box(0, 255, (3, 32, 32), np.uint8)
buffer = DiskEpisodeReplayBuffer(3000, space, spaces.Discrete(3), path=sys.argv[1])
rng = np.random.default_rng(0)
k = 0
while True:
    n = int(rng.integers(20, 200))
    observations = np.full((n + 1, 3, 32, 32), k % 256, np.uint8)
    buffer.add_episode(observations, np.full(n, k % 3), np.full(n, float(k)), terminated=True)
    k += 1
    if k == 30:
        print("ready", flush=True)
"""


def test_a_killed_writer_leaves_a_consistent_store(tmp_path):
    """SIGKILL a process writing episodes into a full ring (evicting as it goes), at several moments: the
    store reopens with only whole, uncorrupted episodes (every record of episode k holds k)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for delay in (0.0, 0.05, 0.13):
        store = tmp_path / f"store{delay}"
        process = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(WRITER), str(store)], stdout=subprocess.PIPE, env=env
        )
        assert process.stdout.readline().strip() == b"ready"
        time.sleep(delay)
        process.send_signal(signal.SIGKILL)
        process.wait()
        process.stdout.close()
        buffer = DiskEpisodeReplayBuffer(
            3000, spaces.Box(0, 255, (3, 32, 32), np.uint8), spaces.Discrete(3), path=store
        )
        assert buffer.n_episodes >= 5 and buffer.n_episodes_added >= 30
        _check_episodes(buffer)
        for start, n in buffer._episodes:
            index = np.arange(start, start + n) % buffer.buffer_size
            assert (buffer.actions[index[1:]] == int(buffer.rewards[index[1]]) % 3).all()
            assert buffer.is_first[index[0]] and buffer.terminated[index[-1]]


def _check_episodes(buffer: DiskEpisodeReplayBuffer) -> None:
    """Every record of stored episode k holds k (as the writers here write them)."""
    for start, n in buffer._episodes:
        index = np.arange(start, start + n) % buffer.buffer_size
        k = buffer.rewards[index[1]]
        assert (buffer.observations[index] == int(k) % 256).all(), f"episode {k} overwritten"
        assert (buffer.rewards[index[1:]] == k).all()


def test_a_write_that_fails_midway_leaves_the_committed_episodes(tmp_path, monkeypatch):
    """Deterministic version of the killed writer: the ring is full, a new episode evicts old ones, its frames
    are written and then the write fails (a crash). The store reopens with whole episodes only: the evicted
    ones were dropped from the index before their records were overwritten."""
    space = spaces.Box(0, 255, (3, 8, 8), np.uint8)
    buffer = DiskEpisodeReplayBuffer(100, space, spaces.Discrete(3), path=tmp_path)
    for k in range(12):
        n = 10 + k % 5
        buffer.add_episode(np.full((n + 1, 3, 8, 8), k, np.uint8), np.zeros(n), np.full(n, float(k)), True)
    write = RecordArray.__setitem__

    def failing(self, index, values):
        if self.path.endswith("rewards.npy"):
            raise OSError("disk gone")
        write(self, index, values)

    monkeypatch.setattr(RecordArray, "__setitem__", failing)
    with pytest.raises(OSError, match="disk gone"):
        buffer.add_episode(np.full((31, 3, 8, 8), 12, np.uint8), np.zeros(30), np.full(30, 12.0), True)
    monkeypatch.setattr(RecordArray, "__setitem__", write)
    reopened = DiskEpisodeReplayBuffer(100, space, spaces.Discrete(3), path=tmp_path)
    assert reopened.n_episodes_added == 12 and 0 < reopened.n_episodes < buffer.n_episodes + 3
    _check_episodes(reopened)


def test_latent_storage_in_ram_or_on_disk(tmp_path):
    ram, disk = _fill_both(tmp_path)
    assert isinstance(latent_storage(ram, 4)["mu"], np.ndarray)
    latents = latent_storage(disk, 4)
    assert isinstance(latents["mu"], RecordArray) and latents["mu"].shape == (300, 4)
    assert latents["encoded"].shape == (300,) and not latents["encoded"].any()


SMALL = dict(
    n_random_rollouts=4,
    vae_batch_size=16,
    vae_epochs=2,
    mdn_epochs=1,
    batch_size=4,
    sequence_length=8,
    population_size=4,
    rollouts_per_candidate=1,
    n_generations=1,
    max_episode_steps=30,
    buffer_size=2000,
    policy_kwargs=dict(z_dim=4, hidden_size=8, n_mixtures=2, mlp_hidden_sizes=(16,)),
)


def _spaces(model):
    return model.observation_space, model.action_space


def test_worldmodels_learns_on_the_disk_store_as_on_the_ram_buffer(tmp_path):
    """Same seed, same data: V, M and C end bit-identical on the two stores; the disk store saves as a
    path, the latents M trained on are in its folder, and the loaded buffer goes on training."""
    models = {}
    for name, kwargs in {
        "ram": {},
        "disk": dict(
            replay_buffer_class=DiskEpisodeReplayBuffer, replay_buffer_kwargs=dict(path=tmp_path / "rollouts")
        ),
    }.items():
        model = WorldModels("MlpPolicy", "CartPole-v1", seed=0, device="cpu", **SMALL, **kwargs)
        models[name] = model.learn(120)
    ram, disk = models["ram"], models["disk"]
    assert isinstance(disk.replay_buffer, DiskEpisodeReplayBuffer)
    _assert_same(ram.replay_buffer, disk.replay_buffer)
    for key, value in ram.policy.state_dict().items():
        assert th.equal(value, disk.policy.state_dict()[key]), key
    assert (tmp_path / "rollouts" / "latent_mu.npy").exists()
    action, _ = disk.predict(np.zeros(4, np.float32), deterministic=True)
    assert disk.action_space.contains(int(action))

    disk.save(tmp_path / "model")
    disk.save_replay_buffer(tmp_path / "buffer")
    assert os.path.getsize(tmp_path / "buffer.pkl") < 50_000
    loaded = WorldModels.load(tmp_path / "model", env=disk.get_env(), device="cpu")
    loaded.load_replay_buffer(tmp_path / "buffer")
    _assert_same(ram.replay_buffer, loaded.replay_buffer)
    loaded.learn(40, reset_num_timesteps=False)
    assert loaded.replay_buffer.n_episodes_added > ram.replay_buffer.n_episodes_added
    # load(buffer_size=1), as the zoo's enjoy: a small store elsewhere, the run's store left as it is.
    added = loaded.replay_buffer.n_episodes_added
    acting = WorldModels.load(tmp_path / "model", buffer_size=1, device="cpu")
    assert acting.replay_buffer.path != str(tmp_path / "rollouts") and acting.replay_buffer.buffer_size == 2
    assert DiskEpisodeReplayBuffer(2000, *_spaces(disk), path=tmp_path / "rollouts").n_episodes_added == added
    shutil.rmtree(acting.replay_buffer.path)


def test_carracing_trains_and_predicts_on_the_disk_store(tmp_path):
    """CarRacing-v3 (96x96x3 frames resized to 64x64 by V, Box(3) actions, episodes cut at 15 steps): random
    rollouts into the disk store, a round of V, M and C (C on z alone, the V-only ablation), then predict."""
    pytest.importorskip("Box2D")
    import gymnasium as gym

    env = gym.make("CarRacing-v3", max_episode_steps=15)
    model = WorldModels(
        "CnnPolicy",
        env,
        seed=0,
        device="cpu",
        log_images=False,
        replay_buffer_class=DiskEpisodeReplayBuffer,
        replay_buffer_kwargs=dict(path=tmp_path / "car"),
        **{
            **SMALL,
            "n_random_rollouts": 2,
            "max_episode_steps": 10,
            "policy_kwargs": dict(z_dim=4, hidden_size=8, n_mixtures=2, cnn_depth=4, controller_input="z"),
        },
    )
    assert model.observation_space.shape == (3, 96, 96)
    model.learn(45)
    assert model.replay_buffer.n_episodes_added == 3 and model.es is not None
    assert model.policy.controller.n_parameters == 4 * 3 + 3  # C on z alone
    obs, _ = env.reset(seed=1)
    action, state = model.predict(obs, deterministic=True)  # channel-last frame from the gym env
    assert action.shape == (3,) and env.action_space.contains(action)
    assert state.hidden.shape == (1, 8)
