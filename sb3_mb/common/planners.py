"""Cross-entropy method (CEM) over action sequences, Gaussian or categorical, with warm start.

The optimisers know nothing of the model (as mbrl-lib's trajectory optimisers): they call
``objective(action_sequences) -> returns`` with *all* candidates of *all* envs in one tensor,

- ``action_sequences``: ``(batch, n_candidates, planning_horizon, action_dim)``,
- ``returns``: ``(batch, n_candidates)``,

where ``batch`` is the number of envs planned for at once. The planner object holds configuration only;
the warm-start plan is passed in and returned explicitly (PlaNet carries it in ``predict``'s recurrent
``state`` as a numpy array ``(batch, planning_horizon, action_dim)``, set to zeros on episode start).

Sources: PlaNet (Hafner et al. 2019, arXiv:1811.04551, Sec. 2 and Alg. 2 of the appendix) for the Gaussian
CEM; the discrete-action adaptation of Rose's PlaNet fork (github.com/rosea-tf/planet) for the categorical CEM
and the warm start.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch as th

Objective = Callable[[th.Tensor], th.Tensor]


@dataclass
class PlanResult:
    """Outcome of one CEM call for ``batch`` envs.

    :ivar action: first action to execute, ``(batch, action_dim)``. Gaussian: first step of the final
        mean. Categorical: one-hot first step of the best sequence of the last iteration.
    :ivar action_index: categorical only: that action's index, ``(batch,)`` int64; None for Gaussian.
    :ivar plan: final distribution parameters, ``(batch, planning_horizon, action_dim)``: the mean
        (Gaussian) or the logits (categorical).
    :ivar warm_start: ``plan`` shifted one step with 0 appended: the next call's ``initial_plan``.
    :ivar planned_return: return the planner expects from what it executes, ``(batch,)``: mean elite
        return of the last iteration (Gaussian) or the best return of the last iteration (categorical).
    :ivar best_return: best candidate return of the last iteration, ``(batch,)``.
    :ivar elite_returns: mean elite return per iteration, ``(n_iterations, batch)``.
    :ivar candidate_returns: mean return of all candidates per iteration, ``(n_iterations, batch)``;
        rows 0 and -1 are PlaNet's ``summarise_plan_returns`` first / last iteration summaries.
    """

    action: th.Tensor
    action_index: th.Tensor | None
    plan: th.Tensor
    warm_start: th.Tensor
    planned_return: th.Tensor
    best_return: th.Tensor
    elite_returns: th.Tensor
    candidate_returns: th.Tensor


def shift_plan(plan: th.Tensor | np.ndarray) -> th.Tensor | np.ndarray:
    """Shift a plan ``(batch, planning_horizon, action_dim)`` one step earlier and append zeros.

    Works on tensors and numpy arrays alike (the warm start of Rose's fork).
    """
    if isinstance(plan, np.ndarray):
        return np.concatenate([plan[:, 1:], np.zeros_like(plan[:, :1])], axis=1)
    return th.cat([plan[:, 1:], th.zeros_like(plan[:, :1])], dim=1)


class CEMOptimizer:
    """Shared configuration and checks of the Gaussian and categorical CEM.

    :param planning_horizon: H, steps per action sequence (PlaNet: 12).
    :param action_dim: A (categorical: the number of discrete actions n).
    :param n_candidates: sequences evaluated per iteration and env (PlaNet: 1000).
    :param n_elites: top-k sequences the distribution is refit on (PlaNet: 100).
    :param n_iterations: CEM iterations (PlaNet: 10).
    :raises ValueError: for non-positive sizes or ``n_elites > n_candidates``.
    """

    def __init__(
        self,
        planning_horizon: int = 12,
        action_dim: int = 1,
        n_candidates: int = 1000,
        n_elites: int = 100,
        n_iterations: int = 10,
    ):
        if min(planning_horizon, action_dim, n_candidates, n_elites, n_iterations) < 1:
            raise ValueError(
                "planning_horizon, action_dim, n_candidates, n_elites, n_iterations must be >= 1"
            )
        if n_elites > n_candidates:
            raise ValueError(f"n_elites={n_elites} > n_candidates={n_candidates}")
        self.planning_horizon = planning_horizon
        self.action_dim = action_dim
        self.n_candidates = n_candidates
        self.n_elites = n_elites
        self.n_iterations = n_iterations

    def initial_plan(self, batch_size: int) -> np.ndarray:
        """A zero plan ``(batch_size, planning_horizon, action_dim)`` float32 (episode start)."""
        return np.zeros((batch_size, self.planning_horizon, self.action_dim), dtype=np.float32)

    def _as_plan(self, initial_plan: th.Tensor | np.ndarray, device: th.device | str | None) -> th.Tensor:
        plan = th.as_tensor(initial_plan, dtype=th.float32, device=device)
        expected = (self.planning_horizon, self.action_dim)
        if plan.dim() != 3 or tuple(plan.shape[1:]) != expected:
            raise ValueError(
                f"initial_plan must have shape (batch, {expected[0]}, {expected[1]}), got {tuple(plan.shape)}"
            )
        return plan

    def _evaluate(self, objective: Objective, candidates: th.Tensor) -> th.Tensor:
        returns = objective(candidates)
        if tuple(returns.shape) != tuple(candidates.shape[:2]):
            raise ValueError(
                f"objective must return (batch, n_candidates) = {tuple(candidates.shape[:2])}, "
                f"got {tuple(returns.shape)}"
            )
        returns = returns.to(th.float32)
        return th.where(th.isnan(returns), th.full_like(returns, -float("inf")), returns)

    def _elites(self, candidates: th.Tensor, returns: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        elite_returns, elite_idx = th.topk(returns, self.n_elites, dim=1)
        index = elite_idx[:, :, None, None].expand(-1, -1, self.planning_horizon, self.action_dim)
        return th.gather(candidates, 1, index), elite_returns


class GaussianCEM(CEMOptimizer):
    """CEM over a diagonal Gaussian on action sequences (PlaNet, Hafner et al. 2019, Alg. 2).

    Each iteration samples ``n_candidates`` sequences from ``N(mean, std^2)``, clips them to the action
    bounds, evaluates them in one ``objective`` call, and refits mean and std on the ``n_elites`` best with
    ``std = sqrt(var + min_var)`` (population variance). The executed action is the first step of the
    final mean. Initial distribution: ``mean = initial_plan`` (zeros or the warm start) and
    ``std = initial_std``.

    :param action_low: lower action bound, scalar or ``(action_dim,)`` (PlaNet: -1).
    :param action_high: upper action bound, scalar or ``(action_dim,)`` (PlaNet: 1).
    :param initial_std: std of the initial distribution, reset to it every call (PlaNet: 1).
    :param min_var: variance floor added before the square root (PlaNet: 1e-6).
    See :class:`CEMOptimizer` for the other parameters.
    """

    def __init__(
        self,
        planning_horizon: int = 12,
        action_dim: int = 1,
        n_candidates: int = 1000,
        n_elites: int = 100,
        n_iterations: int = 10,
        action_low: float | np.ndarray = -1.0,
        action_high: float | np.ndarray = 1.0,
        initial_std: float = 1.0,
        min_var: float = 1e-6,
    ):
        super().__init__(planning_horizon, action_dim, n_candidates, n_elites, n_iterations)
        low = np.broadcast_to(np.asarray(action_low, dtype=np.float32), (action_dim,)).copy()
        high = np.broadcast_to(np.asarray(action_high, dtype=np.float32), (action_dim,)).copy()
        if np.any(low > high):
            raise ValueError(f"action_low {low} > action_high {high}")
        self.action_low, self.action_high = low, high
        self.initial_std = initial_std
        self.min_var = min_var

    def plan(
        self,
        objective: Objective,
        initial_plan: th.Tensor | np.ndarray,
        generator: th.Generator | None = None,
        device: th.device | str | None = None,
    ) -> PlanResult:
        """Run the CEM for ``batch`` envs at once.

        :param objective: maps ``(batch, n_candidates, planning_horizon, action_dim)`` action sequences to
            ``(batch, n_candidates)`` returns (NaN returns count as ``-inf``).
        :param initial_plan: initial mean ``(batch, planning_horizon, action_dim)``: zeros at episode start
            or the previous call's ``warm_start``.
        :param generator: ``torch.Generator`` on ``device`` for the candidate noise (None: global RNG).
        :param device: where to plan; defaults to ``initial_plan``'s device (cpu for numpy input).
        :return: :class:`PlanResult`.
        :raises ValueError: on a wrongly shaped ``initial_plan`` or objective output.
        """
        mean = self._as_plan(
            initial_plan, device if device is not None else getattr(initial_plan, "device", None)
        )
        batch, device = mean.shape[0], mean.device
        std = th.full_like(mean, self.initial_std)
        low = th.as_tensor(self.action_low, device=device)
        high = th.as_tensor(self.action_high, device=device)
        shape = (batch, self.n_candidates, self.planning_horizon, self.action_dim)
        elite_log, candidate_log = [], []
        for _ in range(self.n_iterations):
            noise = th.randn(shape, generator=generator, device=device)
            candidates = th.clamp(mean[:, None] + std[:, None] * noise, low, high)
            returns = self._evaluate(objective, candidates)
            elites, elite_returns = self._elites(candidates, returns)
            mean = elites.mean(dim=1)
            std = th.sqrt(elites.var(dim=1, unbiased=False) + self.min_var)
            elite_log.append(elite_returns.mean(dim=1))
            candidate_log.append(returns.mean(dim=1))
        return PlanResult(
            action=mean[:, 0].clone(),
            action_index=None,
            plan=mean,
            warm_start=shift_plan(mean),
            planned_return=elite_log[-1],
            best_return=elite_returns[:, 0],
            elite_returns=th.stack(elite_log),
            candidate_returns=th.stack(candidate_log),
        )


class CategoricalCEM(CEMOptimizer):
    """CEM over independent per-step categoricals (Rose's PlaNet fork, its discrete-action adaptation).

    The distribution is per-step logits ``(batch, planning_horizon, n_actions)``, initialised from
    ``initial_plan`` (zeros = uniform, or the warm start). Each iteration draws ``n_candidates`` independent
    categorical samples per step (Gumbel-max, exact), one-hot encodes them, evaluates them, and refits
    ``logits = log(frequency among the n_elites best + min_freq)``. The executed action is the first step
    of the single best-return sequence of the last iteration, not the mode of the distribution.

    :param n_actions: number of discrete actions (the ``action_dim`` of the one-hot sequences).
    :param min_freq: added to the elite frequencies before the log (fork: 1e-6).
    See :class:`CEMOptimizer` for the other parameters.
    """

    def __init__(
        self,
        planning_horizon: int = 12,
        n_actions: int = 2,
        n_candidates: int = 1000,
        n_elites: int = 100,
        n_iterations: int = 10,
        min_freq: float = 1e-6,
    ):
        super().__init__(planning_horizon, n_actions, n_candidates, n_elites, n_iterations)
        self.n_actions = n_actions
        self.min_freq = min_freq

    def plan(
        self,
        objective: Objective,
        initial_plan: th.Tensor | np.ndarray,
        generator: th.Generator | None = None,
        device: th.device | str | None = None,
    ) -> PlanResult:
        """Run the categorical CEM for ``batch`` envs at once.

        :param objective: maps one-hot sequences ``(batch, n_candidates, planning_horizon, n_actions)`` to
            ``(batch, n_candidates)`` returns (NaN returns count as ``-inf``).
        :param initial_plan: initial logits ``(batch, planning_horizon, n_actions)``.
        :param generator: ``torch.Generator`` on ``device`` for the samples (None: global RNG).
        :param device: where to plan; defaults to ``initial_plan``'s device (cpu for numpy input).
        :return: :class:`PlanResult` with a one-hot ``action`` and its ``action_index``.
        :raises ValueError: on a wrongly shaped ``initial_plan`` or objective output.
        """
        logits = self._as_plan(
            initial_plan, device if device is not None else getattr(initial_plan, "device", None)
        )
        batch, device = logits.shape[0], logits.device
        shape = (batch, self.n_candidates, self.planning_horizon, self.n_actions)
        elite_log, candidate_log = [], []
        for _ in range(self.n_iterations):
            uniform = th.rand(shape, generator=generator, device=device).clamp_(min=1e-20)
            gumbel = -th.log((-th.log(uniform)).clamp_(min=1e-20))
            indices = th.argmax(logits[:, None] + gumbel, dim=-1)  # (batch, n_candidates, horizon)
            candidates = th.nn.functional.one_hot(indices, self.n_actions).to(th.float32)
            returns = self._evaluate(objective, candidates)
            elites, elite_returns = self._elites(candidates, returns)
            logits = th.log(elites.mean(dim=1) + self.min_freq)
            elite_log.append(elite_returns.mean(dim=1))
            candidate_log.append(returns.mean(dim=1))
        best = th.argmax(returns, dim=1)
        best_first = indices[th.arange(batch, device=device), best, 0]
        best_return = returns.gather(1, best[:, None])[:, 0]
        return PlanResult(
            action=th.nn.functional.one_hot(best_first, self.n_actions).to(th.float32),
            action_index=best_first,
            plan=logits,
            warm_start=shift_plan(logits),
            planned_return=best_return,
            best_return=best_return,
            elite_returns=th.stack(elite_log),
            candidate_returns=th.stack(candidate_log),
        )
