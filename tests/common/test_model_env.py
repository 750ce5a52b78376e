"""Learned model as a batched environment (sb3_mb.common.model_env) and termination functions."""

import pytest
import torch

from sb3_mb.common.dynamics import DynamicsModel
from sb3_mb.common.ensemble import EnsembleMLP
from sb3_mb.common.model_env import ModelEnv
from sb3_mb.common.termination import (
    get_termination_fn,
    hopper_termination,
    inverted_pendulum_termination,
    no_termination,
)

OBS_DIM, ACT_DIM, E = 3, 2, 5


def _model(deterministic=False, n_elites=None, seed=0):
    torch.manual_seed(seed)
    model = DynamicsModel(
        OBS_DIM, ACT_DIM, ensemble_size=E, net_arch=[16, 16], deterministic=deterministic, n_elites=n_elites
    )
    model.eval()
    return model


def _rollout(env, start, n_steps, seed_actions=0):
    g = torch.Generator().manual_seed(seed_actions)
    env.reset(start)
    outs = []
    for _ in range(n_steps):
        act = torch.rand(start.shape[0], ACT_DIM, generator=g) * 2 - 1
        outs.append(env.step(act))
    return outs


def test_shapes_and_seeded_determinism():
    model = _model(n_elites=3)
    start = torch.randn(17, OBS_DIM)

    def run(seed):
        env = ModelEnv(model, generator=torch.Generator().manual_seed(seed))
        return _rollout(env, start, 4)

    a, b, c = run(1), run(1), run(2)
    for (obs, rew, term), (obs2, rew2, term2) in zip(a, b, strict=True):
        assert torch.equal(term, term2)
        assert obs.shape == (17, OBS_DIM) and rew.shape == (17,) and term.shape == (17,)
        assert term.dtype == torch.bool
        torch.testing.assert_close(obs, obs2, rtol=0, atol=0)
        torch.testing.assert_close(rew, rew2, rtol=0, atol=0)
    assert not torch.equal(a[-1][0], c[-1][0])


def test_all_members_propagation_matches_each_member():
    model = _model(deterministic=True)
    start = torch.randn(6, OBS_DIM)
    env = ModelEnv(model, propagation="all")
    obs = env.reset(start)
    assert obs.shape == (E, 6, OBS_DIM)
    acts = torch.randn(E, 6, ACT_DIM)
    next_obs, rew, term = env.step(acts)
    assert next_obs.shape == (E, 6, OBS_DIM) and rew.shape == (E, 6) and term.shape == (E, 6)
    with torch.no_grad():
        for m in range(E):
            out, _ = model(torch.cat([start, acts[m]], -1))
            torch.testing.assert_close(next_obs[m], start + out[m, :, :OBS_DIM], atol=1e-6, rtol=0)
            torch.testing.assert_close(rew[m], out[m, :, OBS_DIM], atol=1e-6, rtol=0)
    # the second step continues each member's own rollout
    next2, _, _ = env.step(torch.zeros(6, ACT_DIM))
    with torch.no_grad():
        out, _ = model(torch.cat([next_obs, torch.zeros(E, 6, ACT_DIM)], -1))
    torch.testing.assert_close(next2, next_obs + out[..., :OBS_DIM], atol=1e-6, rtol=0)


def test_random_model_uses_only_elites_and_balances_them():
    model = _model(deterministic=True, n_elites=2)
    model.set_elites([1, 3])
    with torch.no_grad():
        for layer in model.linear_layers:
            layer.weight.zero_()
            layer.bias.zero_()
        model.output_layer.bias[1, 0, 0] = 1.0  # elite 1 moves the first coordinate up, elite 3 down
        model.output_layer.bias[3, 0, 0] = -1.0
        for m in (0, 2, 4):  # non-elites predict huge deltas
            model.output_layer.bias[m] += 1e6
    env = ModelEnv(model, generator=torch.Generator().manual_seed(0))
    env.reset(torch.zeros(101, OBS_DIM))
    next_obs, _, _ = env.step(torch.zeros(101, ACT_DIM))
    assert set(next_obs[:, 0].tolist()) == {1.0, -1.0}  # only elites, each row predicted by its own
    assert (next_obs[:, 0] == 1.0).sum().item() in (50, 51)  # balanced: ceil(101 / 2) and the rest
    again, _, _ = env.step(torch.zeros(101, ACT_DIM))  # a fresh assignment every step
    assert not torch.equal(again[:, 0] - next_obs[:, 0] > 0, next_obs[:, 0] > 0)


def test_keep_drops_terminated_rollouts():
    model = _model(deterministic=True)
    env = ModelEnv(model, generator=torch.Generator().manual_seed(0))
    start = torch.randn(10, OBS_DIM)
    env.reset(start)
    mask = torch.arange(10) % 3 == 0
    torch.testing.assert_close(env.keep(mask), start[mask])
    next_obs, rew, term = env.step(torch.zeros(4, ACT_DIM))
    assert next_obs.shape == (4, OBS_DIM) and rew.shape == (4,) and term.shape == (4,)
    with pytest.raises(RuntimeError, match="all"):
        all_env = ModelEnv(model, propagation="all")
        all_env.reset(start)
        all_env.keep(mask)


def test_gaussian_sampling_vs_deterministic():
    model = _model(n_elites=1)
    env = ModelEnv(model, generator=torch.Generator().manual_seed(0))
    start = torch.randn(8, OBS_DIM)
    env.reset(start)
    det, _, _ = env.step(torch.zeros(8, ACT_DIM), deterministic=True)
    env.reset(start)
    sto, _, _ = env.step(torch.zeros(8, ACT_DIM), deterministic=False)
    assert not torch.allclose(det, sto)


def test_termination_and_reward_fn_are_respected():
    model = DynamicsModel(
        OBS_DIM, ACT_DIM, learned_reward=False, ensemble_size=E, net_arch=[8], deterministic=True
    )
    env = ModelEnv(
        model,
        termination_fn=lambda o, a, n: n[..., 0] > 0,
        reward_fn=lambda o, a, n: -(n**2).sum(-1),
        generator=torch.Generator().manual_seed(0),
    )
    env.reset(torch.randn(50, OBS_DIM))
    next_obs, rew, term = env.step(torch.randn(50, ACT_DIM))
    assert torch.equal(term, next_obs[:, 0] > 0)
    torch.testing.assert_close(rew, -(next_obs**2).sum(-1))
    with pytest.raises(ValueError, match="reward_fn"):
        ModelEnv(model)
    with pytest.raises(RuntimeError, match="reset"):
        ModelEnv(_model()).step(torch.zeros(2, ACT_DIM))


def test_xavier_init_and_soft_termination():
    """What STEVE takes from here: Glorot-uniform ensemble layers, a ModelEnv with done probabilities."""
    torch.manual_seed(0)
    net = DynamicsModel(
        3, 2, learned_reward=False, ensemble_size=2, net_arch=[200], deterministic=True, init="xavier_uniform"
    )
    bound = (6 / (5 + 200)) ** 0.5
    weight = net.hidden_layers[0].weight
    assert weight.abs().max() <= bound and weight.abs().max() > 0.9 * bound
    assert (net.hidden_layers[0].bias == 0).all()
    with pytest.raises(ValueError, match="init"):
        EnsembleMLP(5, 3, init="bogus")

    def half(obs, act, next_obs):
        return torch.full(next_obs.shape[:-1], 0.5)

    env = ModelEnv(net, termination_fn=half, reward_fn=lambda o, a, n: o.sum(-1), propagation="all")
    env.reset(torch.zeros(4, 3))
    assert env.step(torch.zeros(4, 2))[2].dtype == torch.bool  # default: a flag
    env = ModelEnv(net, termination_fn=half, reward_fn=lambda o, a, n: o.sum(-1), soft_termination=True)
    env.reset(torch.zeros(4, 3))
    torch.testing.assert_close(env.step(torch.zeros(4, 2))[2], torch.full((4,), 0.5))


def test_termination_functions():
    healthy = torch.zeros(4, 21)  # Hopper (11) + 10 distractor dims
    healthy[:, 0] = 1.25
    healthy[:, 11:] = 1e3  # large distractors must not terminate
    assert not hopper_termination(None, None, healthy).any()
    bad = healthy.clone()
    bad[0, 0] = 0.5  # too low
    bad[1, 1] = 0.3  # tilted
    bad[2, 5] = 200.0  # velocity out of range
    assert hopper_termination(None, None, bad).tolist() == [True, True, True, False]
    assert hopper_termination(None, None, healthy.expand(3, 4, 21)).shape == (3, 4)
    pend = torch.tensor([[0.0, 0.1, 0.0, 0.0], [0.0, 0.3, 0.0, 0.0], [float("nan"), 0.0, 0.0, 0.0]])
    assert inverted_pendulum_termination(None, None, pend).tolist() == [False, True, True]
    assert not no_termination(None, None, torch.randn(2, 5, 3)).any()

    assert get_termination_fn("Hopper-v4") is hopper_termination
    assert get_termination_fn("sb3_mb/DistractedHopper-v0") is hopper_termination
    assert get_termination_fn("InvertedPendulum-v5") is inverted_pendulum_termination
    assert get_termination_fn("Pendulum-v1") is no_termination
    assert get_termination_fn("dm_control/cartpole-swingup-v0") is no_termination
    with pytest.raises(KeyError, match="Unknown-v0"):
        get_termination_fn("Unknown-v0")
    with pytest.warns(UserWarning, match="never terminate"):
        assert get_termination_fn("Unknown-v0", default="never") is no_termination
