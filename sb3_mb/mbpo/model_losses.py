"""Model losses of MBPO: MLE (Gaussian NLL), MSE, VaGraM (bounded and unbounded) and IterVAML.

Every loss follows :data:`sb3_mb.common.ensemble.LossFn`:
``loss(pred_mean, pred_logvar, target, batch_indices) -> (E,)`` with ``pred_mean`` / ``target``
``(E, batch, obs_dim + 1)`` in the layout of :class:`~sb3_mb.common.dynamics.DynamicsModel` (which alone
splits them into ``(delta_obs, reward)``) and ``batch_indices`` ``(E, batch)`` the replay-buffer index of
every example each member sees.

Write ``d = pred_delta - true_delta = s'_hat - s'`` and ``g_k = grad_{s'} V_k(s')`` at the **real** next state
``s'``, with ``V_k(s) = Q_k(s, tanh(mu(s)))``, ``k`` over ``Q1, Q2, Q1', Q2'`` (``use_all_vf``):

- ``"vagram"`` (bounded VaGraM, the method of Voelcker et al. 2022, arXiv:2204.01464, the Cauchy-Schwarz
  bound of the Taylor term): ``mean_k sum_i (g_ki d_i)^2 + (r_hat - r)^2``;
- ``"vagram_unbounded"`` (the first-order Taylor approximation of IterVAML, same paper):
  ``mean_k (g_k . d)^2 + (r_hat - r)^2``, degenerate for any ``d`` orthogonal to ``g``;
- ``"itervaml"`` (Farahmand, NeurIPS 2018, "Iterative Value-Aware Model Learning"):
  ``mean_k (V_k(s'_hat) - V_k(s'))^2 + (r_hat - r)^2``.

Each is averaged over the batch. The reward term is added once, unweighted. The gradients are clipped per
batch: every ``g_k`` whose norm exceeds the batch's ``clip_quantile`` quantile of norms is rescaled to
it. During the first epoch (``add_mse``, set by MBPO) plain MSE over all output dims is added.

Quirks of the released VaGraM code, fixed here:

- the value gradient was first taken at the target delta ``s' - s`` instead of at ``s'`` (fixed by its
  authors after the paper); here at ``s'``;
- its latest clipping condition (``norm < q or norm < 1e5``) leaves every gradient below ``1e5`` unclipped,
  i.e. clipping is off; here the quantile clipping of the paper-era code;
- the four gradients were running sums (``next_obs.grad`` never zeroed between value functions); here
  each is computed independently;
- its gradient cache was keyed by the position in the data iterator and held the first member's
  gradients, so the other members and the holdout read gradients of other transitions; here ``g`` (and
  ``V(s')`` for IterVAML) is cached **per replay index**, so every member's bootstrapped example reads the
  gradient of its own transition, training and holdout alike.

The cache is invalidated by :meth:`ValueAwareLoss.begin_training` whenever the critic version (MBPO: the
number of SAC updates) or the data table changes, i.e. before every model training.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from stable_baselines3.sac.policies import SACPolicy

from sb3_mb.common.dynamics import DynamicsModel
from sb3_mb.common.ensemble import mse_loss
from sb3_mb.mbpo.policies import mean_action_values

__all__ = [
    "MODEL_LOSSES",
    "IterVAMLLoss",
    "ValueAwareLoss",
    "ValueCache",
    "VaGraMLoss",
    "make_model_loss",
]

MODEL_LOSSES = ("nll", "mse", "vagram", "vagram_unbounded", "itervaml")


class ValueCache:
    """Per-replay-index cache of a tensor ``(n_stored, *shape)`` with a ``known`` mask and a version tag.

    :param chunk_size: rows computed per call of the compute function (bounds memory).
    """

    def __init__(self, chunk_size: int = 8192):
        self.chunk_size = chunk_size
        self.values: torch.Tensor | None = None
        self.known: torch.Tensor | None = None
        self.n_computed = 0  # rows computed since the last reset (for tests and logging)

    def reset(self) -> None:
        self.values, self.known, self.n_computed = None, None, 0

    def get(
        self, indices: torch.Tensor, size: int, compute: Callable[[torch.Tensor], torch.Tensor]
    ) -> torch.Tensor:
        """Values at ``indices`` (any shape); unknown rows are computed by ``compute(rows) -> (m, *shape)``.

        :param size: number of addressable indices (the data table's length).
        """
        flat = indices.reshape(-1)
        if self.known is None:
            self.known = torch.zeros(size, dtype=torch.bool, device=flat.device)
        missing = torch.unique(flat[~self.known[flat]])
        for start in range(0, missing.shape[0], self.chunk_size):
            rows = missing[start : start + self.chunk_size]
            new = compute(rows).detach()
            if self.values is None:
                self.values = new.new_zeros(size, *new.shape[1:])
            self.values[rows] = new
            self.known[rows] = True
            self.n_computed += rows.shape[0]
        assert self.values is not None
        return self.values[flat].reshape(*indices.shape, *self.values.shape[1:])


class ValueAwareLoss:
    """Base of the value-aware model losses: holds the critic handle, the next-state table and the cache.

    :param model: the dynamics model being trained (its :meth:`~sb3_mb.common.dynamics.DynamicsModel.split`
        reads predictions and targets).
    :param use_all_vf: four value functions (Q1, Q2 and targets) instead of two.
    """

    def __init__(self, model: DynamicsModel, use_all_vf: bool = True):
        self.model, self.use_all_vf = model, use_all_vf
        self.policy: SACPolicy | None = None
        self.next_obs: torch.Tensor | None = None
        self.cache = ValueCache()
        self.add_mse = False
        self._version: object = None

    def begin_training(self, policy: SACPolicy, next_obs: torch.Tensor, critic_version: object) -> None:
        """Point the loss at the current critic and the data table; invalidate the cache if either changed.

        :param policy: the SAC policy whose critics define ``V``.
        :param next_obs: ``(n_stored, obs_dim)`` real next states, row = replay index.
        :param critic_version: any tag that changes whenever the critic changes (MBPO: ``_n_updates``).
        """
        if critic_version != self._version or next_obs is not self.next_obs or policy is not self.policy:
            self.cache.reset()
        self.policy, self.next_obs, self._version = policy, next_obs, critic_version

    def values(self, obs: torch.Tensor) -> torch.Tensor:
        """``(batch, n_vf)`` values at the mean action (:func:`~sb3_mb.mbpo.policies.mean_action_values`)."""
        assert self.policy is not None, "call begin_training(policy, next_obs, version) first"
        return mean_action_values(self.policy, obs, self.use_all_vf)

    def _errors(self, pred_mean: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``d = pred_delta - true_delta`` ``(E, batch, obs_dim)`` and the reward error ``(E, batch)``."""
        pred_delta, pred_reward = self.model.split(pred_mean)
        true_delta, true_reward = self.model.split(target)
        return pred_delta - true_delta, pred_reward - true_reward

    def _finish(self, state_term: torch.Tensor, reward_err: torch.Tensor, pred_mean, target) -> torch.Tensor:
        """``mean_batch(state_term + reward_err^2)`` (+ MSE in the first epoch), shape ``(E,)``."""
        loss = (state_term + reward_err.pow(2)).mean(dim=-1)
        if self.add_mse:
            loss = loss + mse_loss(pred_mean, None, target)
        return loss

    def __call__(self, pred_mean, pred_logvar, target, batch_indices) -> torch.Tensor:
        raise NotImplementedError


class VaGraMLoss(ValueAwareLoss):
    """Value-gradient weighted model loss (VaGraM; Voelcker et al. 2022, arXiv:2204.01464).

    :param model: the dynamics model being trained.
    :param bounded: ``True``: ``sum_i (g_i d_i)^2`` (the paper's method); ``False``: ``(g . d)^2`` (degenerate
        for ``d`` orthogonal to ``g``).
    :param clip_quantile: per-batch gradient-norm clipping quantile (0.95); ``None`` disables clipping.
    :param use_all_vf: average over Q1, Q2, Q1', Q2' (default) or Q1, Q2.
    """

    def __init__(
        self,
        model: DynamicsModel,
        bounded: bool = True,
        clip_quantile: float | None = 0.95,
        use_all_vf: bool = True,
    ):
        super().__init__(model, use_all_vf)
        self.bounded, self.clip_quantile = bounded, clip_quantile

    def value_gradients(self, rows: torch.Tensor) -> torch.Tensor:
        """``(m, n_vf, obs_dim)``: independent ``grad_{s'} V_k(s')`` at the real next states of ``rows``."""
        assert self.next_obs is not None
        with torch.enable_grad():
            obs = self.next_obs[rows].detach().clone().requires_grad_(True)
            values = self.values(obs)  # (m, n_vf)
            grads = [
                torch.autograd.grad(values[:, k].sum(), obs, retain_graph=k < values.shape[1] - 1)[0]
                for k in range(values.shape[1])
            ]
        return torch.stack(grads, dim=1)

    def clip(self, grads: torch.Tensor) -> torch.Tensor:
        """Rescale ``g`` ``(E, batch, n_vf, obs_dim)`` whose norm exceeds the batch quantile down to it."""
        if self.clip_quantile is None or grads.shape[1] < 2:
            return grads
        norms = grads.norm(dim=-1, keepdim=True)  # (E, b, K, 1)
        bound = torch.quantile(norms, self.clip_quantile, dim=1, keepdim=True)
        scale = torch.where(norms > bound, bound / norms.clamp_min(1e-12), torch.ones_like(norms))
        return grads * scale

    def __call__(self, pred_mean, pred_logvar, target, batch_indices) -> torch.Tensor:
        assert self.next_obs is not None, "call begin_training(policy, next_obs, version) first"
        grads = self.cache.get(batch_indices, self.next_obs.shape[0], self.value_gradients)  # (E, b, K, d)
        grads = self.clip(grads)
        d, reward_err = self._errors(pred_mean, target)
        if self.bounded:
            state_term = (grads * d.unsqueeze(-2)).pow(2).sum(-1).mean(-1)
        else:
            state_term = (grads * d.unsqueeze(-2)).sum(-1).pow(2).mean(-1)
        return self._finish(state_term, reward_err, pred_mean, target)


class IterVAMLLoss(ValueAwareLoss):
    """IterVAML (Farahmand, NeurIPS 2018): ``mean_k (V_k(s'_hat) - V_k(s'))^2 + (r_hat - r)^2``; ``V(s')`` is
    cached.

    The gradient reaches the model through ``V_k(s'_hat)`` (the action at ``s'_hat`` is detached).
    """

    def __call__(self, pred_mean, pred_logvar, target, batch_indices) -> torch.Tensor:
        assert self.next_obs is not None, "call begin_training(policy, next_obs, version) first"
        next_obs = self.next_obs
        with torch.no_grad():
            v_real = self.cache.get(
                batch_indices, next_obs.shape[0], lambda rows: self.values(next_obs[rows])
            )
        d, reward_err = self._errors(pred_mean, target)
        pred_next = next_obs[batch_indices] + d  # (E, b, obs_dim)
        v_pred = self.values(pred_next.flatten(0, 1)).reshape(*pred_next.shape[:2], -1)
        state_term = (v_pred - v_real).pow(2).mean(-1)
        return self._finish(state_term, reward_err, pred_mean, target)


def make_model_loss(
    name: str, model: DynamicsModel, clip_quantile: float | None = 0.95, use_all_vf: bool = True
) -> str | ValueAwareLoss:
    """The ensemble-trainer loss for ``name`` in :data:`MODEL_LOSSES`, training ``model``.

    :return: ``"nll"`` / ``"mse"`` (built into :class:`~sb3_mb.common.ensemble.EnsembleTrainer`) or a
        :class:`ValueAwareLoss`.
    :raises ValueError: for an unknown name.
    """
    if name in ("nll", "mse"):
        return name
    if name == "vagram":
        return VaGraMLoss(model, bounded=True, clip_quantile=clip_quantile, use_all_vf=use_all_vf)
    if name == "vagram_unbounded":
        return VaGraMLoss(model, bounded=False, clip_quantile=clip_quantile, use_all_vf=use_all_vf)
    if name == "itervaml":
        return IterVAMLLoss(model, use_all_vf=use_all_vf)
    raise ValueError(f"Unknown model_loss {name!r}; expected one of {MODEL_LOSSES}")
