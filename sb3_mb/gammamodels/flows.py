"""The conditional neural spline flow of the γ-model release, built from ``zuko`` parts.

Janner, Mordatch and Levine 2020, "γ-Models: Generative Temporal Difference Learning for Infinite-Horizon
Prediction" (arXiv:2010.14496); the release's flow, in the direction data ``x`` → latent ``z``::

    block k = 1..n_blocks:   ActNorm  →  invertible linear (LU, orthogonal init)  →  coupling (two steps)
    coupling step:           x_b ← RQS_spline(x_b; MLP([x_a, c]))      then the same with a and b swapped
    latent prior:            standard logistic per dimension

The rational-quadratic splines (Durkan et al. 2019, arXiv:1906.04032) have ``bins`` K bins on
``[-tail_bound, tail_bound]`` and are the identity outside (linear tails), as in the release (K = 16, B = 10).
``zuko`` supplies the spline, the coupling and the LU linear map; this module adds the two parts zuko has no
class for: the data-initialised ActNorm (Kingma and Dhariwal 2018, Glow, arXiv:1807.03039, Sec. 3.1) and the
logistic prior.

QUIRK (spec 1.3): the release's notebook initialises the online model's ActNorm on its visualisation grid,
the target copy on its first call. Here :func:`initialize_actnorm` sets every ActNorm from the first training
batch, and :class:`~sb3_mb.gammamodels.gamma_model.GammaModel` copies the result to its target.
"""

from __future__ import annotations

from functools import partial

import torch as th
import zuko
from torch import nn
from torch.distributions import constraints
from torch.distributions.transforms import AffineTransform
from zuko.flows import Flow, GeneralCouplingTransform, LazyTransform, UnconditionalTransform
from zuko.transforms import LULinearTransform, MonotonicRQSTransform, PermutationTransform

__all__ = ["ActNorm", "StandardLogistic", "conditional_spline_flow", "initialize_actnorm"]


class StandardLogistic(th.distributions.Distribution):
    """The standard logistic distribution per dimension, event shape ``(features,)``.

    ``log p(z) = sum_i -z_i - 2 softplus(-z_i)``; sampling maps ``u ~ U(0, 1)`` through ``log(u / (1 - u))``.
    (torch's ``TransformedDistribution(Uniform, SigmoidTransform.inv)`` returns ``-inf`` once ``sigmoid(z)``
    rounds to 1 in float32, for ``z`` above about 17.)
    """

    arg_constraints = {"loc": constraints.real}
    support = constraints.real_vector
    has_rsample = True

    def __init__(self, loc: th.Tensor):
        self.loc = loc  # zeros (features,): holds the shape, dtype and device
        super().__init__(batch_shape=loc.shape[:-1], event_shape=loc.shape[-1:], validate_args=False)

    def expand(self, batch_shape, _instance=None):
        return StandardLogistic(self.loc.expand(*batch_shape, *self.event_shape))

    def log_prob(self, value: th.Tensor) -> th.Tensor:
        z = value - self.loc
        return (-z - 2.0 * nn.functional.softplus(-z)).sum(-1)

    def rsample(self, sample_shape: tuple[int, ...] = ()) -> th.Tensor:
        shape = self._extended_shape(th.Size(sample_shape))
        eps = th.finfo(self.loc.dtype).tiny
        u = th.rand(shape, dtype=self.loc.dtype, device=self.loc.device).clamp(eps, 1.0 - 1e-7)
        return self.loc + th.log(u) - th.log1p(-u)


class ActNorm(LazyTransform):
    """Per-dimension affine map ``y = (x - m) / s``, with ``m`` and ``s`` initialised on data so that the
    first batch comes out with zero mean and unit standard deviation (Glow, Sec. 3.1), then learned.

    :param features: dimension of ``x``.
    """

    def __init__(self, features: int):
        super().__init__()
        self.shift = nn.Parameter(th.zeros(features))
        self.log_scale = nn.Parameter(th.zeros(features))
        self.register_buffer("initialized", th.tensor(False))

    def forward(self, c: th.Tensor | None = None) -> AffineTransform:
        return AffineTransform(self.shift, self.log_scale.exp(), event_dim=1)

    @th.no_grad()
    def initialize(self, x: th.Tensor, eps: float = 1e-6) -> None:
        """Set the map from ``x`` ``(n, features)`` (``n >= 2``): ``m = mean(x)``, ``s = std(x)``."""
        mean, std = x.mean(0), x.std(0).clamp_min(eps)
        self.log_scale.copy_(-th.log(std))
        self.shift.copy_(-mean / std)
        self.initialized.fill_(True)


def _orthogonal_lu(features: int, generator: th.Generator) -> tuple[th.Tensor, th.Tensor]:
    """A random orthogonal ``Q^T`` as ``(order, LU)`` for ``PermutationTransform(order)`` followed by zuko's
    ``LULinearTransform(LU)`` (lower factor with diagonal, unit upper factor): ``Q = P L U`` gives
    ``Q^T x = U^T L^T (P^T x)``."""
    q, _ = th.linalg.qr(th.randn(features, features, generator=generator))
    p, lower, upper = th.linalg.lu(q)
    order = p.argmax(dim=0)  # (P^T x)_i = x_{order[i]}
    lu = th.tril(upper.T) + th.triu(lower.T, diagonal=1)
    return order, lu


def conditional_spline_flow(
    features: int,
    context: int,
    bins: int = 16,
    tail_bound: float = 10.0,
    hidden_sizes: tuple[int, ...] = (256, 256, 256),
    n_blocks: int = 3,
    seed: int = 0,
) -> Flow:
    """The release's conditional flow ``p(x | c)`` (module docstring) as a ``zuko.flows.Flow``.

    ``flow(c)`` with ``c`` of shape ``(..., context)`` is a distribution over ``x`` of shape
    ``(..., features)`` (``log_prob``, ``sample``, ``rsample``).

    :param features: dimension of ``x`` (the future state), at least 1.
    :param context: dimension of ``c`` (the conditioning state and action).
    :param bins: spline bins K (release: 16).
    :param tail_bound: spline interval half-width B (release: 10); identity outside.
    :param hidden_sizes: hidden sizes of the coupling MLPs (release: 256 × 3, ReLU).
    :param n_blocks: blocks of ActNorm, invertible linear map and coupling (release: 3).
    :param seed: seed of the orthogonal initialisation of the linear maps.
    :raises ValueError: for ``features < 1``, ``bins < 2`` or ``tail_bound <= 0``.
    """
    if features < 1 or bins < 2 or tail_bound <= 0:
        raise ValueError(
            f"need features >= 1, bins >= 2, tail_bound > 0; got {features}, {bins}, {tail_bound}"
        )
    spline = partial(MonotonicRQSTransform, bound=tail_bound, slope=1e-3)
    shapes = [(bins,), (bins,), (bins - 1,)]
    generator = th.Generator().manual_seed(seed)
    lower = th.arange(features) < features // 2  # the release's split: the first floor(d / 2) dimensions
    transforms: list[LazyTransform] = []
    for _ in range(n_blocks):
        transforms.append(ActNorm(features))
        if features > 1:
            order, lu = _orthogonal_lu(features, generator)
            transforms.append(UnconditionalTransform(PermutationTransform, order, buffer=True))
            transforms.append(UnconditionalTransform(LULinearTransform, lu))
            for mask in (lower, ~lower):  # the MLP reads the masked dims and transforms the others
                transforms.append(
                    GeneralCouplingTransform(
                        features,
                        context,
                        mask=mask,
                        univariate=spline,
                        shapes=shapes,
                        hidden_features=list(hidden_sizes),
                    )
                )
        else:  # one dimension: a spline conditioned on c alone
            transforms.append(
                zuko.flows.ElementWiseTransform(
                    1, context, univariate=spline, shapes=shapes, hidden_features=list(hidden_sizes)
                )
            )
    base = zuko.flows.UnconditionalDistribution(StandardLogistic, th.zeros(features), buffer=True)
    return Flow(transforms, base)


@th.no_grad()
def initialize_actnorm(flow: Flow, x: th.Tensor, c: th.Tensor) -> None:
    """Initialise every :class:`ActNorm` of ``flow`` on data: ``x`` ``(n, features)`` is pushed through the
    transforms in order (data → latent), each ActNorm set from the values that reach it.

    :raises ValueError: for fewer than 2 rows.
    """
    if x.shape[0] < 2:
        raise ValueError(f"ActNorm needs at least 2 rows to initialise on, got {x.shape[0]}")
    transforms = flow.transform.transforms if hasattr(flow.transform, "transforms") else [flow.transform]
    for lazy in transforms:
        if isinstance(lazy, ActNorm):
            lazy.initialize(x)
        x = lazy(c)(x)
