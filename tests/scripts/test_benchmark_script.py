"""scripts/benchmark.py on one debug-trained agent."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from progress_bars import RecordingBar
from script_loader import SCRIPTS, load_script, table_rows

from sb3_mb.common import utils as common_utils

benchmark = load_script("benchmark")
SCRIPT = os.path.join(SCRIPTS, "benchmark.py")


def run_benchmark(*args):
    env = {**os.environ, "MPLBACKEND": "Agg"}
    return subprocess.run([sys.executable, SCRIPT, *args], env=env, capture_output=True, text=True)


def test_benchmark_of_a_debug_agent(debug_logs, tmp_path):
    agents = benchmark.find_agents(str(debug_logs))
    assert [(a.algo, a.env_id, a.exp_id) for a in agents] == [("mbpo", "Pendulum-v1", 1)]

    out = tmp_path / "bench"
    done = run_benchmark("--log-dir", str(debug_logs), "--benchmark-dir", str(out), "-n", "400")
    assert done.returncode == 0, done.stderr
    monitor = pd.read_csv(out / "mbpo-Pendulum-v1_1" / "0.monitor.csv", skiprows=1)
    assert len(monitor) == 2  # 400 steps of 200-step episodes
    rows = table_rows((out / "benchmark.md").read_text())
    assert rows[0] == benchmark.COLUMNS
    row = dict(zip(rows[0], rows[1], strict=True))
    assert (row["algo"], row["env_id"], row["exp_id"]) == ("mbpo", "Pendulum-v1", "1")
    np.testing.assert_allclose(float(row["mean_reward"]), monitor["r"].mean(), rtol=1e-3)
    np.testing.assert_allclose(float(row["std_reward"]), monitor["r"].std(ddof=0), rtol=1e-3)
    assert (row["eval_episodes"], row["eval_timesteps"], row["n_timesteps"]) == ("2", "400", "600")
    train_monitor = pd.read_csv(debug_logs / "mbpo" / "Pendulum-v1_1" / "0.monitor.csv", skiprows=1)
    np.testing.assert_allclose(float(row["train_wall_time_s"]), train_monitor["t"].max(), atol=0.051)
    assert float(row["eval_wall_time_s"]) > 0

    again = run_benchmark("--log-dir", str(debug_logs), "--benchmark-dir", str(out), "-n", "400")
    assert again.returncode == 0 and "already evaluated" in again.stdout
    assert table_rows((out / "benchmark.md").read_text()) == rows


def test_errors_name_the_folder(debug_logs, tmp_path):
    # A run whose model is missing: enjoy fails, the run is named and the exit status is 1.
    broken = tmp_path / "logs" / "mbpo" / "Pendulum-v1_1"
    shutil.copytree(debug_logs / "mbpo" / "Pendulum-v1_1" / "Pendulum-v1", broken / "Pendulum-v1")
    done = run_benchmark(
        "--log-dir", str(tmp_path / "logs"), "--benchmark-dir", str(tmp_path / "b"), "-n", "400"
    )
    assert done.returncode == 1
    assert str(broken) in done.stderr
    assert not (tmp_path / "b" / "benchmark.md").exists()

    (tmp_path / "empty" / "mbpo").mkdir(parents=True)
    done = run_benchmark("--log-dir", str(tmp_path / "empty"))
    assert done.returncode == 1 and f"no trained agent under {str(tmp_path / 'empty')!r}" in done.stderr
    done = run_benchmark("--log-dir", str(tmp_path / "missing"))
    assert done.returncode == 1 and str(tmp_path / "missing") in done.stderr
    helped = run_benchmark("--help")
    assert helped.returncode == 0 and "--benchmark-dir" in helped.stdout


@pytest.mark.parametrize("progress_bar", [True, False])
def test_benchmark_progress_bar(progress_bar, tmp_path, monkeypatch, capsys):
    RecordingBar.bars = []

    agents = [
        benchmark.Agent("mbpo", "Pendulum-v1", i, str(tmp_path / f"Pendulum-v1_{i}")) for i in (1, 2, 3)
    ]
    monkeypatch.setattr(common_utils, "tqdm", RecordingBar)
    monkeypatch.setattr(benchmark, "find_agents", lambda *args: agents)
    row = dict(mean_reward=1.0, std_reward=0.0, eval_episodes=1, eval_wall_time_s=0.1)

    def evaluate(agent, log_dir, reward_log, *args):  # as benchmark.evaluate, without running the agent
        os.makedirs(reward_log, exist_ok=True)
        return {**row, "algo": agent.algo, "env_id": agent.env_id, "exp_id": agent.exp_id}

    monkeypatch.setattr(benchmark, "evaluate", evaluate)
    argv = ["--log-dir", str(tmp_path), "--benchmark-dir", str(tmp_path / "bench")]
    assert benchmark.main(argv + ["--progress-bar"] * progress_bar) == 0
    out = capsys.readouterr()
    (bar,) = RecordingBar.bars
    assert bar.kwargs["total"] == 3 and bar.updates == 3 and bar.kwargs["disable"] is (not progress_bar)
    assert ("benchmark agents" in out.out + out.err) is progress_bar
