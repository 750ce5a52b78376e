"""The zoo's hyperparameter files: ``hyperparams/<algo>.yml``, rl-zoo3 format, keyed by env id."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

HYPERPARAMS_DIR = Path(__file__).resolve().parent.parent / "hyperparams"

#: Entries that are not constructor arguments of the algorithm (rl-zoo3 reads them itself).
ZOO_KEYS = ("n_timesteps", "policy", "n_envs", "normalize", "env_wrapper", "frame_stack", "callback")


def load_hyperparams(algo: str, env_id: str) -> dict[str, Any]:
    """The constructor arguments of ``hyperparams/<algo>.yml``'s entry for ``env_id``.

    ``policy_kwargs`` written as a string (rl-zoo3's convention, e.g. ``"dict(net_arch=[64, 64])"``) is
    turned into a dict, the way rl-zoo3's experiment manager does; the zoo-only keys (``n_timesteps``,
    ``policy``...) are left out.

    :raises KeyError: if the file has no entry for ``env_id``; the message lists the entries it has.
    """
    with open(HYPERPARAMS_DIR / f"{algo}.yml") as file:
        entries = yaml.safe_load(file)
    if env_id not in entries:
        raise KeyError(f"hyperparams/{algo}.yml has no entry {env_id!r}; entries: {', '.join(entries)}")
    kwargs = {key: value for key, value in entries[env_id].items() if key not in ZOO_KEYS}
    if isinstance(kwargs.get("policy_kwargs"), str):
        kwargs["policy_kwargs"] = eval(kwargs["policy_kwargs"], {"__builtins__": {}}, {"dict": dict})  # noqa: S307
    return kwargs
