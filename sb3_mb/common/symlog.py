"""The symlog value representation (Hafner et al. 2023, DreamerV3, arXiv:2301.04104, Sec. 3) and the reward
scale that makes it free of the reward's units.

A network that regresses ``symlog(x / scale)`` instead of ``x`` has about the same relative precision at every
magnitude above ``scale`` and the absolute precision of a plain regression below it. ``scale`` is measured
once from the rewards (:func:`reward_scale`), so multiplying every reward by a constant multiplies ``scale``
by it and leaves every regression target unchanged.
"""

from __future__ import annotations

import numpy as np
import torch as th

__all__ = ["SCALE_QUANTILE", "fixed_scale", "reward_scale", "symexp", "symlog"]

#: :func:`reward_scale`: this quantile of the non-zero ``|reward|``.
SCALE_QUANTILE = 0.1

#: :func:`symexp` caps ``|x|`` here: ``exp(80)`` is finite in float32 (whose largest ``exp`` is ``exp(88)``).
SYMEXP_CAP = 80.0


def symlog(x: th.Tensor) -> th.Tensor:
    """``sign(x) log(1 + |x|)``: the identity near 0, logarithmic for ``|x| >> 1``."""
    return th.sign(x) * th.log1p(x.abs())


def symexp(x: th.Tensor) -> th.Tensor:
    """The inverse of :func:`symlog`, ``sign(x) (exp(|x|) - 1)``, with ``|x|`` capped at ``SYMEXP_CAP``: a
    diverging network gives a huge but finite value, never ``inf``."""
    return th.sign(x) * th.expm1(x.abs().clamp(max=SYMEXP_CAP))


def reward_scale(rewards: np.ndarray, quantile: float = SCALE_QUANTILE) -> float | None:
    """The ``scale`` of ``symlog(x / scale)``: the ``quantile`` of the non-zero finite ``|reward|``.

    A low quantile, not the mean, the median or the std: below the scale the symlog keeps only absolute
    precision, and the best behaviour often earns the smallest rewards (costs near 0). On the linear double
    integrator (:mod:`sb3_mb.envs.linear`) the random warm-up's mean ``|r|`` is 500c-1100c and its median
    50c-160c between seeds, its 10 % quantile 0.6c-4c.

    :param rewards: any shape.
    :return: the scale, or None while every reward is 0 (zero rewards have the target 0 whatever the scale).
    """
    magnitudes = np.abs(np.asarray(rewards, dtype=np.float64).reshape(-1))
    magnitudes = magnitudes[np.isfinite(magnitudes) & (magnitudes > 0)]
    if magnitudes.size == 0:
        return None
    return float(np.quantile(magnitudes, quantile))


def fixed_scale(option: float | str | None, name: str) -> float | None:
    """Check a scale option (STEVE's ``symlog_scale``, MBPO's ``reward_scale``): ``None`` (off), ``"auto"``
    (measured later with :func:`reward_scale`) or a positive number.

    :return: the number as a float, or None for ``None`` / ``"auto"``.
    :raises ValueError: for anything else (booleans included), naming ``name``.
    """
    is_number = isinstance(option, (int, float)) and not isinstance(option, bool)
    if not (option is None or option == "auto" or (is_number and option > 0)):
        raise ValueError(f"{name} must be None, 'auto' or a positive number, got {option!r}")
    return float(option) if is_number else None
