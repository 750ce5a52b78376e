"""Compile test scores of the zoo's runs: a table per task x setting, score curves and histograms.

Usage::

    python scripts/compile_scores.py -a planet -e sb3_mb/CheetahRun-v0 -f logs --label-key transition_model \\
        --table scores.md --plot scores.png --histograms returns.png
    python scripts/compile_scores.py -a planet -e sb3_mb/CartpoleBalance-v0 -f logs-fork logs-upstream \\
        -l fork upstream --last 10 --table scores.csv
    python scripts/compile_scores.py -a mbpo sac -e Pendulum-v1 --source train --step 5000 --last 20

Reads every run ``<exp-folder>/<algo>/<EnvId>_<N>/`` (one per seed) with
:mod:`sb3_mb.common.scores`: test scores from ``evaluations.npz`` (``--source eval``, the default) or training
returns from the Monitor files (``--source train``). A setting is the algorithm plus a label: the folder's
label (``-l``, one per ``-f`` folder) and ``key=value`` for each ``--label-key`` hyperparameter of the run's
``config.yml`` (top level, then ``policy_kwargs``), e.g. ``planet[transition_model=rssm_ma]``.

The table gives, per task x setting, the mean, standard deviation (``ddof=0``), minimum and maximum over seeds
of each run's score: its mean return over the last ``--last`` evaluations (or training episodes) at or before
``--step`` (default: the last step every run of the setting reached). It is printed as markdown and written
to ``--table`` (``.md``: markdown; ``.csv``: CSV at full precision). ``--plot`` draws the score curves (one
panel per task, one line per setting, band of one standard deviation over seeds), ``--histograms`` the
episode returns behind the table (Rose's PlaNet fork's ``compile_scores`` / ``compile_histograms``, which read
TensorBoard files of its own layout).
"""

from __future__ import annotations

import argparse
import os
import sys

from sb3_mb.common import scores


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Test scores per task and setting from the zoo's logs: table, curves, histograms.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("-a", "--algos", nargs="+", required=True, help="Algorithms to include")
    parser.add_argument("-e", "--env", nargs="+", required=True, help="Environment ids (tasks) to include")
    parser.add_argument("-f", "--exp-folders", nargs="+", default=["logs"], help="Log folders to include")
    parser.add_argument("-l", "--labels", nargs="+", help="Setting label of each folder (default: none)")
    parser.add_argument(
        "-k", "--label-key", nargs="+", default=[], help="Hyperparameters of config.yml that name the setting"
    )
    parser.add_argument("--source", choices=scores.SOURCES, default="eval", help="Test or training scores")
    parser.add_argument("--step", type=int, help="Score at this env step (default: the last of every run)")
    parser.add_argument("--last", type=int, default=1, help="Evaluations averaged per run")
    parser.add_argument("--precision", type=int, default=1, help="Decimals of the markdown table")
    parser.add_argument("--table", help="Write the table here (.md markdown, .csv CSV)")
    parser.add_argument("--plot", help="Write the score curves here (.png, .svg, .pdf)")
    parser.add_argument("--histograms", help="Write the histograms of returns here (.png, .svg, .pdf)")
    parser.add_argument("--bins", type=int, default=20, help="Bins of the histograms")
    args = parser.parse_args(argv)
    if args.labels is not None and len(args.labels) != len(args.exp_folders):
        parser.error(f"{len(args.labels)} labels for {len(args.exp_folders)} folders")
    if args.last < 1:
        parser.error(f"--last must be >= 1, got {args.last}")
    if args.table and os.path.splitext(args.table)[1] not in (".md", ".csv"):
        parser.error(f"--table must end in .md or .csv, got {args.table!r}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        runs = scores.collect_runs(
            args.exp_folders, args.algos, args.env, args.labels, args.label_key, args.source
        )
    except (FileNotFoundError, KeyError) as error:
        print(f"compile_scores: {error.args[0]}", file=sys.stderr)
        return 1
    rows = scores.score_table(runs, args.step, args.last)
    scored = {folder for row in rows for folder in row.folders}
    for run in runs:
        if run.folder not in scored:
            print(
                f"compile_scores: {run.folder} has no score at or before the step, left out", file=sys.stderr
            )
    markdown = scores.table_markdown(rows, args.precision)
    print(markdown, end="")
    if args.table:
        os.makedirs(os.path.dirname(os.path.abspath(args.table)), exist_ok=True)
        with open(args.table, "w") as file:
            file.write(scores.table_csv(rows) if args.table.endswith(".csv") else markdown)
        print(f"Table written to {args.table}")
    ylabel = "Test score" if args.source == "eval" else "Training episode return"
    if args.plot:
        scores.plot_score_curves(scores.score_curves(runs, args.last), args.plot, ylabel)
        print(f"Saved {args.plot}")
    if args.histograms:
        histograms = scores.compile_histograms(runs, args.step, args.last)
        scores.plot_histograms(histograms, args.histograms, args.bins)
        print(f"Saved {args.histograms}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
