"""The documented rules of the shared parts (sb3_mb.common: the ensemble and its trainer, the model
environment, the episode buffer), each pinned so that breaking it fails. Complements ``test_ensemble.py``,
``test_model_env.py`` and ``test_buffers.py``."""

import numpy as np
import pytest
import torch
from gymnasium import spaces

from sb3_mb.common.buffers import EpisodeReplayBuffer
from sb3_mb.common.dynamics import DynamicsModel
from sb3_mb.common.ensemble import (
    EnsembleLinear,
    EnsembleMLP,
    EnsembleTrainer,
    Normalizer,
    mse_loss,
    random_member_split,
)
from sb3_mb.common.model_env import ModelEnv
from sb3_mb.common.utils import frozen, own_parameters


def _data(n=60, in_dim=2, out_dim=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, in_dim, generator=g) * 2 + 1
    return x, torch.sin(x[:, :out_dim]) + 0.1 * torch.randn(n, out_dim, generator=g)


def test_ensemble_linear_default_init_is_the_truncated_normal_of_pets():
    """'truncated-normal init with std 1 / (2 sqrt(in_features)) cut at two std (PETS / MBPO / mbrl-lib),
    zero bias'."""
    torch.manual_seed(0)
    layer = EnsembleLinear(4, 64, 128)
    std = 1 / (2 * 64**0.5)
    weight = layer.weight.detach()
    assert weight.abs().max() <= 2 * std and weight.abs().max() > 1.9 * std
    assert abs(weight.std().item() / std - 0.880) < 0.02  # the std of N(0, 1) cut at +-2
    assert (layer.bias == 0).all()


def test_random_member_split_is_random_and_uniform():
    """'A random permutation of range(n_rows) cut into n_members consecutive parts': every row is equally
    likely to go to every member, and two generators give two different splits."""
    n_rows, n_members, n_draws = 12, 3, 600
    g = torch.Generator().manual_seed(0)
    splits = torch.stack([random_member_split(n_rows, n_members, g) for _ in range(n_draws)])
    assert not torch.equal(splits[0], splits[1])
    member_of_row = torch.empty(n_draws, n_rows, dtype=torch.long)
    member_of_row.scatter_(
        1,
        splits.flatten(1),
        torch.arange(n_members).repeat_interleave(n_rows // n_members)[None].expand(n_draws, -1),
    )
    frequency = torch.nn.functional.one_hot(member_of_row, n_members).float().mean(0)  # each 1/3, +- 0.02
    torch.testing.assert_close(frequency, torch.full_like(frequency, 1 / n_members), rtol=0, atol=0.1)


def test_normalizer_fits_the_training_split_and_leaves_constant_features():
    """EnsembleTrainer: 'the normaliser is fitted on the training split'; Normalizer: 'features whose std is
    below eps are divided by 1'."""
    x, y = _data()
    x[:, 1] = 3.0  # a constant feature
    model = EnsembleMLP(2, 1, ensemble_size=2, net_arch=[4], deterministic=True)
    EnsembleTrainer(model, holdout_ratio=0.25, max_epochs=1, loss="mse").train(
        x, y, generator=torch.Generator().manual_seed(1)
    )
    perm = torch.randperm(60, generator=torch.Generator().manual_seed(1))  # the trainer's first draw
    train = x[perm[15:]]
    torch.testing.assert_close(model.input_normalizer.mean, train.mean(0))
    torch.testing.assert_close(model.input_normalizer.std[0], train[:, 0].std(unbiased=False))
    assert model.input_normalizer.std[1] == 1.0
    normalizer = Normalizer(2)
    normalizer.fit(torch.tensor([[1.0, 5.0], [3.0, 5.0]]))
    torch.testing.assert_close(normalizer.normalize(torch.tensor([[3.0, 6.0]])), torch.tensor([[1.0, 1.0]]))


def test_bootstrap_is_drawn_once_per_train_call_and_reshuffled_every_epoch():
    """'Each member trains on its own bootstrap resample of the training split, drawn once per train call
    and reshuffled every epoch.'"""
    x, y = _data(n=50)
    model = EnsembleMLP(2, 1, ensemble_size=3, net_arch=[4], deterministic=True)
    seen = []

    def loss(mean, logvar, target, batch_indices):
        if model.training:
            seen.append(batch_indices.clone())
        return mse_loss(mean, logvar, target)

    trainer = EnsembleTrainer(model, batch_size=50, holdout_ratio=0.0, max_epochs=2, loss=loss)
    trainer.train(x, y, generator=torch.Generator().manual_seed(2))
    first, second = seen  # one batch per epoch: (E, n_train) replay indices
    assert first.shape == (3, 50)
    for member in range(3):
        assert len(set(first[member].tolist())) < 50  # drawn with replacement
        assert sorted(first[member].tolist()) == sorted(second[member].tolist())  # the same resample ...
        assert not torch.equal(first[member], second[member])  # ... in a new order
    assert sorted(first[0].tolist()) != sorted(first[1].tolist())  # every member its own resample


def _scripted(model, scores):
    """MSE while training; the next scripted holdout score per member in eval mode."""
    calls = []

    def loss(mean, logvar, target, idx):
        if model.training:
            return mse_loss(mean, logvar, target)
        calls.append(1)
        return torch.tensor(scores[min(len(calls), len(scores)) - 1])

    return loss


def test_improvement_must_exceed_the_relative_threshold():
    """'a member improves when (best - score) / |best| > improvement_threshold': improvements of 0.5 % do not
    reset the patience counter (threshold 1 %), so training stops ``patience`` epochs after the first."""
    x, y = _data()
    model = EnsembleMLP(2, 1, ensemble_size=2, net_arch=[4], deterministic=True)
    scores = [[1.0, 1.0], [0.995, 0.995], [0.992, 0.992], [0.985, 0.985], [0.98, 0.98], [0.5, 0.5]]
    trainer = EnsembleTrainer(model, patience=2, improvement_threshold=0.01, loss=_scripted(model, scores))
    result = trainer.train(x, y, generator=torch.Generator().manual_seed(3))
    assert result.n_epochs == 3 and result.stopped_early


def test_builtin_losses_score_the_holdout_with_mse():
    """'Holdout score: the mean squared error for the built-in losses ... the training loss itself for a
    callable loss.'"""
    x, y = _data(n=40)
    model = EnsembleMLP(2, 1, ensemble_size=2, net_arch=[4])  # Gaussian head: NLL != MSE
    with torch.no_grad():
        model.output_layer.bias[:, :, 1] = -2.0  # log-variance far from 0
    trainer = EnsembleTrainer(model, loss="nll")
    idx = torch.arange(40)
    with torch.no_grad():
        mean, _ = model(x)
    torch.testing.assert_close(trainer.evaluate(x, y, idx), ((mean - y) ** 2).mean(dim=(1, 2)))

    def custom(mean, logvar, target, batch_indices):
        return (mean - target).abs().mean(dim=(1, 2))

    torch.testing.assert_close(
        EnsembleTrainer(model, loss=custom).evaluate(x, y, idx), (mean - y).abs().mean(dim=(1, 2))
    )


def test_model_env_terminates_on_the_transition_and_rolls_from_the_new_state():
    """ModelEnv.step: ``terminated = termination_fn(obs, act, next_obs)``; 'The env's state becomes
    next_obs'."""
    torch.manual_seed(0)
    model = DynamicsModel(2, 1, ensemble_size=2, net_arch=[4], deterministic=True)
    with torch.no_grad():
        for layer in model.linear_layers:
            layer.weight.zero_()
            layer.bias.zero_()
        model.output_layer.bias[:, 0, 0] = 1.0  # every member: s' = s + (1, 0), reward 0
    seen = []

    def term(obs, act, next_obs):
        seen.append((obs.clone(), act.clone(), next_obs.clone()))
        return next_obs[..., 0] > 1.5

    env = ModelEnv(model, termination_fn=term, generator=torch.Generator().manual_seed(0))
    env.reset(torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
    next_obs, _, terminated = env.step(torch.zeros(2, 1))
    assert terminated.tolist() == [False, True]
    torch.testing.assert_close(seen[0][0], torch.tensor([[0.0, 0.0], [1.0, 0.0]]))
    torch.testing.assert_close(seen[0][2], next_obs)
    next_obs, _, terminated = env.step(torch.zeros(2, 1))
    torch.testing.assert_close(next_obs, torch.tensor([[2.0, 0.0], [3.0, 0.0]]))
    assert terminated.tolist() == [True, True]


def test_sampled_transitions_are_done_only_at_true_terminations():
    """EpisodeReplayBuffer.sample_transitions: ``dones`` is '1 only for true terminations, never for
    truncations'."""
    space = spaces.Box(-10, 10, (1,), np.float32)
    buffer = EpisodeReplayBuffer(20, space, space, device="cpu")
    buffer.add_episode(np.array([[0.0], [1.0]]), np.zeros((1, 1)), np.zeros(1), terminated=True)
    buffer.add_episode(
        np.array([[5.0], [6.0]]), np.zeros((1, 1)), np.zeros(1), terminated=False, truncated=True
    )
    samples = buffer.sample_transitions(64, rng=np.random.default_rng(0))
    obs, dones = samples.observations[:, 0], samples.dones[:, 0]
    assert (obs == 0).any() and (obs == 5).any()
    torch.testing.assert_close(dones, (obs == 0).float())


def test_frozen_parameters_get_no_gradient_and_are_restored_even_on_error():
    """``frozen``: no gradient for the frozen parameters inside the block, ``requires_grad`` back on after
    (also after an exception), and a parameter frozen before stays frozen."""

    shared = torch.nn.Linear(2, 2)
    actor, critic = torch.nn.Sequential(shared), torch.nn.Sequential(shared, torch.nn.Linear(2, 1))
    already_frozen = torch.nn.Parameter(torch.ones(1), requires_grad=False)
    critic_params = own_parameters(critic, shared_with=actor)
    assert [id(p) for p in critic_params] == [id(p) for p in critic[1].parameters()]
    with frozen([*critic_params, already_frozen]):
        critic(torch.ones(1, 2)).sum().backward()
    assert all(p.grad is None for p in critic_params) and shared.weight.grad is not None
    assert all(p.requires_grad for p in critic_params) and not already_frozen.requires_grad
    with pytest.raises(RuntimeError, match="inside"), frozen(critic_params):
        raise RuntimeError("inside")
    assert all(p.requires_grad for p in critic_params)
