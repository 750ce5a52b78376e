"""``python -m zoo.push_to_hub --algo mbpo --env Pendulum-v1 -f logs -orga ORG``: publish a trained agent.

Writes rl-zoo3's repository layout into a local folder, then uploads it with ``huggingface_hub``
(``create_repo`` + ``upload_folder``) to ``<organization>/<algo>-<EnvName>`` (see :mod:`zoo.hub_utils`):

- ``<algo>-<EnvName>.zip``: the run's model zip, copied byte for byte (rl-zoo3 re-saves the agent it loaded
  for evaluation, which writes ``buffer_size=1`` into the pushed hyperparameters), and ``<algo>-<EnvName>/``,
  the zip unpacked so the Hub shows its ``data`` and ``system_info.txt``;
- ``config.yml``, ``args.yml`` of the run; ``env_kwargs.yml``; ``vec_normalize.pkl`` if the run normalised;
  ``train_eval_metrics.zip`` (``evaluations.npz`` and monitor files);
- ``results.json``: a fresh evaluation (SB3's ``evaluate_policy``: mean and std of the episode return,
  ``n_eval_episodes``, ``is_deterministic``, ``eval_datetime``);
- ``replay.mp4``: :func:`zoo.record_video.record_video` (unless ``--no-render``);
- ``README.md``: a model card whose metadata has ``library_name``, tags (``sb3-mb``,
  ``reinforcement-learning``, the algorithm, the environment) and a ``model-index`` with the mean reward,
  as rl-zoo3 writes it.

rl_zoo3 2.9.2's own push_to_hub fails at import (``generate_metadata`` is gone from the huggingface_sb3 that
goes with huggingface-hub 2.x) and hard-codes its off-policy list; hence this module. ``--dry-run`` writes
the folder and uploads nothing. The token is huggingface_hub's (``HF_TOKEN`` or ``hf auth login``);
``HF_ENDPOINT`` picks the Hub.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path
from pprint import pformat
from typing import Any

from zoo.hub_utils import model_name, repo_id
from zoo.record_video import TrainedAgent, add_agent_arguments, load_agent, record_video

#: Tags every sb3-mb model card carries; the algorithm and environment ids are added.
TAGS = (
    "sb3-mb",
    "stable-baselines3",
    "reinforcement-learning",
    "deep-reinforcement-learning",
    "model-based-rl",
)


def evaluate(agent: TrainedAgent, n_eval_episodes: int, folder: Path) -> dict[str, Any]:
    """Evaluate ``agent`` (SB3's ``evaluate_policy``), write ``folder/results.json``; returns its content."""
    from stable_baselines3.common.evaluation import evaluate_policy

    mean_reward, std_reward = evaluate_policy(
        agent.model, agent.env, n_eval_episodes=n_eval_episodes, deterministic=agent.deterministic
    )
    results = {
        "mean_reward": float(mean_reward),
        "std_reward": float(std_reward),
        "is_deterministic": agent.deterministic,
        "n_eval_episodes": n_eval_episodes,
        "eval_datetime": datetime.datetime.now(datetime.timezone.utc).isoformat(),
    }
    (folder / "results.json").write_text(json.dumps(results, indent=2))
    return results


def model_card(
    algo: str,
    algo_class_name: str,
    organization: str,
    env_id: str,
    agent: TrainedAgent,
    results: dict[str, Any],
) -> Any:
    """The repository's ``README.md`` as a ``huggingface_hub.ModelCard`` (metadata + usage).

    ``model-index`` is rl-zoo3's: model name the algorithm's class name (``lower()`` gives ``--algo``, which
    rl-zoo3's ``get_hf_trained_models`` relies on), dataset the environment id, metric ``mean_reward`` as
    ``"<mean> +/- <std>"``.
    """
    from huggingface_hub import ModelCard, ModelCardData
    from huggingface_hub.repocard import metadata_eval_result

    mean, std = results["mean_reward"], results["std_reward"]
    evaluation = metadata_eval_result(
        model_pretty_name=algo_class_name,
        task_pretty_name="reinforcement-learning",
        task_id="reinforcement-learning",
        metrics_pretty_name="mean_reward",
        metrics_id="mean_reward",
        metrics_value=f"{mean:.2f} +/- {std:.2f}",
        dataset_pretty_name=env_id,
        dataset_id=env_id,
    )
    card_data = ModelCardData(library_name="stable-baselines3", tags=[*TAGS, algo, env_id], **evaluation)
    hyperparams = {key: value for key, value in agent.hyperparams.items() if key != "normalize_kwargs"}
    env_kwargs = ""
    if agent.env_kwargs:
        env_kwargs = f"\n## Environment arguments\n\n```python\n{pformat(agent.env_kwargs)}\n```\n"
    text = f"""
# **{algo_class_name}** agent playing **{env_id}**

A trained **{algo_class_name}** agent playing **{env_id}**, made with sb3-mb (model-based reinforcement
learning for [Stable-Baselines3](https://github.com/DLR-RM/stable-baselines3)) and its zoo, which builds on
the [RL Zoo](https://github.com/DLR-RM/rl-baselines3-zoo).

Mean reward: **{mean:.2f} +/- {std:.2f}** (`evaluate_policy`, n_eval_episodes={results["n_eval_episodes"]},
{"deterministic" if results["is_deterministic"] else "stochastic"} actions).

## Usage (with the sb3-mb zoo)

```bash
pip install -e ".[zoo]"   # in a clone of sb3-mb
# Download the agent into logs/ (the model zip and config.yml are unpickled when loaded:
# --trust-pickle says you trust this repository)
python -m zoo.load_from_hub --algo {algo} --env {env_id} -orga {organization} -f logs/ --trust-pickle
python -m zoo.enjoy --algo {algo} --env {env_id} -f logs/
```

or `sb3-mb-zoo load-from-hub ...` and `sb3-mb-zoo enjoy ...`.

## Training (with the sb3-mb zoo)

```bash
python -m zoo.train --algo {algo} --env {env_id} -f logs/
# Evaluate, record a video and upload
python -m zoo.push_to_hub --algo {algo} --env {env_id} -f logs/ -orga {organization}
```

## Hyperparameters

```python
{pformat(hyperparams)}
```
{env_kwargs}"""
    return ModelCard(f"---\n{card_data.to_yaml()}\n---\n{text}")


def write_repo_folder(args: argparse.Namespace, agent: TrainedAgent, folder: Path) -> dict[str, Any]:
    """Write every file of the repository into ``folder`` (created); returns the evaluation results."""
    import yaml
    from rl_zoo3.utils import ALGOS

    folder.mkdir(parents=True, exist_ok=True)
    name = model_name(args.algo, args.env.gym_id)
    log_path = Path(agent.log_path)
    config_folder = log_path / args.env

    shutil.copyfile(agent.model_path, folder / f"{name}.zip")
    with zipfile.ZipFile(folder / f"{name}.zip") as archive:
        archive.extractall(folder / name)
    for filename in ("config.yml", "args.yml"):
        shutil.copyfile(config_folder / filename, folder / filename)
    with open(folder / "env_kwargs.yml", "w") as file:
        yaml.dump(agent.env_kwargs, file)
    if (config_folder / "vecnormalize.pkl").is_file():
        shutil.copyfile(config_folder / "vecnormalize.pkl", folder / "vec_normalize.pkl")
    with zipfile.ZipFile(folder / "train_eval_metrics.zip", "w") as archive:
        if (log_path / "evaluations.npz").is_file():
            archive.write(log_path / "evaluations.npz", arcname="evaluations.npz")
        for monitor_file in sorted(glob.glob(str(log_path / "*.csv"))):
            archive.write(monitor_file, arcname=os.path.basename(monitor_file))

    results = evaluate(agent, args.n_eval_episodes, folder)
    print(f"Mean reward: {results['mean_reward']:.2f} +/- {results['std_reward']:.2f}")
    if not args.no_render:
        with tempfile.TemporaryDirectory() as video_folder:
            video = record_video(
                agent.model, agent.env, video_folder, args.n_timesteps, agent.deterministic, "replay"
            )
            shutil.move(video, folder / "replay.mp4")
    else:
        agent.env.close()

    algo_class_name = ALGOS[args.algo].__name__
    card = model_card(args.algo, algo_class_name, args.organization, args.env.gym_id, agent, results)
    card.save(folder / "README.md")
    return results


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m zoo.push_to_hub", description=__doc__.split("\n")[0])
    add_agent_arguments(parser)
    parser.add_argument(
        "-n", "--n-timesteps", help="Number of timesteps for the video recording", default=1000, type=int
    )
    parser.add_argument(
        "--n-eval-episodes", help="Episodes of the evaluation (results.json)", default=10, type=int
    )
    parser.add_argument(
        "-orga", "--organization", help="Huggingface hub organization", type=str, required=True
    )
    parser.add_argument(
        "-name", "--repo-name", help="Huggingface hub repository name, by default 'algo-env'", type=str
    )
    parser.add_argument("-m", "--commit-message", help="Commit message", default="Initial commit", type=str)
    parser.add_argument("--dry-run", action="store_true", help="Write the repository folder, upload nothing")
    parser.add_argument(
        "--local-dir",
        type=str,
        help="Folder the repository is written to (default: hub/<repo-name> with --dry-run, else a temporary "
        "one)",
    )
    args = parser.parse_args(argv)

    target = repo_id(args.organization, args.algo, args.env.gym_id, args.repo_name)
    agent = load_agent(args, render=not args.no_render)
    if args.local_dir is None and not args.dry_run:
        with tempfile.TemporaryDirectory() as folder:
            write_repo_folder(args, agent, Path(folder))
            upload(Path(folder), target, args.commit_message)
        return
    folder = Path(args.local_dir or os.path.join("hub", target.split("/", 1)[1]))
    write_repo_folder(args, agent, folder)
    if args.dry_run:
        print(f"Dry run: wrote the repository {target} to {folder}, uploaded nothing")
        return
    upload(folder, target, args.commit_message)


def upload(folder: Path, target: str, commit_message: str) -> None:
    """``create_repo`` (if missing), then ``upload_folder`` of ``folder`` to the model repository ``target``.

    The token and the Hub are huggingface_hub's: ``HF_TOKEN`` or ``hf auth login``; ``HF_ENDPOINT``.
    """
    from huggingface_hub import HfApi

    api = HfApi()
    print(f"Uploading to {target}, make sure to have the rights")
    url = api.create_repo(repo_id=target, exist_ok=True)
    api.upload_folder(repo_id=target, folder_path=folder, commit_message=commit_message)
    print(f"Your model is pushed to the hub: {url}")


if __name__ == "__main__":
    main()
