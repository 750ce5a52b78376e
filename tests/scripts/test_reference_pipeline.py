"""The reference agents end to end (issue 16): train at the debug budget, plot, write benchmark.md, publish
all to a Hub on 127.0.0.1 and load one back; and the training command's plan, dry run and resumption."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from script_loader import REPO_ROOT, SCRIPTS, load_script, table_rows

sys.path.insert(0, os.path.join(REPO_ROOT, "tests", "zoo"))
from hub_server import FakeHub  # noqa: E402

from zoo.hyperparams import HYPERPARAMS_DIR, read_hyperparams_file  # noqa: E402

reference = load_script("train_reference_agents")
TOKEN = "hf_fake_token_for_tests"


def run_script(name, *args, env=None):
    env = {**os.environ, "MPLBACKEND": "Agg", **(env or {})}
    return subprocess.run(
        [sys.executable, os.path.join(SCRIPTS, f"{name}.py"), *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
    )


def test_reference_file_covers_every_algorithm():
    import sb3_mb

    entries = reference.read_reference()
    assert set(entries) - {"debug"} == set(sb3_mb.list_algorithms())
    for algo, envs in entries.items():
        if algo == "debug":
            continue
        for env_id, entry in envs.items():
            # Every env of the budget has hyperparameters in the algorithm's file.
            assert env_id in read_hyperparams_file(HYPERPARAMS_DIR / f"{algo}.yml"), (algo, env_id)
            assert entry["eval_freq"] <= entry["n_timesteps"] and entry["seeds"]


def test_reference_file_errors_name_the_entry(tmp_path):
    path = tmp_path / "reference.yml"
    path.write_text("mbpo:\n  Pendulum-v1:\n    n_timestep: 100\n    seeds: [0]\n")
    with pytest.raises(ValueError, match=r"mbpo / Pendulum-v1: unknown keys \['n_timestep'\].*missing"):
        reference.read_reference(str(path))


def test_dry_run_and_resume(debug_logs, tmp_path):
    """The commands (one thread each, the budget of the file or --debug), and a finished run is skipped."""
    logs = tmp_path / "ref"
    args = ["--log-dir", str(logs), "--algos", "mbpo", "--env", "Pendulum-v1", "--dry-run"]
    done = run_script("train_reference_agents", *args)
    assert done.returncode == 0, done.stderr
    entry = reference.read_reference()["mbpo"]["Pendulum-v1"]
    lines = [line for line in done.stdout.splitlines() if "zoo.train" in line]
    assert len(lines) == len(entry["seeds"])
    for seed, line in zip(entry["seeds"], lines, strict=True):
        assert line.startswith(f"mbpo-Pendulum-v1-seed{seed}: OMP_NUM_THREADS=1 MKL_NUM_THREADS=1")
        assert (
            f"--seed {seed} --num-threads 1 -n {entry['n_timesteps']} --eval-freq {entry['eval_freq']}"
            in line
        )
    assert not logs.exists()  # a dry run trains nothing

    # The session's debug run (seed 0) stands in for a finished debug run: skipped; a full run is not done.
    shutil.copytree(debug_logs / "mbpo" / "Pendulum-v1_1", logs / "mbpo" / "Pendulum-v1_1")
    done = run_script("train_reference_agents", *args, "--debug")
    assert f"mbpo-Pendulum-v1-seed0: done ({logs / 'mbpo' / 'Pendulum-v1_1'}), skipped" in done.stdout
    assert "0 run(s) to train, 1 done" in done.stdout
    done = run_script("train_reference_agents", *args)
    assert "mbpo-Pendulum-v1-seed0: done" not in done.stdout  # 600 debug steps are not the 1500 of the budget
    # A run trained with -n: args.yml holds the steps (config.yml keeps the hyperparameter file's value).
    args_file = logs / "mbpo" / "Pendulum-v1_1" / "Pendulum-v1" / "args.yml"
    text = args_file.read_text()
    assert "  - - n_timesteps\n    - -1\n" in text
    args_file.write_text(
        text.replace("  - - n_timesteps\n    - -1\n", f"  - - n_timesteps\n    - {entry['n_timesteps']}\n")
    )
    done = run_script("train_reference_agents", *args)
    assert "mbpo-Pendulum-v1-seed0: done" in done.stdout
    assert f"{len(entry['seeds']) - 1} run(s) to train, 1 done (dry run)" in done.stdout
    # Without its final model the run is not done.
    os.remove(logs / "mbpo" / "Pendulum-v1_1" / "Pendulum-v1.zip")
    done = run_script("train_reference_agents", *args, "--debug")
    assert "1 run(s) to train, 0 done" in done.stdout and "--debug" in done.stdout


@pytest.mark.slow
def test_reference_pipeline(tmp_path):
    """From the debug budget: two tiny agents trained (in parallel), curves, benchmark.md, all published to a
    local Hub, one loaded back; training again skips both."""
    logs, bench, plots = tmp_path / "logs", tmp_path / "bench", tmp_path / "plots"
    train = [
        "--debug",
        "--log-dir",
        str(logs),
        "--algos",
        "mbpo",
        "steve",
        "--env",
        "Pendulum-v1",
        "--jobs",
        "2",
    ]
    done = run_script("train_reference_agents", *train)
    assert done.returncode == 0, done.stdout + done.stderr
    for algo in ("mbpo", "steve"):
        run = logs / algo / "Pendulum-v1_1"
        assert (run / "Pendulum-v1.zip").is_file() and (run / "evaluations.npz").is_file()
        assert (run / "train.log").is_file()
    assert not list((logs / ".staging").iterdir())
    again = run_script("train_reference_agents", *train)
    assert again.returncode == 0 and "0 run(s) to train, 2 done" in again.stdout

    done = run_script(
        "all_plots", "-a", "mbpo", "steve", "-e", "Pendulum-v1", "-f", str(logs), "--plot-dir", str(plots)
    )
    assert done.returncode == 0, done.stderr
    assert (plots / "Pendulum-v1.png").stat().st_size > 1000

    done = run_script("benchmark", "--log-dir", str(logs), "--benchmark-dir", str(bench), "-n", "200")
    assert done.returncode == 0, done.stderr
    rows = table_rows((bench / "benchmark.md").read_text())
    assert [(row[0], row[1]) for row in rows[1:]] == [("mbpo", "Pendulum-v1"), ("steve", "Pendulum-v1")]

    with FakeHub(TOKEN) as hub:
        hub_env = {
            "HF_ENDPOINT": hub.url,
            "HF_TOKEN": TOKEN,
            "HF_HOME": str(tmp_path / "hf_home"),
            "HF_HUB_DISABLE_TELEMETRY": "1",
        }
        publish = ["--log-dir", str(logs), "-orga", "tester", "--n-eval-episodes", "1", "--no-render"]
        done = run_script("publish_all", *publish, env=hub_env)
        assert done.returncode == 0, done.stdout + done.stderr
        assert set(hub.repos) == {"tester/mbpo-Pendulum-v1", "tester/steve-Pendulum-v1"}
        for repo in hub.repos.values():
            assert {"README.md", "results.json", "evaluation_curve.png"} <= set(repo)
        results = json.loads(hub.repos["tester/steve-Pendulum-v1"]["results.json"])

        load = [sys.executable, "-m", "zoo.load_from_hub", "--algo", "steve", "--env", "Pendulum-v1"]
        load += ["-orga", "tester", "-f", str(tmp_path / "loaded"), "--trust-pickle"]
        done = subprocess.run(
            load, cwd=REPO_ROOT, env={**os.environ, **hub_env}, capture_output=True, text=True
        )
        assert done.returncode == 0, done.stderr
    loaded = tmp_path / "loaded" / "steve" / "Pendulum-v1_1"
    assert (loaded / "Pendulum-v1.zip").read_bytes() == (
        logs / "steve" / "Pendulum-v1_1" / "Pendulum-v1.zip"
    ).read_bytes()
    assert results["agent_sha256"]
