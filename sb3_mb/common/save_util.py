"""Saving that never leaves a broken file, and loading that says what a file holds.

- :func:`atomic_write`: a file is written beside its target under a temporary name, flushed to disk, then
  renamed over the target (``os.replace``, atomic on POSIX and Windows). A process killed mid-save leaves
  the old file intact and at most a hidden temporary file, which the next save to that target removes.
  SB3 opens the target itself with ``"wb"``, so a kill there truncates the last good model.
- :func:`saved_by_marker` / :func:`check_saved_algorithm`: every sb3-mb model zip records the class that
  saved it (a plain JSON entry of SB3's ``data``), and ``load`` reads it, and only it, before SB3 unpickles
  anything: a file of another algorithm, a plain SB3 agent (recognised from its ``policy_class``), a
  truncated or foreign file each get an error that says so.
- :func:`check_replay_buffer`: a loaded replay buffer has the type, spaces and number of envs of the model.
"""

from __future__ import annotations

import contextlib
import glob
import io
import json
import os
import re
import secrets
import socket
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gymnasium import spaces
from stable_baselines3.common.base_class import BaseAlgorithm

__all__ = [
    "SAVED_BY_KEY",
    "atomic_write",
    "check_replay_buffer",
    "check_saved_algorithm",
    "resolve_save_path",
    "saved_by_marker",
]

#: Key of SB3's saved ``data`` under which sb3-mb records the saving class (see :func:`saved_by_marker`).
SAVED_BY_KEY = "sb3_mb_saved_by"

_TEMP_SUFFIX = ".tmp"


# ------------------------------------------------------------------------------------------ atomic saves
def resolve_save_path(path: str | os.PathLike, suffix: str | None = None) -> Path:
    """The file SB3 would write for ``path``: ``path.<suffix>`` when ``path`` has no suffix (SB3's rule).

    :raises IsADirectoryError: if that path is a folder (SB3 would save to ``<path>_2`` instead, silently).
    """
    target = Path(path)
    if target.suffix == "" and suffix:
        target = Path(f"{target}.{suffix}")
    if target.is_dir():
        raise IsADirectoryError(f"Cannot save to {target}: it is a folder; give a file path")
    return target


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"


def _temp_prefix(target: Path) -> str:
    return f".{target.name}.{_host()}."


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # someone else's process, or a platform without signal 0: leave its file alone
    return True


def _remove_stale_temporaries(target: Path) -> None:
    """Remove temporary files of saves to ``target`` by processes of this host that no longer run."""
    prefix = _temp_prefix(target)
    for leftover in target.parent.glob(f".{glob.escape(target.name)}.*{_TEMP_SUFFIX}"):
        name = leftover.name
        if not name.startswith(prefix):
            continue
        pid = name[len(prefix) :].split(".", 1)[0]
        if pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()


def _fsync(path: Path) -> None:
    with open(path, "rb+") as file:
        os.fsync(file.fileno())


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # Windows cannot open a folder; its os.replace is durable enough
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside the target; when the block ends without error, the file written there
    replaces the target in one rename. On error the temporary file is removed and the target is untouched.

    The temporary file is ``.<name>.<host>.<pid>.<random>.tmp`` in the target's folder (same file system,
    so the rename is atomic); it is created empty with the usual permissions (``0o666`` less the umask).
    Leftovers of killed processes of this host are removed by the next save to the same target. The file
    and its folder are flushed to disk (``fsync``) before and after the rename, so a power cut also leaves
    the old or the new file.

    :param path: the target; ``suffix`` is appended when it has none (:func:`resolve_save_path`).
    :param suffix: e.g. ``"zip"`` for models, ``"pkl"`` for replay buffers (SB3's suffixes).
    :raises IsADirectoryError: if the target is a folder.
    """
    target = resolve_save_path(path, suffix)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(target)
    while True:
        temporary = (
            target.parent / f"{_temp_prefix(target)}{os.getpid()}.{secrets.token_hex(4)}{_TEMP_SUFFIX}"
        )
        try:
            os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        yield temporary
        _fsync(temporary)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
    _fsync_dir(target.parent)


# ------------------------------------------------------------------------------------------ what a file holds
def _qualified_name(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def saved_by_marker(algorithm_class: type) -> dict[str, Any]:
    """What a saved zip records about the class that saved it (JSON: SB3 stores it as is, unpickled).

    :return: ``{"name": "MBPO", "class": "sb3_mb.mbpo.mbpo.MBPO", "bases": [qualified names of its
        algorithm classes, itself first]}``.
    """
    bases = [_qualified_name(c) for c in algorithm_class.__mro__ if issubclass(c, BaseAlgorithm)]
    return {"name": algorithm_class.__name__, "class": _qualified_name(algorithm_class), "bases": bases}


def _read_data(path: str | os.PathLike | io.BufferedIOBase) -> tuple[dict[str, Any], str]:
    """The JSON ``data`` entry of a saved model zip, decoded as JSON only (nothing unpickled), and the name
    of the file for messages. A file-like object is read from its position and put back there."""
    if isinstance(path, str | os.PathLike):
        file_path = Path(path)
        if not file_path.is_file() and Path(f"{file_path}.zip").is_file():
            file_path = Path(f"{file_path}.zip")  # SB3's rule for a path without its suffix
        if not file_path.exists():
            also = "" if file_path.suffix == ".zip" else f" (nor {path}.zip)"
            raise FileNotFoundError(f"No saved model at {path}{also}")
        source, name, position = file_path, str(file_path), None
    else:
        source, name = path, getattr(path, "name", repr(path))
        position = path.tell()
    try:
        with zipfile.ZipFile(source) as archive:
            names = archive.namelist()
            if "data" not in names:
                raise ValueError(
                    f"{name} is not a saved model: it reads as a zip file without SB3's 'data' entry "
                    f"(entries: {', '.join(names[:4]) or 'none'}{', ...' if len(names) > 4 else ''}), so it "
                    "is truncated (e.g. by a save that was interrupted) or a zip of another kind"
                )
            try:
                data = json.loads(archive.read("data").decode())
            except (zipfile.BadZipFile, zlib.error, EOFError, UnicodeDecodeError, ValueError) as error:
                raise ValueError(f"{name}: the model's 'data' entry is damaged ({error})") from error
    except (zipfile.BadZipFile, EOFError) as error:
        raise ValueError(
            f"{name} is not a saved model: not a readable zip file (truncated, e.g. by a save that was "
            f"interrupted, or a file of another format): {error}"
        ) from error
    finally:
        if position is not None:
            source.seek(position)
    if not isinstance(data, dict) or "policy_class" not in data:
        raise ValueError(f"{name} is a zip file but not a saved SB3 model: its 'data' has no policy_class")
    return data, name


def _policy_origin(policy_class: Any) -> tuple[str, str]:
    """``(module, class name)`` of a serialised ``policy_class``, read from SB3's readable JSON fields."""
    if not isinstance(policy_class, dict):
        return "", ""
    module = str(policy_class.get("__module__", ""))
    match = re.search(r"<function (\w+)\.__init__", str(policy_class.get("__init__", "")))
    return module, match.group(1) if match else ""


def _algorithm_of_policy_module(module: str) -> str:
    """The algorithm a policy module belongs to, as SB3 and sb3-contrib lay them out
    (``stable_baselines3.sac.policies`` -> ``"SAC"``)."""
    parts = module.split(".")
    if module == "stable_baselines3.common.policies":
        return "PPO or A2C"
    if len(parts) >= 3 and parts[-1] == "policies":
        name = parts[-2].upper()
        return "TD3 or DDPG" if name == "TD3" else name
    return "unknown"


def check_saved_algorithm(path: str | os.PathLike | io.BufferedIOBase, algorithm_class: type) -> None:
    """Check, before SB3 unpickles anything, that ``path`` holds a model ``algorithm_class.load`` can load.

    A file written by sb3-mb carries :func:`saved_by_marker`: it loads with its own class, a base of it or a
    subclass of it. A file without the marker (plain SB3, sb3-contrib, sb3-mb before the marker) is judged by
    the module of its ``policy_class``: one of ``algorithm_class.policy_aliases``' modules passes, a policy
    of SB3, sb3-contrib or another sb3-mb method is refused, any other (a user's own policy) is left to SB3.

    :raises FileNotFoundError: if there is no such file (nor with ``.zip``).
    :raises ValueError: for a file that is not a readable zip (truncated, another format), a zip without
        SB3's ``data``, or a model of another algorithm: ``"<file> holds an agent of another algorithm: SAC
        (...), not MBPO"``.
    """
    data, name = _read_data(path)
    wanted = algorithm_class.__name__
    marker = data.get(SAVED_BY_KEY)
    if isinstance(marker, dict) and "class" in marker:
        ours = {_qualified_name(c) for c in algorithm_class.__mro__}
        if marker["class"] in ours or _qualified_name(algorithm_class) in marker.get("bases", []):
            return
        raise ValueError(
            f"{name} holds an agent of another algorithm: {marker.get('name', '?')} ({marker['class']}), "
            f"not {wanted}; load it with {marker.get('name', 'its class')}.load"
        )
    module, policy = _policy_origin(data["policy_class"])
    own_modules = {p.__module__ for p in getattr(algorithm_class, "policy_aliases", {}).values()}
    if module in own_modules or not module.startswith(("stable_baselines3.", "sb3_contrib.", "sb3_mb.")):
        return
    library = "sb3-mb" if module.startswith("sb3_mb.") else module.split(".")[0]
    raise ValueError(
        f"{name} holds an agent of another algorithm: {_algorithm_of_policy_module(module)} (policy "
        f"{module}.{policy or '?'}, saved by {library}), not {wanted}"
    )


# ------------------------------------------------------------------------------------------ replay buffers
def check_replay_buffer(buffer: Any, model: Any, path: Any) -> None:
    """Check that a loaded replay buffer fits ``model``: its type is the model's ``replay_buffer_class`` (or
    a subclass), its observation and action spaces and its number of envs are the model's.

    :raises ValueError: naming what differs (``"<path> holds a ReplayBuffer; MBPO needs a
        MBPOReplayBuffer"``, the two spaces, the two env counts). SB3 would accept the buffer and the next
        ``learn`` would crash with a broadcast error, or sample the wrong data silently.
    """
    algorithm = type(model).__name__
    expected = model.replay_buffer_class
    if expected is not None and not isinstance(buffer, expected):
        raise ValueError(
            f"{path} holds a {type(buffer).__name__}; {algorithm} needs a {expected.__name__} (or a subclass)"
        )
    for what in ("observation_space", "action_space"):
        theirs, ours = getattr(buffer, what, None), getattr(model, what)
        if isinstance(ours, spaces.Space) and theirs != ours:
            raise ValueError(
                f"{path} holds a replay buffer of {what.replace('_', ' ')} {theirs}; the {algorithm} model's "
                f"is {ours}"
            )
    if getattr(buffer, "n_envs", model.n_envs) != model.n_envs:
        raise ValueError(
            f"{path} holds a replay buffer for {buffer.n_envs} envs; the {algorithm} model has {model.n_envs}"
        )
