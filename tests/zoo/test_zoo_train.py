"""`sb3-mb-zoo train` then `enjoy`: rl-zoo3's trainer and enjoy loop on sb3-mb algorithms, its log layout."""

import numpy as np
import pytest

import sb3_mb
from zoo import cli
from zoo.enjoy import LoadWithoutReplayBuffer

# Every registered algorithm: (algo, env id, tiny constructor arguments as rl-zoo3 -params).
CASES = [
    (
        "mbpo",
        "Pendulum-v1",
        "learning_starts:100 model_train_freq:100 epoch_length:100 gradient_steps:1 "
        "n_rollouts_per_step:10 model_max_epochs:3",
    ),
    (
        "planet",
        "sb3_mb/CartpoleBalance-v0",
        "seed_episodes:1 updates_per_episode:2 batch_size:4 sequence_length:8 "
        "policy_kwargs:dict(n_candidates=12,n_elites=3,n_iterations=2,planning_horizon=3)",
    ),
    (
        "steve",
        "Pendulum-v1",
        "learning_starts:100 batch_size:32 gradient_steps:1 model_pretrain_steps:20 "
        "policy_kwargs:dict(net_arch=[32,32],model_net_arch=[32,32])",
    ),
    (
        "gammamve",
        "Pendulum-v1",
        "learning_starts:100 batch_size:32 model_learning_starts:20 model_batch_size:32 "
        "gamma_model_kwargs:dict(hidden_sizes=(16,),bins=4,n_blocks=1) reward_net_arch:(16,) "
        "policy_kwargs:dict(net_arch=[32,32])",
    ),
    (
        "worldmodels",
        "Pendulum-v1",
        "n_random_rollouts:1 mdn_epochs:1 batch_size:4 sequence_length:8 population_size:4 "
        "rollouts_per_candidate:1 n_generations:1 max_episode_steps:20 "
        "policy_kwargs:dict(z_dim=4,hidden_size=8,n_mixtures=2,mlp_hidden_sizes=(16,))",
    ),
    (
        "worldmodelsppo",
        "sb3_mb/MovingBar-v0",
        "n_steps:32 batch_size:16 n_epochs:1 "
        "policy_kwargs:dict(image_size=16,z_dim=8,hidden_size=16,n_mixtures=2,vae_channels=(8,16),"
        "stem_channels=8,bottleneck_channels=4,inverse_hidden_size=16)",
    ),
]

# Env steps of one episode of each env (enjoy's -n): the loop prints one episode's return.
EPISODE_STEPS = {"Pendulum-v1": 200, "sb3_mb/CartpoleBalance-v0": 125, "sb3_mb/MovingBar-v0": 20}


def test_every_registered_algorithm_is_trained_and_enjoyed():
    assert {algo for algo, _, _ in CASES} == set(sb3_mb.list_algorithms())


@pytest.mark.parametrize("algo, env_id, params", CASES)
def test_train_writes_the_rl_zoo3_layout_and_enjoy_replays_it(
    algo, env_id, params, tmp_path, monkeypatch, capsys
):
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

    # enjoy: loads without a replay buffer (an off-policy agent), carries the recurrent state, prints the
    # episode returns.
    if sb3_mb.ALGOS[algo].off_policy:
        loaded = LoadWithoutReplayBuffer(sb3_mb.get_algorithm(algo)).load(run_dir / f"{env_name}.zip")
        assert loaded.buffer_size == 1
    capsys.readouterr()
    episode_steps = EPISODE_STEPS[env_id]
    cli.main(
        ["enjoy", "--algo", algo, "--env", env_id, "-f", "logs", "--no-render", "-n", str(episode_steps)]
    )
    out = capsys.readouterr().out
    assert f"Loading logs/{algo}/{run_dir.name}/{env_name}.zip" in out
    assert "1 Episodes" in out and "Mean reward:" in out


def test_unknown_command_names_the_known_ones():
    with pytest.raises(
        SystemExit, match="known commands: enjoy, load-from-hub, push-to-hub, record-video, train"
    ):
        cli.main(["enjoyy"])


def test_missing_conf_file_names_its_path(tmp_path):
    missing = tmp_path / "missing.yml"
    with pytest.raises(SystemExit, match=rf"FileNotFoundError: No hyperparameters file {missing}"):
        cli.main(["train", "--algo", "mbpo", "--env", "Pendulum-v1", "--conf-file", str(missing)])


@pytest.mark.parametrize(
    "params, message",
    [
        (["gamma:abc"], r"-params gamma: the value 'abc' does not evaluate \(NameError"),
        (
            ["gamma:0.9", "gama:0.9"],
            r"-params gama: 'gama' is not an argument of MBPO \(mbpo\).*did you mean gamma",
        ),
        (["gamma"], r"-params 'gamma': expected key:value"),
    ],
    ids=["value", "key", "form"],
)
def test_bad_params_name_the_parameter(params, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit, match=message):
        cli.main(["train", "--algo", "mbpo", "--env", "Pendulum-v1", "-params", *params, "-n", "10"])
