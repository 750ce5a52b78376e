"""World Models on CarRacing-v3 at a CPU budget: the full agent (C on [z, h]) against V only (C on z) and the
random policy, real-env return.

Far below the paper's budget (Ha & Schmidhuber 2018, arXiv:1803.10122, Sec. 3.3-3.4: 10 000 random rollouts of
1000 steps, CMA-ES population 64 x 16 rollouts for about 2000 generations; 906 +- 21 full, 632 +- 251 V only,
over 100 trials of 1000 steps). Here, on one thread: episodes cut at ``--episode-steps``, ``--rollouts``
random rollouts in the disk store, the paper's networks (ConvVAE z 32, LSTM 256 with 5 Gaussians), ``--vae-
epochs`` V epochs, ``--mdn-epochs`` M epochs on 100-step sequences, then ``--generations`` CMA-ES generations
of ``--population`` x 1 rollout in the real env for each C. The V-only C reuses the full agent's V and M (M
then only runs, C does not read it). Each policy is scored deterministically on ``--eval-episodes`` real
episodes of the same length (seed 100): C at CMA-ES's mean (what ``WorldModels`` keeps) and at its best-ever
candidate.

C's output reaches the car through the original code's map (``--action-map original``, the default:
:class:`~sb3_mb.worldmodels.carracing.CarRacingActions`; a zero C drives at gas 0.5, no brake) or the
affine map onto CarRacing's own bounds (``--action-map affine``: a zero C brakes at 0.5). Random rollouts and
the random baseline sample the agent's action space, so they differ between the two as well.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/worldmodels_carracing.py

The paper's budget (not run; days of CPU): ``--paper`` prints the command.

Writes ``benchmarks/results/worldmodels_carracing.json`` (``worldmodels_carracing_affine.json`` with
``--action-map affine``).
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch as th
from measure import peak_rss_mb  # benchmarks/ is the script's directory
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import configure

from sb3_mb import WorldModels
from sb3_mb.worldmodels.carracing import make_carracing
from sb3_mb.worldmodels.storage import DiskEpisodeReplayBuffer

RESULTS = Path(__file__).parent / "results"

PAPER_COMMAND = (
    "python -m zoo.train --algo worldmodels --env CarRacing-v3 -params "
    "replay_buffer_class:\"__import__('sb3_mb.worldmodels.storage',fromlist=['_']).DiskEpisodeReplayBuffer\" "
    "replay_buffer_kwargs:\"dict(path='rollouts/CarRacing-v3')\"   "
    "# hyperparams/worldmodels.yml's CarRacing-v3 entry: 10 000 rollouts, 64 x 16, 2000 generations"
)


class RandomPolicy:
    """Uniformly random actions of one env, for ``evaluate_policy``."""

    def __init__(self, action_space):
        self.action_space = action_space

    def predict(self, observation, state=None, episode_start=None, deterministic=False):
        return np.array([self.action_space.sample()]), None


def timed(method, times: dict, key: str):
    """``method`` recording its wall time in ``times[key]`` and its return in ``times[key + '_out']``."""

    @functools.wraps(method)
    def wrapper(*args, **kwargs):
        start = time.perf_counter()
        out = method(*args, **kwargs)
        times[key] = time.perf_counter() - start
        times[key + "_out"] = out
        return out

    return wrapper


def make_env(args: argparse.Namespace) -> gym.Env:
    """The env as the agent sees it: the original action map (``CarRacingActions``) or CarRacing's own."""
    if args.action_map == "original":
        return make_carracing(args.env, max_episode_steps=args.episode_steps)
    return gym.make(args.env, max_episode_steps=args.episode_steps)


def score(policy, args: argparse.Namespace) -> dict[str, float]:
    env = make_vec_env(functools.partial(make_env, args), n_envs=1, seed=100)
    env.action_space.seed(100)
    start = time.perf_counter()
    returns, _ = evaluate_policy(policy, env, n_eval_episodes=args.eval_episodes, return_episode_rewards=True)
    env.close()
    return {
        "return_mean": float(np.mean(returns)),
        "return_std": float(np.std(returns)),
        "returns": [float(r) for r in returns],
        "eval_seconds": time.perf_counter() - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="CarRacing-v3")
    parser.add_argument("--episode-steps", type=int, default=200)
    parser.add_argument("--rollouts", type=int, default=20)
    parser.add_argument("--vae-epochs", type=int, default=5)
    parser.add_argument("--mdn-epochs", type=int, default=5)
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--generations", type=int, default=5)
    parser.add_argument("--eval-episodes", type=int, default=5)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--action-map", choices=("original", "affine"), default="original")
    parser.add_argument("--paper", action="store_true", help="print the paper-budget command and exit")
    args = parser.parse_args()
    if args.paper:
        print(PAPER_COMMAND)
        return
    th.set_num_threads(1)
    total_start = time.perf_counter()
    settings = dict(
        buffer_size=args.rollouts * (args.episode_steps + 1) + 10,
        n_random_rollouts=args.rollouts,
        vae_epochs=args.vae_epochs,
        mdn_epochs=args.mdn_epochs,
        batch_size=16,
        sequence_length=100,
        population_size=args.population,
        rollouts_per_candidate=1,
        n_generations=args.generations,
        log_images=False,
        device="cpu",
        seed=args.seed,
    )
    full = WorldModels(
        "CnnPolicy",
        make_env(args),
        replay_buffer_class=DiskEpisodeReplayBuffer,
        replay_buffer_kwargs=dict(path=tempfile.mkdtemp(prefix="wm_carracing_")),
        **settings,
    )
    times: dict = {}
    for stage in ("train_vae", "train_mdn_rnn", "train_controller"):
        setattr(full, stage, timed(getattr(full, stage), times, stage))
    start = time.perf_counter()
    full.learn(args.rollouts * args.episode_steps)
    learn_s = time.perf_counter() - start
    collect_s = learn_s - sum(times[s] for s in ("train_vae", "train_mdn_rnn", "train_controller"))

    v_only = WorldModels(
        "CnnPolicy",
        make_env(args),
        policy_kwargs=dict(controller_input="z"),
        **settings,
    )
    v_only.policy.vae.load_state_dict(full.policy.vae.state_dict())
    v_only.policy.mdn_rnn.load_state_dict(full.policy.mdn_rnn.state_dict())
    v_only.set_logger(configure(None, []))
    start = time.perf_counter()
    v_only_stats = v_only.train_controller()
    v_only_s = time.perf_counter() - start

    best = {}
    for name, model in (("full (C on [z, h])", full), ("V only (C on z)", v_only)):
        # CMA-ES's best-ever candidate (scored on one rollout), beside the distribution's mean C takes.
        mean_vector = model.policy.controller.get_vector()
        model.policy.controller.set_vector(model.es.es.result.xbest)
        best[name + ", best candidate"] = score(model, args)
        model.policy.controller.set_vector(mean_vector)

    results = {
        "full (C on [z, h])": {
            **score(full, args),
            "controller_parameters": full.policy.controller.n_parameters,
            "cma_es_last_generation": times["train_controller_out"],
            "controller_seconds": times["train_controller"],
        },
        "V only (C on z)": {
            **score(v_only, args),
            "controller_parameters": v_only.policy.controller.n_parameters,
            "cma_es_last_generation": v_only_stats,
            "controller_seconds": v_only_s,
        },
        **best,
        "random": score(RandomPolicy(full.action_space), args),
    }
    result = {
        "env": args.env,
        "settings": {**vars(args), **{k: v for k, v in settings.items() if k != "device"}},
        "command": "python benchmarks/worldmodels_carracing.py " + " ".join(sys.argv[1:]),
        "paper_budget_command_not_run": PAPER_COMMAND,
        "paper": {
            "full": "906 +- 21",
            "V only": "632 +- 251",
            "budget": "10 000 rollouts, 64 x 16, 1000 steps",
        },
        "seconds": {
            "collection": collect_s,
            "vae": times["train_vae"],
            "vae_loss": times["train_vae_out"].get("loss"),
            "mdn_rnn": times["train_mdn_rnn"],
            "mdn_nll": times["train_mdn_rnn_out"].get("nll"),
            "total": time.perf_counter() - total_start,
        },
        "peak_rss_mb": peak_rss_mb(),
        "results": results,
    }
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(exist_ok=True)
    name = "worldmodels_carracing" + ("_affine" if args.action_map == "affine" else "")
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
