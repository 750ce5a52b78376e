"""MBPO's model on the linear double integrator (issue 11): target normalisation, at rewards scaled by 1e-3,
1 and 1e3.

``sb3_mb/DoubleIntegrator-v0``: ``s' = A s + B a``, reward ``-c position'^2``. Random actions carry the mass
to positions of 100-500 within an episode, so the reward spans five orders of magnitude while the state
differences stay of order 1-10. A model that normalises its inputs only (MBPO's) does not learn such data;
standardised targets (:class:`~sb3_mb.common.dynamics.DynamicsModel` with ``normalize_targets``) do, and
make the fitted model independent of the reward's units.
"""

import functools

import numpy as np
import pytest
import torch
import torch as th
from gymnasium import spaces
from stable_baselines3 import SAC
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import Logger

from sb3_mb import MBPO
from sb3_mb.common.dynamics import DynamicsModel
from sb3_mb.common.ensemble import EnsembleMLP, EnsembleTrainer, mse_loss
from sb3_mb.common.symlog import reward_scale, symexp, symlog
from sb3_mb.envs.linear import DoubleIntegrator
from sb3_mb.mbpo.buffers import MBPOReplayBuffer
from sb3_mb.mbpo.policies import MBPOPolicy, SymlogFlattenExtractor
from sb3_mb.registry import ALGOS
from zoo.hyperparams import load_hyperparams

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
    mean_n, logvar_n = EnsembleMLP.forward(model, inputs)  # the network's own (standardised) output
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


# ------------------------------------------------------------------------------------------------------
# The rules of the fix: reward_scale, the symlog reward column, the symlog critic, symlog observations
# ------------------------------------------------------------------------------------------------------
TINY = {
    **ALGOS["mbpo"].test_kwargs,
    "learning_starts": 30,
    "model_train_freq": 30,
    "epoch_length": 30,
    "policy_kwargs": dict(
        net_arch=[16, 16],
        model_net_arch=[16, 16],
        model_ensemble_size=2,
        model_n_elites=1,
        model_normalize_targets=True,
        model_symlog_reward=True,
        symlog_observations=True,
    ),
}


def _tiny(position_cost: float = 1.0, **kwargs) -> MBPO:
    env = make_vec_env(ENV_ID, n_envs=1, seed=0, env_kwargs=dict(position_cost=position_cost))
    model = MBPO("MlpPolicy", env, seed=0, **{**TINY, **kwargs})
    model.set_logger(Logger(folder=None, output_formats=[]))
    return model


def test_reward_scale_divides_the_rewards_sac_samples_real_and_model_alike():
    """``MBPOReplayBuffer.reward_scale = kappa``: every sampled reward, real or model, is the stored one over
    ``kappa``; the stores and ``real_transitions`` keep raw rewards (the model trains on them)."""
    buffer = MBPOReplayBuffer(
        100, spaces.Box(-np.inf, np.inf, (2,)), spaces.Box(-1, 1, (1,)), "cpu", model_data_mixing="sample"
    )
    rng = np.random.default_rng(0)
    for _ in range(50):  # real rewards are 10 * obs[0], model rewards 100 * obs[0]
        obs = rng.normal(size=(1, 2)).astype(np.float32)
        buffer.add(obs, obs, np.zeros((1, 1)), 10 * obs[:, 0], np.zeros(1), [{}])
    obs = rng.normal(size=(50, 2)).astype(np.float32) + 10.0  # model states apart from the real ones
    buffer.model_buffer.extend(obs, np.zeros((50, 1)), obs, 100 * obs[:, 0], np.zeros(50))
    buffer.model_data_ratio, buffer.reward_scale = 0.5, 4.0
    data = buffer.sample(64)
    is_model = data.observations[:, 0] > 5.0
    assert 0 < int(is_model.sum()) < 64
    expected = th.where(is_model, 100.0, 10.0) * data.observations[:, 0] / 4.0
    th.testing.assert_close(data.rewards[:, 0], expected)
    for ratio, scale in ((1.0, 100.0), (0.0, 10.0)):  # all model, all real
        buffer.model_data_ratio = ratio
        data = buffer.sample(16)
        th.testing.assert_close(data.rewards[:, 0], scale * data.observations[:, 0] / 4.0)
    raw = buffer.real_transitions()
    th.testing.assert_close(raw[3], 10.0 * raw[0][:, 0])  # stored raw
    buffer.reward_scale = None
    data = buffer.sample(64)
    expected = th.where(data.observations[:, 0] > 5.0, 100.0, 10.0) * data.observations[:, 0]
    th.testing.assert_close(data.rewards[:, 0], expected)


def test_auto_reward_scale_is_the_warmup_quantile_kept_saved_and_given_to_buffer_and_model(tmp_path):
    """``reward_scale="auto"``: kappa = :func:`~sb3_mb.common.symlog.reward_scale` (10 % quantile of the
    non-zero ``|r|``) of the real buffer at the first ``train()``, kept afterwards, handed to the buffer and
    to the symlog reward column of the model, saved with the agent; a number is taken as is."""
    model = _tiny(reward_scale="auto")
    model.learn(TINY["learning_starts"] + 1)
    rewards = model.replay_buffer.rewards[: TINY["learning_starts"] + 1]  # the buffer at the first train
    kappa = model._reward_scale
    assert kappa == pytest.approx(reward_scale(rewards), rel=1e-6)
    model.learn(40, reset_num_timesteps=False)
    assert model._reward_scale == kappa
    assert model.replay_buffer.reward_scale == kappa
    assert float(model.dynamics.reward_scale) == pytest.approx(kappa)
    model.save(tmp_path / "mbpo.zip")
    loaded = MBPO.load(tmp_path / "mbpo.zip")
    assert loaded._reward_scale == kappa and float(loaded.dynamics.reward_scale) == pytest.approx(kappa)
    assert _tiny(reward_scale=2.5)._reward_scale == 2.5
    median = _tiny(reward_scale="auto", reward_scale_quantile=0.5)
    median.learn(TINY["learning_starts"] + 1)
    assert median._reward_scale == pytest.approx(reward_scale(rewards, 0.5), rel=1e-6)
    paper = MBPO("MlpPolicy", make_vec_env(ENV_ID, n_envs=1, seed=0), **ALGOS["mbpo"].test_kwargs)
    assert paper.reward_scale is None and paper._reward_scale is None and not paper.symlog_critic
    assert not paper.policy.model_symlog_reward and not paper.policy.symlog_observations


def test_reward_scale_must_be_auto_a_positive_number_or_none():
    for bad in (0.0, -1.0, "mean", True):
        with pytest.raises(ValueError, match="reward_scale"):
            _tiny(reward_scale=bad)
    with pytest.raises(ValueError, match="reward_scale_quantile"):
        _tiny(reward_scale="auto", reward_scale_quantile=1.5)


def test_reward_scale_and_symlog_make_learning_free_of_the_reward_units():
    """Rewards x1e-3 and x1e3 with ``reward_scale="auto"`` (and the normalised, symlog reward model): SAC
    and the model see the same numbers, so after the warm-up and 30 steps the policies agree."""
    actions = []
    for position_cost in (1e-3, 1e3):
        model = _tiny(position_cost, reward_scale="auto", symlog_critic=True)
        model.learn(TINY["learning_starts"] + 30)
        with th.no_grad():
            actions.append(model.actor(th.linspace(-3, 3, 40).view(20, 2), deterministic=True))
    th.testing.assert_close(actions[0], actions[1], rtol=0, atol=1e-3)


def test_symlog_reward_column_encodes_the_targets_and_decodes_the_rollouts():
    """``DynamicsModel(symlog_reward=True)``: the target's reward column is ``symlog(r / kappa)``, the
    transition returns ``kappa symexp(y)``; ``kappa`` is a saved buffer; no such column without it."""
    model = DynamicsModel(2, 1, ensemble_size=2, net_arch=[8], normalize_targets=True, symlog_reward=True)
    model.reward_scale.fill_(2.0)
    obs, next_obs, rewards = th.randn(5, 2), th.randn(5, 2), th.tensor([-1e4, -3.0, 0.0, 0.5, 7.0])
    targets = model.targets(obs, next_obs, rewards)
    th.testing.assert_close(targets[:, :2], next_obs - obs)
    th.testing.assert_close(targets[:, 2], symlog(rewards / 2.0))
    new_obs, reward = model.transition(obs, targets)
    th.testing.assert_close(new_obs, next_obs)
    th.testing.assert_close(reward, rewards, rtol=1e-5, atol=1e-5)
    assert float(model.state_dict()["reward_scale"]) == 2.0
    with th.no_grad():
        mean, _ = model(model.inputs(obs, th.zeros(5, 1)))
        _, predicted = model.predict(obs, th.zeros(5, 1), deterministic=True)
    th.testing.assert_close(predicted, 2.0 * symexp(mean[..., 2]))
    plain = DynamicsModel(2, 1, ensemble_size=2, net_arch=[8])
    assert "reward_scale" not in plain.state_dict()
    th.testing.assert_close(plain.targets(obs, next_obs, rewards)[:, 2], rewards)
    with pytest.raises(ValueError, match="symlog_reward"):
        DynamicsModel(2, 1, learned_reward=False, symlog_reward=True)


def test_symlog_critic_regresses_symlog_targets_and_weighs_the_actor_per_state():
    """``symlog_critic``: the critics output ``y``, ``Q = symexp(y)``; critic loss
    ``0.5 sum_i mean (y_i - symlog(r / kappa + gamma (1 - d) (min_i Q'_i(s', a') - alpha log pi(a'|s'))))``;
    actor loss ``mean((alpha log pi(a|s) - min_i Q_i(s, a)) / (1 + |min_i Q_i(s, a)|))``. Checked on one
    update with learning rate 0, replaying the random draws."""
    model = _tiny(reward_scale=2.0, symlog_critic=True, learning_rate=0.0, gamma=0.9)
    model.learn(TINY["learning_starts"] + 5)  # fills the buffers; lr 0: the networks stay as initialised
    np_state, th_state = np.random.get_state(), th.get_rng_state()  # noqa: NPY002
    data = model.replay_buffer.sample(16)
    with th.no_grad():
        actions_pi, log_prob = model.actor.action_log_prob(data.observations)
        alpha = th.exp(model.log_ent_coef)
        next_actions, next_log_prob = model.actor.action_log_prob(data.next_observations)
        next_q = symexp(th.cat(model.critic_target(data.next_observations, next_actions), 1)).min(1)[0]
        target = symlog(data.rewards[:, 0] + 0.9 * (1 - data.dones[:, 0]) * (next_q - alpha * next_log_prob))
        outputs = model.critic(data.observations, data.actions)
        critic_loss = 0.5 * sum(((y[:, 0] - target) ** 2).mean() for y in outputs)
        q_pi = symexp(th.cat(model.critic(data.observations, actions_pi), 1)).min(1)[0]
        actor_loss = ((alpha * log_prob - q_pi) / (1 + q_pi.abs())).mean()
    rewards = model.replay_buffer.rewards[: model.replay_buffer.size(), 0]
    assert data.rewards.abs().max() <= np.abs(rewards).max() / 2.0 + 1e-4  # r / kappa, kappa = 2
    np.random.set_state(np_state)  # noqa: NPY002
    th.set_rng_state(th_state)
    model._train_symlog_sac(1, 16)
    logged = model.logger.name_to_value
    assert logged["train/critic_loss"] == pytest.approx(float(critic_loss), rel=1e-4)
    assert logged["train/actor_loss"] == pytest.approx(float(actor_loss), rel=1e-4)


def test_symlog_observations_feed_actor_and_critics_symlog_states(tmp_path):
    """``symlog_observations``: actor and critics read ``symlog(s)`` (``SymlogFlattenExtractor``), kept by
    save / load; the dynamics model still reads raw states."""
    model = _tiny()
    policy = model.policy
    obs = th.tensor([[-300.0, 0.5], [2.0, -7.0]])
    for extractor in (policy.actor.features_extractor, policy.critic.features_extractor):
        assert isinstance(extractor, SymlogFlattenExtractor)
        th.testing.assert_close(extractor(obs), symlog(obs))
    model.save(tmp_path / "mbpo.zip")
    assert isinstance(MBPO.load(tmp_path / "mbpo.zip").actor.features_extractor, SymlogFlattenExtractor)
    policy.save(tmp_path / "policy.pt")
    loaded = MBPOPolicy.load(tmp_path / "policy.pt")
    assert loaded.symlog_observations and isinstance(loaded.critic.features_extractor, SymlogFlattenExtractor)
    th.testing.assert_close(model.dynamics.inputs(obs, th.zeros(2, 1))[:, :2], obs)


# ------------------------------------------------------------------------------------------------------
# Learning: near the computed optimum, at three reward scales, ahead of SB3's SAC
# ------------------------------------------------------------------------------------------------------
BUDGET = 900  # env steps: the zoo entry's 60 random, then 840 learning
TOLERANCE = 0.5  # sum position^2 above the optimum (0), at every reward scale; doing nothing costs 30


@functools.cache
def _trained(position_cost: float, algo: str = "mbpo", seed: int = 0):
    """The zoo entry's MBPO (or SB3's SAC at its defaults) after ``BUDGET`` steps, on one thread."""
    env = make_vec_env(ENV_ID, n_envs=1, seed=seed, env_kwargs=dict(position_cost=position_cost))
    if algo == "mbpo":
        model = MBPO("MlpPolicy", env, seed=seed, **load_hyperparams("mbpo", ENV_ID))
    else:
        model = SAC("MlpPolicy", env, seed=seed)
    return model.learn(BUDGET)


def _cost(model, position_cost: float) -> float:
    """``sum position^2`` of one deterministic episode (``-return / c``)."""
    env = DoubleIntegrator(position_cost=position_cost)
    obs, _ = env.reset(seed=0)
    total = 0.0
    for _ in range(env.horizon):
        action, _ = model.predict(obs[None], deterministic=True)
        obs, reward, _, _, _ = env.step(action[0])
        total += reward
    return -total / position_cost


def _optimal_cost() -> float:
    solution = DoubleIntegrator().lqr()
    assert solution.within_bounds  # the LQR optimum is the optimum of the bounded task
    return -solution.optimal_return


def _check_near_optimum(position_cost: float, tolerance: float) -> float:
    cost = _cost(_trained(position_cost), position_cost)
    assert cost <= _optimal_cost() + tolerance, f"MBPO cost {cost:.3f} at c = {position_cost}"
    return cost


def test_mbpo_near_the_lqr_optimum():
    """c = 1, seed 0, 900 steps with the zoo entry: a cost within ``TOLERANCE`` of the LQR optimum (0),
    where doing nothing costs 30. Measured 0.084 (seeds 1 / 2: 0.097 / 0.095). Before the separate reward
    model (``model_reward="separate"``) the same entry cost 2.29 (1.46 / 1.03), and the entry before the
    issue-11 fixes (raw rewards, Gaussian model) 28 with ``reward_scale`` alone. ``OMP_NUM_THREADS=1 python
    -m pytest -q tests/mbpo/test_mbpo_lqr.py``; the figures: ``benchmarks/lqr_learning.py --algo mbpo sac
    --seeds 0 1 2 --steps 900 --position-costs 0.001 1 1000``."""
    _check_near_optimum(1.0, TOLERANCE)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("position_cost", [1e-3, 1e3])
def test_mbpo_near_the_lqr_optimum_at_other_reward_scales(position_cost):
    """Rewards x1e-3 and x1e3, seed 0, the same ``TOLERANCE``: measured 0.073 and 0.098 (seeds 1 / 2:
    0.068 / 0.047 and 0.096 / 0.066); before the separate reward model 8.9 and 1.2 (4.3 / 2.9 and 32.6 /
    0.25). ``pytest -m slow tests/mbpo/test_mbpo_lqr.py``. The fast suite checks the invariance that makes
    these runs differ from c = 1 by float rounding only
    (``test_reward_scale_and_symlog_make_learning_free_of_the_reward_units``)."""
    _check_near_optimum(position_cost, TOLERANCE)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_mbpo_beats_sb3_sac_at_the_same_budget():
    """The model-free base at the same 900 steps (SB3's SAC at its defaults), c = 1, seed 0: MBPO 0.084,
    SAC 1.57, SAC's best run of the 9 (c = 1e-3 / 1 / 1e3, seeds 0-2: SAC 1.57-1.4e6, median 29.8; MBPO
    0.047-0.098, ahead in all 9; benchmarks/README.md)."""
    mbpo, sac = _cost(_trained(1.0), 1.0), _cost(_trained(1.0, "sac"), 1.0)
    assert mbpo < sac, f"MBPO {mbpo:.3f} vs SAC {sac:.3f}"
