"""Networks of STEVE (Buckman et al. 2018, arXiv:1807.01675): DDPG actor, Q ensemble and world model.

Every network is an MLP with Xavier (Glorot uniform) weights and zero biases (Buckman et al. 2018, Sec. 4 and
appendix; DDPG: Lillicrap et al. 2015, arXiv:1509.02971, Sec. 7, without its final-layer initialisation).

- :class:`STEVEPolicy`: actor ``a = tanh(pretanh(s))``, Q ensemble of ``L`` members (one
  :class:`~sb3_mb.common.ensemble.EnsembleMLP`, all members as one batched matmul), its target copy and the
  world model. There is no target actor: targets use the current policy.
- :class:`STEVEWorldModel`: transition ensemble (``N`` members predicting ``s' - s``, a
  :class:`~sb3_mb.common.dynamics.DynamicsModel`), reward ensemble (``M`` members, input ``(s, a, s')``) and
  done ensemble (``N`` members, sigmoid, input ``(s, a, s')``; done member ``n`` is paired with transition
  member ``n`` in rollouts, as the released code does).
"""

from __future__ import annotations

import copy
from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.preprocessing import get_action_dim, get_flattened_obs_dim
from stable_baselines3.common.torch_layers import create_mlp, get_actor_critic_arch
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from sb3_mb.common.dynamics import DynamicsModel
from sb3_mb.common.ensemble import EnsembleMLP

__all__ = ["MlpPolicy", "STEVEActor", "STEVEPolicy", "STEVEWorldModel"]

#: The world model's hidden sizes: the paper's transition net of 8 dense layers of 512 units and reward and
#: done nets of 4 dense layers of 128 (Buckman et al. 2018, appendix), i.e. 7 and 3 hidden layers.
MODEL_NET_ARCH = {"transition": [512] * 7, "reward": [128] * 3, "done": [128] * 3}


def _per_net(value: Any, defaults: dict[str, Any], name: str) -> dict[str, Any]:
    """``value`` for every key of ``defaults`` (a dict overrides only its keys).

    :raises ValueError: for a dict key that is not one of ``defaults``.
    """
    if not isinstance(value, dict):
        return {key: value for key in defaults}
    unknown = set(value) - set(defaults)
    if unknown:
        raise ValueError(f"Unknown {name} keys {sorted(unknown)}; expected some of {list(defaults)}")
    return {**defaults, **value}


class STEVEActor(nn.Module):
    """Deterministic DDPG policy ``a = tanh(pretanh(s))`` (Lillicrap et al. 2015, Sec. 3).

    :param obs_dim: observation size. :param action_dim: action size (actions in ``[-1, 1]``).
    :param net_arch: hidden sizes. :param activation_fn: activation class.
    """

    optimizer: th.optim.Optimizer

    def __init__(self, obs_dim: int, action_dim: int, net_arch: list[int], activation_fn: type[nn.Module]):
        super().__init__()
        self.net = nn.Sequential(*create_mlp(obs_dim, action_dim, list(net_arch), activation_fn))
        for layer in self.net:
            if isinstance(layer, nn.Linear):
                nn.init.xavier_uniform_(layer.weight)
                nn.init.zeros_(layer.bias)

    def pretanh(self, obs: th.Tensor) -> th.Tensor:
        """Pre-tanh action ``(..., action_dim)`` of ``obs`` ``(..., obs_dim)`` (any leading shape)."""
        return self.net(obs)

    def forward(self, obs: th.Tensor) -> th.Tensor:
        """Action ``tanh(pretanh(obs))`` in ``[-1, 1]``, shape ``(..., action_dim)``."""
        return th.tanh(self.pretanh(obs))


class STEVEWorldModel(nn.Module):
    """Transition, reward and done ensembles of STEVE (Buckman et al. 2018, Sec. 3-4).

    Verbs: :attr:`transition` (a :class:`~sb3_mb.common.dynamics.DynamicsModel` without reward, the owner of
    the ``[s, a] -> s' - s`` layout), :meth:`rewards` (every reward member on every row),
    :meth:`member_rewards` and :meth:`done_logits` (member ``k`` on slice ``k``) and :meth:`done_probs`.

    :param obs_dim: observation size. :param action_dim: action size.
    :param net_arch: hidden sizes ``{"transition": [...], "reward": [...], "done": [...]}``.
    :param ensemble_size: ``{"transition": N, "reward": M}``; the done ensemble has ``N`` members.
    :param activation_fn: activation class of every net.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        net_arch: dict[str, list[int]],
        ensemble_size: dict[str, int],
        activation_fn: type[nn.Module],
    ):
        super().__init__()
        common = dict(activation_fn=activation_fn, deterministic=True, init="xavier_uniform")
        n_transition = ensemble_size["transition"]
        self.transition = DynamicsModel(
            obs_dim,
            action_dim,
            learned_reward=False,
            ensemble_size=n_transition,
            net_arch=net_arch["transition"],
            **common,
        )
        aux_in = 2 * obs_dim + action_dim
        self.reward = EnsembleMLP(aux_in, 1, ensemble_size["reward"], net_arch["reward"], **common)
        self.done = EnsembleMLP(aux_in, 1, n_transition, net_arch["done"], **common)

    def rewards(self, obs: th.Tensor, actions: th.Tensor, next_obs: th.Tensor) -> th.Tensor:
        """Every reward member on every row: ``(..., obs_dim)``, ``(..., action_dim)`` -> ``(..., M)``."""
        x = th.cat([obs, actions, next_obs], dim=-1)
        lead = x.shape[:-1]
        out = self.reward(x.reshape(-1, x.shape[-1]))[0][..., 0]  # (M, rows)
        return out.transpose(0, 1).reshape(*lead, self.reward.ensemble_size)

    def member_rewards(self, obs: th.Tensor, actions: th.Tensor, next_obs: th.Tensor) -> th.Tensor:
        """Reward of member ``m`` on slice ``m``: ``(M, n, obs_dim)``... -> ``(M, n)``."""
        return self.reward(th.cat([obs, actions, next_obs], dim=-1))[0][..., 0]

    def done_logits(self, obs: th.Tensor, actions: th.Tensor, next_obs: th.Tensor) -> th.Tensor:
        """Done logit of member ``n`` on slice ``n``: ``(N, n, obs_dim)``... -> ``(N, n)``."""
        return self.done(th.cat([obs, actions, next_obs], dim=-1))[0][..., 0]

    def done_probs(self, obs: th.Tensor, actions: th.Tensor, next_obs: th.Tensor) -> th.Tensor:
        """Probability that the transition ends the episode, member ``n`` on slice ``n``: ``(N, n)``."""
        return th.sigmoid(self.done_logits(obs, actions, next_obs))


class STEVEPolicy(BasePolicy):
    """DDPG actor, Q ensemble, target Q ensemble and world model of STEVE; the defaults are the paper's
    (Buckman et al. 2018, Sec. 4 and appendix).

    :param observation_space: flat ``Box``. :param action_space: ``Box`` (actions scaled to ``[-1, 1]``).
    :param lr_schedule: Adam learning rate of actor and critic.
    :param net_arch: hidden sizes of actor and critic (a list) or ``dict(pi=[...], qf=[...])``
        (``[128, 128, 128]``).
    :param activation_fn: activation of every network (``nn.ReLU``).
    :param n_critics: ``L``, members of the Q ensemble (4; the paper's DDPG / MVE baselines: 1).
    :param model_net_arch: hidden sizes of the world model: one list for its three nets, or a dict with some
        of the keys of :data:`MODEL_NET_ARCH` (the defaults: transition ``[512] * 7``, reward and done
        ``[128] * 3``).
    :param model_ensemble_size: ``N = M`` (4), or ``dict(transition=N, reward=M)``; the done ensemble has
        ``N`` members.
    :param use_world_model: build the world model (the algorithm sets it from its ``target_mode``).
    :param optimizer_class: optimizer of actor and critic (Adam). :param optimizer_kwargs: its arguments.
    :raises ValueError: for unknown keys of ``model_net_arch`` / ``model_ensemble_size``.
    """

    actor: STEVEActor
    critic: EnsembleMLP
    critic_target: EnsembleMLP
    world_model: STEVEWorldModel | None

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        n_critics: int = 4,
        model_net_arch: list[int] | dict[str, list[int]] | None = None,
        model_ensemble_size: int | dict[str, int] = 4,
        use_world_model: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
    ):
        super().__init__(
            observation_space,
            action_space,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
            squash_output=True,
        )
        self.net_arch = [128, 128, 128] if net_arch is None else net_arch
        self.activation_fn = activation_fn
        self.n_critics = int(n_critics)
        self.model_net_arch = _per_net(
            MODEL_NET_ARCH if model_net_arch is None else model_net_arch, MODEL_NET_ARCH, "model_net_arch"
        )
        self.model_ensemble_size = _per_net(
            model_ensemble_size, {"transition": 4, "reward": 4}, "model_ensemble_size"
        )
        self.use_world_model = bool(use_world_model)
        self.obs_dim = get_flattened_obs_dim(observation_space)
        self.action_dim = get_action_dim(action_space)

        actor_arch, critic_arch = get_actor_critic_arch(self.net_arch)
        self.actor = STEVEActor(self.obs_dim, self.action_dim, actor_arch, activation_fn)
        self.critic = EnsembleMLP(
            self.obs_dim + self.action_dim,
            1,
            ensemble_size=self.n_critics,
            net_arch=critic_arch,
            activation_fn=activation_fn,
            deterministic=True,
            init="xavier_uniform",
        )
        self.critic_target = copy.deepcopy(self.critic)
        self.critic_target.requires_grad_(False)
        self.critic_target.train(False)
        self.world_model = None
        if self.use_world_model:
            self.world_model = STEVEWorldModel(
                self.obs_dim, self.action_dim, self.model_net_arch, self.model_ensemble_size, activation_fn
            )
        self.actor.optimizer = self.optimizer_class(
            self.actor.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs
        )
        self.critic.optimizer = self.optimizer_class(
            self.critic.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs
        )

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            net_arch=self.net_arch,
            activation_fn=self.activation_fn,
            n_critics=self.n_critics,
            model_net_arch=self.model_net_arch,
            model_ensemble_size=self.model_ensemble_size,
            use_world_model=self.use_world_model,
            lr_schedule=self._dummy_schedule,
            optimizer_class=self.optimizer_class,
            optimizer_kwargs=self.optimizer_kwargs,
        )
        return data

    # ------------------------------------------------------------------------------------ values
    def q_values(self, obs: th.Tensor, actions: th.Tensor, target: bool = False) -> th.Tensor:
        """Every member's ``Q(s, a)`` (of the target copy when ``target``), all ``L`` members in one matmul.

        :param obs: ``(..., obs_dim)``, any leading shape. :param actions: ``(..., action_dim)``.
        :return: ``(L, ...)``.
        """
        critic = self.critic_target if target else self.critic
        x = th.cat([obs, actions], dim=-1)
        lead = x.shape[:-1]
        return critic(x.reshape(-1, x.shape[-1]))[0].reshape(critic.ensemble_size, *lead)

    def member_q_values(self, obs: th.Tensor, actions: th.Tensor) -> th.Tensor:
        """``Q`` of member ``l`` on slice ``l``: ``obs (L, n, ..., obs_dim)`` -> ``(L, n, ...)``."""
        x = th.cat([obs, actions], dim=-1)
        lead = x.shape[:-1]
        return self.critic(x.reshape(lead[0], -1, x.shape[-1]))[0].reshape(lead)

    # ------------------------------------------------------------------------------------ acting
    def forward(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self._predict(observation, deterministic=deterministic)

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        """The greedy action ``tanh(pretanh(s))``, ``(batch, action_dim)`` in ``[-1, 1]``, deterministic or
        not, as SB3's TD3 (exploration belongs to the algorithm's ``_sample_action``)."""
        return self.actor(th.as_tensor(observation).float().reshape(-1, self.obs_dim))

    def set_training_mode(self, mode: bool) -> None:
        self.actor.train(mode)
        self.critic.train(mode)
        if self.world_model is not None:
            self.world_model.train(mode)
        self.training = mode


MlpPolicy = STEVEPolicy
