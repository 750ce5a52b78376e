"""PlaNet learning curves on DeepMind Control cartpole (Hafner et al. 2019, arXiv:1811.04551; Rose's fork).

Two budgets:

- ``--budget session`` (default): cartpole-balance and cartpole-swingup **from state** (5-D vector,
  action repeat 8, 125 agent steps per episode) with reduced sizes that fit a few minutes on one CPU
  thread: belief 64, state 16, hidden 64, batch 32 x 30, 50 updates per episode, CEM horizon 12 with
  100 candidates, top 10, 5 iterations. Evaluates (deterministic, no exploration noise) every
  ``--eval-every`` episodes on 5 episodes.
- ``--budget paper``: the paper's setting on **pixels** (camera-ready defaults of ``PlaNet``: belief
  200, state 30, batch 50 x 50, 100 updates per episode, CEM 12 / 1000 / 100 / 10), 1000 episodes
  (paper: 821 on swingup after 1000 episodes; fork: about 990 on continuous balance and 520 on the
  5-action balance, ``--env sb3_mb/CartpoleBalancePixelsDiscrete5-v0``). Needs a GPU (``--device cuda``)::

      python benchmarks/planet_learning.py --budget paper --env sb3_mb/CartpoleSwingupPixels-v0 \\
          --episodes 1000 --device cuda

Usage (session budget, both tasks)::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 MUJOCO_GL=egl python benchmarks/planet_learning.py \\
        --episodes 20 --eval-every 5

Writes ``benchmarks/results/planet_learning.json`` (one entry per env, ``<env id>/seed<n>`` with several
``--seeds``: returns per evaluation, random return, wall time, settings).

``--preset fork`` (session budget only) lays the protocol of Rose's fork (``hyperparams/planet.yml``'s
discrete presets) over the session sizes: batch 8 x 50, reward head 2 x 100, planning objective discounted by
0.99, Adam's rate warmed up linearly over ``--learning-rate-warmup`` updates (the fork's 10 000 by default;
the session budget makes 50 per episode), epsilon-greedy 0.1 for discrete actions (as upstream here). The
5-action balance, the fork's presets against the upstream ones (``benchmarks/README.md``)::

    python benchmarks/planet_learning.py --episodes 30 --eval-every 10 --seeds 0 1 \
        --env sb3_mb/CartpoleBalanceDiscrete5-v0 --preset fork \
        --output benchmarks/results/planet_learning_discrete_fork.json
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
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_mb import PlaNet

SESSION_KWARGS = dict(
    batch_size=32,
    sequence_length=30,
    seed_episodes=5,
    updates_per_episode=50,
    policy_kwargs=dict(
        belief_size=64,
        state_size=16,
        hidden_size=64,
        planning_horizon=12,
        n_candidates=100,
        n_elites=10,
        n_iterations=5,
        mlp_hidden_sizes=(64,),
        reward_hidden_sizes=(64, 64),
    ),
)


# Rose's fork's protocol (spec 3.2; hyperparams/planet.yml's *pixels_discrete), over the session sizes.
FORK_KWARGS = dict(
    SESSION_KWARGS,
    batch_size=8,
    sequence_length=50,
    learning_rate_warmup=10_000,
    policy_kwargs=dict(SESSION_KWARGS["policy_kwargs"], reward_hidden_sizes=(100, 100), discount=0.99),
)


class EpisodeEval(BaseCallback):
    """Evaluate every ``eval_every`` completed episodes (after the seed episodes)."""

    def __init__(self, eval_env, eval_every: int, n_eval_episodes: int):
        super().__init__()
        self.eval_env, self.eval_every, self.n_eval_episodes = eval_env, eval_every, n_eval_episodes
        self.results: list[dict] = []
        self._last = 0

    def _on_step(self) -> bool:
        episodes = self.model._episode_num
        if episodes >= self._last + self.eval_every:
            self._last = episodes
            mean, std = evaluate_policy(self.model, self.eval_env, n_eval_episodes=self.n_eval_episodes)
            self.results.append(
                dict(episodes=episodes, timesteps=self.num_timesteps, mean_return=mean, std_return=std)
            )
            print(f"  episode {episodes:4d}: return {mean:7.1f} +- {std:5.1f}", flush=True)
        return True


def random_return(env, n_episodes: int) -> float:
    class RandomAgent:
        def predict(self, obs, state=None, episode_start=None, deterministic=False):
            return np.array([env.action_space.sample() for _ in range(len(obs))]), None

    env.action_space.seed(0)
    return float(evaluate_policy(RandomAgent(), env, n_eval_episodes=n_episodes)[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--env", nargs="+", default=["sb3_mb/CartpoleBalance-v0", "sb3_mb/CartpoleSwingup-v0"]
    )
    parser.add_argument("--budget", choices=("session", "paper"), default="session")
    parser.add_argument("--episodes", type=int, default=20, help="training episodes, seed episodes included")
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--preset", choices=("session", "fork"), default="session", help="session budget")
    parser.add_argument(
        "--learning-rate-warmup", type=int, default=None, help="override the preset's (fork: 10000)"
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--output", default=os.path.join(os.path.dirname(__file__), "results", "planet_learning.json")
    )
    args = parser.parse_args()
    if "OMP_NUM_THREADS" in os.environ:
        th.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

    results = {
        "budget": args.budget,
        "threads": th.get_num_threads(),
        "torch": th.__version__,
        "machine": platform.processor() or platform.machine(),
        "runs": {},
    }
    results["preset"] = args.preset
    for env_id, seed in [(env_id, seed) for env_id in args.env for seed in args.seeds]:
        key = env_id if len(args.seeds) == 1 else f"{env_id}/seed{seed}"
        env = make_vec_env(env_id, n_envs=1, seed=seed)
        eval_env = make_vec_env(env_id, n_envs=args.eval_episodes, seed=seed + 1000)
        episode_length = env.envs[0].spec.max_episode_steps
        policy = "CnnPolicy" if len(env.observation_space.shape) == 3 else "MlpPolicy"
        # Paper budget: camera-ready defaults, and a buffer that keeps every episode (as the paper).
        kwargs = (
            dict(FORK_KWARGS if args.preset == "fork" else SESSION_KWARGS)
            if args.budget == "session"
            else {"buffer_size": args.episodes * (episode_length + 1)}
        )
        if args.learning_rate_warmup is not None:
            kwargs["learning_rate_warmup"] = args.learning_rate_warmup
        rand = random_return(eval_env, args.eval_episodes)
        print(f"{env_id} ({policy}, {episode_length} steps/episode): random {rand:.1f}", flush=True)
        model = PlaNet(policy, env, seed=seed, device=args.device, **kwargs)
        callback = EpisodeEval(eval_env, args.eval_every, args.eval_episodes)
        start = time.perf_counter()
        model.learn(args.episodes * episode_length, callback=callback)
        wall = time.perf_counter() - start
        if not callback.results or callback.results[-1]["episodes"] < model._episode_num:
            callback._last = model._episode_num - callback.eval_every  # final evaluation at the end
            callback.on_step()
        results["runs"][key] = dict(
            seed=seed,
            policy=policy,
            episodes=args.episodes,
            episode_length=episode_length,
            random_return=rand,
            evaluations=callback.results,
            final_return=callback.results[-1]["mean_return"] if callback.results else None,
            best_return=max((r["mean_return"] for r in callback.results), default=None),
            wall_seconds=wall,
            peak_rss_mb=peak_rss_mb(),  # this process's peak so far (its earlier runs included)
            kwargs={k: v for k, v in kwargs.items() if k != "policy_kwargs"},
            policy_kwargs=kwargs.get("policy_kwargs", {}),
        )
        print(f"  {wall:.0f} s", flush=True)
        os.makedirs(os.path.dirname(args.output), exist_ok=True)
        with open(args.output, "w") as file:  # after every run: a long sweep keeps what it has
            json.dump(results, file, indent=2, default=str)
    print(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
