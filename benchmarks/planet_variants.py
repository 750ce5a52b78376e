"""PlaNet's transition models on cheetah-run from state: the base RSSM against the moving-average and the
clockwork RSSM of Rose's fork (github.com/rosea-tf/planet; spec ``planet.md`` 3.2; issue 14).

The fork's test scores at its full budget (pixels, 1000 episodes, last-10 mean): base RSSM about 560-650,
moving-average RSSM about 190-340, clockwork RSSM about 575-595.

Two budgets, the same for the three models but their transition model:

- ``--budget session`` (default): ``sb3_mb/CheetahRun-v0`` **from state** (17-D, action repeat 4, 250 agent
  steps an episode), the session sizes of ``planet_learning.py`` (belief 64, state 16, hidden 64, MLP
  encoder / decoder 64, reward head 2 x 64, batch 32 x 30, 50 updates an episode, 5 seed episodes) and a
  cheaper planner, CEM horizon 12 / 100 candidates / top 10 / ``--cem-iterations`` (3) iterations.
  Moving average: ``transition_model="rssm_ma"`` at the fork's ``ma_ppn = ma_alpha = 0.25`` (slow part
  belief 16 / state 4). Clockwork: two cells of belief 32 / state 8, ``cw_tau=(1, 4)`` (the fork's 2 x
  100 / 15 against its 200 / 30 base: the same total size), no ``cell_as_prior``.
- ``--budget paper``: the camera-ready sizes (belief 200, state 30, hidden 200; clockwork 2 x 100 / 15,
  hidden 100 as the fork's), the fork's protocol (batch 8 x 50, reward head 2 x 100, discount 0.99, Adam's
  rate warmed up over 10k updates, 100 updates an episode), the paper's CEM 12 / 1000 / 100 / 10,
  1000 episodes. Needs a GPU::

      python benchmarks/planet_variants.py --budget paper --episodes 1000 --eval-every 50 --device cuda

Each run is evaluated (deterministic policy, ``--eval-episodes`` episodes, one vectorised call) every
``--eval-every`` episodes (0: at the end only); the training episodes' returns (with exploration noise)
are kept too. Usage (session budget, 3 models x 3 seeds)::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 MUJOCO_GL=egl python benchmarks/planet_variants.py

Writes ``benchmarks/results/planet_variants_cheetah.json`` after every run (``--resume`` skips the runs
already there).
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
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_mb import PlaNet

SESSION_KWARGS = dict(batch_size=32, sequence_length=30, seed_episodes=5, updates_per_episode=50)
SESSION_POLICY = dict(
    belief_size=64,
    state_size=16,
    hidden_size=64,
    planning_horizon=12,
    n_candidates=100,
    n_elites=10,
    mlp_hidden_sizes=(64,),
    reward_hidden_sizes=(64, 64),
)
PAPER_KWARGS = dict(
    batch_size=8, sequence_length=50, seed_episodes=5, updates_per_episode=100, learning_rate_warmup=10_000
)
PAPER_POLICY = dict(reward_hidden_sizes=(100, 100), discount=0.99)

# The three transition models over the budget's sizes (belief, state, hidden of the base).
VARIANTS = ("rssm", "rssm_ma", "clockwork")


def variant_policy(variant: str, budget: str, cem_iterations: int) -> dict:
    """``policy_kwargs`` of one transition model at one budget."""
    if budget == "session":
        policy = dict(SESSION_POLICY, n_iterations=cem_iterations)
        belief, state, hidden = 64, 16, 64
    else:
        policy = dict(PAPER_POLICY)
        belief, state, hidden = 200, 30, 200
    if variant == "rssm_ma":
        policy.update(transition_model="rssm_ma", ma_ppn=0.25, ma_alpha=0.25)
    elif variant == "clockwork":
        cell_hidden = hidden if budget == "session" else 100  # the fork's clockwork preset: hidden 100
        halves = dict(belief_size=(belief // 2,) * 2, state_size=(state // 2,) * 2)
        policy.update(halves, hidden_size=cell_hidden, cw_tau=(1, 4))
    elif variant != "rssm":
        raise ValueError(f"unknown variant {variant!r}; choose from {VARIANTS}")
    return policy


def evaluate(model: PlaNet, eval_env, n_episodes: int, episodes: int, timesteps: int) -> dict:
    mean, std = evaluate_policy(model, eval_env, n_eval_episodes=n_episodes)
    print(f"    episode {episodes:4d}: eval return {mean:7.1f} +- {std:5.1f}", flush=True)
    return dict(episodes=episodes, timesteps=timesteps, mean_return=float(mean), std_return=float(std))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="sb3_mb/CheetahRun-v0")
    parser.add_argument("--budget", choices=("session", "paper"), default="session")
    parser.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--episodes", type=int, default=12, help="training episodes, seed episodes included")
    parser.add_argument("--eval-every", type=int, default=0, help="0: evaluate at the end only")
    parser.add_argument("--eval-episodes", type=int, default=3)
    parser.add_argument("--cem-iterations", type=int, default=3, help="session budget (paper: 10)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--resume", action="store_true", help="skip the runs already in --output")
    parser.add_argument(
        "--output",
        default=os.path.join(os.path.dirname(__file__), "results", "planet_variants_cheetah.json"),
    )
    args = parser.parse_args()
    if "OMP_NUM_THREADS" in os.environ:
        th.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

    results = {
        "env": args.env,
        "budget": args.budget,
        "threads": th.get_num_threads(),
        "torch": th.__version__,
        "machine": platform.processor() or platform.machine(),
        "runs": {},
    }
    if args.resume and os.path.exists(args.output):
        with open(args.output) as file:
            results["runs"] = json.load(file)["runs"]
    # Seed-major: after each seed the three models have the same number of runs.
    for seed in args.seeds:
        for variant in args.variants:
            key = f"{variant}/seed{seed}"
            if key in results["runs"]:
                continue
            env = make_vec_env(args.env, n_envs=1, seed=seed)
            eval_env = make_vec_env(args.env, n_envs=args.eval_episodes, seed=seed + 1000)
            episode_length = env.envs[0].spec.max_episode_steps
            kwargs = dict(SESSION_KWARGS if args.budget == "session" else PAPER_KWARGS)
            if args.budget == "paper":
                kwargs["buffer_size"] = args.episodes * (episode_length + 1)
            policy_kwargs = variant_policy(variant, args.budget, args.cem_iterations)
            print(f"{key}: {policy_kwargs}", flush=True)
            model = PlaNet(
                "MlpPolicy", env, seed=seed, device=args.device, policy_kwargs=policy_kwargs, **kwargs
            )
            evaluations: list[dict] = []
            start = time.perf_counter()
            chunks = (
                [args.episodes]
                if args.eval_every <= 0
                else list(range(args.eval_every, args.episodes, args.eval_every)) + [args.episodes]
            )
            done = 0
            for episodes in chunks:
                model.learn((episodes - done) * episode_length, reset_num_timesteps=done == 0)
                done = episodes
                evaluations.append(
                    evaluate(model, eval_env, args.eval_episodes, model._episode_num, model.num_timesteps)
                )
            wall = time.perf_counter() - start
            train_returns = [float(info["r"]) for info in model.ep_info_buffer]
            results["runs"][key] = dict(
                variant=variant,
                seed=seed,
                episodes=args.episodes,
                episode_length=episode_length,
                evaluations=evaluations,
                final_return=evaluations[-1]["mean_return"],
                train_returns=train_returns,
                wall_seconds=wall,
                peak_rss_mb=peak_rss_mb(),  # this process's peak so far (its earlier runs included)
                kwargs=kwargs,
                policy_kwargs=policy_kwargs,
            )
            print(
                f"  {key}: final {evaluations[-1]['mean_return']:.1f}, last training episodes "
                f"{np.round(train_returns[-3:], 1).tolist()}, {wall:.0f} s",
                flush=True,
            )
            os.makedirs(os.path.dirname(args.output), exist_ok=True)
            with open(args.output, "w") as file:
                json.dump(results, file, indent=2, default=str)

    summary = {}
    for variant in args.variants:
        finals = [r["final_return"] for r in results["runs"].values() if r["variant"] == variant]
        if finals:
            summary[variant] = dict(mean=float(np.mean(finals)), min=min(finals), max=max(finals))
    results["summary"] = summary
    with open(args.output, "w") as file:
        json.dump(results, file, indent=2, default=str)
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
