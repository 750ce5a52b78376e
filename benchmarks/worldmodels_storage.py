"""Peak RSS of World Models' data stage on CarRacing-v3 with the disk store, at several numbers of rollouts.

Each size runs in a fresh process: ``WorldModels`` collects ``n`` uniformly random rollouts of
``--episode-steps`` steps (cut by a TimeLimit) into a
:class:`~sb3_mb.worldmodels.storage.DiskEpisodeReplayBuffer` of ``--buffer-size`` records (sparse files),
then one V epoch over the stored frames (the paper's ConvVAE, minibatches of 100) and the encoding of every
frame (M's training data). The process's peak RSS (``measure.peak_rss_mb``) is read at the end; collection
speed (env steps/s) is measured against the raw env's rate, random actions, in the same process.

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/worldmodels_storage.py --rollouts 20 100

Writes ``benchmarks/results/worldmodels_storage.json`` (``--output`` for another file).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
from measure import peak_rss_mb  # benchmarks/ is the script's directory

RESULTS = Path(__file__).parent / "results"


def raw_env_rate(env_id: str, steps: int, episode_steps: int, seed: int) -> float:
    """Env steps per second of the bare Gymnasium env under uniformly random actions (resets included)."""
    env = gym.make(env_id, max_episode_steps=episode_steps)
    env.reset(seed=seed)
    env.action_space.seed(seed)
    start = time.perf_counter()
    for _ in range(steps):
        _, _, terminated, truncated, _ = env.step(env.action_space.sample())
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


def child(args: argparse.Namespace) -> dict:
    import torch as th

    from sb3_mb import WorldModels
    from sb3_mb.worldmodels.storage import DiskEpisodeReplayBuffer

    th.set_num_threads(1)
    n = args.child
    store = tempfile.mkdtemp(prefix="wm_storage_bench_", dir=args.store_dir)
    env = gym.make(args.env, max_episode_steps=args.episode_steps)
    model = WorldModels(
        "CnnPolicy",
        env,
        n_random_rollouts=n + 1,  # no round: collection, then V by hand
        buffer_size=args.buffer_size,
        vae_epochs=1,
        log_images=False,
        replay_buffer_class=DiskEpisodeReplayBuffer,
        replay_buffer_kwargs=dict(path=store),
        seed=args.seed,
        device="cpu",
    )
    raw = raw_env_rate(args.env, 300, args.episode_steps, args.seed)
    start = time.perf_counter()
    model.learn(n * args.episode_steps)
    collect_s = time.perf_counter() - start
    buffer = model.replay_buffer
    start = time.perf_counter()
    losses = model.train_vae()
    vae_s = time.perf_counter() - start
    start = time.perf_counter()
    records = np.arange(buffer.buffer_size)[: buffer.n_records]  # the ring has not wrapped
    model.encode_records(records)
    encode_s = time.perf_counter() - start
    peak = peak_rss_mb()
    return {
        "rollouts": buffer.n_episodes_added,
        "env_steps": int(model.num_timesteps),
        "stored_frames": int(buffer.n_records),
        "disk_gb": buffer.disk_bytes() / 1e9,
        "frames_gb_if_in_ram": buffer.n_records * buffer.observations.record_bytes / 1e9,
        "peak_rss_gb": peak["self"] * 2**20 / 1e9,  # the key of the earlier results
        "peak_rss_mb": peak,
        "collection_steps_per_s": model.num_timesteps / collect_s,
        "raw_env_steps_per_s": raw,
        "vae_epoch_s": vae_s,
        "vae_loss": losses["loss"],
        "encode_s": encode_s,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="CarRacing-v3")
    parser.add_argument("--rollouts", type=int, nargs="+", default=[20, 100])
    parser.add_argument("--episode-steps", type=int, default=100)
    parser.add_argument("--buffer-size", type=int, default=1_001_000, help="records (1000 paper episodes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--store-dir", default=None, help="where the stores go (default: the temp folder)")
    parser.add_argument("--output", default=str(RESULTS / "worldmodels_storage.json"))
    parser.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print("RESULT " + json.dumps(child(args)))
        return
    rows = []
    for n in args.rollouts:
        command = [sys.executable, __file__, "--child", str(n), "--env", args.env]
        command += ["--episode-steps", str(args.episode_steps), "--buffer-size", str(args.buffer_size)]
        command += ["--seed", str(args.seed)] + (["--store-dir", args.store_dir] if args.store_dir else [])
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        row = json.loads(next(line for line in output.splitlines() if line.startswith("RESULT "))[7:])
        print(json.dumps(row))
        rows.append(row)
    Path(args.output).parent.mkdir(exist_ok=True, parents=True)
    result = {
        "env": args.env,
        "episode_steps": args.episode_steps,
        "buffer_size": args.buffer_size,
        "seed": args.seed,
        "command": "python benchmarks/worldmodels_storage.py " + " ".join(sys.argv[1:]),
        "runs": rows,
    }
    Path(args.output).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
