"""The learned transition model and the one owner of its data layout: ``[s, a] -> [delta_s, r]``.

MBPO (Janner et al. 2019, arXiv:1906.08253, App. C) and PETS (Chua et al. 2018, arXiv:1805.12114, Sec. 4)
learn an ensemble that maps the raw state and action to the state difference and the reward; STEVE's
transition ensemble (Buckman et al. 2018, arXiv:1807.01675, Sec. 4) predicts the state difference alone
(its reward is a separate ensemble). :class:`DynamicsModel` is that ensemble together with the layout,
in the manner of mbrl-lib's ``OneDTransitionRewardModel``: it alone builds the inputs and the targets,
splits a prediction into ``(delta_s, r)`` and turns it back into ``(next_obs, reward)``. Its losses
(:mod:`sb3_mb.mbpo.model_losses`), :class:`~sb3_mb.common.model_env.ModelEnv`, MBPO and STEVE go through
these methods, so no other file knows where the reward column is.

Layout, with ``d = obs_dim``::

    inputs   (..., d + action_dim)     [s, a]   raw; normalised inside the ensemble (its Normalizer)
    targets  (..., d + 1)              [s' - s, r]      (learned_reward=False: (..., d), s' - s)
    output   same as targets           next_obs = s + output[..., :d], reward = output[..., d]

Target normalisation (``normalize_targets=True``): the members' last layer predicts the targets
standardised per column, ``(y - mean_y) / std`` with the statistics of the training targets (a
:class:`~sb3_mb.common.ensemble.Normalizer` fitted with the input normaliser), and :meth:`forward` returns
them in raw units again: ``mean = std * mean_n + mean_y``, ``logvar = logvar_n + 2 log std``. Every consumer
(losses, rollouts) keeps seeing raw units, while the Gaussian likelihood, which is invariant to a per-column
rescaling up to a constant, is exactly the likelihood of the standardised targets: each column weighs alike
whatever its units, and the log-variance bounds and the weight decay act at unit scale.
:class:`~sb3_mb.common.ensemble.EnsembleTrainer` computes its built-in losses and holdout score in these
standardised units (:meth:`DynamicsModel.standardize`), so elites and early stopping weigh every column
alike too. Without it a reward of magnitude 1e3 dominates the loss and the holdout score, and the network,
initialised for unit outputs, cannot reach it before early stopping: on 150 transitions of
``sb3_mb/DoubleIntegrator-v0`` with positions of std 50, the error of the raw model equals the targets' std
(training stops after 11 epochs), that of the normalised one is 3% of it for ``delta_s`` and 19% for the
reward (``tests/mbpo/test_mbpo_lqr.py``). The MBPO and PETS code normalise the inputs only, so it is off by
default.

Symlog reward (``symlog_reward=True``): the reward column of the targets and of the outputs is
``symlog(r / kappa)`` (:mod:`sb3_mb.common.symlog`; PlaNet's reward loss here does the same), and
:meth:`transition` (so :meth:`predict` and every rollout) returns ``kappa symexp(y)``, raw units again.
``kappa`` is the registered buffer ``reward_scale`` (1 until its owner sets it, e.g. MBPO's ``reward_scale``).
A standardised raw reward keeps the absolute precision of a fraction of its std: where the data span
rewards of 1e5 (``sb3_mb/DoubleIntegrator-v0`` while far states are in the buffer), the rewards near the goal
(``|r| <= c``) come out with median errors of 100c-10 000c in MBPO's rollouts (Gaussian head, the first 600
steps); the symlog keeps a relative precision above ``kappa`` and an absolute one of a few hundredths of
``kappa`` below it (with a deterministic head: 0.1c-0.2c near the goal after 900 steps; see
``benchmarks/README.md``, "MBPO on the double integrator"). Off by default (MBPO's model predicts the raw
reward).
"""

from __future__ import annotations

import torch as th

from sb3_mb.common.ensemble import EnsembleMLP, Normalizer
from sb3_mb.common.symlog import symexp, symlog

__all__ = ["DynamicsModel", "RewardModel", "TargetNormalizedMLP"]


class TargetNormalizedMLP(EnsembleMLP):
    """An :class:`~sb3_mb.common.ensemble.EnsembleMLP` that optionally predicts standardised targets and
    returns raw units (module docstring, "Target normalisation"); the base of :class:`DynamicsModel` and
    :class:`RewardModel`.

    :param in_dim: input size. :param out_dim: output size.
    :param normalize_targets: predict ``(y - mean_y) / std`` per column; the statistics are the registered
        buffer ``target_normalizer`` (saved with the model), registered only when on.
    :param ensemble_kwargs: :class:`~sb3_mb.common.ensemble.EnsembleMLP` arguments.
    """

    def __init__(self, in_dim: int, out_dim: int, normalize_targets: bool = False, **ensemble_kwargs):
        super().__init__(in_dim, out_dim, **ensemble_kwargs)
        self.normalize_targets = normalize_targets
        # Registered only when used, so that the state dicts of models without it are unchanged.
        self.target_normalizer = Normalizer(self.out_dim) if normalize_targets else None

    # ------------------------------------------------------------------ normalisation
    def fit_normalizers(self, inputs: th.Tensor, targets: th.Tensor) -> None:
        """Fit the input normaliser on ``(n, in_dim)`` and, with ``normalize_targets``, the target normaliser
        on ``(n, out_dim)`` (called by :class:`~sb3_mb.common.ensemble.EnsembleTrainer` on its training
        split)."""
        super().fit_normalizers(inputs, targets)
        if self.target_normalizer is not None:
            self.target_normalizer.fit(targets)

    def standardize(
        self, mean: th.Tensor, logvar: th.Tensor | None, target: th.Tensor
    ) -> tuple[th.Tensor, th.Tensor | None, th.Tensor]:
        """With ``normalize_targets``: prediction and target standardised, ``(y - mean_y) / std``, and
        ``logvar - 2 log std``, the units in which :class:`~sb3_mb.common.ensemble.EnsembleTrainer`'s built-in
        losses (NLL, MSE) and holdout score weigh every column alike; unchanged without it."""
        norm = self.target_normalizer
        if norm is None:
            return mean, logvar, target
        logvar = None if logvar is None else logvar - 2.0 * th.log(norm.std)
        return norm.normalize(mean), logvar, norm.normalize(target)

    def forward(
        self, x: th.Tensor, member_idx: th.Tensor | None = None
    ) -> tuple[th.Tensor, th.Tensor | None]:
        """``(mean, logvar)`` in raw target units (:meth:`EnsembleMLP.forward`, then, with
        ``normalize_targets``, ``mean = std * mean_n + mean_y`` and ``logvar = logvar_n + 2 log std``)."""
        mean, logvar = super().forward(x, member_idx)
        if self.target_normalizer is None:
            return mean, logvar
        mean = self.target_normalizer.denormalize(mean)
        if logvar is not None:
            logvar = logvar + 2.0 * th.log(self.target_normalizer.std)
        return mean, logvar


class DynamicsModel(TargetNormalizedMLP):
    """Ensemble transition model on ``[s, a]`` predicting ``[s' - s, r]`` (or ``s' - s``).

    :param obs_dim: state size ``d`` (flat observations).
    :param action_dim: action size (actions as the agent stores them, e.g. scaled to ``[-1, 1]``).
    :param learned_reward: predict the reward in a last output column (MBPO) or not (STEVE, whose reward
        ensemble is separate).
    :param normalize_targets: predict standardised targets and return them in raw units (module
        docstring); the statistics are a registered buffer ``target_normalizer`` (saved with the model).
    :param symlog_reward: the reward column is ``symlog(r / kappa)``, ``kappa`` the registered buffer
        ``reward_scale`` (module docstring).
    :param ensemble_kwargs: :class:`~sb3_mb.common.ensemble.EnsembleMLP` arguments (``ensemble_size``,
        ``net_arch``, ``activation_fn``, ``deterministic``, ``n_elites``, ``init``).
    :raises ValueError: for ``symlog_reward`` without ``learned_reward``.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        learned_reward: bool = True,
        normalize_targets: bool = False,
        symlog_reward: bool = False,
        **ensemble_kwargs,
    ):
        if symlog_reward and not learned_reward:
            raise ValueError("symlog_reward needs a learned reward (learned_reward=True)")
        super().__init__(
            obs_dim + action_dim,
            obs_dim + int(learned_reward),
            normalize_targets=normalize_targets,
            **ensemble_kwargs,
        )
        self.obs_dim, self.action_dim, self.learned_reward = obs_dim, action_dim, learned_reward
        self.symlog_reward = symlog_reward
        if symlog_reward:
            self.register_buffer("reward_scale", th.ones(()))

    # ------------------------------------------------------------------ layout
    def inputs(self, obs: th.Tensor, actions: th.Tensor) -> th.Tensor:
        """``[s, a]``: ``(..., obs_dim)`` and ``(..., action_dim)`` -> ``(..., obs_dim + action_dim)``."""
        return th.cat([obs, actions], dim=-1)

    def targets(self, obs: th.Tensor, next_obs: th.Tensor, rewards: th.Tensor | None = None) -> th.Tensor:
        """``[s' - s, r]`` (``(..., obs_dim + 1)``) or ``s' - s`` without a learned reward; with
        ``symlog_reward`` the last column is ``symlog(r / reward_scale)``.

        :param obs: ``(..., obs_dim)``. :param next_obs: ``(..., obs_dim)``. :param rewards: ``(...)``.
        :raises ValueError: if the model learns the reward and ``rewards`` is None.
        """
        delta = next_obs - obs
        if not self.learned_reward:
            return delta
        if rewards is None:
            raise ValueError("This dynamics model learns the reward: targets() needs the rewards")
        if self.symlog_reward:
            rewards = symlog(rewards / self.reward_scale)
        return th.cat([delta, rewards.unsqueeze(-1)], dim=-1)

    def split(self, output: th.Tensor) -> tuple[th.Tensor, th.Tensor | None]:
        """A prediction or target ``(..., out_dim)`` as ``(delta_s (..., obs_dim), reward (...) or None)``,
        the reward in the target's units (``symlog(r / reward_scale)`` with ``symlog_reward``)."""
        delta = output[..., : self.obs_dim]
        return delta, (output[..., self.obs_dim] if self.learned_reward else None)

    def transition(self, obs: th.Tensor, output: th.Tensor) -> tuple[th.Tensor, th.Tensor | None]:
        """``(next_obs, reward)`` from the state ``obs (..., obs_dim)`` and an output ``(..., out_dim)``; the
        reward in raw units (``reward_scale * symexp(y)`` with ``symlog_reward``)."""
        delta, reward = self.split(output)
        if self.symlog_reward and reward is not None:
            reward = self.reward_scale * symexp(reward)
        return obs + delta, reward

    # ------------------------------------------------------------------ prediction
    def predict(
        self,
        obs: th.Tensor,
        actions: th.Tensor,
        member_idx: th.Tensor | None = None,
        deterministic: bool = False,
        generator: th.Generator | None = None,
    ) -> tuple[th.Tensor, th.Tensor | None]:
        """Sampled ``(next_obs, reward)`` of every member (the Gaussian mean when ``deterministic``).

        :param obs: ``(batch, obs_dim)`` (broadcast to every member) or ``(E', batch, obs_dim)``, one slice
            per member (``E' = E`` or ``len(member_idx)``). :param actions: likewise with ``action_dim``.
        :param member_idx: ``(E',)`` members whose weights the slices use (see :meth:`EnsembleMLP.forward`).
        :param generator: ``torch.Generator`` on the model's device for the Gaussian noise.
        :return: ``next_obs (E', batch, obs_dim)`` and ``reward (E', batch)`` (None without a learned reward).
        """
        output = self.sample(self.inputs(obs, actions), member_idx, deterministic, generator)
        return self.transition(obs, output)


class RewardModel(TargetNormalizedMLP):
    """Ensemble reward model ``r(s, a, s')``, separate from the transition model (STEVE's reward function
    ``r_psi(s, a, s')``, Buckman et al. 2018, arXiv:1807.01675, Sec. 4; MBPO's option ``model_reward=
    "separate"``).

    Layout, with ``d = obs_dim``::

        inputs   (..., 2 d + action_dim)   [s, a, s']   (symlog of each entry with symlog_inputs)
        targets  (..., 1)                  r            (symlog(r / kappa) with symlog_reward)

    Why beside the joint model's reward column: the reward is often a function of the next state (the
    double integrator's ``-c position'^2``), which the transition model has already predicted, so reading
    ``s'`` spares the reward network the composition ``r(s + delta(s, a))``; and with ``symlog_inputs`` the
    network resolves the goal's neighbourhood when the data also hold far states, which the input
    normaliser's ``std`` would squash to a point. On ``sb3_mb/DoubleIntegrator-v0`` (data: two random
    episodes, positions up to hundreds, and 500 states near the goal) the mean error of the reward where
    ``|position'| < 0.2`` (``|r|`` 0.013 on average) is 0.055 for MBPO's joint column, 0.028 for this model
    on raw inputs, 0.015 with ``symlog_inputs`` (``benchmarks/README.md``, "MBPO on the double
    integrator").

    :param obs_dim: state size ``d``. :param action_dim: action size.
    :param normalize_targets: predict the standardised target (:class:`TargetNormalizedMLP`).
    :param symlog_reward: the target is ``symlog(r / kappa)``, ``kappa`` the registered buffer
        ``reward_scale`` (1 until its owner sets it); :meth:`predict` decodes ``kappa symexp(y)``.
    :param symlog_inputs: the network reads ``symlog([s, a, s'])`` (:func:`~sb3_mb.common.symlog.symlog`
        before the input normaliser).
    :param ensemble_kwargs: :class:`~sb3_mb.common.ensemble.EnsembleMLP` arguments.
    """

    reward_scale: th.Tensor

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        normalize_targets: bool = False,
        symlog_reward: bool = False,
        symlog_inputs: bool = False,
        **ensemble_kwargs,
    ):
        super().__init__(2 * obs_dim + action_dim, 1, normalize_targets=normalize_targets, **ensemble_kwargs)
        self.obs_dim, self.action_dim = obs_dim, action_dim
        self.symlog_reward, self.symlog_inputs = symlog_reward, symlog_inputs
        if symlog_reward:
            self.register_buffer("reward_scale", th.ones(()))

    def inputs(self, obs: th.Tensor, actions: th.Tensor, next_obs: th.Tensor) -> th.Tensor:
        """``[s, a, s']`` (its ``symlog`` with ``symlog_inputs``): ``(..., obs_dim)``, ``(..., action_dim)``
        and ``(..., obs_dim)`` -> ``(..., 2 obs_dim + action_dim)``."""
        x = th.cat([obs, actions, next_obs], dim=-1)
        return symlog(x) if self.symlog_inputs else x

    def targets(self, rewards: th.Tensor) -> th.Tensor:
        """``(...)`` rewards -> ``(..., 1)`` targets (``symlog(r / reward_scale)`` with ``symlog_reward``)."""
        if self.symlog_reward:
            rewards = symlog(rewards / self.reward_scale)
        return rewards.unsqueeze(-1)

    def decode(self, output: th.Tensor) -> th.Tensor:
        """An output ``(..., 1)`` in raw reward units ``(...)`` (``reward_scale * symexp(y)`` with
        ``symlog_reward``)."""
        reward = output[..., 0]
        return self.reward_scale * symexp(reward) if self.symlog_reward else reward

    @th.no_grad()
    def predict(self, obs: th.Tensor, actions: th.Tensor, next_obs: th.Tensor) -> th.Tensor:
        """The elites' mean prediction in raw units: ``(batch, obs_dim)``, ``(batch, action_dim)``,
        ``(batch, obs_dim)`` -> ``(batch,)``. The mean of the decoded means (the Gaussian head's mean, no
        sample: the reward's noise is the transition's business). Usable as a
        :class:`~sb3_mb.common.model_env.ModelEnv` ``reward_fn``."""
        mean, _ = self(self.inputs(obs, actions, next_obs), None)
        return self.decode(mean[self.elite_idx]).mean(0)
