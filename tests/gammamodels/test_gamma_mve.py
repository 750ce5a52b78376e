"""γ-MVE (sb3_mb.gammamodels.GammaMVE): the expanded targets against their closed forms in the two limits
(γ̃ = γ: the γ-model value, no critic; γ̃ = 0: ordinary MVE), and the way the batches reach SAC."""

from __future__ import annotations

import pytest
import torch as th
from stable_baselines3 import SAC
from stable_baselines3.common.type_aliases import ReplayBufferSamples

from sb3_mb.gammamodels import GammaMVE, GammaMVEReplayBuffer
from sb3_mb.registry import ALGOS

TINY = ALGOS["gammamve"].test_kwargs
GAMMA = 0.9


def _model(model_gamma: float, horizon: int) -> GammaMVE:
    model = GammaMVE(
        "Pendulum-v1",
        seed=0,
        **{**TINY, "value_expansion_horizon": horizon},
        model_gamma=model_gamma,
        gamma=GAMMA,
    )
    # A deterministic "γ-model" (each composition moves the state by +1) and a soft reward ρ(x) = x[0]: the
    # expansion's closed form is then known.
    model.gamma_model.sample = lambda obs, actions, n=1, target=False: (obs + 1.0).expand(n, *obs.shape)
    model._soft_reward = lambda obs, ent_coef: obs[:, 0]
    return model


def _batch(done: float = 0.0) -> ReplayBufferSamples:
    obs = th.tensor([[0.5, -1.0, 2.0], [1.0, 0.0, 0.0]])
    return ReplayBufferSamples(
        observations=obs,
        actions=th.zeros(2, 1),
        next_observations=obs + 0.1,
        dones=th.tensor([[0.0], [done]]),
        rewards=th.tensor([[-1.0], [-2.0]]),
    )


def test_model_gamma_equal_to_gamma_is_the_gamma_model_value_without_bootstrap():
    """γ̃ = γ: ``Q = r + γ E_μ[ρ] / (1 - γ)``, whatever the horizon and the critic (discount 0)."""
    data = _batch()
    out = _model(GAMMA, 3)._expansion(data)
    rho = data.observations[:, 0] + 1.0  # the first composition
    th.testing.assert_close(out.rewards[:, 0], data.rewards[:, 0] + GAMMA * rho / (1 - GAMMA))
    th.testing.assert_close(out.discounts, th.zeros(2, 1))


def test_model_gamma_zero_is_ordinary_mve():
    """γ̃ = 0, H = 3: ``r + γ ρ(s^1) + γ² ρ(s^2) + γ³ V(s^3)``, i.e. SAC's target with reward
    ``r + γ ρ(s^1) + γ² ρ(s^2)``, next state ``s^3`` and discount ``γ³`` (Feinberg et al. 2018, Eq. 3)."""
    data = _batch()
    out = _model(0.0, 3)._expansion(data)
    x = data.observations[:, 0]
    expected = data.rewards[:, 0] + GAMMA * (x + 1) + GAMMA**2 * (x + 2)
    th.testing.assert_close(out.rewards[:, 0], expected)
    th.testing.assert_close(out.discounts, th.full((2, 1), GAMMA**3))
    th.testing.assert_close(out.next_observations, data.observations + 3.0)


def test_one_step_model_with_horizon_one_is_sac_on_the_model_next_state():
    data = _batch()
    out = _model(0.0, 1)._expansion(data)
    th.testing.assert_close(out.rewards, data.rewards)
    th.testing.assert_close(out.discounts, th.full((2, 1), GAMMA))
    th.testing.assert_close(out.next_observations, data.observations + 1.0)


def test_terminal_transitions_keep_their_reward():
    data = _batch(done=1.0)
    out = _model(0.5, 3)._expansion(data)
    assert out.rewards[1, 0] == data.rewards[1, 0] and out.rewards[0, 0] != data.rewards[0, 0]


def test_sac_batches_are_expanded_after_model_learning_starts_only():
    model = GammaMVE("Pendulum-v1", seed=0, **TINY)
    assert isinstance(model.replay_buffer, GammaMVEReplayBuffer) and model.replay_buffer.expansion is None
    model.learn(TINY["learning_starts"] + TINY["model_learning_starts"] + 5)
    assert model._n_model_updates >= TINY["model_learning_starts"]
    assert model.replay_buffer.expansion is not None
    batch = model.replay_buffer.sample(8)
    assert batch.discounts is not None and batch.discounts.shape == (8, 1)
    real = model.replay_buffer.sample_real(8)
    assert real.discounts is None


def test_bad_model_gamma_is_a_clear_error():
    with pytest.raises(ValueError, match="model_gamma <= gamma"):
        GammaMVE("Pendulum-v1", model_gamma=0.995)
    with pytest.raises(ValueError, match="value_expansion_horizon >= 1"):
        GammaMVE("Pendulum-v1", value_expansion_horizon=0)


def test_a_sac_file_is_not_loaded_as_gamma_mve(tmp_path):
    SAC("MlpPolicy", "Pendulum-v1", buffer_size=10).save(tmp_path / "sac.zip")
    with pytest.raises(ValueError, match="another algorithm: SAC"):
        GammaMVE.load(tmp_path / "sac.zip")
