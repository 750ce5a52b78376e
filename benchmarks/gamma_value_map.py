"""γ-model values against Monte Carlo on Pendulum-v1 (issue 13), for both TD objectives.

A SAC policy is trained on Pendulum-v1 (SB3 defaults, ``--sac-steps``); its replay buffer and its
deterministic policy are the data and the fixed policy of offline γ-model training (the release's setting,
spec 1.4). Every ``--eval-every`` updates the γ-model value ``E_μ[r(s_e)] / (1 - γ)`` of a grid of states
(12 angles × 9 velocities) is compared with the Monte Carlo value of the same policy from the same states
(one rollout each: Pendulum is deterministic) by Spearman's rank correlation ρ. The reward of both is the
release's map reward ``-(θ² + 0.1 θ̇²)`` of the future states. The density and value figures of the last
model are written beside the JSON.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/gamma_value_map.py --objectives regression likelihood \
        --updates 4000 --gamma 0.9 [--sizes small|release]

Results: ``benchmarks/results/gamma_value_map.json`` and the figures
``gamma_value_map_<objective>_{density,value}.png``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch as th
from measure import peak_rss_mb  # benchmarks/ is the script's directory
from stable_baselines3 import SAC

from sb3_mb.gammamodels import GammaModel, maps

RESULTS = os.path.join(os.path.dirname(__file__), "results")
SIZES = {
    "small": dict(hidden_sizes=(128, 128), bins=8, n_blocks=2, tau=0.01, learning_rate=1e-3),
    "release": dict(),  # the constructor defaults: the release's 3 × 256, K = 16, 3 blocks, τ 0.005, lr 1e-4
}


def spearman(x: th.Tensor, y: th.Tensor) -> float:
    """Spearman's ρ of two 1-D tensors without ties (Pearson's correlation of the ranks)."""
    rank_x, rank_y = th.argsort(th.argsort(x)).double(), th.argsort(th.argsort(y)).double()
    return float(th.corrcoef(th.stack([rank_x, rank_y]))[0, 1])


def grid_states() -> th.Tensor:
    theta = th.linspace(0, 2 * np.pi, 13)[:-1]
    velocity = th.linspace(-6.0, 6.0, 9)
    t, v = th.meshgrid(theta, velocity, indexing="ij")
    return maps.pendulum_obs(t.reshape(-1), v.reshape(-1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--objectives", nargs="+", default=["regression", "likelihood"])
    parser.add_argument("--updates", type=int, default=4000)
    parser.add_argument("--eval-every", type=int, default=1000)
    parser.add_argument("--gamma", type=float, default=0.9)
    parser.add_argument("--sac-steps", type=int, default=5000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--sizes", choices=sorted(SIZES), default="small")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    th.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    start = time.perf_counter()
    sac = SAC("MlpPolicy", "Pendulum-v1", seed=args.seed).learn(args.sac_steps)
    sac_seconds = time.perf_counter() - start
    states = grid_states()
    monte_carlo = maps.pendulum_monte_carlo_values(sac.policy, states, args.gamma)
    runs = []
    for objective in args.objectives:
        th.manual_seed(args.seed)
        model = GammaModel(3, 1, gamma=args.gamma, sigma=0.1, objective=objective, **SIZES[args.sizes])
        curve, start = [], time.perf_counter()
        for done in range(args.eval_every, args.updates + 1, args.eval_every):
            model.fit(sac.replay_buffer, sac.policy, args.eval_every, batch_size=args.batch_size)
            th.manual_seed(1)
            values = maps.value_map(model, sac.policy, states, maps.pendulum_state_reward, n_samples=256)
            curve.append({"updates": done, "spearman": spearman(values, monte_carlo)})
            print(objective, curve[-1], f"{time.perf_counter() - start:.0f} s", flush=True)
        seconds = time.perf_counter() - start
        for name, plot in (("density", maps.plot_density_maps), ("value", maps.plot_value_map)):
            figure = plot(model, sac.policy)
            figure.savefig(os.path.join(RESULTS, f"gamma_value_map_{objective}_{name}.png"), dpi=80)
        runs.append(
            {
                "objective": objective,
                "curve": curve,
                "final_spearman": curve[-1]["spearman"],
                "seconds": seconds,
                "ms_per_update": 1000 * seconds / args.updates,
                "peak_rss_mb": peak_rss_mb(),  # the process's peak so far (SAC, earlier objectives included)
            }
        )
    result = {
        "env": "Pendulum-v1",
        "args": vars(args),
        "sac_seconds": sac_seconds,
        "sac_return_note": "SB3 SAC defaults",
        "n_states": len(states),
        "runs": runs,
        "torch_threads": th.get_num_threads(),
    }
    os.makedirs(RESULTS, exist_ok=True)
    with open(os.path.join(RESULTS, "gamma_value_map.json"), "w") as f:
        json.dump(result, f, indent=2)
    print(json.dumps({r["objective"]: r["final_spearman"] for r in runs}))


if __name__ == "__main__":
    main()
