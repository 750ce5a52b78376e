"""PlaNet's transition-model variants (issue 14): the paper's ablations (purely stochastic SSM, purely
deterministic RNN), the tiny encoder / decoder, the moving-average and the clockwork RSSM and the
time-agnostic prediction (TAP) of Rose's fork.

Each variant trains, plans, saves and loads through ``learn`` / ``predict`` / ``save`` / ``load`` at tiny
sizes, and its defining rule is pinned by a test that fails when the rule is broken.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from point_mass import PointMass
from stable_baselines3.common.env_util import make_vec_env
from torch import nn

from sb3_mb import PlaNet
from sb3_mb.common.conv import ConvDecoder, ConvEncoder
from sb3_mb.common.distributions import gaussian_kl
from sb3_mb.planet.networks import DUMBNET_UNITS, DumbConvDecoder, DumbConvEncoder
from sb3_mb.planet.rssm import RSSMState
from sb3_mb.planet.transition import SSM, ClockworkRSSM, MovingAverageRSSM, make_transition_model
from sb3_mb.registry import ALGOS

TINY = ALGOS["planet"].test_kwargs

VARIANTS = {
    "ssm": dict(transition_model="ssm"),
    "rnn": dict(mean_only=True),
    "rssm_ma": dict(transition_model="rssm_ma"),
    "dumbnet": dict(dumbnet=True),
    "clockwork": dict(belief_size=(8, 8), state_size=(4, 4), cw_tau=(1, 3)),
    "tap": dict(tap_cell="rssm"),
}
# The learning rule's options that go with a variant.
VARIANT_KWARGS = {"clockwork": dict(cell_as_prior=0.1, overshooting_distance=4)}


def _planet(env=None, policy_kwargs=None, **kwargs) -> PlaNet:
    env = PointMass() if env is None else env
    policy_kwargs = {**TINY["policy_kwargs"], **(policy_kwargs or {})}
    return PlaNet("MlpPolicy", env, seed=0, **{**TINY, **kwargs, "policy_kwargs": policy_kwargs})


def _deterministic_actions(model: PlaNet, n_steps: int = 6) -> np.ndarray:
    """Deterministic actions of 2 envs along a seeded trajectory, the state carried as evaluate_policy."""
    env = make_vec_env(PointMass, n_envs=2, seed=7)
    obs, state, starts, actions = env.reset(), None, np.ones(2, dtype=bool), []
    for _ in range(n_steps):
        action, state = model.predict(obs, state=state, episode_start=starts, deterministic=True)
        actions.append(action)
        obs, _, starts, _ = env.step(action)
    return np.stack(actions)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_variant_trains_plans_saves_and_loads(variant, tmp_path):
    model = _planet(policy_kwargs=VARIANTS[variant], **VARIANT_KWARGS.get(variant, {}))
    model.learn(60)  # one seed episode, updates, then planned steps and more updates
    assert model._n_updates >= 4
    samples = model.replay_buffer.sample_sequences(4, 8)
    assert all(th.isfinite(value) for value in model._compute_losses(samples).values())
    before = _deterministic_actions(model)
    assert np.all(np.isfinite(before)) and np.all(np.abs(before) <= 1.0)
    model.save(tmp_path / "planet.zip")
    loaded = PlaNet.load(tmp_path / "planet.zip")
    for name, value in VARIANTS[variant].items():
        assert getattr(loaded.policy, name) == value
    for name, value in VARIANT_KWARGS.get(variant, {}).items():
        assert getattr(loaded, name) == value
    assert type(loaded.policy.rssm) is type(model.policy.rssm)
    for key, value in model.policy.state_dict().items():
        th.testing.assert_close(loaded.policy.state_dict()[key], value, rtol=0, atol=0)
    np.testing.assert_array_equal(_deterministic_actions(loaded), before)


def test_unknown_variant_or_bad_moving_average_is_a_clear_error():
    with pytest.raises(
        ValueError, match=r"unknown transition_model 'gru'; the choices are 'rssm'.*'ssm'.*'rssm_ma'"
    ):
        _planet(policy_kwargs=dict(transition_model="gru"))
    with pytest.raises(
        ValueError, match=r"ma_ppn=0.1 splits belief_size=16 into 1 slow.*state_size=4 into 0"
    ):
        _planet(policy_kwargs=dict(transition_model="rssm_ma", ma_ppn=0.1))
    with pytest.raises(ValueError, match=r"ma_alpha must be in \(0, 1\]"):
        _planet(policy_kwargs=dict(transition_model="rssm_ma", ma_alpha=0.0))


def _random_state(batch: int, belief_size: int, state_size: int, seed: int = 0) -> RSSMState:
    g = th.Generator().manual_seed(seed)
    return RSSMState(
        th.randn(batch, belief_size, generator=g),
        th.randn(batch, state_size, generator=g),
        th.rand(batch, state_size, generator=g) + 0.1,
        th.randn(batch, state_size, generator=g),
    )


# ------------------------------------------------------------------------------------------------------
# Moving-average RSSM
# ------------------------------------------------------------------------------------------------------
def test_moving_average_rssm_averages_every_field_of_the_slow_part():
    """Fork, ``rssm_movavg.py``: slow part ``floor(ma_ppn * size)``, its new state (every field)
    ``(1 - ma_alpha) * previous + ma_alpha * new``, prior and posterior alike; the fast part as usual."""
    th.manual_seed(0)
    model = MovingAverageRSSM(
        action_dim=2, embedding_dim=5, belief_size=10, state_size=7, hidden_size=6, min_std=0.1, ma_alpha=0.3
    )
    assert model.belief_sizes == (2, 8) and model.state_sizes == (
        1,
        6,
    )  # ma_ppn 0.25: floor(2.5), floor(1.75)
    prev = _random_state(3, 10, 7)
    action, embedding = th.randn(3, 2), th.randn(3, 5)
    slow_prev, fast_prev = model.split(prev)

    prior, posterior = model.obs_step(prev, action, embedding, th.Generator().manual_seed(1))
    generator = th.Generator().manual_seed(1)  # the same draws, in the same order: slow, then fast
    slow_prior, slow_posterior = model.slow.obs_step(slow_prev, action, embedding, generator)
    fast_prior, fast_posterior = model.fast.obs_step(fast_prev, action, embedding, generator)
    imagined = model.img_step(prev, action, th.Generator().manual_seed(2))
    generator = th.Generator().manual_seed(2)
    slow_imagined = model.slow.img_step(slow_prev, action, generator)
    fast_imagined = model.fast.img_step(fast_prev, action, generator)

    cases = [
        (prior, slow_prior, fast_prior),
        (posterior, slow_posterior, fast_posterior),
        (imagined, slow_imagined, fast_imagined),
    ]
    for state, slow_new, fast_new in cases:
        slow, fast = model.split(state)
        for name in RSSMState._fields:
            expected = 0.7 * getattr(slow_prev, name) + 0.3 * getattr(slow_new, name)
            th.testing.assert_close(getattr(slow, name), expected, msg=f"slow {name}")
            th.testing.assert_close(getattr(fast, name), getattr(fast_new, name), msg=f"fast {name}")
    assert not th.allclose(model.split(posterior)[0].mean, slow_posterior.mean)  # the average matters


def _observed_batch(model: PlaNet, seed: int = 3):
    """After 30 steps of learning, a batch of windows and its priors and posteriors, drawn as the loss draws
    them after ``th.manual_seed(seed)``."""
    policy = model.policy
    model.learn(30)
    samples = model.replay_buffer.sample_sequences(4, 8)
    th.manual_seed(seed)
    embeddings = policy.encoder(policy.preprocess(samples.observations))
    priors, posteriors = policy.rssm.observe(
        embeddings, policy.model_actions(samples.actions), samples.is_first
    )
    return samples, priors, posteriors


def test_moving_average_kl_is_taken_on_the_concatenation():
    """'KL is on the concatenated distribution': free nats clamp the sum of both parts' KL, not each part."""
    model = _planet(policy_kwargs=dict(transition_model="rssm_ma"))
    rssm = model.policy.rssm
    samples, priors, posteriors = _observed_batch(model)
    parts = [
        gaussian_kl(post.mean, post.std, prior.mean, prior.std)
        for post, prior in zip(rssm.split(posteriors), rssm.split(priors), strict=True)
    ]
    total = parts[0] + parts[1]
    model.free_nats = float(total.detach().median())
    th.manual_seed(3)
    losses = model._compute_losses(samples)
    th.testing.assert_close(losses["kl"].detach(), total.mean().detach())
    th.testing.assert_close(losses["kl_loss"].detach(), th.clamp(total, min=model.free_nats).mean().detach())


# ------------------------------------------------------------------------------------------------------
# The paper's ablations
# ------------------------------------------------------------------------------------------------------
def test_ssm_has_no_deterministic_path():
    """Paper Sec. 5 / Fig. 2b: the SSM's state is ``s`` alone; the prior at ``t`` is a function of
    ``(s_{t-1}, a_{t-1})`` whatever came before, the posterior of that prior and ``e_t``."""
    th.manual_seed(0)
    model = SSM(action_dim=2, embedding_dim=5, state_size=3, hidden_size=6, min_std=0.1)
    assert model.belief_size == 0 and model.feature_dim == 3
    embeddings, actions = th.randn(4, 6, 5), th.randn(4, 6, 2)
    priors, posteriors = model.observe(embeddings, actions)
    assert priors.belief.shape == (4, 6, 0) and model.features(posteriors).shape == (4, 6, 3)
    for t in range(1, 6):
        # another history that ends in the same sample: only the sample is kept
        other = _random_state(4, 0, 3, seed=t)._replace(sample=posteriors.sample[:, t - 1])
        prior, posterior = model.obs_step(other, actions[:, t], embeddings[:, t], sample=False)
        th.testing.assert_close(prior.mean, priors.mean[:, t])
        th.testing.assert_close(prior.std, priors.std[:, t])
        th.testing.assert_close(posterior.mean, posteriors.mean[:, t])
        th.testing.assert_close(posterior.std, posteriors.std[:, t])
    planet = _planet(policy_kwargs=dict(transition_model="ssm"))
    _, state = planet.predict(np.zeros((2, 2), np.float32), episode_start=np.ones(2, dtype=bool))
    assert state.belief.shape == (2, 0) and state.posterior_sample.shape == (2, 4)


def test_deterministic_rnn_draws_no_sample():
    """``mean_only`` (the paper's RNN ablation, Fig. 2a): every sample is the mean, prior and posterior, so
    observing, imagining and acting do not depend on the random numbers."""
    model = _planet(policy_kwargs=dict(mean_only=True))
    rssm = model.policy.rssm
    embeddings, actions = th.randn(3, 5, 16), th.randn(3, 5, 2)
    with th.no_grad():
        runs = [rssm.observe(embeddings, actions, generator=th.Generator().manual_seed(s)) for s in (0, 1)]
        for priors, posteriors in runs:
            th.testing.assert_close(priors.sample, priors.mean, rtol=0, atol=0)
            th.testing.assert_close(posteriors.sample, posteriors.mean, rtol=0, atol=0)
        th.testing.assert_close(runs[0][1].belief, runs[1][1].belief, rtol=0, atol=0)
        start = RSSMState(*(x[:, -1] for x in runs[0][1]))
        sampled = rssm.imagine(start, actions, th.Generator().manual_seed(2), sample=True)
        th.testing.assert_close(sampled.sample, sampled.mean, rtol=0, atol=0)
    _, state = model.predict(np.zeros((2, 2), np.float32), episode_start=np.ones(2, dtype=bool))
    np.testing.assert_array_equal(state.posterior_sample, state.posterior_mean)


# ------------------------------------------------------------------------------------------------------
# dumbnet
# ------------------------------------------------------------------------------------------------------
def test_dumbnet_is_the_forks_tiny_encoder_and_decoder():
    """Fork, ``conv_ha.py``: one conv (256 channels, kernel 4, stride 32) to the same 1024-D embedding, and a
    decoder with 2-channel transposed convs; vectors: one hidden layer of 10 units."""
    encoder, decoder = DumbConvEncoder(3), DumbConvDecoder(feature_dim=20, out_channels=3)
    convs = [m for m in encoder.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 1 and convs[0].out_channels == 256 and convs[0].stride == (32, 32)
    embedding = encoder(th.zeros(2, 5, 3, 64, 64))
    assert embedding.shape == (2, 5, 1024)
    assert decoder(th.zeros(2, 5, 20)).shape == (2, 5, 3, 64, 64)
    channels = [m.out_channels for m in decoder.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert channels == [2, 2, 2, 3]
    paper = (ConvEncoder(3), ConvDecoder(feature_dim=20, out_channels=3))
    n_params, n_paper = (
        sum(p.numel() for net in nets for p in net.parameters()) for nets in ((encoder, decoder), paper)
    )
    assert n_params < n_paper / 20  # 86 thousand against 4 million

    model = _planet(policy_kwargs=dict(dumbnet=True, mlp_hidden_sizes=(64, 64)))
    linears = [m for m in model.policy.encoder.modules() if isinstance(m, nn.Linear)]
    assert [m.out_features for m in linears] == [DUMBNET_UNITS]  # mlp_hidden_sizes unused
    assert model.policy.rssm.embedding_dim == DUMBNET_UNITS
    pixels = PlaNet(
        "sb3_mb/CartpoleBalancePixels-v0",
        **dict(TINY, policy_kwargs={**TINY["policy_kwargs"], "dumbnet": True}),
    )
    assert isinstance(pixels.policy.encoder, DumbConvEncoder) and isinstance(
        pixels.policy.decoder, DumbConvDecoder
    )


# ------------------------------------------------------------------------------------------------------
# Clockwork RSSM
# ------------------------------------------------------------------------------------------------------
def _clockwork(periods=(1, 3), state_sizes=(3, 3)) -> ClockworkRSSM:
    """Deterministic cells (``mean_only``), so that different draws cannot hide a broken clock."""
    th.manual_seed(0)
    sizes = dict(belief_size=(5,) * len(periods), state_size=state_sizes)
    return make_transition_model(
        "rssm", 2, 4, hidden_size=6, min_std=0.1, mean_only=True, cw_tau=periods, **sizes
    )


def test_clockwork_cells_see_every_tau_th_frame_and_action_and_repeat_their_states():
    """Fork: cell i reads ``[:, ::tau_i]`` of the embeddings and of the (previous) actions; its states are
    repeated ``tau_i`` times along time, cut to the sequence length, and concatenated fastest first."""
    model = _clockwork()
    embeddings, actions = th.randn(2, 8, 4), th.randn(2, 8, 2)
    priors, posteriors = model.observe(embeddings, actions)
    fast, slow = model.split(posteriors)
    fast_prior, slow_prior = model.split(priors)
    _, expected_fast = model.cells[0].observe(embeddings, actions)
    expected_slow_prior, expected_slow = model.cells[1].observe(embeddings[:, ::3], actions[:, ::3])
    blocks = th.tensor([0, 0, 0, 1, 1, 1, 2, 2])
    for name in RSSMState._fields:
        th.testing.assert_close(getattr(fast, name), getattr(expected_fast, name))
        th.testing.assert_close(getattr(slow, name), getattr(expected_slow, name)[:, blocks])
        th.testing.assert_close(getattr(slow_prior, name), getattr(expected_slow_prior, name)[:, blocks])
    assert model.features(posteriors).shape == (2, 8, 2 * (5 + 3))


def test_clockwork_acting_and_planning_follow_the_learning_clock():
    """One clock: filtering step by step with the episode's time gives ``observe``'s posteriors, and a planned
    rollout from time ``k`` steps the slow cell at the multiples of ``tau`` only, with the action just before
    (its strided horizon), holding its state in between."""
    model = _clockwork()
    embeddings, actions = th.randn(2, 8, 4), th.randn(2, 8, 2)
    _, posteriors = model.observe(embeddings, actions)
    state = model.initial_state(2)
    for t in range(8):
        _, state = model.obs_step(state, actions[:, t], embeddings[:, t], time=th.full((2,), t))
        for name in RSSMState._fields:
            th.testing.assert_close(getattr(state, name), getattr(posteriors, name)[:, t])

    horizon, plan = 7, th.randn(3, 7, 2)
    start = _random_state(3, 10, 6)
    times = th.tensor([0, 1, 5])  # phases 0, 1, 2 of the slow cell
    rollout = model.imagine(start, plan, time=times)
    fast, slow = model.split(rollout)
    expected_fast = model.cells[0].imagine(model.split(start)[0], plan)
    th.testing.assert_close(fast.belief, expected_fast.belief)
    for row, k in enumerate(times.tolist()):
        held = RSSMState(*(x[row : row + 1] for x in model.split(start)[1]))
        for h in range(horizon):
            if (k + 1 + h) % 3 == 0:  # the slow cell steps into time k + 1 + h with the action a_{k+h}
                held = model.cells[1].img_step(held, plan[row : row + 1, h])
            th.testing.assert_close(slow.belief[row, h], held.belief[0], msg=f"row {row} step {h}")
            th.testing.assert_close(slow.sample[row, h], held.sample[0])


def test_clockwork_planner_and_filter_run_on_the_episode_step():
    """``predict`` carries the episode's step (0 after ``episode_start``) and hands it to the filter and to
    the CEM's objective, whose rollouts of every candidate follow the clock from that step."""
    model = _planet(policy_kwargs=dict(VARIANTS["clockwork"], mean_only=True))
    policy, rssm = model.policy, model.policy.rssm
    obs = np.full((2, 2), 0.5, np.float32)
    _, first = model.predict(obs, episode_start=np.ones(2, dtype=bool))
    _, state = model.predict(obs, state=first, episode_start=np.array([False, True]))
    np.testing.assert_array_equal(state.episode_step, [[2.0], [1.0]])
    slow = slice(8, 16)  # the slow cell's belief: env 0 at time 1 holds it, env 1 (reset, time 0) steps
    np.testing.assert_array_equal(state.belief[0, slow], first.belief[0, slow])
    assert not np.allclose(state.belief[0, :8], first.belief[0, :8])
    np.testing.assert_allclose(state.belief[1], first.belief[1])  # the same first step from zeros
    start = _random_state(2, rssm.belief_size, rssm.state_size)
    actions = th.rand(2, 5, policy.planning_horizon, 2) * 2 - 1  # (n_envs, n_candidates, horizon, action_dim)
    time = th.tensor([1, 2])
    with th.no_grad():
        returns = policy.planning_objective(start, None, time)(actions)
        for env in range(2):
            first = RSSMState(*(x[env : env + 1].expand(5, -1) for x in start))
            rollout = rssm.imagine(first, actions[env], time=time[env : env + 1].expand(5))
            th.testing.assert_close(returns[env], policy.reward(rssm.features(rollout)).sum(dim=1))
        other = policy.planning_objective(start, None, th.tensor([0, 0]))(actions)
    assert not th.allclose(returns, other)  # the phase matters


def test_clockwork_overshooting_follows_the_clock():
    """Latent overshooting with a clockwork RSSM: the open-loop prior ``d`` steps ahead of index ``t`` is the
    clocked rollout from the posterior at ``t`` (each cell over its own strided steps)."""
    model = _planet(policy_kwargs=dict(VARIANTS["clockwork"], mean_only=True), overshooting_distance=3)
    model.free_nats = 0.0
    policy, rssm = model.policy, model.policy.rssm
    g = th.Generator().manual_seed(0)
    observations, actions = th.randn(2, 7, 2, generator=g), th.rand(2, 7, 2, generator=g) * 2 - 1
    rewards = th.randn(2, 7, generator=g)
    with th.no_grad():
        _, posteriors = rssm.observe(policy.encoder(observations), actions)
        kl, _ = model._overshooting(posteriors, actions, rewards, 3)
        kls = []
        for d in (2, 3):
            for t in range(7 - d):
                start = RSSMState(*(x[:, t] for x in posteriors))
                prior = rssm.imagine(start, actions[:, t + 1 : t + 1 + d], time=th.full((2,), t))
                target = RSSMState(*(x[:, t + d] for x in posteriors))
                kls.append(gaussian_kl(target.mean, target.std, prior.mean[:, -1], prior.std[:, -1]))
    th.testing.assert_close(kl, th.cat(kls).mean())


def test_cell_as_prior_adds_the_kl_between_adjacent_cells_posteriors():
    """Fork, ``cell_as_prior: x``: ``x * sum_i KL(post_fast_{i-1} || post_slow_i)``, averaged over steps."""
    policy_kwargs = dict(belief_size=(8, 8, 8), state_size=(4, 4, 4), cw_tau=(1, 2, 4))
    model = _planet(policy_kwargs=policy_kwargs, cell_as_prior=0.5)
    samples, _, posteriors = _observed_batch(model)
    cells = model.policy.rssm.split(posteriors)
    expected = sum(
        gaussian_kl(cells[i - 1].mean, cells[i - 1].std, cells[i].mean, cells[i].std) for i in (1, 2)
    )
    th.manual_seed(3)
    losses = model._compute_losses(samples)
    th.testing.assert_close(losses["cell_as_prior_kl"], expected.mean())
    rest = losses["observation_nll"] + 10.0 * losses["reward_nll"] + losses["kl_loss"]
    th.testing.assert_close(losses["loss"], rest + 0.5 * losses["cell_as_prior_kl"])


def test_clockwork_and_cell_as_prior_errors():
    with pytest.raises(ValueError, match=r"cw_tau must be positive, non-decreasing and start at 1"):
        _planet(policy_kwargs=dict(belief_size=(8, 8), state_size=(4, 4), cw_tau=(2, 4)))
    with pytest.raises(ValueError, match=r"cw_tau must be positive, non-decreasing"):
        _planet(policy_kwargs=dict(belief_size=8, state_size=4, cw_tau=(1, 4, 2)))
    with pytest.raises(ValueError, match=r"state_size=\(4, 4\) needs one size per clockwork period"):
        _planet(policy_kwargs=dict(state_size=(4, 4), cw_tau=(1, 2, 4)))
    with pytest.raises(ValueError, match=r"cell_as_prior=0.1 needs a clockwork RSSM.*state sizes \(4, 2\)"):
        _planet(policy_kwargs=dict(state_size=(4, 2), cw_tau=(1, 2)), cell_as_prior=0.1)
    with pytest.raises(ValueError, match=r"got RSSM with state sizes \(4,\)"):
        _planet(cell_as_prior=0.1)


# ------------------------------------------------------------------------------------------------------
# Time-agnostic prediction
# ------------------------------------------------------------------------------------------------------
def _tap_inputs(model: PlaNet, seq_len: int = 6):
    """A window that starts an episode at index 0, its embeddings and model actions."""
    policy = model.policy
    g = th.Generator().manual_seed(0)
    observations = th.randn(3, seq_len, 2, generator=g)
    actions = th.rand(3, seq_len, 2, generator=g) * 2 - 1
    rewards = th.randn(3, seq_len, generator=g)
    is_first = th.zeros(3, seq_len, dtype=th.bool)
    is_first[:, 0] = True
    is_first[1, 3] = True  # a reward the min must skip
    return policy.encoder(observations), policy.model_actions(actions), is_first, observations, rewards


def test_tap_loss_is_the_min_over_later_targets():
    """Fork's TAP loss, its QUIRK fixed: for every ``j`` with a later target, ``min_{i > j}`` of the NLL of
    target ``i`` decoded from the tap cell's features at ``j`` (observation and reward heads separately),
    masked entries never the min, averaged over those ``j``."""
    model = _planet(policy_kwargs=dict(tap_cell="rssm"))
    policy = model.policy
    embeddings, actions, is_first, observations, rewards = _tap_inputs(model)
    th.manual_seed(1)
    _, posteriors = policy.tap.observe(embeddings, actions, is_first)
    features = policy.tap.features(posteriors)
    with th.no_grad():  # the masked reward (1, 3) as predicted from (1, 2): the min if it were counted
        rewards[1, 3] = policy.reward(features[1, 2])
    th.manual_seed(1)
    losses = model._tap_losses(embeddings, actions, is_first, observations, rewards)
    observation_mins, reward_mins = [], []
    with th.no_grad():
        for b in range(3):
            for j in range(5):
                later = range(j + 1, 6)
                nlls = [policy.observation_nll(features[b, j], observations[b, i]) for i in later]
                observation_mins.append(min(nlls))
                rewards_nlls = [
                    policy.reward_nll(features[b, j], rewards[b, i]) for i in later if not is_first[b, i]
                ]
                if rewards_nlls:
                    reward_mins.append(min(rewards_nlls))
    th.testing.assert_close(losses["tap_observation_nll"].detach(), th.stack(observation_mins).mean())
    th.testing.assert_close(losses["tap_reward_nll"].detach(), th.stack(reward_mins).mean())
    assert losses["tap_observation_nll"] > 0 and losses["tap_reward_nll"] > 0  # the fork's min was 0


def test_tap_cell_is_trained():
    """QUIRK fixed: the TAP loss trains the tap cell (its posterior, through its features), and the tap
    cell's own KL trains its prior, which the planner rolls out; the losses enter PlaNet's loss."""
    model = _planet(policy_kwargs=dict(tap_cell="rssm"), free_nats=0.0)
    tap = model.policy.tap
    embeddings, actions, is_first, observations, rewards = _tap_inputs(model)
    losses = model._tap_losses(embeddings, actions, is_first, observations, rewards)
    min_loss = losses["tap_observation_nll"] + losses["tap_reward_nll"]
    grads = th.autograd.grad(min_loss, [tap.fc_posterior.weight, tap.rnn.weight_hh], retain_graph=True)
    assert all(g.abs().sum() > 0 for g in grads)
    prior_grad = th.autograd.grad(losses["tap_kl_loss"], tap.fc_prior.weight)[0]
    assert prior_grad.abs().sum() > 0
    model.learn(30)
    samples = model.replay_buffer.sample_sequences(4, 8)
    th.manual_seed(2)
    all_losses = model._compute_losses(samples)
    main = all_losses["observation_nll"] + 10.0 * all_losses["reward_nll"] + all_losses["kl_loss"]
    tap_terms = (
        all_losses["tap_observation_nll"] + 10.0 * all_losses["tap_reward_nll"] + all_losses["tap_kl_loss"]
    )
    th.testing.assert_close(all_losses["loss"], main + tap_terms)


def test_tap_planning_penalty():
    """Fork, ``control/planning.py``: reward ``-= (sigmoid(KL(main || tap)) - 0.5) * 2 * scale * std(r)``
    per step, the KL averaged over the state dims and the std over the env's predicted rewards; no penalty
    when the tap cell agrees with the main model."""
    model = _planet(policy_kwargs=dict(tap_cell="rssm", tap_penalty_scale=2.0, plan_on_prior_mean=True))
    policy, rssm, tap = model.policy, model.policy.rssm, model.policy.tap
    horizon = policy.planning_horizon
    start, tap_start = _random_state(2, 16, 4, seed=1), _random_state(2, 16, 4, seed=2)
    actions = th.rand(2, 5, horizon, 2) * 2 - 1
    with th.no_grad():
        returns = policy.planning_objective(start, None, tap_start=tap_start)(actions)
        for env in range(2):
            first, tap_first = (
                RSSMState(*(x[env : env + 1].expand(5, -1) for x in s)) for s in (start, tap_start)
            )
            priors = rssm.imagine(first, actions[env], sample=False)
            tap_priors = tap.imagine(tap_first, actions[env], sample=False)
            rewards = policy.reward(rssm.features(priors))  # (5, horizon)
            kl = gaussian_kl(priors.mean, priors.std, tap_priors.mean, tap_priors.std) / 4
            penalty = (th.sigmoid(kl) - 0.5) * 2 * 2.0 * rewards.std(unbiased=False)
            assert (penalty > 0).all()
            th.testing.assert_close(returns[env], (rewards - penalty).sum(dim=1))
        tap.load_state_dict(rssm.state_dict())
        agreeing = policy.planning_objective(start, None, tap_start=start)(actions)
        policy.tap = None
        th.testing.assert_close(agreeing, policy.planning_objective(start, None)(actions))


def test_tap_errors():
    with pytest.raises(ValueError, match=r"unknown transition_model 'lstm'"):
        _planet(policy_kwargs=dict(tap_cell="lstm"))
    with pytest.raises(
        ValueError, match=r"tap_cell='rssm' has 20 features.*main model 4 and 4; they must match"
    ):
        _planet(policy_kwargs=dict(transition_model="ssm", tap_cell="rssm"))


def test_tap_state_is_filtered_and_carried_like_the_main_state():
    """The agent filters the tap cell step by step and carries its state (the fork's agent never stored it):
    after two steps it is ``observe``'s posterior of the two observations."""
    model = _planet(policy_kwargs=dict(tap_cell="rssm", mean_only=True))
    policy = model.policy
    observations = np.array([[[0.5, -0.2]], [[0.1, 0.3]]], np.float32)  # (time, n_envs, 2)
    _, first = model.predict(observations[0], episode_start=np.ones(1, dtype=bool))
    _, second = model.predict(observations[1], state=first)
    with th.no_grad():
        embeddings = policy.encoder(th.as_tensor(observations).transpose(0, 1))
        actions = th.cat([th.zeros(1, 1, 2), th.as_tensor(first.prev_action)[:, None]], dim=1)
        _, posteriors = policy.tap.observe(embeddings, actions)
    for name in ("belief", "mean", "std", "sample"):
        np.testing.assert_allclose(
            getattr(second, f"tap_{name}")[0], getattr(posteriors, name)[0, 1], rtol=1e-5
        )


def test_variants_on_pixels_train_plan_log_the_open_loop_video_and_load(tmp_path):
    """CnnPolicy with the tiny conv pair, a clockwork of moving-average cells, cell_as_prior and a tap cell at
    once: one random episode of 64x64 cartpole, updates with the video, planning, save and load."""
    env = make_vec_env("sb3_mb/CartpoleSwingupPixels-v0", n_envs=1, seed=0)
    policy_kwargs = dict(
        TINY["policy_kwargs"],
        dumbnet=True,
        transition_model="rssm_ma",
        belief_size=(8, 8),
        state_size=(4, 4),
        cw_tau=(1, 2),
        tap_cell="rssm_ma",
        reward_hidden_sizes=(8,),
    )
    kwargs = dict(TINY, policy_kwargs=policy_kwargs, video_interval=2, cell_as_prior=0.1)
    model = PlaNet("CnnPolicy", env, seed=0, **kwargs)
    model.learn(130)  # 125 random steps, 2 updates (one with the video), planned steps
    assert model._n_updates >= 2
    model.save(tmp_path / "planet.zip")
    loaded = PlaNet.load(tmp_path / "planet.zip")
    obs = env.reset()
    for agent in (model, loaded):
        action, state = agent.predict(obs, episode_start=np.ones(1, dtype=bool), deterministic=True)
        assert action.shape == (1, 1) and state.belief.shape == (1, 16) and state.tap_belief.shape == (1, 16)
    np.testing.assert_array_equal(
        loaded.predict(obs, deterministic=True)[0], model.predict(obs, deterministic=True)[0]
    )
