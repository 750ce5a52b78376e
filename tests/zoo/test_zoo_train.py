"""``sb3-mb-zoo train`` / ``python -m zoo.train``: rl-zoo3's trainer on sb3-mb algorithms, its log layout."""

import numpy as np
import pytest

from zoo import cli


@pytest.mark.parametrize(
    "algo, env_id, params",
    [
        (
            "mbpo",
            "Pendulum-v1",
            "learning_starts:100 model_train_freq:100 epoch_length:100 n_sac_updates_per_step:1 "
            "n_rollouts_per_step:10 model_max_epochs:3",
        ),
        (
            "planet",
            "sb3_mb/CartpoleBalance-v0",
            "seed_episodes:1 updates_per_episode:2 batch_size:4 sequence_length:8 n_candidates:12 "
            "n_elites:3 n_iterations:2 planning_horizon:3",
        ),
    ],
)
def test_train_writes_the_rl_zoo3_layout(algo, env_id, params, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    n_steps = 300
    cli.main(
        ["train", "--algo", algo, "--env", env_id, "-n", str(n_steps), "--eval-freq", str(n_steps // 2)]
        + ["--eval-episodes", "1", "--seed", "0", "-f", "logs", "-params", *params.split()]
    )
    run_dir = tmp_path / "logs" / algo / f"{env_id.replace('/', '-')}_1"
    if not run_dir.exists():  # rl-zoo3 keeps the namespace's slash in the folder name on some versions
        run_dir = next((tmp_path / "logs" / algo).glob("*_1"))
    env_name = run_dir.name[: -len("_1")]
    config = (run_dir / env_name / "config.yml").read_text()  # an OrderedDict dump: read as text
    assert "- policy" in config and ("MlpPolicy" in config or "CnnPolicy" in config)
    assert (run_dir / env_name / "args.yml").exists()
    assert (run_dir / f"{env_name}.zip").exists() and (run_dir / "best_model.zip").exists()
    evaluations = np.load(run_dir / "evaluations.npz")
    assert evaluations["timesteps"].tolist() == [n_steps // 2, n_steps]


def test_unknown_command_names_the_known_ones():
    with pytest.raises(SystemExit, match="known commands: train"):
        cli.main(["enjoyy"])
