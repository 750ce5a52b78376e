"""STEVE's fused path (issue 15): the same math as the reference code in fewer, cheaper operations.

Used by :class:`~sb3_mb.steve.steve.STEVE` when ``fused_update=True`` (the default):

- :func:`ensemble_mean`: a gradient-free forward pass of a deterministic
  :class:`~sb3_mb.common.ensemble.EnsembleMLP`, one ``baddbmm`` per layer (bias folded into the product)
  written into a buffer kept between calls, the activation applied in place. The module's forward allocates
  every layer's output anew, and on CPU a fresh multi-megabyte tensor pays its page faults at first touch,
  then runs an out-of-place ReLU (a broadcast input, every member on every row, goes through ``matmul``'s
  broadcast then an add). Measured on one CPU thread (minimum CPU ms, interleaved): the paper's transition
  ensemble ``4 x (7 x 512)`` on 512 rows 63.0 -> 58.5, the Q ensemble ``4 x (3 x 128)`` on 6144 broadcast
  rows 36.3 -> 26.0, the reward ensemble on 2048 rows 10.8 -> 7.5.
- :func:`configure_adam`: the world model's L2 term ``c * sum 0.5 ||theta||^2`` as Adam's (coupled)
  ``weight_decay = c``, which adds ``c * theta`` to the gradient, exactly the gradient of that term, and
  torch's ``fused`` Adam kernel instead of the per-tensor loop.
- :func:`l2_value`: the value of that term without a graph, ``c / 2 * sum ||theta||^2`` from one norm per
  tensor.
"""

from __future__ import annotations

import torch as th
from torch import nn

from sb3_mb.common.ensemble import EnsembleMLP
from sb3_mb.common.sac_update import set_adam_impl

__all__ = ["configure_adam", "ensemble_mean", "l2_value"]


@th.no_grad()
def ensemble_mean(mlp: EnsembleMLP, x: th.Tensor, workspace: dict | None = None) -> th.Tensor:
    """``mlp(x)[0]`` without autograd, for a deterministic head (the mean only), into reused buffers.

    The same function as :meth:`EnsembleMLP.forward` (input normaliser, hidden layers and activation,
    output layer, and a :class:`~sb3_mb.common.dynamics.TargetNormalizedMLP`'s target denormalisation),
    equal to float32 rounding (the bias is added inside the product, as the module's ``baddbmm``).

    :param mlp: the ensemble (``E`` members). A Gaussian head falls back to ``mlp(x)[0]``.
    :param x: raw input ``(rows, in_dim)`` (every member on every row) or ``(E, rows, in_dim)`` (member ``e``
        on slice ``e``).
    :param workspace: a dict in which the hidden layers' outputs are kept between calls (two buffers per
        shape, used in turn), so that a call allocates only its output: a fresh multi-megabyte tensor
        costs its page faults at every first touch (about as much as the bias copy that ``addmm`` makes into
        it). ``None``: fresh tensors.
    :return: ``(E, rows, out_dim)``, a new tensor (never a workspace buffer).
    """
    if not mlp.deterministic:
        return mlp(x)[0]
    h = mlp.input_normalizer.normalize(x)
    in_place_relu = type(mlp.activation) is nn.ReLU
    layers = mlp.linear_layers
    for i, layer in enumerate(layers):
        weight, bias = layer.weight, layer.bias
        shape = (layer.ensemble_size, h.shape[-2], layer.out_features)
        last = i == len(layers) - 1
        if workspace is None or last:
            out = h.new_empty(shape)
        else:
            key = (shape, h.dtype, h.device, i % 2)
            out = workspace.get(key)
            if out is None:
                out = workspace[key] = h.new_empty(shape)
        th.baddbmm(bias, h.expand(layer.ensemble_size, -1, -1), weight, out=out)
        if last:
            h = out
        else:
            h = out.relu_() if in_place_relu else mlp.activation(out)
    target_normalizer = getattr(mlp, "target_normalizer", None)
    return h if target_normalizer is None else target_normalizer.denormalize(h)


def configure_adam(optimizer: th.optim.Optimizer, fused: bool, weight_decay: float) -> None:
    """Switch an Adam optimizer in place between torch's fused kernel (``fused=True``, CPU and CUDA) and
    torch's default kernels (:func:`~sb3_mb.common.sac_update.set_adam_impl`), with the given (coupled)
    ``weight_decay``; the update rule is torch's Adam in both. Optimizers other than ``Adam`` are left alone.
    """
    if type(optimizer) is not th.optim.Adam:
        return
    set_adam_impl(optimizer, "fused" if fused else "default")
    for group in optimizer.param_groups:
        group["weight_decay"] = weight_decay


@th.no_grad()
def l2_value(parameters: list[th.Tensor], coef: float) -> th.Tensor:
    """``coef * sum 0.5 ||theta||^2`` over ``parameters`` (a scalar tensor, no graph)."""
    if not parameters:
        return th.zeros(())
    norms = th.stack(th._foreach_norm(parameters))
    return coef * 0.5 * norms.pow(2).sum()
