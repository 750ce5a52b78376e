"""STEVE vs MVE vs DDPG (``target_mode`` of :class:`sb3_mb.STEVE`): returns at fixed step counts and env steps
to a return threshold, several seeds, same machine and settings.

Every mode uses the zoo's entry for the env (``hyperparams/steve.yml``; ``--override`` changes it for a
session-sized run) and differs only in ``target_mode``: the ensembles are the same in every mode (the paper's
"ensemble MVE" ablation; its MVE / DDPG baselines use single nets), and by default only ``"ddpg"`` explores
(``explore_chance``, 5 % per action dimension; the model modes act greedily after the random warm-up). Each
run is evaluated every ``--eval-every`` env steps (``--eval-episodes`` deterministic episodes on a separate
seeded env). Reported per mode: the mean return over seeds at every evaluation step, the env steps until the
mean evaluation return first reaches ``--threshold`` (``null`` if never), and the ratios
``steps(mode) / steps(ddpg)`` (paper: STEVE <= MVE <= DDPG in steps, i.e. ratios <= 1) and
``(R(mode) - R0) / (R(ddpg) - R0)`` of the final returns, with ``R0`` the mean return of the untrained
(random-init, greedy) policy (> 1: better than DDPG).

Full 3-seed commands (Pendulum-v1 at the zoo budget; Hopper-v5 at the paper's defaults, the zoo's 1M steps,
needs a GPU: at the paper's sizes one CPU thread takes seconds per env step)::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/steve_learning.py --env Pendulum-v1 \
        --modes steve mve ddpg --seeds 0 1 2 --steps 5000 --eval-every 500 --threshold -400
    python benchmarks/steve_learning.py --env Hopper-v5 --modes steve mve ddpg --seeds 0 1 2 \
        --steps 1000000 --eval-every 25000 --threshold 1000 --device cuda

Session-sized run (fewer steps or smaller nets): add e.g. ``--steps 3000`` or
``--override '{"gradient_steps": 2}'``. Results go to ``benchmarks/results/steve_learning_<env>.json``,
merged with the runs already there (keyed by mode and seed).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

import sb3_mb  # noqa: F401  (registers the environments)
from sb3_mb import STEVE
from zoo.hyperparams import load_hyperparams

RESULTS_DIR = os.path.join(os.path.dirname(__file__), "results")


def run(env_id: str, mode: str, seed: int, kwargs: dict, args) -> dict:
    env = make_vec_env(env_id, n_envs=1, seed=seed)
    eval_env = make_vec_env(env_id, n_envs=1, seed=10_000 + seed)
    model = STEVE("MlpPolicy", env, seed=seed, target_mode=mode, device=args.device, **kwargs)
    initial, _ = evaluate_policy(model, eval_env, n_eval_episodes=args.eval_episodes)
    curve, start, reached_at = [], time.perf_counter(), None
    usage = []
    while model.num_timesteps < args.steps:
        model.learn(args.eval_every, reset_num_timesteps=False)
        mean_return, _ = evaluate_policy(model, eval_env, n_eval_episodes=args.eval_episodes)
        curve.append((int(model.num_timesteps), float(mean_return)))
        usage.append(model.logger.name_to_value.get("train/model_usage"))
        if reached_at is None and mean_return >= args.threshold:
            reached_at = int(model.num_timesteps)
        print(f"{mode} seed {seed} step {model.num_timesteps}: {mean_return:.1f}", flush=True)
    return {
        "mode": mode,
        "seed": seed,
        "steps": args.steps,
        "kwargs": kwargs,
        "initial_return": float(initial),
        "curve": curve,
        "model_usage": usage,
        "steps_to_threshold": reached_at,
        "wall_s": time.perf_counter() - start,
    }


def summarise(runs: list[dict], threshold: float) -> dict:
    summary: dict = {"threshold": threshold, "modes": {}}
    for mode in sorted({r["mode"] for r in runs}):
        mine = [r for r in runs if r["mode"] == mode]
        steps = sorted({s for r in mine for s, _ in r["curve"]})
        returns = {s: float(np.mean([ret for r in mine for s2, ret in r["curve"] if s2 == s])) for s in steps}
        reached = [r["steps_to_threshold"] for r in mine]
        hit = [s for s in reached if s is not None]
        summary["modes"][mode] = {
            "seeds": [r["seed"] for r in mine],
            "mean_return_at": returns,
            "final_mean_return": returns[steps[-1]] if steps else None,
            "initial_mean_return": float(np.mean([r["initial_return"] for r in mine])),
            "steps_to_threshold": reached,
            "mean_steps_to_threshold": float(np.mean(hit)) if len(hit) == len(reached) else None,
            "mean_wall_s": float(np.mean([r["wall_s"] for r in mine])),
        }
    ddpg = summary["modes"].get("ddpg")
    if ddpg is not None:
        for mode, stats in summary["modes"].items():
            if mode == "ddpg":
                continue
            s, d = stats["mean_steps_to_threshold"], ddpg["mean_steps_to_threshold"]
            stats["steps_ratio_over_ddpg"] = s / d if s is not None and d else None
            r0 = 0.5 * (stats["initial_mean_return"] + ddpg["initial_mean_return"])
            gain = ddpg["final_mean_return"] - r0
            stats["final_return_gain_ratio_over_ddpg"] = (
                (stats["final_mean_return"] - r0) / gain if gain else None
            )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--modes", nargs="+", default=["steve", "mve", "ddpg"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--eval-every", type=int, default=500)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--threshold", type=float, default=-400.0)
    parser.add_argument("--override", default="{}", help="JSON dict of constructor arguments")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    th.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    kwargs = load_hyperparams("steve", args.env)
    kwargs.update(json.loads(args.override))
    name = args.env.replace("/", "_")
    output = args.output or os.path.join(RESULTS_DIR, f"steve_learning_{name}.json")
    previous = []
    if os.path.exists(output):
        with open(output) as f:
            previous = json.load(f).get("runs", [])
    runs = [r for r in previous if not (r["mode"] in args.modes and r["seed"] in args.seeds)]
    for seed in args.seeds:
        for mode in args.modes:
            runs.append(run(args.env, mode, seed, kwargs, args))
            out = {
                "env": args.env,
                "device": args.device,
                "threads": th.get_num_threads(),
                "torch": th.__version__,
                "machine": platform.machine(),
                "kwargs": kwargs,
                "summary": summarise(runs, args.threshold),
                "runs": sorted(runs, key=lambda r: (r["mode"], r["seed"])),
            }
            os.makedirs(os.path.dirname(output), exist_ok=True)
            with open(output, "w") as f:  # after every run, so that a cut-off session keeps what it did
                json.dump(out, f, indent=2, default=str)
    print(json.dumps(out["summary"], indent=2, default=str))


if __name__ == "__main__":
    main()
