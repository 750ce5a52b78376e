"""The documented rules of STEVE's losses (sb3_mb.steve), each pinned so that breaking it fails: the
world-model loss, the critic loss with a random member per example, and the DDPG policy loss. No learning
runs; the target rule itself (inverse-variance weights, candidates, TD-k) is pinned in ``test_steve.py``.

Every expected value is computed member by member (``member_idx``), not with the batched pass under test;
the random member split is replayed by seeding torch's global RNG, which ``random_member_split`` draws from.
"""

import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from torch.nn import functional as F

from sb3_mb import STEVE
from sb3_mb.common.ensemble import random_member_split
from sb3_mb.registry import ALGOS

# The shared tests' sizes (sb3_mb.registry), with three transition members and two reward members so that
# N and M differ; the tests read every size back from the model.
KWARGS = {
    **ALGOS["steve"].test_kwargs,
    "model_pretrain_steps": 1,
    "policy_kwargs": {
        **ALGOS["steve"].test_kwargs["policy_kwargs"],
        "model_ensemble_size": dict(transition=3, reward=2),
    },
}
BATCH = 8


def _steve(**kwargs) -> STEVE:
    model = STEVE(make_vec_env("Pendulum-v1", n_envs=1, seed=0), seed=0, **{**KWARGS, **kwargs})
    model.set_logger(Logger(folder=None, output_formats=[]))
    return model


def _batch(seed: int = 0) -> ReplayBufferSamples:
    g = th.Generator().manual_seed(seed)
    dones = th.zeros(BATCH, 1)
    dones[::3] = 1.0
    return ReplayBufferSamples(
        observations=th.randn(BATCH, 3, generator=g),
        actions=th.rand(BATCH, 1, generator=g) * 2 - 1,
        next_observations=th.randn(BATCH, 3, generator=g),
        dones=dones,
        rewards=th.randn(BATCH, 1, generator=g),
    )


def _per_member(net, rows: th.Tensor, inputs: th.Tensor) -> th.Tensor:
    """``net`` member ``m`` on the rows ``rows[m]`` of ``inputs``, each member alone: ``(E, n, out)``."""
    return th.stack([net(inputs[rows[m]][None], th.tensor([m]))[0][0] for m in range(rows.shape[0])])


def test_world_model_loss_trains_one_random_member_per_example():
    """``0.5 * sum_dims (s' - s_hat')^2 + 0.5 * (r - r_hat)^2 + BCE(done)`` averaged over the batch, every
    example training one random member of each net, plus ``model_weight_decay * sum 0.5 ||theta||^2``."""
    model = _steve(model_weight_decay=1e-2)
    data = _batch()
    obs, actions, next_obs = data.observations, data.actions, data.next_observations
    wm = model.world_model
    th.manual_seed(3)
    losses = model.world_model_losses(data)
    n_transition, n_reward = wm.transition.ensemble_size, wm.reward.ensemble_size
    th.manual_seed(3)
    with th.no_grad():
        rows = random_member_split(BATCH, n_transition)
        delta = _per_member(wm.transition, rows, th.cat([obs, actions], -1))
        transition = (0.5 * (delta - (next_obs - obs)[rows]).pow(2).sum(-1)).mean()
        aux = th.cat([obs, actions, next_obs], -1)
        rows = random_member_split(BATCH, n_reward)
        reward = (0.5 * (_per_member(wm.reward, rows, aux)[..., 0] - data.rewards[rows, 0]).pow(2)).mean()
        rows = random_member_split(BATCH, n_transition)
        done = F.binary_cross_entropy(
            th.sigmoid(_per_member(wm.done, rows, aux)[..., 0]), data.dones[rows, 0]
        )
        l2 = 1e-2 * sum(0.5 * p.pow(2).sum() for p in wm.parameters())
    for key, value in (("transition", transition), ("reward", reward), ("done", done), ("l2", l2)):
        th.testing.assert_close(losses[key].detach(), value, msg=key)
    th.testing.assert_close(losses["total"].detach(), transition + reward + done + l2)


def _perturb_critic(model: STEVE) -> None:
    """Make the online critic differ from its target copy (as after some updates)."""
    g = th.Generator().manual_seed(7)
    with th.no_grad():
        for p in model.critic.parameters():
            p.add_(0.3 * th.randn(p.shape, generator=g))


def test_critic_loss_regresses_a_random_member_per_example_on_the_target():
    """``0.5 (Q_l(s, a) - target)^2``, a random member ``l`` per example, the target being column 0 (the
    target of ``Q(s, a)``) of the expansion, whose values come from the target critic."""
    model = _steve()
    _perturb_critic(model)
    data = _batch()
    th.manual_seed(5)
    loss = model._critic_loss(data, {})
    th.manual_seed(5)
    rows = random_member_split(BATCH, model.critic.ensemble_size)
    with th.no_grad():
        q = _per_member(model.critic, rows, th.cat([data.observations, data.actions], -1))[..., 0]
        target = model.expansion(data).targets[:, 0]
    th.testing.assert_close(loss.detach(), (0.5 * (q - target[rows]).pow(2)).mean())
    # the expansion's values are the target critic's: copying the online critic into it changes the targets
    model.critic_target.load_state_dict(model.critic.state_dict())
    assert not th.allclose(model.expansion(data).targets[:, 0], target)


def test_policy_loss_is_minus_the_ensemble_mean_q_plus_the_regulariser():
    """Policy: ``-mean_batch`` of the ensemble-mean ``Q(s, tanh(pretanh(s)))`` ``+ policy_reg_coef *
    mean(pretanh^2)``. With a zero learning rate nothing moves, so the logged losses can be recomputed."""
    model = _steve(learning_rate=0.0, model_gradient_steps=0, policy_reg_coef=0.5)
    model._model_pretrained = True
    _perturb_critic(model)
    data = _batch()
    model._sample = lambda batch_size: data
    model.train(gradient_steps=1, batch_size=BATCH)
    logged = model.logger.name_to_value
    with th.no_grad():
        pretanh = model.actor.pretanh(data.observations)
        inputs = th.cat([data.observations, th.tanh(pretanh)], -1)
        q = th.stack(
            [model.critic(inputs, th.tensor([m]))[0][0, :, 0] for m in range(model.critic.ensemble_size)]
        )  # (L, batch)
        reg = 0.5 * pretanh.pow(2).mean()
    assert abs(logged["train/policy_reg_loss"] - reg.item()) < 1e-6
    assert abs(logged["train/actor_loss"] - (-q.mean(0).mean() + reg).item()) < 1e-5
