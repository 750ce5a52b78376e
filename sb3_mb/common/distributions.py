"""Gaussian log-likelihoods and KL divergences on plain tensors: the one home of these formulas.

Every method that scores a Gaussian uses these: PlaNet's observation and reward likelihoods and its
posterior / prior KL (Hafner et al. 2019, arXiv:1811.04551, Eq. 3), the ensemble's likelihood loss of
MBPO (Janner et al. 2019, arXiv:1906.08253, App. C; Chua et al. 2018, arXiv:1805.12114, Eq. 2), and the
VAE of World Models (Ha & Schmidhuber 2018, arXiv:1803.10122, Sec. A.1), whose KL to the unit Gaussian is
:func:`standard_normal_kl`.

Distributions are diagonal: the functions take means and standard deviations (or a log-variance for the
likelihood) as tensors of the same shape and do no reduction except where stated (the KLs sum over the
last, event, dimension).
"""

from __future__ import annotations

import math

import torch as th

__all__ = ["LOG_2PI", "gaussian_kl", "gaussian_nll", "standard_normal_kl"]

#: ``log(2 pi)``, the constant of a Gaussian log-density per dimension.
LOG_2PI = math.log(2.0 * math.pi)


def gaussian_nll(
    x: th.Tensor, mean: th.Tensor, log_var: th.Tensor | None = None, constant: bool = True
) -> th.Tensor:
    """Element-wise negative log-density of ``x`` under ``N(mean, exp(log_var))``, in nats.

    ``0.5 * ((x - mean)^2 * exp(-log_var) + log_var + log(2 pi))``; ``log_var=None`` is the unit variance
    (PlaNet's decoders, Hafner et al. 2019, Sec. 3), ``constant=False`` drops ``0.5 log(2 pi)``.

    :param x: ``(...)`` observed values. :param mean: ``(...)`` (broadcastable).
    :param log_var: ``(...)`` log-variances, or None for variance 1.
    :return: ``(...)``, the broadcast shape; no reduction.
    """
    error = (x - mean) ** 2
    if log_var is None:
        nll = 0.5 * error
    else:
        nll = 0.5 * (error * th.exp(-log_var) + log_var)
    return nll + 0.5 * LOG_2PI if constant else nll


def gaussian_kl(mean_p: th.Tensor, std_p: th.Tensor, mean_q: th.Tensor, std_q: th.Tensor) -> th.Tensor:
    """``KL(N(mean_p, std_p^2) || N(mean_q, std_q^2))`` of diagonal Gaussians, summed over the last dim.

    :param mean_p: ``(..., d)``; :param std_p: ``(..., d)``, positive; likewise ``mean_q``, ``std_q``.
    :return: ``(...)`` nats.
    """
    var_ratio = (std_p / std_q) ** 2
    mahalanobis = ((mean_p - mean_q) / std_q) ** 2
    return 0.5 * (var_ratio + mahalanobis - 1.0 - th.log(var_ratio)).sum(dim=-1)


def standard_normal_kl(mean: th.Tensor, std: th.Tensor) -> th.Tensor:
    """``KL(N(mean, std^2) || N(0, I))`` summed over the last dim: ``(...)`` nats.

    PlaNet v1's global divergence (arXiv:1811.04551v1, Sec. 3) and the VAE's KL term (Kingma & Welling
    2014, arXiv:1312.6114, App. B). With ``std = exp(0.5 * log_var)`` it is
    ``-0.5 * sum(1 + log_var - mean^2 - exp(log_var))``.
    """
    var = std**2
    return 0.5 * (var + mean**2 - 1.0 - th.log(var)).sum(dim=-1)
