"""Vectorised ensemble MLP (E members as one batched matmul) and its trainer with early stopping.

The ensemble is the dynamics model of MBPO / VaGraM (Janner et al. 2019, arXiv:1906.08253, App. C;
Voelcker et al. 2022, arXiv:2204.01464) and the Q, transition, reward and done ensembles of STEVE
(Buckman et al. 2018, arXiv:1807.01675, Sec. 4): ``E`` independent MLPs whose weights are stored as
``(E, in, out)`` tensors, so a forward pass over all members is one ``torch.baddbmm`` per layer and there
is no Python loop over members.

Two heads:

- Gaussian (PETS / MBPO): mean and log-variance, the log-variance softly bounded by ``max_logvar`` /
  ``min_logvar`` (Chua et al. 2018, arXiv:1805.12114, App. A.1)::

      logvar = max_logvar - softplus(max_logvar - logvar)
      logvar = min_logvar + softplus(logvar - min_logvar)

- deterministic (VaGraM, STEVE): the mean only; ``forward`` returns ``logvar=None``.

Inputs are normalised inside ``forward`` by :class:`Normalizer`, whose mean and std are registered buffers
(saved with ``state_dict``) fitted on the training inputs by :class:`EnsembleTrainer`.

Which member sees which row (a training example, a rollout) is decided in one place,
:func:`random_member_split`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from sb3_mb.common.checks import check_finite
from sb3_mb.common.distributions import gaussian_nll
from sb3_mb.common.sac_update import set_adam_impl

__all__ = [
    "EnsembleLinear",
    "EnsembleMLP",
    "EnsembleTrainer",
    "EnsembleTrainResult",
    "LossFn",
    "Normalizer",
    "mse_loss",
    "nll_loss",
    "random_member_split",
]

#: Pluggable model loss: ``loss_fn(pred_mean, pred_logvar, target, batch_indices) -> (E,)``.
#: ``pred_mean``, ``target``: ``(E, batch, out_dim)``; ``pred_logvar``: same shape or ``None`` (deterministic
#: head); ``batch_indices``: ``(E, batch)`` long tensor, the dataset index (for MBPO: the replay-buffer index)
#: of every example each member sees. Returns one loss per member, shape ``(E,)``.
LossFn = Callable[[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor], torch.Tensor]

#: Weight initialisations of :class:`EnsembleLinear`.
_INITS = ("truncated_normal", "xavier_uniform")


def random_member_split(
    n_rows: int,
    n_members: int,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    drop_remainder: bool = True,
) -> torch.Tensor:
    """Balanced random assignment of ``n_rows`` rows to ``n_members`` ensemble members.

    A random permutation of ``range(n_rows)`` cut into ``n_members`` consecutive parts; part ``m`` holds the
    rows member ``m`` takes. Every caller assigns rows this way:

    - training, "each example trains one random member" (STEVE's ``random`` reduce, Buckman et al. 2018,
      Sec. 4): ``drop_remainder=True``, ``n_rows // n_members`` rows each, the ``n_rows % n_members``
      left-over rows unused, so one forward pass costs one member's compute per row instead of ``E``;
    - rollouts, "a random elite per row and step" (MBPO's TS1 propagation, Janner et al. 2019, App. C):
      ``drop_remainder=False``, ``ceil(n_rows / n_members)`` slots each, every row used once and the unused
      slots at the end of the last parts set to ``-1``.

    :param generator: ``torch.Generator`` on ``device`` (None: torch's global RNG).
    :return: ``(n_members, rows_per_member)`` long tensor of row indices (``-1`` marks an empty slot).
    :raises ValueError: if ``drop_remainder`` and ``n_rows < n_members`` (a member would get no row).
    """
    perm = torch.randperm(n_rows, generator=generator, device=device)
    if drop_remainder:
        per_member = n_rows // n_members
        if per_member == 0:
            raise ValueError(f"Cannot give each of {n_members} ensemble members a row out of {n_rows}")
        return perm[: per_member * n_members].view(n_members, per_member)
    per_member = -(-n_rows // n_members)
    padded = torch.full((n_members * per_member,), -1, dtype=perm.dtype, device=perm.device)
    padded[:n_rows] = perm
    return padded.view(n_members, per_member)


class Normalizer(nn.Module):
    """Per-feature standardisation ``(x - mean) / std`` with the statistics as registered buffers.

    :param size: number of features.
    :param eps: features whose std is below ``eps`` are divided by 1 (constant features, as mbrl-lib).
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, size: int, eps: float = 1e-8):
        super().__init__()
        self.eps = eps
        self.register_buffer("mean", torch.zeros(size))
        self.register_buffer("std", torch.ones(size))

    @torch.no_grad()
    def fit(self, data: torch.Tensor) -> None:
        """Set mean / std from ``data`` of shape ``(n, size)``."""
        data = data.reshape(-1, self.mean.shape[0]).to(self.mean)
        std = data.std(0, unbiased=False) if data.shape[0] > 1 else torch.ones_like(self.std)
        self.mean.copy_(data.mean(0))
        self.std.copy_(torch.where(std < self.eps, torch.ones_like(std), std))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def denormalize(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.std + self.mean


class EnsembleLinear(nn.Module):
    """``E`` independent affine maps applied as one batched matmul.

    Weight ``(E, in_features, out_features)``, bias ``(E, 1, out_features)``; truncated-normal init with
    std ``1 / (2 sqrt(in_features))`` cut at two std (PETS / MBPO / mbrl-lib), zero bias.
    ``init="xavier_uniform"`` instead draws every member's weight from
    ``U(-sqrt(6 / (in + out)), sqrt(6 / (in + out)))`` (Glorot & Bengio 2010, STEVE's initialisation).

    ``forward(x, member_idx=None)``: ``x`` of shape ``(batch, in)`` (broadcast to every member) or
    ``(E', batch, in)`` where ``E' = E`` or ``E' = len(member_idx)`` (the rows use those members' weights).
    Returns ``(E', batch, out)``.

    :raises ValueError: for an unknown ``init``.
    """

    def __init__(
        self, ensemble_size: int, in_features: int, out_features: int, init: str = "truncated_normal"
    ):
        super().__init__()
        if init not in _INITS:
            raise ValueError(f"Unknown init {init!r}; expected one of {_INITS}")
        self.ensemble_size, self.in_features, self.out_features = ensemble_size, in_features, out_features
        self.init = init
        self.weight = nn.Parameter(torch.empty(ensemble_size, in_features, out_features))
        self.bias = nn.Parameter(torch.zeros(ensemble_size, 1, out_features))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.init == "xavier_uniform":
            bound = math.sqrt(6.0 / (self.in_features + self.out_features))
            nn.init.uniform_(self.weight, -bound, bound)
        else:
            std = 1.0 / (2.0 * math.sqrt(self.in_features))
            nn.init.trunc_normal_(self.weight, std=std, a=-2 * std, b=2 * std)
        nn.init.zeros_(self.bias)

    def forward(self, x: torch.Tensor, member_idx: torch.Tensor | None = None) -> torch.Tensor:
        weight, bias = self.weight, self.bias
        if member_idx is not None:
            weight, bias = weight[member_idx], bias[member_idx]
        if x.dim() == 2:
            return torch.matmul(x, weight) + bias
        return torch.baddbmm(bias, x, weight)

    def extra_repr(self) -> str:
        return f"ensemble_size={self.ensemble_size}, in={self.in_features}, out={self.out_features}"


class EnsembleMLP(nn.Module):
    """Ensemble of ``E`` MLPs with a Gaussian or deterministic head, elites and an input normaliser.

    :param in_dim: input size (for a dynamics model: ``obs_dim + action_dim``).
    :param out_dim: output size (for MBPO: ``obs_dim + 1``, i.e. ``[delta_obs, reward]``).
    :param ensemble_size: number of members ``E`` (MBPO / VaGraM: 7; STEVE: 4).
    :param net_arch: hidden layer sizes of every member (MBPO: ``[200] * 4``; VaGraM capacity experiments
        ``[64] * 2``; STEVE transition ``[512] * 7``); empty for an affine map.
    :param activation_fn: activation class (MBPO / VaGraM: ``nn.SiLU``; STEVE: ``nn.ReLU``).
    :param deterministic: mean-only head (VaGraM, STEVE) instead of mean + bounded log-variance.
    :param n_elites: members used for prediction, chosen on the holdout (MBPO: 5 of 7). ``None``: all.
    :param init: weight initialisation of every layer: ``"truncated_normal"`` (PETS / MBPO, default) or
        ``"xavier_uniform"`` (STEVE); biases start at zero.
    :raises ValueError: for non-positive sizes, an unknown ``init`` or ``n_elites > ensemble_size``.
    """

    elite_idx: torch.Tensor
    max_logvar: torch.Tensor
    min_logvar: torch.Tensor

    #: The log-variance bounds of the Gaussian head (PETS: 0.5 and -10; fixed, as mbrl-lib's MBPO configs).
    MAX_LOGVAR, MIN_LOGVAR = 0.5, -10.0

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        ensemble_size: int = 7,
        net_arch: Sequence[int] = (200, 200, 200, 200),
        activation_fn: type[nn.Module] = nn.SiLU,
        deterministic: bool = False,
        n_elites: int | None = None,
        init: str = "truncated_normal",
    ):
        super().__init__()
        net_arch = [int(size) for size in net_arch]
        if min(in_dim, out_dim, ensemble_size, *net_arch) < 1:
            raise ValueError(
                f"Sizes must be positive: in_dim={in_dim}, out_dim={out_dim}, ensemble_size={ensemble_size}, "
                f"net_arch={net_arch}"
            )
        n_elites = ensemble_size if n_elites is None else int(n_elites)
        if not 1 <= n_elites <= ensemble_size:
            raise ValueError(f"n_elites={n_elites} must lie in [1, ensemble_size={ensemble_size}]")
        self.in_dim, self.out_dim, self.ensemble_size = in_dim, out_dim, ensemble_size
        self.net_arch, self.deterministic, self.n_elites = net_arch, deterministic, n_elites

        sizes = [in_dim, *net_arch]
        self.hidden_layers = nn.ModuleList(
            EnsembleLinear(ensemble_size, i, o, init=init) for i, o in zip(sizes[:-1], sizes[1:], strict=True)
        )
        head_out = out_dim if deterministic else 2 * out_dim
        self.output_layer = EnsembleLinear(ensemble_size, sizes[-1], head_out, init=init)
        self.activation = activation_fn()
        if not deterministic:
            self.register_buffer("max_logvar", torch.full((1, out_dim), self.MAX_LOGVAR))
            self.register_buffer("min_logvar", torch.full((1, out_dim), self.MIN_LOGVAR))
        self.input_normalizer = Normalizer(in_dim)
        self.register_buffer("elite_idx", torch.arange(n_elites))

    @property
    def linear_layers(self) -> list[EnsembleLinear]:
        """The hidden layers then the output layer."""
        return [*self.hidden_layers, self.output_layer]

    def fit_normalizers(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        """Fit the normalisers on the training data (``(n, in_dim)``, ``(n, out_dim)``) before training;
        here the input normaliser only (a subclass may also normalise its targets)."""
        self.input_normalizer.fit(inputs)

    def standardize(
        self, mean: torch.Tensor, logvar: torch.Tensor | None, target: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """``(mean, logvar, target)`` in the units in which the built-in losses and the holdout score compare
        prediction and target: as given here; a subclass that normalises its targets standardises them."""
        return mean, logvar, target

    # ------------------------------------------------------------------ forward
    def forward(
        self, x: torch.Tensor, member_idx: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Predict mean and log-variance for every member.

        :param x: raw (un-normalised) input ``(batch, in_dim)``, broadcast to all members, or
            ``(E, batch, in_dim)`` one slice per member, or ``(len(member_idx), batch, in_dim)``.
        :param member_idx: optional long tensor ``(K,)`` selecting which members' weights row ``k`` uses.
        :return: ``(mean, logvar)``, each ``(E or K, batch, out_dim)``; ``logvar`` is ``None`` for the
            deterministic head.
        """
        h = self.input_normalizer.normalize(x)
        for layer in self.hidden_layers:
            h = self.activation(layer(h, member_idx))
        out = self.output_layer(h, member_idx)
        if self.deterministic:
            return out, None
        mean, logvar = out[..., : self.out_dim], out[..., self.out_dim :]
        logvar = self.max_logvar - F.softplus(self.max_logvar - logvar)
        logvar = self.min_logvar + F.softplus(logvar - self.min_logvar)
        return mean, logvar

    def sample(
        self,
        x: torch.Tensor,
        member_idx: torch.Tensor | None = None,
        deterministic: bool = False,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """``mean + std * N(0, 1)`` per member (or ``mean`` when deterministic / deterministic head).

        Shapes as :meth:`forward`; ``generator`` must live on the model's device.
        """
        mean, logvar = self(x, member_idx)
        if deterministic or logvar is None:
            return mean
        noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + torch.exp(0.5 * logvar) * noise

    # ------------------------------------------------------------------ members and elites
    def member_parameters(self) -> dict[str, nn.Parameter]:
        """The parameters with a leading member dimension ``E`` (what early stopping snapshots per member)."""
        return {
            f"{i}.{name}": p
            for i, layer in enumerate(self.linear_layers)
            for name, p in layer.named_parameters()
        }

    def set_elites(self, elite_idx: Sequence[int] | torch.Tensor) -> None:
        """Set the elite members (``n_elites`` distinct indices in ``[0, E)``)."""
        idx = torch.as_tensor(elite_idx, dtype=torch.long, device=self.elite_idx.device).flatten()
        if idx.numel() != self.n_elites or len(set(idx.tolist())) != idx.numel():
            raise ValueError(f"Expected {self.n_elites} distinct elite indices, got {idx.tolist()}")
        if idx.min() < 0 or idx.max() >= self.ensemble_size:
            raise ValueError(f"Elite indices {idx.tolist()} out of range [0, {self.ensemble_size})")
        self.elite_idx.copy_(idx)


# ---------------------------------------------------------------------------------------------- losses
def nll_loss(
    pred_mean: torch.Tensor, pred_logvar: torch.Tensor | None, target: torch.Tensor, batch_indices=None
) -> torch.Tensor:
    """The Gaussian likelihood loss of PETS / MBPO per member, ``(E,)``.

    ``mean over batch and dims of (mean - target)^2 * exp(-logvar) + logvar``: twice the Gaussian NLL
    without its constant (:func:`~sb3_mb.common.distributions.gaussian_nll`), the scale of Chua et al.
    2018, arXiv:1805.12114, Eq. 2 and of the MBPO code.

    :raises ValueError: for a deterministic head (``pred_logvar is None``).
    """
    if pred_logvar is None:
        raise ValueError("The Gaussian NLL loss needs a Gaussian head (deterministic=False)")
    return 2.0 * gaussian_nll(target, pred_mean, pred_logvar, constant=False).mean(dim=(-2, -1))


def mse_loss(
    pred_mean: torch.Tensor, pred_logvar: torch.Tensor | None, target: torch.Tensor, batch_indices=None
) -> torch.Tensor:
    """Mean squared error per member ``(E,)``: mean over batch and output dims."""
    return (pred_mean - target).pow(2).mean(dim=(-2, -1))


_BUILTIN_LOSSES: dict[str, LossFn] = {"nll": nll_loss, "mse": mse_loss}


# ---------------------------------------------------------------------------------------------- trainer
@dataclass
class EnsembleTrainResult:
    """What :meth:`EnsembleTrainer.train` returns.

    :param train_losses: mean training loss over members and batches, one float per epoch.
    :param holdout_losses: holdout score per member ``(E,)``, one array per epoch.
    :param best_holdout: holdout score ``(E,)`` of the kept (best) snapshot of every member.
    :param elites: indices of the ``n_elites`` members with the lowest ``best_holdout``.
    :param n_epochs: epochs run.
    :param stopped_early: the patience rule ended training before ``max_epochs``.
    """

    train_losses: list[float] = field(default_factory=list)
    holdout_losses: list[np.ndarray] = field(default_factory=list)
    best_holdout: np.ndarray | None = None
    elites: np.ndarray | None = None
    n_epochs: int = 0
    stopped_early: bool = False


class EnsembleTrainer:
    """Fit an :class:`EnsembleMLP` on ``(inputs, targets)`` with a holdout set and MBPO's early stopping.

    Source: MBPO (Janner et al. 2019, arXiv:1906.08253, App. C, and its released code): the holdout is a
    random split; after every epoch each member's holdout score is compared with its best; a member
    *improves* when ``(best - score) / |best| > improvement_threshold`` and its weights are snapshotted;
    training stops after ``patience`` epochs in which no member improved, and every member is restored to
    its best snapshot. Elites are the ``model.n_elites`` members with the lowest best holdout score.

    Each member trains on its own bootstrap resample of the training split (PETS, Chua et al. 2018,
    arXiv:1805.12114, Sec. 4.1), drawn once per :meth:`train` call and reshuffled every epoch.

    Holdout score: the mean squared error for the built-in losses (MBPO / mbrl-lib pick elites and stop on
    the holdout MSE), the training loss itself for a callable loss (VaGraM scores what it trains). It is
    evaluated under ``torch.no_grad()``: a callable that needs autograd (value gradients) enables it itself.
    The built-in losses and their holdout score compare in the model's :meth:`EnsembleMLP.standardize` units
    (raw, or standardised targets for a :class:`~sb3_mb.common.dynamics.DynamicsModel` that normalises them);
    a callable loss gets raw units.

    :param model: the ensemble to train.
    :param learning_rate: Adam learning rate (MBPO: 1e-3).
    :param batch_size: examples per member per gradient step (MBPO TF: 256; VaGraM Hopper: 1024).
    :param holdout_ratio: fraction of the data held out (MBPO: 0.2); 0 means no holdout: scores are then
        computed on the training data and training runs ``max_epochs``.
    :param max_holdout: cap on the holdout size (MBPO: 5000).
    :param max_epochs: epoch cap (``None``: only early stopping; requires a holdout).
    :param patience: epochs without improvement before stopping (MBPO TF: 5; mbrl-lib / VaGraM: 10).
    :param improvement_threshold: relative improvement that counts (MBPO: 0.01).
    :param loss: ``"nll"`` (:func:`nll_loss`, default), ``"mse"`` or a :data:`LossFn` callable.
    :param weight_decay: L2 coefficient per linear layer (``len(net_arch) + 1`` values; MBPO's code uses
        ``[2.5e-5, 5e-5, 7.5e-5, 7.5e-5, 1e-4]``) or one float for all. The penalty
        ``sum_l wd_l / 2 * ||W_l||^2`` over the weights (not the biases) equals Adam's ``weight_decay=wd``.
    :param owner: who trains the ensemble, named in error messages (e.g. ``"MBPO dynamics ensemble"``).
    :param fused: the fast gradient step (issue 15), the same math in fewer kernels: Adam runs its ``fused``
        kernel (one pass over all tensors instead of ~10 per tensor) and the weight decay's gradient
        ``wd_l W_l`` is added to the gradients in place instead of differentiating the penalty (the
        penalty's forward and backward cost ~5% of an epoch at MBPO's sizes). ``False``: the reference path
        (the penalty in the loss, torch's default Adam); the two agree to float32 rounding
        (``tests/common/test_ensemble_fused.py``).
    :raises ValueError: on an unknown loss, a wrong ``weight_decay`` length, or no holdout and no epoch cap.
    :raises FloatingPointError: from :meth:`train`, on a NaN/inf loss (naming the owner, the loss and the
        epoch; :func:`~sb3_mb.common.checks.check_finite`).
    """

    def __init__(
        self,
        model: EnsembleMLP,
        learning_rate: float = 1e-3,
        batch_size: int = 256,
        holdout_ratio: float = 0.2,
        max_holdout: int = 5000,
        max_epochs: int | None = None,
        patience: int = 5,
        improvement_threshold: float = 0.01,
        loss: str | LossFn = "nll",
        weight_decay: float | Sequence[float] = 0.0,
        owner: str = "EnsembleTrainer",
        fused: bool = True,
    ):
        if not 0.0 <= holdout_ratio < 1.0:
            raise ValueError(f"holdout_ratio must lie in [0, 1), got {holdout_ratio}")
        self.model, self.owner = model, owner
        self.batch_size, self.holdout_ratio, self.max_holdout = (
            int(batch_size),
            float(holdout_ratio),
            max_holdout,
        )
        self.max_epochs, self.patience, self.improvement_threshold = (
            max_epochs,
            int(patience),
            improvement_threshold,
        )
        self.loss_fn = self._resolve_loss(loss)
        self.holdout_fn = mse_loss if isinstance(loss, str) else self.loss_fn
        self._builtin_loss = isinstance(loss, str)
        n_linear = len(model.linear_layers)
        if isinstance(weight_decay, (int, float)):
            self.weight_decay = [float(weight_decay)] * n_linear
        else:
            self.weight_decay = [float(w) for w in weight_decay]
        if len(self.weight_decay) != n_linear:
            raise ValueError(
                f"weight_decay needs {n_linear} values (one per linear layer), got {len(self.weight_decay)}"
            )
        self.fused = bool(fused)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)

    @staticmethod
    def _resolve_loss(loss: str | LossFn) -> LossFn:
        if callable(loss):
            return loss
        try:
            return _BUILTIN_LOSSES[str(loss)]
        except KeyError:
            raise ValueError(f"Unknown loss {loss!r}; expected 'nll', 'mse' or a callable") from None

    def weight_decay_loss(self) -> torch.Tensor:
        """``sum_l wd_l / 2 * ||W_l||^2`` over the linear layers' weights (all members), a scalar."""
        total = self.model.output_layer.weight.new_zeros(())
        for decay, layer in zip(self.weight_decay, self.model.linear_layers, strict=True):
            if decay > 0:
                total = total + 0.5 * decay * layer.weight.pow(2).sum()
        return total

    @torch.no_grad()
    def add_weight_decay_gradient(self) -> None:
        """Add the gradient of :meth:`weight_decay_loss`, ``wd_l W_l``, to each weight's ``.grad`` in place
        (a weight without a gradient gets ``wd_l W_l``); the fused step's form of the penalty."""
        for decay, layer in zip(self.weight_decay, self.model.linear_layers, strict=True):
            if decay > 0:
                weight = layer.weight
                if weight.grad is None:
                    weight.grad = decay * weight
                else:
                    weight.grad.add_(decay * weight)

    # ------------------------------------------------------------------ helpers
    def _check_finite(self, value: torch.Tensor, what: str, epoch: int) -> None:
        check_finite(value, self.owner, what, epoch, unit="epoch")

    @torch.no_grad()
    def evaluate(
        self, inputs: torch.Tensor, targets: torch.Tensor, indices: torch.Tensor, chunk_size: int = 4096
    ) -> torch.Tensor:
        """Holdout score per member ``(E,)`` on ``(n, in_dim)`` / ``(n, out_dim)`` data (the same for all)."""
        n_members = self.model.ensemble_size
        total = torch.zeros(n_members, device=inputs.device)
        n = inputs.shape[0]
        for start in range(0, n, chunk_size):
            sl = slice(start, min(start + chunk_size, n))
            mean, logvar = self.model(inputs[sl])
            target = targets[sl].unsqueeze(0).expand(n_members, -1, -1)
            if self._builtin_loss:
                mean, logvar, target = self.model.standardize(mean, logvar, target)
            idx = indices[sl].unsqueeze(0).expand(n_members, -1)
            total += self.holdout_fn(mean, logvar, target, idx) * (sl.stop - sl.start)
        return total / max(n, 1)

    # ------------------------------------------------------------------ training
    def train(
        self,
        inputs: torch.Tensor,
        targets: torch.Tensor,
        indices: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        max_epochs: int | None = None,
    ) -> EnsembleTrainResult:
        """Train until early stopping (or ``max_epochs``), restore each member's best snapshot, set elites.

        :param inputs: ``(n, in_dim)`` raw inputs (normalised by the model; the normaliser is fitted on the
            training split).
        :param targets: ``(n, out_dim)``.
        :param indices: ``(n,)`` long dataset indices passed to the loss as ``batch_indices`` (MBPO: replay
            indices, the key of the value-gradient cache). Default ``arange(n)``.
        :param generator: CPU ``torch.Generator`` for the split, bootstrap and shuffles (seeding).
        :param max_epochs: overrides the constructor's cap for this call.
        :return: :class:`EnsembleTrainResult`.
        :raises ValueError: on mismatched shapes or too little data.
        :raises FloatingPointError: on a non-finite training loss or holdout score.
        """
        model = self.model
        device = model.elite_idx.device
        inputs, targets = inputs.to(device), targets.to(device)
        n = inputs.shape[0]
        if targets.shape[0] != n or inputs.shape[-1] != model.in_dim or targets.shape[-1] != model.out_dim:
            raise ValueError(
                f"Expected inputs (n, {model.in_dim}) and targets (n, {model.out_dim}), "
                f"got {tuple(inputs.shape)} and {tuple(targets.shape)}"
            )
        indices = (
            torch.arange(n, device=device) if indices is None else indices.to(device=device, dtype=torch.long)
        )
        max_epochs = self.max_epochs if max_epochs is None else max_epochs
        if generator is None:
            generator = torch.Generator().manual_seed(int(torch.randint(2**62, (1,)).item()))
        # Here rather than at construction: loading a checkpoint replaces the optimizer's param groups.
        if self.fused:
            set_adam_impl(self.optimizer, "fused")
        elif any(group.get("fused") for group in self.optimizer.param_groups):
            set_adam_impl(self.optimizer, "default")

        n_holdout = min(int(n * self.holdout_ratio), self.max_holdout)
        if n - n_holdout < 1:
            raise ValueError(f"Not enough data to train: n={n}, holdout={n_holdout}")
        if n_holdout == 0 and max_epochs is None:
            raise ValueError("Without a holdout (holdout_ratio=0 or tiny data) max_epochs must be set")
        perm = torch.randperm(n, generator=generator).to(device)
        hold_pos, train_pos = perm[:n_holdout], perm[n_holdout:]
        if n_holdout == 0:
            hold_pos = train_pos
        x_train, y_train, i_train = inputs[train_pos], targets[train_pos], indices[train_pos]
        x_hold, y_hold, i_hold = inputs[hold_pos], targets[hold_pos], indices[hold_pos]
        model.fit_normalizers(x_train, y_train)

        n_train = x_train.shape[0]
        n_members = model.ensemble_size
        bootstrap = torch.randint(n_train, (n_members, n_train), generator=generator)

        member_params = model.member_parameters()
        best_state = {name: p.detach().clone() for name, p in member_params.items()}
        best_score = torch.full((n_members,), float("inf"), device=device)
        result = EnsembleTrainResult()
        epochs_since_update, epoch = 0, 0
        while max_epochs is None or epoch < max_epochs:
            model.train()
            # Each member's bootstrap resample in a fresh order: (E, n_train) positions into the split.
            perm = torch.argsort(torch.rand(n_members, n_train, generator=generator), dim=1)
            order = torch.gather(bootstrap, 1, perm).to(device)
            losses = []
            for start in range(0, order.shape[1], self.batch_size):
                pos = order[:, start : start + self.batch_size]  # (E, b)
                mean, logvar = model(x_train[pos])
                target = y_train[pos]
                if self._builtin_loss:
                    mean, logvar, target = model.standardize(mean, logvar, target)
                member_loss = self.loss_fn(mean, logvar, target, i_train[pos])
                self._check_finite(member_loss, "training loss", epoch)
                self.optimizer.zero_grad()
                if self.fused:
                    member_loss.sum().backward()
                    self.add_weight_decay_gradient()
                else:
                    (member_loss.sum() + self.weight_decay_loss()).backward()
                self.optimizer.step()
                losses.append(member_loss.detach().mean())
            result.train_losses.append(float(torch.stack(losses).mean()))
            model.eval()
            score = self.evaluate(x_hold, y_hold, i_hold)
            self._check_finite(score, "holdout score", epoch)
            result.holdout_losses.append(score.cpu().numpy())
            epoch += 1

            improvement = (best_score - score) / best_score.abs().clamp_min(1e-12)
            improved = torch.isinf(best_score) | (improvement > self.improvement_threshold)
            if improved.any():
                best_score = torch.where(improved, score, best_score)
                with torch.no_grad():
                    for name, p in member_params.items():
                        best_state[name][improved] = p.detach()[improved]
                epochs_since_update = 0
            else:
                epochs_since_update += 1
            if n_holdout > 0 and epochs_since_update >= self.patience:
                result.stopped_early = max_epochs is None or epoch < max_epochs
                break

        with torch.no_grad():
            for name, p in member_params.items():
                p.copy_(best_state[name])
        model.eval()
        best = self.evaluate(x_hold, y_hold, i_hold)
        elites = torch.argsort(best)[: model.n_elites]
        model.set_elites(elites)
        result.best_holdout = best.cpu().numpy()
        result.elites = elites.cpu().numpy()
        result.n_epochs = epoch
        return result
