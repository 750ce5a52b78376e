"""World Models' speed on CarRacing-v3, env steps per second on one thread per process, against the raw env.

- raw env: the bare Gymnasium env under uniformly random actions (resets included);
- collection: ``WorldModels.learn`` collecting random rollouts into the RAM buffer and into the disk store
  (:class:`~sb3_mb.worldmodels.storage.DiskEpisodeReplayBuffer`);
- controller evaluation: one CMA-ES generation (``train_controller``) of ``--population`` candidates x 1
  rollout in the real env with the paper's V (ConvVAE, z 32) and M (LSTM 256) on every step, ``n_workers`` 1
  (in-process) and 2 (worker processes; their start is timed too).

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/worldmodels_speed.py

Writes ``benchmarks/results/worldmodels_speed.json``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import torch as th
from stable_baselines3.common.logger import configure

from sb3_mb import WorldModels
from sb3_mb.worldmodels.storage import DiskEpisodeReplayBuffer

sys.path.insert(0, str(Path(__file__).parent))  # the sibling script, whatever the working folder
from worldmodels_storage import raw_env_rate  # noqa: E402

RESULTS = Path(__file__).parent / "results"


def collection_rate(args: argparse.Namespace, disk: bool) -> float:
    kwargs = {}
    if disk:
        store = tempfile.mkdtemp(prefix="wm_speed_")
        kwargs = dict(replay_buffer_class=DiskEpisodeReplayBuffer, replay_buffer_kwargs=dict(path=store))
    env = gym.make(args.env, max_episode_steps=args.episode_steps)
    n_episodes = args.steps // args.episode_steps
    model = WorldModels(
        "CnnPolicy",
        env,
        n_random_rollouts=n_episodes + 1,
        buffer_size=args.steps + n_episodes + 10,
        log_images=False,
        seed=args.seed,
        device="cpu",
        **kwargs,
    )
    start = time.perf_counter()
    model.learn(args.steps)
    return model.num_timesteps / (time.perf_counter() - start)


def controller_rate(args: argparse.Namespace, n_workers: int) -> dict[str, float]:
    model = WorldModels(
        "CnnPolicy",
        gym.make(args.env, max_episode_steps=args.episode_steps),
        population_size=args.population,
        rollouts_per_candidate=1,
        n_generations=1,
        n_workers=n_workers,
        controller_env_fn=functools.partial(gym.make, args.env, max_episode_steps=args.episode_steps),
        log_images=False,
        buffer_size=1000,
        seed=args.seed,
        device="cpu",
    )
    model.set_logger(configure(None, []))
    start = time.perf_counter()
    model.train_controller()
    seconds = time.perf_counter() - start
    steps = model.logger.name_to_value["controller/env_steps"]
    return {"env_steps": steps, "seconds": seconds, "steps_per_s": steps / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="CarRacing-v3")
    parser.add_argument("--steps", type=int, default=1000, help="collected steps per measurement")
    parser.add_argument("--episode-steps", type=int, default=100)
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    th.set_num_threads(1)
    # The machine may be shared: the raw env is measured before and after, beside each measurement.
    raw_before = raw_env_rate(args.env, args.steps, args.episode_steps, args.seed)
    result = {
        "env": args.env,
        "episode_steps": args.episode_steps,
        "cpu_count": os.cpu_count(),
        "load_average_1min_at_start": os.getloadavg()[0],
        "command": "python benchmarks/worldmodels_speed.py " + " ".join(sys.argv[1:]),
        "raw_env_steps_per_s_before": raw_before,
        "collection_ram_steps_per_s": collection_rate(args, disk=False),
        "collection_disk_steps_per_s": collection_rate(args, disk=True),
        "controller_evaluation": {f"n_workers={n}": controller_rate(args, n) for n in (1, 2)},
        "raw_env_steps_per_s_after": raw_env_rate(args.env, args.steps, args.episode_steps, args.seed),
        "load_average_1min_at_end": os.getloadavg()[0],
    }
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "worldmodels_speed.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
