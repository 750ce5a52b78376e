"""Speed of a γ-model update (issues 13 and 15): milliseconds per TD update at the release's sizes for the
reference path (``fused=False``: zuko's objects, SB3's Adam and ``polyak_update``), the fused path
(``fused=True``, the default) and optionally the compiled one (``compile=True``), interleaved in one process,
with the arithmetic rate each reaches against a plain matmul of the coupling MLPs' shape.

The release's Pendulum model: 3-D state, 1-D action, 3 blocks, coupling MLPs 3 × 256, K = 16, batch 1024.
FLOPs per update are counted for the coupling MLPs only (the splines, ActNorm and LU maps are element-wise or
3 × 3): a forward pass costs ``F = 2 sum(in · out)`` per sample over every linear layer of every coupling. The
update runs the online model forward and backward (≈ 3F) and samples from the target (≈ F per drawn row: one
MLP pass per coupling). The regression objective draws ``sample_discount · B`` rows from the target and
evaluates the target density of every row: ``(3 + 0.9 + 1) F B`` on the reference path; the fused path takes
the drawn rows' density from the pass that drew them, ``(3 + 0.9 + 0.1) F B``. The likelihood objective draws
``γ B`` rows, ``(3 + γ) F B`` (compiled: every row through the target, ``4 F B``). The rate is the FLOPs each
path runs over its time; ``speedup`` is the reference's time over the path's. The matmul reference times
``(B, 256) @ (256, 256)``.

Usage::

    OMP_NUM_THREADS=1 python benchmarks/gamma_speed.py [--batch-size 1024] [--updates 5] [--rounds 4]
        [--compile] [--device cpu]

Results: ``benchmarks/results/gamma_speed.json`` or ``--output`` (``ms_per_update`` is the median over
``rounds`` blocks of ``updates`` updates, the paths taking turns; ``first_update_s`` is the first update,
ActNorm's initialisation and the compilation included; ``peak_rss_mb`` is the process's peak so far when
the row was written).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics

import torch as th
from measure import matmul_flops_per_second, peak_rss_mb, timed  # benchmarks/ is the script's directory

from sb3_mb.gammamodels import GammaModel

RESULTS = os.path.join(os.path.dirname(__file__), "results", "gamma_speed.json")


def mlp_flops_per_sample(model: GammaModel) -> float:
    """``2 sum(in · out)`` over the linear layers of the online flow (the coupling MLPs: zuko's ``Linear``,
    recognised by its 2-D ``weight``)."""
    weights = [m.weight for m in model.flow.modules() if type(m).__name__ == "Linear"]
    return float(sum(2 * w.shape[0] * w.shape[1] for w in weights))


def flop_factor(model: GammaModel) -> float:
    """MLP passes per sample of one update on ``model``'s path (module docstring)."""
    if model.objective == "regression":
        return 3 + model.sample_discount + (1 - model.sample_discount if model.fused else 1)
    return 3 + (1.0 if model.compile else model.gamma)


def make_batch(batch_size: int, device: str) -> tuple[th.Tensor, ...]:
    g = th.Generator(device="cpu").manual_seed(0)
    obs = th.randn(batch_size, 3, generator=g)
    actions = th.rand(batch_size, 1, generator=g) * 2 - 1
    next_obs = obs + 0.1 * th.randn(batch_size, 3, generator=g)
    next_actions = th.rand(batch_size, 1, generator=g) * 2 - 1
    return tuple(t.to(device) for t in (obs, actions, next_obs, next_actions))


def seconds_per_update(model: GammaModel, batch: tuple[th.Tensor, ...], n: int, device: str) -> float:
    """Wall seconds per update over ``n`` updates."""

    def updates() -> None:
        for _ in range(n):
            model.update(*batch)

    return timed(updates, device)[0] / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--updates", type=int, default=5, help="updates per timed block")
    parser.add_argument("--rounds", type=int, default=4, help="timed blocks per path, the paths taking turns")
    parser.add_argument("--compile", action="store_true", help="also time compile=True")
    parser.add_argument("--objectives", nargs="+", default=["regression", "likelihood"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output", default=RESULTS)
    args = parser.parse_args()
    th.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    reference = matmul_flops_per_second(args.device, shape=(args.batch_size, 256, 256))
    batch = make_batch(args.batch_size, args.device)
    paths = {"reference": dict(fused=False), "fused": dict(fused=True)}
    if args.compile:
        paths["compiled"] = dict(fused=True, compile=True)
    rows = []
    for objective in args.objectives:
        models, first = {}, {}
        for name, kwargs in paths.items():
            th.manual_seed(0)
            models[name] = GammaModel(3, 1, gamma=0.99, objective=objective, **kwargs).to(args.device)
            # the first update initialises ActNorm and, with compile=True, compiles
            first[name] = seconds_per_update(models[name], batch, 1, args.device)
            seconds_per_update(models[name], batch, 2, args.device)  # warm-up
        seconds = {name: [] for name in paths}
        for _ in range(args.rounds):
            for name, model in models.items():
                seconds[name].append(seconds_per_update(model, batch, args.updates, args.device))
        for name, model in models.items():
            median = statistics.median(seconds[name])
            flops = flop_factor(model) * mlp_flops_per_sample(model) * args.batch_size / median
            rows.append(
                {
                    "objective": objective,
                    "path": name,
                    "ms_per_update": 1000 * median,
                    "ms_per_update_blocks": [1000 * s for s in seconds[name]],
                    "speedup": statistics.median(seconds["reference"]) / median,
                    "first_update_s": first[name],
                    "mlp_gflops": flops / 1e9,
                    "matmul_gflops": reference / 1e9,
                    "ratio_to_matmul": flops / reference,
                    "peak_rss_mb": peak_rss_mb(),  # the process's peak so far (all paths share it)
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    result = {
        "args": vars(args),
        "machine": platform.machine(),
        "torch_threads": th.get_num_threads(),
        "torch": th.__version__,
        "load_average": os.getloadavg(),
        "rows": rows,
        "peak_rss_mb": peak_rss_mb(),
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
