"""Score compiler over the zoo's logs: a table, curves and histograms of test scores per task and setting.

The runs are rl-zoo3's folders ``<exp_folder>/<algo>/<EnvId>_<N>/`` (one per seed), as ``python -m zoo.train``
writes them: ``evaluations.npz`` (``EvalCallback``: ``timesteps`` ``(n_eval,)``, ``results``
``(n_eval, n_eval_episodes)`` returns of the deterministic test episodes), the training ``*.monitor.csv``
and ``<EnvId>/config.yml`` (the hyperparameters the run used). The readers of that layout live here, once:
``scripts/plot_train.py``, ``scripts/all_plots.py``, ``scripts/benchmark.py`` and
``scripts/compile_scores.py`` use them.

A **setting** is an algorithm plus an optional label, written ``algo`` or ``algo[label]``. The label is, in
this order of composition (joined by ``,``): the label given to the run's log folder (several folders of
the same algorithm side by side, e.g. ``-f logs-base logs-ma -l base ma``), then ``key=value`` for each
hyperparameter named in ``label_keys`` as the run's ``config.yml`` holds it, looked up at the top level and
then inside ``policy_kwargs`` (e.g. PlaNet's ``transition_model`` gives ``planet[transition_model=rssm_ma]``;
a run without the key gets ``key=default``). Runs of the same task and setting are seeds of one another.

This replaces Rose's PlaNet fork's ``results/compile_scores.py`` (test scores of every run folder read from
TensorBoard into one JSON) and ``compile_histograms.py`` (histograms of planned CEM returns); its result
table is the mean of the last 10 test scores, the ``last_n`` argument here (Rose's fork, spec ``planet.md``
3.2).
"""

from __future__ import annotations

import ast
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: Score sources: the test episodes of ``evaluations.npz``, or the training episodes of the Monitor files.
SOURCES = ("eval", "train")


def env_folder_name(env_id: str) -> str:
    """The folder name the zoo uses for ``env_id`` (huggingface_sb3's ``EnvironmentName``: ``/`` -> ``-``)."""
    return env_id.replace("/", "-")


def run_folders(exp_folder: str, algo: str, env_id: str) -> list[str]:
    """Every ``<exp_folder>/<algo>/<EnvId>_<N>`` folder, sorted by ``N`` (exact match: ``Hopper-v5_1`` is
    not a run of ``Hopper``, ``Hopper-v5-x_1`` not one of ``Hopper-v5``).

    :raises FileNotFoundError: ``<exp_folder>/<algo>`` is not a folder.
    """
    algo_folder = os.path.join(exp_folder, algo)
    if not os.path.isdir(algo_folder):
        raise FileNotFoundError(f"no folder {algo_folder!r} (expected <exp-folder>/<algo>/<EnvId>_<N>/)")
    pattern = re.compile(rf"^{re.escape(env_folder_name(env_id))}_(\d+)$")
    found = []
    for entry in os.scandir(algo_folder):
        match = pattern.match(entry.name)
        if match and entry.is_dir():
            found.append((int(match.group(1)), entry.path))
    return [path for _, path in sorted(found)]


def find_evaluations(exp_folder: str, algo: str, env_id: str) -> list[str]:
    """Paths of ``<exp_folder>/<algo>/<EnvId>_<N>/evaluations.npz`` that exist, sorted by ``N``; ``[]`` when
    there is no ``<exp_folder>/<algo>`` folder."""
    if not os.path.isdir(os.path.join(exp_folder, algo)):
        return []
    paths = [os.path.join(folder, "evaluations.npz") for folder in run_folders(exp_folder, algo, env_id)]
    return [path for path in paths if os.path.isfile(path)]


def read_evaluations(path: str, key: str = "results") -> tuple[np.ndarray, np.ndarray]:
    """``(timesteps (n_eval,), values (n_eval, n_eval_episodes) float64)`` of one ``evaluations.npz``.

    :param key: ``results`` (episode returns), ``ep_lengths`` or ``successes``.
    :raises KeyError: the archive has no array ``key`` (the message lists those it has).
    """
    with np.load(path) as archive:
        if key not in archive:
            raise KeyError(f"{path} has no array {key!r} (it holds {sorted(archive.files)})")
        timesteps = np.asarray(archive["timesteps"])
        values = np.asarray(archive[key], dtype=np.float64).reshape(len(timesteps), -1)
    return timesteps, values


def read_monitor_returns(folder: str) -> tuple[np.ndarray, np.ndarray]:
    """``(timesteps (n_episodes,), returns (n_episodes, 1))`` of the training episodes in ``folder``'s Monitor
    files (SB3's ``load_results``), ``timesteps`` the cumulative env steps at each episode's end.

    :raises FileNotFoundError: no Monitor file, or none with a complete episode.
    """
    from stable_baselines3.common.monitor import LoadMonitorResultsError, load_results

    try:
        data_frame = load_results(folder)
    except LoadMonitorResultsError as error:
        raise FileNotFoundError(f"{folder}: no Monitor file (*.monitor.csv)") from error
    if len(data_frame) == 0:
        raise FileNotFoundError(f"{folder}: no complete episode in its Monitor files")
    timesteps = np.cumsum(np.asarray(data_frame["l"], dtype=np.int64))
    return timesteps, np.asarray(data_frame["r"], dtype=np.float64)[:, None]


def _construct_python_tag(loader: Any, suffix: str, node: Any) -> Any:
    """Plain data for a node with one of PyYAML's python tags (no Python object is built)."""
    import yaml

    if isinstance(node, yaml.SequenceNode):
        items = loader.construct_sequence(node, deep=True)
        if suffix.endswith("collections.OrderedDict"):  # [[[key, value], ...]]: one list argument
            pairs = items[0] if len(items) == 1 and isinstance(items[0], list) else items
            return {key: value for key, value in pairs}
        return items
    if isinstance(node, yaml.MappingNode):
        return loader.construct_mapping(node, deep=True)
    return loader.construct_scalar(node)


def _config_loader() -> type:
    """A safe YAML loader that reads rl-zoo3's ``config.yml`` (an ``OrderedDict`` written with PyYAML's
    python tags) as plain data."""
    import yaml

    class ConfigLoader(yaml.SafeLoader):
        pass

    ConfigLoader.add_multi_constructor("tag:yaml.org,2002:python/", _construct_python_tag)
    return ConfigLoader


def read_zoo_yaml(path: str) -> dict[str, Any]:
    """One of rl-zoo3's run files (``config.yml``, ``args.yml``) as a dict, ``{}`` if absent or not a
    mapping; read with a safe loader that maps PyYAML's python tags to plain data (no Python object is
    built)."""
    import yaml

    if not os.path.isfile(path):
        return {}
    with open(path) as file:
        data = yaml.load(file, Loader=_config_loader())
    return dict(data) if isinstance(data, dict) else {}


def read_hyperparams(run_folder: str, env_id: str) -> dict[str, Any]:
    """The hyperparameters of a run: ``<run_folder>/<EnvId>/config.yml`` as a dict (``{}`` if absent).

    Read with a safe loader (no Python object is built); ``policy_kwargs`` is a dict, or the string the
    YAML file held (rl-zoo3 keeps ``"dict(...)"`` strings as written).
    """
    return read_zoo_yaml(os.path.join(run_folder, env_folder_name(env_id), "config.yml"))


def read_run_budget(run_folder: str, env_id: str) -> tuple[int | None, int | None]:
    """``(seed, env steps of training)`` of a zoo run, from ``<run_folder>/<EnvId>/args.yml`` and
    ``config.yml`` read with the same safe loader.

    The steps are ``args.yml``'s ``n_timesteps`` (the ``-n`` given) when positive, else ``config.yml``'s:
    rl-zoo3's ``config.yml`` keeps the hyperparameter file's ``n_timesteps`` even when ``-n`` overrides it.
    ``None`` for what neither file says (or when they are absent).
    """
    args, config = (
        read_zoo_yaml(os.path.join(run_folder, env_folder_name(env_id), filename))
        for filename in ("args.yml", "config.yml")
    )
    n_timesteps = args.get("n_timesteps")
    if n_timesteps is None or int(n_timesteps) <= 0:
        n_timesteps = config.get("n_timesteps")
    seed = args.get("seed")
    return (int(seed) if seed is not None else None), (int(n_timesteps) if n_timesteps is not None else None)


def _policy_kwargs(value: Any) -> dict[str, Any]:
    """``policy_kwargs`` as a dict: a dict as is; a ``"dict(a=1, b=...)"`` string parsed without evaluating
    it (each value a literal where it is one, its source text otherwise)."""
    if isinstance(value, dict):
        return value
    if not isinstance(value, str):
        return {}
    try:
        tree = ast.parse(value.strip(), mode="eval").body
    except SyntaxError:
        return {}
    found: dict[str, Any] = {}
    if isinstance(tree, ast.Call):
        items = [(keyword.arg, keyword.value) for keyword in tree.keywords if keyword.arg]
    elif isinstance(tree, ast.Dict):
        pairs = zip(tree.keys, tree.values, strict=True)
        items = [(ast.literal_eval(k), v) for k, v in pairs if k is not None]
    else:
        return {}
    for name, node in items:
        try:
            found[name] = ast.literal_eval(node)
        except ValueError:
            found[name] = ast.unparse(node)
    return found


def hyperparam_label(hyperparams: dict[str, Any], key: str) -> str:
    """``"key=value"`` for ``hyperparams[key]``, else ``policy_kwargs[key]``, else ``"key=default"``; lists
    and tuples are written without spaces (``cw_tau=(1,4)``)."""
    if key in hyperparams:
        value = hyperparams[key]
    else:
        value = _policy_kwargs(hyperparams.get("policy_kwargs")).get(key, "default")
    text = str(tuple(value) if isinstance(value, list) else value).replace(" ", "")
    return f"{key}={text}"


def setting_name(algo: str, label: str = "") -> str:
    """``algo`` or ``algo[label]``."""
    return f"{algo}[{label}]" if label else algo


@dataclass
class Run:
    """One run (a seed) of a setting on a task: its scores over training.

    :param timesteps: ``(n_points,)`` env steps of each evaluation (``eval``) or at each training episode's
        end (``train``), increasing.
    :param scores: ``(n_points, n_episodes)`` returns: the test episodes of each evaluation, or the one
        training episode.
    """

    env_id: str
    algo: str
    label: str
    folder: str
    timesteps: np.ndarray
    scores: np.ndarray

    @property
    def setting(self) -> str:
        return setting_name(self.algo, self.label)


def collect_runs(
    exp_folders: Sequence[str],
    algos: Sequence[str],
    envs: Sequence[str],
    folder_labels: Sequence[str] | None = None,
    label_keys: Sequence[str] = (),
    source: str = "eval",
) -> list[Run]:
    """Every run of ``algos`` x ``envs`` under ``exp_folders`` with at least one score.

    :param folder_labels: one label per folder (``None``: no folder label; give labels when two folders
        hold the same algorithm, or their runs merge into one setting).
    :param label_keys: hyperparameters of ``config.yml`` that distinguish settings (see the module).
    :param source: ``"eval"`` (test episodes of ``evaluations.npz``) or ``"train"`` (Monitor files).
    :return: runs sorted by task, setting and folder.
    :raises ValueError: an unknown ``source`` or a label count that is not one per folder.
    :raises FileNotFoundError: no run with scores at all (the message names the folders searched).
    """
    if source not in SOURCES:
        raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
    labels = list(folder_labels) if folder_labels is not None else [""] * len(exp_folders)
    if len(labels) != len(exp_folders):
        raise ValueError(f"{len(labels)} folder labels for {len(exp_folders)} folders")
    runs, searched = [], []
    for exp_folder, folder_label in zip(exp_folders, labels, strict=True):
        for algo in algos:
            for env_id in envs:
                searched.append(os.path.join(exp_folder, algo, f"{env_folder_name(env_id)}_<N>"))
                if not os.path.isdir(os.path.join(exp_folder, algo)):
                    continue
                for folder in run_folders(exp_folder, algo, env_id):
                    if source == "eval":
                        path = os.path.join(folder, "evaluations.npz")
                        if not os.path.isfile(path):
                            continue
                        timesteps, scores = read_evaluations(path)
                    else:
                        try:
                            timesteps, scores = read_monitor_returns(folder)
                        except FileNotFoundError:
                            continue
                    if len(timesteps) == 0:
                        continue
                    hyperparams = read_hyperparams(folder, env_id) if label_keys else {}
                    parts = [folder_label] if folder_label else []
                    parts += [hyperparam_label(hyperparams, key) for key in label_keys]
                    runs.append(Run(env_id, algo, ",".join(parts), folder, timesteps, scores))
    if not runs:
        what = "evaluations.npz" if source == "eval" else "Monitor file with a complete episode"
        raise FileNotFoundError(f"no run with an {what}: searched {searched}")
    return sorted(runs, key=lambda run: (run.env_id, run.setting, run.folder))


def group_runs(runs: Sequence[Run]) -> dict[tuple[str, str], list[Run]]:
    """``{(env_id, setting): [runs]}``, in the order of ``runs``."""
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((run.env_id, run.setting), []).append(run)
    return groups


def _step_of(runs: Sequence[Run], step: int | None) -> int:
    """The step a group is scored at: ``step``, or the last step every run reached."""
    return int(min(run.timesteps[-1] for run in runs)) if step is None else int(step)


def run_score(run: Run, step: int, last_n: int = 1) -> float | None:
    """A run's score at ``step``: the mean return over the episodes of its last ``last_n`` points (evaluations
    or training episodes) at or before ``step``; ``None`` if it has none."""
    index = int(np.searchsorted(run.timesteps, step, side="right"))
    if index == 0:
        return None
    return float(np.mean(run.scores[max(0, index - last_n) : index]))


@dataclass
class ScoreRow:
    """One line of the score table: ``mean`` and ``std`` (population, ``ddof=0``) over the ``n_seeds`` runs'
    scores at ``step``, their ``min`` and ``max``, and the runs' folders."""

    env_id: str
    setting: str
    n_seeds: int
    step: int
    mean: float
    std: float
    min: float
    max: float
    folders: list[str]


def score_table(runs: Sequence[Run], step: int | None = None, last_n: int = 1) -> list[ScoreRow]:
    """Per task x setting, the test score over seeds at the last or a chosen step.

    Each run's score is :func:`run_score` at the step: ``step`` when given, else the last step every run of
    the group reached (runs evaluated at the same steps: their last evaluation). A run with no point at or
    before the step is left out of its group; a group left without runs has no row.

    :param last_n: points averaged per run (Rose's fork reports the mean of the last 10 test scores).
    :raises ValueError: ``last_n < 1``.
    """
    if last_n < 1:
        raise ValueError(f"last_n must be at least 1, got {last_n}")
    rows = []
    for (env_id, setting), group in group_runs(runs).items():
        at = _step_of(group, step)
        scored = [(run, run_score(run, at, last_n)) for run in group]
        scored = [(run, score) for run, score in scored if score is not None]
        if not scored:
            continue
        values = np.array([score for _, score in scored])
        rows.append(
            ScoreRow(
                env_id,
                setting,
                len(values),
                at,
                float(values.mean()),
                float(values.std()),
                float(values.min()),
                float(values.max()),
                [run.folder for run, _ in scored],
            )
        )
    return rows


TABLE_COLUMNS = ("task", "setting", "seeds", "step", "mean", "std", "min", "max")


def _cells(row: ScoreRow, precision: int) -> list[str]:
    number = f"{{:.{precision}f}}"
    values = (row.mean, row.std, row.min, row.max)
    return [row.env_id, row.setting, str(row.n_seeds), str(row.step), *(number.format(v) for v in values)]


def table_markdown(rows: Sequence[ScoreRow], precision: int = 1) -> str:
    """The table as GitHub markdown, one line per row, numbers with ``precision`` decimals."""
    lines = ["| " + " | ".join(TABLE_COLUMNS) + " |", "|" + "---|" * len(TABLE_COLUMNS)]
    lines += ["| " + " | ".join(_cells(row, precision)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def table_csv(rows: Sequence[ScoreRow]) -> str:
    """The table as CSV (full precision, ``repr`` of the floats)."""
    import csv
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(TABLE_COLUMNS)
    for row in rows:
        writer.writerow([row.env_id, row.setting, row.n_seeds, row.step, row.mean, row.std, row.min, row.max])
    return buffer.getvalue()


@dataclass
class ScoreCurve:
    """Mean and standard deviation (``ddof=0``) over seeds of the runs' scores, at ``timesteps``."""

    env_id: str
    setting: str
    n_seeds: int
    timesteps: np.ndarray
    mean: np.ndarray
    std: np.ndarray


def score_curves(runs: Sequence[Run], last_n: int = 1) -> list[ScoreCurve]:
    """Per task x setting, the score curve over seeds.

    The points are the steps at which every run of the group has a point (runs evaluated at the same steps:
    those steps; training episodes end at different steps, so for ``source="train"`` the union of the
    runs' episode ends up to the shortest run's last, each run scored by :func:`run_score`, i.e. its last
    ``last_n`` episodes so far). Each run's value at a step is :func:`run_score`.
    """
    curves = []
    for (env_id, setting), group in group_runs(runs).items():
        common = group[0].timesteps
        for run in group[1:]:
            common = np.intersect1d(common, run.timesteps)
        if len(group) > 1 and len(common) == 0:
            end = min(run.timesteps[-1] for run in group)
            start = max(run.timesteps[0] for run in group)
            union = np.unique(np.concatenate([run.timesteps for run in group]))
            common = union[(union >= start) & (union <= end)]
        values = np.array([[run_score(run, int(t), last_n) for t in common] for run in group], dtype=float)
        mean, std = values.mean(axis=0), values.std(axis=0)
        curves.append(ScoreCurve(env_id, setting, len(group), np.asarray(common), mean, std))
    return curves


def compile_histograms(
    runs: Sequence[Run], step: int | None = None, last_n: int = 1
) -> dict[tuple[str, str], np.ndarray]:
    """Per task x setting, every episode return behind the table's scores (pooled over seeds).

    ``{(env_id, setting): returns (n_returns,)}``: each run's episodes of its last ``last_n`` points at or
    before the step of :func:`score_table`.
    """
    histograms = {}
    for key, group in group_runs(runs).items():
        at = _step_of(group, step)
        returns = []
        for run in group:
            index = int(np.searchsorted(run.timesteps, at, side="right"))
            returns.append(run.scores[max(0, index - last_n) : index].ravel())
        pooled = np.concatenate(returns)
        if len(pooled):
            histograms[key] = pooled
    return histograms


def _pyplot():
    import matplotlib

    if "MPLBACKEND" not in os.environ:
        matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    return plt


def _save(fig: Any, output: str) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    fig.savefig(output)


def plot_score_curves(curves: Sequence[ScoreCurve], output: str, ylabel: str = "Test score") -> Any:
    """One panel per task, one line per setting (the mean over seeds) with a band of one standard deviation,
    saved to ``output`` (format from its suffix: ``.png``, ``.svg``, ``.pdf``); returns the figure."""
    plt = _pyplot()
    envs = list(dict.fromkeys(curve.env_id for curve in curves))
    n_cols = min(3, len(envs))
    n_rows = math.ceil(len(envs) / n_cols)
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(5 * n_cols, 3.8 * n_rows), squeeze=False)
    for ax, env_id in zip(axes.flat, envs, strict=False):
        ax.set_title(env_id)
        ax.set_xlabel("Timesteps")
        ax.set_ylabel(ylabel)
        for curve in (curve for curve in curves if curve.env_id == env_id):
            marker = "o" if len(curve.timesteps) < 20 else None
            label = f"{curve.setting} ({curve.n_seeds} seed{'s' * (curve.n_seeds != 1)})"
            ax.plot(curve.timesteps, curve.mean, marker=marker, linewidth=2, label=label)
            ax.fill_between(curve.timesteps, curve.mean - curve.std, curve.mean + curve.std, alpha=0.25)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title="mean, band: std over seeds", title_fontsize=8)
    for ax in list(axes.flat)[len(envs) :]:
        ax.set_visible(False)
    fig.tight_layout()
    _save(fig, output)
    return fig


def plot_histograms(histograms: dict[tuple[str, str], np.ndarray], output: str, bins: int = 20) -> Any:
    """One panel per task, one step histogram per setting over the same bins; saved to ``output``."""
    plt = _pyplot()
    envs = list(dict.fromkeys(env_id for env_id, _ in histograms))
    n_cols = min(3, max(1, len(envs)))
    n_rows = max(1, math.ceil(len(envs) / n_cols))
    fig, axes = plt.subplots(n_rows, n_cols, figsize=(5 * n_cols, 3.8 * n_rows), squeeze=False)
    for ax, env_id in zip(axes.flat, envs, strict=False):
        entries = {setting: values for (env, setting), values in histograms.items() if env == env_id}
        pooled = np.concatenate(list(entries.values()))
        edges = np.histogram_bin_edges(pooled, bins=bins)
        for setting, values in entries.items():
            ax.hist(values, bins=edges, histtype="step", linewidth=2, label=f"{setting} ({len(values)})")
        ax.set_title(env_id)
        ax.set_xlabel("Episode return")
        ax.set_ylabel("Episodes")
        ax.legend(fontsize=8)
    for ax in list(axes.flat)[len(envs) :]:
        ax.set_visible(False)
    fig.tight_layout()
    _save(fig, output)
    return fig
