"""Termination functions ``term_fn(obs, act, next_obs) -> bool tensor`` for learned-model rollouts.

Every function works on any leading batch shape: ``obs`` / ``next_obs`` ``(..., obs_dim)``, ``act``
``(..., action_dim)``, result ``(...)`` of dtype bool (``True``: the transition ends the episode).
They mirror the hand-written termination rules of MBPO's code release (Janner et al. 2019,
arXiv:1906.08253) as mbrl-lib collects them (Pineda et al. 2021, arXiv:2104.10159); VaGraM (Voelcker et
al. 2022, arXiv:2204.01464) runs on mbrl-lib and uses the same Hopper rule on its distracted Hopper.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable

import torch

__all__ = [
    "TerminationFn",
    "get_termination_fn",
    "hopper_termination",
    "inverted_pendulum_termination",
    "no_termination",
]

TerminationFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]

#: Hopper's physical observation has 11 columns; VaGraM's distractor dimensions come after them.
HOPPER_OBS_DIM = 11


def no_termination(obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    """Never terminates (Pendulum, cartpole swing-up, ...): all ``False``, shape ``next_obs.shape[:-1]``."""
    return torch.zeros(next_obs.shape[:-1], dtype=torch.bool, device=next_obs.device)


def hopper_termination(obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor) -> torch.Tensor:
    """MBPO / mbrl-lib Hopper rule on the first 11 columns (so appended distractor dims are ignored).

    Alive iff all 11 are finite, ``|next_obs[..., 1:11]| < 100``, height ``next_obs[..., 0] > 0.7`` and
    ``|angle| = |next_obs[..., 1]| < 0.2``.

    :raises ValueError: if ``next_obs`` has fewer than 11 columns.
    """
    if next_obs.shape[-1] < HOPPER_OBS_DIM:
        raise ValueError(f"Hopper observations have >= {HOPPER_OBS_DIM} columns, got {next_obs.shape[-1]}")
    state = next_obs[..., :HOPPER_OBS_DIM]
    height, angle = state[..., 0], state[..., 1]
    alive = (
        torch.isfinite(state).all(-1)
        & (state[..., 1:].abs() < 100).all(-1)
        & (height > 0.7)
        & (angle.abs() < 0.2)
    )
    return ~alive


def inverted_pendulum_termination(
    obs: torch.Tensor, act: torch.Tensor, next_obs: torch.Tensor
) -> torch.Tensor:
    """InvertedPendulum: ends when non-finite or the pole angle ``|next_obs[..., 1]| > 0.2``.

    Shapes as :func:`hopper_termination`.
    """
    alive = torch.isfinite(next_obs).all(-1) & (next_obs[..., 1].abs() <= 0.2)
    return ~alive


# Keyed by the lower-case base name (namespace and "-vN" stripped, non-letters removed).
_BY_NAME: dict[str, TerminationFn] = {
    "hopper": hopper_termination,
    "invertedpendulum": inverted_pendulum_termination,
    "pendulum": no_termination,
    "cartpole": no_termination,
    "cartpoleswingup": no_termination,
    "cartpolebalance": no_termination,
    "continuouscartpole": no_termination,
}


def _base_name(env_id: str) -> str:
    name = env_id.split(":")[-1].split("/")[-1]
    name = re.sub(r"-v\d+$", "", name)
    return re.sub(r"[^a-z]", "", name.lower())


def get_termination_fn(env_id: str | None, default: str | TerminationFn | None = "raise") -> TerminationFn:
    """Termination function for a Gymnasium env id (``"Hopper-v4"``, ``"Pendulum-v1"``, ...).

    Matching ignores the namespace and version; ids whose name contains ``hopper`` (e.g. a distracted Hopper)
    use :func:`hopper_termination`, names containing ``cartpole`` never terminate.

    :param env_id: the env id (``env.spec.id``); ``None`` counts as unknown.
    :param default: what to do for an unknown id: ``"raise"`` (``KeyError``), ``"never"`` (warn and use
        :func:`no_termination`), or a termination function to return.
    :raises KeyError: for an unknown id when ``default="raise"``; the message lists the known names.
    """
    if env_id is not None:
        name = _base_name(env_id)
        if name in _BY_NAME:
            return _BY_NAME[name]
        if "hopper" in name:
            return hopper_termination
        if "cartpole" in name:
            return no_termination
    if callable(default):
        return default
    if default == "never":
        warnings.warn(
            f"No termination function known for env id {env_id!r}: model rollouts never terminate. "
            "Pass termination_fn=... if the environment has terminal states."
        )
        return no_termination
    raise KeyError(
        f"No termination function known for env id {env_id!r}; known: {sorted(_BY_NAME)}. "
        "Pass your own term_fn(obs, act, next_obs) -> bool tensor."
    )
