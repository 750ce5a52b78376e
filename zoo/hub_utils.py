"""A zoo agent on the Hugging Face Hub: repository name and files (rl-zoo3's layout), shared by push and load.

Repository ``<organization>/<algo>-<EnvName>`` where ``EnvName`` is rl-zoo3's (``huggingface_sb3``'s)
``EnvironmentName``: the environment id with ``/`` replaced by ``-`` and a ``module:`` prefix dropped, the
same name as the run folder ``logs/<algo>/<EnvName>_<N>/``. So ``sb3_mb/CartpoleBalance-v0`` gives
``<organization>/planet-sb3_mb-CartpoleBalance-v0`` holding ``planet-sb3_mb-CartpoleBalance-v0.zip``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

#: Files of the repository that the zoo deserialises with code execution: the SB3 zip (its ``data`` holds
#: cloudpickled objects), VecNormalize statistics (pickle) and rl-zoo3's ``config.yml`` / ``args.yml``
#: (``yaml.UnsafeLoader``, python-object tags; ``normalize`` is even ``eval``-ed).
PICKLED_KINDS = (
    "its model zip (cloudpickle), vec_normalize.pkl (pickle), config.yml and args.yml (python-object YAML)"
)

#: Written by push-to-hub when the run has them; load-from-hub takes them when the repository has them.
OPTIONAL_FILES = ("vec_normalize.pkl", "train_eval_metrics.zip")


def environment_name(env_id: str) -> str:
    """rl-zoo3's name of ``env_id`` in folder, file and repository names (``a/B-v0`` -> ``a-B-v0``)."""
    from huggingface_sb3 import EnvironmentName

    return str(EnvironmentName(env_id))


def model_name(algo: str, env_id: str) -> str:
    """``<algo>-<EnvName>``: default repository name, and the model zip's name without ``.zip``."""
    return f"{algo}-{environment_name(env_id)}"


def repo_id(organization: str, algo: str, env_id: str, repo_name: str | None = None) -> str:
    """``<organization>/<repo_name or algo-EnvName>``."""
    return f"{organization}/{repo_name or model_name(algo, env_id)}"


def required_files(algo: str, env_id: str) -> tuple[str, ...]:
    """The files a zoo repository must hold (rl-zoo3's load_from_hub needs the same four)."""
    return (f"{model_name(algo, env_id)}.zip", "config.yml", "args.yml", "env_kwargs.yml")


#: Files of a run whose bytes decide how its agent acts; their SHA-256 is the agent's fingerprint.
FINGERPRINT_FILES = ("config.yml", "args.yml", "vecnormalize.pkl")


def agent_fingerprint(model_path: str | os.PathLike, config_folder: str | os.PathLike) -> str:
    """SHA-256 (hex) of the model zip and of the run's ``config.yml``, ``args.yml`` and ``vecnormalize.pkl``
    (those that exist in ``config_folder``), each prefixed by its name: two runs with the same fingerprint
    hold the same agent (same weights, same environment settings and normalisation). Reads bytes only;
    nothing is unpickled. Written by push-to-hub into ``results.json`` as ``agent_sha256``.
    """
    digest = hashlib.sha256()
    paths = [("model.zip", Path(model_path))]
    paths += [(name, Path(config_folder) / name) for name in FINGERPRINT_FILES]
    for name, path in paths:
        if path.is_file():
            digest.update(f"{name}\0{path.stat().st_size}\0".encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def published_results(target: str) -> dict[str, Any] | None:
    """The ``results.json`` of the Hub repository ``target``, or ``None`` if the repository or the file does
    not exist. JSON only: nothing of the repository is unpickled.

    :raises huggingface_hub.errors.HfHubHTTPError: any other error of the Hub (no network, bad token...).
    """
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

    try:
        path = hf_hub_download(repo_id=target, filename="results.json")
    except (RepositoryNotFoundError, EntryNotFoundError):
        return None
    with open(path) as file:
        return json.load(file)
