"""`zoo.train --optimize`: rl-zoo3's Optuna tuning with our samplers; one study shared via `--storage`."""

import gymnasium as gym
import numpy as np
import optuna
import pytest
import yaml
from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER, HYPERPARAMS_SAMPLER

import sb3_mb
from zoo import samplers, train
from zoo.hyperparams import constructor_kwargs, debug_hyperparams

# Cheap points of each sampler's space: the optimize runs enqueue them so that a trial takes seconds
# (the sampler still runs: Optuna answers its suggestions with the enqueued values).
CHEAP = {
    "mbpo": dict(
        one_minus_gamma=0.01,
        learning_rate=1e-3,
        batch_size_pow=5,
        tau=0.005,
        net_arch="small",
        gradient_steps=1,
        rollout_length=2,
        rollout_ramp_epochs=0,
        model_data_ratio=0.5,
        model_data_ratio_ramp_epochs=0,
        model_hidden_size=64,
        model_n_layers=2,
        model_learning_rate=1e-3,
    ),
    "planet": dict(
        planning_horizon=6,
        n_candidates=100,
        elite_fraction=0.1,
        n_iterations=3,
        free_nats=3.0,
        kl_scale=1.0,
        reward_loss_scale=10.0,
        learning_rate=1e-3,
        rssm_size="small",
        exploration=0.3,
        warm_start=True,
    ),
}
ENV = {
    "gammamve": "Pendulum-v1",
    "mbpo": "Pendulum-v1",
    "planet": "sb3_mb/CartpoleBalance-v0",
    "steve": "Pendulum-v1",
    "worldmodels": "Pendulum-v1",
    "worldmodelsppo": "sb3_mb/MovingBar-v0",
}
# Past the debug entry's warm-up: MBPO 200 steps; PlaNet one episode, 40 steps with an action repeat of 25.
N_STEPS = {"mbpo": 300, "planet": 60}
ENV_KWARGS = {"mbpo": [], "planet": ["--env-kwargs", "action_repeat:25"]}


def _finished_trials(storage: str, name: str) -> list[optuna.trial.FrozenTrial]:
    if storage.endswith(".log"):
        storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage))
    study = optuna.load_study(study_name=name, storage=storage)
    return study.get_trials(states=(optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED))


def _optimize(algo: str, storage: str, n_trials: int) -> None:
    train.main(
        ["--algo", algo, "--env", ENV[algo], "--debug", "--optimize", "--n-trials", str(n_trials)]
        + [
            "-n",
            str(N_STEPS[algo]),
            "--n-evaluations",
            "1",
            "--eval-episodes",
            "1",
            "--n-startup-trials",
            "1",
        ]
        + [
            "--storage",
            storage,
            "--study-name",
            f"{algo}-study",
            "--no-optim-plots",
            "--seed",
            "0",
            "-f",
            "logs",
        ]
        + ENV_KWARGS[algo]
    )


@pytest.mark.parametrize(
    "algo, storage",
    [("mbpo", "journal/study.log"), ("planet", "sqlite:///study.db")],
    ids=["mbpo-journal-file", "planet-sqlite"],
)
def test_optimize_runs_and_two_invocations_share_one_study(algo, storage, tmp_path, monkeypatch):
    """Two invocations with one --study-name (as two machines would): their trials (MBPO 2 + 1, PlaNet 1 + 1)
    land in one study, scored by an evaluation (or pruned by the median pruner), with the sampled parameters
    stored; rl-zoo3 writes its report after each."""
    monkeypatch.chdir(tmp_path)
    name = f"{algo}-study"
    n_trials = (2, 1) if algo == "mbpo" else (1, 1)
    # Create the study and queue cheap trials (rl-zoo3 loads an existing study: load_if_exists=True).
    if storage.endswith(".log"):
        (tmp_path / "journal").mkdir()
        backend = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(storage))
    else:
        backend = storage
    study = optuna.create_study(study_name=name, storage=backend, direction="maximize")
    for _ in range(sum(n_trials)):
        study.enqueue_trial(CHEAP[algo])

    _optimize(algo, storage, n_trials=n_trials[0])
    assert len(_finished_trials(storage, name)) == n_trials[0]
    _optimize(algo, storage, n_trials=n_trials[1])

    trials = _finished_trials(storage, name)
    assert len(trials) == sum(n_trials)
    assert np.isfinite(trials[0].value)  # the first trial is never pruned (nothing to compare with)
    assert all(t.params == CHEAP[algo] for t in trials)
    assert len(list((tmp_path / "logs" / algo).glob("report_*.csv"))) == 2

    if algo == "mbpo":
        # Train with a trial's parameters from the shared study: rl-zoo3's --trial-id through our converter.
        # (rl-zoo3 2.9.2 ignores --trial-id 0: it tests the id for truth.)
        train.main(
            ["--algo", algo, "--env", ENV[algo], "--debug", "-n", "220", "--storage", storage]
            + ["--study-name", name, "--trial-id", "1", "--seed", "0", "-f", "logs"]
        )
        config_path = next((tmp_path / "logs" / algo).glob("*/Pendulum-v1/config.yml"))
        config = dict(yaml.unsafe_load(config_path.read_text()))
        assert config["batch_size"] == 32 and config["rollout_schedule"] == (0, 0, 1, 2)
        assert config["gradient_steps"] == 1  # debug's: 2
        assert config["policy_kwargs"]["model_net_arch"] == [64, 64]  # debug's: [32, 32]


def test_every_registered_algorithm_has_a_sampler_registered_with_rl_zoo3():
    """A new algorithm without a sampler fails here: add one line to zoo/samplers.py SAMPLERS."""
    missing = [name for name in sb3_mb.list_algorithms() if name not in samplers.SAMPLERS]
    assert not missing, f"no Optuna sampler in zoo/samplers.py SAMPLERS for: {missing}"
    samplers.register_samplers(sb3_mb.list_algorithms())
    for name in sb3_mb.list_algorithms():
        assert HYPERPARAMS_SAMPLER[name] is samplers.SAMPLERS[name]
        assert name in HYPERPARAMS_CONVERTER


def test_optimize_without_a_sampler_fails_before_the_first_trial(monkeypatch):
    monkeypatch.delitem(samplers.SAMPLERS, "planet")
    with pytest.raises(SystemExit, match="no Optuna sampler for 'planet'"):
        train.main(["--algo", "planet", "--env", ENV["planet"], "--optimize", "--n-trials", "1"])


def _sampled_kwargs(algo: str, trial: optuna.Trial, n_actions: int) -> tuple[dict, dict]:
    """(constructor kwargs as rl-zoo3's objective builds them: the debug entry updated with the sample,
    the sample)."""
    kwargs = constructor_kwargs(debug_hyperparams(algo, ENV[algo]))
    sampled = samplers.SAMPLERS[algo](
        trial, n_actions, 1, {"using_her_replay_buffer": False, "her_kwargs": {}}
    )
    kwargs.update(sampled)
    return kwargs, sampled


# Per algorithm: (random trials, overrides that bring the first updates forward, learn budget). MBPO: one
# model training, rollouts and 3 x G SAC updates; PlaNet: one random (seed) episode of 125 steps, then C
# updates; STEVE: model pretraining, then 3 x gradient_steps value updates. An algorithm runs here once
# zoo/samplers.py SAMPLERS has its sampler; a new one adds its line here (and its env to ENV).
SHORT_RUN = {
    "mbpo": (6, dict(learning_starts=50, model_train_freq=50, epoch_length=50, buffer_size=1000), 53),
    "planet": (4, {}, 125),
    "steve": (4, dict(learning_starts=50, model_pretrain_steps=10, buffer_size=1000), 53),
    "gammamve": (3, dict(learning_starts=50, model_learning_starts=10, buffer_size=1000), 53),
    "worldmodels": (3, dict(max_episode_steps=20), 210),  # a random Pendulum episode (200 steps), a round
    "worldmodelsppo": (4, {}, 32),  # one rollout of the debug entry's n_steps, one update
}


@pytest.mark.parametrize("algo", sorted(set(samplers.SAMPLERS) & set(sb3_mb.list_algorithms())))
def test_sampled_params_build_train_and_act(algo):
    """Random points of the space (seeded): the algorithm builds on them, takes its first updates and plans
    or acts at the sampled sizes; the stored parameters convert back to the same constructor arguments
    (rl-zoo3's --trial-id)."""
    n_trials, overrides, n_steps = SHORT_RUN[algo]
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0), direction="maximize")
    env = gym.make(ENV[algo])
    algorithm_class = sb3_mb.get_algorithm(algo)
    convert = samplers.convert_params(algo)
    policy = debug_hyperparams(algo, ENV[algo])["policy"]
    space = env.action_space  # rl-zoo3's n_actions: the Box's dimension or the Discrete's count
    n_actions = int(space.n) if isinstance(space, gym.spaces.Discrete) else space.shape[0]
    for _ in range(n_trials):
        trial = study.ask()
        kwargs, sampled = _sampled_kwargs(algo, trial, n_actions=n_actions)
        assert convert(trial.params) == sampled
        model = algorithm_class(policy, env, seed=0, **{**kwargs, **overrides}).learn(n_steps)
        assert model._n_updates > 0
        for key, value in sampled.items():
            held = getattr(model, key, value)
            if callable(held) and not callable(
                value
            ):  # SB3 turns a constant (PPO's clip_range) into a schedule
                held = held(1.0)
            # A dict (policy_kwargs) holds the sampled items and those the algorithm adds (SB3's use_sde).
            assert held.items() >= value.items() if isinstance(value, dict) else held == value, key
        obs, _ = env.reset(seed=0)
        action, _ = model.predict(obs[None], state=None, episode_start=np.ones(1, dtype=bool))
        assert env.action_space.contains(action[0])
        study.tell(trial, 0.0)
    env.close()
