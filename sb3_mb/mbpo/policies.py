"""Policies of MBPO: SB3's SAC actor-critic, plus the value functions VaGraM's model losses read.

MBPO's agent is plain SAC (Janner et al. 2019, Alg. 2), so the policy is
:class:`stable_baselines3.sac.policies.SACPolicy`.
The paper's Hopper agent (spec mbpo_vagram 2.4) uses ``policy_kwargs=dict(net_arch=[1024, 1024])``
(mbrl-lib's ``pytorch_sac``: hidden 1024, depth 2); SB3's default is ``[256, 256]``.
"""

from __future__ import annotations

import torch
from stable_baselines3.sac.policies import MlpPolicy, SACPolicy

__all__ = ["MlpPolicy", "SACPolicy", "mean_action_values"]


def mean_action_values(policy: SACPolicy, obs: torch.Tensor, use_all_vf: bool = True) -> torch.Tensor:
    """State values ``V_k(s) = Q_k(s, tanh(mu(s)))`` at the policy's mean action, one column per critic.

    The action is computed without gradient (detached), so gradients flow to ``obs`` only through ``Q``'s
    state input. VaGraM (spec mbpo_vagram 2.1): ``use_all_vf`` uses four value functions ``Q1, Q2`` and the
    targets ``Q1', Q2'``; otherwise ``Q1, Q2``.

    :param policy: SAC policy (actor, critic, critic_target).
    :param obs: ``(batch, obs_dim)`` raw observations.
    :return: ``(batch, n_vf)`` with ``n_vf = 4`` (``use_all_vf``) or the number of critics.
    """
    with torch.no_grad():
        action = policy.actor(obs.detach(), deterministic=True)
    values = list(policy.critic(obs, action))
    if use_all_vf:
        values += list(policy.critic_target(obs, action))
    return torch.cat(values, dim=1)
