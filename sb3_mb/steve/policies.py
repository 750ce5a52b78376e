"""Networks of STEVE (Buckman et al. 2018): the DDPG actor, the Q ensemble and the world model.

Source: ``tensorflow/models/research/steve`` (``valuerl.py``, ``worldmodel.py``, ``nn.py``); spec
``steve.md`` 5.1-5.2. "n layers" in the original counts dense layers, so "4 layers, hidden 128" is three
hidden layers of 128 and "8 layers, hidden 512" seven hidden layers of 512. Every network uses ReLU, Xavier
(Glorot uniform) weights and zero biases.

- :class:`STEVEPolicy`: actor ``a = tanh(pretanh(s))`` (``3 x 128``), Q ensemble of ``L`` members
  (``3 x 128``, one :class:`~sb3_mb.common.ensemble.EnsembleMLP`, all members as one batched matmul) and its
  target copy. There is no target actor: targets use the current policy.
- :class:`STEVEWorldModel`: transition ensemble (``N`` members, ``7 x 512``, predicts ``delta_obs``), reward
  ensemble (``M`` members, ``3 x 128``, input ``(s, a, s')``) and done ensemble (``N`` members, ``3 x 128``,
  sigmoid, input ``(s, a, s')``; done member ``n`` is paired with transition member ``n`` in rollouts, as the
  original evaluates it with the transition's member indices).
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
from torch.nn import functional as F

from sb3_mb.common.ensemble import EnsembleMLP

__all__ = ["MlpPolicy", "STEVEActor", "STEVEPolicy", "STEVEWorldModel", "split_by_member"]


def split_by_member(batch_size: int, n_members: int, device: th.device | str = "cpu") -> th.Tensor:
    """Balanced random assignment of batch rows to members: ``(n_members, batch_size // n_members)``.

    Row ``m`` holds the batch positions member ``m`` trains on ("each example trains one random member",
    the original's ``reduce_mode="random"``). Splitting keeps the cost of one member's forward pass per
    example instead of ``E``; the ``batch_size % n_members`` left-over rows are not used.

    :raises ValueError: if ``batch_size < n_members``.
    """
    per_member = batch_size // n_members
    if per_member == 0:
        raise ValueError(f"Batch size {batch_size} is smaller than the ensemble size {n_members}")
    return th.randperm(batch_size, device=device)[: per_member * n_members].view(n_members, per_member)


def _xavier_(module: nn.Module) -> None:
    for layer in module.modules():
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)


class STEVEActor(nn.Module):
    """Deterministic DDPG policy ``a = tanh(pretanh(s))`` (``valuerl.py``, ``build_evalution_graph``).

    :param obs_dim: observation size. :param action_dim: action size (actions in ``[-1, 1]``).
    :param net_arch: hidden sizes (STEVE: ``[128, 128, 128]``). :param activation_fn: (ReLU).
    """

    optimizer: th.optim.Optimizer

    def __init__(self, obs_dim: int, action_dim: int, net_arch: list[int], activation_fn: type[nn.Module]):
        super().__init__()
        self.net = nn.Sequential(*create_mlp(obs_dim, action_dim, list(net_arch), activation_fn))
        _xavier_(self.net)

    def pretanh(self, obs: th.Tensor) -> th.Tensor:
        """Pre-tanh action ``(..., action_dim)`` of ``obs`` ``(..., obs_dim)`` (any leading shape)."""
        return self.net(obs)

    def forward(self, obs: th.Tensor) -> th.Tensor:
        """Action ``tanh(pretanh(obs))`` in ``[-1, 1]``, shape ``(..., action_dim)``."""
        return th.tanh(self.pretanh(obs))


class STEVEPolicy(BasePolicy):
    """DDPG actor, Q ensemble and target Q ensemble of STEVE (spec steve 5.1).

    :param observation_space: flat ``Box``. :param action_space: ``Box`` (actions scaled to ``[-1, 1]``).
    :param lr_schedule: Adam learning rate of actor and critic (STEVE: 3e-4).
    :param net_arch: hidden sizes of actor and critic (list) or ``dict(pi=[...], qf=[...])``; the critic's
        hidden sizes must be equal (it is one :class:`EnsembleMLP`). STEVE: ``[128, 128, 128]``.
    :param activation_fn: (ReLU).
    :param q_ensemble_size: ``L``, members of the Q ensemble (STEVE: 4; the paper's DDPG / MVE: 1).
    :param explore_chance: per action dimension, the probability that a non-deterministic action replaces
        ``tanh(pretanh)`` by ``tanh(pretanh + N(0, 1))`` (STEVE's intended DDPG exploration, 0.05; see
        :class:`sb3_mb.steve.STEVE` for the spec's QUIRK). ``predict(deterministic=True)`` is always greedy.
    :raises ValueError: for unequal critic hidden sizes or an ``explore_chance`` outside ``[0, 1]``.
    """

    actor: STEVEActor
    critic: EnsembleMLP
    critic_target: EnsembleMLP

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        q_ensemble_size: int = 4,
        explore_chance: float = 0.05,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
    ):
        super().__init__(
            observation_space,
            action_space,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
            squash_output=True,
            normalize_images=normalize_images,
        )
        if not 0.0 <= explore_chance <= 1.0:
            raise ValueError(f"explore_chance must lie in [0, 1], got {explore_chance}")
        self.net_arch = [128, 128, 128] if net_arch is None else net_arch
        self.activation_fn = activation_fn
        self.q_ensemble_size = int(q_ensemble_size)
        self.explore_chance = float(explore_chance)
        actor_arch, critic_arch = get_actor_critic_arch(self.net_arch)
        if len(critic_arch) == 0 or len(set(critic_arch)) != 1:
            raise ValueError(f"The Q ensemble needs equal hidden sizes, got {critic_arch}")
        self.obs_dim = get_flattened_obs_dim(observation_space)
        self.action_dim = get_action_dim(action_space)

        self.actor = STEVEActor(self.obs_dim, self.action_dim, actor_arch, activation_fn)
        self.critic = EnsembleMLP(
            self.obs_dim + self.action_dim,
            1,
            ensemble_size=self.q_ensemble_size,
            n_layers=len(critic_arch),
            hidden_size=critic_arch[0],
            activation=activation_fn,
            deterministic=True,
            init="xavier_uniform",
        )
        self.critic_target = copy.deepcopy(self.critic)
        self.critic_target.requires_grad_(False)
        self.actor.optimizer = self.optimizer_class(
            self.actor.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs
        )
        self.critic.optimizer = self.optimizer_class(
            self.critic.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs
        )
        self.critic_target.train(False)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            net_arch=self.net_arch,
            activation_fn=self.activation_fn,
            q_ensemble_size=self.q_ensemble_size,
            explore_chance=self.explore_chance,
            lr_schedule=self._dummy_schedule,
            optimizer_class=self.optimizer_class,
            optimizer_kwargs=self.optimizer_kwargs,
        )
        return data

    # ------------------------------------------------------------------------------------ values
    @staticmethod
    def q_of(critic: EnsembleMLP, obs: th.Tensor, actions: th.Tensor) -> th.Tensor:
        """Every member's ``Q(s, a)``: ``obs (..., obs_dim)``, ``actions (..., action_dim)`` -> ``(L, ...)``.

        Any leading shape; all ``L`` members in one batched matmul.
        """
        x = th.cat([obs, actions], dim=-1)
        lead = x.shape[:-1]
        return critic(x.reshape(-1, x.shape[-1]))[0].reshape(critic.ensemble_size, *lead)

    @staticmethod
    def q_of_members(critic: EnsembleMLP, obs: th.Tensor, actions: th.Tensor) -> th.Tensor:
        """``Q`` of member ``m`` on slice ``m``: ``obs (L, n, ..., obs_dim)`` -> ``(L, n, ...)``."""
        x = th.cat([obs, actions], dim=-1)
        lead = x.shape[:-1]
        return critic(x.reshape(lead[0], -1, x.shape[-1]))[0].reshape(lead)

    # ------------------------------------------------------------------------------------ acting
    def forward(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self._predict(observation, deterministic=deterministic)

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        """Greedy ``tanh(pretanh)``; when not ``deterministic``, each dimension is replaced with probability
        ``explore_chance`` by ``tanh(pretanh + N(0, 1))`` (``valuerl.py``, ``mode="explore"``).

        :return: ``(batch, action_dim)`` in ``[-1, 1]`` (SB3's ``predict`` rescales to the action space).
        """
        obs = th.as_tensor(observation).float().reshape(-1, self.obs_dim)
        pretanh = self.actor.pretanh(obs)
        action = th.tanh(pretanh)
        if deterministic or self.explore_chance <= 0.0:
            return action
        explored = th.tanh(pretanh + th.randn_like(pretanh))
        return th.where(th.rand_like(pretanh) < self.explore_chance, explored, action)

    def set_training_mode(self, mode: bool) -> None:
        self.actor.train(mode)
        self.critic.train(mode)
        self.training = mode


MlpPolicy = STEVEPolicy


class STEVEWorldModel(nn.Module):
    """Transition, reward and done ensembles of STEVE (``worldmodel.py``; spec steve 5.2).

    Verbs: :meth:`next_obs_delta` (the transition ensemble), :meth:`rewards` (every reward member),
    :meth:`done_probs` (done member ``n`` on transition member ``n``'s rollout) and :meth:`loss`.

    :param obs_dim: observation size. :param action_dim: action size.
    :param transition_ensemble_size: ``N`` (4); also the size of the done ensemble.
    :param reward_ensemble_size: ``M`` (4).
    :param transition_n_layers: hidden layers of the transition nets (7, i.e. "8 layers").
    :param transition_hidden_size: (512).
    :param aux_n_layers: hidden layers of the reward and done nets (3, i.e. "4 layers").
    :param aux_hidden_size: (128).
    :param l2_coef: ``c`` of the L2 term ``c * sum 0.5 ||theta||^2`` over every weight and bias (1e-4).
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        transition_ensemble_size: int = 4,
        reward_ensemble_size: int = 4,
        transition_n_layers: int = 7,
        transition_hidden_size: int = 512,
        aux_n_layers: int = 3,
        aux_hidden_size: int = 128,
        l2_coef: float = 1e-4,
    ):
        super().__init__()
        self.obs_dim, self.action_dim, self.l2_coef = obs_dim, action_dim, l2_coef
        common = dict(activation="relu", deterministic=True, init="xavier_uniform")
        self.transition = EnsembleMLP(
            obs_dim + action_dim,
            obs_dim,
            ensemble_size=transition_ensemble_size,
            n_layers=transition_n_layers,
            hidden_size=transition_hidden_size,
            **common,
        )
        aux_in = 2 * obs_dim + action_dim
        self.reward = EnsembleMLP(
            aux_in, 1, reward_ensemble_size, n_layers=aux_n_layers, hidden_size=aux_hidden_size, **common
        )
        self.done = EnsembleMLP(
            aux_in, 1, transition_ensemble_size, n_layers=aux_n_layers, hidden_size=aux_hidden_size, **common
        )

    def rewards(self, obs: th.Tensor, actions: th.Tensor, next_obs: th.Tensor) -> th.Tensor:
        """Every reward member on every row: ``(..., obs_dim)`` inputs -> ``(..., M)`` rewards."""
        x = th.cat([obs, actions, next_obs], dim=-1)
        lead = x.shape[:-1]
        out = self.reward(x.reshape(-1, x.shape[-1]))[0][..., 0]  # (M, rows)
        return out.transpose(0, 1).reshape(*lead, self.reward.ensemble_size)

    def done_probs(self, obs: th.Tensor, actions: th.Tensor, next_obs: th.Tensor) -> th.Tensor:
        """Done probability of member ``n`` on slice ``n``: ``(N, batch, ...)`` inputs -> ``(N, batch)``."""
        x = th.cat([obs, actions, next_obs], dim=-1)
        return th.sigmoid(self.done(x)[0][..., 0])

    def loss(
        self,
        obs: th.Tensor,
        actions: th.Tensor,
        next_obs: th.Tensor,
        rewards: th.Tensor,
        dones: th.Tensor,
    ) -> dict[str, th.Tensor]:
        """World-model loss on a real batch; every example trains one random member of each net.

        ``0.5 * sum_dims (s' - s_hat')^2 + 0.5 * (r - r_hat)^2 + BCE(done)`` averaged over the batch, plus
        ``l2_coef * sum 0.5 ||theta||^2`` (``worldmodel.py``, ``build_training_graph``).

        :param obs: ``(batch, obs_dim)``; :param actions: ``(batch, action_dim)``; :param next_obs: like
            ``obs``; :param rewards: ``(batch,)``; :param dones: ``(batch,)`` true terminations in ``{0, 1}``.
        :return: ``{"transition", "reward", "done", "l2", "total"}`` scalar tensors.
        """
        batch, device = obs.shape[0], obs.device
        aux_x = th.cat([obs, actions, next_obs], dim=-1)

        idx = split_by_member(batch, self.transition.ensemble_size, device)  # (N, batch / N)
        delta = self.transition(th.cat([obs, actions], dim=-1)[idx])[0]
        transition = 0.5 * (obs[idx] + delta - next_obs[idx]).pow(2).sum(-1).mean()

        idx = split_by_member(batch, self.reward.ensemble_size, device)
        reward = 0.5 * (self.reward(aux_x[idx])[0][..., 0] - rewards[idx]).pow(2).mean()

        idx = split_by_member(batch, self.done.ensemble_size, device)
        done = F.binary_cross_entropy_with_logits(self.done(aux_x[idx])[0][..., 0], dones[idx])

        l2 = self.l2_coef * 0.5 * sum(p.pow(2).sum() for p in self.parameters())
        total = transition + reward + done + l2
        return {"transition": transition, "reward": reward, "done": done, "l2": l2, "total": total}
