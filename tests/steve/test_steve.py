"""STEVE (sb3_mb.steve): the target rule, the batched expansion against a slow loop, target modes,
exploration, save/load, errors and learning on the point mass."""

import functools
import json
import re
import zipfile

import numpy as np
import pytest
import torch as th
from point_mass import PointMass as _PointMass
from replay_batches import random_replay_batch
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.type_aliases import ReplayBufferSamples

from sb3_mb import STEVE
from sb3_mb.common.ensemble import random_member_split
from sb3_mb.registry import ALGOS
from sb3_mb.steve import (
    TARGET_MODES,
    GreedyCSVCallback,
    candidate_samples,
    candidate_weights,
    greedy_csv_line,
    inverse_variance_weights,
)

# The shared tests' sizes (sb3_mb.registry), with three transition members so that N, M and L differ.
TINY = dict(ALGOS["steve"].test_kwargs)
TINY["policy_kwargs"] = dict(TINY["policy_kwargs"], model_ensemble_size=dict(transition=3, reward=2))

# Doing nothing returns -20.6 on average over evaluation seeds 100-149, a uniformly random policy -25.4;
# heading straight for the origin about -2.
PointMass = functools.partial(_PointMass, step_size=0.2, n_steps=25)


def _tiny_steve(**kwargs):
    params = dict(TINY)
    params.update(kwargs)
    return STEVE(make_vec_env("Pendulum-v1", n_envs=1, seed=0), seed=0, **params)


def _random_batch(model, batch_size=6, seed=0):
    """A replay-like batch with some terminal transitions (the done model and c_0 = 1 - d matter)."""
    return random_replay_batch(model.policy.obs_dim, model.policy.action_dim, batch_size, seed)


# ------------------------------------------------------------------------------------------ the target rule
def test_inverse_variance_target_known_case():
    means = th.tensor([[1.0, 2.0, 3.0]])
    variances = th.tensor([[1.0, 2.0, 4.0]])
    weights = inverse_variance_weights(variances)
    th.testing.assert_close(weights, th.tensor([[1.0, 0.5, 0.25]]) / 1.75)
    th.testing.assert_close((weights * means).sum(-1), th.tensor([(1.0 + 1.0 + 0.75) / 1.75]))
    # one candidate with zero variance: the target is that candidate
    weights = inverse_variance_weights(th.tensor([[1.0, 0.0, 4.0]]))
    th.testing.assert_close((weights * means).sum(-1), th.tensor([2.0]), rtol=0, atol=1e-6)
    # invalid candidates get no weight
    weights = inverse_variance_weights(variances, valid=th.tensor([True, False, True]))
    th.testing.assert_close(weights, th.tensor([[1.0, 0.0, 0.25]]) / 1.25)


def test_candidate_samples_hand_computed():
    """Two frames, one sample: T_00 = r_0 + g c_0 Q_0, T_01 = r_0 + g c_0 r_1 + g^2 c_1 Q_1,
    T_11 = r_1 + g (c_1 / c_0) Q_1."""
    gamma, r0, r1, c0, c1, q0, q1 = 0.9, 1.0, 2.0, 0.8, 0.6, 10.0, 20.0
    samples = candidate_samples(
        th.tensor([r0, r1]).view(1, 2, 1, 1),
        th.tensor([c0, c1]).view(1, 2, 1),
        th.tensor([q0, q1]).view(1, 2, 1, 1),
        gamma,
    )
    assert samples.shape == (1, 2, 2, 1)
    expected = th.tensor(
        [
            [r0 + gamma * c0 * q0, r0 + gamma * c0 * r1 + gamma**2 * c1 * q1],
            [0.0, r1 + gamma * c1 / c0 * q1],
        ]
    )
    th.testing.assert_close(samples[0, :, :, 0], expected, rtol=1e-6, atol=1e-6)


def test_candidate_weights_per_mode():
    variances = th.rand(5, 4, 4) + 0.1
    valid = th.ones(4, 4).triu().bool()
    for mode in ("steve", "mve", "mve_mean", "mve_lambda"):
        weights = candidate_weights(mode, variances, td_lambda=0.25)
        assert weights.shape == (5, 4, 4)
        assert (weights[:, ~valid] == 0).all(), mode
        th.testing.assert_close(weights[:, 0].sum(-1), th.ones(5))
    th.testing.assert_close(
        candidate_weights("steve", variances)[:, 0],
        (1 / (variances[:, 0] + 1e-8)) / (1 / variances[:, 0]).sum(-1, True),
    )
    assert (candidate_weights("mve", variances)[..., -1] == 1).all()
    th.testing.assert_close(candidate_weights("mve_mean", variances)[:, 0], th.full((5, 4), 0.25))
    th.testing.assert_close(candidate_weights("mve_mean", variances)[:, 2, 2:], th.full((5, 2), 0.5))
    lam = th.tensor([0.75, 0.75 * 0.25, 0.75 * 0.25**2, 0.25**3])
    th.testing.assert_close(candidate_weights("mve_lambda", variances)[:, 0], lam.expand(5, 4))
    with pytest.raises(ValueError, match="model modes"):
        candidate_weights("ddpg", variances)


# ------------------------------------------------------------------------------------------ the batched pass
def _reference_expansion(model, data):
    """Source-0 candidates, one transition member / reward member / Q member at a time (slow loop)."""
    wm, actor, q_target = model.world_model, model.actor, model.critic_target
    n_members, m_members, l_members = (
        wm.transition.ensemble_size,
        wm.reward.ensemble_size,
        q_target.ensemble_size,
    )
    gamma, horizon = model.gamma, model.value_expansion_horizon
    means, variances = [], []
    with th.no_grad():
        for b in range(data.observations.shape[0]):
            per_k = [[] for _ in range(horizon + 1)]
            for n in range(n_members):
                member = th.tensor([n])
                state = data.next_observations[b : b + 1]
                states, rewards, cont = [state], [[data.rewards[b, 0]] * m_members], [1.0 - data.dones[b, 0]]
                for _ in range(horizon):
                    action = actor(state)
                    nxt = wm.transition.predict(state[None], action[None], member, deterministic=True)[0][0]
                    aux = th.cat([state, action, nxt], -1)[None]
                    p_done = th.sigmoid(wm.done(aux, member)[0][0, 0, 0])
                    rewards.append([wm.reward(aux, th.tensor([m]))[0][0, 0, 0] for m in range(m_members)])
                    cont.append(cont[-1] * (1 - p_done))
                    state = nxt
                    states.append(state)
                alive_before = [1.0, *cont[:-1]]
                for k in range(horizon + 1):
                    q_in = th.cat([states[k], actor(states[k])], -1)[None]
                    for m in range(m_members):
                        ret = sum(gamma**t * alive_before[t] * rewards[t][m] for t in range(k + 1))
                        for l_ in range(l_members):
                            q = q_target(q_in, th.tensor([l_]))[0][0, 0, 0]
                            per_k[k].append(ret + gamma ** (k + 1) * cont[k] * q)
            samples = th.stack([th.stack([th.as_tensor(x) for x in row]) for row in per_k])  # (F, S)
            means.append(samples.mean(-1))
            variances.append(samples.var(-1, unbiased=False))
    return th.stack(means), th.stack(variances)


def test_batched_expansion_equals_slow_loop():
    model = _tiny_steve(value_expansion_horizon=3)
    model.learn(80)  # trained a little, so the nets are not at their initialisation
    data = _random_batch(model)
    exp = model.expansion(data)
    n, m, l_ = 3, 2, 2
    assert exp.samples.shape == (6, 4, 4, n * m * l_)
    assert (
        exp.obs.shape == (6, 4, n, 3)
        and exp.actions.shape == (6, 4, n, 1)
        and exp.continues.shape == (6, 4, n)
    )
    ref_means, ref_vars = _reference_expansion(model, data)
    th.testing.assert_close(exp.means[:, 0], ref_means, rtol=1e-5, atol=1e-5)
    th.testing.assert_close(exp.variances[:, 0], ref_vars, rtol=1e-4, atol=1e-5)
    # terminal real transitions: every candidate is the real reward, without variance
    terminal = data.dones[:, 0] == 1
    th.testing.assert_close(exp.targets[terminal, 0], data.rewards[terminal, 0])
    assert (exp.continues[terminal] == 0).all()
    # the members' rollouts differ (each member followed along its own rollout)
    assert not th.allclose(exp.obs[:, 1, 0], exp.obs[:, 1, 1])


def test_target_modes_use_their_weights():
    data = None
    targets = {}
    for mode in ("steve", "mve", "mve_mean", "mve_lambda"):
        model = _tiny_steve(target_mode=mode)
        model.learn(60)
        data = _random_batch(model) if data is None else data
        exp = model.expansion(data)
        th.testing.assert_close(exp.targets, (exp.weights * exp.means).sum(-1))
        targets[mode] = exp.targets[:, 0]
        if mode == "steve":
            th.testing.assert_close(exp.weights[:, 0], inverse_variance_weights(exp.variances[:, 0]))
        if mode == "mve":
            th.testing.assert_close(exp.targets[:, 0], exp.means[:, 0, -1])
        if mode == "mve_mean":
            th.testing.assert_close(exp.targets[:, 0], exp.means[:, 0].mean(-1))
    assert not th.allclose(targets["steve"], targets["mve"])

    ddpg = _tiny_steve(target_mode="ddpg")
    assert ddpg.world_model is None and ddpg.model_env is None
    ddpg.learn(60)
    assert ddpg._n_model_updates == 0
    with th.no_grad():
        q_in = th.cat([data.next_observations, ddpg.actor(data.next_observations)], -1)
        next_q = ddpg.critic_target(q_in)[0][..., 0]  # (L, batch)
    expected = data.rewards[:, 0] + ddpg.gamma * (1 - data.dones[:, 0]) * next_q.mean(0)
    th.testing.assert_close(ddpg.ddpg_targets(data), expected)


def test_mve_tdk_trick_weights_imagined_states_by_reach():
    """All real transitions terminal: the imagined states are never reached, so the TD-k loss is the
    real-state loss (target r) averaged over the H + 1 sources."""
    model = _tiny_steve(target_mode="mve", value_expansion_horizon=3)
    model.learn(60)
    data = _random_batch(model)
    data = data._replace(dones=th.ones_like(data.dones))
    th.manual_seed(5)
    loss = model._critic_loss(data, {})
    th.manual_seed(5)
    rows = random_member_split(6, model.critic.ensemble_size)
    q = model.critic(th.cat([data.observations[rows], data.actions[rows]], -1))[0][..., 0]
    expected = (0.5 * (q - data.rewards[rows, 0]).pow(2)).mean() / 4
    th.testing.assert_close(loss, expected)
    # with live transitions the imagined states count: the loss differs from the one-source rule
    live = data._replace(dones=th.zeros_like(data.dones))
    th.manual_seed(5)
    tdk = model._critic_loss(live, {})
    model.target_mode = "steve"
    th.manual_seed(5)
    assert not th.isclose(tdk, model._critic_loss(live, {}))


# ------------------------------------------------------------------------------------------ algorithm
def test_learn_logs_and_pretrains_once():
    model = _tiny_steve()
    model.learn(100)
    logged = model.logger.name_to_value
    for key in (
        "model/transition_loss",
        "model/reward_loss",
        "model/done_loss",
        "train/critic_loss",
        "train/actor_loss",
        "train/model_usage",
        *(f"train/steve_weight_{k}" for k in range(4)),
    ):
        assert key in logged, key
    weights = [logged[f"train/steve_weight_{k}"] for k in range(4)]
    assert sum(weights) == pytest.approx(1.0, abs=1e-5)
    assert logged["train/model_usage"] == pytest.approx(1 - weights[0], abs=1e-6)
    n_train_calls = 100 - 50
    assert model._n_model_updates == 10 + n_train_calls  # pretraining once, then one update per env step
    assert model._n_updates == n_train_calls


def test_target_q_is_a_hard_copy_every_interval():
    model = _tiny_steve(target_update_interval=7)
    model.learn(50 + 7)  # 7 updates: copied at the 7th
    for p, p_target in zip(model.critic.parameters(), model.critic_target.parameters(), strict=True):
        assert th.equal(p, p_target)
    model.learn(3, reset_num_timesteps=False)
    assert any(
        not th.equal(p, p_target)
        for p, p_target in zip(model.critic.parameters(), model.critic_target.parameters(), strict=True)
    )


def _collected_actions(model, obs):
    """What ``collect_rollouts`` would take after the warm-up: ``(env action, buffer action)``."""
    model._last_obs = obs
    model.num_timesteps = model.learning_starts
    return model._sample_action(model.learning_starts, None, n_envs=obs.shape[0])


@pytest.mark.parametrize(
    "target_mode, explore_chance, expected",
    [("steve", None, 0.0), ("mve", None, 0.0), ("ddpg", None, 0.05), ("steve", 0.2, 0.2), ("ddpg", 0.0, 0.0)],
)
def test_exploration_rate_per_mode(target_mode, explore_chance, expected):
    """Default: 5 % per dimension for DDPG only (the paper's intent), greedy after the warm-up in the model
    modes (the released code's behaviour there); an explicit value applies in any mode. predict is greedy."""
    model = _tiny_steve(target_mode=target_mode, explore_chance=explore_chance)
    assert model.explore_chance == expected
    obs = np.random.default_rng(0).normal(size=(4000, 3)).astype(np.float32)
    greedy, _ = model.predict(obs, deterministic=True)
    np.testing.assert_array_equal(model.predict(obs, deterministic=False)[0], greedy)
    action, buffer_action = _collected_actions(model, obs)
    np.testing.assert_allclose(action, 2.0 * buffer_action, atol=1e-6)  # Pendulum's bounds are [-2, 2]
    changed = greedy != action
    assert abs(changed.mean() - expected) < 5 * np.sqrt(expected * (1 - expected) / changed.size) + 1e-12
    if expected > 0:  # the explored dimensions are tanh(pretanh + N(0, 1))
        with th.no_grad():
            pretanh = model.actor.pretanh(th.as_tensor(obs)).numpy()
        noise = np.arctanh(np.clip(buffer_action, -1 + 1e-6, 1 - 1e-6))[changed] - pretanh[changed]
        assert 0.8 < noise.std() < 1.2 and abs(noise.mean()) < 0.2, (noise.mean(), noise.std())
    # the warm-up stays uniform over the action space
    model.num_timesteps = 0
    warmup, _ = model._sample_action(model.learning_starts, None, n_envs=4000)
    assert warmup.min() < -1.9 and warmup.max() > 1.9 and abs(warmup.mean()) < 0.1


def test_save_load_keeps_world_model_and_targets(tmp_path):
    model = _tiny_steve()
    model.learn(80)
    data = _random_batch(model)
    before = model.expansion(data)
    model.save(tmp_path / "steve.zip")
    saved = json.loads(zipfile.ZipFile(tmp_path / "steve.zip").read("data"))
    for unused in ("policy_delay", "target_policy_noise", "target_noise_clip", "q_ensemble_size"):
        assert unused not in saved, unused
    loaded = STEVE.load(tmp_path / "steve.zip")
    assert loaded.world_model is loaded.policy.world_model
    for key, value in model.world_model.state_dict().items():
        assert th.equal(loaded.world_model.state_dict()[key], value), key
    for key, value in model.policy.state_dict().items():
        assert th.equal(loaded.policy.state_dict()[key], value), key
    after = loaded.expansion(data)
    th.testing.assert_close(after.targets, before.targets, rtol=0, atol=0)
    assert loaded._model_pretrained and loaded.target_mode == "steve"
    assert loaded.model_optimizer.state_dict()["state"], "the world-model optimizer state is saved"


def test_policy_kwargs_sizes():
    """model_net_arch as one list for the three nets or a dict of some of them; model_ensemble_size as N = M
    or a dict; the done ensemble follows the transition's N."""
    model = _tiny_steve(policy_kwargs=dict(model_net_arch=[8, 8], model_ensemble_size=3, n_critics=5))
    wm = model.world_model
    assert wm.transition.net_arch == wm.reward.net_arch == wm.done.net_arch == [8, 8]
    assert wm.transition.ensemble_size == wm.reward.ensemble_size == wm.done.ensemble_size == 3
    assert model.critic.ensemble_size == 5 and model.policy.net_arch == [128, 128, 128]
    model = _tiny_steve(
        policy_kwargs=dict(model_net_arch=dict(reward=[8]), model_ensemble_size=dict(transition=2, reward=5))
    )
    wm = model.world_model
    assert (wm.transition.net_arch, wm.reward.net_arch, wm.done.net_arch) == ([512] * 7, [8], [128] * 3)
    assert (wm.transition.ensemble_size, wm.reward.ensemble_size, wm.done.ensemble_size) == (2, 5, 2)
    assert (
        _tiny_steve(policy_kwargs=dict(model_net_arch=dict(transition=[8]))).world_model.reward.net_arch
        == [128] * 3
    )
    with pytest.raises(ValueError, match="model_net_arch"):
        _tiny_steve(policy_kwargs=dict(model_net_arch=dict(transitions=[8])))
    with pytest.raises(ValueError, match="model_ensemble_size"):
        _tiny_steve(policy_kwargs=dict(model_ensemble_size=dict(done=2)))


def test_target_mode_decides_the_world_model():
    """use_world_model is derived from target_mode: a consistent value is accepted, a contradicting one is an
    error, and "ddpg" saves and loads without a world model."""
    ddpg = _tiny_steve(target_mode="ddpg")
    assert ddpg.policy.world_model is None and ddpg.model_optimizer is None
    assert "use_world_model" not in ddpg.policy_kwargs  # declared once: by target_mode
    kwargs = dict(TINY["policy_kwargs"], use_world_model=False)
    assert _tiny_steve(target_mode="ddpg", policy_kwargs=kwargs).world_model is None
    with pytest.raises(ValueError, match="use_world_model=False contradicts target_mode='steve'"):
        _tiny_steve(policy_kwargs=kwargs)
    with pytest.raises(ValueError, match="use_world_model=True contradicts target_mode='ddpg'"):
        _tiny_steve(target_mode="ddpg", policy_kwargs=dict(TINY["policy_kwargs"], use_world_model=True))


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ValueError, match="steve, mve, mve_mean, mve_lambda, ddpg"):
        _tiny_steve(target_mode="bogus")
    with pytest.raises(ValueError, match="action space"):
        STEVE("MlpPolicy", "CartPole-v1")
    with pytest.raises(ValueError, match="value_expansion_horizon"):
        _tiny_steve(value_expansion_horizon=0)
    with pytest.raises(ValueError, match="explore_chance"):
        _tiny_steve(explore_chance=1.5)
    assert TARGET_MODES == ("steve", "mve", "mve_mean", "mve_lambda", "ddpg")


# Measured at 500 env steps, seeds 0 / 1, mean of 10 evaluation episodes (no-op -20.6, random -25.4), the
# default exploration (ddpg 5 %, the model modes greedy): steve -4.2 / -3.6, mve -7.8 / -6.3, mve_mean
# -4.3 / -3.5, mve_lambda -3.6 / -3.0, ddpg -3.1 / -3.2. Wall time 1-15 s per mode on one (shared) thread.
POINT_MASS_KWARGS = dict(
    learning_starts=150,
    batch_size=64,
    gradient_steps=1,
    target_update_interval=100,
    gamma=0.95,
    learning_rate=1e-3,
    model_batch_size=64,
    model_gradient_steps=1,
    model_pretrain_steps=200,
    model_learning_rate=1e-3,
    policy_kwargs=dict(
        net_arch=[64, 64], model_net_arch=dict(transition=[64, 64], reward=[32, 32], done=[32, 32])
    ),
)


def _point_mass_imagination_errors(model, n_states=64):
    """H imagined steps (``model.expansion``) from ``n_states`` states in ``[-1.5, 1.5]^2`` against the true
    point mass under the same policy (``x' = clip(x + 0.2 clip(a), -2, 2)``, reward ``-||x'||``): the mean
    absolute state error and reward error, over members (and reward members), frames and states."""
    states = np.random.default_rng(0).uniform(-1.5, 1.5, (n_states, 2))
    obs = th.as_tensor(states, dtype=th.float32)
    zeros = th.zeros(n_states, 1)
    exp = model.expansion(ReplayBufferSamples(obs, th.zeros(n_states, 2), obs, zeros, zeros))
    true, state_errors, reward_errors = states, [], []
    for frame in range(1, exp.obs.shape[1]):
        with th.no_grad():
            action = model.actor(th.as_tensor(true, dtype=th.float32)).numpy().astype(np.float64)
            imagined = model._model_rewards(
                exp.obs[:, frame - 1], exp.actions[:, frame - 1], exp.obs[:, frame]
            )
        true = np.clip(true + 0.2 * np.clip(action, -1, 1), -2, 2)
        state_errors.append(np.abs(exp.obs[:, frame].numpy() - true[:, None]).mean())
        reward_errors.append(np.abs(imagined.numpy() + np.linalg.norm(true, axis=-1)[:, None, None]).mean())
    return float(np.mean(state_errors)), float(np.mean(reward_errors))


@pytest.mark.parametrize("target_mode", TARGET_MODES)
def test_learns_point_mass(target_mode):
    """500 env steps on PointMass: mean return >= -10 over 10 episodes (no-op -20.6, optimum about -2); in the
    model modes, H = 3 imagined steps from 64 states within 0.1 of the true states and rewards.

    The return does not tell a working model from a broken one here: with the transition's predictions zeroed
    (``next_obs = obs`` in ``DynamicsModel.transition``) the modes return -4.3 / -8.8 / -4.1 / -3.6 (steve,
    mve, mve_mean, mve_lambda at seed 0, against -4.2 / -7.8 / -4.3 / -3.6 working; the ddpg mode -3.1,
    SB3's DDPG at its defaults -3.2): value learning, not the model, limits them at this budget. Hence the
    check of the imagined rollouts (TODO with the break: state error, reward error)."""
    env = make_vec_env(PointMass, n_envs=1, seed=0)
    model = STEVE("MlpPolicy", env, seed=0, target_mode=target_mode, **POINT_MASS_KWARGS)
    model.learn(500)
    mean_return, _ = evaluate_policy(model, make_vec_env(PointMass, n_envs=1, seed=100), n_eval_episodes=10)
    assert mean_return >= -10, mean_return
    if target_mode != "ddpg":
        assert model.logger.name_to_value["train/model_usage"] > 0
        state_error, reward_error = _point_mass_imagination_errors(model)
        assert state_error <= 0.1 and reward_error <= 0.1, (state_error, reward_error)


def test_greedy_csv_callback_writes_the_original_format(tmp_path):
    path = tmp_path / "log" / "exp.greedy.csv"
    eval_env = make_vec_env("Pendulum-v1", n_envs=1, seed=5)
    callback = GreedyCSVCallback(eval_env, str(path), eval_freq=40, n_eval_episodes=2, epoch_every=10)
    model = _tiny_steve()
    model.learn(80, callback=callback)
    lines = path.read_text().splitlines()
    assert len(lines) == 4  # evaluations at 40 and 80 steps, two episodes each
    for line in lines:
        assert re.fullmatch(r"\d+\.\d{6},\d+,\d+,-?\d+\.\d{6}", line), line
    hours, epoch, frames, _ = lines[-1].split(",")
    # the callback runs before the update of its step: 29 value updates (steps 51-79) -> epoch 2
    assert int(frames) == 80 and int(epoch) == 29 // 10 and float(hours) < 1
    assert greedy_csv_line(1.5, 2, 3000, -12.25) == "1.500000,2,3000,-12.250000\n"


def test_defaults_are_the_paper_settings():
    """Buckman et al. 2018, Sec. 4: the constructor's and the policy's defaults are the MuJoCo settings."""
    model = STEVE("Pendulum-v1", seed=0)
    assert (model.target_mode, model.value_expansion_horizon, model.gamma) == ("steve", 3, 0.99)
    assert (model.batch_size, model.gradient_steps, model.learning_starts) == (512, 4, 10_000)
    assert (model.target_update_interval, model.tau, model.learning_rate) == (500, 1.0, 3e-4)
    assert (model.model_batch_size, model.model_gradient_steps) == (512, 4)
    assert model.model_pretrain_steps == 10_000
    assert model.explore_chance == 0.0 and model.policy_reg_coef == 1e-3
    assert model.policy.net_arch == [128, 128, 128] and model.critic.net_arch == [128, 128, 128]
    assert model.critic.ensemble_size == 4
    wm = model.world_model
    assert (wm.transition.ensemble_size, wm.transition.net_arch) == (4, [512] * 7)
    assert not wm.transition.learned_reward
    assert (wm.reward.ensemble_size, wm.reward.net_arch) == (4, [128] * 3)
    assert (wm.done.ensemble_size, wm.done.net_arch) == (4, [128] * 3)
    assert model.model_weight_decay == 1e-4 and model.model_optimizer.defaults["lr"] == 3e-4
    for net in (model.actor.net[1], model.critic.activation, wm.transition.activation, wm.done.activation):
        assert isinstance(net, th.nn.ReLU)


def test_absurd_learning_rate_is_a_clear_error_naming_the_loss_not_nan_weights():
    for overrides, loss in [
        (dict(learning_rate=1e30), "(critic|actor) loss"),
        (dict(model_learning_rate=1e30), "world-model loss"),
    ]:
        model = _tiny_steve(**overrides)
        with pytest.raises(FloatingPointError, match=rf"^STEVE: {loss} is not finite at (model )?update \d+"):
            model.learn(300)
        assert all(th.isfinite(p).all() for p in model.policy.parameters()), "the weights turned NaN"
