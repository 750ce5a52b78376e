"""Training curves (episode return against env steps, smoothed) from the zoo's Monitor files.

Usage::

    python scripts/plot_train.py -a mbpo planet -e Pendulum-v1 -f logs -o train_pendulum.png
    python scripts/plot_train.py -a mbpo -e Pendulum-v1 Hopper-v5 -f logs -o train.svg -x episodes -w 10

Reads every run ``<exp-folder>/<algo>/<EnvId>_<N>/`` of the given algorithms and envs (``*.monitor.csv``
written by SB3's ``Monitor`` during ``python -m zoo.train``), smooths each run's episode returns over a
rolling window of ``--episode-window`` episodes and draws one curve per run, labelled
``<algo> <EnvId>_<N>``, into one figure saved to ``--output`` (the format from its suffix: ``.png``,
``.svg``, ``.pdf``). An env id with a namespace (``sb3_mb/CartpoleBalance-v0``) is looked up under its
folder name (``sb3_mb-CartpoleBalance-v0``, as the zoo writes it).

Follows rl-zoo3's ``rl_zoo3/plots/plot_train.py`` (same flags, same axes, SB3's ``load_results``,
``ts2xy`` and ``window_func`` for the data), which cannot be imported as is: it is one ``main`` that reads
``sys.argv`` and ends in ``plt.show()``, and its module imports ``seaborn``, which the zoo does not require.
Where this script differs, and why:

- several algorithms at once (``-a`` takes a list), and the figure is written to ``--output``;
- run folders are matched exactly (``<EnvId>_<N>``), not by substring: rl-zoo3 would mix
  ``Hopper-v5`` runs into ``Hopper-v5-custom`` plots;
- a run shorter than the window is drawn as the running mean of its episodes so far (with markers)
  instead of being dropped silently (debug and model-based runs have few episodes: MBPO on Pendulum-v1 at
  debug size has 3);
- a folder with no runs, or runs without Monitor files, is an error naming the folder.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass

import numpy as np

# The readers of the zoo's log layout, shared with all_plots.py, benchmark.py and compile_scores.py.
from sb3_mb.common.scores import env_folder_name, run_folders

X_AXES = {
    "steps": ("timesteps", "Timesteps"),
    "episodes": ("episodes", "Episodes"),
    "time": ("walltime_hrs", "Walltime (hours)"),
}
Y_AXES = {
    "reward": ("r", "Training episodic return"),
    "length": ("l", "Training episode length"),
    "success": ("is_success", "Training success rate"),
}


@dataclass
class Curve:
    """One run's smoothed curve: ``x`` and ``y`` of shape ``(n_points,)``, from ``n_episodes`` episodes."""

    label: str
    folder: str
    x: np.ndarray
    y: np.ndarray
    n_episodes: int


def load_curves(
    exp_folder: str,
    algos: list[str],
    envs: list[str],
    x_axis: str = "steps",
    y_axis: str = "reward",
    episode_window: int = 100,
    max_timesteps: int | None = None,
) -> list[Curve]:
    """Smoothed training curves of every run of ``algos`` x ``envs`` under ``exp_folder``.

    Each curve is SB3's ``window_func(x, y, episode_window, np.mean)`` (as rl-zoo3's), or, for a run of fewer
    than ``episode_window`` episodes, the running mean of its returns so far (one point per episode); ``x``
    is cumulative env steps (``steps``), episode count (``episodes``) or hours since the start (``time``).

    :raises FileNotFoundError: no run folder, or no Monitor file in any of them (the message names the folders
        searched).
    :raises KeyError: the Monitor files have no column for ``y_axis`` (``is_success`` is only logged for envs
        that report it).
    """
    from stable_baselines3.common.monitor import LoadMonitorResultsError, load_results
    from stable_baselines3.common.results_plotter import ts2xy, window_func

    x_key = X_AXES[x_axis][0]
    y_key = Y_AXES[y_axis][0]
    curves, searched, without_monitor = [], [], []
    for algo in algos:
        for env_id in envs:
            searched.append(os.path.join(exp_folder, algo, f"{env_folder_name(env_id)}_<N>"))
            for folder in run_folders(exp_folder, algo, env_id):
                try:
                    data_frame = load_results(folder)
                except LoadMonitorResultsError:
                    without_monitor.append(folder)
                    continue
                if max_timesteps is not None:
                    data_frame = data_frame[data_frame.l.cumsum() <= max_timesteps]
                if len(data_frame) == 0:
                    without_monitor.append(folder)
                    continue
                if y_key not in data_frame:
                    raise KeyError(
                        f"{folder}: the Monitor files have no column {y_key!r} (--y-axis {y_axis})"
                    )
                x, _ = ts2xy(data_frame, x_key)
                y = np.asarray(data_frame[y_key], dtype=np.float64)
                if len(y) >= episode_window:
                    x, y = window_func(x, y, episode_window, np.mean)
                else:
                    y = np.cumsum(y) / np.arange(1, len(y) + 1)
                label = f"{algo} {os.path.basename(folder)}"
                curves.append(Curve(label, folder, np.asarray(x), np.asarray(y), len(data_frame)))
    if not curves:
        detail = (
            f"; runs without a complete episode in a Monitor file: {without_monitor}"
            if without_monitor
            else ""
        )
        raise FileNotFoundError(f"no training curves under {exp_folder!r}: searched {searched}{detail}")
    return curves


def plot_curves(
    curves: list[Curve],
    output: str,
    x_axis: str = "steps",
    y_axis: str = "reward",
    title: str | None = None,
    figsize: tuple[float, float] = (6.4, 4.8),
    fontsize: int = 14,
):
    """Draw ``curves`` into one figure, save it to ``output`` (format from the suffix); returns the figure."""
    import matplotlib

    if "MPLBACKEND" not in os.environ:
        matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    y_label = Y_AXES[y_axis][1]
    fig, ax = plt.subplots(figsize=figsize)
    ax.set_title(title or y_label, fontsize=fontsize)
    ax.set_xlabel(X_AXES[x_axis][1], fontsize=fontsize)
    ax.set_ylabel(y_label, fontsize=fontsize)
    for curve in curves:
        # Runs shorter than the window (running mean) get markers: they have few points.
        marker = "o" if len(curve.x) == curve.n_episodes else None
        ax.plot(curve.x, curve.y, linewidth=2, marker=marker, label=curve.label)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    parent = os.path.dirname(os.path.abspath(output))
    os.makedirs(parent, exist_ok=True)
    fig.savefig(output)
    return fig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Plot smoothed training curves from the zoo's Monitor files (logs/<algo>/<EnvId>_<N>/).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("-a", "--algos", "--algo", nargs="+", required=True, help="Algorithm(s) to include")
    parser.add_argument("-e", "--env", nargs="+", required=True, help="Environment id(s) to include")
    parser.add_argument("-f", "--exp-folder", default="logs", help="Log folder of the zoo (holds <algo>/)")
    parser.add_argument("-o", "--output", required=True, help="Image file to write (.png, .svg, .pdf)")
    parser.add_argument("-x", "--x-axis", choices=list(X_AXES), default="steps", help="X-axis")
    parser.add_argument("-y", "--y-axis", choices=list(Y_AXES), default="reward", help="Y-axis")
    parser.add_argument("-w", "--episode-window", type=int, default=100, help="Rolling window (episodes)")
    parser.add_argument("-max", "--max-timesteps", type=int, help="Keep episodes ending by this many steps")
    parser.add_argument("--title", help="Figure title (default: the y-axis name)")
    parser.add_argument("--figsize", nargs=2, type=float, default=[6.4, 4.8], help="Width, height (inches)")
    parser.add_argument("--fontsize", type=int, default=14, help="Font size")
    args = parser.parse_args(argv)
    if args.episode_window < 1:
        parser.error(f"--episode-window must be >= 1, got {args.episode_window}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        curves = load_curves(
            args.exp_folder,
            args.algos,
            args.env,
            args.x_axis,
            args.y_axis,
            args.episode_window,
            args.max_timesteps,
        )
    except (FileNotFoundError, KeyError) as error:
        print(f"plot_train: {error.args[0]}", file=sys.stderr)
        return 1
    plot_curves(curves, args.output, args.x_axis, args.y_axis, args.title, tuple(args.figsize), args.fontsize)
    for curve in curves:
        print(f"{curve.label}: {curve.n_episodes} episodes, last smoothed value {curve.y[-1]:.2f}")
    print(f"Saved {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
