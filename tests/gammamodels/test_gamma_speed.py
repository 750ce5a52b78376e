"""The γ-model's fast path (issue 15) against its reference: ``FlowOps`` against zuko's objects, and
``GammaModel.update`` with ``fused=True`` (and ``compile=True``, slow) against ``fused=False`` on one batch,
for both objectives; seeded determinism of the fast path."""

from __future__ import annotations

import pytest
import torch as th

from sb3_mb.gammamodels import GammaModel
from sb3_mb.gammamodels.flows import FlowOps, conditional_spline_flow, initialize_actnorm

SMALL = dict(hidden_sizes=(32, 32), bins=8, n_blocks=2, tau=0.5, learning_rate=1e-3)
#: Parameters after two updates agree to a tenth of one Adam step (lr 1e-3): Adam's first steps are
#: ``lr · g / (|g| + eps)``, sensitive to float rounding in near-zero gradients.
PARAMETER_ATOL = 1e-4


def _batch(n: int = 64, obs_dim: int = 3) -> tuple[th.Tensor, ...]:
    g = th.Generator().manual_seed(0)
    obs = th.randn(n, obs_dim, generator=g)
    actions = 2 * th.rand(n, 1, generator=g) - 1
    next_obs = 0.9 * obs + 0.1 * th.randn(n, obs_dim, generator=g)
    return obs, actions, next_obs, 2 * th.rand(n, 1, generator=g) - 1


def _model(**kwargs) -> GammaModel:
    th.manual_seed(0)  # the MLPs' initialisation: the same weights for every path
    return GammaModel(3, 1, gamma=0.9, **{**SMALL, **kwargs})


def _updates(model: GammaModel, n: int = 2) -> list[float]:
    """``n`` updates from seed 1 (the first also initialises ActNorm)."""
    th.manual_seed(1)
    return [model.update(*_batch()) for _ in range(n)]


@pytest.mark.parametrize("features", [1, 3])
def test_flow_ops_equal_zuko(features):
    """Densities and their gradients equal zuko's; samples from the same seed agree to float32 rounding
    (the 3 × 3 LU map is inverted by one matmul), and the density of a sample from the sampling pass equals
    zuko's density at that sample. ``features = 1`` uses the element-wise splines, 3 the couplings."""
    flow = conditional_spline_flow(features, 4, bins=8, hidden_sizes=(32, 32), n_blocks=2)
    c, x = th.randn(128, 4), 2 * th.randn(128, features)
    initialize_actnorm(flow, x, c)
    with th.no_grad():
        for p in flow.parameters():  # away from the identity at initialisation
            p.add_(0.1 * th.randn_like(p))
    ops = FlowOps(flow)
    reference = flow(c).log_prob(x)
    fast = ops.log_prob(x, c)
    th.testing.assert_close(fast, reference, rtol=1e-6, atol=1e-6)
    for g_fast, g_ref in zip(
        th.autograd.grad(fast.sum(), list(flow.parameters())),
        th.autograd.grad(reference.sum(), list(flow.parameters())),
        strict=True,
    ):
        th.testing.assert_close(g_fast, g_ref, rtol=1e-5, atol=1e-5)
    th.manual_seed(2)
    reference = flow(c).sample((3,))
    th.manual_seed(2)
    samples, log_prob = ops.sample(c, 3, log_prob=True)
    th.testing.assert_close(samples, reference, rtol=1e-4, atol=1e-4)
    th.testing.assert_close(log_prob, flow(c).log_prob(samples).detach(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("objective", ["likelihood", "regression"])
@pytest.mark.parametrize("delta", [False, True])
def test_fused_update_equals_the_reference(objective, delta):
    """Two updates on one batch from the same seed: the same losses, online and target parameters (τ = 0.5, so
    that a missing or wrong Polyak step shows) and Adam moments with ``fused=True`` as with zuko's objects,
    SB3's Adam and ``polyak_update``."""
    models = [_model(objective=objective, delta=delta, fused=fused) for fused in (False, True)]
    losses = [_updates(model) for model in models]
    th.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-5)
    reference, fused = (model.state_dict() for model in models)
    assert reference.keys() == fused.keys()
    for key in reference:
        th.testing.assert_close(fused[key], reference[key], rtol=0, atol=PARAMETER_ATOL, msg=key)
    adam = [model.optimizer.state_dict()["state"] for model in models]
    for key in adam[0]:
        th.testing.assert_close(adam[1][key]["exp_avg"], adam[0][key]["exp_avg"], rtol=1e-3, atol=1e-6)


def test_fused_update_is_seeded_deterministic():
    """The same seed, the same losses and parameters, bit for bit."""
    runs = []
    for _ in range(2):
        model = _model(objective="regression")
        runs.append((_updates(model, 3), model.state_dict()))
    assert runs[0][0] == runs[1][0]
    for key, value in runs[0][1].items():
        assert th.equal(value, runs[1][1][key]), key


def test_compile_needs_the_fused_path():
    with pytest.raises(ValueError, match="fused=True"):
        GammaModel(3, 1, fused=False, compile=True)


@pytest.mark.slow
@pytest.mark.parametrize("objective", ["likelihood", "regression"])
def test_compiled_update_equals_the_reference(objective):
    """``compile=True`` (three compiled flow passes; the likelihood objective's target samples over all rows)
    gives the reference's losses and parameters after two updates on one batch. About 1 min of compilation
    per objective on one thread."""
    models = [_model(objective=objective, fused=False), _model(objective=objective, compile=True)]
    losses = [_updates(model) for model in models]
    th.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-5)
    reference, compiled = (model.state_dict() for model in models)
    for key in reference:
        th.testing.assert_close(compiled[key], reference[key], rtol=0, atol=PARAMETER_ATOL, msg=key)
