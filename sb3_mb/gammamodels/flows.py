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

import math
from functools import partial
from typing import Any

import torch as th
import zuko
from torch import nn
from torch.distributions import constraints
from torch.distributions.transforms import AffineTransform
from zuko.flows import (
    ElementWiseTransform,
    Flow,
    GeneralCouplingTransform,
    LazyTransform,
    UnconditionalTransform,
)
from zuko.transforms import LULinearTransform, MonotonicRQSTransform, PermutationTransform

__all__ = ["ActNorm", "FlowOps", "StandardLogistic", "conditional_spline_flow", "initialize_actnorm"]


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


# ---------------------------------------------------------------------------------------------- fast path
class FlowOps:
    """The densities and samples of a flow built by :func:`conditional_spline_flow`, computed in plain tensor
    ops on the flow's own parameters instead of through zuko's transform and distribution objects (issue 15).

    The same math as ``flow(c).log_prob(x)`` and ``flow(c).sample((n,))`` (the same formulas, the same bin
    search, the same random draws): zuko builds a Python object per transform and call, runs each
    coupling's MLP twice for the log-density of a sample (once to invert, once for the Jacobian), casts the
    splines' boolean masks at every product and inverts the LU map by two batched triangular solves; here
    each coupling's MLP runs once per pass, the knots of widths and heights come from one op each, and the
    LU map and its inverse are one small matmul each. ``log_prob`` and its gradients equal zuko's; samples
    agree to float32 rounding (tests/gammamodels/test_gamma_speed.py).

    :param flow: a flow from :func:`conditional_spline_flow` (ActNorm, permutation, LU map, spline couplings
        or element-wise splines, standard logistic prior).
    :raises TypeError: for a flow with other parts.
    """

    def __init__(self, flow: Flow):
        self.flow = flow
        lazies = flow.transform.transforms if hasattr(flow.transform, "transforms") else [flow.transform]
        self.steps: list[tuple[str, nn.Module, dict[str, Any]]] = []
        for lazy in lazies:
            if isinstance(lazy, ActNorm):
                self.steps.append(("actnorm", lazy, {}))
            elif isinstance(lazy, UnconditionalTransform) and lazy.f is PermutationTransform:
                self.steps.append(("permute", lazy, {}))
            elif isinstance(lazy, UnconditionalTransform) and lazy.f is LULinearTransform:
                self.steps.append(("lu", lazy, {}))
            elif isinstance(lazy, (GeneralCouplingTransform, ElementWiseTransform)):
                self.steps.append((type(lazy).__name__, lazy, self._spline_info(lazy)))
            else:
                raise TypeError(f"FlowOps handles conditional_spline_flow's parts only, not {lazy}")
        if flow.base.f is not StandardLogistic:
            raise TypeError(f"FlowOps needs the standard logistic prior, not {flow.base}")

    @staticmethod
    def _spline_info(lazy: nn.Module) -> dict[str, Any]:
        univariate = lazy.univariate
        if not (isinstance(univariate, partial) and univariate.func is MonotonicRQSTransform):
            raise TypeError(f"FlowOps handles rational-quadratic splines only, not {univariate}")
        bins = int(lazy.shapes[0][0])
        if [tuple(s) for s in lazy.shapes] != [(bins,), (bins,), (bins - 1,)]:
            raise TypeError(f"unexpected spline parameter shapes {lazy.shapes}")
        layers = list(lazy.hyper)
        if not all(isinstance(m, nn.ReLU) for m in layers[1::2]) or len(layers) % 2 != 1:
            raise TypeError(f"FlowOps handles ReLU MLPs only, not {lazy.hyper}")
        info: dict[str, Any] = dict(
            bins=bins,
            bound=float(univariate.keywords.get("bound", 5.0)),
            slope=float(univariate.keywords.get("slope", 1e-3)),
            linears=layers[0::2],
        )
        if isinstance(lazy, GeneralCouplingTransform):
            mask = [bool(m) for m in lazy.mask.tolist()]
            idx_a = [i for i, m in enumerate(mask) if m]
            idx_b = [i for i, m in enumerate(mask) if not m]
            info.update(idx_a=idx_a, idx_b=idx_b, merge=[(idx_a + idx_b).index(j) for j in range(len(mask))])
        return info

    # ------------------------------------------------------------------------------------ parts
    @staticmethod
    def _mlp(linears: list[nn.Module], h: th.Tensor) -> th.Tensor:
        for i, linear in enumerate(linears):
            h = nn.functional.linear(h, linear.weight, linear.bias)
            if i < len(linears) - 1:
                h = th.relu_(h)  # in place on the fresh matmul output (its backward needs only the input)
        return h

    @staticmethod
    def _columns(x: th.Tensor, index: list[int]) -> th.Tensor:
        if index == list(range(index[0], index[0] + len(index))):
            return x[..., index[0] : index[0] + len(index)]
        return x[..., index]

    def _knots(self, info: dict[str, Any], h: th.Tensor, features: int) -> th.Tensor:
        phi = self._mlp(info["linears"], h).unflatten(-1, (features, -1))
        return _rqs_knots(phi, info["bins"], info["bound"], info["slope"])

    def _coupling_input(self, info: dict[str, Any], x_a: th.Tensor, c: th.Tensor) -> th.Tensor:
        return th.cat([x_a, c.expand(*x_a.shape[:-1], -1)], dim=-1)

    def _merge(self, info: dict[str, Any], x_a: th.Tensor, x_b: th.Tensor) -> th.Tensor:
        return self._columns(th.cat([x_a, x_b], dim=-1), info["merge"])

    @staticmethod
    def _lu(lazy: nn.Module) -> tuple[th.Tensor, th.Tensor]:
        lu = lazy._0
        lower = th.tril(lu)
        upper = th.triu(lu, diagonal=1) + th.eye(lu.shape[-1], dtype=lu.dtype, device=lu.device)
        return lower, upper

    # ------------------------------------------------------------------------------------ densities
    def log_prob(self, x: th.Tensor, c: th.Tensor) -> th.Tensor:
        """``log p(x | c)`` in nats: ``x (..., features)``, ``c (..., context)`` with the same batch shape
        ``(...)``; returns ``(...)`` (``flow(c).log_prob(x)``)."""
        ladj = x.new_zeros(())
        for kind, lazy, info in self.steps:
            if kind == "actnorm":
                scale = lazy.log_scale.exp()
                x = lazy.shift + scale * x
                ladj = ladj + scale.abs().log().sum(-1)
            elif kind == "permute":
                x = x[..., lazy._0]
            elif kind == "lu":
                lower, upper = self._lu(lazy)
                x = x @ (lower @ upper).mT
                ladj = ladj + th.diagonal(lower).abs().log().sum(-1)
            elif kind == "GeneralCouplingTransform":
                x_a, x_b = self._columns(x, info["idx_a"]), self._columns(x, info["idx_b"])
                knots = self._knots(info, self._coupling_input(info, x_a, c), len(info["idx_b"]))
                y_b, spline_ladj = _rqs_forward(x_b, knots)
                x = self._merge(info, x_a, y_b)
                ladj = ladj + spline_ladj.sum(-1)
            else:  # ElementWiseTransform: the spline's parameters from c alone
                x, spline_ladj = _rqs_forward(x, self._knots(info, c, x.shape[-1]))
                ladj = ladj + spline_ladj.sum(-1)
        return (-x - 2.0 * nn.functional.softplus(-x)).sum(-1) + ladj

    def sample(self, c: th.Tensor, n: int = 1, log_prob: bool = False) -> Any:
        """``n`` samples ``x ~ p(· | c)``, ``(n, ..., features)`` for ``c (..., context)``, drawn with the
        same uniforms as ``flow(c).sample((n,))`` (gradient flows through if enabled); with ``log_prob`` also
        ``log p(x | c)`` ``(n, ...)`` from the same pass (zuko's ``rsample_and_log_prob``, whose Jacobian
        terms are those of ``log_prob`` at the sample)."""
        x, density = self.inverse(self.latent((n, *c.shape[:-1])), c.expand(n, *c.shape), log_prob)
        return (x, density) if log_prob else x

    def latent(self, batch_shape: tuple[int, ...]) -> th.Tensor:
        """Draws of the standard logistic prior, ``(*batch_shape, features)``, from the same uniforms as
        :class:`StandardLogistic` ``.rsample``."""
        loc = self.flow.base._0
        shape = (*batch_shape, loc.shape[-1])
        u = th.rand(shape, dtype=loc.dtype, device=loc.device).clamp(th.finfo(loc.dtype).tiny, 1.0 - 1e-7)
        return loc + th.log(u) - th.log1p(-u)

    def inverse(
        self, x: th.Tensor, c: th.Tensor, log_prob: bool = False
    ) -> tuple[th.Tensor, th.Tensor | None]:
        """The flow's inverse: latents ``x (..., features)`` with contexts ``c (..., context)`` of the same
        batch shape to data ``(..., features)``; with ``log_prob`` also the data's ``log p (...)``, else
        ``None``."""
        density = (-x - 2.0 * nn.functional.softplus(-x)).sum(-1) if log_prob else None
        for kind, lazy, info in reversed(self.steps):
            if kind == "actnorm":
                scale = lazy.log_scale.exp()
                x = (x - lazy.shift) / scale
                if log_prob:
                    density = density + scale.abs().log().sum(-1)
            elif kind == "permute":
                x = x[..., th.argsort(lazy._0)]
            elif kind == "lu":
                lower, upper = self._lu(lazy)
                eye = th.eye(lower.shape[-1], dtype=lower.dtype, device=lower.device)
                inverse = th.linalg.solve_triangular(
                    upper, th.linalg.solve_triangular(lower, eye, upper=False), upper=True, unitriangular=True
                )
                x = x @ inverse.mT
                if log_prob:
                    density = density + th.diagonal(lower).abs().log().sum(-1)
            elif kind == "GeneralCouplingTransform":
                y_a, y_b = self._columns(x, info["idx_a"]), self._columns(x, info["idx_b"])
                knots = self._knots(info, self._coupling_input(info, y_a, c), len(info["idx_b"]))
                x_b, spline_ladj = _rqs_inverse(y_b, knots)
                x = self._merge(info, y_a, x_b)
                if log_prob:
                    density = density + spline_ladj.sum(-1)
            else:
                x, spline_ladj = _rqs_inverse(x, self._knots(info, c, x.shape[-1]))
                if log_prob:
                    density = density + spline_ladj.sum(-1)
        return x, density


def _rqs_knots(phi: th.Tensor, bins: int, bound: float, slope: float) -> th.Tensor:
    """zuko's ``MonotonicRQSTransform`` knots from its unconstrained parameters ``phi (..., 3K - 1)`` (widths
    K, heights K, derivatives K - 1) as one ``(..., 3, K + 1)`` tensor: horizontal and vertical positions on
    ``[-bound, bound]`` and the derivatives (1 at both ends). The same soft clip (minimum slope ``slope``),
    softmax, padding and cumulative sums; widths and heights in one op each."""
    log_slope = math.log(slope)
    wh = phi[..., : 2 * bins].unflatten(-1, (2, bins)).contiguous()
    wh = wh / (1 + abs(2 * wh / log_slope))
    positions = bound * (2 * th.cumsum(nn.functional.pad(th.softmax(wh, dim=-1), (1, 0), value=0), -1) - 1)
    derivatives = phi[..., 2 * bins :]
    derivatives = th.exp(nn.functional.pad(derivatives / (1 + abs(derivatives / log_slope)), (1, 1), value=0))
    return th.cat([positions, derivatives.unsqueeze(-2)], dim=-2)


def _rqs_bin(knots: th.Tensor, value: th.Tensor, row: int) -> tuple[th.Tensor, ...]:
    """zuko's bin lookup of ``value (...)`` among ``knots[..., row, :]`` (row 0 horizontal, 1 vertical):
    whether it lies inside the knots, the bin's ends ``x0, x1, y0, y1``, end derivatives ``d0, d1`` and
    mean slope ``s``; outside, the wrapped bin index (as zuko's ``k % K``)."""
    bins = knots.shape[-1] - 1
    k = (
        th.sum(knots[..., row, :] < value.unsqueeze(-1), dim=-1, keepdim=True) - 1
    )  # zuko's count (NaN: k = 0)
    inside = ((k >= 0) & (k < bins)).squeeze(-1)
    k = k % bins
    ends = knots.gather(-1, th.cat([k, k + 1], dim=-1).unsqueeze(-2).expand(*knots.shape[:-1], 2))
    (x0, x1), (y0, y1), (d0, d1) = (row.unbind(-1) for row in ends.unbind(-2))
    # the mask also as 0 / 1 in the knots' dtype, once (zuko multiplies by the boolean: one cast per product)
    return inside, inside.to(knots.dtype), x0, x1, y0, y1, d0, d1, (y1 - y0) / (x1 - x0)


def _rqs_forward(x: th.Tensor, knots: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
    """The spline ``y = f(x)`` and ``log f'(x)`` elementwise, the identity outside the knots (zuko's
    ``MonotonicRQSTransform.call_and_ladj``; Durkan et al. 2019, Eq. 4 and App. A)."""
    inside, weight, x0, x1, y0, y1, d0, d1, s = _rqs_bin(knots, x, 0)
    z = weight * (x - x0) / (x1 - x0)
    y = y0 + (y1 - y0) * (s * z**2 + d0 * z * (1 - z)) / (s + (d0 + d1 - 2 * s) * z * (1 - z))
    return th.where(inside, y, x), weight * _rqs_log_derivative(z, d0, d1, s)


def _rqs_log_derivative(z: th.Tensor, d0: th.Tensor, d1: th.Tensor, s: th.Tensor) -> th.Tensor:
    jacobian = (
        s**2
        * (2 * s * z * (1 - z) + d0 * (1 - z) ** 2 + d1 * z**2)
        / (s + (d0 + d1 - 2 * s) * z * (1 - z)) ** 2
    )
    return jacobian.log()


def _rqs_inverse(y: th.Tensor, knots: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
    """The inverse ``x = f^{-1}(y)`` (zuko's root of the quadratic; Durkan et al. 2019, App. A.3) and
    ``log f'(x)`` at that ``x`` (the position ``z`` within the bin taken from the inversion)."""
    inside, weight, x0, x1, y0, y1, d0, d1, s = _rqs_bin(knots, y, 1)
    y_ = weight * (y - y0)
    a = (y1 - y0) * (s - d0) + y_ * (d0 + d1 - 2 * s)
    b = (y1 - y0) * d0 - y_ * (d0 + d1 - 2 * s)
    c = -s * y_
    z = 2 * c / (-b - (b**2 - 4 * a * c).sqrt())
    return th.where(inside, x0 + z * (x1 - x0), y), weight * _rqs_log_derivative(z, d0, d1, s)
