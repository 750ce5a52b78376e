"""Speed of a γ-model update (issue 13): milliseconds per TD update at the release's sizes and the arithmetic
rate it reaches, against a plain matmul of the coupling MLPs' shape in the same process.

The release's Pendulum model: 3-D state, 1-D action, 3 blocks, coupling MLPs 3 × 256, K = 16, batch 1024.
FLOPs per update are counted for the coupling MLPs only (the splines, ActNorm and LU maps are element-wise or
3 × 3): a forward pass costs ``F = 2 sum(in · out)`` per sample over every linear layer of every coupling; the
regression update runs the online model forward and backward (≈ 3F), samples ``sample_discount · B`` rows
from the target (≈ F each: one MLP pass per coupling) and evaluates the target density (F), so
``(3 + 0.9 + 1) F B``; the likelihood update samples ``γ B`` rows and skips the target density,
``(3 + γ) F B``. The matmul reference times ``(B, 256) @ (256, 256)``.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/gamma_speed.py [--batch-size 1024] [--updates 20] [--device cpu]

Results: ``benchmarks/results/gamma_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch as th
from measure import matmul_flops_per_second, peak_rss_mb  # benchmarks/ is the script's directory

from sb3_mb.gammamodels import GammaModel

RESULTS = os.path.join(os.path.dirname(__file__), "results", "gamma_speed.json")


def mlp_flops_per_sample(model: GammaModel) -> float:
    """``2 sum(in · out)`` over the linear layers of the online flow (the coupling MLPs: zuko's ``Linear``,
    recognised by its 2-D ``weight``)."""
    weights = [m.weight for m in model.flow.modules() if type(m).__name__ == "Linear"]
    return float(sum(2 * w.shape[0] * w.shape[1] for w in weights))


def time_updates(model: GammaModel, batch_size: int, n_updates: int, device: str) -> float:
    """Seconds per update, after 3 warm-up updates (the first initialises ActNorm)."""
    g = th.Generator(device="cpu").manual_seed(0)
    obs = th.randn(batch_size, 3, generator=g).to(device)
    actions = th.rand(batch_size, 1, generator=g).to(device) * 2 - 1
    next_obs = obs + 0.1 * th.randn(batch_size, 3, generator=g).to(device)
    next_actions = th.rand(batch_size, 1, generator=g).to(device) * 2 - 1
    for _ in range(3):
        model.update(obs, actions, next_obs, next_actions)
    if device == "cuda":
        th.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(n_updates):
        model.update(obs, actions, next_obs, next_actions)
    if device == "cuda":
        th.cuda.synchronize()
    return (time.perf_counter() - start) / n_updates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--updates", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    th.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    reference = matmul_flops_per_second(args.device, shape=(args.batch_size, 256, 256))
    rows = []
    for objective in ("regression", "likelihood"):
        model = GammaModel(3, 1, gamma=0.99, objective=objective).to(args.device)
        seconds = time_updates(model, args.batch_size, args.updates, args.device)
        factor = 3 + 0.9 + 1 if objective == "regression" else 3 + model.gamma
        flops = factor * mlp_flops_per_sample(model) * args.batch_size / seconds
        rows.append(
            {
                "objective": objective,
                "ms_per_update": 1000 * seconds,
                "mlp_gflops": flops / 1e9,
                "matmul_gflops": reference / 1e9,
                "ratio_to_matmul": flops / reference,
                "peak_rss_mb": peak_rss_mb()["self"],  # so far in the process: the largest run up to this row
            }
        )
        print(json.dumps(rows[-1]), flush=True)
    result = {
        "args": vars(args),
        "machine": platform.machine(),
        "torch_threads": th.get_num_threads(),
        "torch": th.__version__,
        "rows": rows,
    }
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
