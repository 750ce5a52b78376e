"""Evaluation curves (mean and band over seeds) from the zoo's ``evaluations.npz``, and rl-zoo3's table.

Usage::

    python scripts/all_plots.py -a mbpo sac -e Pendulum-v1 Hopper-v5 -f logs --plot-dir plots
    python scripts/all_plots.py -a mbpo -e Pendulum-v1 -f logs-a logs-b -l A B -o results --format svg

For every env, algorithm and log folder, the runs ``<exp-folder>/<algo>/<EnvId>_<N>/evaluations.npz``
(written by the zoo's ``EvalCallback``; one run per seed) are merged: at each evaluation, the mean return
over runs and episodes, with a band of one standard error of the per-run means (``--band stderr``, as
rl-zoo3) or a 95% Student-t confidence interval (``--band ci95``). One figure per env goes to
``<plot-dir>/<EnvId>.<format>``; the table of the last evaluation (mean +/- standard error over runs) is
printed as markdown, and written to ``--table`` if given; ``-o NAME`` writes the merged data to
``NAME.pkl`` in rl-zoo3's layout (the keys ``rl_zoo3/plots/plot_from_file.py -i NAME`` reads; that
script itself needs ``seaborn``, and has not been run on these files).

Follows rl-zoo3's ``rl_zoo3/plots/all_plots.py`` (same flags, same statistics, same table: pytablewriter's
markdown with an ``Environments`` column, one column per algorithm x folder label, ``mean +/- stderr``
rounded to integers). It cannot be imported and called: it is one ``main`` that reads ``sys.argv``, imports
``seaborn`` (not a dependency of the zoo) and only shows its figures. Where this script differs, and why:

- figures are saved (``--plot-dir``, ``--format``) and the table can be written to a file;
- run folders are matched exactly (``<EnvId>_<N>``, namespaced ids as the zoo writes them,
  ``sb3_mb/X-v0`` -> ``sb3_mb-X-v0``), not by substring (rl-zoo3 mixes ``Hopper-v5`` with ``Hopper-v5-x``);
- a run with fewer evaluations than the longest, or evaluated at other steps, is left out and named on
  stderr (rl-zoo3 drops the first silently and mixes the second);
- no ``--min-timesteps`` resampling of runs with different evaluation frequencies;
- a folder with no run of a requested algorithm x env is named in the error.
"""

from __future__ import annotations

import argparse
import os
import pickle
import sys
from typing import Any

import numpy as np

# The readers of the zoo's log layout, shared with plot_train.py, benchmark.py and compile_scores.py.
from sb3_mb.common.scores import env_folder_name, find_evaluations, read_evaluations


def merge_runs(
    paths: list[str], key: str = "results", max_timesteps: float = np.inf, confidence: float | None = None
) -> dict[str, Any] | None:
    """Merge the ``evaluations.npz`` of several runs (seeds) of one algorithm on one env.

    :param key: the array of the archive to aggregate (``results``: episode returns of shape
        ``(n_eval, n_eval_episodes)``; ``ep_lengths``; ``successes``).
    :param max_timesteps: evaluations after this many env steps are dropped.
    :param confidence: if given (e.g. 0.95), ``band`` is the half-width of the Student-t confidence interval
        of the mean over runs; otherwise it is the standard error (rl-zoo3's band).
    :return: rl-zoo3's post-processed entry (``timesteps`` ``(n_eval,)``, ``mean`` ``(n_eval,)``,
        ``std_error`` ``(n_eval,)``, ``last_evals`` ``(n_runs,)``, ``std_error_last_eval``, ``mean_per_eval``
        ``(n_eval, n_runs)``) plus ``band`` ``(n_eval,)``, ``runs`` (the paths kept) and ``left_out`` (paths
        with their reason); ``None`` if no run has an evaluation.
    """
    runs, left_out = [], []
    for path in paths:
        timesteps, values = read_evaluations(path, key)
        keep = timesteps <= max_timesteps
        if keep.any():
            runs.append((path, timesteps[keep], values[keep]))
        else:
            left_out.append((path, "no evaluation"))
    if not runs:
        return None
    reference = max(runs, key=lambda run: len(run[1]))[1]
    kept = []
    for path, timesteps, values in runs:
        if len(timesteps) < len(reference):
            left_out.append((path, f"{len(timesteps)} evaluations, the longest run has {len(reference)}"))
        elif not np.array_equal(timesteps, reference):
            left_out.append((path, "evaluated at other timesteps"))
        else:
            kept.append((path, values))
    # (n_eval, n_runs, n_eval_episodes): runs with different episode counts are averaged per run first.
    mean_per_eval = np.stack([values.mean(axis=1) for _, values in kept], axis=1)
    n_runs = mean_per_eval.shape[1]
    mean = np.array(
        [np.mean(np.concatenate([values[i] for _, values in kept])) for i in range(len(reference))]
    )
    std_error = mean_per_eval.std(axis=1) / np.sqrt(n_runs)
    last_evals = mean_per_eval[-1]
    std_error_last_eval = last_evals.std() / np.sqrt(n_runs)
    band = std_error
    if confidence is not None:
        from scipy import stats

        # Sample standard deviation (ddof=1) for the t interval; one run has no interval.
        spread = mean_per_eval.std(axis=1, ddof=1) / np.sqrt(n_runs) if n_runs > 1 else np.zeros_like(mean)
        band = spread * (stats.t.ppf(0.5 + confidence / 2, n_runs - 1) if n_runs > 1 else 0.0)
    return {
        "timesteps": reference,
        "mean": mean,
        "std_error": std_error,
        "last_evals": last_evals,
        "std_error_last_eval": std_error_last_eval,
        "mean_per_eval": mean_per_eval,
        "band": band,
        "runs": [path for path, _ in kept],
        "left_out": left_out,
    }


def collect(
    algos: list[str],
    envs: list[str],
    exp_folders: list[str],
    labels: list[str],
    key: str = "results",
    max_timesteps: float = np.inf,
    confidence: float | None = None,
) -> dict[str, dict[str, dict[str, Any]]]:
    """``{env: {"<ALGO>-<label>": merge_runs(...)}}`` over every algorithm x folder with runs of ``env``.

    :raises FileNotFoundError: no ``evaluations.npz`` at all (the message names the folders searched).
    """
    results: dict[str, dict[str, dict[str, Any]]] = {}
    searched = []
    for env_id in envs:
        results[env_id] = {}
        for algo in algos:
            for exp_folder, label in zip(exp_folders, labels, strict=True):
                searched.append(
                    os.path.join(exp_folder, algo, f"{env_folder_name(env_id)}_<N>", "evaluations.npz")
                )
                merged = merge_runs(
                    find_evaluations(exp_folder, algo, env_id), key, max_timesteps, confidence
                )
                if merged is not None:
                    results[env_id][f"{algo.upper()}-{label}"] = merged
    if not any(results.values()):
        raise FileNotFoundError(f"no evaluations.npz found: searched {searched}")
    return results


def results_table(
    results: dict[str, dict[str, dict[str, Any]]], algos: list[str], labels: list[str], median: bool = False
) -> tuple[list[str], list[list[str]]]:
    """rl-zoo3's table: ``headers`` and ``value_matrix`` (a sub-header row of labels, then one row per env).

    A cell is ``"<mean> +/- <stderr>"`` of the last evaluation over runs (``"<median>"`` with ``median``),
    rounded to integers as rl-zoo3's; an algorithm x folder without runs of the env gets rl-zoo3's
    ``"0.0 +/- 0.0"``.
    """
    headers = ["Environments"]
    value_matrix = [[""]]
    for algo in algos:
        for label in labels:
            headers.append(algo.upper())
            value_matrix[0].append(label)
    for env_id, entries in results.items():
        row = [env_id]
        for algo in algos:
            for label in labels:
                entry = entries.get(f"{algo.upper()}-{label}")
                if entry is None:
                    row.append("0.0 +/- 0.0")
                elif median:
                    row.append(f"{np.median(entry['last_evals']):.0f}")
                else:
                    row.append(f"{np.mean(entry['last_evals']):.0f} +/- {entry['std_error_last_eval']:.0f}")
        value_matrix.append(row)
    return headers, value_matrix


def markdown_table(headers: list[str], value_matrix: list[list[str]]) -> str:
    """The table as rl-zoo3 prints it (pytablewriter's ``MarkdownTableWriter``, ``results_table``)."""
    import pytablewriter

    writer = pytablewriter.MarkdownTableWriter(max_precision=3)
    writer.table_name = "results_table"
    writer.headers = headers
    writer.value_matrix = value_matrix
    return writer.dumps()


def plot_env(
    env_id: str,
    entries: dict[str, dict[str, Any]],
    output: str,
    million: bool = True,
    band_name: str = "standard error",
):
    """One figure of ``env_id``: mean curve and band per entry, saved to ``output``; returns the figure."""
    import matplotlib

    if "MPLBACKEND" not in os.environ:
        matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    divider = 1e6 if million else 1.0
    fig, ax = plt.subplots()
    ax.set_title(env_id, fontsize=14)
    ax.set_xlabel("Timesteps" + (" (in Million)" if million else ""), fontsize=14)
    ax.set_ylabel("Score", fontsize=14)
    for name, entry in entries.items():
        x = entry["timesteps"] / divider
        n_runs = len(entry["runs"])
        ax.plot(x, entry["mean"], linewidth=3, label=f"{name} ({n_runs} run{'s' * (n_runs != 1)})")
        ax.fill_between(x, entry["mean"] - entry["band"], entry["mean"] + entry["band"], alpha=0.3)
    ax.grid(alpha=0.3)
    ax.legend(title=f"mean, band: {band_name}")
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    fig.savefig(output)
    return fig


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Evaluation curves over seeds from the zoo's evaluations.npz, and rl-zoo3's table.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("-a", "--algos", nargs="+", required=True, help="Algorithms to include")
    parser.add_argument("-e", "--env", nargs="+", required=True, help="Environment ids to include")
    parser.add_argument("-f", "--exp-folders", nargs="+", default=["logs"], help="Log folders to include")
    parser.add_argument("-l", "--labels", nargs="+", help="Label of each folder (default: the folders)")
    parser.add_argument("-k", "--key", default="results", help="Array of evaluations.npz to aggregate")
    parser.add_argument("-max", "--max-timesteps", type=float, default=np.inf, help="Last timestep to show")
    parser.add_argument(
        "-median", "--median", action="store_true", help="Median instead of mean in the table"
    )
    parser.add_argument("--no-million", action="store_true", help="Do not show the x-axis in millions")
    parser.add_argument("--band", choices=["stderr", "ci95"], default="stderr", help="Band around the mean")
    parser.add_argument("--plot-dir", default="plots", help="Folder for one figure per env")
    parser.add_argument("--format", default="png", help="Figure format (png, svg, pdf)")
    parser.add_argument("--table", help="Markdown file to write the table to")
    parser.add_argument("-o", "--output", help="Write the merged data to OUTPUT.pkl (rl-zoo3's layout)")
    args = parser.parse_args(argv)
    if args.labels is None:
        args.labels = args.exp_folders
    if len(args.labels) != len(args.exp_folders):
        parser.error(f"{len(args.labels)} labels for {len(args.exp_folders)} folders")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    confidence = 0.95 if args.band == "ci95" else None
    try:
        results = collect(
            args.algos, args.env, args.exp_folders, args.labels, args.key, args.max_timesteps, confidence
        )
    except (FileNotFoundError, KeyError) as error:
        print(f"all_plots: {error.args[0]}", file=sys.stderr)
        return 1
    band_name = "95% confidence interval" if confidence else "standard error"
    for env_id, entries in results.items():
        for name, entry in entries.items():
            for path, reason in entry["left_out"]:
                print(f"all_plots: {env_id} {name}: left out {path} ({reason})", file=sys.stderr)
        if entries:
            output = os.path.join(args.plot_dir, f"{env_folder_name(env_id)}.{args.format}")
            plot_env(env_id, entries, output, not args.no_million, band_name)
            print(f"Saved {output}")
        else:
            print(f"all_plots: no evaluations.npz for {env_id} under {args.exp_folders}", file=sys.stderr)
    headers, value_matrix = results_table(results, args.algos, args.labels, args.median)
    table = markdown_table(headers, value_matrix)
    print(table)
    if args.table:
        with open(args.table, "w") as file:
            file.write(table)
        print(f"Table written to {args.table}")
    if args.output:
        post_processed = {env_id: dict(entries) for env_id, entries in results.items()}
        post_processed["results_table"] = {"headers": headers, "value_matrix": value_matrix}
        with open(f"{args.output}.pkl", "wb") as file:
            pickle.dump(post_processed, file)
        print(f"Saved {args.output}.pkl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
