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
    model._soft_reward = lambda obs, ent_coef, *given: obs[:, 0]
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


# ------------------------------------------------------------------------ options: projection, samples, share
def _shifting(model: GammaMVE, shift) -> GammaMVE:
    """Replace the γ-model by ``s -> s + shift(s)`` (deterministic) and ρ by ``x[0]``."""
    model.gamma_model.sample = lambda obs, actions, n=1, target=False: (obs + shift(obs)).expand(
        n, *obs.shape
    )
    model._soft_reward = lambda obs, ent_coef, *given: obs[:, 0]
    return model


def _plain(**kwargs) -> GammaMVE:
    return GammaMVE("Pendulum-v1", seed=0, **{**TINY, "value_expansion_horizon": 1, **kwargs}, gamma=GAMMA)


def test_clip_observations_clips_samples_to_the_observation_space_before_use():
    """Pendulum's bounds are ``[-1, 1] × [-1, 1] × [-8, 8]``: a sample ``(1.5, 0, 3)`` becomes ``(1, 0, 3)``
    for the reward, the bootstrap state and the next composition."""
    data = _batch()
    model = _shifting(
        _plain(model_gamma=0.0, clip_observations=True, value_expansion_horizon=2), lambda s: 1.0
    )
    out = model._expansion(data)
    high = th.tensor([1.0, 1.0, 8.0])
    s1 = th.minimum(data.observations + 1.0, high)
    s2 = th.minimum(s1 + 1.0, high)
    th.testing.assert_close(out.next_observations, s2)
    th.testing.assert_close(out.rewards[:, 0], data.rewards[:, 0] + GAMMA * s1[:, 0])


def test_angle_observations_put_each_pair_on_the_unit_circle():
    data = _batch()
    model = _shifting(_plain(model_gamma=0.0, angle_observations=[(0, 1)]), lambda s: 1.0)
    out = model._expansion(data)
    raw = data.observations + 1.0
    norm = raw[:, :2].norm(dim=1, keepdim=True)
    expected = th.cat([raw[:, :2] / norm, raw[:, 2:]], dim=1)
    th.testing.assert_close(out.next_observations, expected)
    model = _shifting(
        _plain(model_gamma=0.0, angle_observations=[(0, 1)], value_expansion_horizon=2), lambda s: 1.0
    )
    out = model._expansion(data)
    th.testing.assert_close(out.rewards[:, 0], data.rewards[:, 0] + GAMMA * expected[:, 0])


def test_observation_projection_is_applied_to_every_sample():
    data = _batch()
    model = _shifting(_plain(model_gamma=0.0, observation_projection=lambda x: 2.0 * x), lambda s: 1.0)
    model.value_expansion_horizon = 2
    out = model._expansion(data)
    s1 = 2.0 * (data.observations + 1.0)
    th.testing.assert_close(out.rewards[:, 0], data.rewards[:, 0] + GAMMA * s1[:, 0])
    th.testing.assert_close(out.next_observations, 2.0 * (s1 + 1.0))


def test_n_model_samples_averages_the_expansion_with_its_bootstraps():
    """``k`` rollouts, rollout ``j`` moving the state by ``j + 1`` (rows ``j B .. (j + 1) B - 1`` of the
    repeated batch), soft value ``V(x) = 10 x[0]``: with H = 1, ``r + mean_j (γ α_1 ρ(s_j) + β (V - ρ)(s_j))``
    and discount 0 (SAC's own bootstrap off)."""
    data, k, model_gamma = _batch(), 4, 0.5
    batch = data.observations.shape[0]
    model = _shifting(
        _plain(model_gamma=model_gamma, n_model_samples=k),
        lambda s: (th.arange(s.shape[0]) // batch + 1.0)[:, None],
    )
    model._soft_value = lambda obs, ent_coef: 10.0 * obs[:, 0]
    out = model._expansion(data)
    beta = (GAMMA - model_gamma) / (1 - model_gamma)
    x = data.observations[:, 0]
    mean_state = x + (1 + k) / 2  # mean of x + j over j = 1..k (every term is linear in x[0])
    expected = data.rewards[:, 0] + GAMMA * mean_state / (1 - model_gamma) + beta * 9.0 * mean_state
    th.testing.assert_close(out.rewards[:, 0], expected)
    th.testing.assert_close(out.discounts, th.zeros(2, 1))


def test_expand_from_next_state_expands_the_value_of_the_real_next_state():
    """``r + γ (ρ(s') + γ sum_n α_n ρ(s^n) - β^H ρ(s^H))``, next state ``s^H`` from ``s'``, discount ``γ β^H``
    (γ̃ = 0.5, H = 2)."""
    data, model_gamma = _batch(), 0.5
    model = _shifting(
        _plain(model_gamma=model_gamma, value_expansion_horizon=2, expand_from_next_state=True), lambda s: 1.0
    )
    out = model._expansion(data)
    beta = (GAMMA - model_gamma) / (1 - model_gamma)
    alphas = [1 / (1 - model_gamma), beta / (1 - model_gamma)]
    x = data.next_observations[:, 0]
    inner = x + GAMMA * (alphas[0] * (x + 1) + alphas[1] * (x + 2)) - beta**2 * (x + 2)
    th.testing.assert_close(out.rewards[:, 0], data.rewards[:, 0] + GAMMA * inner)
    th.testing.assert_close(out.next_observations, data.next_observations + 2.0)
    th.testing.assert_close(out.discounts, th.full((2, 1), GAMMA * beta**2))


def test_expansion_weight_blends_with_sacs_one_step_target():
    """``λ · γ-MVE + (1 - λ) (r + γ V(s'))``, discount 0; ``V(x) = 10 x[0]``, a one-step model moving by 1,
    H = 1: the γ-MVE target is ``r + γ ρ(s^1) + γ² (V - ρ)(s^1)`` with ``ρ(x) = x[0]``."""
    data = _batch()
    for weight in (0.0, 0.25, 1.0):
        model = _shifting(_plain(model_gamma=0.0, expansion_weight=weight, n_model_samples=2), lambda s: 1.0)
        model._soft_value = lambda obs, ent_coef: 10.0 * obs[:, 0]
        model.model_learning_starts = 0
        out = model._expansion(data)
        s1 = data.observations[:, 0] + 1.0
        expanded = GAMMA * s1 + GAMMA * 9.0 * s1
        one_step = GAMMA * 10.0 * data.next_observations[:, 0]
        expected = data.rewards[:, 0] + weight * expanded + (1 - weight) * one_step
        th.testing.assert_close(out.rewards[:, 0], expected)
        th.testing.assert_close(out.discounts, th.zeros(2, 1))


def test_expansion_ramp_grows_the_share_linearly():
    model = _plain(model_gamma=0.5, expansion_weight=0.8, expansion_ramp=100)
    model.model_learning_starts = 50
    for updates, share in ((0, 0.0), (49, 0.0), (50, 0.0), (100, 0.4), (150, 0.8), (1000, 0.8)):
        model._n_model_updates = updates
        assert model.current_expansion_weight() == pytest.approx(share)


def test_bad_options_are_clear_errors():
    for kwargs in (
        dict(n_model_samples=0),
        dict(expansion_weight=1.5),
        dict(expansion_ramp=-1),
        dict(angle_observations=[(0, 3)]),
        dict(angle_observations=[(1, 1)]),
    ):
        with pytest.raises(ValueError, match="n_model_samples >= 1"):
            GammaMVE("Pendulum-v1", **kwargs)


def test_options_survive_save_and_load(tmp_path):
    model = _plain(model_gamma=0.5, angle_observations=[(0, 1)], clip_observations=True, n_model_samples=3)
    model.save(tmp_path / "m.zip")
    loaded = GammaMVE.load(tmp_path / "m.zip")
    assert loaded.angle_observations == ((0, 1),) and loaded.clip_observations and loaded.n_model_samples == 3
