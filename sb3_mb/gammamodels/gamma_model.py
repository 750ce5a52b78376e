"""γ-model: a conditional density of discounted future states trained by temporal difference.

Janner, Mordatch and Levine 2020, "γ-Models: Generative Temporal Difference Learning for Infinite-Horizon
Prediction" (arXiv:2010.14496). For a policy π and discount γ, the γ-model is the distribution of the state
``s_e = s_{t+Δ}`` reached after a geometric delay ``Δ ≥ 1``, ``P(Δ) = (1 - γ) γ^(Δ-1)``::

    μ(s_e | s, a) = sum_{Δ >= 1} (1 - γ) γ^(Δ-1) p(s_{t+Δ} = s_e | s_t = s, a_t = a, π)        (paper, Eq. 1)

It satisfies the Bellman-like fixed point ``μ(x | s, a) = (1 - γ) p(x | s, a) + γ E_{s'} μ(x | s', π(s'))``
(paper, Sec. 3), learned here from transitions ``(s, a, s')``: the one-step density ``p(x | s, a)`` is an
isotropic Gaussian ``N(s', σ² I)`` of width ``sigma`` around the observed next state, and the bootstrapped
part is a slowly moving (Polyak-averaged, ``tau``) target copy of the model at ``(s', π(s'))``. Two objectives
(spec 1.3; the issue asks for both):

- ``"likelihood"`` (the paper's algorithm, Sec. 4): maximise ``log μθ(x | s, a)`` of bootstrapped samples,
  ``x ~ N(s', σ²)`` with probability ``1 - γ``, else ``x ~ μ_target(· | s', π(s'))``.
- ``"regression"`` (the release's notebook): regress ``log μθ(x | s, a)`` onto the log of the bootstrapped
  target density ``(1 - γ) N(x; s', σ²) + γ μ_target(x | s', π(s'))``, on samples from a proposal that takes
  ``floor(sample_discount · B)`` rows from the target model and the rest from ``N(s', σ²)``.

Values (paper, Sec. 5; spec 1.5): ``V(s, a) = E_{s_e ~ μ}[r(s_e)] / (1 - γ)`` counts the rewards of the future
states from ``t + 1`` on, discounted by ``γ^(Δ-1)``. The defaults are the release's Pendulum settings
(γ = 0.99, σ = 0.1, Adam 1e-4 with weight decay 1e-5, τ = 0.005, batch 1024, K = 16, B = 10, 3 × 256 MLPs)
except the objective: the paper's likelihood, whose samples stay near the data (``objective``).
"""

from __future__ import annotations

import copy
import math
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import torch as th
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.utils import polyak_update
from torch import nn

from sb3_mb.common.checks import check_finite
from sb3_mb.common.distributions import gaussian_nll
from sb3_mb.common.save_util import atomic_write
from sb3_mb.common.utils import foreach_polyak_update
from sb3_mb.gammamodels.flows import FlowOps, conditional_spline_flow, initialize_actnorm

__all__ = ["OBJECTIVES", "GammaModel", "gamma_mve_weights", "policy_function"]

#: The TD objectives (module docstring).
OBJECTIVES = ("likelihood", "regression")

PolicyFn = Callable[[th.Tensor], th.Tensor]

#: Marker of a file written by :meth:`GammaModel.save`.
SAVE_FORMAT = "sb3_mb.GammaModel/1"


def policy_function(policy: BasePolicy | PolicyFn) -> PolicyFn:
    """A callable ``obs (..., obs_dim) -> actions (..., action_dim)`` from an SB3 policy (its deterministic
    action in the units its algorithm stores in the replay buffer: ``[-1, 1]`` for SAC / TD3 / DDPG) or a
    callable, returned as it is."""
    if isinstance(policy, BasePolicy):

        def act(obs: th.Tensor) -> th.Tensor:
            with th.no_grad():
                return policy._predict(obs, deterministic=True).float()

        return act
    if not callable(policy):
        raise TypeError(f"policy must be an SB3 BasePolicy or a callable obs -> actions, got {type(policy)}")
    return policy


def _log_gaussian(x: th.Tensor, mean: th.Tensor, sigma: float) -> th.Tensor:
    """``log N(x; mean, σ² I)``, summed over the last dimension."""
    log_var = th.full_like(x, 2.0 * math.log(sigma))
    return -gaussian_nll(x, mean, log_var).sum(-1)


class GammaModel(nn.Module):
    """A γ-model ``μθ(s_e | s, a)`` (module docstring) with its target copy and optimizer.

    :param obs_dim: state dimension ``d``. :param action_dim: action dimension (actions as the policy gives
        them and the buffer stores them).
    :param gamma: the model's discount γ in ``[0, 1)`` (release: 0.99).
    :param sigma: width σ of the one-step Gaussian around ``s'`` (release notebook: 0.1), state units.
    :param objective: ``"likelihood"`` (default, the paper's) or ``"regression"`` (the release's; module
        docstring). The regression fits log-densities only at the proposal's points, so nothing holds the
        samples' tails: a one-step model (γ = 0) on Pendulum-v1 drew samples off by 2 to 4700 (mean absolute
        error per dimension, after 250-1500 updates), the likelihood one by 0.08-0.15 (σ = 0.1)
        (``benchmarks/gamma_mve_bias.py --one-step-error``); γ-MVE learns Pendulum-v1 with likelihood models
        only (one-step limit: −123 against −1444 with regression). The regression ranked Pendulum values
        slightly better (Spearman ρ 0.91 against 0.86 after 4000 updates, one run; ``gamma_value_map.py``)
        and costs 1.3 × per update; ``benchmarks/README.md``, γ-models.
    :param sample_discount: regression only: share of proposal rows drawn from the target model (0.9).
    :param delta: model ``s_e - s`` instead of ``s_e`` (the release's DeltaFlow option; off in its notebook).
    :param tau: Polyak rate of the target copy (0.005). :param learning_rate: Adam's (1e-4).
    :param weight_decay: Adam's L2 coefficient (1e-5).
    :param fused: the fast path of the same math (issue 15; ``benchmarks/README.md``, γ-models, speed): the
        flows' densities and samples in plain tensor ops (:class:`~sb3_mb.gammamodels.flows.FlowOps`, the
        same random draws), the regression target's density of the model-drawn rows from the pass that drew
        them (zuko's ``rsample_and_log_prob``: one target pass over those rows instead of two), fused Adam,
        and the Polyak update as two foreach ops (SB3's ``polyak_update``'s arithmetic). ``False``: zuko's
        objects, SB3's Adam and ``polyak_update`` (the reference in tests/gammamodels/test_gamma_speed.py),
        1.16-1.33 x the fused path's time per update at the release's sizes on one CPU thread.
    :param compile: with ``fused``, the TD loss's three flow passes (online density with its gradient,
        target samples, target density) through ``torch.compile``. Off by default: on one CPU thread the
        first update compiled for 2 min with an empty inductor cache (1-8 s with a warm one), for 0.72-0.76
        of the fused path's time per update after it (benchmarks/README.md).
        The likelihood objective then runs every row through the compiled target pass (static shapes; the
        same uniforms in the drawn rows, the others unused), ``1 - γ`` of a pass more.
    :param flow_kwargs: :func:`~sb3_mb.gammamodels.flows.conditional_spline_flow` sizes (``bins``,
        ``tail_bound``, ``hidden_sizes``, ``n_blocks``, ``seed``).
    :raises ValueError: for γ outside ``[0, 1)``, ``sigma <= 0``, an unknown objective, ``sample_discount``
        outside ``[0, 1]`` or ``tau`` outside ``(0, 1]``.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        gamma: float = 0.99,
        sigma: float = 0.1,
        objective: str = "likelihood",
        sample_discount: float = 0.9,
        delta: bool = False,
        tau: float = 0.005,
        learning_rate: float = 1e-4,
        weight_decay: float = 1e-5,
        fused: bool = True,
        compile: bool = False,
        **flow_kwargs: Any,
    ):
        super().__init__()
        self.init_kwargs: dict[str, Any] = dict(
            obs_dim=obs_dim,
            action_dim=action_dim,
            gamma=gamma,
            sigma=sigma,
            objective=objective,
            sample_discount=sample_discount,
            delta=delta,
            tau=tau,
            learning_rate=learning_rate,
            weight_decay=weight_decay,
            fused=fused,
            compile=compile,
            **flow_kwargs,
        )
        if not 0.0 <= gamma < 1.0:
            raise ValueError(f"gamma must lie in [0, 1), got {gamma}")
        if sigma <= 0:
            raise ValueError(f"sigma must be positive, got {sigma}")
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}; got {objective!r}")
        if not 0.0 <= sample_discount <= 1.0:
            raise ValueError(f"sample_discount must lie in [0, 1], got {sample_discount}")
        if not 0.0 < tau <= 1.0:
            raise ValueError(f"tau must lie in (0, 1], got {tau}")
        if compile and not fused:
            raise ValueError("compile=True compiles the fused path: it needs fused=True")
        self.obs_dim, self.action_dim = obs_dim, action_dim
        self.gamma, self.sigma, self.objective = gamma, sigma, objective
        self.sample_discount, self.delta, self.tau, self.fused = sample_discount, delta, tau, fused
        self.flow = conditional_spline_flow(obs_dim, obs_dim + action_dim, **flow_kwargs)
        self.target_flow = copy.deepcopy(self.flow)
        self.target_flow.requires_grad_(False)
        self.flow_ops = FlowOps(self.flow) if fused else None
        self.target_flow_ops = FlowOps(self.target_flow) if fused else None
        self.compile = compile
        if fused:  # the TD loss's passes: (x, context) -> log p with gradient; latents -> target samples; ...
            self._online_density, self._target_inverse, self._target_density = (
                th.compile(fn, dynamic=False) if compile else fn
                for fn in (
                    self.flow_ops.log_prob,
                    self.target_flow_ops.inverse,
                    self.target_flow_ops.log_prob,
                )
            )
        self.optimizer = th.optim.Adam(
            self.flow.parameters(), lr=learning_rate, weight_decay=weight_decay, fused=True if fused else None
        )
        self.register_buffer("n_updates", th.zeros((), dtype=th.long))

    # ------------------------------------------------------------------------------------ densities
    @staticmethod
    def context(obs: th.Tensor, actions: th.Tensor) -> th.Tensor:
        """The flow's conditioning input ``[a, s]`` (the release sorts its keys: 'a' before 's')."""
        return th.cat([actions, obs], dim=-1)

    def log_prob(
        self, future_obs: th.Tensor, obs: th.Tensor, actions: th.Tensor, target: bool = False
    ) -> th.Tensor:
        """``log μ(s_e | s, a)`` in nats (a density over state units).

        :param future_obs: ``(..., d)``; :param obs: ``(..., d)``; :param actions: ``(..., action_dim)``,
            broadcast against each other. :param target: the target copy instead of the online model.
        :return: ``(...)``.
        """
        x = future_obs - obs if self.delta else future_obs
        shape = th.broadcast_shapes(x.shape[:-1], obs.shape[:-1], actions.shape[:-1])
        context = self.context(obs.expand(*shape, -1), actions.expand(*shape, -1))
        if self.fused:
            return (self.target_flow_ops if target else self.flow_ops).log_prob(x.expand(*shape, -1), context)
        flow = self.target_flow if target else self.flow
        return flow(context).log_prob(x.expand(*shape, -1))

    def sample(self, obs: th.Tensor, actions: th.Tensor, n: int = 1, target: bool = False) -> th.Tensor:
        """``n`` samples of ``s_e ~ μ(· | s, a)``: ``(n, ..., d)`` for ``obs (..., d)`` and ``actions
        (..., action_dim)``; no gradient."""
        with th.no_grad():
            if self.fused:
                x = (self.target_flow_ops if target else self.flow_ops).sample(self.context(obs, actions), n)
            else:
                flow = self.target_flow if target else self.flow
                x = flow(self.context(obs, actions)).sample((n,))
        return x + obs if self.delta else x

    def value(
        self,
        obs: th.Tensor,
        actions: th.Tensor,
        reward_fn: Callable[[th.Tensor], th.Tensor],
        n_samples: int = 256,
    ) -> th.Tensor:
        """Monte Carlo ``V(s, a) = E_{s_e ~ μ(· | s, a)}[r(s_e)] / (1 - γ)`` (paper, Sec. 5; spec 1.5).

        :param reward_fn: state reward ``(..., d) -> (...)`` (rewards of states, not of transitions).
        :param n_samples: samples of ``s_e`` per ``(s, a)``.
        :return: ``(...)`` in reward units, the γ-discounted sum of rewards from ``t + 1`` on.
        """
        return reward_fn(self.sample(obs, actions, n_samples)).mean(0) / (1.0 - self.gamma)

    def rollout(
        self, obs: th.Tensor, policy: PolicyFn, horizon: int, actions: th.Tensor | None = None
    ) -> th.Tensor:
        """``horizon`` composed samples ``s^n ~ μ(· | s^(n-1), π(s^(n-1)))`` from ``s^0 = obs`` (spec 1.6: the
        n-fold composition weights time by a negative binomial), ``(horizon, ..., d)``; ``actions`` overrides
        the first action."""
        states, state = [], obs
        action = policy(obs) if actions is None else actions
        for _ in range(horizon):
            state = self.sample(state, action)[0]
            states.append(state)
            action = policy(state)
        return th.stack(states)

    # ------------------------------------------------------------------------------------ learning
    def td_loss(
        self, obs: th.Tensor, actions: th.Tensor, next_obs: th.Tensor, next_actions: th.Tensor
    ) -> th.Tensor:
        """The TD loss of ``objective`` on a batch (module docstring), a scalar.

        :param obs: ``(B, d)``; :param actions: ``(B, action_dim)``; :param next_obs: ``(B, d)`` observed
            next states; :param next_actions: ``(B, action_dim)``, ``π(s')``.
        """
        batch = obs.shape[0]
        single_step = next_obs + self.sigma * th.randn_like(next_obs)
        if self.objective == "likelihood":
            from_model = th.rand(batch, device=obs.device) < self.gamma
            x = single_step.clone()
            if self.compile:
                x = self._static_target_samples(x, from_model, next_obs, next_actions)
            elif from_model.any():
                x[from_model] = self.sample(next_obs[from_model], next_actions[from_model], target=True)[0]
            return -self._online_log_prob(x, obs, actions).mean()
        n_model = int(math.floor(self.sample_discount * batch))
        x = single_step.clone()
        with th.no_grad():
            if self.fused and self.gamma > 0:
                log_model = self._fused_proposal(x, n_model, next_obs, next_actions)
            else:
                if n_model > 0:
                    x[:n_model] = self.sample(next_obs[:n_model], next_actions[:n_model], target=True)[0]
                log_model = self.log_prob(x, next_obs, next_actions, target=True) if self.gamma > 0 else None
            log_single = _log_gaussian(x, next_obs, self.sigma) + math.log(1.0 - self.gamma)
            if log_model is not None:
                target = th.logaddexp(log_single, log_model + math.log(self.gamma))
            else:
                target = log_single
        return (self._online_log_prob(x, obs, actions) - target).pow(2).mean()

    def _online_log_prob(self, x: th.Tensor, obs: th.Tensor, actions: th.Tensor) -> th.Tensor:
        """The online model's :meth:`log_prob` of the TD loss's ``(B, ·)`` rows (compiled if ``compile``)."""
        if not self.fused:
            return self.log_prob(x, obs, actions)
        return self._online_density(x - obs if self.delta else x, self.context(obs, actions))

    def _static_target_samples(
        self, x: th.Tensor, from_model: th.Tensor, next_obs: th.Tensor, next_actions: th.Tensor
    ) -> th.Tensor:
        """The likelihood objective's ``x`` with the rows ``from_model`` replaced by target samples, in one
        compiled pass over all ``B`` rows, the drawn rows from the uniforms :meth:`sample` would draw."""
        n = int(from_model.sum())
        if n == 0:
            return x
        latents = th.zeros_like(x)
        latents[from_model] = self.target_flow_ops.latent((1, n))[0]
        with th.no_grad():
            samples = self._target_inverse(latents, self.context(next_obs, next_actions))[0]
        return th.where(from_model.unsqueeze(-1), samples + next_obs if self.delta else samples, x)

    def _fused_proposal(
        self, x: th.Tensor, n_model: int, next_obs: th.Tensor, next_actions: th.Tensor
    ) -> th.Tensor:
        """The regression's proposal with ``fused``: writes the target model's samples into ``x[:n_model]``
        (the same draws as :meth:`sample`) and returns ``log μ_target(x | s', a')`` ``(B,)``, the model-drawn
        rows' from the pass that drew them, the others' from one density pass."""
        parts = []
        if n_model > 0:
            context = self.context(next_obs[:n_model], next_actions[:n_model])
            sample, log_prob = self._target_inverse(
                self.target_flow_ops.latent((1, n_model))[0], context, True
            )
            x[:n_model] = sample + next_obs[:n_model] if self.delta else sample
            parts.append(log_prob)
        if n_model < x.shape[0]:
            rest = x[n_model:] - next_obs[n_model:] if self.delta else x[n_model:]
            parts.append(self._target_density(rest, self.context(next_obs[n_model:], next_actions[n_model:])))
        return th.cat(parts) if len(parts) > 1 else parts[0]

    def update(
        self, obs: th.Tensor, actions: th.Tensor, next_obs: th.Tensor, next_actions: th.Tensor
    ) -> float:
        """One Adam step on :meth:`td_loss`, then the Polyak update of the target. The first call initialises
        every ActNorm on the batch (``s' + σ ε``, or its difference to ``s`` with ``delta``) and copies it to
        the target (the spec's ActNorm QUIRK, fixed).

        :return: the loss. :raises FloatingPointError: if the loss is NaN or infinite (before the step).
        """
        if int(self.n_updates) == 0:
            x = next_obs + self.sigma * th.randn_like(next_obs)
            initialize_actnorm(self.flow, x - obs if self.delta else x, self.context(obs, actions))
            self.target_flow.load_state_dict(self.flow.state_dict())
        loss = self.td_loss(obs, actions, next_obs, next_actions)
        check_finite(loss, "GammaModel", f"{self.objective} TD loss", int(self.n_updates) + 1, unit="update")
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        if self.fused:
            foreach_polyak_update(list(self.flow.parameters()), list(self.target_flow.parameters()), self.tau)
        else:
            polyak_update(self.flow.parameters(), self.target_flow.parameters(), self.tau)
        self.n_updates += 1
        return float(loss.detach())

    def fit(
        self,
        replay_buffer: ReplayBuffer,
        policy: BasePolicy | PolicyFn,
        gradient_steps: int,
        batch_size: int = 1024,
        log_every: int = 0,
        logger: Any = None,
    ) -> list[float]:
        """Offline policy evaluation (the release's setting): ``gradient_steps`` updates on batches of an SB3
        replay buffer, with ``a' = π(s')`` from ``policy`` (:func:`policy_function`).

        :return: the loss of every update. ``logger`` (SB3's) records ``gamma_model/loss`` every
            ``log_every`` updates.
        """
        act = policy_function(policy)
        losses = []
        for step in range(gradient_steps):
            data = replay_buffer.sample(batch_size)
            obs, next_obs = data.observations.float(), data.next_observations.float()
            losses.append(self.update(obs, data.actions.float(), next_obs, act(next_obs)))
            if logger is not None and log_every and (step + 1) % log_every == 0:
                logger.record("gamma_model/loss", float(np.mean(losses[-log_every:])))
                logger.dump(int(self.n_updates))
        return losses

    # ------------------------------------------------------------------------------------ persistence
    def save(self, path: str | os.PathLike) -> None:
        """Write the constructor arguments, both flows and the optimizer to ``path`` (``torch.save`` of
        tensors and plain values), atomically: a process killed mid-save leaves the old file or the new
        one."""
        state = {
            "format": SAVE_FORMAT,
            "init_kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in self.init_kwargs.items()},
            "model": self.state_dict(),
            "optimizer": self.optimizer.state_dict(),
        }
        with atomic_write(path) as temporary:
            th.save(state, temporary)

    @classmethod
    def load(cls, path: str | os.PathLike, device: th.device | str = "cpu") -> GammaModel:
        """A model written by :meth:`save`, training state included (``n_updates``, target, Adam moments).

        Reads with ``torch.load(weights_only=True)``: tensors and plain values only, nothing is unpickled.

        :raises ValueError: if the file is not a saved :class:`GammaModel`.
        """
        try:
            state = th.load(path, map_location=device, weights_only=True)
        except Exception as error:  # truncated, foreign or unsafe content
            raise ValueError(f"{path} is not a saved GammaModel (torch.load failed: {error})") from error
        if not isinstance(state, dict) or state.get("format") != SAVE_FORMAT:
            raise ValueError(f"{path} is not a saved GammaModel (no '{SAVE_FORMAT}' format marker)")
        kwargs = dict(state["init_kwargs"])
        if "hidden_sizes" in kwargs:
            kwargs["hidden_sizes"] = tuple(kwargs["hidden_sizes"])
        model = cls(**kwargs).to(device)
        model.load_state_dict(state["model"])
        model.optimizer.load_state_dict(state["optimizer"])
        return model


def gamma_mve_weights(gamma: float, model_gamma: float, horizon: int) -> tuple[th.Tensor, float]:
    """Weights of γ-MVE (spec 1.6): a value at discount γ from ``n``-fold compositions of a γ̃-model.

    ``V_γ(s) ≈ sum_{n=1..H} α_n E_{μ^n}[r] + β^H E_{s_e ~ μ^H}[V_target(s_e)]`` with
    ``α_n = (γ - γ̃)^(n-1) / (1 - γ̃)^n`` and ``β = (γ - γ̃) / (1 - γ̃)`` (derived by generating functions; the
    paper's construction, Sec. 5). γ̃ = γ gives ``α = (1 / (1 - γ), 0, ...)``, ``β = 0``; γ̃ = 0 (a one-step
    model) gives ordinary MVE, ``α_n = γ^(n-1)``, ``β^H = γ^H``.

    :return: ``(alphas (horizon,), bootstrap weight β^H)``.
    :raises ValueError: unless ``0 <= γ̃ <= γ < 1`` and ``horizon >= 1``.
    """
    if not 0.0 <= model_gamma <= gamma < 1.0 or horizon < 1:
        raise ValueError(
            f"need 0 <= model_gamma <= gamma < 1 and horizon >= 1; got {model_gamma}, {gamma}, {horizon}"
        )
    n = th.arange(1, horizon + 1, dtype=th.float64)
    beta = (gamma - model_gamma) / (1.0 - model_gamma)
    alphas = beta ** (n - 1) / (1.0 - model_gamma)  # the same, without under/overflow for long horizons
    return alphas.float(), float(beta**horizon)
