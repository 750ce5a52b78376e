"""Wall time per environment step of STEVE vs SB3 DDPG doing the same number of gradient updates.

Both run in this process on ``--env`` (Pendulum-v1) after the same random warm-up (``--learning-starts``
steps, not timed) and STEVE's one-off world-model pretraining (not timed: the clock starts after the first
``train`` call), for ``--steps`` timed env steps. Configurations (``--config``):

- ``paper``: STEVE's constructor defaults (the paper's, Buckman et al. 2018): 4 value updates and 4
  world-model updates per env step, batch 512, policy / Q ``3 x 128``, ``L = 4`` Q members, transition
  ``4 x (7 x 512)``, reward and done ``4 x (3 x 128)``, horizon 3 (64 samples per candidate);
- ``zoo``: the ``hyperparams/steve.yml`` entry of the env (reduced sizes for a CPU).

DDPG (SB3) uses the same number of gradient updates per env step, batch size, policy / Q hidden sizes, a
single critic and no model. Reported: ``ms_per_step`` of each, ``ratio = steve / ddpg`` (the price of the
expansion: ensembles, model learning and ``H`` model steps per target) and STEVE's split measured on the
trained agent: one world-model update, one expansion pass (targets of a batch), one value update.

Usage::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/steve_speed.py --config paper --steps 30
    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/steve_speed.py --config zoo --steps 300

Writes ``benchmarks/results/steve_speed.json`` (one entry per configuration, merged with the file).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch as th
from stable_baselines3 import DDPG
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

from sb3_mb import STEVE
from zoo.hyperparams import load_hyperparams

RESULTS = os.path.join(os.path.dirname(__file__), "results", "steve_speed.json")


class StepTimer(BaseCallback):
    """Wall-clock time from the env step after the first ``train`` call to the end of training."""

    def __init__(self, learning_starts: int):
        super().__init__()
        self.learning_starts = learning_starts
        self.start: float | None = None
        self.start_step = 0

    def _on_step(self) -> bool:
        if self.start is None and self.num_timesteps > self.learning_starts + 1:
            self.start, self.start_step = time.perf_counter(), self.num_timesteps
        return True


def timed(model, learning_starts: int, steps: int) -> float:
    """Seconds per timed env step."""
    timer = StepTimer(learning_starts)
    model.learn(learning_starts + steps + 2, callback=timer)
    assert timer.start is not None
    return (time.perf_counter() - timer.start) / (model.num_timesteps - timer.start_step)


def per_call(fn, n: int = 5) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", choices=["paper", "zoo"], default="paper")
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--learning-starts", type=int, default=1000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    th.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    kwargs = {} if args.config == "paper" else load_hyperparams("steve", args.env)
    kwargs.update(learning_starts=args.learning_starts, device=args.device, seed=args.seed)
    kwargs.setdefault("model_pretrain_steps", 10_000)
    kwargs["model_pretrain_steps"] = min(kwargs["model_pretrain_steps"], 100)  # not timed; keep it short
    steve = STEVE("MlpPolicy", make_vec_env(args.env, n_envs=1, seed=args.seed), **kwargs)
    steve_s = timed(steve, args.learning_starts, args.steps)

    net_arch = steve.policy.net_arch
    ddpg = DDPG(
        "MlpPolicy",
        make_vec_env(args.env, n_envs=1, seed=args.seed),
        learning_rate=steve.learning_rate,
        batch_size=steve.batch_size,
        gradient_steps=steve.gradient_steps,
        learning_starts=args.learning_starts,
        policy_kwargs=dict(net_arch=list(net_arch)),
        device=args.device,
        seed=args.seed,
    )
    ddpg_s = timed(ddpg, args.learning_starts, args.steps)

    assert steve.replay_buffer is not None
    batch = steve.replay_buffer.sample(steve.batch_size)
    split = {
        "world_model_update_ms": 1000 * per_call(lambda: steve.train_world_model(1)),
        "expansion_pass_ms": 1000 * per_call(lambda: steve.expansion(batch)),
    }
    model_updates_per_step = steve.model_gradient_steps
    steve.model_gradient_steps, steve._model_pretrained = 0, True
    split["value_update_ms"] = 1000 * per_call(lambda: steve.train(1, steve.batch_size))

    entry = {
        "env": args.env,
        "device": args.device,
        "threads": th.get_num_threads(),
        "torch": th.__version__,
        "machine": platform.machine(),
        "timed_env_steps": args.steps,
        "learning_starts": args.learning_starts,
        "updates_per_step": steve.gradient_steps,
        "model_updates_per_step": model_updates_per_step,
        "batch_size": steve.batch_size,
        "kwargs": {k: v for k, v in kwargs.items() if k != "device"},
        "steve_ms_per_step": 1000 * steve_s,
        "ddpg_ms_per_step": 1000 * ddpg_s,
        "ratio_steve_over_ddpg": steve_s / ddpg_s,
        "steve_split": split,
    }
    results = {}
    if os.path.exists(RESULTS):
        with open(RESULTS) as f:
            results = json.load(f)
    results[args.config] = entry
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        json.dump(results, f, indent=2, default=str)
    print(json.dumps(entry, indent=2, default=str))


if __name__ == "__main__":
    main()
