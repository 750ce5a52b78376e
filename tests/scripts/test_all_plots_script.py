"""scripts/all_plots.py on synthetic evaluations.npz with known values."""

from __future__ import annotations

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
from script_loader import SCRIPTS, load_script, table_rows

all_plots = load_script("all_plots")

TIMESTEPS = np.array([100, 200, 300])
BASE = np.array([-50.0, 20.0, 100.0])
OFFSETS = [-10.0, 0.0, 10.0]  # per seed: per-run means BASE + offset, std over runs sqrt(200 / 3)


def write_evaluations(folder, timesteps, per_run_mean):
    """Two episodes per evaluation, ``mean - 1`` and ``mean + 1``."""
    os.makedirs(folder, exist_ok=True)
    results = np.stack([per_run_mean - 1.0, per_run_mean + 1.0], axis=1)
    np.savez(
        os.path.join(folder, "evaluations.npz"), timesteps=timesteps, results=results, ep_lengths=results * 0
    )


@pytest.fixture
def logs(tmp_path):
    for seed, offset in enumerate(OFFSETS, start=1):
        write_evaluations(tmp_path / "mbpo" / f"Pendulum-v1_{seed}", TIMESTEPS, BASE + offset)
    write_evaluations(
        tmp_path / "mbpo" / "Pendulum-v1_4", TIMESTEPS[:2], BASE[:2] + 1000
    )  # unfinished: left out
    write_evaluations(tmp_path / "mbpo" / "Pendulum-v1-custom_1", TIMESTEPS, BASE + 1000)  # another env
    write_evaluations(tmp_path / "sac" / "Pendulum-v1_1", TIMESTEPS, BASE / 2)
    write_evaluations(tmp_path / "sac" / "sb3_mb-CartpoleBalance-v0_1", TIMESTEPS, BASE * 3)
    return tmp_path


def test_statistics_and_table(logs):
    results = all_plots.collect(
        ["mbpo", "sac"], ["Pendulum-v1", "sb3_mb/CartpoleBalance-v0"], [str(logs)], ["L"]
    )
    mbpo = results["Pendulum-v1"]["MBPO-L"]
    assert [os.path.basename(os.path.dirname(p)) for p in mbpo["runs"]] == [
        f"Pendulum-v1_{i}" for i in (1, 2, 3)
    ]
    assert mbpo["left_out"] == [
        (str(logs / "mbpo" / "Pendulum-v1_4" / "evaluations.npz"), "2 evaluations, the longest run has 3")
    ]
    np.testing.assert_array_equal(mbpo["timesteps"], TIMESTEPS)
    np.testing.assert_allclose(mbpo["mean"], BASE)
    np.testing.assert_allclose(mbpo["mean_per_eval"], BASE[:, None] + np.array(OFFSETS)[None])
    stderr = np.sqrt(200 / 3) / np.sqrt(3)
    np.testing.assert_allclose(mbpo["std_error"], stderr)
    np.testing.assert_allclose(mbpo["band"], stderr)
    np.testing.assert_allclose(mbpo["last_evals"], [90.0, 100.0, 110.0])
    assert mbpo["std_error_last_eval"] == pytest.approx(stderr)
    assert "MBPO-L" not in results["sb3_mb/CartpoleBalance-v0"]

    headers, value_matrix = all_plots.results_table(results, ["mbpo", "sac"], ["L"])
    assert headers == ["Environments", "MBPO", "SAC"]
    assert value_matrix == [
        ["", "L", "L"],
        ["Pendulum-v1", "100 +/- 5", "50 +/- 0"],
        ["sb3_mb/CartpoleBalance-v0", "0.0 +/- 0.0", "300 +/- 0"],
    ]
    assert all_plots.results_table(results, ["mbpo"], ["L"], median=True)[1][1] == ["Pendulum-v1", "100"]
    table = all_plots.markdown_table(headers, value_matrix)
    assert "# results_table" in table
    assert table_rows(table) == [
        ["Environments", "MBPO", "SAC"],
        ["", "L", "L"],
        ["Pendulum-v1", "100 +/- 5", "50 +/- 0"],
        ["sb3_mb/CartpoleBalance-v0", "0.0 +/- 0.0", "300 +/- 0"],
    ]

    # 95% Student-t interval over 3 runs: sample std 10, t(0.975, 2) = 4.3027.
    ci = all_plots.collect(["mbpo"], ["Pendulum-v1"], [str(logs)], ["L"], confidence=0.95)
    np.testing.assert_allclose(ci["Pendulum-v1"]["MBPO-L"]["band"], 4.302653 * 10 / np.sqrt(3), rtol=1e-5)
    # --max-timesteps 200: the unfinished run joins.
    short = all_plots.collect(["mbpo"], ["Pendulum-v1"], [str(logs)], ["L"], max_timesteps=200)["Pendulum-v1"]
    assert len(short["MBPO-L"]["runs"]) == 4
    np.testing.assert_allclose(short["MBPO-L"]["mean"], BASE[:2] + 250)


def test_figure_matches_the_data(logs):
    results = all_plots.collect(["mbpo", "sac"], ["Pendulum-v1"], [str(logs)], ["L"])
    output = logs / "plots" / "Pendulum-v1.svg"
    fig = all_plots.plot_env("Pendulum-v1", results["Pendulum-v1"], str(output), million=False)
    assert output.stat().st_size > 0
    lines = fig.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["MBPO-L (3 runs)", "SAC-L (1 run)"]
    np.testing.assert_allclose(lines[0].get_xydata(), np.stack([TIMESTEPS, BASE], axis=1))
    band = fig.axes[0].collections[0].get_paths()[0].vertices
    stderr = np.sqrt(200 / 3) / np.sqrt(3)
    assert band[:, 1].max() == pytest.approx(BASE.max() + stderr)
    assert band[:, 1].min() == pytest.approx(BASE.min() - stderr)


def test_command_line(logs, tmp_path):
    script = os.path.join(SCRIPTS, "all_plots.py")
    env = {**os.environ, "MPLBACKEND": "Agg"}
    args = ["-a", "mbpo", "sac", "-e", "Pendulum-v1", "sb3_mb/CartpoleBalance-v0", "-f", str(logs), "-l", "L"]
    out = ["--plot-dir", str(tmp_path / "figs"), "--table", str(tmp_path / "t.md"), "-o", str(tmp_path / "r")]
    done = subprocess.run([sys.executable, script, *args, *out], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "figs" / "Pendulum-v1.png").stat().st_size > 0
    assert (tmp_path / "figs" / "sb3_mb-CartpoleBalance-v0.png").stat().st_size > 0
    assert table_rows((tmp_path / "t.md").read_text())[2] == ["Pendulum-v1", "100 +/- 5", "50 +/- 0"]
    assert "Pendulum-v1_4" in done.stderr  # the unfinished run is named
    with open(tmp_path / "r.pkl", "rb") as file:
        saved = pickle.load(file)
    assert saved["results_table"]["value_matrix"][1] == ["Pendulum-v1", "100 +/- 5", "50 +/- 0"]
    np.testing.assert_allclose(saved["Pendulum-v1"]["MBPO-L"]["mean"], BASE)

    empty = subprocess.run(
        [sys.executable, script, "-a", "mbpo", "-e", "Hopper-v5", "-f", str(tmp_path / "nothing")],
        env=env,
        capture_output=True,
        text=True,
    )
    assert empty.returncode == 1
    assert str(tmp_path / "nothing" / "mbpo" / "Hopper-v5_<N>") in empty.stderr
    helped = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "--plot-dir" in helped.stdout
