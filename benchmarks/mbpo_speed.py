"""Wall time per environment step of MBPO vs SB3 SAC doing the same number of gradient updates.

Both run in this process on Pendulum-v1, after the same warm-up (``--learning-starts`` random steps, not
timed), for ``--steps`` timed env steps. MBPO uses its defaults (20 SAC updates per env step, 7x(4x200) SiLU
ensemble retrained every 250 steps with early stopping, 400 model rollouts per env step), except
``epoch_length`` / schedules that do not change the work per step. SAC uses ``gradient_steps=20`` (same
number of updates, same batch size and networks). Reported:

- ``ms_per_step`` of each and ``ratio = mbpo / sac``;
- ``overhead = (mbpo - sac) / sac``: the extra cost of model training and rollouts relative to the SAC
  updates (the goal "<= 0.5" reads as this overhead);
- MBPO's split: time in model training, in rollouts (from the logger's ``time/model_train_s``,
  ``time/rollout_s``) and in SAC updates;
- how close model training runs to the machine's limit: after the timed run, the ensemble trains
  ``--efficiency-epochs`` more epochs on the run's real data; its FLOPs (counted from the layer sizes:
  forward + two backward matmuls per training example and member, one forward per holdout example) per
  second, against a plain float32 matmul's in the same process. A fraction near 1 means the remaining
  overhead can only shrink by doing less work (fewer epochs, a smaller ensemble), not by vectorising.

Usage::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/mbpo_speed.py [--steps 1000] [--device cpu]

Writes ``benchmarks/results/mbpo_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch as th
from planner_speed import matmul_flops_per_second  # benchmarks/ is the script's directory
from stable_baselines3 import SAC
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

from sb3_mb import MBPO
from sb3_mb.common.ensemble import EnsembleLinear

RESULTS = os.path.join(os.path.dirname(__file__), "results", "mbpo_speed.json")


class StepTimer(BaseCallback):
    """Wall-clock time from the first step after ``learning_starts`` to the end of training."""

    def __init__(self, learning_starts: int):
        super().__init__()
        self.learning_starts = learning_starts
        self.start: float | None = None
        self.model_train_s = 0.0
        self.rollout_s = 0.0

    def _on_step(self) -> bool:
        if self.start is None and self.num_timesteps > self.learning_starts:
            self.start = time.perf_counter()
        return True

    def _on_rollout_start(self) -> None:
        values = self.model.logger.name_to_value
        if self.start is not None:
            # MBPO records these once per model training; read and clear them so each counts once.
            self.model_train_s += values.pop("time/model_train_s", 0.0)
            self.rollout_s += values.pop("time/rollout_s", 0.0)


def timed(model, learning_starts: int, steps: int) -> tuple[float, StepTimer]:
    timer = StepTimer(learning_starts)
    model.learn(learning_starts + steps + 1, callback=timer)
    assert timer.start is not None
    return time.perf_counter() - timer.start, timer


def model_training_flops_per_second(model: MBPO, epochs: int) -> tuple[float, int]:
    """FLOP/s of ``epochs`` epochs of the ensemble's training on ``model``'s real data (and epochs run)."""
    obs, actions, next_obs, rewards = model.replay_buffer.real_transitions()
    ensemble = model.dynamics
    inputs, targets = ensemble.inputs(obs, actions), ensemble.targets(obs, next_obs, rewards)
    trainer = model.dynamics_trainer
    # Multiply-accumulates of one member's forward pass on one example.
    macs = sum(m.in_features * m.out_features for m in ensemble.modules() if isinstance(m, EnsembleLinear))
    n = inputs.shape[0]
    n_holdout = min(int(n * trainer.holdout_ratio), trainer.max_holdout)
    start = time.perf_counter()
    result = trainer.train(inputs, targets, max_epochs=epochs, generator=th.Generator().manual_seed(0))
    seconds = time.perf_counter() - start
    members = ensemble.ensemble_size
    per_epoch = members * 2 * macs * (3 * (n - n_holdout) + n_holdout)  # train: fwd + 2 bwd; holdout: fwd
    flops = per_epoch * result.n_epochs + members * 2 * macs * n_holdout  # + the final holdout pass
    return flops / seconds, result.n_epochs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--learning-starts", type=int, default=1000)
    parser.add_argument("--updates", type=int, default=20, help="SAC updates per env step (MBPO default 20)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--efficiency-epochs", type=int, default=10)
    args = parser.parse_args()
    th.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    common = dict(learning_starts=args.learning_starts, device=args.device, seed=args.seed)
    mbpo = MBPO(
        "MlpPolicy",
        make_vec_env("Pendulum-v1", n_envs=1, seed=args.seed),
        gradient_steps=args.updates,
        **common,
    )
    mbpo_s, timer = timed(mbpo, args.learning_starts, args.steps)
    sac = SAC(
        "MlpPolicy",
        make_vec_env("Pendulum-v1", n_envs=1, seed=args.seed),
        gradient_steps=args.updates,
        **common,
    )
    sac_s, _ = timed(sac, args.learning_starts, args.steps)

    model_s = timer.model_train_s + timer.rollout_s
    train_flops, efficiency_epochs = model_training_flops_per_second(mbpo, args.efficiency_epochs)
    matmul_flops = matmul_flops_per_second(th.device(args.device))
    out = {
        "env": "Pendulum-v1",
        "device": args.device,
        "threads": th.get_num_threads(),
        "torch": th.__version__,
        "machine": platform.machine(),
        "timed_env_steps": args.steps,
        "learning_starts": args.learning_starts,
        "sac_updates_per_step": args.updates,
        "mbpo_ms_per_step": 1000 * mbpo_s / args.steps,
        "sac_ms_per_step": 1000 * sac_s / args.steps,
        "ratio_mbpo_over_sac": mbpo_s / sac_s,
        "overhead_model_over_sac": (mbpo_s - sac_s) / sac_s,
        "mbpo_model_train_ms_per_step": 1000 * timer.model_train_s / args.steps,
        "mbpo_rollout_ms_per_step": 1000 * timer.rollout_s / args.steps,
        "mbpo_sac_updates_ms_per_step": 1000 * (mbpo_s - model_s) / args.steps,
        "mbpo_model_trainings": mbpo._model_train_count,
        "model_train_gflops": train_flops / 1e9,
        "matmul_gflops": matmul_flops / 1e9,
        "model_train_fraction_of_matmul": train_flops / matmul_flops,
        "efficiency_epochs": efficiency_epochs,
    }
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        json.dump(out, f, indent=2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
