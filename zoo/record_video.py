"""``python -m zoo.record_video --algo mbpo --env Pendulum-v1 -f logs``: an mp4 of a trained sb3-mb agent.

rl-zoo3's flags and defaults (``-n 1000`` steps, ``--exp-id`` 0 = latest run, ``--load-best``,
``--load-checkpoint N``, ``-o`` output folder, default ``<log run>/videos``; deterministic actions except on
Atari / MiniGrid) and its video name (``final-model-<algo>-<EnvName>-step-0-to-step-<n>.mp4``).

The loop is ours rather than rl_zoo3's ``record_video``: that one is a script body under
``if __name__ == "__main__"`` (nothing to call, so push-to-hub could not reuse it on the agent it has
loaded), it hard-codes its list of off-policy algorithms, and it shows no progress. It does pass ``state``
and ``episode_start`` to ``predict``, and so does :func:`record_video` here (RecurrentPPO's contract: PlaNet's
belief and a warm-started plan travel through ``state``). Off-policy agents are loaded without allocating
their replay buffer (``buffer_size=1``), decided from the registry's ``off_policy`` metadata.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class TrainedAgent:
    """An agent of the zoo's log folder, loaded for watching, with the environment it is evaluated on.

    :param model: the algorithm, loaded without its replay buffer.
    :param env: ``VecEnv`` rendering ``rgb_array`` frames, with the run's normalisation and wrappers.
    :param model_path: the zip it was loaded from.
    :param log_path: the run folder ``<folder>/<algo>/<EnvName>_<N>``.
    :param name_prefix: rl-zoo3's video prefix (``final-model-<algo>-<EnvName>``, ``best-model-...``).
    :param hyperparams: the run's ``config.yml``.
    :param env_kwargs: environment arguments of the run (``args.yml``), without ``render_mode``.
    :param deterministic: whether actions are deterministic (rl-zoo3: yes unless Atari / MiniGrid).
    """

    model: Any
    env: Any
    model_path: str
    log_path: str
    name_prefix: str
    hyperparams: dict[str, Any]
    env_kwargs: dict[str, Any]
    deterministic: bool


def add_agent_arguments(parser: argparse.ArgumentParser) -> None:
    """rl-zoo3's flags that pick a trained agent in a log folder and its environment (record, push)."""
    from huggingface_sb3 import EnvironmentName
    from rl_zoo3.utils import ALGOS, StoreDict

    from zoo.train import register_algorithms

    register_algorithms()
    parser.add_argument("--env", help="Environment ID", type=EnvironmentName, required=True)
    parser.add_argument("-f", "--folder", help="Log folder", type=str, required=True)
    parser.add_argument("--algo", help="RL Algorithm", type=str, required=True, choices=list(ALGOS))
    parser.add_argument("--n-envs", help="Number of environments", default=1, type=int)
    parser.add_argument(
        "--exp-id", help="Experiment ID (default: 0: latest, -1: no exp folder)", default=0, type=int
    )
    parser.add_argument(
        "--deterministic", action="store_true", default=False, help="Use deterministic actions"
    )
    parser.add_argument("--stochastic", action="store_true", default=False, help="Use stochastic actions")
    parser.add_argument("--seed", help="Random generator seed", type=int, default=0)
    parser.add_argument(
        "--device", help="PyTorch device to be use (ex: cpu, cuda...)", default="auto", type=str
    )
    parser.add_argument(
        "--no-render",
        action="store_true",
        default=False,
        help="Do not render the environment (useful for tests)",
    )
    parser.add_argument(
        "--load-best",
        action="store_true",
        default=False,
        help="Load best model instead of last model if available",
    )
    parser.add_argument(
        "--load-checkpoint",
        type=int,
        help="Load checkpoint instead of last model if available, "
        "you must pass the number of timesteps corresponding to it",
    )
    parser.add_argument(
        "--load-last-checkpoint",
        action="store_true",
        default=False,
        help="Load last checkpoint instead of last model if available",
    )
    parser.add_argument(
        "--env-kwargs",
        type=str,
        nargs="+",
        action=StoreDict,
        help="Optional keyword argument to pass to the env constructor",
    )
    parser.add_argument(
        "--gym-packages",
        type=str,
        nargs="+",
        default=["sb3_mb"],
        help="Additional external Gym environment package modules to import (default: sb3_mb)",
    )


def _is_off_policy(algo: str, algorithm_class: type) -> bool:
    from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm

    import sb3_mb

    if algo in sb3_mb.ALGOS:
        return sb3_mb.ALGOS[algo].off_policy
    return issubclass(algorithm_class, OffPolicyAlgorithm)  # SB3 / sb3-contrib algorithms of rl-zoo3's table


def load_agent(args: argparse.Namespace, render: bool = True) -> TrainedAgent:
    """Load the agent that ``args`` (flags of :func:`add_agent_arguments`) name, as rl-zoo3's enjoy does.

    :param render: make the environment render ``rgb_array`` frames (for videos).
    :raises ValueError: if the run folder or the model zip does not exist (rl-zoo3's messages).
    """
    import importlib

    import yaml
    from rl_zoo3.exp_manager import ExperimentManager
    from rl_zoo3.utils import ALGOS, create_test_env, get_model_path, get_saved_hyperparams
    from stable_baselines3.common.utils import set_random_seed

    for package in args.gym_packages:
        importlib.import_module(package)
    env_name = args.env
    try:
        name_prefix, model_path, log_path = get_model_path(
            args.exp_id,
            args.folder,
            args.algo,
            env_name,
            args.load_best,
            args.load_checkpoint,
            args.load_last_checkpoint,
        )
    except AssertionError as error:  # rl-zoo3 asserts that the run folder exists
        raise ValueError(str(error)) from None
    print(f"Loading {model_path}")
    set_random_seed(args.seed)

    stats_path = os.path.join(log_path, env_name)
    hyperparams, maybe_stats_path = get_saved_hyperparams(stats_path, test_mode=True)
    env_kwargs: dict[str, Any] = {}
    if "env_kwargs" in hyperparams:
        env_kwargs.update(hyperparams.pop("env_kwargs"))
    args_path = os.path.join(stats_path, "args.yml")
    if os.path.isfile(args_path):
        with open(args_path) as file:
            loaded_args = yaml.load(file, Loader=yaml.UnsafeLoader)  # the user's own run (rl-zoo3's format)
        if loaded_args.get("env_kwargs") is not None:
            env_kwargs = dict(loaded_args["env_kwargs"])
    if args.env_kwargs is not None:
        env_kwargs.update(args.env_kwargs)

    env = create_test_env(
        env_name.gym_id,
        n_envs=args.n_envs,
        stats_path=maybe_stats_path,
        seed=args.seed,
        log_dir=None,
        should_render=not args.no_render,
        hyperparams=dict(hyperparams),
        env_kwargs={**env_kwargs, "render_mode": "rgb_array"} if render else env_kwargs,
    )

    algorithm_class = ALGOS[args.algo]
    kwargs: dict[str, Any] = dict(seed=args.seed, device=args.device)
    if _is_off_policy(args.algo, algorithm_class):
        kwargs["buffer_size"] = 1  # no memory is needed to watch the agent
        if "optimize_memory_usage" in hyperparams:  # rl-zoo3: incompatible with handle_timeout_termination
            kwargs["optimize_memory_usage"] = False
    # As rl-zoo3's enjoy: schedules pickled by another Python version may not load, and are not needed.
    custom_objects = {"learning_rate": 0.0, "lr_schedule": lambda _: 0.0, "clip_range": lambda _: 0.0}
    model = algorithm_class.load(model_path, env=env, custom_objects=custom_objects, **kwargs)

    is_atari = ExperimentManager.is_atari(env_name.gym_id)
    is_minigrid = ExperimentManager.is_minigrid(env_name.gym_id)
    stochastic = args.stochastic or ((is_atari or is_minigrid) and not args.deterministic)
    return TrainedAgent(
        model=model,
        env=env,
        model_path=model_path,
        log_path=log_path,
        name_prefix=name_prefix,
        hyperparams=hyperparams,
        env_kwargs=env_kwargs,
        deterministic=not stochastic,
    )


def record_video(
    model: Any,
    env: Any,
    video_folder: str | os.PathLike,
    n_timesteps: int,
    deterministic: bool = True,
    name_prefix: str = "rl-video",
    progress_bar: bool = True,
) -> Path:
    """Run ``model`` for ``n_timesteps`` steps of ``env`` and write the rendered frames as an mp4.

    ``predict`` gets the recurrent ``state`` it returned and ``episode_start`` (the ``dones`` of the last
    step, all ``True`` at the start), so stateful agents (PlaNet's belief) act as in ``evaluate_policy``.
    ``n_timesteps + 1`` frames are captured (the reset frame, then one per step) and written at the
    environment's ``render_fps`` by SB3's ``VecVideoRecorder`` (moviepy, imageio-ffmpeg), which may drop the
    last one when the clip's duration rounds down (Pendulum-v1 at 30 fps). ``env`` is closed.

    :param env: ``VecEnv`` whose ``render_mode`` is ``rgb_array``.
    :param video_folder: created if needed.
    :return: path of ``<name_prefix>-step-0-to-step-<n_timesteps>.mp4`` in ``video_folder``.
    :raises ValueError: if ``n_timesteps < 1``.
    """
    from stable_baselines3.common.vec_env import VecVideoRecorder
    from tqdm import tqdm

    if n_timesteps < 1:
        raise ValueError(f"n_timesteps must be at least 1, got {n_timesteps}")
    recorder = VecVideoRecorder(
        env,
        str(video_folder),
        record_video_trigger=lambda step: step == 0,
        video_length=n_timesteps,
        name_prefix=name_prefix,
    )
    obs = recorder.reset()
    state = None
    episode_start = np.ones((recorder.num_envs,), dtype=bool)
    try:
        for _ in tqdm(range(n_timesteps), desc="Recording", unit="step", disable=not progress_bar):
            action, state = model.predict(
                obs, state=state, episode_start=episode_start, deterministic=deterministic
            )
            obs, _, episode_start, _ = recorder.step(action)
    except KeyboardInterrupt:
        pass
    recorder.close()  # writes the video if the loop was interrupted before its last frame
    return Path(recorder.video_path)


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(prog="python -m zoo.record_video", description=__doc__.split("\n")[0])
    add_agent_arguments(parser)
    parser.add_argument(
        "-o", "--output-folder", help="Output folder (default: <run folder>/videos)", type=str
    )
    parser.add_argument("-n", "--n-timesteps", help="Number of timesteps", default=1000, type=int)
    parser.add_argument(
        "--custom-objects", action="store_true", default=False, help="Ignored: custom objects are always used"
    )
    args = parser.parse_args(argv)
    agent = load_agent(args)
    video_folder = args.output_folder or os.path.join(agent.log_path, "videos")
    path = record_video(
        agent.model, agent.env, video_folder, args.n_timesteps, agent.deterministic, agent.name_prefix
    )
    print(f"Saved {path}")


if __name__ == "__main__":
    main()
