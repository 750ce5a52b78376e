"""``python -m zoo.load_from_hub --algo mbpo --env Pendulum-v1 -orga ORG -f logs --trust-pickle``.

Downloads ``<organization>/<algo>-<EnvName>`` (the layout :mod:`zoo.push_to_hub` and rl-zoo3 write, see
:mod:`zoo.hub_utils`) with ``hf_hub_download`` into the zoo's log layout, so that ``python -m zoo.enjoy``
runs on it::

    logs/<algo>/<EnvName>_<N>/<EnvName>.zip
    logs/<algo>/<EnvName>_<N>/<EnvName>/{config.yml, args.yml, env_kwargs.yml[, vecnormalize.pkl]}
    logs/<algo>/<EnvName>_<N>/{evaluations.npz, *.monitor.csv}      (from train_eval_metrics.zip)

Files come through huggingface_hub's cache (``HF_HUB_CACHE``), so with ``HF_HUB_OFFLINE=1`` a repository
downloaded once installs again without network.

Trust: loading a zoo agent executes code of the repository's author: the model zip holds cloudpickled
objects, ``vec_normalize.pkl`` is a pickle, and rl-zoo3's ``config.yml`` / ``args.yml`` are python-object
YAML read with ``yaml.UnsafeLoader``. This command itself deserialises none of them, but its whole purpose is
to put them where ``enjoy`` / ``record_video`` will. So without ``--trust-pickle`` it refuses before any
request or write: nothing is downloaded, nothing is written under ``-f``. With it, every file is downloaded
(into the cache) and checked before the run folder is created, so a repository lacking a required file leaves
no half-written run behind.

rl_zoo3 2.9.2's own load_from_hub goes through huggingface_sb3 and catches ``requests``' ``HTTPError``, which
huggingface-hub 2.x (httpx) no longer raises; hence this module.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import zipfile
from pathlib import Path

from zoo.hub_utils import OPTIONAL_FILES, PICKLED_KINDS, environment_name, model_name, repo_id, required_files

TRUST_FLAG = "--trust-pickle"


class UntrustedRepositoryError(RuntimeError):
    """Raised when a repository would be installed without the user's explicit trust (``--trust-pickle``)."""


class IncompleteRepositoryError(RuntimeError):
    """Raised when a repository lacks a file of the zoo's layout (foreign or corrupt repository)."""


def download_from_hub(
    algo: str,
    env_id: str,
    organization: str,
    folder: str,
    exp_id: int = 0,
    repo_name: str | None = None,
    force: bool = False,
    trust_pickle: bool = False,
) -> Path:
    """Install the agent of ``<organization>/<repo_name or algo-EnvName>`` as a run of the log ``folder``.

    :param exp_id: run number ``N`` of ``<EnvName>_<N>``; 0: one past the latest run, -1: ``folder/algo``
        itself (rl-zoo3's convention).
    :param force: replace the run folder if it exists.
    :param trust_pickle: the user trusts the repository's author to run code on this machine (see module).
    :return: the run folder.
    :raises UntrustedRepositoryError: without ``trust_pickle``; nothing was requested nor written.
    :raises IncompleteRepositoryError: if the repository lacks a required file (listed), does not exist, or
        is not in the cache while offline; nothing was written.
    :raises ValueError: if the run folder exists and ``force`` is not set.
    """
    target = repo_id(organization, algo, env_id, repo_name)
    required = required_files(algo, env_id)
    if not trust_pickle:
        raise UntrustedRepositoryError(
            f"Refusing to load {target} from the Hugging Face Hub: {PICKLED_KINDS} are unpickled when the "
            "agent is loaded (enjoy, record-video), which runs any code the repository's author put in them. "
            f"Nothing was downloaded. If you trust {organization}, pass {TRUST_FLAG}."
        )

    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError, RepositoryNotFoundError

    print(f"Downloading from {target}")
    paths: dict[str, str] = {}
    missing = []
    for filename in (*required, *OPTIONAL_FILES):
        try:
            paths[filename] = hf_hub_download(repo_id=target, filename=filename)
        except RepositoryNotFoundError:
            raise IncompleteRepositoryError(
                f"The repository {target} was not found (or is private and the token has no access)."
            ) from None
        except LocalEntryNotFoundError as error:  # offline (or Hub unreachable) and not in the cache
            if filename in required:
                raise IncompleteRepositoryError(
                    f"{filename} of {target} is not in the local cache and the Hub cannot be reached "
                    f"(HF_HUB_OFFLINE is {'set' if _offline() else 'not set'}): {error}"
                ) from None
        except EntryNotFoundError:  # the repository has no such file
            if filename in required:
                missing.append(filename)
    if missing:
        raise IncompleteRepositoryError(
            f"{target} is not a zoo repository of {algo} on {env_id}: it lacks {', '.join(missing)}. "
            f"Expected files: {', '.join(required)} (and optionally {', '.join(OPTIONAL_FILES)}). "
            "Check --algo / --env / --repo-name; nothing was written."
        )

    env_name = environment_name(env_id)
    log_path = _run_folder(folder, algo, env_name, exp_id)
    if log_path.is_dir():
        if not force:
            raise ValueError(
                f"The folder {log_path} already exists, use --force to overwrite it, "
                "or choose '--exp-id 0' to create a new folder"
            )
        print(f"The folder {log_path} already exists, overwriting")
        shutil.rmtree(log_path)
    print(f"Saving to {log_path}")
    config_folder = log_path / env_name
    config_folder.mkdir(parents=True)
    shutil.copyfile(paths[f"{model_name(algo, env_id)}.zip"], log_path / f"{env_name}.zip")
    for filename in ("config.yml", "args.yml", "env_kwargs.yml"):
        shutil.copyfile(paths[filename], config_folder / filename)
    if "vec_normalize.pkl" in paths:
        shutil.copyfile(paths["vec_normalize.pkl"], config_folder / "vecnormalize.pkl")
    if "train_eval_metrics.zip" in paths:
        with zipfile.ZipFile(paths["train_eval_metrics.zip"]) as archive:
            archive.extractall(log_path)  # zipfile drops absolute paths and ".." components
    return log_path


def _offline() -> bool:
    from huggingface_hub import constants

    return constants.HF_HUB_OFFLINE


def _run_folder(folder: str, algo: str, env_name: str, exp_id: int) -> Path:
    from rl_zoo3.utils import get_latest_run_id

    if exp_id == 0:
        exp_id = get_latest_run_id(os.path.join(folder, algo), env_name) + 1
    if exp_id > 0:
        return Path(folder, algo, f"{env_name}_{exp_id}")
    return Path(folder, algo)


def main(argv: list[str] | None = None) -> None:
    import sb3_mb

    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m zoo.load_from_hub", description=__doc__.split("\n")[0])
    parser.add_argument("--env", help="environment ID", type=str, required=True)
    parser.add_argument("-f", "--folder", help="Log folder", type=str, required=True)
    parser.add_argument("-orga", "--organization", help="Huggingface hub organization", default="sb3")
    parser.add_argument(
        "-name", "--repo-name", help="Huggingface hub repository name, by default 'algo-env_id'", type=str
    )
    parser.add_argument("--algo", help="RL Algorithm", type=str, required=True)
    parser.add_argument(
        "--exp-id", help="Experiment ID (default: 0: latest, -1: no exp folder)", default=0, type=int
    )
    parser.add_argument(
        "--force",
        action="store_true",
        default=False,
        help="Allow overwritting exp folder if it already exist",
    )
    parser.add_argument(
        TRUST_FLAG,
        action="store_true",
        default=False,
        help="Trust the repository: its model zip, vec_normalize.pkl, config.yml and args.yml are unpickled "
        "when the agent is loaded, which runs code of the repository's author",
    )
    args = parser.parse_args(argv)
    if args.algo not in sb3_mb.list_algorithms():
        from rl_zoo3.utils import ALGOS

        if args.algo not in ALGOS:
            parser.error(f"argument --algo: invalid choice: {args.algo!r}")
    try:
        download_from_hub(
            algo=args.algo,
            env_id=args.env,
            organization=args.organization,
            folder=args.folder,
            exp_id=args.exp_id,
            repo_name=args.repo_name,
            force=args.force,
            trust_pickle=args.trust_pickle,
        )
    except (UntrustedRepositoryError, IncompleteRepositoryError, ValueError) as error:
        sys.exit(f"load_from_hub: {error}")


if __name__ == "__main__":
    main()
