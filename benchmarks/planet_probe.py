"""Linear probes of PlaNet's latents for the true cartpole state: RSSM, the purely stochastic SSM and the
purely deterministic RNN (Hafner et al. 2019, arXiv:1811.04551, Sec. 5 and Fig. 2; Rose's fork's
``collect_latents``; issue 14).

The paper argues that the RSSM needs both paths: the deterministic one to remember over many steps, the
stochastic one to represent what the observations leave uncertain. Here each model is trained on the "random
dataset" protocol of Rose's fork (``random_dataset=True``: uniformly random actions only, no planning while
learning), then :func:`~sb3_mb.planet.collect_latents` runs it on held-out episodes (other env seeds) and
:func:`~sb3_mb.planet.linear_probe_r2` fits a least-squares linear map from a latent to the true state
(from MuJoCo's ``qpos`` and ``qvel``: cart position, cos and sin of the pole angle, cart and pole velocities)
and scores R² on a held-out 20 % of the steps.

Latents: ``belief`` (the deterministic ``h``; empty for the SSM), ``posterior_mean``, ``posterior_sample``
(the stochastic ``s``; the RNN's equals its mean) and ``features`` (``[sample, belief]``, what the decoder and
the reward head read). Reference rows: the same probe from what one observation shows (``observation``).

Observations, ``--observations``: ``state`` (the 5-D vector: cart position, cos and sin of the pole angle,
the two velocities) and ``positions`` (the first 3 only: the velocities must be inferred from the history, as
from one image; a cheap stand-in for pixels, whose training does not fit a CPU session). Sizes (all models):
belief 64, state 16, hidden 64, MLP encoder / decoder 64, reward head 2 x 64, batch 32 x 30, 50 updates an
episode, ``--episodes`` random episodes. The probe episodes are the same for every model: the same env seeds
and the same uniformly random actions (:class:`RandomActions`, as the training data), so the R² compare the
models on the same states; the planner is never used (and is made tiny: CEM horizon 2, 8 candidates, 1
iteration, which ``predict`` still runs). ``--planner-actions`` lets the planner act instead (the models
then see different states).

Usage::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 MUJOCO_GL=egl python benchmarks/planet_probe.py

Writes ``benchmarks/results/planet_probe.json`` after every run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import gymnasium
import numpy as np
import torch as th
from measure import peak_rss_mb  # benchmarks/ is the script's directory
from stable_baselines3.common.env_util import make_vec_env

from sb3_mb import PlaNet
from sb3_mb.planet import collect_latents, linear_probe_r2

VARIANTS = {"rssm": {}, "ssm": dict(transition_model="ssm"), "rnn": dict(mean_only=True)}
POLICY = dict(
    belief_size=64,
    state_size=16,
    hidden_size=64,
    mlp_hidden_sizes=(64,),
    reward_hidden_sizes=(64, 64),
    planning_horizon=2,
    n_candidates=8,
    n_elites=2,
    n_iterations=1,
)
KWARGS = dict(batch_size=32, sequence_length=30, seed_episodes=5, updates_per_episode=50, random_dataset=True)
TARGETS = ("cart_position", "pole_cos", "pole_sin", "cart_velocity", "pole_angular_velocity")


class PositionsOnly(gymnasium.ObservationWrapper):
    """Keeps the first ``n`` entries of a flat observation (dm_control cartpole: position, cos, sin)."""

    def __init__(self, env: gymnasium.Env, n: int = 3):
        super().__init__(env)
        space = env.observation_space
        self.n = n
        self.observation_space = gymnasium.spaces.Box(space.low[:n], space.high[:n], dtype=space.dtype)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return observation[: self.n]


class RandomActions:
    """``predict`` of a PlaNet agent that filters as the agent does but acts uniformly at random (a seeded
    generator), for :func:`~sb3_mb.planet.collect_latents`: the latents are the agent's, the actions the
    same for every agent. The state carries the action taken (the model's input at the next step)."""

    def __init__(self, model: PlaNet, seed: int):
        self.model, self.rng = model, np.random.default_rng(seed)
        space = model.action_space
        self.low, self.high = space.low, space.high

    def predict(self, observation, state=None, episode_start=None, deterministic=False):
        _, state = self.model.predict(observation, state, episode_start, deterministic)
        action = self.rng.uniform(self.low, self.high).astype(self.model.action_space.dtype)
        scaled = self.model.policy.scale_action(action).astype(np.float32)  # [-1, 1], the model's input
        return action, state._replace(prev_action=scaled.reshape(state.prev_action.shape))


def make_env(env_id: str, observations: str) -> gymnasium.Env:
    env = gymnasium.make(env_id)
    return PositionsOnly(env) if observations == "positions" else env


def probe_targets(physical_state: np.ndarray) -> np.ndarray:
    """The probe's targets ``(n, 5)`` from ``qpos``/``qvel`` ``(n, 4)``: cart position, cos and sin of the
    pole angle (MuJoCo's hinge angle is unwrapped: a pole that has turned over is 2 pi further, which no
    linear map of the latents can follow), cart and pole velocities."""
    x, angle, velocity, angular_velocity = physical_state.T
    return np.stack([x, np.cos(angle), np.sin(angle), velocity, angular_velocity], axis=1)


def observation_of(targets: np.ndarray, observations: str) -> np.ndarray:
    """What one observation shows, from :func:`probe_targets`: all of it for ``state``, the first 3
    (cart position, cos, sin) for ``positions``."""
    return targets if observations == "state" else targets[:, :3]


def probe(latents: dict[str, np.ndarray], observations: str) -> dict[str, dict]:
    """R² per target and its mean, for each latent (a latent of size 0 is left out)."""
    targets = probe_targets(latents["physical_state"])
    features = {
        "belief": latents["belief"],
        "posterior_mean": latents["posterior_mean"],
        "posterior_sample": latents["posterior_sample"],
        "features": np.concatenate([latents["posterior_sample"], latents["belief"]], axis=1),
        "observation": observation_of(targets, observations),
    }
    out = {}
    for name, x in features.items():
        if x.shape[1] == 0:
            continue
        r2 = linear_probe_r2(x, targets, holdout=0.2, seed=0)
        out[name] = dict(zip(TARGETS, map(float, r2), strict=True), mean=float(np.nanmean(r2)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="sb3_mb/CartpoleSwingup-v0")
    parser.add_argument(
        "--observations", nargs="+", choices=("state", "positions"), default=["positions", "state"]
    )
    parser.add_argument("--variants", nargs="+", choices=tuple(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--episodes", type=int, default=30, help="random training episodes")
    parser.add_argument("--probe-episodes", type=int, default=10, help="held-out episodes for the probe")
    parser.add_argument("--planner-actions", action="store_true", help="the planner acts in the probe")
    parser.add_argument("--latents-dir", default=None, help="also write each run's latents there (.npz)")
    parser.add_argument("--resume", action="store_true", help="keep (and skip) the runs already in --output")
    parser.add_argument(
        "--output", default=os.path.join(os.path.dirname(__file__), "results", "planet_probe.json")
    )
    args = parser.parse_args()
    if "OMP_NUM_THREADS" in os.environ:
        th.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

    results = {
        "env": args.env,
        "threads": th.get_num_threads(),
        "torch": th.__version__,
        "machine": platform.processor() or platform.machine(),
        "targets": list(TARGETS),
        "probe_actions": "planner" if args.planner_actions else "uniformly random, the same for every model",
        "runs": {},
    }
    if args.resume and os.path.exists(args.output):
        with open(args.output) as file:
            results["runs"] = json.load(file)["runs"]
    for observations in args.observations:
        for seed in args.seeds:
            for variant, extra in VARIANTS.items():
                if variant not in args.variants:
                    continue
                key = f"{observations}/{variant}/seed{seed}"
                if key in results["runs"]:
                    continue
                env = make_vec_env(lambda o=observations: make_env(args.env, o), n_envs=1, seed=seed)
                episode_length = env.envs[0].spec.max_episode_steps
                policy_kwargs = dict(POLICY, **extra)
                model = PlaNet("MlpPolicy", env, seed=seed, policy_kwargs=policy_kwargs, **KWARGS)
                start = time.perf_counter()
                model.learn(args.episodes * episode_length)
                wall = time.perf_counter() - start
                probe_env = make_env(args.env, observations)
                probe_env.reset(seed=10_000 + seed)  # held-out episodes: seeds the training never saw
                probe_env.action_space.seed(10_000 + seed)
                agent = model if args.planner_actions else RandomActions(model, 10_000 + seed)
                path = None
                if args.latents_dir:
                    os.makedirs(args.latents_dir, exist_ok=True)
                    path = os.path.join(args.latents_dir, f"{observations}_{variant}_seed{seed}.npz")
                latents = collect_latents(agent, probe_env, args.probe_episodes, path=path)
                r2 = probe(latents, observations)
                results["runs"][key] = dict(
                    observations=observations,
                    variant=variant,
                    seed=seed,
                    episodes=args.episodes,
                    probe_steps=len(latents["episode"]),
                    r2=r2,
                    train_seconds=wall,
                    peak_rss_mb=peak_rss_mb(),  # this process's peak so far (its earlier runs included)
                    kwargs=KWARGS,
                    policy_kwargs=policy_kwargs,
                )
                summary = ", ".join(f"{name} {values['mean']:.3f}" for name, values in r2.items())
                print(f"{key}: mean R² {summary} ({wall:.0f} s)", flush=True)
                os.makedirs(os.path.dirname(args.output), exist_ok=True)
                with open(args.output, "w") as file:
                    json.dump(results, file, indent=2, default=str)


if __name__ == "__main__":
    main()
