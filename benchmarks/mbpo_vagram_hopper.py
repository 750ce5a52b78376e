"""VaGraM vs MLE (and the other model losses) on Hopper with distracting dimensions / small models.

The claim of Voelcker et al. 2022 (arXiv:2204.01464) is that VaGraM beats MLE on Hopper with D = 5-15
distracting dimensions (``sb3_mb/HopperDistracted{D}-v0``) and with small models (2-3 hidden layers of 64).

Paper budget (``--paper``), the distracted-Hopper run of the paper's released configuration: 500 000 env
steps (its scripts' budget; its configuration says 125 000), 10 000 initial exploration steps, epoch 1000,
rollout length 1 (``(20, 150, 1, 1)``), model-data ratio ``(0, 50, 0, 0.95)``, 20 SAC updates per step,
actor lr 3e-5, critic / alpha lr 3e-4, target update every 4 updates, target entropy -1, SAC nets 2x1024
with log-std in ``[-5, 2]``, model batch 1024 (VaGraM) / 256 (MLE), 7 members / 5 elites, patience 10;
one evaluation episode per epoch. With ``--distractors 0`` (the capacity experiments) MBPO's Hopper
instead: rollout schedule ``(20, 150, 1, 5)`` and model-data ratio ``(0, 20, 0, 0.95)``::

    python benchmarks/mbpo_vagram_hopper.py --paper --loss vagram --distractors 10 --seed 0
    python benchmarks/mbpo_vagram_hopper.py --paper --loss nll --distractors 10 --seed 0
    python benchmarks/mbpo_vagram_hopper.py --paper --loss vagram --distractors 0 \\
        --n-layers 2 --hidden-size 64
    python benchmarks/mbpo_vagram_hopper.py --paper --loss nll --distractors 0 \\
        --n-layers 2 --hidden-size 64

Without ``--paper`` the run is a reduced budget that fits one session on a CPU (``--steps``,
``--learning-starts``, ``--updates``, ``--net``, ``--epoch-length``); the rollout length stays 1 and the
model-data ratio ramps over ``--ratio-epochs`` epochs.

Writes ``benchmarks/results/mbpo_vagram_hopper/<loss>_D<d>_<layers>x<hidden>_s<seed>.json`` with the
evaluation curve.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch as th
from measure import peak_rss_mb  # benchmarks/ is the script's directory
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy

from sb3_mb import MBPO
from sb3_mb.mbpo import MODEL_LOSSES

RESULTS_DIR = os.path.join(os.path.dirname(__file__), "results", "mbpo_vagram_hopper")


class EvalEvery(BaseCallback):
    def __init__(self, eval_env, eval_freq: int, n_episodes: int):
        super().__init__()
        self.eval_env, self.eval_freq, self.n_episodes = eval_env, eval_freq, n_episodes
        self.curve: list[tuple[int, float, float]] = []
        self.start = time.perf_counter()

    def _on_step(self) -> bool:
        if self.num_timesteps % self.eval_freq == 0:
            mean_return, _ = evaluate_policy(self.model, self.eval_env, n_eval_episodes=self.n_episodes)
            self.curve.append((self.num_timesteps, float(mean_return), time.perf_counter() - self.start))
            print(f"step {self.num_timesteps}: return {mean_return:.1f}", flush=True)
        return True


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--loss", default="vagram", choices=MODEL_LOSSES)
    parser.add_argument("--distractors", type=int, default=10, choices=[0, 5, 10, 15])
    parser.add_argument("--n-layers", type=int, default=4)
    parser.add_argument("--hidden-size", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--paper", action="store_true", help="the paper's budget and hyper-parameters")
    parser.add_argument("--steps", type=int, default=5000)
    parser.add_argument("--learning-starts", type=int, default=1000)
    parser.add_argument("--epoch-length", type=int, default=250)
    parser.add_argument("--updates", type=int, default=5)
    parser.add_argument("--net", type=int, default=256)
    parser.add_argument("--rollouts-per-step", type=int, default=100)
    parser.add_argument("--ratio-epochs", type=int, default=4)
    parser.add_argument("--eval-episodes", type=int, default=3)
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    th.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    env_id = "Hopper-v5" if args.distractors == 0 else f"sb3_mb/HopperDistracted{args.distractors}-v0"
    if args.paper:
        steps, epoch = 500_000, 1000
        kwargs = dict(
            learning_starts=10_000,
            epoch_length=epoch,
            rollout_schedule=(20, 150, 1, 1) if args.distractors else (20, 150, 1, 5),
            model_data_ratio_schedule=(0, 50, 0.0, 0.95) if args.distractors else (0, 20, 0.0, 0.95),
            gradient_steps=20,
            actor_learning_rate=3e-5,
            target_update_interval=4,
            target_entropy=-1.0,
            model_batch_size=1024 if args.loss != "nll" else 256,
            n_rollouts_per_step=400,
        )
        policy_kwargs = dict(net_arch=[1024, 1024], log_std_bounds=(-5, 2))
        eval_episodes = 1
    else:
        steps, epoch = args.steps, args.epoch_length
        kwargs = dict(
            learning_starts=args.learning_starts,
            epoch_length=epoch,
            rollout_schedule=(0, 1, 1, 1),
            model_data_ratio_schedule=(0, args.ratio_epochs, 0.0, 0.95),
            gradient_steps=args.updates,
            target_entropy=-1.0,
            n_rollouts_per_step=args.rollouts_per_step,
            model_max_epochs=50,
        )
        policy_kwargs = dict(net_arch=[args.net, args.net])
        eval_episodes = args.eval_episodes
    policy_kwargs.update(model_net_arch=[args.hidden_size] * args.n_layers)
    kwargs.update(model_loss=args.loss, device=args.device, policy_kwargs=policy_kwargs)

    env = make_vec_env(env_id, n_envs=1, seed=args.seed)
    eval_env = make_vec_env(env_id, n_envs=1, seed=10_000 + args.seed)
    model = MBPO("MlpPolicy", env, seed=args.seed, **kwargs)
    callback = EvalEvery(eval_env, epoch, eval_episodes)
    start = time.perf_counter()
    model.learn(steps, callback=callback)
    out = {
        "env": env_id,
        "loss": args.loss,
        "distractors": args.distractors,
        "n_layers": args.n_layers,
        "hidden_size": args.hidden_size,
        "seed": args.seed,
        "paper_budget": args.paper,
        "steps": steps,
        "kwargs": kwargs,
        "wall_s": time.perf_counter() - start,
        "peak_rss_mb": peak_rss_mb(),
        "device": str(model.device),
        "threads": th.get_num_threads(),
        "machine": platform.machine(),
        "final_return": callback.curve[-1][1] if callback.curve else None,
        "best_return": max(c[1] for c in callback.curve) if callback.curve else None,
        "curve": callback.curve,
    }
    os.makedirs(RESULTS_DIR, exist_ok=True)
    name = f"{args.loss}_D{args.distractors}_{args.n_layers}x{args.hidden_size}_s{args.seed}.json"
    with open(os.path.join(RESULTS_DIR, name), "w") as f:
        json.dump(out, f, indent=2)
    print(json.dumps({k: v for k, v in out.items() if k != "curve"}, indent=2))


if __name__ == "__main__":
    main()
