"""Environment steps to reach a Pendulum-v1 evaluation return >= -200: MBPO vs SB3 SAC, several seeds.

Both agents are evaluated every ``--*-eval-freq`` env steps (250 for both by default; 5 deterministic
episodes on a separate, seeded env); a run stops at the first evaluation whose mean return reaches
``--threshold`` and records that step count, or records ``null`` when its budget runs out. The reported
ratio is ``mean(MBPO steps) / mean(SAC steps)`` over the seeds that reached the threshold (goal: <= 0.2).

MBPO settings for Pendulum: the zoo's ``Pendulum-v1`` entry of ``hyperparams/mbpo.yml`` (also used by
the slow test in ``tests/mbpo/test_mbpo.py``; not the paper's Hopper defaults): ``learning_starts=250``,
``model_train_freq=250``, ``epoch_length=250``, 400 rollouts per env step of length 1, model data ramping
from 0 to 95% of each batch over 6 epochs (per-sample mixing), the default 20 SAC updates per env step,
the default 7x(4x200) SiLU ensemble with NLL, model batch 64 and at most 50 epochs per model training.
SAC: SB3 defaults (``learning_starts=100``, 1 update per step). Both use SAC networks ``[64, 64]``.

Usage::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/mbpo_sample_efficiency.py \
        [--algos mbpo sac] [--seeds 0 1 2] [--mbpo-budget 5000] [--sac-budget 30000]

Writes ``benchmarks/results/mbpo_sample_efficiency.json`` (merging with the runs already there).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch as th
from measure import peak_rss_mb  # benchmarks/ is the script's directory
from stable_baselines3 import SAC
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_mb import MBPO
from zoo.hyperparams import load_hyperparams

RESULTS = os.path.join(os.path.dirname(__file__), "results", "mbpo_sample_efficiency.json")

#: MBPO settings: the zoo's Pendulum-v1 entry (hyperparams/mbpo.yml), less the SAC networks, which both
#: agents share (small, so that a 3-seed run fits a session on a CPU).
MBPO_PENDULUM = load_hyperparams("mbpo", "Pendulum-v1")
POLICY_KWARGS = MBPO_PENDULUM.pop("policy_kwargs")


class StopAtReturn(BaseCallback):
    """Evaluate every ``eval_freq`` steps; stop training once the mean return reaches ``threshold``."""

    def __init__(self, eval_env, eval_freq: int, threshold: float, n_episodes: int = 5):
        super().__init__()
        self.eval_env, self.eval_freq, self.threshold, self.n_episodes = (
            eval_env,
            eval_freq,
            threshold,
            n_episodes,
        )
        self.curve: list[tuple[int, float]] = []
        self.reached_at: int | None = None

    def _on_step(self) -> bool:
        if self.num_timesteps % self.eval_freq != 0:
            return True
        mean_return, _ = evaluate_policy(self.model, self.eval_env, n_eval_episodes=self.n_episodes)
        self.curve.append((self.num_timesteps, float(mean_return)))
        if mean_return >= self.threshold:
            self.reached_at = self.num_timesteps
            return False
        return True


def run(algo: str, seed: int, budget: int, eval_freq: int, threshold: float) -> dict:
    env = make_vec_env("Pendulum-v1", n_envs=1, seed=seed)
    eval_env = make_vec_env("Pendulum-v1", n_envs=1, seed=10_000 + seed)
    if algo == "mbpo":
        model = MBPO("MlpPolicy", env, seed=seed, policy_kwargs=POLICY_KWARGS, **MBPO_PENDULUM)
    else:
        model = SAC("MlpPolicy", env, seed=seed, policy_kwargs=POLICY_KWARGS)
    callback = StopAtReturn(eval_env, eval_freq, threshold)
    start = time.perf_counter()
    model.learn(budget, callback=callback)
    return {
        "algo": algo,
        "seed": seed,
        "budget": budget,
        "steps_to_threshold": callback.reached_at,
        "wall_s": time.perf_counter() - start,
        "peak_rss_mb": peak_rss_mb(),  # this process's peak so far (its earlier runs included)
        "curve": callback.curve,
    }


def summarise(runs: list[dict]) -> dict:
    summary: dict = {}
    for algo in ("mbpo", "sac"):
        steps = [r["steps_to_threshold"] for r in runs if r["algo"] == algo]
        reached = [s for s in steps if s is not None]
        summary[algo] = {
            "n_runs": len(steps),
            "n_reached": len(reached),
            "steps": steps,
            "mean_steps": float(np.mean(reached)) if reached else None,
            "median_steps": float(np.median(reached)) if reached else None,
        }
    m, s = summary["mbpo"]["mean_steps"], summary["sac"]["mean_steps"]
    summary["ratio_mbpo_over_sac"] = m / s if m is not None and s is not None else None
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--algos", nargs="+", default=["mbpo", "sac"], choices=["mbpo", "sac"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--threshold", type=float, default=-200.0)
    parser.add_argument("--mbpo-budget", type=int, default=5000)
    parser.add_argument("--sac-budget", type=int, default=20000)
    parser.add_argument("--mbpo-eval-freq", type=int, default=250)
    parser.add_argument("--sac-eval-freq", type=int, default=250)
    args = parser.parse_args()
    th.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    previous = []
    if os.path.exists(RESULTS):
        with open(RESULTS) as f:
            previous = json.load(f).get("runs", [])
    runs = [r for r in previous if not (r["algo"] in args.algos and r["seed"] in args.seeds)]
    for algo in args.algos:
        for seed in args.seeds:
            budget = args.mbpo_budget if algo == "mbpo" else args.sac_budget
            eval_freq = args.mbpo_eval_freq if algo == "mbpo" else args.sac_eval_freq
            result = run(algo, seed, budget, eval_freq, args.threshold)
            print(json.dumps({k: v for k, v in result.items() if k != "curve"}), flush=True)
            runs.append(result)
    out = {
        "env": "Pendulum-v1",
        "threshold": args.threshold,
        "device": "cpu",
        "threads": th.get_num_threads(),
        "torch": th.__version__,
        "machine": platform.machine(),
        "mbpo_kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in MBPO_PENDULUM.items()},
        "policy_kwargs": POLICY_KWARGS,
        "summary": summarise(runs),
        "runs": sorted(runs, key=lambda r: (r["algo"], r["seed"])),
    }
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        json.dump(out, f, indent=2)
    print(json.dumps(out["summary"], indent=2))


if __name__ == "__main__":
    main()
