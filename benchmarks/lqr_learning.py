"""Model-based against model-free on the linear double integrator, whose optimum is known.

``sb3_mb/DoubleIntegrator-v0`` (:mod:`sb3_mb.envs.linear`): position and velocity, bounded acceleration,
reward ``-c * position^2``, 30-step episodes from rest at position 1. The optimal cost
``sum position^2`` is 0 (one step to the origin, one to stop); doing nothing costs 30. A linear system is
the easiest model to learn, so a model-based agent should come near the optimum with few steps.

Each run trains one agent for ``--steps`` env steps at one reward scale ``c`` (``--position-costs``) and
reports the cost of one deterministic episode (the env is deterministic), ``-return / c``, so that runs at
different scales compare. Algorithms: ``mbpo``, ``steve``, ``planet`` (sb3-mb) and their model-free bases
``sac``, ``ddpg``, ``td3`` (SB3, at SB3's defaults). sb3-mb agents take the zoo's
``sb3_mb/DoubleIntegrator-v0`` entry of ``hyperparams/<algo>.yml`` when there is one (else the constructor
defaults); ``--override`` adds constructor arguments (JSON) to any agent.

Usage::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/lqr_learning.py --algo mbpo sac \
        --seeds 0 1 2 --steps 800 --position-costs 0.001 1 1000 [--override '{"learning_starts": 500}']

Results are merged into ``benchmarks/results/lqr_learning.json`` keyed by (algo, tag, seed, c, steps);
``--tag`` names a variant (e.g. a setting under study).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from typing import Any

import numpy as np
import torch as th
from measure import peak_rss_mb  # benchmarks/ is the script's directory
from stable_baselines3 import DDPG, SAC, TD3
from stable_baselines3.common.env_util import make_vec_env

import sb3_mb
from sb3_mb.envs.linear import DoubleIntegrator

ENV_ID = "sb3_mb/DoubleIntegrator-v0"
RESULTS = os.path.join(os.path.dirname(__file__), "results", "lqr_learning.json")
MODEL_FREE = {"sac": SAC, "ddpg": DDPG, "td3": TD3}


def zoo_kwargs(algo: str) -> dict[str, Any]:
    """The zoo's constructor arguments for the env (none when the entry does not exist)."""
    from zoo.hyperparams import load_hyperparams

    try:
        return load_hyperparams(algo, ENV_ID)
    except KeyError:  # no entry for the env: the constructor defaults
        return {}


def episode_cost(model, position_cost: float) -> float:
    """``sum position^2`` of one deterministic episode (``-return / c``), with the recurrent state carried."""
    env = DoubleIntegrator(position_cost=position_cost)
    obs, _ = env.reset(seed=0)
    state, start, total, done = None, np.ones(1, dtype=bool), 0.0, False
    while not done:
        action, state = model.predict(obs[None], state=state, episode_start=start, deterministic=True)
        obs, reward, terminated, truncated, _ = env.step(action[0])
        total += reward
        start, done = np.zeros(1, dtype=bool), terminated or truncated
    return -total / position_cost


def run(algo: str, seed: int, steps: int, position_cost: float, override: dict[str, Any]) -> dict[str, Any]:
    env = make_vec_env(ENV_ID, n_envs=1, seed=seed, env_kwargs=dict(position_cost=position_cost))
    if algo in MODEL_FREE:
        kwargs = dict(override)
        model = MODEL_FREE[algo]("MlpPolicy", env, seed=seed, **kwargs)
    else:
        kwargs = {**zoo_kwargs(algo), **override}
        kwargs.pop("n_timesteps", None)
        policy = kwargs.pop("policy", "MlpPolicy")
        model = sb3_mb.get_algorithm(algo)(policy, env, seed=seed, **kwargs)
    start = time.perf_counter()
    model.learn(steps)
    return {
        "algo": algo,
        "seed": seed,
        "steps": steps,
        "position_cost": position_cost,
        "cost": episode_cost(model, position_cost),
        "wall_s": time.perf_counter() - start,
        "peak_rss_mb": peak_rss_mb(),  # this process's peak so far (its earlier runs included)
        "kwargs": {k: repr(v) for k, v in kwargs.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--algo", nargs="+", default=["mbpo", "sac"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--position-costs", nargs="+", type=float, default=[1.0])
    parser.add_argument("--override", default="{}", help="JSON dict of constructor arguments")
    parser.add_argument("--tag", default="default")
    parser.add_argument("--output", default=RESULTS)
    args = parser.parse_args()
    th.set_num_threads(1)
    override = json.loads(args.override)

    previous = []
    if os.path.exists(args.output):
        with open(args.output) as f:
            previous = json.load(f).get("runs", [])
    runs = {(r["algo"], r["tag"], r["seed"], r["position_cost"], r["steps"]): r for r in previous}
    for algo in args.algo:
        for position_cost in args.position_costs:
            for seed in args.seeds:
                result = run(algo, seed, args.steps, position_cost, override)
                result["tag"] = args.tag
                runs[(algo, args.tag, seed, position_cost, args.steps)] = result
                print(json.dumps({k: v for k, v in result.items() if k != "kwargs"}), flush=True)
                out = {
                    "env": ENV_ID,
                    "optimal_cost": 0.0,
                    "noop_cost": 30.0,
                    "machine": platform.processor() or platform.machine(),
                    "torch_threads": th.get_num_threads(),
                    "runs": sorted(
                        runs.values(), key=lambda r: (r["algo"], r["tag"], r["position_cost"], r["seed"])
                    ),
                }
                os.makedirs(os.path.dirname(args.output), exist_ok=True)
                with open(args.output, "w") as f:
                    json.dump(out, f, indent=2)


if __name__ == "__main__":
    main()
