"""Loud failures for non-finite values: one exception type, :class:`FloatingPointError`, everywhere.

A NaN or an infinity that reaches a loss, a replay buffer or ``predict`` is reported where it appears,
naming the algorithm, what was not finite and the step, instead of spreading silently into the weights
(where it surfaces much later as ``Normal(nan)`` or a ``nan`` action). Every algorithm raises the same
type, so ``except FloatingPointError`` catches all of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch as th

__all__ = ["check_finite", "check_finite_gradients", "check_finite_parameters", "describe_non_finite"]


def _as_array(value: Any) -> np.ndarray:
    if th.is_tensor(value):
        return value.detach().float().cpu().numpy()
    return np.asarray(value, dtype=np.float64)


def _is_finite(value: Any) -> bool:
    if th.is_tensor(value):
        return bool(th.isfinite(value.detach()).all())
    array = np.asarray(value)
    if array.dtype == object:
        array = array.astype(np.float64)
    return bool(np.all(np.isfinite(array))) if np.issubdtype(array.dtype, np.number) else True


def describe_non_finite(value: Any) -> str:
    """A short account of a value's non-finite entries: the values themselves when few, else counts."""
    array = _as_array(value)
    if array.size == 1:
        return f"{array.item():.4g}"
    if array.size <= 8:
        return np.array2string(array.reshape(-1), precision=4, separator=", ")
    n_nan, n_inf = int(np.isnan(array).sum()), int(np.isinf(array).sum())
    return f"{n_nan} NaN and {n_inf} inf of {array.size} values"


def check_finite(value: Any, algorithm: str, what: str, step: int | str, unit: str = "update") -> None:
    """Raise :class:`FloatingPointError` unless every entry of ``value`` is finite.

    :param value: a tensor, an array, a number, or a mapping ``{name: value}`` (the terms of a loss: the
        message then lists every term, finite or not, so the culprit shows).
    :param algorithm: who checks (``"STEVE"``, ``"MBPO dynamics ensemble"``), first in the message.
    :param what: what the value is (``"critic loss"``), named in the message.
    :param step: where it happened, e.g. the update count.
    :param unit: the unit of ``step`` (``"update"``, ``"epoch"``, ``"env step"``).
    :raises FloatingPointError: ``"<algorithm>: <what> is not finite at <unit> <step>: <values>"``.
    """
    if isinstance(value, Mapping):
        if all(_is_finite(v) for v in value.values()):
            return
        terms = ", ".join(f"{key}={describe_non_finite(v)}" for key, v in value.items())
        detail = terms
    else:
        if _is_finite(value):
            return
        detail = describe_non_finite(value)
    raise FloatingPointError(
        f"{algorithm}: {what} is not finite at {unit} {step}: {detail}. Lower the learning rate, or look "
        "for NaN/inf in the data"
    )


def check_finite_parameters(
    modules: Mapping[str, th.nn.Module | th.Tensor | None],
    algorithm: str,
    step: int | str,
    unit: str = "update",
) -> None:
    """Raise :class:`FloatingPointError` naming the network (and its first bad tensor) whose parameters hold a
    NaN or an infinity.

    :param modules: ``{name: module or tensor}``; ``None`` entries are skipped.
    :raises FloatingPointError: ``"<algorithm>: the <name> parameters are not finite at <unit> <step> ..."``.
    """
    for name, module in modules.items():
        if module is None:
            continue
        named = module.named_parameters() if isinstance(module, th.nn.Module) else [("", module)]
        tensors = [(key, p.detach()) for key, p in named]
        if not tensors or bool(th.stack([th.isfinite(p).all() for _, p in tensors]).all()):
            continue
        key, bad = next((key, p) for key, p in tensors if not bool(th.isfinite(p).all()))
        raise FloatingPointError(
            f"{algorithm}: the {name} parameters are not finite at {unit} {step} "
            f"({name}{'.' + key if key else ''}: {describe_non_finite(bad)}). Lower the learning rate, or "
            "look for NaN/inf in the data"
        )


def check_finite_gradients(
    optimizer: th.optim.Optimizer, algorithm: str, what: str, step: int | str, unit: str = "update"
) -> None:
    """Raise :class:`FloatingPointError` if a gradient ``optimizer`` is about to apply holds NaN or inf.

    Meant for ``optimizer.register_step_pre_hook`` where the loop that computes the loss is not ours (SB3's
    ``SAC.train``): a non-finite loss gives non-finite gradients, caught before they reach the weights.

    :param what: the loss whose gradients these are (``"SAC critic loss"``).
    :raises FloatingPointError: ``"<algorithm>: the gradient of the <what> is not finite at <unit> <step>"``.
    """
    grads = [p.grad for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if not grads or bool(th.stack([th.isfinite(g).all() for g in grads]).all()):
        return
    bad = next(g for g in grads if not bool(th.isfinite(g).all()))
    raise FloatingPointError(
        f"{algorithm}: the gradient of the {what} is not finite at {unit} {step} "
        f"({describe_non_finite(bad)}); the update was not made. Lower the learning rate, or look for NaN/"
        "inf in the data"
    )
