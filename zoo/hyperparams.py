"""The zoo's hyperparameter files: ``hyperparams/<algo>.yml``, rl-zoo3 format, keyed by env id.

Besides the env ids, every file has an entry named ``debug``: small sizes (``n_timesteps`` and constructor
arguments) valid for any environment the algorithm supports. :func:`debug_hyperparams` lays it over an env's
entry (``python -m zoo.train ... --debug``, see :mod:`zoo.train`).

Errors name the file: a missing file lists the known ones, a YAML syntax error gives the line, a key that is
neither a constructor argument nor one rl-zoo3 reads itself names the key and the algorithm.
"""

from __future__ import annotations

import difflib
import inspect
from pathlib import Path
from typing import Any

import yaml

HYPERPARAMS_DIR = Path(__file__).resolve().parent.parent / "hyperparams"

#: Entries that are not constructor arguments of the algorithm (rl-zoo3 reads them itself).
ZOO_KEYS = (
    "n_timesteps",
    "policy",
    "n_envs",
    "normalize",
    "env_wrapper",
    "vec_env_wrapper",
    "frame_stack",
    "callback",
    "env_kwargs",
    "monitor_kwargs",
    "noise_type",
    "noise_std",
)

#: Constructor arguments the zoo's command line sets (``--seed``, ``--device``...): not allowed in a file.
COMMAND_LINE_KEYS = ("env", "seed", "verbose", "device", "tensorboard_log", "_init_setup_model")

#: Name of the debug-sized entry of every file.
DEBUG_ENTRY = "debug"


def hyperparams_path(algo: str) -> Path:
    """``hyperparams/<algo>.yml``.

    :raises FileNotFoundError: if there is no such file; the message lists the files there are.
    """
    path = HYPERPARAMS_DIR / f"{algo}.yml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in HYPERPARAMS_DIR.glob("*.yml")))
        raise FileNotFoundError(f"No hyperparameters file {path} for algorithm {algo!r}; files: {known}")
    return path


def read_hyperparams_file(path: str | Path) -> dict[str, dict[str, Any]]:
    """The entries of a hyperparameters file: ``{entry name: {key: value}}``.

    :raises FileNotFoundError: if the file does not exist.
    :raises ValueError: for a YAML syntax error (message: ``<file>:<line>:<column>: ...``) or a file that is
        not a mapping of mappings.
    """
    path = Path(path)
    try:
        with open(path) as file:
            entries = yaml.safe_load(file)
    except FileNotFoundError as error:
        raise FileNotFoundError(f"No hyperparameters file {path}") from error
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        raise ValueError(f"{where}: YAML syntax error: {error.problem or error.context}") from error
    if entries is None:
        entries = {}
    if not isinstance(entries, dict):
        raise ValueError(f"{path}: expected a mapping of entries (env id -> hyperparameters)")
    for name, entry in entries.items():
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: entry {name!r} must be a mapping of hyperparameters, got {entry!r}")
    return entries


def constructor_parameters(algorithm_class: type) -> set[str]:
    """Names the constructor of ``algorithm_class`` accepts: its own, and, when it passes ``**kwargs`` on
    (as :class:`~sb3_mb.gammamodels.GammaMVE` does to SB3's SAC), those of the next base class."""
    names: set[str] = set()
    for cls in algorithm_class.__mro__:
        if "__init__" not in vars(cls):
            continue
        signature = inspect.signature(cls.__init__)
        names |= {
            name
            for name, p in signature.parameters.items()
            if name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        }
        if not any(p.kind == p.VAR_KEYWORD for p in signature.parameters.values()):
            break
    return names


def check_entry(algo: str, entry: dict[str, Any], where: str) -> None:
    """Every key of ``entry`` is a constructor argument of ``algo``'s class or a key rl-zoo3 reads itself.

    :param where: names the entry in the message (file and entry name).
    :raises ValueError: for any other key; the message names the key, the algorithm and close matches.
    """
    import sb3_mb

    algorithm_class = sb3_mb.get_algorithm(algo)
    parameters = constructor_parameters(algorithm_class)
    for key in entry:
        if key in COMMAND_LINE_KEYS:
            raise ValueError(f"{where}: {key!r} is set by the zoo's command line, not in the file")
        if key not in parameters and key not in ZOO_KEYS:
            close = difflib.get_close_matches(key, sorted(parameters | set(ZOO_KEYS)), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ValueError(
                f"{where}: {key!r} is not an argument of {algorithm_class.__name__} ({algo}) "
                f"nor a key rl-zoo3 reads{hint}"
            )


def load_hyperparams(algo: str, env_id: str) -> dict[str, Any]:
    """The constructor arguments of ``hyperparams/<algo>.yml``'s entry for ``env_id``.

    ``policy_kwargs`` written as a string (rl-zoo3's convention, e.g. ``"dict(net_arch=[64, 64])"``) is
    turned into a dict, the way rl-zoo3's experiment manager does; the zoo-only keys (``n_timesteps``,
    ``policy``...) are left out.

    :raises FileNotFoundError: if there is no ``hyperparams/<algo>.yml``; the message lists the files.
    :raises ValueError: for a YAML syntax error (file and line) or a key that is not a constructor argument.
    :raises KeyError: if the file has no entry for ``env_id``; the message lists the entries it has.
    """
    path = hyperparams_path(algo)
    entries = read_hyperparams_file(path)
    if env_id not in entries:
        raise KeyError(f"hyperparams/{algo}.yml has no entry {env_id!r}; entries: {', '.join(entries)}")
    check_entry(algo, entries[env_id], f"{path}, entry {env_id!r}")
    return constructor_kwargs(entries[env_id])


def constructor_kwargs(entry: dict[str, Any]) -> dict[str, Any]:
    """An entry's constructor arguments: the zoo-only keys left out, a ``policy_kwargs`` string evaluated.

    The string may hold ``dict(...)`` calls and literals (``"dict(net_arch=[64, 64])"``, or the merged
    ``"{**(dict(...)), **(dict(...))}"`` of :func:`debug_hyperparams`), nothing else.
    """
    kwargs = {key: value for key, value in entry.items() if key not in ZOO_KEYS}
    if isinstance(kwargs.get("policy_kwargs"), str):
        kwargs["policy_kwargs"] = eval(kwargs["policy_kwargs"], {"__builtins__": {}}, {"dict": dict})  # noqa: S307
    return kwargs


def _as_expression(policy_kwargs: str | dict[str, Any]) -> str:
    return policy_kwargs if isinstance(policy_kwargs, str) else repr(policy_kwargs)


def debug_hyperparams(algo: str, env_id: str, conf_file: str | Path | None = None) -> dict[str, Any]:
    """The entry for ``env_id`` with the file's ``debug`` entry laid over it.

    Keys of ``debug`` replace the env's; ``policy_kwargs`` is merged key by key (written as the expression
    ``{**(env's), **(debug's)}``, which rl-zoo3 evaluates as it does any ``policy_kwargs`` string). Without an
    entry for ``env_id`` the base is the file's ``default`` entry if it has one (rl-zoo3's fallback), else
    ``policy`` alone: ``"CnnPolicy"`` for image observations, ``"MlpPolicy"`` otherwise.

    :param conf_file: the hyperparameters file; ``None``: ``hyperparams/<algo>.yml``.
    :raises KeyError: if the file has no ``debug`` entry.
    :raises ValueError: for a YAML syntax error or a key that is not a constructor argument (see
        :func:`read_hyperparams_file`, :func:`check_entry`).
    """
    path = Path(conf_file) if conf_file is not None else hyperparams_path(algo)
    entries = read_hyperparams_file(path)
    if DEBUG_ENTRY not in entries:
        raise KeyError(
            f"{path} has no {DEBUG_ENTRY!r} entry (small sizes for --debug); entries: {', '.join(entries)}"
        )
    debug = entries[DEBUG_ENTRY]
    check_entry(algo, debug, f"{path}, entry {DEBUG_ENTRY!r}")
    if env_id in entries:
        base = dict(entries[env_id])
        check_entry(algo, base, f"{path}, entry {env_id!r}")
    elif "default" in entries:
        base = dict(entries["default"])
        check_entry(algo, base, f"{path}, entry 'default'")
    else:
        base = {"policy": default_policy(env_id)}
    merged = {**base, **debug}
    if "policy_kwargs" in base and "policy_kwargs" in debug:
        merged["policy_kwargs"] = (
            f"{{**({_as_expression(base['policy_kwargs'])}), **({_as_expression(debug['policy_kwargs'])})}}"
        )
    return merged


def default_policy(env_id: str) -> str:
    """``"CnnPolicy"`` if ``env_id``'s observations are images (SB3's test), else ``"MlpPolicy"``."""
    import gymnasium
    from stable_baselines3.common.preprocessing import is_image_space

    import sb3_mb  # noqa: F401  (registers the environments)

    env = gymnasium.make(env_id)
    try:
        return "CnnPolicy" if is_image_space(env.observation_space, check_channels=False) else "MlpPolicy"
    finally:
        env.close()


def write_conf(entries: dict[str, dict[str, Any]], path: str | Path) -> Path:
    """Write ``entries`` (``{env id: hyperparameters}``) as a hyperparameters file; returns its path."""
    path = Path(path)
    with open(path, "w") as file:
        yaml.safe_dump(entries, file, sort_keys=False)
    return path
