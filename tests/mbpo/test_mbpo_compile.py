"""MBPO's fused (and compiled) SAC update against SB3's ``SAC.train`` (issue 15).

The reference is MBPO with ``fused_update=False``, which runs SB3's ``SAC.train`` itself. Both agents start
from the same seed; each update draws its batch from NumPy's global state and its noise from torch's, which
are reseeded alike before the updates compared, so both see the same batches and the same noise.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.utils import set_random_seed

import sb3_mb
from sb3_mb import MBPO
from sb3_mb.common.sac_update import FusedSACUpdate, gradients_surely_finite, set_adam_impl

TINY = {
    **sb3_mb.ALGOS["mbpo"].test_kwargs,
    "model_max_epochs": 2,
    "gradient_steps": 1,
    "policy_kwargs": dict(
        net_arch=[32, 32], model_net_arch=[16, 16], model_ensemble_size=3, model_n_elites=2
    ),
}


def _mbpo(**kwargs) -> MBPO:
    return MBPO("MlpPolicy", make_vec_env("Pendulum-v1", n_envs=1, seed=0), seed=0, **{**TINY, **kwargs})


def _agent_state(model: MBPO) -> dict[str, torch.Tensor]:
    """Every SAC tensor an update changes: actor, critics, targets and the log temperature."""
    state = {f"policy.{k}": v.clone() for k, v in model.policy.state_dict().items() if "dynamics" not in k}
    if model.log_ent_coef is not None:
        state["log_ent_coef"] = model.log_ent_coef.detach().clone()
    return state


def _warm(model: MBPO) -> MBPO:
    """Fill the real buffer with the warm-up's random steps (no update yet) and keep the model untrained."""
    model.learn(TINY["learning_starts"])
    model._last_model_train = model.num_timesteps  # no model training or rollouts in the updates compared
    return model


def _updates(model: MBPO, n: int, seed: int = 123) -> dict[str, torch.Tensor]:
    set_random_seed(seed)
    model.train(n, batch_size=32)
    return _agent_state(model)


# Measured after 5 updates of 32-unit networks: max |difference| 2e-10 with the learned temperature (float32
# rounding of its closed-form gradient), 0 with a fixed one; 5e-8 at [256, 256] after 20 updates.
SB3_TOL = dict(rtol=0.0, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"ent_coef": 0.2}, {"target_update_interval": 2}],
    ids=["learned_temperature", "fixed_temperature", "target_every_2"],
)
def test_fused_update_matches_sb3_sac_update(kwargs):
    """Five updates on the same batches and noise: the same parameters and logged losses as SB3's
    ``SAC.train`` (MBPO with ``fused_update=False``)."""
    reference, fused = _warm(_mbpo(fused_update=False, **kwargs)), _warm(_mbpo(fused_update=True, **kwargs))
    before = _agent_state(fused)
    expected, actual = _updates(reference, 5), _updates(fused, 5)
    assert fused._fused_sac is not None and reference.__dict__.get("_fused_sac") is None
    changed = [k for k in before if not torch.equal(before[k], actual[k])]
    assert len(changed) > len(before) // 2, "the updates changed almost nothing: the comparison is vacuous"
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], **SB3_TOL, msg=key)
    logged, reference_logged = fused.logger.name_to_value, reference.logger.name_to_value
    for key in ("train/critic_loss", "train/actor_loss", "train/ent_coef", "train/ent_coef_loss"):
        assert (key in logged) == (key in reference_logged), key
        if key in logged:
            assert logged[key] == pytest.approx(reference_logged[key], rel=1e-5, abs=1e-7), key
    assert fused._n_updates == reference._n_updates == 5


def test_fused_update_is_seeded_deterministic_and_differs_from_another_seed():
    """Two runs from one seed (model training, rollouts and updates) end with identical weights."""

    def run(seed: int) -> dict[str, torch.Tensor]:
        model = MBPO("MlpPolicy", make_vec_env("Pendulum-v1", n_envs=1, seed=seed), seed=seed, **TINY)
        model.learn(90)
        assert model._fused_sac is not None and model._n_updates > 0
        return _agent_state(model)

    first, second, other = run(0), run(0), run(1)
    for key in first:
        torch.testing.assert_close(second[key], first[key], rtol=0, atol=0, msg=key)
    assert any(not torch.equal(first[k], other[k]) for k in first)


def test_save_load_keeps_the_flags_and_the_fused_update_continues(tmp_path):
    """``fused_update`` / ``compile`` are saved; the loaded agent rebuilds its fused update (not saved) on its
    own networks and makes the same updates as the agent it was saved from."""
    model = _mbpo(fused_update=True, compile=False)
    model.learn(60)
    model.save(tmp_path / "mbpo.zip")
    loaded = MBPO.load(tmp_path / "mbpo.zip", env=make_vec_env("Pendulum-v1", n_envs=1, seed=0))
    assert loaded.fused_update is True and loaded.compile is False
    assert loaded.__dict__.get("_fused_sac") is None
    loaded.replay_buffer = model.replay_buffer
    loaded.set_logger(model.logger)
    for agent in (model, loaded):
        agent._last_model_train = agent.num_timesteps
    expected, actual = _updates(model, 3), _updates(loaded, 3)
    assert loaded._fused_sac.model is loaded
    for key in expected:
        torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=1e-6, msg=key)
    off = _mbpo(fused_update=False)
    off.save(tmp_path / "off.zip")
    assert MBPO.load(tmp_path / "off.zip").fused_update is False


@pytest.mark.parametrize("impl", ["fused", "foreach"])
def test_set_adam_impl_keeps_adams_rule(impl):
    """Switching a live Adam to another kernel (mid-training, step counters kept) leaves its updates equal
    to the per-tensor loop's."""
    torch.manual_seed(0)
    params = [torch.randn(7, 5), torch.randn(5)]
    grads = [[torch.randn_like(p) for p in params] for _ in range(4)]
    results = []
    for switch in (None, impl):
        ps = [p.clone().requires_grad_(True) for p in params]
        opt = torch.optim.Adam(ps, lr=1e-2)
        for i, gs in enumerate(grads):
            if i == 2 and switch is not None:
                set_adam_impl(opt, switch)
            for p, g in zip(ps, gs, strict=True):
                p.grad = g.clone()
            opt.step()
        if switch is not None:
            group = opt.param_groups[0]
            assert (group["fused"], group["foreach"]) == (switch == "fused", switch == "foreach")
        results.append([p.detach() for p in ps])
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="Unknown optimizer impl"):
        set_adam_impl(torch.optim.Adam([torch.zeros(1, requires_grad=True)]), "apex")


def test_gradients_surely_finite_sees_nan_and_inf():
    p = torch.zeros(3, requires_grad=True)
    opt = torch.optim.Adam([p])
    assert gradients_surely_finite(opt)  # no gradient yet
    for bad, expected in ((0.0, True), (float("nan"), False), (float("inf"), False), (-float("inf"), False)):
        p.grad = torch.tensor([1.0, bad, 2.0])
        assert gradients_surely_finite(opt) is expected, bad


def test_fused_update_refuses_gsde():
    with pytest.raises(ValueError, match="gSDE"):
        FusedSACUpdate(_mbpo(use_sde=True))


@pytest.mark.slow
def test_compiled_update_matches_the_eager_fused_update():
    """``compile=True``: after one update on one batch, and after five, the parameters of the compiled
    update equal the eager one's to 1e-5 (measured: 8e-7 at [256, 256]; inductor reorders float sums)."""
    eager, compiled = _warm(_mbpo(fused_update=True)), _warm(_mbpo(fused_update=True, compile=True))
    for n in (1, 4):
        expected, actual = _updates(eager, n, seed=n), _updates(compiled, n, seed=n)
        for key in expected:
            torch.testing.assert_close(actual[key], expected[key], rtol=0, atol=1e-5, msg=key)
    assert compiled._fused_sac.compile
    assert np.isfinite(compiled.logger.name_to_value["train/critic_loss"])


@pytest.mark.slow
def test_compiled_update_is_seeded_deterministic():
    def run() -> dict[str, torch.Tensor]:
        model = _mbpo(compile=True)
        model.learn(70)
        assert model._fused_sac.compile and model._n_updates > 0
        return _agent_state(model)

    first, second = run(), run()
    for key in first:
        torch.testing.assert_close(second[key], first[key], rtol=0, atol=0, msg=key)


def test_relu_in_place_only_after_linear_and_same_gradients():
    """Only a ReLU right after a Linear goes in place (after anything else its input may be needed), and
    the network's output and gradients do not change."""
    from sb3_mb.common.sac_update import relu_in_place

    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(3, 8), torch.nn.ReLU(), torch.nn.Linear(8, 8), torch.nn.Tanh(), torch.nn.ReLU()
    )
    x = torch.randn(5, 3)
    net(x).square().sum().backward()
    before = [p.grad.clone() for p in net.parameters()]
    out_before = net(x).detach()
    net.zero_grad()
    assert relu_in_place(net) == 1
    assert net[1].inplace and not net[4].inplace
    torch.testing.assert_close(net(x), out_before, rtol=0, atol=0)
    net(x).square().sum().backward()
    for p, g in zip(net.parameters(), before, strict=True):
        torch.testing.assert_close(p.grad, g, rtol=0, atol=0)
