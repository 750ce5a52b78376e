"""scripts/compile_scores.py and sb3_mb.common.scores on synthetic zoo logs with known scores."""

from __future__ import annotations

import csv
import io
import json
import os
from collections import OrderedDict

import numpy as np
import pytest
import yaml
from script_loader import load_script

from sb3_mb.common import scores

compile_scores = load_script("compile_scores")

TIMESTEPS = np.array([100, 200, 300])
# Per seed, the mean test return of each evaluation (two episodes: mean - 1 and mean + 1).
RSSM = {1: [10.0, 20.0, 30.0], 2: [12.0, 24.0, 36.0], 3: [8.0, 16.0, 24.0]}
MA = {1: [5.0, 7.0, 9.0], 2: [5.0, 9.0, 13.0]}


def write_run(folder, means, timesteps=TIMESTEPS, hyperparams=None, env_name="Pendulum-v1"):
    """A zoo run: evaluations.npz (two episodes per evaluation) and rl-zoo3's config.yml (an OrderedDict
    dumped with PyYAML's python tags, as rl-zoo3 writes it)."""
    os.makedirs(folder / env_name, exist_ok=True)
    means = np.asarray(means, dtype=float)
    results = np.stack([means - 1.0, means + 1.0], axis=1)
    np.savez(folder / "evaluations.npz", timesteps=timesteps, results=results, ep_lengths=results * 0 + 200)
    config = OrderedDict([("n_timesteps", int(timesteps[-1])), ("policy", "MlpPolicy")])
    config.update(hyperparams or {})
    with open(folder / env_name / "config.yml", "w") as file:
        yaml.dump(config, file)


@pytest.fixture
def logs(tmp_path):
    for seed, means in RSSM.items():  # no transition_model: the default
        write_run(tmp_path / "planet" / f"Pendulum-v1_{seed}", means, hyperparams={"batch_size": 8})
    for seed, means in MA.items():  # policy_kwargs as a dict, and as rl-zoo3's "dict(...)" string
        policy_kwargs = {"transition_model": "rssm_ma"} if seed == 1 else "dict(transition_model='rssm_ma')"
        write_run(
            tmp_path / "planet" / f"Pendulum-v1_{seed + 10}",
            means,
            hyperparams={"policy_kwargs": policy_kwargs},
        )
    write_run(tmp_path / "planet" / "Pendulum-v1-custom_1", [1e6] * 3)  # another task: never matched
    write_run(tmp_path / "mbpo" / "Pendulum-v1_1", [100.0, 200.0, 300.0])
    return tmp_path


def _rows_by_setting(rows):
    return {(row.env_id, row.setting): row for row in rows}


def test_table_equals_the_known_scores(logs):
    runs = scores.collect_runs(
        [str(logs)], ["planet", "mbpo"], ["Pendulum-v1"], label_keys=["transition_model"]
    )
    assert [(run.setting, os.path.basename(run.folder)) for run in runs] == [
        ("mbpo[transition_model=default]", "Pendulum-v1_1"),
        ("planet[transition_model=default]", "Pendulum-v1_1"),
        ("planet[transition_model=default]", "Pendulum-v1_2"),
        ("planet[transition_model=default]", "Pendulum-v1_3"),
        ("planet[transition_model=rssm_ma]", "Pendulum-v1_11"),
        ("planet[transition_model=rssm_ma]", "Pendulum-v1_12"),
    ]
    rows = _rows_by_setting(scores.score_table(runs))
    rssm = rows["Pendulum-v1", "planet[transition_model=default]"]
    assert (rssm.n_seeds, rssm.step) == (3, 300)
    assert rssm.mean == pytest.approx(30.0)
    assert rssm.std == pytest.approx(np.std([30.0, 36.0, 24.0]))
    assert (rssm.min, rssm.max) == (24.0, 36.0)
    ma = rows["Pendulum-v1", "planet[transition_model=rssm_ma]"]
    assert (ma.n_seeds, ma.mean, ma.std) == (2, 11.0, 2.0)
    mbpo = rows["Pendulum-v1", "mbpo[transition_model=default]"]
    assert (mbpo.n_seeds, mbpo.mean, mbpo.std) == (1, 300.0, 0.0)

    # A chosen step, and the mean of the last 2 evaluations per run (Rose's fork: last 10).
    rows = _rows_by_setting(scores.score_table(runs, step=250, last_n=2))
    rssm = rows["Pendulum-v1", "planet[transition_model=default]"]
    assert rssm.step == 250
    assert rssm.mean == pytest.approx(np.mean([15.0, 18.0, 12.0]))
    assert rssm.std == pytest.approx(np.std([15.0, 18.0, 12.0]))
    assert scores.score_table(runs, step=50) == []  # no evaluation at or before step 50

    # Without a label key the settings are the algorithms: the five planet runs are seeds of one setting.
    rows = _rows_by_setting(scores.score_table(scores.collect_runs([str(logs)], ["planet"], ["Pendulum-v1"])))
    assert list(rows) == [("Pendulum-v1", "planet")]
    assert rows["Pendulum-v1", "planet"].mean == pytest.approx(np.mean([30.0, 36.0, 24.0, 9.0, 13.0]))


def test_runs_of_different_lengths_are_scored_at_the_last_common_step(tmp_path):
    write_run(tmp_path / "planet" / "Pendulum-v1_1", [1.0, 2.0, 3.0])
    write_run(tmp_path / "planet" / "Pendulum-v1_2", [4.0, 6.0], timesteps=TIMESTEPS[:2])
    runs = scores.collect_runs([str(tmp_path)], ["planet"], ["Pendulum-v1"])
    (row,) = scores.score_table(runs)
    assert (row.step, row.mean) == (200, 4.0)  # (2 + 6) / 2 at step 200, the shorter run's last
    (curve,) = scores.score_curves(runs)
    np.testing.assert_array_equal(curve.timesteps, [100, 200])
    np.testing.assert_allclose(curve.mean, [2.5, 4.0])
    np.testing.assert_allclose(curve.std, [1.5, 2.0])


def test_folder_labels_name_settings(logs, tmp_path_factory):
    other = tmp_path_factory.mktemp("other")
    write_run(other / "planet" / "Pendulum-v1_1", [0.0, 0.0, -4.0])
    runs = scores.collect_runs([str(logs), str(other)], ["planet"], ["Pendulum-v1"], ["fork", "upstream"])
    rows = _rows_by_setting(scores.score_table(runs))
    assert rows["Pendulum-v1", "planet[fork]"].n_seeds == 5
    assert rows["Pendulum-v1", "planet[upstream]"].mean == -4.0
    runs = scores.collect_runs(
        [str(logs)], ["planet"], ["Pendulum-v1"], ["fork"], label_keys=["transition_model"]
    )
    assert {run.setting for run in runs} == {
        "planet[fork,transition_model=default]",
        "planet[fork,transition_model=rssm_ma]",
    }
    with pytest.raises(ValueError, match="2 folder labels for 1 folders"):
        scores.collect_runs([str(logs)], ["planet"], ["Pendulum-v1"], ["a", "b"])


def write_monitor(folder, lengths, returns):
    """An SB3 Monitor file with the given episodes."""
    os.makedirs(folder, exist_ok=True)
    with open(folder / "0.monitor.csv", "w") as file:
        file.write("#" + json.dumps({"t_start": 0.0, "env_id": "Pendulum-v1"}) + "\n")
        file.write("r,l,t\n")
        for index, (length, value) in enumerate(zip(lengths, returns, strict=True)):
            file.write(f"{value},{length},{index + 1.0}\n")


def test_training_scores_from_monitor_files(tmp_path):
    write_monitor(tmp_path / "sac" / "Pendulum-v1_1", [200] * 4, [-1000.0, -800.0, -400.0, -200.0])
    write_monitor(tmp_path / "sac" / "Pendulum-v1_2", [200] * 4, [-900.0, -700.0, -300.0, -100.0])
    runs = scores.collect_runs([str(tmp_path)], ["sac"], ["Pendulum-v1"], source="train")
    np.testing.assert_array_equal(runs[0].timesteps, [200, 400, 600, 800])
    (row,) = scores.score_table(runs, last_n=2)
    assert (row.step, row.mean, row.std) == (800, -250.0, 50.0)
    (row,) = scores.score_table(runs, step=500, last_n=1)
    assert (row.step, row.mean) == (500, -750.0)
    histograms = scores.compile_histograms(runs, last_n=2)
    np.testing.assert_array_equal(histograms["Pendulum-v1", "sac"], [-400.0, -200.0, -300.0, -100.0])
    with pytest.raises(FileNotFoundError, match="Monitor file"):
        scores.collect_runs([str(tmp_path)], ["mbpo"], ["Pendulum-v1"], source="train")


def test_histograms_hold_the_episodes_behind_the_table(logs):
    runs = scores.collect_runs([str(logs)], ["planet"], ["Pendulum-v1"], label_keys=["transition_model"])
    histograms = scores.compile_histograms(runs)
    np.testing.assert_array_equal(
        histograms["Pendulum-v1", "planet[transition_model=rssm_ma]"], [8, 10, 12, 14]
    )
    assert len(histograms["Pendulum-v1", "planet[transition_model=default]"]) == 6


def test_command_line_writes_table_plot_and_histograms(logs, tmp_path_factory, capsys):
    out = tmp_path_factory.mktemp("out")
    argv = ["-a", "planet", "mbpo", "-e", "Pendulum-v1", "-f", str(logs), "-k", "transition_model"]
    argv += ["--table", str(out / "scores.csv"), "--plot", str(out / "curves.svg")]
    argv += ["--histograms", str(out / "returns.png")]
    assert compile_scores.main(argv) == 0
    printed = capsys.readouterr().out
    assert "| Pendulum-v1 | planet[transition_model=rssm_ma] | 2 | 300 | 11.0 | 2.0 | 9.0 | 13.0 |" in printed
    with open(out / "scores.csv") as file:
        table = list(csv.DictReader(io.StringIO(file.read())))
    assert [(r["setting"], float(r["mean"]), float(r["std"])) for r in table] == [
        ("mbpo[transition_model=default]", 300.0, 0.0),
        ("planet[transition_model=default]", 30.0, pytest.approx(np.std([30.0, 36.0, 24.0]))),
        ("planet[transition_model=rssm_ma]", 11.0, 2.0),
    ]
    assert (out / "curves.svg").stat().st_size > 0 and (out / "returns.png").stat().st_size > 0

    # The plotted curve of a setting is its mean over seeds.
    curves = scores.score_curves(
        scores.collect_runs([str(logs)], ["planet"], ["Pendulum-v1"], label_keys=["transition_model"])
    )
    figure = scores.plot_score_curves(curves, str(out / "curves.png"))
    lines = {line.get_label(): line for line in figure.axes[0].get_lines()}
    line = lines["planet[transition_model=default] (3 seeds)"]
    np.testing.assert_array_equal(line.get_xdata(), TIMESTEPS)
    np.testing.assert_allclose(line.get_ydata(), [10.0, 20.0, 30.0])

    assert compile_scores.main(["-a", "sac", "-e", "Pendulum-v1", "-f", str(logs)]) == 1
    assert os.path.join(str(logs), "sac", "Pendulum-v1_<N>") in capsys.readouterr().err
    with pytest.raises(SystemExit):
        compile_scores.main(["-a", "planet", "-e", "Pendulum-v1", "-f", str(logs), "--table", "x.txt"])


@pytest.mark.parametrize(("given", "expected"), [(6000, 6000), (-1, 300), (None, 300)])
def test_run_budget_is_the_given_n_else_the_config(tmp_path, given, expected):
    """rl-zoo3's config.yml keeps the hyperparameter file's n_timesteps when ``-n`` overrides it; the budget
    is args.yml's ``-n`` when positive (-1 is rl-zoo3's "not given")."""
    run = tmp_path / "Pendulum-v1_1"
    write_run(run, RSSM[1])  # config.yml: n_timesteps 300
    args = OrderedDict([("seed", 7)] + ([("n_timesteps", given)] if given is not None else []))
    with open(run / "Pendulum-v1" / "args.yml", "w") as file:
        yaml.dump(args, file)
    assert scores.read_run_budget(str(run), "Pendulum-v1") == (7, expected)
    assert scores.read_run_budget(str(tmp_path / "missing_1"), "Pendulum-v1") == (None, None)
