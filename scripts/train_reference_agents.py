"""Train the reference agents of ``hyperparams/reference.yml``: one ``python -m zoo.train`` per algorithm x
env x seed, one process per core (``OMP_NUM_THREADS=1``), resumable.

Usage::

    python scripts/train_reference_agents.py                          # every run, logs/reference/
    python scripts/train_reference_agents.py --dry-run                # print the commands, run nothing
    python scripts/train_reference_agents.py --algos mbpo planet --jobs 2
    python scripts/train_reference_agents.py --debug --log-dir logs/reference-debug   # tiny budgets
    # then: benchmark, curves, publish
    python scripts/benchmark.py --log-dir logs/reference --benchmark-dir logs/reference/benchmark
    python scripts/all_plots.py -a mbpo steve gammamve -e Pendulum-v1 -f logs/reference --plot-dir plots
    python scripts/publish_all.py --log-dir logs/reference -orga ORG --dry-run --dry-run-dir hub

``hyperparams/reference.yml`` holds the budget (``n_timesteps``, ``eval_freq``, ``eval_episodes``, ``seeds``,
optional ``params``) of each algorithm x env; the hyperparameters are the env's entry of
``hyperparams/<algo>.yml``. ``--debug`` trains the same algorithm x env pairs with ``zoo.train --debug``
(each algorithm's ``debug`` sizes) and the seeds of the file's ``debug`` entry.

Each run trains into its own staging folder ``<log-dir>/.staging/<algo>-<EnvName>-seed<S>/`` (its log in
``train.log`` there), and when it succeeds its run folder is moved to ``<log-dir>/<algo>/<EnvName>_<N>/``
(the next free ``N``), the layout the zoo's commands and ``scripts/`` read. Moving in this process, one run at
a time, keeps ``N`` unique although runs of one pair train at the same time (rl-zoo3 numbers a run when it
starts, so two processes sharing a log folder could take the same ``N``).

Resuming: a run is done when ``<log-dir>/<algo>/<EnvName>_<N>/`` holds its final model ``<EnvName>.zip`` and
its ``<EnvName>/args.yml`` and ``config.yml`` give the same seed and env steps; done runs are skipped.
An interrupted run leaves only its staging folder, which is cleared and trained again. Exit status 1 if a run
fails (named on stderr, with the end of its log); the others still run.
"""

from __future__ import annotations

import argparse
import glob
import os
import shlex
import shutil
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field

from sb3_mb.common.scores import read_run_budget

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE_FILE = os.path.join(REPO_ROOT, "hyperparams", "reference.yml")
#: Keys of an entry of reference.yml.
ENTRY_KEYS = {"n_timesteps", "eval_freq", "eval_episodes", "seeds", "params", "wall"}
#: Environment of every training process: one thread each, headless rendering.
THREAD_ENV = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MUJOCO_GL": "egl", "MPLBACKEND": "Agg"}


@dataclass
class Run:
    """One training run of the reference set."""

    algo: str
    env_id: str
    seed: int
    n_timesteps: int | None  # None: --debug (the algorithm's debug entry decides)
    eval_freq: int | None = None
    eval_episodes: int | None = None
    params: dict = field(default_factory=dict)

    @property
    def env_name(self) -> str:
        return self.env_id.replace("/", "-")  # rl-zoo3's EnvironmentName without a module prefix

    @property
    def name(self) -> str:
        return f"{self.algo}-{self.env_name}-seed{self.seed}"


def read_reference(path: str = REFERENCE_FILE) -> dict:
    """The entries of ``reference.yml``: ``{"debug": {...}, algo: {env id: entry}}``.

    :raises ValueError: if an entry has an unknown key or lacks ``n_timesteps`` or ``seeds`` (named).
    """
    import yaml

    with open(path) as file:
        entries = yaml.safe_load(file)
    for algo, envs in entries.items():
        if algo == "debug":
            continue
        for env_id, entry in envs.items():
            unknown = set(entry) - ENTRY_KEYS
            missing = {"n_timesteps", "seeds"} - set(entry)
            if unknown or missing:
                raise ValueError(
                    f"{path}, {algo} / {env_id}: "
                    + (f"unknown keys {sorted(unknown)} (known: {sorted(ENTRY_KEYS)})" if unknown else "")
                    + (f"missing {sorted(missing)}" if missing else "")
                )
    return entries


def plan_runs(
    entries: dict,
    debug: bool = False,
    algos: list[str] | None = None,
    envs: list[str] | None = None,
    seeds: list[int] | None = None,
) -> list[Run]:
    """Every run of the reference set (of ``algos``, ``envs``, ``seeds`` if given), in the file's order.

    With ``debug`` the budget is zoo.train's ``--debug`` and the seeds are those of the ``debug`` entry.
    """
    runs = []
    debug_seeds = entries.get("debug", {}).get("seeds", [0])
    for algo, env_entries in entries.items():
        if algo == "debug" or (algos and algo not in algos):
            continue
        for env_id, entry in env_entries.items():
            if envs and env_id not in envs:
                continue
            for seed in debug_seeds if debug else entry["seeds"]:
                if seeds is not None and seed not in seeds:
                    continue
                if debug:
                    runs.append(Run(algo, env_id, seed, None))
                else:
                    runs.append(
                        Run(
                            algo,
                            env_id,
                            seed,
                            int(entry["n_timesteps"]),
                            entry.get("eval_freq"),
                            entry.get("eval_episodes"),
                            dict(entry.get("params") or {}),
                        )
                    )
    return runs


def command(run: Run, log_folder: str) -> list[str]:
    """``python -m zoo.train`` of ``run`` into ``log_folder``."""
    argv = [sys.executable, "-m", "zoo.train", "--algo", run.algo, "--env", run.env_id, "-f", log_folder]
    argv += ["--seed", str(run.seed), "--num-threads", "1"]
    if run.n_timesteps is None:
        return [*argv, "--debug"]
    argv += ["-n", str(run.n_timesteps)]
    if run.eval_freq is not None:
        argv += ["--eval-freq", str(run.eval_freq)]
    if run.eval_episodes is not None:
        argv += ["--eval-episodes", str(run.eval_episodes)]
    if run.params:
        argv += ["-params", *(f"{key}:{value!r}" for key, value in run.params.items())]
    return argv


def find_done(run: Run, log_dir: str) -> str | None:
    """The run folder of ``run`` under ``log_dir`` if it finished (see the module docstring), else ``None``.

    A ``--debug`` run matches any ``n_timesteps``.
    """
    for folder in sorted(glob.glob(os.path.join(log_dir, run.algo, f"{run.env_name}_[0-9]*"))):
        if not folder.rpartition("_")[2].isdigit():
            continue
        if not os.path.isfile(os.path.join(folder, f"{run.env_name}.zip")):
            continue
        seed, n_timesteps = read_run_budget(folder, run.env_name)  # env_name is its own folder name
        if seed == run.seed and (run.n_timesteps is None or n_timesteps == run.n_timesteps):
            return folder
    return None


def train(run: Run, log_dir: str, lock: threading.Lock) -> tuple[str | None, float, str]:
    """Train ``run`` in its staging folder, then move the run folder into ``log_dir`` (under ``lock``).

    :return: ``(run folder or None if it failed, wall time in s, end of the log)``.
    """
    from rl_zoo3.utils import get_latest_run_id

    staging = os.path.join(log_dir, ".staging", run.name)
    shutil.rmtree(staging, ignore_errors=True)  # an interrupted earlier attempt
    os.makedirs(staging)
    start = time.perf_counter()
    with open(os.path.join(staging, "train.log"), "w") as log:
        done = subprocess.run(
            command(run, staging),
            cwd=REPO_ROOT,
            env={**os.environ, **THREAD_ENV},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    wall = time.perf_counter() - start
    with open(os.path.join(staging, "train.log")) as log:
        tail = "\n".join(log.read().splitlines()[-15:])
    trained = os.path.join(staging, run.algo, f"{run.env_name}_1")
    if done.returncode != 0 or not os.path.isfile(os.path.join(trained, f"{run.env_name}.zip")):
        return None, wall, tail
    with lock:
        exp_id = get_latest_run_id(os.path.join(log_dir, run.algo), run.env_name) + 1
        target = os.path.join(log_dir, run.algo, f"{run.env_name}_{exp_id}")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.move(trained, target)
        shutil.copyfile(os.path.join(staging, "train.log"), os.path.join(target, "train.log"))
    shutil.rmtree(staging, ignore_errors=True)
    return target, wall, tail


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train the reference agents of hyperparams/reference.yml, resumable, a process per core.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--config", default=REFERENCE_FILE, help="The budget file")
    parser.add_argument(
        "--log-dir", help="Log folder (default: logs/reference, logs/reference-debug with --debug)"
    )
    parser.add_argument("--algos", nargs="+", help="Only these algorithms")
    parser.add_argument("--env", nargs="+", help="Only these env ids")
    parser.add_argument("--seeds", nargs="+", type=int, help="Only these seeds")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="Training processes at once")
    parser.add_argument("--debug", action="store_true", help="Tiny budgets (zoo.train --debug)")
    parser.add_argument("--dry-run", action="store_true", help="Print the commands, run nothing")
    args = parser.parse_args(argv)
    if args.log_dir is None:
        args.log_dir = os.path.join("logs", "reference-debug" if args.debug else "reference")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        runs = plan_runs(read_reference(args.config), args.debug, args.algos, args.env, args.seeds)
    except (OSError, ValueError) as error:
        print(f"train_reference_agents: {error}", file=sys.stderr)
        return 1
    if not runs:
        print(
            f"train_reference_agents: no run of {args.algos or 'any algo'} on {args.env or 'any env'}",
            file=sys.stderr,
        )
        return 1
    log_dir = os.path.abspath(args.log_dir)  # zoo.train runs in the repository root
    todo = []
    for run in runs:
        folder = find_done(run, log_dir)
        if folder is not None:
            print(f"{run.name}: done ({folder}), skipped")
        else:
            todo.append(run)
    prefix = " ".join(f"{key}={value}" for key, value in THREAD_ENV.items())
    for run in todo:
        staging = os.path.join(log_dir, ".staging", run.name)
        print(f"{run.name}: {prefix} {shlex.join(command(run, staging))}")
    if args.dry_run or not todo:
        print(
            f"{len(todo)} run(s) to train, {len(runs) - len(todo)} done"
            + (" (dry run)" if args.dry_run else "")
        )
        return 0
    lock, failed = threading.Lock(), []
    print(f"Training {len(todo)} run(s), {args.jobs} at a time, into {log_dir}", flush=True)
    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        futures = {pool.submit(train, run, log_dir, lock): run for run in todo}
        for index, future in enumerate(as_completed(futures), start=1):
            run = futures[future]
            folder, wall, tail = future.result()
            if folder is None:
                failed.append(run.name)
                staging = os.path.join(log_dir, ".staging", run.name, "train.log")
                print(
                    f"train_reference_agents: {run.name} failed after {wall:.0f} s ({staging}):\n{tail}",
                    file=sys.stderr,
                )
            else:
                print(f"{index}/{len(todo)} {run.name}: {folder} ({wall:.0f} s)", flush=True)
    if failed:
        print(f"train_reference_agents: {len(failed)} run(s) failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
