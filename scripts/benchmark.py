"""Evaluate every trained agent under a log folder with the zoo's ``enjoy`` and write ``benchmark.md``.

Usage::

    python scripts/benchmark.py --log-dir logs --benchmark-dir logs/benchmark -n 10000
    python scripts/benchmark.py --log-dir logs --algos mbpo --env Pendulum-v1 -n 2000 --load-best --force

An agent is a run folder ``<log-dir>/<algo>/<EnvId>_<N>/`` with one ``<EnvId>/args.yml`` (rl-zoo3's rule in
``rl_zoo3.utils.get_trained_models``) and its model. Each agent is run for ``-n`` env steps by
``python -m zoo.enjoy --no-render --reward-log <benchmark-dir>/<algo>-<EnvId>_<N>`` (deterministic actions
unless the env is Atari or MiniGrid, as rl-zoo3's enjoy decides); the episodes completed in that time,
read back from the Monitor file of the reward log, give the mean and standard deviation of the return.
``<benchmark-dir>/benchmark.md`` gets one row per agent: algo, env, run, mean and std of the return, its
episodes and env steps, the training budget (the env steps of the run's ``args.yml`` / ``config.yml``), the
training wall time (the end of the last training episode in the run's Monitor file) and the evaluation wall
time. An agent whose result is already in the benchmark folder is not evaluated again unless ``--force`` (so
an interrupted benchmark resumes). ``--progress-bar`` draws a bar of the agents done (tqdm / rich, as SB3's
``progress_bar=True``).

Follows ``rl_zoo3/benchmark.py`` (enjoy in a subprocess with ``--reward-log``, SB3's ``load_results`` /
``ts2xy`` for the returns, pytablewriter's markdown table from a data frame), which cannot be imported: it
parses its arguments and runs at import time. Where this script differs, and why:

- every run is an agent (rl-zoo3 keys agents by ``algo-env`` and keeps one run per pair): seeds are
  benchmarked side by side;
- agents come only from the log folder (no download from the ``sb3`` organization on the Hub, which holds
  no sb3-mb agents);
- ``n_timesteps`` is written as a number (rl-zoo3's ``k``/``M`` rounding writes ``0k`` for a debug run), and
  wall times are added;
- an evaluation that fails or completes no episode is reported on stderr with the run's folder and the exit
  status is 1, after the table of the others is written.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass

# The readers of the zoo's log layout, shared with plot_train.py, all_plots.py and compile_scores.py.
from sb3_mb.common.scores import env_folder_name, read_run_budget, read_zoo_yaml
from sb3_mb.common.utils import make_progress_bar

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLUMNS = [
    "algo",
    "env_id",
    "exp_id",
    "mean_reward",
    "std_reward",
    "eval_episodes",
    "eval_timesteps",
    "n_timesteps",
    "train_wall_time_s",
    "eval_wall_time_s",
]
HEADER = """
## Performance of trained agents

Computed by `python scripts/benchmark.py`: each agent (one run of `python -m zoo.train`, trained for
`n_timesteps`) is run by `python -m zoo.enjoy` for `eval_timesteps` env steps (deterministic actions except
on Atari and MiniGrid); `mean_reward` and `std_reward` are the mean and standard deviation of the return of
the `eval_episodes` episodes completed. `train_wall_time_s` is the training run's wall time (end of its last
training episode), `eval_wall_time_s` this evaluation's, start-up included.

"""


@dataclass
class Agent:
    """One trained run: ``<log_dir>/<algo>/<EnvId>_<exp_id>/``."""

    algo: str
    env_id: str
    exp_id: int
    folder: str

    @property
    def name(self) -> str:
        return f"{self.algo}-{os.path.basename(self.folder)}"


def find_agents(log_dir: str, algos: list[str] | None = None, envs: list[str] | None = None) -> list[Agent]:
    """Every run folder under ``log_dir`` with exactly one ``*/args.yml``, sorted by algo, env and run.

    :raises FileNotFoundError: ``log_dir`` is not a folder, or holds no trained agent (of algos, envs).
    """

    if not os.path.isdir(log_dir):
        raise FileNotFoundError(f"no log folder {log_dir!r}")
    agents = []
    for algo in sorted(os.listdir(log_dir)):
        if not os.path.isdir(os.path.join(log_dir, algo)) or (algos and algo not in algos):
            continue
        for run in sorted(os.listdir(os.path.join(log_dir, algo))):
            folder = os.path.join(log_dir, algo, run)
            args_files = glob.glob(os.path.join(folder, "*", "args.yml"))
            prefix, _, exp_id = run.rpartition("_")
            if len(args_files) != 1 or not exp_id.isdigit():
                continue
            env_id = read_zoo_yaml(args_files[0])["env"]
            if prefix != env_folder_name(env_id) or (envs and env_id not in envs):
                continue
            agents.append(Agent(algo, env_id, int(exp_id), folder))
    if not agents:
        selection = f" of algos {algos}" if algos else ""
        selection += f" on envs {envs}" if envs else ""
        raise FileNotFoundError(
            f"no trained agent{selection} under {log_dir!r} (expected <algo>/<EnvId>_<N>/<EnvId>/args.yml)"
        )
    return sorted(agents, key=lambda agent: (agent.algo, agent.env_id, agent.exp_id))


def training_summary(agent: Agent) -> tuple[int | None, float | None]:
    """``(env steps of training, wall time of the training Monitor file in s)``; ``None`` if unknown.

    The steps are :func:`sb3_mb.common.scores.read_run_budget`'s: ``args.yml``'s ``-n`` when given, else
    ``config.yml``'s ``n_timesteps`` (which keeps the hyperparameter file's value when ``-n`` overrides it).
    """
    from stable_baselines3.common.monitor import LoadMonitorResultsError, load_results

    _, n_timesteps = read_run_budget(agent.folder, agent.env_id)
    try:
        monitor = load_results(agent.folder)
        wall_time = float(monitor["t"].max()) if len(monitor) else None
    except LoadMonitorResultsError:
        wall_time = None
    return (int(n_timesteps) if n_timesteps is not None else None), wall_time


def evaluate(
    agent: Agent,
    log_dir: str,
    reward_log: str,
    n_timesteps: int,
    seed: int = 0,
    load_best: bool = False,
    num_threads: int = 1,
) -> dict:
    """Run ``python -m zoo.enjoy`` on ``agent`` for ``n_timesteps`` steps; returns its row of the table.

    :raises RuntimeError: enjoy failed (the message holds the end of its output) or completed no episode.
    """
    import numpy as np
    from stable_baselines3.common.monitor import load_results
    from stable_baselines3.common.results_plotter import ts2xy

    log_dir, reward_log = os.path.abspath(log_dir), os.path.abspath(reward_log)  # enjoy runs in REPO_ROOT
    command = [sys.executable, "-m", "zoo.enjoy", "--algo", agent.algo, "--env", agent.env_id, "-f", log_dir]
    command += ["--exp-id", str(agent.exp_id), "-n", str(n_timesteps), "--no-render", "--seed", str(seed)]
    command += ["--num-threads", str(num_threads), "--verbose", "0", "--reward-log", reward_log]
    if load_best:
        command.append("--load-best")
    os.makedirs(reward_log, exist_ok=True)
    for old in glob.glob(os.path.join(reward_log, "*monitor.csv")):
        os.remove(old)
    start = time.perf_counter()
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True)
    eval_wall_time = time.perf_counter() - start
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-15:])
        raise RuntimeError(f"{agent.folder}: zoo.enjoy exited with {done.returncode}:\n{tail}")
    x, y = ts2xy(load_results(reward_log), "timesteps")
    if len(y) == 0:
        raise RuntimeError(f"{agent.folder}: no episode completed in {n_timesteps} steps; raise -n")
    trained_steps, train_wall_time = training_summary(agent)
    return {
        "algo": agent.algo,
        "env_id": agent.env_id,
        "exp_id": agent.exp_id,
        "mean_reward": float(np.mean(y)),
        "std_reward": float(np.std(y)),
        "eval_episodes": len(y),
        "eval_timesteps": int(x[-1]),
        "n_timesteps": trained_steps,
        "train_wall_time_s": None if train_wall_time is None else round(train_wall_time, 1),
        "eval_wall_time_s": round(eval_wall_time, 1),
    }


def write_benchmark(rows: list[dict], path: str) -> str:
    """Write the header and rl-zoo3's markdown table of ``rows`` to ``path``; returns the table."""
    import pandas as pd
    import pytablewriter

    data_frame = pd.DataFrame(rows, columns=COLUMNS).sort_values(by=["algo", "env_id", "exp_id"])
    writer = pytablewriter.MarkdownTableWriter(max_precision=3)
    writer.from_dataframe(data_frame)
    table = writer.dumps()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as file:
        file.write(HEADER + table)
    return table


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Evaluate every trained agent under a log folder with zoo.enjoy and write benchmark.md.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--log-dir", default="logs", help="Log folder of the zoo (holds <algo>/<EnvId>_<N>/)")
    parser.add_argument(
        "--benchmark-dir", default="logs/benchmark", help="Where reward logs and benchmark.md go"
    )
    parser.add_argument("-n", "--n-timesteps", type=int, default=10000, help="Env steps of each evaluation")
    parser.add_argument("--algos", nargs="+", help="Only these algorithms")
    parser.add_argument("--env", nargs="+", help="Only these env ids")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the evaluation env")
    parser.add_argument(
        "--load-best", action="store_true", help="Evaluate best_model.zip instead of the last model"
    )
    parser.add_argument("--num-threads", type=int, default=1, help="PyTorch threads of each evaluation")
    parser.add_argument(
        "--force", action="store_true", help="Evaluate again agents already in --benchmark-dir"
    )
    parser.add_argument(
        "--progress-bar",
        action="store_true",
        help="Draw a bar of the agents evaluated (tqdm / rich, as SB3's)",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        agents = find_agents(args.log_dir, args.algos, args.env)
    except FileNotFoundError as error:
        print(f"benchmark: {error.args[0]}", file=sys.stderr)
        return 1
    rows, failed = [], []
    bar = make_progress_bar(len(agents), "benchmark agents", args.progress_bar)
    try:
        for index, agent in enumerate(agents, start=1):
            evaluate_agent(agent, index, len(agents), args, rows, failed)
            bar.update(1)
    finally:
        bar.close()
    path = os.path.join(args.benchmark_dir, "benchmark.md")
    if rows:
        print(write_benchmark(rows, path))
        print(f"Results written to {path}")
    if failed:
        print(f"benchmark: {len(failed)} agent(s) failed: {failed}", file=sys.stderr)
        return 1
    return 0


def evaluate_agent(
    agent: Agent, index: int, n_agents: int, args: argparse.Namespace, rows: list[dict], failed: list[str]
) -> None:
    """Evaluate one agent of ``main``'s loop (or read its saved result): its row goes to ``rows``, its folder
    to ``failed`` if the evaluation fails."""
    reward_log = os.path.join(args.benchmark_dir, agent.name)
    saved = os.path.join(reward_log, "result.json")
    if os.path.isfile(saved) and not args.force:
        with open(saved) as file:
            rows.append(json.load(file))
        print(f"{index}/{n_agents} {agent.name}: already evaluated ({saved}), skipped")
        return
    print(f"{index}/{n_agents} evaluating {agent.algo} on {agent.env_id} ({agent.folder})...", flush=True)
    try:
        row = evaluate(
            agent, args.log_dir, reward_log, args.n_timesteps, args.seed, args.load_best, args.num_threads
        )
    except RuntimeError as error:
        print(f"benchmark: {error.args[0]}", file=sys.stderr)
        failed.append(agent.folder)
        return
    with open(saved, "w") as file:
        json.dump(row, file)
    rows.append(row)
    print(
        f"    {row['mean_reward']:.2f} +/- {row['std_reward']:.2f} over {row['eval_episodes']} episodes "
        f"({row['eval_wall_time_s']} s)"
    )


if __name__ == "__main__":
    sys.exit(main())
