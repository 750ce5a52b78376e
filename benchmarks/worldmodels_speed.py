"""World Models' speed on CarRacing-v3, env steps per second on one thread per process, against the raw env.

- raw env: the bare Gymnasium env under uniformly random actions (resets included);
- collection: ``WorldModels.learn`` collecting random rollouts into the RAM buffer and into the disk store
  (:class:`~sb3_mb.worldmodels.storage.DiskEpisodeReplayBuffer`);
- controller evaluation: one CMA-ES generation (``train_controller``) of ``--population`` candidates x 1
  rollout in the real env with the paper's V (ConvVAE, z 32) and M (LSTM 256) on every step:

  - ``one by one, LSTM module``: in-process, one episode after the other, M's step through ``nn.LSTM`` over a
    one-step sequence (the code before issue 15, patched back in for this row);
  - ``one by one``: the same with M's step as ``torch.lstm_cell`` (``controller_batch_envs=1``);
  - ``lockstep``: ``controller_batch_envs`` episodes at a time (default 8), one batched V / C / M call per
    step (:class:`~sb3_mb.worldmodels.cmaes.BatchedRolloutEvaluator`);
  - ``n_workers=2``: two worker processes, one episode after the other in each (their start is timed too).

Peak RSS (``peak_rss_mb``: this process and its waited-for children) is read after each measurement.

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
from sb3_mb.worldmodels.mdn_rnn import MDNRNN
from sb3_mb.worldmodels.storage import DiskEpisodeReplayBuffer

sys.path.insert(0, str(Path(__file__).parent))  # the sibling scripts, whatever the working folder
from measure import peak_rss_mb  # noqa: E402
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


def lstm_module_step(self: MDNRNN, z: th.Tensor, action: th.Tensor, hidden: tuple[th.Tensor, th.Tensor]):
    """M's step before issue 15: ``nn.LSTM`` over a sequence of one step."""
    h, c = hidden
    _, (h, c) = self.lstm(th.cat([z, action], dim=-1)[:, None], (h[None], c[None]))
    return h[0], c[0]


def controller_rate(
    args: argparse.Namespace, n_workers: int = 1, batch_envs: int = 1, lstm_module: bool = False
) -> dict[str, float]:
    model = WorldModels(
        "CnnPolicy",
        gym.make(args.env, max_episode_steps=args.episode_steps),
        population_size=args.population,
        rollouts_per_candidate=1,
        n_generations=1,
        n_workers=n_workers,
        controller_batch_envs=batch_envs,
        controller_env_fn=functools.partial(gym.make, args.env, max_episode_steps=args.episode_steps),
        log_images=False,
        buffer_size=1000,
        seed=args.seed,
        device="cpu",
    )
    model.set_logger(configure(None, []))
    step = MDNRNN.step
    if lstm_module:
        MDNRNN.step = lstm_module_step
    try:
        start = time.perf_counter()
        stats = model.train_controller()
        seconds = time.perf_counter() - start
    finally:
        MDNRNN.step = step
    steps = model.logger.name_to_value["controller/env_steps"]
    return {
        "env_steps": steps,
        "seconds": seconds,
        "steps_per_s": steps / seconds,
        "best_return": stats["best"],
        "mean_return": stats["mean"],
        "peak_rss_mb": peak_rss_mb(),  # the process's peak so far, and its waited-for children's
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="CarRacing-v3")
    parser.add_argument("--steps", type=int, default=1000, help="collected steps per measurement")
    parser.add_argument("--episode-steps", type=int, default=100)
    parser.add_argument("--population", type=int, default=8)
    parser.add_argument("--batch-envs", type=int, default=8, help="envs in lockstep (controller_batch_envs)")
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
        "peak_rss_mb_after_collection": peak_rss_mb(),
        "controller_evaluation": {
            "one by one, LSTM module (before)": controller_rate(args, lstm_module=True),
            "one by one": controller_rate(args),
            f"lockstep, {args.batch_envs} envs": controller_rate(args, batch_envs=args.batch_envs),
            "n_workers=2": controller_rate(args, n_workers=2),
        },
        "raw_env_steps_per_s_after": raw_env_rate(args.env, args.steps, args.episode_steps, args.seed),
        "load_average_1min_at_end": os.getloadavg()[0],
        "peak_rss_mb": peak_rss_mb(),
    }
    raw = (result["raw_env_steps_per_s_before"] + result["raw_env_steps_per_s_after"]) / 2
    for row in result["controller_evaluation"].values():
        row["ratio_to_raw_env"] = row["steps_per_s"] / raw  # against the mean of the two raw measurements
    print(json.dumps(result, indent=2))
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "worldmodels_speed.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
