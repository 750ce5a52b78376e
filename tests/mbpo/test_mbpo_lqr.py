"""MBPO's model on the linear double integrator (issue 11): target normalisation, at rewards scaled by 1e-3,
1 and 1e3.

``sb3_mb/DoubleIntegrator-v0``: ``s' = A s + B a``, reward ``-c position'^2``. Random actions carry the mass
to positions of 100-500 within an episode, so the reward spans five orders of magnitude while the state
differences stay of order 1-10. A model that normalises its inputs only (MBPO's) does not learn such data;
standardised targets (:class:`~sb3_mb.common.dynamics.DynamicsModel` with ``normalize_targets``) do, and
make the fitted model independent of the reward's units.
"""

import numpy as np
import pytest
import torch
from stable_baselines3.common.env_util import make_vec_env

from sb3_mb import MBPO
from sb3_mb.common.dynamics import DynamicsModel
from sb3_mb.common.ensemble import EnsembleTrainer, mse_loss
from sb3_mb.envs.linear import DoubleIntegrator

ENV_ID = "sb3_mb/DoubleIntegrator-v0"


def _transitions(n: int, position_std: float, position_cost: float = 1.0, seed: int = 0):
    """``n`` transitions of the double integrator from states ``N(0, position_std^2)``, random actions."""
    env = DoubleIntegrator(position_cost=position_cost)
    rng = np.random.default_rng(seed)
    obs = rng.normal(0.0, position_std, (n, 2)).astype(np.float32)
    actions = rng.uniform(-1.0, 1.0, (n, 1)).astype(np.float32)
    next_obs = (obs @ env.A.T + actions * env.B[:, 0]).astype(np.float32)
    rewards = (-position_cost * next_obs[:, 0] ** 2).astype(np.float32)
    return tuple(torch.as_tensor(x) for x in (obs, actions, next_obs, rewards))


def _fit(normalize_targets: bool, data, max_epochs: int = 100, patience: int = 10) -> DynamicsModel:
    torch.manual_seed(0)
    model = DynamicsModel(
        2, 1, ensemble_size=5, net_arch=[64, 64], n_elites=3, normalize_targets=normalize_targets
    )
    trainer = EnsembleTrainer(
        model, batch_size=32, max_epochs=max_epochs, patience=patience, weight_decay=5e-5
    )
    obs, actions, next_obs, rewards = data
    trainer.train(
        model.inputs(obs, actions),
        model.targets(obs, next_obs, rewards),
        generator=torch.Generator().manual_seed(0),
    )
    return model


def _relative_errors(model: DynamicsModel, data) -> np.ndarray:
    """RMSE of the elites' mean prediction over the targets' std: ``(delta_position, delta_velocity, r)``."""
    obs, actions, next_obs, rewards = data
    with torch.no_grad():
        mean, _ = model(model.inputs(obs, actions))
    prediction = mean[model.elite_idx].mean(0)
    target = model.targets(obs, next_obs, rewards)
    return ((prediction - target).pow(2).mean(0).sqrt() / target.std(0)).numpy()


def test_target_normalisation_lets_the_model_learn_far_spread_states():
    """150 transitions with positions of std 50 (what 60 random steps reach): measured relative errors
    (``delta_position``, ``delta_velocity``, reward) 0.03, 0.02, 0.19 with standardised targets; 1.00, 0.97,
    1.23 without (the holdout MSE, all reward, stops training after 11 epochs: the model learned nothing)."""
    train, test = _transitions(150, 50.0, seed=0), _transitions(2000, 50.0, seed=1)
    normalised = _relative_errors(_fit(True, train), test)
    assert (normalised[:2] < 0.1).all() and normalised[2] < 0.35, normalised
    raw = _relative_errors(_fit(False, train), test)
    assert (raw > 0.9).all(), raw


@pytest.mark.parametrize("position_cost", [1e-3, 1e3])
def test_normalised_model_does_not_depend_on_the_reward_units(position_cost):
    """The same data with rewards scaled by ``c``: the fitted model predicts ``c`` times the reward and the
    same state differences (the likelihood of standardised targets, the holdout score and the elites are the
    same)."""
    reference = _fit(True, _transitions(150, 10.0), max_epochs=30, patience=1000)
    scaled = _fit(True, _transitions(150, 10.0, position_cost=position_cost), max_epochs=30, patience=1000)
    obs, actions, _, _ = _transitions(500, 10.0, seed=1)
    with torch.no_grad():
        mean_ref, logvar_ref = reference(reference.inputs(obs, actions))
        mean, logvar = scaled(scaled.inputs(obs, actions))
    torch.testing.assert_close(mean[..., :2], mean_ref[..., :2], rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(mean[..., 2] / position_cost, mean_ref[..., 2], rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(
        logvar[..., 2] - 2 * np.log(position_cost), logvar_ref[..., 2], rtol=0, atol=1e-3
    )
    torch.testing.assert_close(scaled.elite_idx, reference.elite_idx)


def test_standardize_forward_and_the_trainer_units():
    """``forward`` returns raw units (``std * out + mean``, ``logvar + 2 log std``); the trainer's built-in
    holdout score is the MSE of the standardised targets; without ``normalize_targets`` nothing changes."""
    torch.manual_seed(0)
    model = DynamicsModel(2, 1, ensemble_size=2, net_arch=[8], normalize_targets=True)
    inputs, targets = torch.randn(50, 3), torch.randn(50, 3) * torch.tensor([1.0, 10.0, 1000.0]) + 5.0
    model.fit_normalizers(inputs, targets)
    norm = model.target_normalizer
    torch.testing.assert_close(norm.std, targets.std(0, unbiased=False))
    mean_n, logvar_n = super(DynamicsModel, model).forward(inputs)  # the network's own (standardised) output
    mean, logvar = model(inputs)
    torch.testing.assert_close(mean, mean_n * norm.std + norm.mean)
    torch.testing.assert_close(logvar, logvar_n + 2 * norm.std.log())
    standardised = model.standardize(mean, logvar, targets.expand(2, -1, -1))
    torch.testing.assert_close(standardised[0], mean_n, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(standardised[1], logvar_n, rtol=1e-4, atol=1e-4)
    trainer = EnsembleTrainer(model, max_epochs=1)
    score = trainer.evaluate(inputs, targets, torch.arange(50))
    torch.testing.assert_close(score, mse_loss(mean_n, None, standardised[2]), rtol=1e-4, atol=1e-5)
    assert "target_normalizer.std" in model.state_dict()

    plain = DynamicsModel(2, 1, ensemble_size=2, net_arch=[8])
    assert plain.target_normalizer is None and not any("target_normalizer" in k for k in plain.state_dict())
    out = plain(inputs)
    assert plain.standardize(out[0], out[1], targets) == (out[0], out[1], targets)


def test_mbpo_saves_and_loads_the_target_statistics(tmp_path):
    env = make_vec_env(ENV_ID, n_envs=1, seed=0)
    kwargs = dict(
        learning_starts=30,
        model_train_freq=30,
        epoch_length=30,
        n_rollouts_per_step=4,
        model_max_epochs=3,
        gradient_steps=1,
        batch_size=32,
        policy_kwargs=dict(
            net_arch=[16],
            model_net_arch=[16],
            model_ensemble_size=2,
            model_n_elites=1,
            model_normalize_targets=True,
        ),
    )
    model = MBPO("MlpPolicy", env, seed=0, **kwargs)
    model.learn(40)
    rewards = model.replay_buffer.real_transitions()[3]
    std = model.dynamics.target_normalizer.std
    assert std[-1] > 1.0 and std[-1] == pytest.approx(float(rewards.std(unbiased=False)), rel=0.3)
    model.save(tmp_path / "mbpo.zip")
    loaded = MBPO.load(tmp_path / "mbpo.zip")
    assert loaded.policy.model_normalize_targets
    torch.testing.assert_close(loaded.dynamics.target_normalizer.std, std)
    x = torch.randn(5, 3)
    torch.testing.assert_close(loaded.dynamics(x)[0], model.dynamics(x)[0])
