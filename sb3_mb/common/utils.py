"""Helpers the algorithms share: constructor arguments, progress bars, frozen parameters."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import gymnasium as gym
import torch as th
from gymnasium import spaces
from stable_baselines3.common.base_class import maybe_make_env
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.vec_env import VecEnv
from tqdm import TqdmExperimentalWarning
from tqdm.rich import tqdm

__all__ = [
    "default_policy",
    "foreach_polyak_update",
    "frozen",
    "make_progress_bar",
    "own_parameters",
    "resolve_policy_and_env",
]


def default_policy(observation_space: spaces.Space, policy_aliases: Mapping[str, Any]) -> str:
    """``"CnnPolicy"`` for image observations when the algorithm has one, else ``"MlpPolicy"``.

    Images are what SB3 calls images: a ``uint8`` ``Box`` of rank 3, channel-first or channel-last.
    """
    if "CnnPolicy" in policy_aliases and is_image_space(observation_space, check_channels=False):
        return "CnnPolicy"
    return "MlpPolicy"


def _is_policy(policy: Any, policy_aliases: Mapping[str, Any]) -> bool:
    if isinstance(policy, str):
        return policy in policy_aliases
    return isinstance(policy, type) and issubclass(policy, BasePolicy)


def resolve_policy_and_env(
    policy: Any, env: Any, policy_aliases: Mapping[str, Any], algorithm: str, verbose: int = 0
) -> tuple[str | type[BasePolicy], Any]:
    """Let ``Algo(env)`` stand for ``Algo(<policy for env's observations>, env)``; keep ``Algo(policy, env)``.

    When the first argument is an environment (a Gymnasium env, a ``VecEnv`` or a registered env id that
    is not a policy alias) and no ``env`` is given, it becomes the env and the policy follows from its
    observation space (:func:`default_policy`). An env id is made here (SB3's ``maybe_make_env``; SB3 adds
    the ``Monitor`` and the ``VecEnv`` later, as for any env), so the caller can check its spaces before
    building anything.

    :param policy: what the user gave as the first argument.
    :param env: the second argument (None when omitted, and when ``load`` rebuilds a model).
    :param policy_aliases: the algorithm's ``policy_aliases``.
    :param algorithm: the algorithm's name, for error messages.
    :return: ``(policy, env)``, ``env`` a made env when an id was given.
    :raises ValueError: if the first argument is neither a policy nor an environment, or a policy is given
        as a string without an env.
    """
    if env is None and not _is_policy(policy, policy_aliases):
        if not isinstance(policy, str | gym.Env | VecEnv):
            raise ValueError(
                f"{algorithm} takes a policy ({', '.join(policy_aliases)} or a policy class) and an env, "
                "or an "
                f"env alone; got {policy!r}"
            )
        if isinstance(policy, str) and policy not in gym.registry:
            raise ValueError(
                f"{policy!r} is neither a policy of {algorithm} ({', '.join(policy_aliases)}) "
                "nor a registered "
                "Gymnasium env id"
            )
        policy, env = None, policy
    elif env is None and isinstance(policy, str):
        raise ValueError(f"{algorithm}({policy!r}) needs an environment: {algorithm}({policy!r}, env)")
    if isinstance(env, str):
        env = maybe_make_env(env, verbose)
    if policy is None:
        policy = default_policy(env.observation_space, policy_aliases)
    return policy, env


def make_progress_bar(total: int, desc: str, enabled: bool) -> tqdm:
    """A tqdm / rich bar of ``total`` steps, as SB3's ``learn(..., progress_bar=True)`` draws, for the work an
    algorithm does between env steps (model pretraining, rollout collection, CMA-ES generations).

    Disabled (draws nothing, costs next to nothing) unless ``enabled``. tqdm's warning that its rich bar is
    experimental is silenced, as SB3's ``ProgressBarCallback`` does.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", TqdmExperimentalWarning)
        return tqdm(total=total, desc=desc, disable=not enabled)


def own_parameters(module: th.nn.Module, shared_with: th.nn.Module) -> list[th.nn.Parameter]:
    """``module``'s trainable parameters that ``shared_with`` does not also hold (e.g. a critic's, without a
    features extractor it shares with the actor)."""
    others = {id(p) for p in shared_with.parameters()}
    return [p for p in module.parameters() if p.requires_grad and id(p) not in others]


@contextmanager
def frozen(parameters: Iterable[th.nn.Parameter]) -> Iterator[None]:
    """``requires_grad`` off for the ``parameters`` that have it while the block runs, back on after (also on
    an exception): a backward pass in the block computes no gradient for them."""
    switched = [p for p in parameters if p.requires_grad]
    for p in switched:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in switched:
            p.requires_grad_(True)


@th.no_grad()
def foreach_polyak_update(params: list[th.Tensor], target_params: list[th.Tensor], tau: float) -> None:
    """SB3's ``polyak_update``, ``target <- (1 - tau) target + tau source`` in the same two operations, as two
    ``_foreach`` kernels over all tensors instead of two per tensor (the lists pair up in order)."""
    th._foreach_mul_(target_params, 1.0 - tau)
    th._foreach_add_(target_params, params, alpha=tau)
