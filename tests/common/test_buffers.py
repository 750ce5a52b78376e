"""Episode / sequence replay: alignment, episode boundaries, flags, eviction, uniformity, pickling."""

import numpy as np
import pytest
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.save_util import load_from_pkl, save_to_pkl

from sb3_mb.common.buffers import EpisodeReplayBuffer

IMG_SPACE = spaces.Box(0, 255, (4, 4, 1), np.uint8)
ACT_SPACE = spaces.Box(-1, 1, (2,), np.float32)


def image(episode_id: int, step: int) -> np.ndarray:
    """An image whose pixels encode (episode id, step)."""
    img = np.zeros((4, 4, 1), np.uint8)
    img[0, 0, 0], img[0, 1, 0] = episode_id, step
    return img


def fill(buffer: EpisodeReplayBuffer, lengths: list[list[int]], truncate_every: int = 0) -> dict:
    """Run ``n_envs`` envs through the SB3 collect-loop contract; env i plays episodes of ``lengths[i]``.

    Episode ids are unique; rewards encode 100 * id + step; action[0] = id, action[1] = step.
    Returns {episode id: (length, terminated, truncated)}.
    """
    n_envs = buffer.n_envs
    next_id = 1
    queues = [list(ls) for ls in lengths]
    state = []
    for i in range(n_envs):
        state.append([next_id, 0, queues[i].pop(0)])
        next_id += 1
    meta = {}
    while any(s is not None for s in state):
        obs = np.stack([image(s[0], s[1]) if s else image(0, 0) for s in state])
        actions = np.array([[s[0], s[1]] if s else [0, 0] for s in state], np.float32)
        rewards, dones, infos, next_obs = [], [], [], []
        for i, s in enumerate(state):
            if s is None:  # finished env: keep it stepping on a dummy long episode that never ends
                rewards.append(0.0), dones.append(False), infos.append({}), next_obs.append(image(0, 0))
                continue
            ep, t, length = s
            rewards.append(100.0 * ep + t)
            done = t + 1 == length
            truncated = bool(truncate_every and done and ep % truncate_every == 0)
            dones.append(done)
            infos.append(
                {"TimeLimit.truncated": truncated, "terminal_observation": image(ep, t + 1)} if done else {}
            )
            next_obs.append(image(ep, t + 1))
            if done:
                meta[ep] = (length, not truncated, truncated)
                if queues[i]:
                    state[i] = [next_id, 0, queues[i].pop(0)]
                    next_id += 1
                else:
                    state[i] = None
            else:
                state[i] = [ep, t + 1, length]
        # VecEnv semantics: returned obs is the reset one; the buffer helper substitutes the terminal one.
        vec_obs = np.stack(
            [image(s[0], 0) if (d and s) else o for o, d, s in zip(next_obs, dones, state, strict=True)]
        )
        true_next = EpisodeReplayBuffer.terminal_next_obs(vec_obs, np.array(dones), infos)
        buffer.add(obs, true_next, actions, np.array(rewards, np.float32), np.array(dones), infos)
    return meta


def make(buffer_size=1000, n_envs=2, **kw) -> EpisodeReplayBuffer:
    return EpisodeReplayBuffer(buffer_size, IMG_SPACE, ACT_SPACE, device="cpu", n_envs=n_envs, **kw)


def test_is_sb3_replay_buffer_and_counts():
    buf = make()
    assert isinstance(buf, ReplayBuffer)
    meta = fill(buf, [[5, 7], [6]])
    assert buf.n_episodes == 3 and buf.n_transitions == 18 and buf.n_records == 21 == buf.size()
    assert sorted(buf.episode_lengths.tolist()) == [6, 7, 8]
    assert len(meta) == 3


def test_sequences_alignment_and_no_crossing():
    buf = make()
    meta = fill(buf, [[9, 4, 12], [3, 15, 8]])
    s = buf.sample_sequences(256, 5, rng=np.random.default_rng(0))
    obs = s.observations.numpy()
    assert obs.dtype == np.uint8 and obs.shape == (256, 5, 4, 4, 1)
    assert s.actions.shape == (256, 5, 2) and s.rewards.shape == (256, 5)
    ep, step = obs[:, :, 0, 0, 0].astype(int), obs[:, :, 0, 1, 0].astype(int)
    # one episode per window, consecutive steps
    assert np.all(ep == ep[:, :1]) and np.all(np.diff(step, axis=1) == 1)
    # o_t paired with a_{t-1} and r_{t-1}; zeros and is_first at episode start
    acts, rews, first = s.actions.numpy(), s.rewards.numpy(), s.is_first.numpy()
    later = step > 0
    np.testing.assert_array_equal(acts[..., 0][later], ep[later])
    np.testing.assert_array_equal(acts[..., 1][later], step[later] - 1)
    np.testing.assert_array_equal(rews[later], 100 * ep[later] + step[later] - 1)
    np.testing.assert_array_equal(first, step == 0)
    assert np.all(acts[~later] == 0) and np.all(rews[~later] == 0)
    # the 3-step episode (4 records) is skipped for T=5; every other one is sampled
    long_enough = {e for e, (length, _, _) in meta.items() if length + 1 >= 5}
    assert set(np.unique(ep)) == long_enough and len(long_enough) == 5


def test_terminated_and_truncated_flags():
    buf = make()
    meta = fill(buf, [[4, 5, 6], [7, 3]], truncate_every=2)
    s = buf.sample_sequences(500, 3, rng=np.random.default_rng(1))
    obs = s.observations.numpy()
    ep, step = obs[:, :, 0, 0, 0].astype(int), obs[:, :, 0, 1, 0].astype(int)
    term, trunc = s.terminated.numpy(), s.truncated.numpy()
    for e, (length, terminated, truncated) in meta.items():
        last = (ep == e) & (step == length)
        if last.any():
            assert np.all(term[last] == terminated) and np.all(trunc[last] == truncated)
    assert not term[step < np.vectorize(lambda e: meta[e][0])(ep)].any()
    assert term.any() and trunc.any()


def test_handle_timeout_termination_false_terminates_all():
    buf = make(handle_timeout_termination=False)
    fill(buf, [[4, 4], [4]], truncate_every=2)
    assert buf.terminated.sum() == 3 and buf.truncated.sum() == 0


def test_transitions():
    buf = make()
    fill(buf, [[5, 6], [4]])
    tr = buf.sample_transitions(300, rng=np.random.default_rng(2))
    obs, nxt = tr.observations.numpy(), tr.next_observations.numpy()
    assert obs.shape == (300, 4, 4, 1) and tr.rewards.shape == (300, 1) and tr.dones.shape == (300, 1)
    ep, step = obs[:, 0, 0, 0].astype(int), obs[:, 0, 1, 0].astype(int)
    np.testing.assert_array_equal(nxt[:, 0, 0, 0], ep)
    np.testing.assert_array_equal(nxt[:, 0, 1, 0], step + 1)
    np.testing.assert_array_equal(tr.actions.numpy()[:, 1], step)  # a_t taken at o_t
    np.testing.assert_array_equal(tr.rewards.numpy()[:, 0], 100 * ep + step)
    lengths = {1: 5, 2: 4, 3: 6}  # env 1 finishes episode 2 before env 0 starts episode 3
    np.testing.assert_array_equal(
        tr.dones.numpy()[:, 0], [lengths[e] == s + 1 for e, s in zip(ep, step, strict=True)]
    )
    assert buf.sample(8).observations.shape == (8, 4, 4, 1)


def test_eviction_oldest_first_and_wraparound():
    buf = make(buffer_size=20, n_envs=1)
    fill(buf, [[5, 6, 4, 7, 3]])  # records 6, 7, 5, 8, 4
    # 6+7+5=18; +8 evicts ep1 (-> 20); +4 evicts ep2 (-> 17)
    assert buf.n_episodes == 3 and buf.n_records == 17
    s = buf.sample_sequences(400, 2, rng=np.random.default_rng(3))
    ep, step = s.observations.numpy()[:, :, 0, 0, 0], s.observations.numpy()[:, :, 0, 1, 0]
    assert set(np.unique(ep)) == {3, 4, 5}
    assert np.all(ep[:, 0] == ep[:, 1]) and np.all(step[:, 1] == step[:, 0] + 1)  # wrapped episode intact


def test_uniform_over_windows():
    buf = make(n_envs=1)
    fill(buf, [[9, 19]])  # 10 and 20 records -> 6 and 16 windows of T=5
    s = buf.sample_sequences(22000, 5, rng=np.random.default_rng(4))
    first = s.observations.numpy()[:, 0, 0, :, 0].astype(int)
    keys = first[:, 0] * 100 + first[:, 1]
    counts = np.unique(keys, return_counts=True)[1]
    assert len(counts) == 22
    assert np.all(np.abs(counts / 1000 - 1) < 0.15)


def test_errors():
    buf = make(buffer_size=30, n_envs=1)
    with pytest.raises(ValueError, match="No stored episode"):
        buf.sample_sequences(4, 3)
    fill(buf, [[4]])
    with pytest.raises(ValueError, match="seq_len=6"):
        buf.sample_sequences(4, 6)
    with pytest.raises(ValueError, match="more than buffer_size"):
        fill(buf, [[40]])
    with pytest.raises(TypeError):
        EpisodeReplayBuffer(10, spaces.Dict({"a": IMG_SPACE}), ACT_SPACE)
    with pytest.raises(ValueError):
        buf.add_episode(np.zeros((3, 4, 4, 1), np.uint8), np.zeros((3, 2)), np.zeros(2), terminated=True)


def test_add_episode_and_discrete_actions():
    buf = EpisodeReplayBuffer(100, spaces.Box(-1, 1, (3,), np.float32), spaces.Discrete(4), device="cpu")
    obs = np.arange(5 * 3, dtype=np.float32).reshape(5, 3)
    buf.add_episode(obs, np.array([3, 1, 2, 0]), np.ones(4), terminated=False, truncated=True)
    s = buf.sample_sequences(2, 5, rng=np.random.default_rng(0))
    assert s.observations.dtype.is_floating_point and s.actions.shape == (2, 5, 1)
    np.testing.assert_array_equal(s.actions.numpy()[0, :, 0], [0, 3, 1, 2, 0])
    assert s.truncated.numpy()[0, -1] and not s.terminated.numpy().any()


def test_save_load_roundtrip(tmp_path):
    buf = make()
    fill(buf, [[6, 5], [8, 3]])
    buf.sample_sequences(4, 3)  # populate the cache
    path = tmp_path / "buffer.pkl"
    save_to_pkl(path, buf)
    loaded = load_from_pkl(path)
    assert loaded.n_episodes == buf.n_episodes and loaded.n_records == buf.n_records
    a = buf.sample_sequences(16, 4, rng=np.random.default_rng(7))
    b = loaded.sample_sequences(16, 4, rng=np.random.default_rng(7))
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x.numpy(), y.numpy())
    # staged (in-progress) steps survive too, and collection continues
    assert loaded.n_staged_steps == buf.n_staged_steps
    fill(loaded, [[4], [4]])
    assert loaded.n_episodes == buf.n_episodes + 2


def test_determinism_with_seeded_rng():
    buf = make()
    fill(buf, [[10, 12], [9]])
    a = buf.sample_window_indices(32, 4, np.random.default_rng(11))
    b = buf.sample_window_indices(32, 4, np.random.default_rng(11))
    np.testing.assert_array_equal(a, b)


def test_reset_without_done_closes_staged_episode():
    buf = make(n_envs=1)
    for t in range(3):  # episode 1 in progress, 3 steps
        buf.add(
            image(1, t)[None],
            image(1, t + 1)[None],
            np.array([[1, t]]),
            np.array([1.0]),
            np.array([False]),
            [{}],
        )
    assert buf.n_episodes == 0 and buf.n_staged_steps == 3
    # env reset outside the loop (new learn() call): obs does not continue the staged episode
    for t in range(4):
        done = t == 3
        buf.add(
            image(2, t)[None],
            image(2, t + 1)[None],
            np.array([[2, t]]),
            np.array([2.0]),
            np.array([done]),
            [{}],
        )
    assert buf.n_episodes == 2 and buf.n_staged_steps == 0
    assert buf.episode_lengths.tolist() == [4, 5]
    s = buf.sample_sequences(100, 2, rng=np.random.default_rng(0))
    ep = s.observations.numpy()[:, :, 0, 0, 0]
    assert np.all(ep[:, 0] == ep[:, 1])
    assert buf.truncated.sum() == 1 and buf.terminated.sum() == 1
    # explicit truncation of what is in progress
    buf.add(
        image(3, 0)[None], image(3, 1)[None], np.array([[3, 0]]), np.array([0.0]), np.array([False]), [{}]
    )
    buf.truncate_staged_episodes()
    assert buf.n_episodes == 3 and buf.n_staged_steps == 0
