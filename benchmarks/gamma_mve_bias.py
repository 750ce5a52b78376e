"""γ-MVE's critic targets against Monte Carlo on Pendulum-v1, one fixed set of transitions (issue 13).

A cheap check before learning runs: how far the γ-MVE target of each setting lies from the true soft Q value.

1. A checkpoint: GammaMVE with the zoo's Pendulum-v1 entry and the expansion off (``model_learning_starts``
   never reached), i.e. SAC plus online γ-model and reward-model training, for ``--train-steps`` env steps.
   It is cached in ``--cache`` (one per seed, steps and γ̃).
2. ``--n-transitions`` real transitions ``(s, a, r, s')`` drawn from its replay buffer (fixed seed).
3. The reference: the soft Q value of the checkpoint's stochastic policy,
   ``r + γ E[sum_{t>=0} γ^t (r_t - α log π(a_t | s_t))]`` from ``s'``, by ``--mc-rollouts`` rollouts of the
   true Pendulum dynamics (gymnasium's equations, batched in torch) for ``--mc-horizon`` steps
   (``0.99^600 = 0.002``; no time limit, as SB3's SAC bootstraps through timeouts).
4. For SAC's one-step target and for γ-MVE's target under each setting (``SETTINGS``): mean, bias and RMSE
   against the reference, correlation, and the mean ``cos² + sin²`` of the γ-model samples. Each target is
   one sample per transition, as SAC trains on, averaged over ``--repeats`` draws for the RMSE of the mean;
   ``noise_std`` is the spread of the draws (the noise the critic regresses on).
5. What the actor learns from: the same states with a second action ``a2 ~ U(-1, 1)`` (true next state and
   reward from the dynamics); ``contrast_corr`` is the correlation of a target's difference between the
   two actions with the reference's difference. Both differences use common random numbers (the same seeds
   for the two actions' rollouts, model samples and policy samples), so they show the systematic part.

``--one-step-error``: instead, a one-step γ-model (γ = 0, GammaMVE's default sizes) trained on the
checkpoint's buffer with each objective: the mean absolute error of its samples against the real next state,
per dimension, after 250 to 1500 updates (the one-step density is ``N(s', σ²)``, so about ``0.8 σ`` is exact).

Usage::

    OMP_NUM_THREADS=1 python benchmarks/gamma_mve_bias.py --train-steps 4000 --model-gamma 0.9
    OMP_NUM_THREADS=1 python benchmarks/gamma_mve_bias.py --one-step-error

Results: merged into ``benchmarks/results/gamma_mve_bias_Pendulum-v1.json`` keyed by (seed, steps, γ̃).
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch as th
from measure import peak_rss_mb  # benchmarks/ is the script's directory
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.type_aliases import ReplayBufferSamples

from sb3_mb.gammamodels import GammaModel, GammaMVE
from zoo.hyperparams import load_hyperparams

RESULTS = os.path.join(os.path.dirname(__file__), "results")
ENV = "Pendulum-v1"

#: name -> GammaMVE attributes set for the target (and, with "true_reward", the true reward on samples).
SETTINGS: dict[str, dict] = {
    "plain": {},
    "next state": {"expand_from_next_state": True},
    "next state, angles": {"expand_from_next_state": True, "angle_observations": ((0, 1),)},
    "next state, angles, k=4": {
        "expand_from_next_state": True,
        "angle_observations": ((0, 1),),
        "n_model_samples": 4,
    },
    "next state, angles, k=8": {
        "expand_from_next_state": True,
        "angle_observations": ((0, 1),),
        "n_model_samples": 8,
    },
    "next state, angles, H=1, k=8": {
        "expand_from_next_state": True,
        "angle_observations": ((0, 1),),
        "value_expansion_horizon": 1,
        "n_model_samples": 8,
    },
    "next state, angles, H=1": {
        "expand_from_next_state": True,
        "angle_observations": ((0, 1),),
        "value_expansion_horizon": 1,
    },
    "clip": {"clip_observations": True},
    "angles": {"angle_observations": ((0, 1),)},
    "clip+angles": {"clip_observations": True, "angle_observations": ((0, 1),)},
    "angles, k=4": {"angle_observations": ((0, 1),), "n_model_samples": 4},
    "angles, k=16": {"angle_observations": ((0, 1),), "n_model_samples": 16},
    "plain, k=16": {"n_model_samples": 16},
    "angles, H=1": {"angle_observations": ((0, 1),), "value_expansion_horizon": 1},
    "angles, H=2": {"angle_observations": ((0, 1),), "value_expansion_horizon": 2},
    "angles, H=5": {"angle_observations": ((0, 1),), "value_expansion_horizon": 5},
    "plain, true reward": {"true_reward": True},
    "next state, angles, true reward": {
        "expand_from_next_state": True,
        "angle_observations": ((0, 1),),
        "true_reward": True,
    },
    "angles, true reward": {"angle_observations": ((0, 1),), "true_reward": True},
}


def pendulum_step(theta: th.Tensor, theta_dot: th.Tensor, torque: th.Tensor):
    """Gymnasium's Pendulum-v1 equations (g = 10, m = l = 1, dt = 0.05), batched: new state and reward."""
    torque = torque.clamp(-2.0, 2.0)
    angle = (theta + np.pi) % (2 * np.pi) - np.pi
    reward = -(angle**2 + 0.1 * theta_dot**2 + 0.001 * torque**2)
    new_dot = (theta_dot + (3 * 10.0 / 2 * th.sin(theta) + 3.0 * torque) * 0.05).clamp(-8.0, 8.0)
    return theta + new_dot * 0.05, new_dot, reward


def pendulum_reward(obs: th.Tensor, actions: th.Tensor) -> th.Tensor:
    """The true reward of observations ``(cos, sin, θ̇)`` (off the circle: the angle of the point) and SAC's
    actions in ``[-1, 1]`` (torque ``2a``)."""
    angle = th.atan2(obs[..., 1], obs[..., 0])
    torque = (2.0 * actions[..., 0]).clamp(-2.0, 2.0)
    return -(angle**2 + 0.1 * obs[..., 2] ** 2 + 0.001 * torque**2)


@th.no_grad()
def monte_carlo_soft_values(model: GammaMVE, obs: th.Tensor, n_rollouts: int, horizon: int) -> th.Tensor:
    """``E[sum_t γ^t (r_t - α log π(a_t | s_t))]`` from ``obs (B, 3)``, stochastic actor: ``(B,)``."""
    ent_coef = float(th.exp(model.log_ent_coef)) if model.log_ent_coef is not None else model.ent_coef
    obs = obs.repeat(n_rollouts, 1)
    theta, theta_dot = th.atan2(obs[:, 1], obs[:, 0]), obs[:, 2].clone()
    total, discount = th.zeros_like(theta), 1.0
    for _ in range(horizon):
        state = th.stack([th.cos(theta), th.sin(theta), theta_dot], dim=-1)
        actions, log_prob = model.actor.action_log_prob(state)
        theta, theta_dot, reward = pendulum_step(theta, theta_dot, 2.0 * actions[:, 0])
        total += discount * (reward - ent_coef * log_prob.reshape(-1))
        discount *= model.gamma
    return total.view(n_rollouts, -1).mean(0)


@th.no_grad()
def sac_target(model: GammaMVE, rewards, next_obs, dones, discounts) -> th.Tensor:
    """SAC's target ``r + (1 - d) discount (min Q'(s', a') - α log π(a' | s'))``, ``(B,)`` (one ``a'``)."""
    ent_coef = th.exp(model.log_ent_coef) if model.log_ent_coef is not None else model.ent_coef_tensor
    next_actions, log_prob = model.actor.action_log_prob(next_obs)
    q = th.cat(model.critic_target(next_obs, next_actions), dim=1).min(dim=1).values
    return rewards + (1 - dones) * discounts * (q - ent_coef * log_prob.reshape(-1))


def checkpoint(
    seed: int, steps: int, model_gamma: float, cache: str, objective: str = "regression"
) -> GammaMVE:
    """The cached checkpoint (trained on a miss): SAC plus model training, expansion off. The zoo entry's SAC
    settings with the earlier γ-MVE entry's model (H = 3, expansion from ``(s, a)``, no projection, the
    γ-model ``objective``), so that the settings below are changes from it."""
    suffix = "" if objective == "regression" else f"_{objective}"
    path = os.path.join(cache, f"gammamve_seed{seed}_steps{steps}_mg{model_gamma}{suffix}")
    env = make_vec_env(ENV, n_envs=1, seed=seed)
    if os.path.exists(path + ".zip"):
        model = GammaMVE.load(path + ".zip", env=env)
        model.load_replay_buffer(path + "_buffer.pkl")
        return model
    kwargs = {
        **load_hyperparams("gammamve", ENV),
        "model_gamma": model_gamma,
        "value_expansion_horizon": 3,
        "expand_from_next_state": False,
        "angle_observations": (),
        "gamma_model_kwargs": {"objective": objective},
        "model_learning_starts": 10**9,
    }
    model = GammaMVE("MlpPolicy", env, seed=seed, **kwargs)
    start = time.perf_counter()
    model.learn(steps)
    print(f"checkpoint: {steps} steps in {time.perf_counter() - start:.0f} s", flush=True)
    os.makedirs(cache, exist_ok=True)
    model.save(path + ".zip")
    model.save_replay_buffer(path + "_buffer.pkl")
    return model


def one_step_sample_error(model: GammaMVE, objectives: list[str], checkpoints=(250, 500, 1000, 1500)) -> dict:
    """Mean absolute error per dimension of one-step γ-model samples (4 per pair) against the real next
    states of 2048 held transitions, for each objective, at each number of updates (batch 256)."""
    np.random.seed(0)  # noqa: NPY002 (SB3's ReplayBuffer.sample draws from the legacy global state)
    th.manual_seed(0)
    test = model.replay_buffer.sample_real(2048)
    errors = {}
    for objective in objectives:
        gamma_model = GammaModel(3, 1, **{**model.gamma_model_kwargs, "gamma": 0.0, "objective": objective})
        for update in range(1, max(checkpoints) + 1):
            data = model.replay_buffer.sample_real(256)
            next_obs = data.next_observations.float()
            next_actions = model.actor.action_log_prob(next_obs)[0].detach()
            gamma_model.update(data.observations.float(), data.actions.float(), next_obs, next_actions)
            if update in checkpoints:
                samples = gamma_model.sample(test.observations.float(), test.actions.float(), 4)
                error = (samples - test.next_observations.float()).abs().mean((0, 1)).tolist()
                errors[f"{objective}/{update}"] = error
                print(objective, update, np.round(error, 3), flush=True)
    return errors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--train-steps", type=int, default=4000)
    parser.add_argument("--model-gamma", type=float, default=0.9)
    parser.add_argument("--n-transitions", type=int, default=2048)
    parser.add_argument("--mc-rollouts", type=int, default=8)
    parser.add_argument("--mc-horizon", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS))
    parser.add_argument("--cache", default="/tmp/gamma_mve_bias")
    parser.add_argument("--objective", default="regression", help="the checkpoint γ-model's objective")
    parser.add_argument("--one-step-error", action="store_true")
    args = parser.parse_args()
    th.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    model = checkpoint(args.seed, args.train_steps, args.model_gamma, args.cache, args.objective)
    path = os.path.join(RESULTS, f"gamma_mve_bias_{ENV}.json")
    results = json.load(open(path)) if os.path.exists(path) else {"env": ENV, "runs": []}
    if args.one_step_error:
        results["one_step_sample_error"] = {
            "checkpoint": {
                "seed": args.seed,
                "train_steps": args.train_steps,
                "model_gamma": args.model_gamma,
            },
            "mean_abs_error_per_dim": one_step_sample_error(model, ["regression", "likelihood"]),
        }
        with open(path, "w") as f:
            json.dump(results, f, indent=2)
        return
    model.model_learning_starts = 0  # expanding from now on (the checkpoint's model updates all count)
    th.manual_seed(1234)
    np.random.seed(1234)  # noqa: NPY002 (SB3's ReplayBuffer.sample draws from the legacy global state)
    data = model.replay_buffer.sample_real(args.n_transitions)
    data = ReplayBufferSamples(*(t.float() if t is not None else None for t in data))
    # The same states with another action, a2 ~ U(-1, 1), and its true next state and reward.
    obs = data.observations
    other = 2 * th.rand_like(data.actions) - 1
    theta, theta_dot, other_rewards = pendulum_step(
        th.atan2(obs[:, 1], obs[:, 0]), obs[:, 2], 2 * other[:, 0]
    )
    other_next = th.stack([th.cos(theta), th.sin(theta), theta_dot], dim=-1)
    data2 = ReplayBufferSamples(obs, other, other_next, data.dones, other_rewards[:, None])
    start = time.perf_counter()
    references = []
    for batch in (data, data2):
        th.manual_seed(99)  # common random numbers: the two actions' rollouts share their noise
        soft_values = monte_carlo_soft_values(
            model, batch.next_observations, args.mc_rollouts, args.mc_horizon
        )
        references.append(batch.rewards[:, 0] + (1 - batch.dones[:, 0]) * model.gamma * soft_values)
    reference, contrast = references[0], references[0] - references[1]
    print(f"Monte Carlo reference: mean {float(reference.mean()):.1f} ({time.perf_counter() - start:.0f} s)")

    def summary(targets: list[th.Tensor], contrasts: list[th.Tensor], extra: dict | None = None) -> dict:
        """Bias / RMSE / correlation against the reference; ``contrast_corr``: correlation of the target's
        difference between the two actions with the reference's (what the actor learns from)."""
        stacked = th.stack(targets)
        mean_target = stacked.mean(0)
        error = stacked - reference
        mean_contrast = th.stack(contrasts).mean(0)
        return {
            "mean": float(stacked.mean()),
            "bias": float(error.mean()),
            "rmse_single": float(error.pow(2).mean().sqrt()),
            "rmse_of_mean": float((mean_target - reference).pow(2).mean().sqrt()),
            "corr": float(np.corrcoef(mean_target.numpy(), reference.numpy())[0, 1]),
            "noise_std": float(stacked.var(0).mean().sqrt()) if len(targets) > 1 else float("nan"),
            "contrast_corr": float(np.corrcoef(mean_contrast.numpy(), contrast.numpy())[0, 1]),
            **(extra or {}),
        }

    def sac_targets(batch: ReplayBufferSamples) -> th.Tensor:
        gammas = th.full_like(batch.rewards[:, 0], model.gamma)
        return sac_target(model, batch.rewards[:, 0], batch.next_observations, batch.dones[:, 0], gammas)

    rows = {"reference": {"mean": float(reference.mean())}}
    sac, sac_contrasts = [], []
    for repeat in range(args.repeats):
        th.manual_seed(repeat)
        sac.append(sac_targets(data))
        th.manual_seed(repeat)
        sac_contrasts.append(sac[-1] - sac_targets(data2))
    rows["sac"] = summary(sac, sac_contrasts)
    with th.no_grad():
        q_values = [
            th.cat(model.critic(b.observations, b.actions), dim=1).min(dim=1).values for b in (data, data2)
        ]
    rows["critic Q(s, a)"] = summary([q_values[0]], [q_values[0] - q_values[1]])
    original = {name: getattr(model, name) for name in ("predicted_rewards", "project_observations")}
    defaults = {
        "clip_observations": False,
        "angle_observations": (),
        "n_model_samples": 1,
        "expand_from_next_state": False,
        "value_expansion_horizon": model.value_expansion_horizon,
    }
    for name in args.settings:
        setting = dict(SETTINGS[name])
        true_reward = setting.pop("true_reward", False)
        for key, value in {**defaults, **setting}.items():
            setattr(model, key, value)
        model.predicted_rewards = pendulum_reward if true_reward else original["predicted_rewards"]
        norms = []

        def project(obs, norms=norms):
            norms.append(float((obs[:, 0] ** 2 + obs[:, 1] ** 2).mean()))  # before the projection
            return original["project_observations"](obs)

        model.project_observations = project
        start = time.perf_counter()

        def expanded_targets(batch: ReplayBufferSamples) -> th.Tensor:
            out = model._expansion(batch)
            return sac_target(
                model, out.rewards[:, 0], out.next_observations, batch.dones[:, 0], out.discounts[:, 0]
            )

        targets, contrasts = [], []
        for repeat in range(args.repeats):
            th.manual_seed(repeat)
            targets.append(expanded_targets(data))
        seconds = (time.perf_counter() - start) / args.repeats
        for repeat in range(args.repeats):
            th.manual_seed(repeat)
            contrasts.append(targets[repeat] - expanded_targets(data2))
        rows[name] = summary(
            targets,
            contrasts,
            {"raw_norm2": float(np.mean(norms)), "ms_per_batch": 1e3 * seconds, "peak_rss_mb": peak_rss_mb()},
        )
        model.project_observations = original["project_observations"]
        model.predicted_rewards = original["predicted_rewards"]
    for name, row in rows.items():
        print(f"{name:24s} " + "  ".join(f"{k} {v:8.2f}" for k, v in row.items()), flush=True)
    key = {"seed": args.seed, "train_steps": args.train_steps, "model_gamma": args.model_gamma}
    if args.objective != "regression":
        key["objective"] = args.objective
    old = [r for r in results["runs"] if r["key"] == key]
    merged = {**(old[0]["rows"] if old else {}), **rows}  # settings measured earlier stay
    results["runs"] = [r for r in results["runs"] if r["key"] != key] + [
        {"key": key, "n_transitions": args.n_transitions, "mc_rollouts": args.mc_rollouts, "rows": merged}
    ]
    os.makedirs(RESULTS, exist_ok=True)
    with open(path, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
