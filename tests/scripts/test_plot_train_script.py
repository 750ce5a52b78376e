"""scripts/plot_train.py: curves from Monitor files written by SB3's Monitor, and from a debug zoo run."""

from __future__ import annotations

import os
import subprocess
import sys

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest
from script_loader import SCRIPTS, load_script
from stable_baselines3.common.monitor import Monitor

plot_train = load_script("plot_train")


class FixedEpisodes(gym.Env):
    """Episode ``k`` lasts ``lengths[k]`` steps, each with reward ``rewards[k]`` (known returns)."""

    observation_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, lengths, rewards):
        self.lengths, self.rewards, self.episode, self.t = lengths, rewards, -1, 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.episode, self.t = self.episode + 1, 0
        return np.zeros(1, np.float32), {}

    def step(self, action):
        self.t += 1
        done = self.t >= self.lengths[self.episode]
        return np.zeros(1, np.float32), float(self.rewards[self.episode]), done, False, {}


def write_run(folder, lengths, rewards):
    """Run :class:`FixedEpisodes` through SB3's Monitor into ``folder/0.monitor.csv``."""
    os.makedirs(folder, exist_ok=True)
    env = Monitor(FixedEpisodes(lengths, rewards), os.path.join(folder, "0"))
    for _ in lengths:
        env.reset()
        done = False
        while not done:
            _, _, terminated, truncated, _ = env.step(0)
            done = terminated or truncated
    env.close()


def test_curves_match_monitor_files(tmp_path):
    rng = np.random.default_rng(0)
    lengths = rng.integers(5, 20, size=12).tolist()
    rewards = rng.normal(size=12).round(3).tolist()
    write_run(tmp_path / "mbpo" / "Pendulum-v1_1", lengths, rewards)
    write_run(tmp_path / "mbpo" / "Pendulum-v1_2", lengths[:3], rewards[:3])
    write_run(tmp_path / "planet" / "sb3_mb-CartpoleBalance-v0_1", lengths, rewards)
    write_run(tmp_path / "mbpo" / "Pendulum-v1-custom_1", lengths, rewards)  # not a Pendulum-v1 run

    curves = plot_train.load_curves(
        str(tmp_path), ["mbpo", "planet"], ["Pendulum-v1", "sb3_mb/CartpoleBalance-v0"], episode_window=4
    )
    assert [c.label for c in curves] == [
        "mbpo Pendulum-v1_1",
        "mbpo Pendulum-v1_2",
        "planet sb3_mb-CartpoleBalance-v0_1",
    ]
    csv = pd.read_csv(tmp_path / "mbpo" / "Pendulum-v1_1" / "0.monitor.csv", skiprows=1)
    returns = np.array(lengths) * np.array(rewards)
    np.testing.assert_allclose(csv["r"], returns, atol=1e-5)
    # Window of 4 episodes: point i is the mean of returns i..i+3, at the env step where episode i+3 ends.
    expected_y = np.convolve(returns, np.ones(4) / 4, mode="valid")
    expected_x = np.cumsum(lengths)[3:]
    np.testing.assert_allclose(curves[0].x, expected_x)
    np.testing.assert_allclose(curves[0].y, expected_y, atol=1e-5)
    # Three episodes, window 4: the running mean, one point per episode.
    np.testing.assert_allclose(curves[1].x, np.cumsum(lengths[:3]))
    np.testing.assert_allclose(curves[1].y, np.cumsum(returns[:3]) / [1, 2, 3], atol=1e-5)

    for output in ("curves.png", "curves.svg"):
        fig = plot_train.plot_curves(curves, str(tmp_path / output))
        assert (tmp_path / output).stat().st_size > 0
        lines = fig.axes[0].get_lines()
        assert [line.get_label() for line in lines] == [c.label for c in curves]
        np.testing.assert_allclose(
            lines[0].get_xydata(), np.stack([expected_x, expected_y], axis=1), atol=1e-5
        )

    episodes = plot_train.load_curves(
        str(tmp_path), ["mbpo"], ["Pendulum-v1"], x_axis="episodes", episode_window=1
    )
    np.testing.assert_allclose(episodes[0].x, np.arange(12))  # SB3 counts episodes from 0
    np.testing.assert_allclose(episodes[0].y, returns, atol=1e-5)


def test_errors_name_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="no folder .*sac"):
        plot_train.load_curves(str(tmp_path), ["sac"], ["Pendulum-v1"])
    (tmp_path / "mbpo" / "Pendulum-v1_1").mkdir(parents=True)  # a run without a Monitor file
    with pytest.raises(FileNotFoundError, match="Pendulum-v1_1"):
        plot_train.load_curves(str(tmp_path), ["mbpo"], ["Pendulum-v1"])
    with pytest.raises(FileNotFoundError, match="Hopper-v5_<N>"):
        plot_train.load_curves(str(tmp_path), ["mbpo"], ["Hopper-v5"])
    write_run(tmp_path / "mbpo" / "Pendulum-v1_2", [3], [1.0])
    with pytest.raises(KeyError, match="is_success"):
        plot_train.load_curves(str(tmp_path), ["mbpo"], ["Pendulum-v1"], y_axis="success")


def test_command_line_on_a_debug_zoo_run(debug_logs, tmp_path):
    """A real ``python -m zoo.train --debug`` run (3 Pendulum-v1 episodes), plotted from the command line."""
    logs = debug_logs
    env = {**os.environ, "MPLBACKEND": "Agg"}
    output = tmp_path / "train.png"
    script = os.path.join(SCRIPTS, "plot_train.py")
    done = subprocess.run(
        [sys.executable, script, "-a", "mbpo", "-e", "Pendulum-v1", "-f", str(logs), "-o", str(output)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert output.stat().st_size > 0
    csv = pd.read_csv(logs / "mbpo" / "Pendulum-v1_1" / "0.monitor.csv", skiprows=1)
    assert f"{len(csv)} episodes, last smoothed value {csv['r'].mean():.2f}" in done.stdout

    missing = subprocess.run(
        [
            sys.executable,
            script,
            "-a",
            "mbpo",
            "-e",
            "Pendulum-v1",
            "-f",
            str(tmp_path / "empty"),
            "-o",
            "x.png",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert missing.returncode == 1
    assert str(tmp_path / "empty" / "mbpo") in missing.stderr
    helped = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "--output" in helped.stdout
