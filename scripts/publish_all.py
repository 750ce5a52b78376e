"""Publish every trained agent of a log folder to the Hugging Face Hub through ``python -m zoo.push_to_hub``.

Usage::

    python scripts/publish_all.py --log-dir logs -orga ORG --dry-run --dry-run-dir hub   # writes, no Hub
    python scripts/publish_all.py --log-dir logs -orga ORG -m "Reference agents"         # HF_TOKEN
    python scripts/publish_all.py --log-dir logs -orga ORG --algos mbpo --env Pendulum-v1 --force

Agents are found as ``scripts/benchmark.py`` finds them (``<log-dir>/<algo>/<EnvId>_<N>/`` with one
``<EnvId>/args.yml`` and the final model ``<EnvId>.zip``). A Hub repository holds one agent per algorithm x
env (``<organization>/<algo>-<EnvName>``, rl-zoo3's layout, :mod:`zoo.hub_utils`), so of several runs of one
pair (seeds) the latest, highest ``N``, is published (what ``--exp-id 0`` of the zoo's commands picks); the
others are listed as not published. Each agent goes through :func:`zoo.push_to_hub.main` in this process:
the same evaluation (``evaluate_policy``), card, video and upload as the one-agent command.

"Already published with the same results": the repository's ``results.json`` (JSON, downloaded with
``hf_hub_download``; nothing of the repository is unpickled) has

- the same ``agent_sha256``: the SHA-256 of the local model zip and of the run's ``config.yml``, ``args.yml``
  and ``vecnormalize.pkl`` (:func:`zoo.hub_utils.agent_fingerprint`), i.e. the same weights and environment
  settings, and
- the same evaluation protocol: ``n_eval_episodes``, ``is_deterministic`` and ``seed`` equal to this
  command's.

The evaluation of an agent is then determined by what it was computed from, so the agent is skipped without
being evaluated again (evaluations take minutes for some agents). A repository without ``results.json``, or
whose ``results.json`` predates ``agent_sha256`` (pushed by an earlier version), is pushed again; so is any
agent with ``--force``. With ``--dry-run`` no request is sent to the Hub at all (so nothing is checked there
either): every selected agent's repository folder is written to ``<dry-run-dir>/<algo>-<EnvName>/`` and
``<dry-run-dir>/publish_plan.json`` lists what would be pushed.

The Hub and token are huggingface_hub's (``HF_ENDPOINT``, ``HF_TOKEN`` or ``hf auth login``). Follows
rl-baselines3-zoo's ``scripts/migrate_to_hub.py`` (push every local agent missing from the organization),
which compares only names (``get_hf_trained_models`` lists the organization's models) and so never updates
an agent that was retrained. Exit status 1 if an agent fails (named on stderr); the others are still pushed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass

# scripts/ is not a package: run as ``python scripts/publish_all.py``, this folder is on sys.path.
from benchmark import REPO_ROOT, Agent, find_agents
from plot_train import env_folder_name

if REPO_ROOT not in sys.path:  # the zoo package of this checkout
    sys.path.insert(0, REPO_ROOT)


@dataclass
class Plan:
    """What publishing does with one agent: ``action`` is ``"push"`` or ``"skip"``, ``reason`` says why."""

    agent: Agent
    repo_id: str
    fingerprint: str
    action: str
    reason: str


def select_agents(agents: list[Agent]) -> tuple[list[Agent], list[Agent]]:
    """``(published, left out)``: the latest run (highest ``N``) of each algorithm x env, and the others."""
    latest: dict[tuple[str, str], Agent] = {}
    for agent in agents:
        key = (agent.algo, agent.env_id)
        if key not in latest or agent.exp_id > latest[key].exp_id:
            latest[key] = agent
    chosen = sorted(latest.values(), key=lambda a: (a.algo, a.env_id))
    return chosen, [agent for agent in agents if agent not in chosen]


def same_results(
    published: dict | None, fingerprint: str, n_eval_episodes: int, deterministic: bool, seed: int
):
    """``(same, reason)``: whether ``published`` (a repository's ``results.json``, ``None`` if absent) is this
    agent evaluated with this protocol (see the module docstring)."""
    if published is None:
        return False, "not on the Hub"
    if published.get("agent_sha256") is None:
        return False, "its results.json has no agent_sha256 (pushed by an earlier version)"
    if published["agent_sha256"] != fingerprint:
        return False, "another agent is published (model or config differ)"
    expected = {"n_eval_episodes": n_eval_episodes, "is_deterministic": deterministic, "seed": seed}
    changed = [
        f"{key} {published.get(key)!r} -> {value!r}"
        for key, value in expected.items()
        if published.get(key) != value
    ]
    if changed:
        return False, "evaluated otherwise: " + ", ".join(changed)
    return True, f"already published: {published['mean_reward']:.2f} +/- {published['std_reward']:.2f}"


def plan(args: argparse.Namespace, agents: list[Agent]) -> list[Plan]:
    """The plan of every agent; reads ``results.json`` of each repository unless ``--dry-run`` / ``--force``.

    Agents are evaluated deterministically here (rl-zoo3's default, also push-to-hub's, except on Atari and
    MiniGrid: such agents are evaluated stochastically and so never match a deterministic entry).
    """
    from zoo.hub_utils import agent_fingerprint, published_results, repo_id

    plans = []
    for agent in agents:
        target = repo_id(args.organization, agent.algo, agent.env_id)
        env_name = env_folder_name(agent.env_id)
        fingerprint = agent_fingerprint(
            os.path.join(agent.folder, f"{env_name}.zip"), os.path.join(agent.folder, env_name)
        )
        if args.force:
            action, reason = "push", "--force"
        elif args.dry_run:
            action, reason = "push", "dry run: the Hub is not checked"
        else:
            same, reason = same_results(
                published_results(target), fingerprint, args.n_eval_episodes, _deterministic(agent), args.seed
            )
            action = "skip" if same else "push"
        plans.append(Plan(agent, target, fingerprint, action, reason))
    return plans


def _deterministic(agent: Agent) -> bool:
    from rl_zoo3.exp_manager import ExperimentManager

    return not (ExperimentManager.is_atari(agent.env_id) or ExperimentManager.is_minigrid(agent.env_id))


def push_command(args: argparse.Namespace, agent: Agent) -> list[str]:
    """The arguments of ``python -m zoo.push_to_hub`` for ``agent``."""
    command = ["--algo", agent.algo, "--env", agent.env_id, "-f", args.log_dir, "--exp-id", str(agent.exp_id)]
    command += ["-orga", args.organization, "--n-eval-episodes", str(args.n_eval_episodes)]
    command += ["--seed", str(args.seed), "-n", str(args.n_timesteps), "-m", args.commit_message]
    if args.no_render:
        command.append("--no-render")
    if args.dry_run:
        name = f"{agent.algo}-{env_folder_name(agent.env_id)}"
        command += ["--dry-run", "--local-dir", os.path.join(args.dry_run_dir, name)]
    return command


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Push every trained agent of a log folder to the Hub (python -m zoo.push_to_hub).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--log-dir", default="logs", help="Log folder of the zoo (holds <algo>/<EnvId>_<N>/)")
    parser.add_argument("-orga", "--organization", required=True, help="Hugging Face Hub organization")
    parser.add_argument("--algos", nargs="+", help="Only these algorithms")
    parser.add_argument("--env", nargs="+", help="Only these env ids")
    parser.add_argument("--n-eval-episodes", type=int, default=10, help="Episodes of each evaluation")
    parser.add_argument("--seed", type=int, default=0, help="Seed of the evaluation env")
    parser.add_argument("-n", "--n-timesteps", type=int, default=1000, help="Env steps of each video")
    parser.add_argument("--no-render", action="store_true", help="No video (replay.mp4)")
    parser.add_argument("-m", "--commit-message", default="Upload sb3-mb agent", help="Commit message")
    parser.add_argument("--force", action="store_true", help="Push even agents already published")
    parser.add_argument("--dry-run", action="store_true", help="Write the repository folders, touch no Hub")
    parser.add_argument("--dry-run-dir", default="hub", help="Where --dry-run writes the folders")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        agents = find_agents(args.log_dir, args.algos, args.env)
    except FileNotFoundError as error:
        print(f"publish_all: {error.args[0]}", file=sys.stderr)
        return 1
    complete = [
        a for a in agents if os.path.isfile(os.path.join(a.folder, f"{env_folder_name(a.env_id)}.zip"))
    ]
    for agent in agents:
        if agent not in complete:
            print(f"publish_all: {agent.folder} has no final model, not published", file=sys.stderr)
    if not complete:
        print(f"publish_all: no agent to publish under {args.log_dir!r}", file=sys.stderr)
        return 1
    chosen, left_out = select_agents(complete)
    for agent in left_out:
        print(f"{agent.folder}: not published (a later run of {agent.algo} on {agent.env_id} is)")
    plans = plan(args, chosen)
    from zoo import push_to_hub

    report, failed = [], []
    for index, item in enumerate(plans, start=1):
        print(
            f"{index}/{len(plans)} {item.repo_id} <- {item.agent.folder}: {item.action} ({item.reason})",
            flush=True,
        )
        entry = {
            "repo_id": item.repo_id,
            "folder": item.agent.folder,
            "agent_sha256": item.fingerprint,
            "action": item.action,
            "reason": item.reason,
        }
        if item.action == "push":
            command = push_command(args, item.agent)
            entry["command"] = "python -m zoo.push_to_hub " + " ".join(command)
            try:
                entry["results"] = push_to_hub.main(command)
            except Exception as error:  # one agent's failure must not stop the others
                print(f"publish_all: {item.agent.folder}: {type(error).__name__}: {error}", file=sys.stderr)
                failed.append(item.agent.folder)
                entry["action"] = "failed"
        report.append(entry)
    if args.dry_run:
        os.makedirs(args.dry_run_dir, exist_ok=True)
        path = os.path.join(args.dry_run_dir, "publish_plan.json")
        with open(path, "w") as file:
            json.dump(report, file, indent=2)
        print(f"Dry run: {len(report)} repositories written under {args.dry_run_dir}, plan in {path}")
    pushed = sum(entry["action"] == "push" for entry in report)
    skipped = sum(entry["action"] == "skip" for entry in report)
    print(f"{'would push' if args.dry_run else 'pushed'} {pushed}, skipped {skipped}, failed {len(failed)}")
    if failed:
        print(f"publish_all: {len(failed)} agent(s) failed: {failed}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
