"""γ-MVE against SB3's SAC and MBPO on one env at a CPU budget (issue 13): env steps to a return threshold.

Every ``--eval-every`` env steps each agent is evaluated over ``--eval-episodes`` deterministic episodes
(``evaluate_policy``, a separate env seeded 100 + seed). γ-MVE and MBPO take the zoo's entry for the env
(``hyperparams/gammamve.yml``, ``hyperparams/mbpo.yml``), γ-MVE's with ``--override`` laid over it; SAC
SB3's defaults with the same ``learning_starts`` as γ-MVE's entry.

``--mbpo-session`` replaces MBPO's entry by a reduced MBPO that fits a CPU session (:data:`MBPO_SESSION`,
the settings of ``mbpo_vagram_hopper.py``'s session budget: 1000 random steps, epochs of 250 steps, rollouts
of length 1, 100 rollouts per step, model data ramped to 95 % over 4 epochs, 5 SAC updates per step on
``[256, 256]``, the default 7 × (4 × 200) NLL ensemble); ``--mbpo-override`` is laid over either. MBPO's
Hopper-v5 entry (20 SAC updates per step on ``[1024, 1024]``, 10 000 random steps) is the paper's.

Usage (session budgets)::

    OMP_NUM_THREADS=1 python benchmarks/gamma_mve_learning.py --algos gammamve sac --env Pendulum-v1 \
        --seeds 0 1 2 --steps 6000 --eval-every 1000 --threshold -400 [--override '{"model_gamma": 0.5}']
    OMP_NUM_THREADS=1 python benchmarks/gamma_mve_learning.py --algos sac gammamve mbpo --env Hopper-v5 \
        --seeds 0 1 2 --steps 5000 --eval-every 1000 --eval-episodes 3 --threshold 250 --mbpo-session

The paper-scale budget (not run): the zoo entries as they are (MBPO's paper settings) for the 250 000 steps
of their ``n_timesteps``::

    python benchmarks/gamma_mve_learning.py --algos sac gammamve mbpo --env Hopper-v5 --seeds 0 1 2 \
        --steps 250000 --eval-every 5000 --eval-episodes 10 --threshold 1000 --device cuda

Results: merged into ``benchmarks/results/gamma_mve_learning_<env>.json`` keyed by (algo, tag, seed).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import time

import numpy as np
import torch as th
from measure import peak_rss_mb  # benchmarks/ is the script's directory
from stable_baselines3 import SAC
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

import sb3_mb
from zoo.hyperparams import load_hyperparams

RESULTS = os.path.join(os.path.dirname(__file__), "results")

#: MBPO reduced to a CPU session (``mbpo_vagram_hopper.py`` without ``--paper``), laid over nothing.
MBPO_SESSION = dict(
    learning_starts=1000,
    epoch_length=250,
    model_train_freq=250,
    rollout_schedule=(0, 1, 1, 1),
    model_data_ratio_schedule=(0, 4, 0.0, 0.95),
    gradient_steps=5,
    target_entropy=-1.0,
    n_rollouts_per_step=100,
    model_max_epochs=50,
    policy_kwargs=dict(net_arch=[256, 256]),
)


class EvalEvery(BaseCallback):
    """Mean deterministic return every ``every`` env steps, into ``curve`` (with the wall time since the
    callback was made); ``on_eval()`` after each evaluation (the script stores the unfinished run)."""

    def __init__(self, eval_env, every: int, n_episodes: int, on_eval=None):
        super().__init__()
        self.eval_env, self.every, self.n_episodes, self.curve = eval_env, every, n_episodes, []
        self.on_eval, self.start = on_eval, time.perf_counter()

    def _on_step(self) -> bool:
        if self.num_timesteps % self.every == 0:
            mean, std = evaluate_policy(self.model, self.eval_env, n_eval_episodes=self.n_episodes)
            wall = time.perf_counter() - self.start
            point = {"steps": self.num_timesteps, "return": float(mean), "std": float(std), "wall_s": wall}
            self.curve.append(point)
            print(self.model.__class__.__name__, self.curve[-1], flush=True)
            if self.on_eval is not None:
                self.on_eval()
        return True


def algo_kwargs(algo: str, env_id: str, args: argparse.Namespace) -> dict:
    """The constructor arguments of ``algo`` for this run (module docstring)."""
    if algo == "sac":
        return {"learning_starts": load_hyperparams("gammamve", env_id).get("learning_starts", 100)}
    if algo == "mbpo":
        base = dict(MBPO_SESSION) if args.mbpo_session else load_hyperparams("mbpo", env_id)
        return {**base, **json.loads(args.mbpo_override)}
    return {**load_hyperparams(algo, env_id), **json.loads(args.override)}


def make_model(algo: str, env_id: str, seed: int, kwargs: dict, device: str = "auto"):
    env = make_vec_env(env_id, n_envs=1, seed=seed)
    cls = SAC if algo == "sac" else sb3_mb.get_algorithm(algo)
    return cls("MlpPolicy", env, seed=seed, device=device, **kwargs)


def run_record(args, algo: str, seed: int, kwargs: dict, callback: EvalEvery, finished: bool) -> dict:
    """The stored record of one run: its curve, steps to ``--threshold``, settings and wall time."""
    reached = [c["steps"] for c in callback.curve if c["return"] >= args.threshold]
    return {
        "algo": algo,
        "tag": args.tag,
        "seed": seed,
        "curve": callback.curve,
        "steps_to_threshold": reached[0] if reached else None,
        "threshold": args.threshold,
        "wall_s": time.perf_counter() - callback.start,
        "peak_rss_mb": peak_rss_mb(),  # this process's peak so far (its earlier runs included)
        "finished": finished,
        "override": json.loads(args.override) if algo == "gammamve" else {},
        "kwargs": {k: v for k, v in kwargs.items() if k != "policy_kwargs"}
        | {"policy_kwargs": str(kwargs.get("policy_kwargs"))},
        "n_timesteps": args.steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algos", nargs="+", default=["gammamve", "sac"])
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--steps", type=int, default=6000)
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--threshold", type=float, default=-400.0)
    parser.add_argument("--override", default="{}", help="JSON laid over γ-MVE's zoo entry")
    parser.add_argument("--mbpo-session", action="store_true", help="MBPO_SESSION instead of MBPO's entry")
    parser.add_argument("--mbpo-override", default="{}", help="JSON laid over MBPO's settings")
    parser.add_argument("--tag", default="default")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    th.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    path = os.path.join(RESULTS, f"gamma_mve_learning_{args.env.replace('/', '-')}.json")
    runs: list[dict] = []

    def store(run: dict) -> None:
        """Merge ``run`` into the results file, read again each time (runs of other processes of this script
        on the same env, e.g. one per seed, are kept) and replaced atomically."""
        nonlocal runs
        runs = json.load(open(path))["runs"] if os.path.exists(path) else []
        key = (run["algo"], run["tag"], run["seed"])
        runs = [r for r in runs if (r["algo"], r["tag"], r["seed"]) != key] + [run]
        os.makedirs(RESULTS, exist_ok=True)
        with open(path + f".{os.getpid()}.tmp", "w") as f:
            json.dump({"env": args.env, "runs": runs}, f, indent=2)
        os.replace(path + f".{os.getpid()}.tmp", path)

    for algo in args.algos:
        for seed in args.seeds:
            kwargs = algo_kwargs(algo, args.env, args)
            model = make_model(algo, args.env, seed, kwargs, args.device)
            callback = EvalEvery(
                make_vec_env(args.env, n_envs=1, seed=100 + seed), args.eval_every, args.eval_episodes
            )
            # a run stopped early keeps its curve so far ("finished": false)
            callback.on_eval = functools.partial(
                lambda *a: store(run_record(*a, finished=False)), args, algo, seed, kwargs, callback
            )
            model.learn(args.steps, callback=callback)
            run = run_record(args, algo, seed, kwargs, callback, finished=True)
            store(run)
            print(
                json.dumps({k: run[k] for k in ("algo", "seed", "steps_to_threshold", "wall_s")}), flush=True
            )
    final = {(r["algo"], r["tag"]): [] for r in runs}
    for r in runs:
        final[(r["algo"], r["tag"])].append(r["curve"][-1]["return"] if r["curve"] else np.nan)
    print({f"{a}/{t}": np.round(v, 1).tolist() for (a, t), v in final.items()})


if __name__ == "__main__":
    main()
