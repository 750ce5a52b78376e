"""STEVE's fused path (``fused_update``, issue 15) against the reference path: the same targets and the same
parameters after one update to float32 rounding, seeded determinism, and the switch through save / load."""

import copy

import pytest
import torch as th
from replay_batches import random_replay_batch
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.utils import set_random_seed
from torch import nn

from sb3_mb import STEVE
from sb3_mb.common.dynamics import DynamicsModel
from sb3_mb.common.ensemble import EnsembleMLP
from sb3_mb.registry import ALGOS
from sb3_mb.steve.fused import ensemble_mean

# The shared tests' sizes, three transition members and two reward members (N, M and L differ), and a large
# world-model L2 coefficient so that a fused update without it (or with it twice) shows.
TINY = dict(ALGOS["steve"].test_kwargs)
TINY["policy_kwargs"] = dict(TINY["policy_kwargs"], model_ensemble_size=dict(transition=3, reward=2))
TINY["model_weight_decay"] = 0.5


def _steve(**kwargs):
    return STEVE(make_vec_env("Pendulum-v1", n_envs=1, seed=0), seed=0, **{**TINY, **kwargs})


def _batch(model, batch_size=9, seed=0):
    policy = model.policy
    return random_replay_batch(policy.obs_dim, policy.action_dim, batch_size, seed, next_obs_scale=3)


def _state(model):
    """Every parameter and optimizer moment of the agent, by name."""
    out = {f"policy.{k}": v.clone() for k, v in model.policy.state_dict().items()}
    for name, opt in (("actor", model.actor.optimizer), ("critic", model.critic.optimizer)):
        for i, state in enumerate(opt.state.values()):
            out.update({f"{name}.{i}.{k}": v.clone() for k, v in state.items() if k != "step"})
    for i, state in enumerate(model.model_optimizer.state.values()):
        out.update({f"model.{i}.{k}": v.clone() for k, v in state.items() if k != "step"})
    return out


@pytest.mark.parametrize("activation", [nn.ReLU, nn.Tanh])
def test_ensemble_mean_equals_the_module_forward(activation):
    """Member by member with the bias in the product, both input layouts, the target normaliser undone."""
    th.manual_seed(0)
    mlp = DynamicsModel(
        3,
        2,
        learned_reward=False,
        normalize_targets=True,
        ensemble_size=3,
        net_arch=[8, 8],
        activation_fn=activation,
        deterministic=True,
    )
    mlp.fit_normalizers(th.randn(50, 5) * 4 + 1, th.randn(50, 3) * 2 - 3)
    with th.no_grad():
        for layer in mlp.linear_layers:
            layer.bias.normal_()
    workspace = {}
    for x in (th.randn(7, 5), th.randn(3, 7, 5)):
        for _ in range(2):  # the second call reuses the workspace
            th.testing.assert_close(ensemble_mean(mlp, x, workspace), mlp(x)[0], rtol=1e-5, atol=1e-6)
    assert workspace, "the hidden layers' buffers are kept"
    gaussian = EnsembleMLP(5, 2, 3, [8])
    th.testing.assert_close(ensemble_mean(gaussian, x), gaussian(x)[0])


@pytest.mark.parametrize("symlog", [False, True])
def test_fused_expansion_equals_the_reference(symlog):
    """Every field of the expansion, on a trained agent, with and without the symlog value representation
    (decoded rewards and values, clipped target-Q values)."""
    model = _steve(value_expansion_horizon=3, symlog_scale="auto" if symlog else None)
    model.learn(70)
    if symlog:
        assert model._return_bounds is not None
    data = _batch(model)
    model.fused_update = False
    reference = model.expansion(data)
    model.fused_update = True
    fused = model.expansion(data)
    for name, value in reference._asdict().items():
        th.testing.assert_close(getattr(fused, name), value, rtol=1e-5, atol=1e-5, msg=name)
    assert not th.allclose(fused.obs[:, 1, 0], fused.obs[:, 1, 1])  # the members' rollouts differ


@pytest.mark.parametrize("target_mode", ["steve", "mve"])
def test_fused_update_equals_the_reference(target_mode):
    """World-model updates (the L2 term as Adam's weight decay, fused Adam) and value updates (critic
    gradients of the policy loss skipped): every parameter and Adam moment equal after one train() call."""
    reference = _steve(target_mode=target_mode, fused_update=False, model_gradient_steps=2, gradient_steps=2)
    reference.learn(60)
    fused = copy.deepcopy(reference)
    fused.fused_update = True
    before = _state(reference)
    for model in (reference, fused):
        set_random_seed(1)  # torch's and numpy's global generators (SB3's replay buffer samples with numpy's)
        model.train(model.gradient_steps, model.batch_size)
    expected, got = _state(reference), _state(fused)
    assert expected.keys() == got.keys()
    for key, value in expected.items():
        th.testing.assert_close(got[key], value, rtol=1e-4, atol=1e-6, msg=key)
    moved = [
        key for key in expected if key.startswith("policy.") and not th.equal(expected[key], before[key])
    ]
    assert any("world_model.transition" in k for k in moved) and any("critic." in k for k in moved)
    assert any("actor." in k for k in moved)
    for optimizer in (fused.model_optimizer, fused.actor.optimizer, fused.critic.optimizer):
        assert optimizer.param_groups[0]["fused"]
    assert fused.model_optimizer.param_groups[0]["weight_decay"] == fused.model_weight_decay
    # back to the reference path: the reference optimizer again (no weight decay: the L2 term is in the loss)
    fused.fused_update = False
    fused.train(1, fused.batch_size)
    assert not fused.model_optimizer.param_groups[0]["fused"]
    assert fused.model_optimizer.param_groups[0]["weight_decay"] == 0.0


def test_fused_path_is_seeded_and_deterministic():
    first = _steve().learn(70)  # built and trained in turn: the seed sets torch's global generator
    second = _steve().learn(70)
    assert first.fused_update
    for key, value in first.policy.state_dict().items():
        assert th.equal(second.policy.state_dict()[key], value), key


def test_fused_update_round_trips_through_save_load(tmp_path):
    model = _steve(fused_update=False)
    model.learn(60)
    model.save(tmp_path / "steve.zip")
    loaded = STEVE.load(tmp_path / "steve.zip", env=make_vec_env("Pendulum-v1", n_envs=1, seed=1))
    assert loaded.fused_update is False
    loaded.fused_update = True
    loaded.learn(5, reset_num_timesteps=False)  # the fused path runs on a loaded agent
    loaded.save(tmp_path / "fused.zip")
    assert STEVE.load(tmp_path / "fused.zip").fused_update is True
