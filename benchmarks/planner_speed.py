"""Milliseconds per action of the Gaussian CEM at PlaNet's size, and its FLOP/s vs dense matmul FLOP/s.

Planner: horizon 12, 1000 candidates, top-k 100, 10 iterations (PlaNet, Hafner et al. 2019, App. A). The
stand-in objective does the work of PlaNet's RSSM prior rollout plus reward head for all candidates in one
batch: per step ``x = relu(W [s, a])`` (30 + A -> 200), ``h = GRUCell(x, h)`` (200), ``relu(dense(h))`` (200),
mean / std heads (200 -> 2 x 30), a reparameterised sample, and the 3 x 300 ReLU reward MLP on ``[h, s]``.
Its matmul FLOPs are counted analytically (2 m n k per matmul; elementwise work is not counted). The
reference is a large ``torch.matmul`` timed in the same process.

``--model planet`` times PlaNet's own objective instead (``PlaNetPolicy.planning_objective``: the real
RSSM prior rollout and reward head at the paper's sizes, whose matmuls are the same as the stand-in's), on
both of its paths in one process, interleaved: the reference (``fused_planning=False``: ``imagine``, then the
reward head on every stacked state) and the fused loop (``fused_planning=True``, :mod:`sb3_mb.planet.fused`).
Each path's first plan call (warm-up) is timed too; the returns of both paths on one batch are compared.

Two matmul references are reported: a 2048 x 2048 square product (``matmul_gflops``, the issue's) and the
objective's own layer shapes (``shape_matmul_gflops``: the total matmul FLOPs over the sum of each layer's
FLOPs divided by its own product's rate, ``(rows, in, out)`` timed by ``measure.matmul_flops_per_second``);
small products that stay in cache run faster on CPU, so the second fraction is the stricter one. A third,
``matmul_loop_gflops``, runs the objective's matmuls alone in its loop (every layer's product in turn, the
horizon's steps, no elementwise work): the ceiling of a loop of these products on this machine. Each round
of the timing measures all three references beside the paths; fractions are medians over the rounds.

Usage::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/planner_speed.py [--device cpu] [--repeats 5] \
        [--model standin|planet]

Writes ``benchmarks/results/planner_speed.json`` (``planner_speed_planet.json`` for ``--model planet``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np
import torch as th
from measure import matmul_flops_per_second, peak_rss_mb, sync  # benchmarks/ is the script's directory
from stable_baselines3.common.torch_layers import create_mlp
from torch import nn

from sb3_mb.common.planners import GaussianCEM

BELIEF, STATE, HIDDEN, REWARD_HIDDEN = 200, 30, 200, 300


class PriorRolloutStandIn(nn.Module):
    """PlaNet-sized prior rollout + reward head; ``objective(actions) -> summed predicted rewards``."""

    def __init__(self, action_dim: int):
        super().__init__()
        self.embed = nn.Linear(STATE + action_dim, HIDDEN)
        self.cell = nn.GRUCell(HIDDEN, BELIEF)
        self.prior_hidden = nn.Linear(BELIEF, HIDDEN)
        self.prior_head = nn.Linear(HIDDEN, 2 * STATE)
        self.reward = nn.Sequential(*create_mlp(BELIEF + STATE, 1, [REWARD_HIDDEN] * 3))  # 3 x 300, ReLU

    @staticmethod
    def layer_shapes(action_dim: int) -> list[tuple[int, int]]:
        """``(in, out)`` of every matmul of one rollout step (the GRU's input and hidden gates: one each)."""
        return [
            (STATE + action_dim, HIDDEN),
            (HIDDEN, 3 * BELIEF),  # GRU input gates
            (BELIEF, 3 * BELIEF),  # GRU hidden gates
            (BELIEF, HIDDEN),
            (HIDDEN, 2 * STATE),
            (BELIEF + STATE, REWARD_HIDDEN),
            (REWARD_HIDDEN, REWARD_HIDDEN),
            (REWARD_HIDDEN, REWARD_HIDDEN),
            (REWARD_HIDDEN, 1),
        ]

    @staticmethod
    def flops_per_step(action_dim: int) -> int:
        """Matmul FLOPs of one rollout step of one candidate."""
        return 2 * sum(k * n for k, n in PriorRolloutStandIn.layer_shapes(action_dim))

    @th.no_grad()
    def forward(
        self, actions: th.Tensor, belief: th.Tensor, state: th.Tensor, generator: th.Generator
    ) -> th.Tensor:
        batch, n_candidates, horizon, _ = actions.shape
        h = belief[:, None].expand(batch, n_candidates, BELIEF).reshape(-1, BELIEF)
        s = state[:, None].expand(batch, n_candidates, STATE).reshape(-1, STATE)
        flat_actions = actions.reshape(batch * n_candidates, horizon, -1)
        total = th.zeros(batch * n_candidates, device=actions.device)
        for t in range(horizon):
            x = th.relu(self.embed(th.cat([s, flat_actions[:, t]], dim=-1)))
            h = self.cell(x, h)
            mean, std = self.prior_head(th.relu(self.prior_hidden(h))).chunk(2, dim=-1)
            std = nn.functional.softplus(std) + 0.1
            s = mean + std * th.randn(mean.shape, generator=generator, device=mean.device)
            total += self.reward(th.cat([h, s], dim=-1))[:, 0]
        return total.reshape(batch, n_candidates)


def shape_matmul_flops_per_second(device: th.device, rows: int, action_dim: int) -> float:
    """The matmul rate at the objective's own layer shapes: total FLOPs over the time each ``(rows, in, out)``
    product takes at its own measured rate (``measure.matmul_flops_per_second``); written here, not in
    ``measure.py``, because it knows this objective's layers."""
    shapes = PriorRolloutStandIn.layer_shapes(action_dim)
    seconds = sum(2 * rows * k * n / matmul_flops_per_second(device, shape=(rows, k, n)) for k, n in shapes)
    return sum(2 * rows * k * n for k, n in shapes) / seconds


def matmul_loop_flops_per_second(device: th.device, rows: int, action_dim: int, horizon: int) -> float:
    """The rate of the objective's matmuls alone, in the objective's order: ``horizon`` steps of every layer's
    ``(rows, in) @ (in, out)`` into preallocated outputs, no elementwise work; the best a loop over these
    layers' products runs here (operands no longer stay in cache from one product to the next as they do
    when one shape is timed alone)."""
    shapes = PriorRolloutStandIn.layer_shapes(action_dim)
    inputs = {k: th.randn(rows, k, device=device) for k, _ in shapes}
    weights = [th.randn(k, n, device=device) for k, n in shapes]
    outputs = [th.empty(rows, n, device=device) for _, n in shapes]

    def loop() -> None:
        for _ in range(horizon):
            for (k, _), weight, out in zip(shapes, weights, outputs, strict=True):
                th.mm(inputs[k], weight, out=out)

    loop()
    best = float("inf")
    for _ in range(3):
        sync(device)
        start = time.perf_counter()
        loop()
        sync(device)
        best = min(best, time.perf_counter() - start)
    return horizon * sum(2 * rows * k * n for k, n in shapes) / best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--action-dim", type=int, default=6)  # cheetah-run
    parser.add_argument("--batch", type=int, default=1, help="envs planned for at once")
    parser.add_argument("--model", choices=("standin", "planet"), default="standin")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    if args.output is None:
        name = "planner_speed.json" if args.model == "standin" else "planner_speed_planet.json"
        args.output = os.path.join(os.path.dirname(__file__), "results", name)
    if "OMP_NUM_THREADS" in os.environ:
        th.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    device = th.device(args.device)
    th.manual_seed(0)
    generator = th.Generator(device=device).manual_seed(0)

    cem = GaussianCEM(planning_horizon=12, action_dim=args.action_dim)  # 1000 / 100 / 10
    belief = th.zeros(args.batch, BELIEF, device=device)
    state = th.zeros(args.batch, STATE, device=device)

    if args.model == "standin":
        model = PriorRolloutStandIn(args.action_dim).to(device)

        def standin_objective(actions: th.Tensor) -> th.Tensor:
            return model(actions, belief, state, generator)

        objectives = {"standin": standin_objective}
    else:
        from gymnasium import spaces

        from sb3_mb.planet.policies import PlaNetPolicy
        from sb3_mb.planet.rssm import RSSMState

        policy = PlaNetPolicy(
            spaces.Box(-np.inf, np.inf, (5,), np.float32),
            spaces.Box(-1, 1, (args.action_dim,), np.float32),
            lambda _: 1e-3,
        ).to(device)
        policy.set_training_mode(False)
        start = RSSMState(belief, state, th.ones_like(state), state)

        def planet_objective(fused: bool):
            def objective(actions: th.Tensor) -> th.Tensor:
                policy.fused_planning = fused
                with th.no_grad():
                    return policy.planning_objective(start, generator)(actions)

            return objective

        objectives = {"reference": planet_objective(False), "fused": planet_objective(True)}

    def time_plan(obj, plan) -> tuple[float, object]:
        sync(device)
        begin = time.perf_counter()
        result = cem.plan(obj, plan, generator=generator, device=device)
        sync(device)
        return time.perf_counter() - begin, result.warm_start

    # First calls (warm-up, compile if any), then rounds of: every path once (each from its own warm start)
    # and both matmul references, so that each fraction compares times taken under the same machine load.
    rows = cem.n_candidates * args.batch
    first_call, plans, times = {}, {}, {name: [] for name in objectives}
    square, shaped, looped = [], [], []
    for name, obj in objectives.items():
        first_call[name], plans[name] = time_plan(obj, cem.initial_plan(args.batch))
    for _ in range(args.repeats):
        for name, obj in objectives.items():
            seconds, plans[name] = time_plan(obj, plans[name])
            times[name].append(seconds)
        square.append(matmul_flops_per_second(device))
        shaped.append(shape_matmul_flops_per_second(device, rows, args.action_dim))
        looped.append(matmul_loop_flops_per_second(device, rows, args.action_dim, cem.planning_horizon))
    overhead = [time_plan(lambda a: a.sum(dim=(-1, -2)), cem.initial_plan(args.batch))[0] for _ in range(3)]

    model_flops = (
        PriorRolloutStandIn.flops_per_step(args.action_dim)
        * cem.planning_horizon
        * cem.n_candidates
        * cem.n_iterations
        * args.batch
    )
    paths = {}
    for name in objectives:
        seconds = float(np.median(times[name]))
        achieved = model_flops / seconds
        paths[name] = {
            "ms_per_action": 1000 * seconds / args.batch,
            "ms_per_plan_call": 1000 * seconds,
            "ms_per_plan_call_all": [1000 * t for t in times[name]],
            "first_call_ms": 1000 * first_call[name],
            "achieved_gflops": achieved / 1e9,
            # Medians over the rounds of (this round's achieved rate / this round's matmul rate).
            "fraction_of_matmul_peak": float(
                np.median([model_flops / t / r for t, r in zip(times[name], square, strict=True)])
            ),
            "fraction_of_matmul_loop": float(
                np.median([model_flops / t / r for t, r in zip(times[name], looped, strict=True)])
            ),
            "fraction_of_shape_matmul": float(
                np.median([model_flops / t / r for t, r in zip(times[name], shaped, strict=True)])
            ),
        }
    results = {
        "model": args.model,
        "device": str(device),
        "threads": th.get_num_threads(),
        "torch": th.__version__,
        "machine": platform.processor() or platform.machine(),
        "planning_horizon": cem.planning_horizon,
        "n_candidates": cem.n_candidates,
        "n_elites": cem.n_elites,
        "n_iterations": cem.n_iterations,
        "action_dim": args.action_dim,
        "batch": args.batch,
        "repeats": args.repeats,
        "paths": paths,
        "cem_overhead_ms_per_call": 1000 * float(np.median(overhead)),
        "model_gflop_per_call": model_flops / 1e9,
        "matmul_gflops": float(np.median(square)) / 1e9,
        "matmul_gflops_all": [r / 1e9 for r in square],
        "shape_matmul_gflops": float(np.median(shaped)) / 1e9,
        "shape_matmul_gflops_all": [r / 1e9 for r in shaped],
        "matmul_loop_gflops": float(np.median(looped)) / 1e9,
        "matmul_loop_gflops_all": [r / 1e9 for r in looped],
        "peak_rss_mb": peak_rss_mb(),
    }
    if args.model == "planet":
        # The two paths on one batch, same random numbers: they differ by float rounding only.
        actions = th.rand(args.batch, cem.n_candidates, cem.planning_horizon, args.action_dim, device=device)
        returns = {}
        for name, obj in objectives.items():
            generator.manual_seed(1)
            returns[name] = obj(actions * 2 - 1)
        results["max_abs_difference_of_returns"] = float(
            (returns["fused"] - returns["reference"]).abs().max()
        )
        results["speedup_fused_over_reference"] = (
            paths["reference"]["ms_per_plan_call"] / paths["fused"]["ms_per_plan_call"]
        )
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as file:
        json.dump(results, file, indent=2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
