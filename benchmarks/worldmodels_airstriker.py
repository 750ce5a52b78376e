"""The Sonic stack on Airstriker: World Models + PPO (wassname's Sonic fork, with and without curiosity)
against SB3's PPO on pixels, at the same env steps, on one thread.

``sb3_mb/AirstrikerContest-v0`` runs the Retro-contest chain of the Sonic envs (10 button combos, sticky frame
skip 4, reward x 0.005) on Airstriker, whose ROM ships with stable-retro; frames at ``--size`` x ``--size``
RGB, episodes cut at ``--episode-steps``. Three agents, each for ``--steps`` env steps per seed, one env:

- ``WorldModelsPPO``: PPO on ``[z, c]`` of a jointly trained world model (VAE5, MDN-RNN, inverse model; the
  sizes scaled down for a CPU, ``WM_POLICY_KWARGS``), the world model updated once per rollout at
  ``--world-model-lr``, no curiosity;
- the same with the curiosity reward (``--curiosity-weight``, boredom 1 std) added to the game's reward;
- SB3 ``PPO("CnnPolicy")`` (NatureCNN) on the same frames.

All three use the same PPO settings: ``WorldModelsPPO``'s defaults (the fork's no-curiosity config: Adam 1e-4,
clip 0.1 for policy and value, entropy 0.02, gamma 0.99, GAE 0.95, 3 epochs) with ``n_steps`` 256 and
minibatches of 64. Reported per agent: the game's return (without curiosity) of the last 10 training
episodes (Monitor), and of ``--eval-episodes`` episodes after training (sampled actions, same env); the
uniformly random policy as reference. stable-retro runs one emulator per process, so each agent's env is
closed before the next.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/worldmodels_airstriker.py

Writes ``benchmarks/results/worldmodels_airstriker.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch as th
from measure import peak_rss_mb  # benchmarks/ is the script's directory
from stable_baselines3 import PPO
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor

import sb3_mb  # noqa: F401  (registers the envs)
from sb3_mb import WorldModelsPPO

RESULTS = Path(__file__).parent / "results"

#: The fork's VAE5 / MDN-RNN scaled down for a CPU (the fork: 128x128, z 512, LSTM 1024, 5 Gaussians).
WM_POLICY_KWARGS = dict(
    z_dim=32,
    hidden_size=64,
    n_mixtures=2,
    vae_channels=(16, 32, 32),
    stem_channels=16,
    bottleneck_channels=16,
    inverse_hidden_size=32,
)
PPO_SETTINGS = dict(n_steps=256, batch_size=64)


def make_env(args: argparse.Namespace) -> gym.Env:
    return Monitor(
        gym.make(
            "sb3_mb/AirstrikerContest-v0", size=(args.size, args.size), max_episode_steps=args.episode_steps
        )
    )


class RandomPolicy:
    def __init__(self, action_space):
        self.action_space = action_space

    def predict(self, observation, state=None, episode_start=None, deterministic=False):
        return np.array([self.action_space.sample()]), None


def build(name: str, env: gym.Env, args: argparse.Namespace, seed: int):
    if name == "PPO (pixels)":
        # the fork's PPO settings (WorldModelsPPO's defaults) for SB3's PPO too
        return PPO(
            "CnnPolicy",
            env,
            learning_rate=1e-4,
            n_epochs=3,
            clip_range=0.1,
            clip_range_vf=0.1,
            ent_coef=0.02,
            seed=seed,
            device="cpu",
            **PPO_SETTINGS,
        )
    curiosity = args.curiosity_weight if name == "World Models + PPO, curiosity" else 0.0
    return WorldModelsPPO(
        "CnnPolicy",
        env,
        world_model_learning_rate=args.world_model_lr,
        curiosity_weight=curiosity,
        policy_kwargs=dict(image_size=args.size, **WM_POLICY_KWARGS),
        seed=seed,
        device="cpu",
        **PPO_SETTINGS,
    )


def run(name: str, args: argparse.Namespace, seed: int) -> dict:
    env = make_env(args)
    try:
        start = time.perf_counter()
        if name == "random":
            model, train_s = RandomPolicy(env.action_space), 0.0
            env.action_space.seed(seed)
        else:
            model = build(name, env, args, seed)
            model.learn(args.steps)
            train_s = time.perf_counter() - start
        training = [float(r) for r in env.get_episode_rewards()]
        eval_env = model.get_env() if name != "random" else env
        returns, lengths = evaluate_policy(
            model,
            eval_env,
            n_eval_episodes=args.eval_episodes,
            deterministic=False,
            return_episode_rewards=True,
        )
        return {
            "train_seconds": train_s,
            "peak_rss_mb": peak_rss_mb(),  # this process's peak so far (its earlier runs included)
            "env_steps_per_second": args.steps / train_s if train_s else None,
            "training_episodes": len(training),
            "last_10_training_return": float(np.mean(training[-10:])) if training else None,
            "eval_return_mean": float(np.mean(returns)),
            "eval_return_std": float(np.std(returns)),
            "eval_returns": [float(r) for r in returns],
            "eval_lengths": [int(n) for n in lengths],
        }
    finally:
        env.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--episode-steps", type=int, default=1000)
    parser.add_argument("--world-model-lr", type=float, default=1e-4)
    parser.add_argument("--curiosity-weight", type=float, default=0.01)
    parser.add_argument("--eval-episodes", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument(
        "--agents",
        nargs="+",
        default=["World Models + PPO", "World Models + PPO, curiosity", "PPO (pixels)", "random"],
    )
    args = parser.parse_args()
    th.set_num_threads(1)
    total = time.perf_counter()
    results: dict = {name: {} for name in args.agents}
    for seed in args.seeds:
        for name in args.agents:
            results[name][f"seed {seed}"] = run(name, args, seed)
            print(name, seed, json.dumps(results[name][f"seed {seed}"]), flush=True)
    result = {
        "env": "sb3_mb/AirstrikerContest-v0",
        "settings": vars(args),
        "world_model_policy_kwargs": WM_POLICY_KWARGS,
        "ppo_settings": PPO_SETTINGS,
        "command": "python benchmarks/worldmodels_airstriker.py " + " ".join(sys.argv[1:]),
        "seconds": time.perf_counter() - total,
        "results": results,
    }
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "worldmodels_airstriker.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
