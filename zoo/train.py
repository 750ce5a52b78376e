"""``python -m zoo.train --algo mbpo --env Pendulum-v1``: rl-zoo3's ``train`` with sb3-mb's algorithms.

Builds on rl_zoo3 rather than rewriting it: its experiment manager, YAML hyperparameters, callbacks and log
layout (``logs/<algo>/<EnvId>_<N>/``) are used unchanged. Things added before handing over:

- sb3-mb's registered algorithms join ``rl_zoo3.utils.ALGOS`` (rl_zoo3 keeps a hard-coded dict there, read
  by both its argument parser and its experiment manager);
- their Optuna samplers (:mod:`zoo.samplers`) join ``rl_zoo3.hyperparams_opt.HYPERPARAMS_SAMPLER`` and
  ``HYPERPARAMS_CONVERTER`` (hard-coded dicts too), so ``--optimize`` works for them;
- ``--conf-file`` defaults to ``hyperparams/<algo>.yml`` of this repository for sb3-mb algorithms (rl_zoo3
  looks inside its own package, which holds only SB3's algorithms), and the file is checked first: a YAML
  syntax error names the file and line, a key that is not a constructor argument names the key;
- ``--debug`` (ours, removed before rl_zoo3 parses the arguments): see below;
- ``-params`` values are checked first: one that does not evaluate, or a key that is not a constructor
  argument, is named (rl_zoo3 would fail with a ``NameError`` inside argparse, or a ``TypeError`` once the env
  is built);
- every checkpoint is atomic (written beside its target, then renamed): the models and replay buffers go
  through sb3-mb's ``save`` / ``save_replay_buffer``, and ``VecNormalize.save`` (``vecnormalize.pkl``,
  ``CheckpointCallback``'s statistics) is made atomic in the zoo's process by :func:`make_checkpoints_atomic`.

Tuning (rl-zoo3's flags)::

    python -m zoo.train --algo mbpo --env Pendulum-v1 --optimize --n-trials 20 --n-timesteps 5000 \\
        --pruner median --n-evaluations 2 --storage logs/mbpo.log --study-name mbpo-pendulum

``--storage`` takes an SQL URL (``sqlite:///study.db``, ``postgresql://...``) or an Optuna journal file (a
path ending in ``.log``, rl_zoo3 2.9.2 opens it with ``JournalFileBackend``); machines that run the same
command with the same ``--study-name`` add their trials to one study. Trials are evaluated every
``n_timesteps // n_evaluations`` steps on ``--eval-episodes`` episodes; the report goes to
``<log folder>/<algo>/report_<EnvId>_...csv`` (rl_zoo3 writes it with pandas, which it does not require:
checked before the first trial). ``--storage S --study-name N --trial-id K`` (without ``--optimize``) trains
with trial ``K``'s parameters; rl_zoo3 2.9.2 ignores ``--trial-id 0`` (it tests the id for truth).

Debug-sized runs: every ``hyperparams/<algo>.yml`` has an entry named ``debug`` (small ``n_timesteps`` and
sizes, valid for any environment the algorithm supports). With ``--debug`` the env's entry is updated with
``debug`` (``policy_kwargs`` merged key by key; an env without an entry gets the file's ``default`` entry or
just a policy chosen from its observation space), written to a temporary YAML and passed as ``--conf-file``
(an explicit ``--conf-file`` is the file the entries come from); ``-params`` and ``-n`` still override it.
Unless given, ``--eval-freq`` is half the run and ``--eval-episodes`` 1, so a debug run writes the whole
layout (``evaluations.npz``, ``best_model.zip``).

Wall-clock of ``python -m zoo.train --algo A --env E --debug``, start-up included, on one CPU thread
(``OMP_NUM_THREADS=1``) of a 2-core machine shared with other jobs (2026-11-23; a range is two runs under
different load): mbpo on Pendulum-v1 12-22 s, planet on sb3_mb/CartpoleBalance-v0 13-19 s; mbpo on Hopper-v5
32 s, planet on sb3_mb/BreakoutPlaNet-v0 33 s and on sb3_mb/CartpoleSwingupPixels-v0 61 s (``MUJOCO_GL=egl``).
"""

from __future__ import annotations

import shutil
import sys
import tempfile

from zoo.hyperparams import (
    check_entry,
    debug_hyperparams,
    hyperparams_path,
    read_hyperparams_file,
    write_conf,
)

DEBUG_FLAG = "--debug"
OPTIMIZE_FLAGS = ("-optimize", "--optimize-hyperparameters")


def register_algorithms() -> list[str]:
    """Add every sb3-mb algorithm to rl_zoo3's algorithm table; returns their names."""
    from rl_zoo3.utils import ALGOS

    import sb3_mb

    names = sb3_mb.list_algorithms()
    for name in names:
        ALGOS[name] = sb3_mb.get_algorithm(name)
    return names


def make_checkpoints_atomic() -> None:
    """Make ``VecNormalize.save`` atomic in this process (idempotent).

    rl_zoo3 (``vecnormalize.pkl``) and SB3's ``CheckpointCallback`` save the normalisation statistics with
    ``VecNormalize.save``, which opens the target with ``"wb"``: a run killed there leaves a truncated pickle
    next to a good model. The method is wrapped to write through :func:`sb3_mb.common.save_util.atomic_write`;
    the pickle itself is unchanged (plain ``VecNormalize``, loadable without sb3-mb).
    """
    from stable_baselines3.common.vec_env import VecNormalize

    from sb3_mb.common.save_util import atomic_write

    plain_save = VecNormalize.save
    if getattr(plain_save, "_sb3_mb_atomic", False):
        return

    def save(self: VecNormalize, save_path: str) -> None:
        with atomic_write(save_path) as temporary:
            plain_save(self, str(temporary))

    save._sb3_mb_atomic = True  # type: ignore[attr-defined]
    save.__doc__ = plain_save.__doc__
    VecNormalize.save = save  # type: ignore[method-assign]


def check_params(algo: str, argv: list[str]) -> None:
    """Check the ``-params`` / ``--hyperparams`` values of ``argv`` as rl_zoo3 will read them.

    Each ``key:value`` is evaluated by rl_zoo3's own ``StoreDict`` (its namespace, so ``nn.ReLU`` works), then
    the key is checked against the algorithm's constructor (:func:`zoo.hyperparams.check_entry`).

    :raises ValueError: naming the parameter: a value that does not evaluate (``gamma:abc``: a string
        needs quotes), an item without ``key:value``, or a key that is not an argument of the algorithm.
    """
    import argparse

    from rl_zoo3.utils import StoreDict

    values = []
    for i, arg in enumerate(argv):
        if arg in ("-params", "--hyperparams"):
            values = []
            for item in argv[i + 1 :]:
                if item.startswith("-") and not _is_number(item):
                    break
                values.append(item)
    for item in values:
        key, sep, value = item.partition(":")
        if not sep or not key:
            raise ValueError(f"-params {item!r}: expected key:value (e.g. gamma:0.98)")
        namespace = argparse.Namespace()
        try:
            StoreDict(["-params"], "hyperparams", nargs="+")(argparse.ArgumentParser(), namespace, [item])
        except Exception as error:  # noqa: BLE001 - rl_zoo3 evaluates any Python expression
            raise ValueError(
                f"-params {key}: the value {value!r} does not evaluate ({type(error).__name__}: {error}); "
                f"a string needs quotes, e.g. {key}:\"'{value}'\""
            ) from error
        check_entry(algo, namespace.hyperparams, f"-params {key}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _value(argv: list[str], *flags: str) -> str | None:
    """The value of the last of ``flags`` in ``argv`` (``--flag value`` or ``--flag=value``)."""
    value = None
    for i, arg in enumerate(argv):
        for flag in flags:
            if arg == flag and i + 1 < len(argv):
                value = argv[i + 1]
            elif arg.startswith(flag + "="):
                value = arg.split("=", 1)[1]
    return value


def _algo_from_argv(argv: list[str]) -> str | None:
    return _value(argv, "--algo")


def _optimizing(argv: list[str]) -> bool:
    # argparse accepts unique prefixes: "--optimize" is "--optimize-hyperparameters".
    return any(a == OPTIMIZE_FLAGS[0] or (len(a) >= 10 and OPTIMIZE_FLAGS[1].startswith(a)) for a in argv)


def _check_can_optimize(algo: str, samplers: dict) -> None:
    """Fail before the first trial rather than after the last: a sampler, and pandas for the report."""
    if algo not in samplers:
        sys.exit(f"zoo.train: no Optuna sampler for {algo!r}; add one to zoo/samplers.py SAMPLERS")
    try:
        import pandas  # noqa: F401
    except ImportError:
        # rl_zoo3 writes the study's report with pandas (study.trials_dataframe) but lists it only in its
        # "plots" extra.
        sys.exit("zoo.train: --optimize writes its report with pandas: pip install 'pandas>=2.2,<3'")


def _check_conf_file(algo: str, env_id: str, conf_file: str) -> None:
    """Read a YAML conf file and check the env's entry, for errors that name the file, line and key."""
    if not conf_file.endswith((".yml", ".yaml")):
        return  # a Python file or package: rl_zoo3 reads it
    entries = read_hyperparams_file(conf_file)
    if env_id in entries:
        check_entry(algo, entries[env_id], f"{conf_file}, entry {env_id!r}")


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = DEBUG_FLAG in argv
    argv = [a for a in argv if a != DEBUG_FLAG]
    names = register_algorithms()
    from zoo.samplers import SAMPLERS, register_samplers

    register_samplers(names)
    make_checkpoints_atomic()
    algo = _algo_from_argv(argv)
    env_id = _value(argv, "--env") or "CartPole-v1"  # rl_zoo3's default
    conf_file = _value(argv, "-conf", "--conf-file")
    temporary_dir = None
    if debug and algo not in names:
        sys.exit(f"zoo.train: {DEBUG_FLAG} needs an sb3-mb algorithm ({', '.join(names)}), got --algo {algo}")
    if algo in names:
        if _optimizing(argv):
            _check_can_optimize(algo, SAMPLERS)
        try:
            if debug:
                temporary_dir = tempfile.mkdtemp(prefix="sb3_mb_zoo_debug_")
                argv = _debug_argv(argv, algo, env_id, conf_file, temporary_dir)
            else:
                if conf_file is None:
                    conf_file = str(hyperparams_path(algo))
                    argv += ["--conf-file", conf_file]
                _check_conf_file(algo, env_id, conf_file)
            check_params(algo, argv)
        except (FileNotFoundError, KeyError, ValueError) as error:
            if temporary_dir is not None:
                shutil.rmtree(temporary_dir, ignore_errors=True)
            message = str(error) if isinstance(error, OSError) else (error.args[0] if error.args else error)
            sys.exit(f"zoo.train: {type(error).__name__}: {message}")
    if not any(a == "--gym-packages" for a in argv):
        argv += ["--gym-packages", "sb3_mb"]
    from rl_zoo3.train import train

    sys.argv = [sys.argv[0], *argv]
    try:
        train()
    finally:
        if temporary_dir is not None:
            shutil.rmtree(temporary_dir, ignore_errors=True)


def _debug_argv(argv: list[str], algo: str, env_id: str, conf_file: str | None, directory: str) -> list[str]:
    """``argv`` for rl_zoo3 with ``--debug``: the merged entry written to ``directory`` as ``--conf-file``,
    and the evaluation defaults (twice a run, one episode) unless given."""
    entry = debug_hyperparams(algo, env_id, conf_file)
    path = write_conf({env_id: entry}, f"{directory}/{algo}_debug.yml")
    print(f"{DEBUG_FLAG}: hyperparameters of {env_id} with the 'debug' entry, written to {path}")
    argv = [a for i, a in enumerate(argv) if not _is_conf_arg(argv, i)] + ["--conf-file", str(path)]
    n_timesteps = int(_value(argv, "-n", "--n-timesteps") or -1)
    if n_timesteps <= 0:
        n_timesteps = int(entry["n_timesteps"])
    if _value(argv, "--eval-freq") is None:
        argv += ["--eval-freq", str(max(n_timesteps // 2, 1))]
    if _value(argv, "--eval-episodes") is None:
        argv += ["--eval-episodes", "1"]
    return argv


def _is_conf_arg(argv: list[str], i: int) -> bool:
    """``argv[i]`` is ``-conf`` / ``--conf-file`` or its value."""
    flags = ("-conf", "--conf-file")
    return argv[i] in flags or argv[i].startswith("--conf-file=") or (i > 0 and argv[i - 1] in flags)


if __name__ == "__main__":
    main()
