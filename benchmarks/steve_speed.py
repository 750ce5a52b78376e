"""Wall time per environment step of STEVE, reference and fused path, vs SB3 DDPG doing the same updates.

Three agents in this process on ``--env`` (Pendulum-v1), same seed: STEVE with ``fused_update=False`` (the
reference code path, "before"), STEVE with ``fused_update=True`` (the default, "after"; same math, see
:mod:`sb3_mb.steve.fused`) and SB3's DDPG with the same number of gradient updates per env step, batch size,
policy / Q hidden sizes, a single critic and no model. Each first collects ``--learning-starts`` random
steps (not timed); then one env step runs STEVE's one-off world-model pretraining (not timed, capped at 100
updates) and the next one is the "first call" (timed apart: buffers allocated, nothing compiled). The
``--steps`` timed env steps are then run in ``--chunks`` chunks, the three agents in turn, so that a change
of the machine's load hits all three alike.

Configurations (``--config``):

- ``paper``: STEVE's constructor defaults (the paper's, Buckman et al. 2018): 4 value updates and 4
  world-model updates per env step, batch 512, policy / Q ``3 x 128``, ``L = 4`` Q members, transition
  ``4 x (7 x 512)``, reward and done ``4 x (3 x 128)``, horizon 3 (64 samples per candidate);
- ``zoo``: the ``hyperparams/steve.yml`` entry of the env (reduced sizes for a CPU).

Reported per STEVE path: ``ms_per_step``, ``ratio_to_ddpg``, ``first_call_ms`` and the split measured on the
trained agent (median of ``--repeats`` calls, the two paths interleaved): one world-model update, one
expansion pass (targets of a batch), one value update (expansion included), and ``rest_ms`` = ms per step
minus the updates of one step. Every time is given as wall time and as this process's CPU time (``cpu_``):
on a machine shared with other jobs the wall time also counts the waits for a core. Also: the FLOPs of one
env step's matmuls and their time at the machine's matmul rate (:func:`measure.matmul_flops_per_second`
at the transition layer's shape), the peak RSS of the process (all three agents) and the load average
before and after.

Usage::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 flock /tmp/bench.lock python benchmarks/steve_speed.py --config paper
    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 flock /tmp/bench.lock python benchmarks/steve_speed.py --config zoo
    # where the fused path's time goes: add --profile (torch.profiler tables, printed after the results)

Writes ``benchmarks/results/steve_speed.json`` (one entry per configuration, merged with the file).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics

import torch as th
from measure import matmul_flops_per_second, peak_rss_mb, timed
from stable_baselines3 import DDPG
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.torch_layers import get_actor_critic_arch

from sb3_mb import STEVE
from zoo.hyperparams import load_hyperparams

RESULTS = os.path.join(os.path.dirname(__file__), "results", "steve_speed.json")


def run_steps(model, n_steps: int, device: str) -> tuple[float, float]:
    """``(wall, CPU)`` seconds for ``n_steps`` more env steps of ``model`` (training included)."""
    return timed(lambda: model.learn(n_steps, reset_num_timesteps=False), device)


def mlp_macs(sizes: list[int]) -> int:
    """Multiply-adds per row of an MLP with layer sizes ``[in, hidden..., out]``."""
    return sum(a * b for a, b in zip(sizes[:-1], sizes[1:], strict=True))


def matmul_gflop_per_step(steve: STEVE) -> float:
    """The GFLOP of one env step's matmuls (forward, and backward x 2 for the updates) of STEVE's networks:
    the expansion passes, the world-model updates and the critic / actor updates."""
    policy, wm = steve.policy, steve.world_model
    assert wm is not None
    obs_dim, act_dim = policy.obs_dim, policy.action_dim
    n, m, n_critics = wm.transition.ensemble_size, wm.reward.ensemble_size, policy.n_critics
    horizon = steve.value_expansion_horizon
    actor_arch, critic_arch = get_actor_critic_arch(policy.net_arch)
    batch, model_batch = steve.batch_size, steve.model_batch_size
    arch = policy.model_net_arch
    transition = mlp_macs([obs_dim + act_dim, *arch["transition"], obs_dim])
    aux = (
        mlp_macs([2 * obs_dim + act_dim, *arch["reward"], 1]),
        mlp_macs([2 * obs_dim + act_dim, *arch["done"], 1]),
    )
    q = mlp_macs([obs_dim + act_dim, *critic_arch, 1])
    actor = mlp_macs([obs_dim, *actor_arch, act_dim])
    # expansion: H transition steps of N rollouts, every reward member on every rollout row, the paired done
    # member, Q at s_0 once and at the H later frames of every rollout, the actor at every frame.
    expansion = horizon * batch * (n * transition + n * m * aux[0] + n * aux[1])
    expansion += batch * n_critics * q * (1 + horizon * n) + batch * actor * (1 + horizon * n)
    # value update: critic on its member split (fwd + bwd), actor loss (all Q members, fwd + bwd)
    value = 3 * batch * q + 3 * batch * (actor + n_critics * q)
    model = 3 * model_batch * (transition + aux[0] + aux[1])
    macs = steve.gradient_steps * (expansion + value) + steve.model_gradient_steps * model
    return 2 * macs / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--config", choices=["paper", "zoo"], default="paper")
    parser.add_argument("--env", default="Pendulum-v1")
    parser.add_argument("--steps", type=int, default=20, help="timed env steps per agent")
    parser.add_argument("--chunks", type=int, default=4, help="the timed steps in this many turns per agent")
    parser.add_argument("--repeats", type=int, default=5, help="calls per entry of the split (median)")
    parser.add_argument("--learning-starts", type=int, default=600)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--profile",
        action="store_true",
        help="print torch.profiler tables of one fused expansion pass and update",
    )
    args = parser.parse_args()
    th.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    load_before = os.getloadavg()

    kwargs = {} if args.config == "paper" else load_hyperparams("steve", args.env)
    kwargs.update(learning_starts=args.learning_starts, device=args.device, seed=args.seed)
    kwargs.setdefault("model_pretrain_steps", 10_000)
    kwargs["model_pretrain_steps"] = min(kwargs["model_pretrain_steps"], 100)  # not timed; keep it short
    agents = {
        name: STEVE(
            "MlpPolicy", make_vec_env(args.env, n_envs=1, seed=args.seed), fused_update=fused, **kwargs
        )
        for name, fused in (("reference", False), ("fused", True))
    }
    steve = agents["fused"]
    agents["ddpg"] = DDPG(
        "MlpPolicy",
        make_vec_env(args.env, n_envs=1, seed=args.seed),
        learning_rate=steve.learning_rate,
        batch_size=steve.batch_size,
        gradient_steps=steve.gradient_steps,
        learning_starts=args.learning_starts,
        policy_kwargs=dict(net_arch=list(steve.policy.net_arch)),
        device=args.device,
        seed=args.seed,
    )
    pretrain_s, first_call_ms = {}, {}
    seconds = {name: [0.0, 0.0] for name in agents}  # wall, CPU
    for name, model in agents.items():
        model.learn(args.learning_starts)  # random warm-up, no update
        pretrain_s[name] = run_steps(model, 1, args.device)[0]  # STEVE: the world-model pretraining
        first_call_ms[name] = 1000 * run_steps(model, 1, args.device)[0]
    chunk = max(1, args.steps // args.chunks)
    done = 0
    while done < args.steps:
        n = min(chunk, args.steps - done)
        for name, model in agents.items():
            wall, cpu = run_steps(model, n, args.device)
            seconds[name][0] += wall
            seconds[name][1] += cpu
        done += n
    ms_per_step = {name: 1000 * s[0] / args.steps for name, s in seconds.items()}
    cpu_ms_per_step = {name: 1000 * s[1] / args.steps for name, s in seconds.items()}

    # The split, on the trained agents, the two paths in turn; both sample their own batches.
    calls: dict[str, dict[str, list[float]]] = {name: {} for name in ("reference", "fused")}
    for _ in range(args.repeats + 1):  # the first round is a warm-up
        for name in ("reference", "fused"):
            model = agents[name]
            batch = model._sample(model.batch_size)
            model_steps = model.model_gradient_steps
            for key, fn in (
                ("world_model_update_ms", lambda m=model: m.train_world_model(1)),
                ("expansion_pass_ms", lambda m=model, b=batch: m.expansion(b)),
                ("value_update_ms", lambda m=model: m.train(1, m.batch_size)),
            ):
                model.model_gradient_steps = 0  # train(1): one value update only
                wall, cpu = timed(fn, args.device)
                model.model_gradient_steps = model_steps
                calls[name].setdefault(key, []).append(1000 * wall)
                calls[name].setdefault(key.replace("_ms", "_cpu_ms"), []).append(1000 * cpu)

    gflop = matmul_gflop_per_step(steve)
    transition_width = steve.policy.model_net_arch["transition"][0]
    rate = matmul_flops_per_second(args.device, shape=(steve.batch_size, transition_width, transition_width))
    paths = {}
    for name in ("reference", "fused"):
        split = {key: statistics.median(values[1:]) for key, values in calls[name].items()}
        model = agents[name]
        updates_ms = (
            model.model_gradient_steps * split["world_model_update_ms"]
            + model.gradient_steps * split["value_update_ms"]
        )
        split["rest_ms"] = ms_per_step[name] - updates_ms
        updates_cpu_ms = (
            model.model_gradient_steps * split["world_model_update_cpu_ms"]
            + model.gradient_steps * split["value_update_cpu_ms"]
        )
        split["rest_cpu_ms"] = cpu_ms_per_step[name] - updates_cpu_ms
        paths[name] = {
            "ms_per_step": ms_per_step[name],
            "ratio_to_ddpg": ms_per_step[name] / ms_per_step["ddpg"],
            "cpu_ms_per_step": cpu_ms_per_step[name],
            "cpu_ratio_to_ddpg": cpu_ms_per_step[name] / cpu_ms_per_step["ddpg"],
            "first_call_ms": first_call_ms[name],
            "pretrain_s": pretrain_s[name],
            "split": split,
        }
    workspace_mb = sum(t.numel() * t.element_size() for t in steve._workspace.values()) / 2**20
    entry = {
        "env": args.env,
        "device": args.device,
        "threads": th.get_num_threads(),
        "torch": th.__version__,
        "machine": platform.machine(),
        "load_average_before_after": [load_before[0], os.getloadavg()[0]],
        "timed_env_steps": args.steps,
        "chunks": args.chunks,
        "learning_starts": args.learning_starts,
        "updates_per_step": steve.gradient_steps,
        "model_updates_per_step": steve.model_gradient_steps,
        "batch_size": steve.batch_size,
        "kwargs": {k: v for k, v in kwargs.items() if k != "device"},
        "ddpg_ms_per_step": ms_per_step["ddpg"],
        "ddpg_cpu_ms_per_step": cpu_ms_per_step["ddpg"],
        "before": paths["reference"],
        "after": paths["fused"],
        "speedup_before_over_after": ms_per_step["reference"] / ms_per_step["fused"],
        "cpu_speedup_before_over_after": cpu_ms_per_step["reference"] / cpu_ms_per_step["fused"],
        "matmul_gflop_per_step": gflop,
        "matmul_gflops_machine": rate / 1e9,
        "matmul_floor_ms_per_step": 1000 * gflop * 1e9 / rate,
        "matmul_floor_ratio_to_ddpg": 1000 * gflop * 1e9 / rate / cpu_ms_per_step["ddpg"],
        "fused_workspace_mb": workspace_mb,
        "peak_rss_mb": peak_rss_mb(),
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
    if args.profile:
        profile(steve)


def profile(steve: STEVE) -> None:
    """torch.profiler tables (operators by self CPU time) of one expansion pass, one world-model update and
    one value update of the fused path."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    batch = steve._sample(steve.batch_size)
    model_steps, steve.model_gradient_steps = steve.model_gradient_steps, 0
    for what, fn in (
        ("expansion pass", lambda: steve.expansion(batch)),
        ("world-model update", lambda: steve.train_world_model(1)),
        ("value update (expansion included)", lambda: steve.train(1, steve.batch_size)),
    ):
        fn()
        with torch_profile(activities=[ProfilerActivity.CPU, *_cuda(steve.device)]) as prof:
            fn()
        print(f"\n{what}:\n" + prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))
    steve.model_gradient_steps = model_steps


def _cuda(device: th.device) -> list:
    from torch.profiler import ProfilerActivity

    return [ProfilerActivity.CUDA] if th.device(device).type == "cuda" else []


if __name__ == "__main__":
    main()
