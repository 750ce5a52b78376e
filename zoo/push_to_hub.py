"""``python -m zoo.push_to_hub --algo mbpo --env Pendulum-v1 -f logs -orga ORG``: publish a trained agent.

Writes rl-zoo3's repository layout into a local folder, then uploads it with ``huggingface_hub``
(``create_repo`` + ``upload_folder``) to ``<organization>/<algo>-<EnvName>`` (see :mod:`zoo.hub_utils`):

- ``<algo>-<EnvName>.zip``: the run's model zip, copied byte for byte (rl-zoo3 re-saves the agent it loaded
  for evaluation, which writes ``buffer_size=1`` into the pushed hyperparameters), and ``<algo>-<EnvName>/``,
  the zip unpacked so the Hub shows its ``data`` and ``system_info.txt``;
- ``config.yml``, ``args.yml`` of the run; ``env_kwargs.yml``; ``vec_normalize.pkl`` if the run normalised;
  ``train_eval_metrics.zip`` (``evaluations.npz`` and monitor files);
- ``results.json``: a fresh evaluation (SB3's ``evaluate_policy``: mean and std of the episode return,
  ``n_eval_episodes``, ``is_deterministic``, ``eval_datetime``; and ``seed``, ``agent_sha256``);
- ``evaluation_curve.png``: the run's ``evaluations.npz`` plotted by ``scripts/all_plots.py`` (if it has one);
- ``replay.mp4``: :func:`zoo.record_video.record_video` (unless ``--no-render``);
- ``README.md``: a model card (:func:`model_card`): the curve, a results table, usage, hyperparameters, the
  env's observation and action spaces, the BibTeX of the method's paper; its metadata (written by
  huggingface_hub's ``metadata_save``, as rl-zoo3's) has ``library_name``, tags (``sb3-mb``,
  ``reinforcement-learning``, the algorithm, the environment) and a ``model-index`` with the mean reward.

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

import numpy as np

from zoo.hub_utils import agent_fingerprint, model_name, repo_id
from zoo.record_video import TrainedAgent, add_agent_arguments, load_agent, record_video

#: Tags every sb3-mb model card carries; the algorithm and environment ids are added.
TAGS = (
    "sb3-mb",
    "stable-baselines3",
    "reinforcement-learning",
    "deep-reinforcement-learning",
    "model-based-rl",
)

#: The curve of the run's ``EvalCallback`` evaluations, uploaded beside the card and shown in it.
CURVE_FILE = "evaluation_curve.png"

#: BibTeX of the paper of each registered algorithm, printed in its model card ("Citation").
CITATIONS = {
    "mbpo": """@inproceedings{janner2019mbpo,
  title     = {When to Trust Your Model: Model-Based Policy Optimization},
  author    = {Janner, Michael and Fu, Justin and Zhang, Marvin and Levine, Sergey},
  booktitle = {Advances in Neural Information Processing Systems},
  volume    = {32},
  year      = {2019},
  eprint    = {1906.08253},
  archivePrefix = {arXiv}
}""",
    "planet": """@inproceedings{hafner2019planet,
  title     = {Learning Latent Dynamics for Planning from Pixels},
  author    = {Hafner, Danijar and Lillicrap, Timothy and Fischer, Ian and Villegas, Ruben and Ha, David
               and Lee, Honglak and Davidson, James},
  booktitle = {Proceedings of the 36th International Conference on Machine Learning},
  pages     = {2555--2565},
  year      = {2019},
  eprint    = {1811.04551},
  archivePrefix = {arXiv}
}""",
    "steve": """@inproceedings{buckman2018steve,
  title     = {Sample-Efficient Reinforcement Learning with Stochastic Ensemble Value Expansion},
  author    = {Buckman, Jacob and Hafner, Danijar and Tucker, George and Brevdo, Eugene and Lee, Honglak},
  booktitle = {Advances in Neural Information Processing Systems},
  volume    = {31},
  year      = {2018},
  eprint    = {1807.01675},
  archivePrefix = {arXiv}
}""",
    "worldmodels": """@article{ha2018worldmodels,
  title   = {World Models},
  author  = {Ha, David and Schmidhuber, J{\\"u}rgen},
  journal = {arXiv preprint arXiv:1803.10122},
  year    = {2018},
  doi     = {10.5281/zenodo.1207631},
  url     = {https://worldmodels.github.io}
}""",
    "gammamve": """@inproceedings{janner2020gammamodels,
  title     = {Generative Temporal Difference Learning for Infinite-Horizon Prediction},
  author    = {Janner, Michael and Mordatch, Igor and Levine, Sergey},
  booktitle = {Advances in Neural Information Processing Systems},
  volume    = {33},
  year      = {2020},
  eprint    = {2010.14496},
  archivePrefix = {arXiv}
}""",
}
# WorldModelsPPO is the World Models of wassname's Sonic fork (PPO controller): the method's paper is Ha &
# Schmidhuber's.
CITATIONS["worldmodelsppo"] = CITATIONS["worldmodels"]


def evaluate(
    agent: TrainedAgent, n_eval_episodes: int, folder: Path, seed: int = 0, fingerprint: str | None = None
) -> dict[str, Any]:
    """Evaluate ``agent`` (SB3's ``evaluate_policy``), write ``folder/results.json``; returns its content.

    ``results.json`` holds rl-zoo3's keys (``mean_reward``, ``std_reward`` of the episode returns,
    ``is_deterministic``, ``n_eval_episodes``, ``eval_datetime``) and sb3-mb's ``seed`` (of the evaluation
    env) and ``agent_sha256`` (``fingerprint``, :func:`zoo.hub_utils.agent_fingerprint`), with which
    ``scripts/publish_all.py`` recognises an agent already published with this evaluation.
    """
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
        "seed": seed,
        "agent_sha256": fingerprint,
    }
    (folder / "results.json").write_text(json.dumps(results, indent=2))
    return results


def _all_plots():
    """``scripts/all_plots.py`` of this checkout as a module (``scripts/`` is not a package), or ``None``."""
    import importlib.util

    scripts = Path(__file__).resolve().parent.parent / "scripts"
    if not (scripts / "all_plots.py").is_file():
        return None
    if str(scripts) not in sys.path:  # all_plots imports its sibling plot_train
        sys.path.insert(0, str(scripts))
    if "sb3_mb_scripts_all_plots" not in sys.modules:
        spec = importlib.util.spec_from_file_location("sb3_mb_scripts_all_plots", scripts / "all_plots.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
    return sys.modules["sb3_mb_scripts_all_plots"]


def evaluation_curve(log_path: Path, algo: str, env_id: str, output: Path) -> dict[str, Any] | None:
    """Plot the run's ``evaluations.npz`` (``EvalCallback``: mean return of its episodes at each evaluation,
    band of one standard error over runs, here one run) with ``scripts/all_plots.py`` to ``output`` (PNG).

    :return: ``all_plots.merge_runs``'s entry (``timesteps`` ``(n_eval,)``, ``mean`` ``(n_eval,)``...) and
        ``last_returns`` (the returns of the last evaluation, ``(n_eval_episodes,)``), or
        ``None`` (and nothing written) if the run has no evaluation or ``scripts/`` is not there.
    """
    all_plots = _all_plots()
    path = log_path / "evaluations.npz"
    if all_plots is None or not path.is_file():
        return None
    entry = all_plots.merge_runs([str(path)])
    if entry is None:
        return None
    with np.load(path) as archive:
        entry["last_returns"] = np.asarray(archive["results"], dtype=np.float64)[-1].reshape(-1)
    from matplotlib import pyplot as plt

    figure = all_plots.plot_env(env_id, {algo.upper(): entry}, str(output), million=False)
    plt.close(figure)
    return entry


def results_table(results: dict[str, Any], curve: dict[str, Any] | None, n_timesteps: Any) -> str:
    """The card's markdown table: the evaluation at push time and the last evaluation during training."""
    actions = "deterministic" if results["is_deterministic"] else "stochastic"
    rows = [
        "| evaluation | env steps trained | episodes | actions | mean return | std return |",
        "|---|---:|---:|---|---:|---:|",
        f"| `evaluate_policy` at upload (seed {results.get('seed', 0)}) | {n_timesteps} "
        f"| {results['n_eval_episodes']} | {actions} | {results['mean_reward']:.2f} "
        f"| {results['std_reward']:.2f} |",
    ]
    if curve is not None:
        returns = curve["last_returns"]
        rows.append(
            f"| last `EvalCallback` evaluation of training | {int(curve['timesteps'][-1])} | {len(returns)} "
            f"| deterministic | {float(np.mean(returns)):.2f} | {float(np.std(returns)):.2f} |"
        )
    return "\n".join(rows)


def environment_spaces(env: Any) -> tuple[Any, Any]:
    """``(observation space, action space)`` of the environment inside the ``VecEnv`` ``env``: the spaces
    ``gymnasium.make`` gives (with the run's gym wrappers), not the VecEnv's (SB3 transposes images)."""
    return env.get_attr("observation_space")[0], env.get_attr("action_space")[0]


def model_card(
    algo: str,
    algo_class_name: str,
    organization: str,
    env_id: str,
    agent: TrainedAgent,
    results: dict[str, Any],
    curve: dict[str, Any] | None = None,
    spaces: tuple[Any, Any] | None = None,
) -> tuple[str, dict[str, Any]]:
    """The repository's ``README.md``: its text and its metadata (as rl-zoo3's ``generate_model_card``).

    The text: the mean return, the evaluation curve (``evaluation_curve.png`` beside the card, if ``curve``),
    the results table, usage, the hyperparameters (``config.yml``), the observation and action spaces of
    the environment (:func:`environment_spaces`, or ``spaces``), environment arguments, and the BibTeX of
    the method's paper (:data:`CITATIONS`).
    The metadata, written by huggingface_hub's ``metadata_save``: ``library_name``, ``tags`` and the
    ``model-index`` of ``metadata_eval_result``: model name the algorithm's class name (``lower()`` gives
    ``--algo``, which rl-zoo3's ``get_hf_trained_models`` relies on), dataset the environment id, metric
    ``mean_reward`` as ``"<mean> +/- <std>"``.
    """
    from huggingface_hub.repocard import metadata_eval_result

    mean, std = results["mean_reward"], results["std_reward"]
    metadata = {
        "library_name": "stable-baselines3",
        "tags": [*TAGS, algo, env_id],
        **metadata_eval_result(
            model_pretty_name=algo_class_name,
            task_pretty_name="reinforcement-learning",
            task_id="reinforcement-learning",
            metrics_pretty_name="mean_reward",
            metrics_id="mean_reward",
            metrics_value=f"{mean:.2f} +/- {std:.2f}",
            dataset_pretty_name=env_id,
            dataset_id=env_id,
        ),
    }
    hyperparams = {key: value for key, value in agent.hyperparams.items() if key != "normalize_kwargs"}
    env_kwargs = ""
    if agent.env_kwargs:
        env_kwargs = f"\n## Environment arguments\n\n```python\n{pformat(agent.env_kwargs)}\n```\n"
    curve_text = ""
    if curve is not None:
        curve_text = (
            f"\n![Evaluation curve of {algo_class_name} on {env_id}]({CURVE_FILE})\n\n"
            "Mean return of the deterministic policy at each evaluation during training (the run's "
            "`evaluations.npz`, in `train_eval_metrics.zip`).\n"
        )
    observation_space, action_space = spaces or environment_spaces(agent.env)
    citation = CITATIONS.get(algo)
    citation_text = f"\n## Citation\n\n```bibtex\n{citation}\n```\n" if citation else ""
    text = f"""
# **{algo_class_name}** agent playing **{env_id}**

A trained **{algo_class_name}** agent playing **{env_id}**, made with sb3-mb (model-based reinforcement
learning for [Stable-Baselines3](https://github.com/DLR-RM/stable-baselines3)) and its zoo, which builds on
the [RL Zoo](https://github.com/DLR-RM/rl-baselines3-zoo).

Mean reward: **{mean:.2f} +/- {std:.2f}** (`evaluate_policy`, n_eval_episodes={results["n_eval_episodes"]},
{"deterministic" if results["is_deterministic"] else "stochastic"} actions).
{curve_text}
## Results

{results_table(results, curve, agent.model.num_timesteps)}

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

## Environment

- Observation space: `{observation_space}`
- Action space: `{action_space}`
{env_kwargs}{citation_text}"""
    return text, metadata


def write_repo_folder(args: argparse.Namespace, agent: TrainedAgent, folder: Path) -> dict[str, Any]:
    """Write every file of the repository into ``folder`` (created); returns the evaluation results."""
    import yaml
    from huggingface_hub.repocard import metadata_save
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
    curve = evaluation_curve(log_path, args.algo, args.env.gym_id, folder / CURVE_FILE)

    spaces = environment_spaces(agent.env)  # before the env is closed
    fingerprint = agent_fingerprint(agent.model_path, config_folder)
    results = evaluate(agent, args.n_eval_episodes, folder, args.seed, fingerprint)
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
    text, metadata = model_card(
        args.algo, algo_class_name, args.organization, args.env.gym_id, agent, results, curve, spaces
    )
    # As rl-zoo3's save_model_card: the text, then the metadata block written by huggingface_hub.
    (folder / "README.md").write_text(text, encoding="utf-8")
    metadata_save(folder / "README.md", metadata)
    return results


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Push (or with ``--dry-run`` write) one agent; returns the ``results.json`` written."""
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
            results = write_repo_folder(args, agent, Path(folder))
            upload(Path(folder), target, args.commit_message)
        return results
    folder = Path(args.local_dir or os.path.join("hub", target.split("/", 1)[1]))
    results = write_repo_folder(args, agent, folder)
    if args.dry_run:
        print(f"Dry run: wrote the repository {target} to {folder}, uploaded nothing")
        return results
    upload(folder, target, args.commit_message)
    return results


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
