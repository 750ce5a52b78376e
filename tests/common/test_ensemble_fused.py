"""The ensemble trainer's fused gradient step (issue 15) against the reference path."""

from __future__ import annotations

import pytest
import torch

from sb3_mb.common.ensemble import EnsembleMLP, EnsembleTrainer

WEIGHT_DECAY = [2.5e-5, 5e-5, 1e-4]


def _data(n: int = 300) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=g)
    return x, torch.sin(x[:, :2]) + 0.1 * torch.randn(n, 2, generator=g)


def _train(fused: bool, epochs: int = 3) -> tuple[EnsembleMLP, object]:
    torch.manual_seed(0)
    model = EnsembleMLP(3, 2, ensemble_size=3, net_arch=(32, 32), n_elites=2)
    trainer = EnsembleTrainer(model, batch_size=64, weight_decay=WEIGHT_DECAY, max_epochs=epochs, fused=fused)
    x, y = _data()
    result = trainer.train(x, y, generator=torch.Generator().manual_seed(1))
    return model, trainer, result


def test_fused_step_matches_reference():
    """Same parameters (to float32 rounding), holdout scores and elites after 3 epochs; the fused path uses
    Adam's fused kernel and the reference path torch's default."""
    reference, ref_trainer, ref_result = _train(fused=False)
    fused, fused_trainer, fused_result = _train(fused=True)
    assert all(group["fused"] for group in fused_trainer.optimizer.param_groups)
    assert not any(group.get("fused") for group in ref_trainer.optimizer.param_groups)
    for (name, p), q in zip(reference.named_parameters(), fused.parameters(), strict=True):
        torch.testing.assert_close(q, p, rtol=1e-5, atol=1e-6, msg=name)
    assert (ref_result.elites == fused_result.elites).all()
    best, ref_best = torch.as_tensor(fused_result.best_holdout), torch.as_tensor(ref_result.best_holdout)
    torch.testing.assert_close(best, ref_best, rtol=1e-5, atol=0)


def test_fused_step_is_deterministic():
    a, *_ = _train(fused=True, epochs=2)
    b, *_ = _train(fused=True, epochs=2)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


@pytest.mark.parametrize("with_grad", [True, False])
def test_weight_decay_gradient_is_the_penalty_gradient(with_grad):
    """``add_weight_decay_gradient`` adds exactly autograd's gradient of ``weight_decay_loss`` (to an existing
    gradient or as a new one); the biases get none."""
    torch.manual_seed(0)
    model = EnsembleMLP(3, 2, ensemble_size=2, net_arch=(8, 8))
    trainer = EnsembleTrainer(model, weight_decay=[1e-2, 0.0, 3e-2])
    base = {name: torch.randn_like(p) for name, p in model.named_parameters()}
    model.zero_grad()
    trainer.weight_decay_loss().backward()
    expected = {name: p.grad.clone() if p.grad is not None else None for name, p in model.named_parameters()}
    for name, p in model.named_parameters():
        p.grad = base[name].clone() if with_grad else None
    trainer.add_weight_decay_gradient()
    for name, p in model.named_parameters():
        want = expected[name]
        if with_grad:
            want = base[name] + (want if want is not None else 0)
        if want is None:
            assert p.grad is None, name
        else:
            torch.testing.assert_close(p.grad, want, rtol=1e-6, atol=0, msg=name)
