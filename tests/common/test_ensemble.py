"""Vectorised ensemble MLP and its trainer (sb3_mb.common.ensemble)."""

import math

import numpy as np
import pytest
import torch
from torch.nn import functional as F

from sb3_mb.common.dynamics import DynamicsModel
from sb3_mb.common.ensemble import EnsembleMLP, EnsembleTrainer, mse_loss, nll_loss, random_member_split


def _loop_forward(model: EnsembleMLP, x: torch.Tensor, member: int):
    """Reference: member ``member`` as a plain MLP, no batching."""
    h = model.input_normalizer.normalize(x)
    for layer in model.hidden_layers:
        h = F.silu(h @ layer.weight[member] + layer.bias[member, 0])
    out = h @ model.output_layer.weight[member] + model.output_layer.bias[member, 0]
    if model.deterministic:
        return out, None
    mean, logvar = out[:, : model.out_dim], out[:, model.out_dim :]
    logvar = model.max_logvar - F.softplus(model.max_logvar - logvar)
    logvar = model.min_logvar + F.softplus(logvar - model.min_logvar)
    return mean, logvar


@pytest.mark.parametrize("deterministic", [False, True])
def test_batched_forward_equals_per_member_loop(deterministic):
    torch.manual_seed(0)
    model = EnsembleMLP(4, 3, ensemble_size=5, net_arch=[16, 12, 16], deterministic=deterministic)
    model.input_normalizer.fit(torch.randn(100, 4) * 3 + 1)
    x = torch.randn(7, 4)
    xe = torch.randn(5, 7, 4)
    mean_b, logvar_b = model(x)  # broadcast
    mean_e, logvar_e = model(xe)  # one slice per member
    idx = torch.tensor([3, 1])
    mean_k, _ = model(xe[:2], member_idx=idx)
    assert mean_b.shape == (5, 7, 3) and mean_e.shape == (5, 7, 3)
    for m in range(5):
        ref_b, ref_lv = _loop_forward(model, x, m)
        ref_e, _ = _loop_forward(model, xe[m], m)
        torch.testing.assert_close(mean_b[m], ref_b, atol=1e-6, rtol=0)
        torch.testing.assert_close(mean_e[m], ref_e, atol=1e-6, rtol=0)
        if not deterministic:
            torch.testing.assert_close(logvar_b[m], ref_lv, atol=1e-6, rtol=0)
    for k, m in enumerate(idx.tolist()):
        torch.testing.assert_close(mean_k[k], _loop_forward(model, xe[k], m)[0], atol=1e-6, rtol=0)
    if deterministic:
        assert logvar_b is None
    else:
        assert (logvar_b <= model.max_logvar + 1e-6).all() and (logvar_b >= model.min_logvar - 1e-6).all()


def _sin_data(n, noise_std, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=g) * 2 * math.pi - math.pi
    y = torch.sin(x) + noise_std * torch.randn(n, 1, generator=g)
    return x, y


def test_fits_sin_and_recovers_noise_variance():
    """Gaussian head on y = sin(x) + N(0, 0.1^2): held-out MSE of the mean to sin(x) < 0.001, and the
    predicted variance within 25% of 0.01."""
    torch.manual_seed(0)
    noise_std = 0.1
    x, y = _sin_data(2000, noise_std, seed=1)
    model = EnsembleMLP(1, 1, ensemble_size=4, net_arch=[32, 32], n_elites=3)
    trainer = EnsembleTrainer(model, learning_rate=3e-3, batch_size=64, max_epochs=60, patience=10)
    result = trainer.train(x, y, generator=torch.Generator().manual_seed(0))
    x_test = torch.linspace(-3.0, 3.0, 200).unsqueeze(1)
    with torch.no_grad():
        mean, logvar = model(x_test)
    elite_mean = mean[model.elite_idx].mean(0)
    mse = F.mse_loss(elite_mean, torch.sin(x_test)).item()
    var = logvar[model.elite_idx].exp().mean().item()
    assert mse < 0.001, mse
    assert abs(var - noise_std**2) / noise_std**2 < 0.25, var
    assert len(result.train_losses) == result.n_epochs == len(result.holdout_losses)
    assert result.holdout_losses[-1].shape == (4,)


def test_deterministic_head_fits_sin_with_mse():
    torch.manual_seed(0)
    x, y = _sin_data(1500, 0.0, seed=2)
    model = EnsembleMLP(1, 1, ensemble_size=3, net_arch=[32, 32], deterministic=True)
    result = EnsembleTrainer(model, learning_rate=3e-3, batch_size=64, max_epochs=40, loss="mse").train(
        x, y, generator=torch.Generator().manual_seed(0)
    )
    assert result.best_holdout.max() < 0.003, result.best_holdout


def test_bootstrap_members_differ():
    """Each member trains on its own bootstrap resample: identical initial weights end up different."""
    torch.manual_seed(0)
    x, y = _sin_data(300, 0.1, seed=3)
    model = EnsembleMLP(1, 1, ensemble_size=3, net_arch=[8])
    with torch.no_grad():  # same start for every member: only the data can make them differ
        for layer in model.linear_layers:
            layer.weight.copy_(layer.weight[:1].expand_as(layer.weight))
    EnsembleTrainer(model, max_epochs=2).train(x, y, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        mean, _ = model(torch.linspace(-3, 3, 50).unsqueeze(1))
    assert (mean[0] - mean[1]).abs().max() > 1e-3 and (mean[1] - mean[2]).abs().max() > 1e-3


@pytest.mark.parametrize("n_rows, n_members", [(103, 4), (100, 4), (5, 4), (7, 1)])
def test_random_member_split_is_a_balanced_random_partition(n_rows, n_members):
    dropped = random_member_split(n_rows, n_members, torch.Generator().manual_seed(0))
    per = n_rows // n_members
    assert dropped.shape == (n_members, per)
    assert len(set(dropped.flatten().tolist())) == per * n_members  # each row at most one member
    full = random_member_split(n_rows, n_members, torch.Generator().manual_seed(0), drop_remainder=False)
    slots = -(-n_rows // n_members)
    assert full.shape == (n_members, slots)
    used = full[full >= 0].tolist()
    assert sorted(used) == list(range(n_rows))  # every row exactly once
    assert torch.equal(full[full < 0], torch.full(((full < 0).sum(),), -1))
    # the same random stream in both modes: the kept rows are the first parts of the permutation
    assert torch.equal(full.flatten()[: per * n_members], dropped.flatten())
    again = random_member_split(n_rows, n_members, torch.Generator().manual_seed(0))
    assert torch.equal(again, dropped)
    other = random_member_split(n_rows, n_members, torch.Generator().manual_seed(1))
    assert n_rows < 8 or not torch.equal(other, dropped)


def test_random_member_split_needs_a_row_per_member():
    with pytest.raises(ValueError, match="ensemble members"):
        random_member_split(3, 4)


def _scripted_holdout(model, scores):
    """A loss that trains with MSE and, on the holdout (model in eval mode), gives the next scripted score."""
    seen = []

    def loss(mean, logvar, target, idx):
        if model.training:
            return mse_loss(mean, logvar, target)
        seen.append(model.output_layer.weight.detach().clone())
        return torch.tensor(scores[min(len(seen), len(scores)) - 1])

    return loss, seen


def test_elites_are_the_best_holdout_members():
    torch.manual_seed(0)
    x, y = _sin_data(200, 0.1, seed=4)
    model = EnsembleMLP(1, 1, ensemble_size=4, net_arch=[8], n_elites=2, deterministic=True)
    loss, _ = _scripted_holdout(model, [[3.0, 1.0, 4.0, 2.0]])
    result = EnsembleTrainer(model, max_epochs=2, loss=loss).train(x, y)
    assert sorted(result.elites.tolist()) == [1, 3]
    assert sorted(model.elite_idx.tolist()) == [1, 3]
    # with the built-in metric (holdout MSE), elites are the argmin of the holdout scores
    model = EnsembleMLP(1, 1, ensemble_size=4, net_arch=[8], n_elites=2)
    result = EnsembleTrainer(model, max_epochs=3).train(x, y)
    np.testing.assert_array_equal(result.elites, np.argsort(result.best_holdout)[:2])


def test_early_stopping_stops_and_keeps_best_snapshot_per_member():
    torch.manual_seed(0)
    x, y = _sin_data(200, 0.1, seed=5)
    model = EnsembleMLP(1, 1, ensemble_size=2, net_arch=[8], deterministic=True)
    schedule = [[1.0, 1.0], [0.5, 1.0], [0.6, 0.5], [0.7, 0.7], [0.7, 0.7], [9.0, 9.0]]
    loss, seen = _scripted_holdout(model, schedule)
    result = EnsembleTrainer(model, learning_rate=1e-2, patience=2, loss=loss).train(x, y)
    assert result.n_epochs == 5 and result.stopped_early
    final = model.output_layer.weight.detach()
    torch.testing.assert_close(final[0], seen[1][0], rtol=0, atol=0)  # member 0 best after epoch 2
    torch.testing.assert_close(final[1], seen[2][1], rtol=0, atol=0)  # member 1 best after epoch 3


def test_no_improvement_stops_after_patience():
    x, y = _sin_data(200, 0.1, seed=6)
    model = EnsembleMLP(1, 1, ensemble_size=2, net_arch=[8])
    result = EnsembleTrainer(model, learning_rate=0.0, patience=3).train(x, y)
    assert result.n_epochs == 4 and result.stopped_early


def test_custom_loss_gets_dataset_indices_and_nan_raises():
    x, y = _sin_data(100, 0.1, seed=7)
    indices = torch.arange(1000, 1100)
    model = EnsembleMLP(1, 1, ensemble_size=3, net_arch=[8], deterministic=True)
    seen = []

    def loss_fn(mean, logvar, target, batch_indices):
        assert batch_indices.shape == mean.shape[:2]
        seen.append(batch_indices)
        # the index identifies the example: target == y[index - 1000]
        torch.testing.assert_close(target[..., 0], y[batch_indices - 1000, 0])
        return mse_loss(mean, logvar, target)

    EnsembleTrainer(model, loss=loss_fn, max_epochs=1, batch_size=32).train(x, y, indices=indices)
    assert all(((i >= 1000) & (i < 1100)).all() for i in seen)

    def nan_loss(mean, logvar, target, batch_indices):
        return mean.sum(dim=(1, 2)) * float("nan")

    with pytest.raises(FloatingPointError, match="dynamics: training loss is not finite at epoch 0"):
        EnsembleTrainer(model, loss=nan_loss, max_epochs=1, owner="dynamics").train(x, y)
    with pytest.raises(ValueError, match="Gaussian head"):
        nll_loss(torch.zeros(1, 2, 1), None, torch.zeros(1, 2, 1))


def test_nll_loss_is_pets_scale():
    """``mean (mu - y)^2 exp(-logvar) + logvar``: twice the NLL without its constant."""
    mean, logvar, target = torch.randn(3, 5, 2), torch.randn(3, 5, 2), torch.randn(3, 5, 2)
    expected = ((mean - target) ** 2 * torch.exp(-logvar) + logvar).mean(dim=(1, 2))
    torch.testing.assert_close(nll_loss(mean, logvar, target), expected)


def test_normalizer_and_elites_saved_in_state_dict():
    model = EnsembleMLP(3, 2, ensemble_size=4, net_arch=[8], n_elites=2)
    model.input_normalizer.fit(torch.randn(50, 3) * 5 + 2)
    model.set_elites([3, 0])
    clone = EnsembleMLP(3, 2, ensemble_size=4, net_arch=[8], n_elites=2)
    clone.load_state_dict(model.state_dict())
    torch.testing.assert_close(clone.input_normalizer.mean, model.input_normalizer.mean)
    torch.testing.assert_close(clone.input_normalizer.std, model.input_normalizer.std)
    assert clone.elite_idx.tolist() == [3, 0]
    with pytest.raises(ValueError, match="n_elites"):
        EnsembleMLP(3, 2, ensemble_size=2, n_elites=3)
    with pytest.raises(ValueError, match="positive"):
        EnsembleMLP(3, 2, net_arch=[8, 0])


def test_trainer_weight_decay_per_layer():
    model = EnsembleMLP(3, 2, ensemble_size=4, net_arch=[8])
    trainer = EnsembleTrainer(model, weight_decay=[1e-4, 2e-4])
    expected = (
        0.5 * 1e-4 * model.hidden_layers[0].weight.pow(2).sum()
        + 0.5 * 2e-4 * model.output_layer.weight.pow(2).sum()
    )
    torch.testing.assert_close(trainer.weight_decay_loss(), expected)
    torch.testing.assert_close(
        EnsembleTrainer(model, weight_decay=1e-3).weight_decay_loss(),
        0.5 * 1e-3 * sum(layer.weight.pow(2).sum() for layer in model.linear_layers),
    )
    with pytest.raises(ValueError, match="weight_decay"):
        EnsembleTrainer(model, weight_decay=[1.0])


# ---------------------------------------------------------------------------------------------- layout
def test_dynamics_model_owns_the_layout():
    torch.manual_seed(0)
    obs, act, next_obs, rew = torch.randn(6, 3), torch.randn(6, 2), torch.randn(6, 3), torch.randn(6)
    model = DynamicsModel(3, 2, ensemble_size=4, net_arch=[8], deterministic=True)
    assert (model.in_dim, model.out_dim) == (5, 4)
    torch.testing.assert_close(model.inputs(obs, act), torch.cat([obs, act], -1))
    targets = model.targets(obs, next_obs, rew)
    delta, reward = model.split(targets)
    torch.testing.assert_close(delta, next_obs - obs)
    torch.testing.assert_close(reward, rew)
    back, back_reward = model.transition(obs, targets)  # the targets turned back into the transition
    torch.testing.assert_close(back, next_obs)
    torch.testing.assert_close(back_reward, rew)
    with torch.no_grad():
        predicted, predicted_reward = model.predict(obs, act)
        out, _ = model(model.inputs(obs, act))
    assert predicted.shape == (4, 6, 3) and predicted_reward.shape == (4, 6)
    torch.testing.assert_close(predicted, obs + out[..., :3])
    torch.testing.assert_close(predicted_reward, out[..., 3])
    with pytest.raises(ValueError, match="rewards"):
        model.targets(obs, next_obs)

    no_reward = DynamicsModel(3, 2, learned_reward=False, ensemble_size=2, net_arch=[8])
    assert no_reward.out_dim == 3
    torch.testing.assert_close(no_reward.targets(obs, next_obs), next_obs - obs)
    assert no_reward.split(no_reward.targets(obs, next_obs))[1] is None
