"""Latent dumps of a PlaNet agent and a linear probe of how well they predict the true physical state.

``collect_latents`` runs the agent in a dm_control task and records, per agent step, the posterior sample,
the posterior mean and the belief of the :class:`~sb3_mb.planet.PlaNetState` returned by ``predict``,
beside the true physical state (MuJoCo's ``qpos`` and ``qvel``); ``linear_probe_r2`` fits a least-squares
map from latents to that state and reports R² per state dimension on held-out steps;
``LatentProbeCallback`` runs both during training and logs ``train/probe_r2_belief`` and
``train/probe_r2_posterior``.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import gymnasium
import numpy as np
from stable_baselines3.common.callbacks import BaseCallback


def _physics_of(env: gymnasium.Env) -> Any:
    """The dm_control ``physics`` under ``env`` (shimmy's ``DmControlCompatibilityV0`` holds it)."""
    physics = getattr(getattr(env, "unwrapped", None), "physics", None)
    data = getattr(physics, "data", None)
    if data is None or not hasattr(data, "qpos") or not hasattr(data, "qvel"):
        raise ValueError(
            "collect_latents needs a dm_control environment (shimmy DmControlCompatibilityV0, e.g. "
            "'sb3_mb/CartpoleBalance-v0') whose env.unwrapped.physics.data has qpos and qvel to read the "
            f"true state; got {type(getattr(env, 'unwrapped', env)).__name__}"
        )
    return physics


def collect_latents(
    model: Any,
    env: gymnasium.Env,
    n_episodes: int,
    path: str | os.PathLike | None = None,
    deterministic: bool = True,
) -> dict[str, np.ndarray]:
    """Run a PlaNet agent for ``n_episodes`` and record its latents and the true physical state per step.

    Each agent step ``t`` records the state ``predict`` returns after reading observation ``o_t`` (the
    posterior ``q(s_t | h_t, o_t)`` and the belief ``h_t``) and the physical state at the time ``o_t``
    was observed, before the action is applied.

    :param model: a :class:`~sb3_mb.planet.PlaNet` (anything with RecurrentPPO's ``predict`` returning a
        :class:`~sb3_mb.planet.PlaNetState`).
    :param env: one (not vectorised) Gymnasium env wrapping a dm_control task, e.g.
        ``gymnasium.make("sb3_mb/CartpoleBalance-v0")``.
    :param n_episodes: number of episodes, at least 1.
    :param path: if given, the arrays are also written there with ``np.savez`` (to a temporary file beside
        it, then ``os.replace``, so a reader never sees a half-written file); the name is used as given.
    :param deterministic: passed to ``predict``.
    :return: arrays over the ``n_steps`` agent steps of all episodes, in order:
        ``posterior_sample``, ``posterior_mean`` ``(n_steps, state_size)``; ``belief``
        ``(n_steps, belief_size)``; ``physical_state`` ``(n_steps, nq + nv)`` (``qpos`` then ``qvel``);
        ``action`` ``(n_steps, *action_shape)``; ``episode`` ``(n_steps,)`` int64, the episode index.
    :raises ValueError: for ``n_episodes < 1``, a vectorised env, or an env that is not a dm_control task.
    """
    if n_episodes < 1:
        raise ValueError(f"collect_latents: n_episodes must be at least 1, got {n_episodes}")
    if not isinstance(env, gymnasium.Env):
        raise ValueError(
            f"collect_latents needs one (not vectorised) gymnasium.Env, got {type(env).__name__}"
        )
    physics = _physics_of(env)
    records: dict[str, list[np.ndarray]] = {
        key: [] for key in ("posterior_sample", "posterior_mean", "belief", "physical_state", "action")
    }
    episodes: list[int] = []
    for episode in range(n_episodes):
        observation, _ = env.reset()
        state, episode_start, done = None, True, False
        while not done:
            physical_state = np.concatenate([physics.data.qpos, physics.data.qvel]).astype(np.float64)
            action, state = model.predict(
                observation, state=state, episode_start=np.array([episode_start]), deterministic=deterministic
            )
            records["posterior_sample"].append(np.asarray(state.posterior_sample[0]))
            records["posterior_mean"].append(np.asarray(state.posterior_mean[0]))
            records["belief"].append(np.asarray(state.belief[0]))
            records["physical_state"].append(physical_state)
            records["action"].append(np.asarray(action))
            episodes.append(episode)
            observation, _, terminated, truncated, _ = env.step(action)
            episode_start, done = False, terminated or truncated
    data = {key: np.stack(values) for key, values in records.items()}
    data["episode"] = np.asarray(episodes, dtype=np.int64)
    if path is not None:
        path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(path))
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".latents-", suffix=".npz", delete=False) as f:
            temporary = f.name
            try:
                np.savez(f, **data)
            except BaseException:
                os.unlink(temporary)
                raise
        os.replace(temporary, path)
    return data


def linear_probe_r2(
    features: np.ndarray, targets: np.ndarray, holdout: float = 0.2, seed: int = 0
) -> np.ndarray:
    """R² of a least-squares linear map (with bias) from features to targets, on held-out rows.

    The rows are shuffled with ``numpy.random.default_rng(seed)``; a share ``holdout`` of them (at least
    one) is held out, the map is fitted on the rest with ``numpy.linalg.lstsq`` (minimum norm when
    under-determined) and scored on the held-out rows: ``R² = 1 - SS_res / SS_tot`` per target dimension,
    ``SS_tot`` about the held-out mean. 1 is a perfect linear fit; 0 is no better than the mean; it is
    negative when worse. A target dimension that is constant on the held-out rows gets NaN.

    :param features: ``(n_samples, n_features)``, e.g. the latents of :func:`collect_latents`.
    :param targets: ``(n_samples, n_targets)`` or ``(n_samples,)``, e.g. its ``physical_state``.
    :param holdout: share of the rows held out, in ``(0, 1)``.
    :param seed: seed of the shuffle.
    :return: ``(n_targets,)`` R² per target dimension (``(1,)`` for 1-D targets).
    :raises ValueError: for mismatched row counts, a ``holdout`` outside ``(0, 1)``, or too few rows to
        leave at least one for fitting and one held out.
    """
    features = np.asarray(features, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    if targets.ndim == 1:
        targets = targets[:, None]
    if features.ndim != 2 or targets.ndim != 2 or len(features) != len(targets):
        raise ValueError(
            "linear_probe_r2: need features (n_samples, n_features) and targets (n_samples, n_targets) with "
            f"the same n_samples, got {features.shape} and {targets.shape}"
        )
    if not 0.0 < holdout < 1.0:
        raise ValueError(f"linear_probe_r2: holdout must be in (0, 1), got {holdout}")
    n_samples = len(features)
    n_test = max(1, int(round(holdout * n_samples)))
    if n_samples - n_test < 1:
        raise ValueError(f"linear_probe_r2: {n_samples} rows leave none to fit on with holdout={holdout}")
    order = np.random.default_rng(seed).permutation(n_samples)
    test, train = order[:n_test], order[n_test:]
    with_bias = np.concatenate([features, np.ones((n_samples, 1))], axis=1)
    weights, *_ = np.linalg.lstsq(with_bias[train], targets[train], rcond=None)
    residual = ((targets[test] - with_bias[test] @ weights) ** 2).sum(axis=0)
    total = ((targets[test] - targets[test].mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(total > 0, 1.0 - residual / np.where(total > 0, total, 1.0), np.nan)


class LatentProbeCallback(BaseCallback):
    """Log how well PlaNet's latents linearly predict the true physical state, periodically during training.

    Every ``probe_freq`` calls (env steps of the vectorised training env, as ``EvalCallback``'s
    ``eval_freq``), :func:`collect_latents` runs the agent for ``n_episodes`` episodes of ``probe_env`` (reset
    with ``seed`` first, so every probe sees the same episodes), and :func:`linear_probe_r2` fits a linear map
    from each latent to ``physical_state`` (``qpos``, ``qvel``); the mean R² over the state dimensions
    (``nanmean``: a dimension constant on the held-out steps is left out) is recorded through SB3's logger:

    - ``train/probe_r2_belief``: from the belief ``h_t`` (not recorded for a model without one, the SSM);
    - ``train/probe_r2_posterior``: from the posterior mean of ``s_t``;
    - ``train/probe_steps``: the agent steps probed.

    The global RNGs (``random``, NumPy, torch) are restored after each probe, so a run with the probe
    learns exactly what it learns without it. The same probe as Rose's fork's ``collect_latents`` analysis
    (spec ``planet.md`` 3.2), in the manner of the paper's Sec. 5 discussion of what the latents hold.

    With the zoo, in ``hyperparams/planet.yml``::

        callback:
          - sb3_mb.planet.latents.LatentProbeCallback:
              probe_env: sb3_mb/CartpoleBalance-v0
              probe_freq: 5000

    :param probe_env: a dm_control env (one, not vectorised), or its registered id (``gymnasium.make``).
    :param probe_freq: probe every this many calls; at least 1.
    :param n_episodes: episodes per probe, at least 1; they need more than 1 step in all (the probe holds
        out a share ``holdout`` of the steps).
    :param holdout: share of the steps the probe is scored on (:func:`linear_probe_r2`).
    :param seed: seed of the probe env's reset and of the probe's shuffle.
    :param verbose: 1 prints each probe's R².
    :raises ValueError: ``probe_freq`` or ``n_episodes`` below 1; at the first probe, an env that is not a
        dm_control task (:func:`collect_latents`).
    """

    def __init__(
        self,
        probe_env: gymnasium.Env | str,
        probe_freq: int = 10_000,
        n_episodes: int = 1,
        holdout: float = 0.2,
        seed: int = 0,
        verbose: int = 0,
    ):
        super().__init__(verbose)
        if probe_freq < 1 or n_episodes < 1:
            raise ValueError(
                f"LatentProbeCallback: probe_freq and n_episodes must be at least 1, got {probe_freq} and "
                f"{n_episodes}"
            )
        self.probe_env = gymnasium.make(probe_env) if isinstance(probe_env, str) else probe_env
        self.probe_freq, self.n_episodes, self.holdout, self.seed = probe_freq, n_episodes, holdout, seed
        self.last_r2: dict[str, float] = {}

    def _on_step(self) -> bool:
        if self.n_calls % self.probe_freq == 0:
            self.probe()
        return True

    def probe(self) -> dict[str, float]:
        """Run one probe now, record and return ``{"belief": R², "posterior": R², "steps": n}``."""
        import random

        import torch as th

        # The global RNGs SB3 seeds (set_random_seed), restored so that probing changes no training draw.
        rng_states = random.getstate(), np.random.get_state(), th.get_rng_state()  # noqa: NPY002
        try:
            self.probe_env.reset(seed=self.seed)
            data = collect_latents(self.model, self.probe_env, self.n_episodes)
        finally:
            random.setstate(rng_states[0])
            np.random.set_state(rng_states[1])  # noqa: NPY002
            th.set_rng_state(rng_states[2])
        targets = data["physical_state"]
        results: dict[str, float] = {}
        for name, key in (("belief", "belief"), ("posterior", "posterior_mean")):
            if data[key].shape[1] == 0:
                continue
            r2 = linear_probe_r2(data[key], targets, self.holdout, self.seed)
            results[name] = float(np.nanmean(r2)) if np.isfinite(r2).any() else float("nan")
            self.logger.record(f"train/probe_r2_{name}", results[name])
        results["steps"] = len(targets)
        self.logger.record("train/probe_steps", len(targets))
        if self.verbose >= 1:
            print(f"Latent probe at {self.num_timesteps} steps: R2 {results}")
        self.last_r2 = results
        return results
