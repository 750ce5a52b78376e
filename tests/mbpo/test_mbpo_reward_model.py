"""MBPO's separate reward model ``r(s, a, s')`` (``model_reward="separate"``, issue 11): its layout, its use
in rollouts, save / load, and the precision near the goal that made it the double integrator's fix."""

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import Logger

from sb3_mb import MBPO
from sb3_mb.common.dynamics import DynamicsModel, RewardModel
from sb3_mb.common.ensemble import EnsembleTrainer
from sb3_mb.common.symlog import symexp, symlog
from sb3_mb.envs.linear import DoubleIntegrator
from sb3_mb.registry import ALGOS

ENV_ID = "sb3_mb/DoubleIntegrator-v0"


def test_reward_model_layout_targets_and_elite_mean():
    """Inputs ``[s, a, s']`` (symlog of each entry with ``symlog_inputs``), target ``symlog(r / kappa)``,
    :meth:`RewardModel.predict` the mean over the elites of ``kappa symexp(mean)``."""
    th.manual_seed(0)
    model = RewardModel(
        2, 1, ensemble_size=4, n_elites=2, net_arch=[8], symlog_reward=True, symlog_inputs=True
    )
    model.reward_scale.fill_(3.0)
    model.set_elites([3, 1])
    obs, actions, next_obs = th.randn(6, 2) * 50, th.rand(6, 1), th.randn(6, 2) * 50
    x = model.inputs(obs, actions, next_obs)
    th.testing.assert_close(x, symlog(th.cat([obs, actions, next_obs], -1)))
    rewards = th.tensor([-1e4, -3.0, 0.0, 0.5, 7.0, -0.01])
    th.testing.assert_close(model.targets(rewards)[:, 0], symlog(rewards / 3.0))
    th.testing.assert_close(model.decode(model.targets(rewards)), rewards, rtol=1e-5, atol=1e-5)
    with th.no_grad():
        mean, _ = model(x)
    expected = (3.0 * symexp(mean[[3, 1], :, 0])).mean(0)
    th.testing.assert_close(model.predict(obs, actions, next_obs), expected)
    assert "reward_scale" in model.state_dict()
    plain = RewardModel(2, 1, ensemble_size=2, net_arch=[8])
    assert "reward_scale" not in plain.state_dict() and plain.in_dim == 5 and plain.out_dim == 1
    th.testing.assert_close(plain.inputs(obs, actions, next_obs), th.cat([obs, actions, next_obs], -1))
    th.testing.assert_close(plain.targets(rewards)[:, 0], rewards)


def _tiny(model_reward: str = "separate", **kwargs) -> MBPO:
    env = make_vec_env(ENV_ID, n_envs=1, seed=0)
    policy_kwargs = dict(
        net_arch=[16],
        model_net_arch=[16],
        model_ensemble_size=3,
        model_n_elites=2,
        model_normalize_targets=True,
        model_symlog_reward=True,
        model_reward=model_reward,
        symlog_observations=True,
    )
    model = MBPO(
        "MlpPolicy",
        env,
        seed=0,
        **{
            **ALGOS["mbpo"].test_kwargs,
            "learning_starts": 30,
            "model_train_freq": 30,
            "epoch_length": 30,
            "reward_scale": "auto",
            "model_loss": "mse",
            "policy_kwargs": policy_kwargs,
            **kwargs,
        },
    )
    model.set_logger(Logger(folder=None, output_formats=[]))
    return model


def test_separate_reward_model_is_trained_and_gives_the_rollout_rewards(tmp_path):
    """With ``model_reward="separate"`` the transition model has no reward column; the reward model trains on
    the real ``(s, a, s', r)`` with ``kappa`` of ``reward_scale`` and reads ``symlog`` inputs
    (``symlog_observations``); every model transition's reward is its prediction on that transition; save /
    load keep it and its optimizer."""
    model = _tiny()
    model.learn(31)
    dynamics, reward_model = model.dynamics, model.reward_model
    assert not dynamics.learned_reward and dynamics.out_dim == 2 and reward_model is not None
    assert reward_model.symlog_inputs
    assert float(reward_model.reward_scale) == pytest.approx(model._reward_scale)
    obs, actions, next_obs, rewards = model.replay_buffer.real_transitions()
    targets = symlog(rewards / model._reward_scale)
    assert float(reward_model.target_normalizer.std[0]) == pytest.approx(float(targets.std()), rel=0.3)
    # the rollout rewards are the reward model's on the model's own transitions
    buffer = model.replay_buffer.model_buffer
    n = buffer.size()
    assert n > 0
    stored = (buffer.observations, buffer.actions, buffer.next_observations)
    rollout = [th.as_tensor(x[:n, 0]) for x in stored]
    th.testing.assert_close(
        th.as_tensor(buffer.rewards[:n, 0]), reward_model.predict(*rollout), rtol=1e-5, atol=1e-5
    )
    assert np.isfinite(model.logger.name_to_value["model/reward_holdout_loss"])
    predicted = reward_model.predict(obs, actions, next_obs)
    model.save(tmp_path / "mbpo.zip")
    loaded = MBPO.load(tmp_path / "mbpo.zip", env=make_vec_env(ENV_ID, n_envs=1, seed=1))
    assert loaded.policy.model_reward == "separate" and loaded.reward_model is not None
    th.testing.assert_close(loaded.reward_model.predict(obs, actions, next_obs), predicted)
    saved, restored = model.reward_optimizer.state_dict(), loaded.reward_optimizer.state_dict()
    th.testing.assert_close(restored["state"][0]["exp_avg"], saved["state"][0]["exp_avg"])
    assert loaded.model_env.reward_fn is not None
    loaded.learn(31, reset_num_timesteps=False)  # resumes


def test_joint_reward_is_the_default_and_bad_names_are_refused():
    model = _tiny("joint")
    assert model.reward_model is None and model.dynamics.learned_reward and model.model_env.reward_fn is None
    with pytest.raises(ValueError, match="model_reward"):
        _tiny("state")


def _data(n_near: int, seed: int):
    """Two random episodes of the double integrator (positions up to hundreds) and ``n_near`` transitions
    from states ``N(0, 0.3^2)``: what MBPO's buffer holds once the policy stays near the goal."""
    env, rng = DoubleIntegrator(), np.random.default_rng(seed)
    states, actions = [], []
    for _ in range(2):
        s = np.array([1.0, 0.0])
        for _ in range(env.horizon):
            a = rng.uniform(-1, 1, 1)
            states.append(s), actions.append(a)
            s = env.A @ s + env.B[:, 0] * a[0]
    states = np.concatenate([np.array(states), rng.normal(0.0, 0.3, (n_near, 2))])
    actions = np.concatenate([np.array(actions), rng.uniform(-1, 1, (n_near, 1))])
    next_states = states @ env.A.T + actions * env.B[:, 0]
    out = [th.as_tensor(x, dtype=th.float32) for x in (states, actions, next_states)]
    return (*out, -(out[2][:, 0] ** 2))


def test_separate_symlog_reward_model_resolves_the_goal_better_than_the_joint_column():
    """The reason for the option: after fitting on far and near data alike (MBPO's trainer, ``[64, 64]``
    members, MSE, ``kappa`` 0.55), the mean reward error where ``|position'| < 0.2`` (mean ``|r|`` 0.013):
    measured 0.055 for the joint column, 0.015 for the separate model on symlog inputs (and 0.028 on raw
    inputs). The test asks for half the joint column's error."""
    kappa = 0.55
    train, test = _data(500, 0), _data(2000, 1)

    def fit(model, inputs, targets):
        th.manual_seed(0)
        trainer = EnsembleTrainer(model, batch_size=32, max_epochs=100, loss="mse", weight_decay=5e-5)
        trainer.train(inputs, targets, generator=th.Generator().manual_seed(0))
        return model

    kwargs = dict(ensemble_size=5, net_arch=[64, 64], n_elites=3, deterministic=True, normalize_targets=True)
    joint = DynamicsModel(2, 1, symlog_reward=True, **kwargs)
    joint.reward_scale.fill_(kappa)
    obs, actions, next_obs, rewards = train
    fit(joint, joint.inputs(obs, actions), joint.targets(obs, next_obs, rewards))
    separate = RewardModel(2, 1, symlog_reward=True, symlog_inputs=True, **kwargs)
    separate.reward_scale.fill_(kappa)
    fit(separate, separate.inputs(obs, actions, next_obs), separate.targets(rewards))

    obs, actions, next_obs, rewards = test
    near = next_obs[:, 0].abs() < 0.2
    with th.no_grad():
        joint_rewards = joint.predict(obs, actions, joint.elite_idx, deterministic=True)[1].mean(0)
    joint_error = (joint_rewards - rewards)[near].abs().mean()
    separate_error = (separate.predict(obs, actions, next_obs) - rewards)[near].abs().mean()
    assert separate_error < 0.5 * joint_error, (float(separate_error), float(joint_error))
