"""γ-MVE against SB3's SAC (and MBPO) on one env at a CPU budget (issue 13): env steps to a return threshold.

Every ``--eval-every`` env steps each agent is evaluated over ``--eval-episodes`` deterministic episodes
(``evaluate_policy``, a separate env seeded 100 + seed). γ-MVE and MBPO take the zoo's entry for the env
(``hyperparams/gammamve.yml``, ``hyperparams/mbpo.yml``); SAC SB3's defaults with the same
``learning_starts`` as γ-MVE's entry.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/gamma_mve_learning.py --algos gammamve sac --env Pendulum-v1 \
        --seeds 0 1 2 --steps 6000 --eval-every 1000 --threshold -400 [--override '{"model_gamma": 0.5}']

Results: merged into ``benchmarks/results/gamma_mve_learning_<env>.json`` keyed by (algo, tag, seed).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch as th
from stable_baselines3 import SAC
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

import sb3_mb
from zoo.hyperparams import load_hyperparams

RESULTS = os.path.join(os.path.dirname(__file__), "results")


class EvalEvery(BaseCallback):
    """Mean deterministic return every ``every`` env steps, into ``curve``."""

    def __init__(self, eval_env, every: int, n_episodes: int):
        super().__init__()
        self.eval_env, self.every, self.n_episodes, self.curve = eval_env, every, n_episodes, []

    def _on_step(self) -> bool:
        if self.num_timesteps % self.every == 0:
            mean, std = evaluate_policy(self.model, self.eval_env, n_eval_episodes=self.n_episodes)
            self.curve.append({"steps": self.num_timesteps, "return": float(mean), "std": float(std)})
            print(self.model.__class__.__name__, self.curve[-1], flush=True)
        return True


def make_model(algo: str, env_id: str, seed: int, override: dict):
    env = make_vec_env(env_id, n_envs=1, seed=seed)
    if algo == "sac":
        starts = load_hyperparams("gammamve", env_id).get("learning_starts", 100)
        return SAC("MlpPolicy", env, seed=seed, learning_starts=starts, **override)
    kwargs = {**load_hyperparams(algo, env_id), **override}
    return sb3_mb.get_algorithm(algo)("MlpPolicy", env, seed=seed, **kwargs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algos", nargs="+", default=["gammamve", "sac"])
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--threshold", type=float, default=-400.0)
    parser.add_argument("--override", default="{}")
    parser.add_argument("--tag", default="default")
    args = parser.parse_args()
    th.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    override = json.loads(args.override)
    path = os.path.join(RESULTS, f"gamma_mve_learning_{args.env.replace('/', '-')}.json")
    runs = json.load(open(path))["runs"] if os.path.exists(path) else []
    for algo in args.algos:
        for seed in args.seeds:
            model = make_model(algo, args.env, seed, override if algo != "sac" else {})
            callback = EvalEvery(
                make_vec_env(args.env, n_envs=1, seed=100 + seed), args.eval_every, args.eval_episodes
            )
            start = time.perf_counter()
            model.learn(args.steps, callback=callback)
            reached = [c["steps"] for c in callback.curve if c["return"] >= args.threshold]
            run = {
                "algo": algo,
                "tag": args.tag,
                "seed": seed,
                "curve": callback.curve,
                "steps_to_threshold": reached[0] if reached else None,
                "threshold": args.threshold,
                "wall_s": time.perf_counter() - start,
                "override": override if algo != "sac" else {},
            }
            runs = [r for r in runs if (r["algo"], r["tag"], r["seed"]) != (algo, args.tag, seed)] + [run]
            os.makedirs(RESULTS, exist_ok=True)
            with open(path, "w") as f:
                json.dump({"env": args.env, "runs": runs}, f, indent=2)
            print(
                json.dumps({k: run[k] for k in ("algo", "seed", "steps_to_threshold", "wall_s")}), flush=True
            )
    final = {(r["algo"], r["tag"]): [] for r in runs}
    for r in runs:
        final[(r["algo"], r["tag"])].append(r["curve"][-1]["return"] if r["curve"] else np.nan)
    print({f"{a}/{t}": np.round(v, 1).tolist() for (a, t), v in final.items()})


if __name__ == "__main__":
    main()
