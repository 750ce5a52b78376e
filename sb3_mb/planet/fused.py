"""PlaNet's planning objective as one fused loop: the RSSM's prior rollout and the reward head, step by step,
in preallocated buffers (issue 15, "speed").

The math is :meth:`~sb3_mb.planet.policies.PlaNetPolicy.planning_objective`'s reference path, which rolls
out :meth:`~sb3_mb.planet.rssm.TransitionModel.imagine` (Hafner et al. 2019, arXiv:1811.04551, Sec. 3,
Eq. 4: ``h_t = GRU(relu(W [s_{t-1}, a_{t-1}]), h_{t-1})``, ``p(s_t | h_t)``) for all ``H`` steps, stacks the
states and runs the reward head once on every ``(candidate, step)``. Here each step's reward is computed
right after its state, so a step's activations (1000 candidates x a few hundred units) stay in the CPU's
cache instead of ``H`` times as many going through memory; and

- the inputs live in preallocated buffers laid out as the layers read them, each with a column of ones so
  that a layer's bias is a row of its weight and the layer is one ``mm`` into a preallocated output, with no
  pass over the output to add the bias (``addmm`` copies the bias into its output first; together that cost
  about 12 % of the objective here): ``[s | a | 1]`` for the state-action layer, ``[h | 1 | x | 1]`` for the
  GRU (whose ``r, z`` gates of the input and of the hidden state are then one matmul) and ``[s | h | 1]``
  for the reward head, so no ``cat`` or ``stack`` runs;
- the GRU cell is written out as PyTorch's CPU cell computes it (``r, z = sigmoid(...)``,
  ``n = tanh(W_in x + b_in + r (W_hn h + b_hn))``, ``h' = (h - n) z + n``), updating ``h`` in place, and
  every activation runs in place.

The random numbers are the reference's: one ``randn((rows, state_size), generator)`` per step, in the same
order, so the fused and the reference objective differ by float rounding only (summation order), which
``tests/planet/test_planet_speed.py`` bounds on one batch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import torch as th
from torch import nn
from torch.nn import functional as F

from sb3_mb.planet.rssm import RSSM, RSSMState


def _activate_(activation: nn.Module, x: th.Tensor) -> th.Tensor:
    """``activation(x)`` written into ``x`` (in place for ReLU, by a copy for other activations)."""
    if isinstance(activation, nn.ReLU):
        return x.relu_()
    return x.copy_(activation(x))


def supports_fused_objective(rssm: nn.Module, reward_model: nn.Module) -> bool:
    """Whether :func:`fused_prior_returns` computes this model's objective: the paper's :class:`RSSM` itself
    (not the SSM, the moving-average or the clockwork variants, nor a subclass) and a reward head made of
    ``nn.Linear`` layers and activations (``create_mlp``), ending in one output."""
    if type(rssm) is not RSSM or not isinstance(reward_model, nn.Sequential) or len(reward_model) == 0:
        return False
    linears = [layer for layer in reward_model if isinstance(layer, nn.Linear)]
    return isinstance(reward_model[-1], nn.Linear) and reward_model[-1].out_features == 1 and len(linears) > 0


class FusedWeights(NamedTuple):
    """The weights as the fused loop reads them: each layer's ``(in, out)`` matrix with its bias as a last row
    (for inputs ``[x | 1]``); ``rz`` the GRU's ``r, z`` gates for ``[h | 1 | x | 1]``; ``head`` the reward
    head's layers in order, matrices for its ``nn.Linear`` layers and the activation modules between."""

    state_action: th.Tensor
    rz: th.Tensor
    hidden_n: th.Tensor
    input_n: th.Tensor
    prior_hidden: th.Tensor
    prior: th.Tensor
    head: tuple[th.Tensor | nn.Module, ...]


def _with_bias(weight: th.Tensor, bias: th.Tensor | None) -> th.Tensor:
    """An ``(out, in)`` weight and its bias ``(out,)`` as one ``(in + 1, out)`` matrix."""
    bias = th.zeros(weight.shape[0], device=weight.device, dtype=weight.dtype) if bias is None else bias
    return th.cat([weight.t(), bias[None]], dim=0)


@th.no_grad()
def fused_weights(rssm: RSSM, reward_model: nn.Sequential) -> FusedWeights:
    """The current weights of ``rssm`` and ``reward_model`` laid out for :func:`fused_prior_returns` (copies:
    prepare them again after the weights change, see :func:`parameter_versions`)."""
    gru, belief_size = rssm.rnn, rssm.belief_size
    rz, n = slice(0, 2 * belief_size), slice(2 * belief_size, 3 * belief_size)
    w_hh, w_ih = _with_bias(gru.weight_hh, gru.bias_hh), _with_bias(gru.weight_ih, gru.bias_ih)
    return FusedWeights(
        state_action=_with_bias(rssm.fc_state_action.weight, rssm.fc_state_action.bias),
        rz=th.cat([w_hh[:, rz], w_ih[:, rz]], dim=0),  # [h | 1 | x | 1] -> r | z gates, both biases
        hidden_n=w_hh[:, n].contiguous(),
        input_n=w_ih[:, n].contiguous(),
        prior_hidden=_with_bias(rssm.fc_prior_hidden.weight, rssm.fc_prior_hidden.bias),
        prior=_with_bias(rssm.fc_prior.weight, rssm.fc_prior.bias),
        head=tuple(
            _with_bias(layer.weight, layer.bias) if isinstance(layer, nn.Linear) else layer
            for layer in reward_model
        ),
    )


def parameter_versions(*modules: nn.Module) -> tuple[int, ...]:
    """The version counters of every parameter of ``modules``: they change with every in-place update (an
    optimizer step, ``load_state_dict``), so prepared :class:`FusedWeights` are stale when these differ."""
    return tuple(parameter._version for module in modules for parameter in module.parameters())


@th.no_grad()
def fused_prior_returns(
    rssm: RSSM,
    reward_model: nn.Sequential,
    reward_from_prediction: Callable[[th.Tensor], th.Tensor],
    start: RSSMState,
    actions: th.Tensor,
    weights: th.Tensor,
    generator: th.Generator | None,
    sample: bool,
    prepared: FusedWeights | None = None,
) -> th.Tensor:
    """The discounted predicted rewards of prior rollouts, ``sum_t weights[t] r(s_t, h_t)`` over ``t = 1..H``.

    The same math and random numbers as ``rssm.imagine(start, actions, generator, sample)`` followed by
    ``reward_from_prediction(reward_model(features))`` weighted and summed over the horizon (see the module
    docstring); no gradient.

    :param rssm: the paper's :class:`RSSM` (see :func:`supports_fused_objective`).
    :param reward_model: the reward head, ``(..., state_size + belief_size) -> (..., 1)``.
    :param reward_from_prediction: the head's output ``(rows,)`` to a reward in the env's units
        (:meth:`~sb3_mb.planet.policies.PlaNetPolicy.reward` without the head).
    :param start: the state each row starts from, fields ``(rows, ...)``.
    :param actions: ``(rows, horizon, action_dim)``.
    :param weights: ``(horizon,)`` per-step weights (the discount's powers).
    :param generator: ``torch.Generator`` for the prior samples (None: global RNG).
    :param sample: sample the prior (the paper's planner) or follow its mean.
    :param prepared: :func:`fused_weights` of the current weights (None: prepared here).
    :return: ``(rows,)`` returns.
    """
    rows, horizon, action_dim = actions.shape
    state_size, belief_size = rssm.state_size, rssm.belief_size
    hidden_size = rssm.fc_state_action.out_features
    weight = rssm.fc_state_action.weight
    device, dtype = weight.device, weight.dtype
    draw = sample and not rssm.mean_only

    w = fused_weights(rssm, reward_model) if prepared is None else prepared

    def buffer(width: int, ones: bool = False) -> th.Tensor:
        """``(rows, width)``, with a last column of ones (a bias input) when ``ones``."""
        if ones:
            return th.ones(rows, width + 1, device=device, dtype=dtype)
        return th.empty(rows, width, device=device, dtype=dtype)

    # Inputs with a column of ones, so that every layer is one mm and no pass adds a bias:
    # [s | a | 1] (the state-action layer's), [h | 1 | x | 1] (the GRU's), [s | h | 1] (the reward head's).
    state_action = buffer(state_size + action_dim, ones=True)
    gru_input = buffer(belief_size + 1 + hidden_size, ones=True)
    features = buffer(state_size + belief_size, ones=True)
    belief, belief_1 = gru_input[:, :belief_size], gru_input[:, : belief_size + 1]
    embedded, embedded_1 = gru_input[:, belief_size + 1 : -1], gru_input[:, belief_size + 1 :]
    state_action[:, :state_size].copy_(start.sample)
    features[:, :state_size].copy_(start.sample)
    belief.copy_(start.belief)
    head = w.head
    head_outputs = [
        buffer(layer.shape[1], ones=index < len(head) - 1) if isinstance(layer, th.Tensor) else None
        for index, layer in enumerate(head)
    ]

    gates = buffer(2 * belief_size)
    new_gate, hidden_gate = buffer(belief_size), buffer(belief_size)
    prior_hidden = buffer(rssm.fc_prior_hidden.out_features, ones=True)
    prior_stats = buffer(2 * state_size)
    total = th.zeros(rows, device=device, dtype=dtype)

    for t in range(horizon):
        state_action[:, state_size:-1].copy_(actions[:, t])
        _activate_(rssm.act, th.mm(state_action, w.state_action, out=embedded))
        # GRU (PyTorch's cell): r, z from input and hidden gates; n = tanh(i_n + r * h_n); h' = (h - n) z + n.
        th.mm(gru_input, w.rz, out=gates).sigmoid_()
        th.mm(belief_1, w.hidden_n, out=hidden_gate).mul_(gates[:, :belief_size])
        th.mm(embedded_1, w.input_n, out=new_gate).add_(hidden_gate).tanh_()
        belief.sub_(new_gate).mul_(gates[:, belief_size:]).add_(new_gate)
        # The prior p(s_t | h_t) (or of the pre-GRU embedding, arXiv v1) and its sample.
        source = belief_1 if rssm.future_rnn else embedded_1
        _activate_(rssm.act, th.mm(source, w.prior_hidden, out=prior_hidden[:, :-1]))
        th.mm(prior_hidden, w.prior, out=prior_stats)
        mean, std = prior_stats[:, :state_size], prior_stats[:, state_size:]
        state = features[:, :state_size]
        if draw:
            std = F.softplus(std.contiguous()) + rssm.min_std  # 10 x faster than on the strided view
            noise = th.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            th.add(mean, std * noise, out=state)
        else:
            state.copy_(mean)
        state_action[:, :state_size].copy_(state)
        features[:, state_size:-1].copy_(belief)
        # The reward head on [s_t, h_t, 1]; a layer's output, with its ones column, is the next one's input.
        x = features
        for layer, out in zip(head, head_outputs, strict=True):
            if isinstance(layer, th.Tensor):
                values = th.mm(x, layer, out=out[:, : layer.shape[1]])
                x = out
            else:
                _activate_(layer, values)
        total.add_(reward_from_prediction(x[:, 0]) * weights[t])
    return total
