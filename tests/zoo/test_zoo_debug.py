"""The zoo's hyperparameter files: `--debug` entries, every entry builds its algorithm, errors that name the
file, the line and the key."""

import importlib.util
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import yaml

import sb3_mb
from zoo import hyperparams, train
from zoo.hyperparams import (
    DEBUG_ENTRY,
    HYPERPARAMS_DIR,
    constructor_kwargs,
    debug_hyperparams,
    load_hyperparams,
    read_hyperparams_file,
)

# Optional dependency of each family, by the module of the env's entry point.
ENTRY_POINT_DEPENDENCY = {
    "gymnasium.envs.mujoco": "mujoco",
    "sb3_mb.envs.distractors": "mujoco",
    "sb3_mb.envs.dmc": "dm_control",
    "sb3_mb.envs.atari": "ale_py",
    "sb3_mb.envs.retro": "retro",
}


def _entries() -> list[tuple[str, str]]:
    """(algo, entry name) of every entry of every hyperparams/<algo>.yml of a registered algorithm."""
    algos = sb3_mb.list_algorithms()
    return [
        (path.stem, name)
        for path in sorted(HYPERPARAMS_DIR.glob("*.yml"))
        if path.stem in algos
        for name in read_hyperparams_file(path)
    ]


ENTRIES = _entries()
ENV_ENTRIES = [(algo, name) for algo, name in ENTRIES if name not in (DEBUG_ENTRY, "default")]


def _skip_without_dependency(env_id: str) -> None:
    spec = gym.spec(env_id)
    entry_point = str(spec.entry_point)
    for prefix, module in ENTRY_POINT_DEPENDENCY.items():
        if entry_point.startswith(prefix) and importlib.util.find_spec(module) is None:
            pytest.skip(f"{env_id} needs {module!r} (not importable)")
    if entry_point.startswith("sb3_mb.envs.retro"):  # the Sonic ROMs are not distributable
        import stable_retro

        game = spec.kwargs["game"]
        try:
            stable_retro.data.get_romfile_path(game)
        except FileNotFoundError:
            pytest.skip(f"{env_id} needs the ROM of {game} (python -m stable_retro.import)")


def _build(algo: str, entry: dict, **overrides):
    """The algorithm on the entry's env as rl-zoo3 would build it (single env), with ``overrides``."""
    env_id = entry.pop("__env_id")
    kwargs = constructor_kwargs(entry)
    env_kwargs = entry.get("env_kwargs") or {}
    kwargs.update(overrides)
    env = gym.make(env_id, **env_kwargs)
    return sb3_mb.get_algorithm(algo)(entry["policy"], env, seed=0, **kwargs)


def _small_buffer(algo: str, entry: dict) -> dict:
    # Construction allocates the replay buffer: 1e6 MBPO transitions, 1e5 PlaNet pixel frames (1.2 GB).
    # An on-policy algorithm's rollout buffer is the entry's n_steps x n_envs: left as it is.
    if not sb3_mb.ALGOS[algo].off_policy:
        return {}
    return {"buffer_size": min(int(entry.get("buffer_size", 2000)), 2000)}


def test_every_algorithm_has_a_file_with_a_debug_entry():
    for algo in sb3_mb.list_algorithms():
        assert (algo, DEBUG_ENTRY) in ENTRIES, f"hyperparams/{algo}.yml needs a {DEBUG_ENTRY!r} entry"


@pytest.mark.parametrize("algo, env_id", ENV_ENTRIES, ids=[f"{a}:{e}" for a, e in ENV_ENTRIES])
def test_every_entry_builds_its_algorithm_and_so_does_its_debug_version(algo, env_id):
    """Each entry's keys are constructor arguments (load_hyperparams checks them) and the algorithm builds on
    the entry's env with them (replay buffer shrunk); the debug entry laid over it builds too."""
    _skip_without_dependency(env_id)
    load_hyperparams(algo, env_id)  # raises on a key that is not a constructor argument
    entry = dict(read_hyperparams_file(HYPERPARAMS_DIR / f"{algo}.yml")[env_id])
    model = _build(algo, {**entry, "__env_id": env_id}, **_small_buffer(algo, entry))
    model.env.close()
    debug = debug_hyperparams(algo, env_id)
    model = _build(algo, {**debug, "__env_id": env_id})
    assert int(debug["n_timesteps"]) <= 1000
    model.env.close()


@pytest.mark.parametrize("env_id", ["InvertedPendulum-v5", "sb3_mb/CartpoleSwingup-v0"])
def test_new_mbpo_entries_train_a_few_steps(env_id):
    """The entries added for InvertedPendulum and DMC cartpole run: model training, rollouts, SAC updates
    with the entry's settings (warm-up, model-training period and model epochs shortened)."""
    _skip_without_dependency(env_id)
    entry = dict(read_hyperparams_file(HYPERPARAMS_DIR / "mbpo.yml")[env_id])
    model = _build(
        "mbpo",
        {**entry, "__env_id": env_id},
        buffer_size=1000,
        learning_starts=30,
        model_train_freq=30,
        model_max_epochs=2,
        n_rollouts_per_step=20,
    ).learn(35)
    assert model._model_train_count == 1 and model.replay_buffer.model_buffer.size() > 0
    assert model._n_updates == 5 * model.gradient_steps == 5 * entry.get("gradient_steps", 20)


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_debug_merge_semantics(tmp_path):
    """Keys of `debug` replace the env's, policy_kwargs merge key by key, other env keys stay; an env without
    an entry gets the `default` entry, else `debug` with a policy chosen from its observation space."""
    conf = _write(
        tmp_path / "mbpo.yml",
        "Pendulum-v1:\n  n_timesteps: 5000\n  policy: MlpPolicy\n  gamma: 0.9\n  batch_size: 256\n"
        '  policy_kwargs: "dict(net_arch=[256, 256], log_std_init=-2.0)"\n'
        'debug:\n  n_timesteps: 100\n  batch_size: 16\n  policy_kwargs: "dict(net_arch=[8])"\n',
    )
    merged = debug_hyperparams("mbpo", "Pendulum-v1", conf)
    assert merged["n_timesteps"] == 100 and merged["batch_size"] == 16
    assert merged["gamma"] == 0.9 and merged["policy"] == "MlpPolicy"
    assert constructor_kwargs(merged)["policy_kwargs"] == {
        "net_arch": [8],
        "log_std_init": -2.0,
    }
    # No entry: debug alone, the policy from the observation space.
    assert debug_hyperparams("mbpo", "MountainCarContinuous-v0", conf) == {
        "policy": "MlpPolicy",
        "n_timesteps": 100,
        "batch_size": 16,
        "policy_kwargs": "dict(net_arch=[8])",
    }
    assert debug_hyperparams("planet", "sb3_mb/CartpoleBalancePixels-v0", conf)["policy"] == "CnnPolicy"
    # rl-zoo3's fallback entry.
    with open(conf, "a") as file:
        file.write("default:\n  policy: MlpPolicy\n  tau: 0.01\n")
    assert debug_hyperparams("mbpo", "MountainCarContinuous-v0", conf)["tau"] == 0.01


@pytest.mark.parametrize(
    "algo, env_id, n_steps, extra, override, from_entry",
    [
        ("mbpo", "Pendulum-v1", 300, [], ("gradient_steps", 1), ("model_data_mixing", "sample")),
        # An action repeat of 25: episodes of 40 agent steps, so the run and its evaluations take seconds.
        (
            "planet",
            "sb3_mb/CartpoleBalance-v0",
            100,
            ["--env-kwargs", "action_repeat:25"],
            ("batch_size", 4),
            ("updates_per_episode", 5),
        ),
    ],
)
def test_debug_training_run_writes_the_rl_zoo3_layout(
    algo, env_id, n_steps, extra, override, from_entry, tmp_path, monkeypatch
):
    """`--debug` trains with the merged entry (config.yml: debug's sizes, the env entry's other keys),
    `-params` overrides it, the evaluation defaults give evaluations.npz and best_model.zip; the temporary
    YAML is removed afterwards."""
    monkeypatch.chdir(tmp_path)
    train.main(
        ["--algo", algo, "--env", env_id, "--debug", "-n", str(n_steps), "--seed", "0", "-f", "logs", *extra]
        + ["-params", f"{override[0]}:{override[1]}"]
    )
    run_dir = next((tmp_path / "logs" / algo).glob("*_1"))
    env_name = run_dir.name[: -len("_1")]
    config = dict(yaml.unsafe_load((run_dir / env_name / "config.yml").read_text()))
    entries = read_hyperparams_file(HYPERPARAMS_DIR / f"{algo}.yml")
    assert config[override[0]] == override[1]  # -params wins over debug
    assert config[from_entry[0]] == from_entry[1]
    sizes = {key for key in entries[DEBUG_ENTRY] if key not in ("policy_kwargs", override[0], "n_timesteps")}
    assert {key: config[key] for key in sizes} == {key: entries[DEBUG_ENTRY][key] for key in sizes}
    args = yaml.unsafe_load((run_dir / env_name / "args.yml").read_text())
    assert args["eval_freq"] == n_steps // 2 and args["eval_episodes"] == 1
    assert not Path(args["conf_file"]).exists()
    assert (run_dir / f"{env_name}.zip").exists() and (run_dir / "best_model.zip").exists()
    assert np.load(run_dir / "evaluations.npz")["timesteps"].tolist() == [n_steps // 2, n_steps]


def _bad_files(tmp_path, monkeypatch, text: str) -> Path:
    monkeypatch.setattr(hyperparams, "HYPERPARAMS_DIR", tmp_path)
    return _write(tmp_path / "mbpo.yml", text)


def test_unknown_algorithm_file_and_missing_entry_name_what_exists():
    with pytest.raises(
        FileNotFoundError, match=r"No hyperparameters file .*nope\.yml.*files: .*mbpo, planet"
    ):
        load_hyperparams("nope", "Pendulum-v1")
    with pytest.raises(KeyError, match="no entry 'Nope-v0'; entries: Pendulum-v1, "):
        load_hyperparams("mbpo", "Nope-v0")


def test_yaml_syntax_error_names_file_and_line(tmp_path, monkeypatch):
    path = _bad_files(tmp_path, monkeypatch, "Pendulum-v1:\n  policy: MlpPolicy\n  gamma: [0.9\ndebug: {}\n")
    expected = rf"{path}:4:\d+: YAML syntax error"
    with pytest.raises(ValueError, match=expected):
        load_hyperparams("mbpo", "Pendulum-v1")
    with pytest.raises(SystemExit, match=expected):
        train.main(["--algo", "mbpo", "--env", "Pendulum-v1", "--conf-file", str(path)])
    with pytest.raises(SystemExit, match=expected):
        train.main(["--algo", "mbpo", "--env", "Pendulum-v1", "--debug"])


def test_key_that_is_not_a_constructor_argument_names_key_and_algorithm(tmp_path, monkeypatch):
    _bad_files(
        tmp_path,
        monkeypatch,
        "Pendulum-v1:\n  policy: MlpPolicy\n  rollout_lenght: 3\ndebug:\n  n_timesteps: 10\n  seed: 1\n",
    )
    expected = r"entry 'Pendulum-v1': 'rollout_lenght' is not an argument of MBPO \(mbpo\).*did you mean"
    with pytest.raises(ValueError, match=expected):
        load_hyperparams("mbpo", "Pendulum-v1")
    with pytest.raises(SystemExit, match=expected):
        train.main(["--algo", "mbpo", "--env", "Pendulum-v1"])
    # --debug checks the debug entry first: `seed` belongs to the command line.
    with pytest.raises(SystemExit, match=r"entry 'debug': 'seed' is set by the zoo's command line"):
        train.main(["--algo", "mbpo", "--env", "Pendulum-v1", "--debug"])


def test_debug_without_a_debug_entry_says_so(tmp_path, monkeypatch):
    _bad_files(tmp_path, monkeypatch, "Pendulum-v1:\n  policy: MlpPolicy\n")
    with pytest.raises(SystemExit, match="has no 'debug' entry"):
        train.main(["--algo", "mbpo", "--env", "Pendulum-v1", "--debug"])
