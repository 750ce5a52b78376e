"""The documented rules of PlaNet's model, learning and acting (sb3_mb.planet), each pinned so that breaking
it fails: the RSSM's std floor and filtering, free nats on the main KL, the reward mask, latent overshooting
(stop-gradient, distances, free nats), the discounted planning objective and the exploration. No learning
runs: the tests build a tiny agent and call its RSSM, loss, objective or ``act`` on hand-made data.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from point_mass import PointMass

from sb3_mb import PlaNet
from sb3_mb.common.buffers import SequenceSamples
from sb3_mb.common.distributions import gaussian_kl
from sb3_mb.envs import DiscreteActionTable
from sb3_mb.planet import RSSM
from sb3_mb.planet.rssm import RSSMState
from sb3_mb.registry import ALGOS

# The shared tests' sizes (sb3_mb.registry); the tests read the sizes they need back from the policy.
TINY = ALGOS["planet"].test_kwargs


def _planet(env=None, policy_kwargs=None, **kwargs) -> PlaNet:
    env = PointMass() if env is None else env
    policy_kwargs = {**TINY["policy_kwargs"], **(policy_kwargs or {})}
    return PlaNet("MlpPolicy", env, seed=0, **{**TINY, **kwargs, "policy_kwargs": policy_kwargs})


def _samples(batch: int = 3, seq_len: int = 6, seed: int = 0) -> SequenceSamples:
    """Windows that start an episode at index 0 (no action, no reward there), as the buffer stores them."""
    g = th.Generator().manual_seed(seed)
    actions = th.rand(batch, seq_len, 2, generator=g) * 2 - 1
    actions[:, 0] = 0.0
    rewards = th.randn(batch, seq_len, generator=g)
    rewards[:, 0] = 0.0
    is_first = th.zeros(batch, seq_len, dtype=th.bool)
    is_first[:, 0] = True
    no = th.zeros(batch, seq_len, dtype=th.bool)
    return SequenceSamples(th.randn(batch, seq_len, 2, generator=g), actions, rewards, is_first, no, no)


def test_rssm_std_floor_and_filtering_on_the_posterior_sample():
    """RSSM: ``std = softplus(.) + min_std``; ``h_t = GRU(relu(W [s_{t-1}, a_{t-1}]), h_{t-1})`` with
    ``s_{t-1}`` the posterior sample when observing a sequence."""
    th.manual_seed(0)
    rssm = RSSM(action_dim=2, embedding_dim=5, belief_size=6, state_size=3, hidden_size=7, min_std=0.25)
    with th.no_grad():
        for head in (rssm.fc_prior, rssm.fc_posterior):
            head.weight[3:].zero_()
            head.bias[3:] = -30.0  # softplus(-30) ~ 1e-13: the std is the floor
    embeddings, actions = th.randn(4, 3, 5), th.randn(4, 3, 2)
    priors, posteriors = rssm.observe(embeddings, actions)
    th.testing.assert_close(priors.std, th.full_like(priors.std, 0.25))
    th.testing.assert_close(posteriors.std, th.full_like(posteriors.std, 0.25))
    assert not th.allclose(posteriors.sample, posteriors.mean)  # sampled, so the next check means something
    for t in (1, 2):
        expected = rssm.img_step(RSSMState(*(x[:, t - 1] for x in posteriors)), actions[:, t])
        th.testing.assert_close(priors.belief[:, t], expected.belief)


def _per_step_kl(model: PlaNet, samples: SequenceSamples) -> th.Tensor:
    """``KL(posterior || prior)`` per step ``(batch, seq_len)``, with the same random draws as the loss."""
    policy = model.policy
    embeddings = policy.encoder(policy.preprocess(samples.observations, noise=True))
    priors, posteriors = policy.rssm.observe(
        embeddings, policy.model_actions(samples.actions), samples.is_first
    )
    return gaussian_kl(posteriors.mean, posteriors.std, priors.mean, priors.std)


def _kl_gradient(model: PlaNet, kl_loss: th.Tensor) -> float:
    grads = th.autograd.grad(kl_loss, list(model.policy.parameters()), allow_unused=True)
    return sum(float(g.abs().sum()) for g in grads if g is not None)


def test_free_nats_clamp_the_main_kl_per_step():
    """``kl_scale * max(free_nats, KL(posterior || prior))``: 'KL below this many nats per step is not
    penalised' (no gradient, the clamped value), above it the raw KL counts."""
    model = _planet(kl_scale=2.0, reward_loss_scale=10.0)
    samples = _samples()
    th.manual_seed(1)
    kl = _per_step_kl(model, samples).detach()
    for free_nats in (0.0, float(kl.median()), float(kl.max()) + 1.0):
        model.free_nats = free_nats
        th.manual_seed(1)
        losses = model._compute_losses(samples)
        th.testing.assert_close(losses["kl"].detach(), kl.mean())  # before free nats
        th.testing.assert_close(losses["kl_loss"].detach(), th.clamp(kl, min=free_nats).mean())
        expected = losses["observation_nll"] + 10.0 * losses["reward_nll"] + 2.0 * losses["kl_loss"]
        th.testing.assert_close(losses["loss"], expected)
        gradient = _kl_gradient(model, losses["kl_loss"])
        assert (gradient == 0.0) == (free_nats > kl.max()), (free_nats, gradient)
    assert losses["kl_loss"].item() == pytest.approx(float(kl.max()) + 1.0)


def test_reward_nll_skips_the_episode_start_record():
    """'the record at an episode start holds no reward': its reward does not enter the reward NLL."""
    model = _planet()
    samples = _samples()
    other = samples._replace(rewards=samples.rewards.clone())
    other.rewards[:, 0] = 1e3
    th.manual_seed(2)
    reward_nll = model._compute_losses(samples)["reward_nll"]
    th.manual_seed(2)
    th.testing.assert_close(model._compute_losses(other)["reward_nll"], reward_nll)


@pytest.fixture
def no_sampling_noise(monkeypatch):
    """Every ``torch.randn`` returns zeros: RSSM samples are their means, so open-loop rollouts are exact."""

    def zeros(*shape, generator=None, device=None, dtype=None, **kwargs):
        return th.zeros(*shape, device=device, dtype=dtype)

    monkeypatch.setattr(th, "randn", zeros)


def test_overshooting_matches_every_distance_from_2_to_d_with_a_stopped_target(no_sampling_noise):
    """Latent overshooting: open-loop priors ``d = 2..D`` steps ahead of every posterior, KL to the posterior
    there (its gradient stopped) with free nats, and their reward NLL; means over all (start, distance)."""
    model = _planet(overshooting_distance=3, free_nats=0.0)
    policy, rssm = model.policy, model.policy.rssm
    samples = _samples(seq_len=7)
    actions = policy.model_actions(samples.actions)
    _, posteriors = rssm.observe(policy.encoder(samples.observations), actions, samples.is_first)
    leaves = RSSMState(*(x.detach().requires_grad_(True) for x in posteriors))
    kl, reward_nll = model._overshooting(leaves, actions, samples.rewards, 3)

    kls, nlls = [], []
    with th.no_grad():
        for distance in (2, 3):
            for t in range(7 - distance):
                start = RSSMState(*(x[:, t] for x in posteriors))
                prior = rssm.imagine(start, actions[:, t + 1 : t + 1 + distance])
                end = t + distance
                kls.append(
                    gaussian_kl(
                        posteriors.mean[:, end],
                        posteriors.std[:, end],
                        prior.mean[:, -1],
                        prior.std[:, -1],
                    )
                )
                nlls.append(policy.reward_nll(RSSM.features(prior)[:, -1], samples.rewards[:, end]))
    th.testing.assert_close(kl.detach(), th.cat(kls).mean())
    th.testing.assert_close(reward_nll.detach(), th.cat(nlls).mean())

    belief, mean, std, sample = th.autograd.grad(kl, list(leaves), allow_unused=True)
    assert mean is None and std is None  # the target posterior: no gradient
    assert belief.abs().sum() > 0 and sample.abs().sum() > 0  # the rollout start: gradient
    model.free_nats = float(th.cat(kls).max()) + 1.0
    kl, _ = model._overshooting(leaves, actions, samples.rewards, 3)
    assert kl.item() == pytest.approx(model.free_nats)


def test_planning_objective_sums_discounted_predicted_rewards(no_sampling_noise):
    """The CEM's objective: 'the discounted predicted rewards of a prior rollout' from ``(h_t, s_t)``."""
    model = _planet(policy_kwargs=dict(discount=0.5))
    policy = model.policy
    g = th.Generator().manual_seed(3)
    horizon = policy.planning_horizon
    belief = th.rand(2, policy.belief_size, generator=g)
    state = th.rand(2, policy.state_size, generator=g)
    start = RSSMState(belief, state, th.ones_like(state), state)
    actions = th.rand(2, 5, horizon, 2, generator=g) * 2 - 1  # (n_envs, n_candidates, horizon, action_dim)
    with th.no_grad():
        returns = policy.planning_objective(start, None)(actions)
        for env in range(2):
            for candidate in range(5):
                prior = policy.rssm.imagine(
                    RSSMState(*(x[env : env + 1] for x in start)), actions[env, candidate][None]
                )
                rewards = policy.reward(RSSM.features(prior))[0]  # (horizon,)
                expected = (rewards * 0.5 ** th.arange(float(horizon))).sum()
                th.testing.assert_close(returns[env, candidate], expected)


def test_updates_are_owed_per_episode_and_windows_fit_short_episodes():
    """``updates_per_episode`` (C) updates for the seed data and C per later episode; sequences of
    ``sequence_length`` steps, or whole episodes (with a warning) while every stored episode is shorter."""
    model = _planet(sequence_length=8, seed_episodes=2, updates_per_episode=3)
    buffer = model.replay_buffer

    def add_episode(n_steps):
        buffer.add_episode(
            np.zeros((n_steps + 1, 2)), np.zeros((n_steps, 2)), np.zeros(n_steps), terminated=True
        )

    add_episode(3)
    assert model._gradient_steps_due() == 0  # seed episodes not complete
    add_episode(4)
    assert model._gradient_steps_due() == 3  # the seed data
    assert model._gradient_steps_due() == 0
    with pytest.warns(UserWarning, match="shorter than sequence_length"):
        assert model._window_length() == 5  # the longest stored episode's records
    add_episode(10)
    add_episode(10)
    assert model._gradient_steps_due() == 3 * 2
    assert model._window_length() == 8


def test_exploration_only_when_not_deterministic():
    """Box: Gaussian noise of std ``exploration_noise`` (in the [-1, 1] scale) on the planned action;
    Discrete: epsilon-greedy; ``deterministic=True`` acts with the plan alone."""
    n_envs = 300
    observation = th.rand(n_envs, 2) * 2 - 1

    def act(model, deterministic):
        return model.policy.act(observation, None, None, deterministic, th.Generator().manual_seed(4))

    model = _planet(policy_kwargs=dict(exploration_noise=0.3))
    action, state, plan = act(model, True)
    np.testing.assert_allclose(state.prev_action, plan.action.numpy())
    np.testing.assert_allclose(action, plan.action.numpy(), atol=1e-6)  # PointMass bounds are [-1, 1]
    _, noisy, _ = act(model, False)
    noise = (noisy.prev_action - state.prev_action)[np.abs(noisy.prev_action) < 1]
    assert 0.25 < noise.std() < 0.35 and abs(noise.mean()) < 0.05

    table = [[0, 0], [1, 0], [-1, 0], [0, 1], [0, -1]]
    model = _planet(DiscreteActionTable(PointMass(), table), policy_kwargs=dict(exploration_epsilon=0.3))
    greedy, _, plan = act(model, True)
    np.testing.assert_array_equal(greedy, plan.action_index.numpy())
    explored, _, _ = act(model, False)
    assert 0.15 < np.mean(explored != greedy) < 0.33  # epsilon * 4 / 5 = 0.24
