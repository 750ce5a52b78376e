"""Wall time per environment step of MBPO vs SB3 SAC doing the same number of gradient updates.

Every configuration runs on Pendulum-v1, in its own child process (so that its peak RSS is its own), after
the same warm-up (``--learning-starts`` random steps, not timed), for ``--steps`` timed env steps:

- ``sac``: SB3 SAC with ``gradient_steps=20`` (the same number of updates, batch size and networks);
- ``mbpo_sb3``: MBPO with SB3's ``SAC.train`` for its updates and the ensemble trainer's reference step
  (``fused_update=False``), the "before";
- ``mbpo_fused``: MBPO's default, the fused update (:class:`sb3_mb.common.sac_update.FusedSACUpdate`) and the
  ensemble trainer's fused step (:class:`sb3_mb.common.ensemble.EnsembleTrainer`, ``fused=True``);
- ``mbpo_compiled``: the fused update with ``compile=True`` (``torch.compile``, mode ``"default"``).

MBPO uses its defaults (20 SAC updates per env step, 7x(4x200) SiLU ensemble retrained every 250 steps with
early stopping, 400 model rollouts per env step). Reported per configuration:

- ``ms_per_step`` (wall) and ``cpu_ms_per_step`` (this process's CPU time: less sensitive to other jobs on
  a shared machine), and their ratios to ``sac``'s (the goal: MBPO <= 0.5 x SAC);
- the SAC update phase: the first call's seconds (``update_first_call_s``: warm-up, with compilation for
  ``mbpo_compiled``) and the mean of the later calls (``update_ms_per_call``, 20 updates each);
- MBPO's split: time in model training, in rollouts (from the logger's ``time/model_train_s``,
  ``time/rollout_s``) and in the rest (SAC updates and the env step);
- ``peak_rss_mb``: the child's peak resident memory (``peak_rss_children_mb``: the largest of its own
  children's, torch.compile's compiler workers); ``load_before`` / ``load_after``: the 1-minute load
  average when it started and ended (the machine is shared);
- ``model_train_ms_per_epoch``: model training time per epoch (early stopping decides the epochs);
- for ``mbpo_sb3`` and ``mbpo_fused``: how close model training runs to the machine's limit: after the
  timed run, the ensemble trains ``--efficiency-epochs`` more epochs on the run's real data; its FLOPs
  (counted from the layer sizes: forward + two backward matmuls per training example and member, one
  forward per holdout example) per second, against a plain float32 matmul's in the same process (a 2048
  square one, and one of a hidden layer's shape at the training batch).

Usage::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/mbpo_speed.py [--steps 500] [--learning-starts 500]
        [--configs sac,mbpo_sb3,mbpo_fused,mbpo_compiled] [--device cpu]

Writes ``benchmarks/results/mbpo_speed_compiled.json`` (``--output``); ``mbpo_speed.json`` holds the runs
before the fused update.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time

import torch as th
from measure import matmul_flops_per_second, peak_rss_mb  # benchmarks/ is the script's directory
from stable_baselines3 import SAC
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.env_util import make_vec_env

from sb3_mb import MBPO
from sb3_mb.common.ensemble import EnsembleLinear

RESULTS = os.path.join(os.path.dirname(__file__), "results", "mbpo_speed_compiled.json")
CONFIGS = ("sac", "mbpo_sb3", "mbpo_fused", "mbpo_compiled")
MBPO_FLAGS = {
    "mbpo_sb3": dict(fused_update=False),
    "mbpo_fused": dict(fused_update=True, compile=False),
    "mbpo_compiled": dict(fused_update=True, compile=True),
}


class StepTimer(BaseCallback):
    """Wall-clock time from the first step after ``learning_starts`` to the end of training."""

    def __init__(self, learning_starts: int):
        super().__init__()
        self.learning_starts = learning_starts
        self.start: float | None = None
        self.cpu_start = 0.0
        self.model_train_s = 0.0
        self.model_epochs = 0
        self.rollout_s = 0.0

    def _on_step(self) -> bool:
        if self.start is None and self.num_timesteps > self.learning_starts:
            self.start, self.cpu_start = time.perf_counter(), time.process_time()
        return True

    def _on_rollout_start(self) -> None:
        values = self.model.logger.name_to_value
        if self.start is not None:
            # MBPO records these once per model training; read and clear them so each counts once.
            if "time/model_train_s" in values:
                self.model_epochs += int(values.get("model/n_epochs", 0))
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


class CallTimer:
    """Wraps a method: seconds of its first call and of each later one (the SAC update phase)."""

    def __init__(self, method):
        self.method, self.calls = method, []

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        out = self.method(*args, **kwargs)
        self.calls.append(time.perf_counter() - start)
        return out


def run_config(name: str, args: argparse.Namespace) -> dict:
    """One configuration in this process (a child of :func:`main`)."""
    th.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    load_before = os.getloadavg()[0]
    common = dict(learning_starts=args.learning_starts, device=args.device, seed=args.seed)
    env = make_vec_env("Pendulum-v1", n_envs=1, seed=args.seed)
    if name == "sac":
        model = SAC("MlpPolicy", env, gradient_steps=args.updates, **common)
        update_timer = model.train = CallTimer(model.train)
    else:
        model = MBPO("MlpPolicy", env, gradient_steps=args.updates, **MBPO_FLAGS[name], **common)
        if name == "mbpo_sb3":  # MBPO.train -> SAC.train (super()), timed where MBPO's own method is not
            update_timer = CallTimer(SAC.train)
            SAC.train = lambda self, *a, **k: update_timer(self, *a, **k)  # this child process only
        else:
            update_timer = model._train_fused_sac = CallTimer(model._train_fused_sac)
    seconds, timer = timed(model, args.learning_starts, args.steps)
    cpu_seconds = time.process_time() - timer.cpu_start
    calls = update_timer.calls
    later_mean = sum(calls[1:]) / max(len(calls) - 1, 1)
    out = {
        "ms_per_step": 1000 * seconds / args.steps,
        "cpu_ms_per_step": 1000 * cpu_seconds / args.steps,
        # The first update call's excess over a later one (compilation for mbpo_compiled) taken out.
        "ms_per_step_after_warmup": 1000 * (seconds - calls[0] + later_mean) / args.steps,
        "update_first_call_s": calls[0],
        "update_ms_per_call": 1000 * later_mean,
        "update_calls": len(calls),
    }
    if name != "sac":
        model_s = timer.model_train_s + timer.rollout_s
        out.update(
            model_train_ms_per_step=1000 * timer.model_train_s / args.steps,
            # Early stopping decides the epochs (67-334 ms per env step for the same settings): per epoch
            # is the comparable figure.
            model_train_epochs=timer.model_epochs,
            model_train_ms_per_epoch=1000 * timer.model_train_s / max(timer.model_epochs, 1),
            rollout_ms_per_step=1000 * timer.rollout_s / args.steps,
            rest_ms_per_step=1000 * (seconds - model_s) / args.steps,
            model_trainings=model._model_train_count,
        )
    if name in ("mbpo_sb3", "mbpo_fused") and args.efficiency_epochs > 0:  # reference and fused ensemble step
        train_flops, epochs = model_training_flops_per_second(model, args.efficiency_epochs)
        matmul_flops = matmul_flops_per_second(th.device(args.device))
        hidden = model.dynamics.hidden_layers[-1].out_features
        layer_flops = matmul_flops_per_second(args.device, shape=(model.model_batch_size, hidden, hidden))
        out.update(
            model_train_gflops=train_flops / 1e9,
            matmul_gflops=matmul_flops / 1e9,
            model_train_fraction_of_matmul=train_flops / matmul_flops,
            # Against a matmul of one member's hidden layer at the training batch (cached, often faster).
            layer_matmul_gflops=layer_flops / 1e9,
            model_train_fraction_of_layer_matmul=train_flops / layer_flops,
            efficiency_epochs=epochs,
        )
    # torch.compile's compiler workers run as child processes: their largest peak, apart.
    rss = peak_rss_mb()
    out["peak_rss_mb"], out["peak_rss_children_mb"] = rss["self"], rss["children"]
    out["load_before"], out["load_after"] = load_before, os.getloadavg()[0]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--learning-starts", type=int, default=500)
    parser.add_argument("--updates", type=int, default=20, help="SAC updates per env step (MBPO default 20)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--efficiency-epochs", type=int, default=10)
    parser.add_argument("--configs", default=",".join(CONFIGS), help=f"comma-separated, of {CONFIGS}")
    parser.add_argument("--output", default=RESULTS)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(run_config(args.child, args)))
        return
    names = [n for n in args.configs.split(",") if n]
    unknown = sorted(set(names) - set(CONFIGS))
    if unknown:
        parser.error(f"unknown configs {unknown}; expected some of {CONFIGS}")
    results = {}
    for name in names:
        command = [sys.executable, __file__, "--child", name] + [
            f"--{key.replace('_', '-')}={value}"
            for key, value in vars(args).items()
            if key not in ("child", "configs", "output")
        ]
        done = subprocess.run(command, check=True, capture_output=True, text=True)
        results[name] = json.loads(done.stdout.strip().splitlines()[-1])
        print(name, json.dumps(results[name]), flush=True)
    if "sac" in results:
        for row in results.values():
            row["ratio_to_sac"] = row["ms_per_step"] / results["sac"]["ms_per_step"]
            row["cpu_ratio_to_sac"] = row["cpu_ms_per_step"] / results["sac"]["cpu_ms_per_step"]
            row["ratio_after_warmup_to_sac"] = (
                row["ms_per_step_after_warmup"] / results["sac"]["ms_per_step_after_warmup"]
            )
    out = {
        "env": "Pendulum-v1",
        "device": args.device,
        "threads": int(os.environ.get("OMP_NUM_THREADS", "1")),
        "torch": th.__version__,
        "machine": platform.machine(),
        "timed_env_steps": args.steps,
        "learning_starts": args.learning_starts,
        "sac_updates_per_step": args.updates,
        "configs": results,
    }
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(out, f, indent=2)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
