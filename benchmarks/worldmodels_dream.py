"""World Models: C trained in the dream against C trained in the real env, same small budget, real-env return.

CartPole-v1 from state (MlpPolicy: an MLP VAE; CarRacing's M has no termination signal worth learning, the
paper's dream experiment is Doom's, Sec. 4). Both runs of a seed collect the same 30 random episodes and train
the same V and M (50 V epochs, 100 M epochs on 5-step sequences, reward and done heads); only where the 8
CMA-ES generations of 12 candidates x 2 episodes score C differs: ``controller_env="real"`` (192 real
episodes) or ``"dream"`` (DreamEnv at each of ``--temperatures``, episodes of up to 200 steps, no env step).
Each C is scored deterministically over 10 real episodes (seed 100), beside the uniformly random policy.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/worldmodels_dream.py --seeds 0 1 2

Writes ``benchmarks/results/worldmodels_dream.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch as th
from measure import peak_rss_mb  # benchmarks/ is the script's directory
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_mb import WorldModels

RESULTS = Path(__file__).parent / "results"

SETTINGS = dict(
    vae_learning_rate=1e-3,
    n_random_rollouts=30,
    vae_epochs=50,
    vae_batch_size=64,
    mdn_epochs=100,
    batch_size=32,
    sequence_length=5,
    population_size=12,
    rollouts_per_candidate=2,
    n_generations=8,
    sigma0=1.0,
    max_episode_steps=200,
    dream_max_episode_steps=200,
    policy_kwargs=dict(z_dim=4, hidden_size=16, mlp_hidden_sizes=(32,)),
)


class RandomPolicy:
    """Uniformly random actions of one env, for ``evaluate_policy``."""

    def __init__(self, action_space):
        self.action_space = action_space

    def predict(self, observation, state=None, episode_start=None, deterministic=False):
        return np.array([self.action_space.sample()]), None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--temperatures", type=float, nargs="+", default=[1.0, 1.15])
    parser.add_argument("--eval-episodes", type=int, default=10)
    args = parser.parse_args()
    th.set_num_threads(1)
    rows = []
    for seed in args.seeds:
        row: dict = {"seed": seed}
        runs = {"real": ("real", 1.0), **{f"dream tau={t}": ("dream", t) for t in args.temperatures}}
        for name, (where, temperature) in runs.items():
            start = time.perf_counter()
            model = WorldModels(
                "MlpPolicy",
                "CartPole-v1",
                seed=seed,
                controller_env=where,
                temperature=temperature,
                device="cpu",
                **SETTINGS,
            )
            scoring: dict = {}
            train_controller = model.train_controller

            def counted(train_controller=train_controller, scoring=scoring, model=model):
                out = train_controller()
                scoring["steps"] = int(model.logger.name_to_value["controller/env_steps"])
                return out

            model.train_controller = counted
            model.learn(700)
            seconds = time.perf_counter() - start
            env = make_vec_env("CartPole-v1", n_envs=1, seed=100)
            mean, std = evaluate_policy(model, env, n_eval_episodes=args.eval_episodes)
            row[name] = {
                "return_mean": mean,
                "return_std": std,
                "seconds": seconds,
                "peak_rss_mb": peak_rss_mb(),  # this process's peak so far (its earlier runs included)
                "scoring_steps": scoring["steps"],  # real env steps, or dream steps for the dream
                "collected_env_steps": int(model.num_timesteps),
            }
        env = make_vec_env("CartPole-v1", n_envs=1, seed=100)
        env.action_space.seed(seed)
        mean, std = evaluate_policy(RandomPolicy(env.action_space), env, n_eval_episodes=args.eval_episodes)
        row["random"] = {"return_mean": mean, "return_std": std}
        print(json.dumps(row))
        rows.append(row)
    RESULTS.mkdir(exist_ok=True)
    result = {
        "env": "CartPole-v1",
        "settings": {**SETTINGS, "temperatures": args.temperatures, "n_timesteps": 700},
        "command": "python benchmarks/worldmodels_dream.py " + " ".join(sys.argv[1:]),
        "runs": rows,
    }
    (RESULTS / "worldmodels_dream.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
