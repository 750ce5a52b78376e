"""scripts/publish_all.py: a dry run touches no Hub; a push goes to a Hub on 127.0.0.1; a second run skips the
agent published with the same results; a changed agent is pushed again; the agent loads back."""

from __future__ import annotations

import json
import os
import shutil
import sys

import pytest
from huggingface_hub import ModelCard
from script_loader import REPO_ROOT, load_script

sys.path.insert(0, os.path.join(REPO_ROOT, "tests", "zoo"))
from hub_server import FakeHub, point_huggingface_hub_at  # noqa: E402

from zoo.hub_utils import agent_fingerprint  # noqa: E402

publish_all = load_script("publish_all")
TOKEN = "hf_fake_token_for_tests"
REPO = "tester/mbpo-Pendulum-v1"


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A Hub on 127.0.0.1 that huggingface_hub talks to (as tests/zoo/test_zoo_hub.py's fixture)."""
    with FakeHub(TOKEN) as server:
        point_huggingface_hub_at(server, tmp_path / "hf_home", monkeypatch)
        yield server


def test_same_results_rule():
    fingerprint = "a" * 64
    published = {
        "agent_sha256": fingerprint,
        "n_eval_episodes": 2,
        "is_deterministic": True,
        "seed": 0,
        "mean_reward": -1.0,
        "std_reward": 0.5,
    }
    assert publish_all.same_results(published, fingerprint, 2, True, 0) == (
        True,
        "already published: -1.00 +/- 0.50",
    )
    assert publish_all.same_results(None, fingerprint, 2, True, 0) == (False, "not on the Hub")
    assert not publish_all.same_results(published, "b" * 64, 2, True, 0)[0]
    same, reason = publish_all.same_results(published, fingerprint, 5, True, 1)
    assert not same and reason == "evaluated otherwise: n_eval_episodes 2 -> 5, seed 0 -> 1"
    assert not publish_all.same_results({**published, "agent_sha256": None}, fingerprint, 2, True, 0)[0]


def test_publish_all_dry_run_push_skip_and_load(debug_logs, tmp_path, monkeypatch, capsys, hub):
    monkeypatch.chdir(tmp_path)
    run = debug_logs / "mbpo" / "Pendulum-v1_1"
    logs = tmp_path / "logs"
    shutil.copytree(run, logs / "mbpo" / "Pendulum-v1_1")
    shutil.copytree(run, logs / "mbpo" / "Pendulum-v1_2")  # the latest run of the pair is the one published
    latest = logs / "mbpo" / "Pendulum-v1_2"
    base = ["--log-dir", "logs", "-orga", "tester", "--n-eval-episodes", "2", "--no-render"]

    # Dry run: no request at all; the repository folder and the plan are written.
    assert publish_all.main([*base, "--dry-run", "--dry-run-dir", "dry"]) == 0
    assert hub.requests == []
    (entry,) = json.loads((tmp_path / "dry" / "publish_plan.json").read_text())
    assert (entry["repo_id"], entry["action"], entry["folder"]) == (REPO, "push", "logs/mbpo/Pendulum-v1_2")
    assert "--exp-id 2" in entry["command"] and "--dry-run" in entry["command"]
    dry = tmp_path / "dry" / "mbpo-Pendulum-v1"
    assert (dry / "mbpo-Pendulum-v1.zip").read_bytes() == (latest / "Pendulum-v1.zip").read_bytes()
    assert {"README.md", "results.json", "evaluation_curve.png", "config.yml"} <= {
        p.name for p in dry.iterdir()
    }
    out = capsys.readouterr().out
    assert "logs/mbpo/Pendulum-v1_1: not published (a later run of mbpo on Pendulum-v1 is)" in out

    # Push: one commit; results.json names the agent by its fingerprint.
    assert publish_all.main(base) == 0
    files = hub.repos[REPO]
    assert [summary for _, summary in hub.commits[REPO]] == ["Upload sb3-mb agent"]
    results = json.loads(files["results.json"])
    fingerprint = agent_fingerprint(latest / "Pendulum-v1.zip", latest / "Pendulum-v1")
    assert results["agent_sha256"] == fingerprint and results["n_eval_episodes"] == 2 and results["seed"] == 0
    card = ModelCard(files["README.md"].decode())
    assert "![Evaluation curve of MBPO on Pendulum-v1](evaluation_curve.png)" in card.text
    assert files["evaluation_curve.png"][:8] == b"\x89PNG\r\n\x1a\n"

    # Again: the same agent, evaluated the same way, is skipped without evaluation or commit.
    capsys.readouterr()
    assert publish_all.main(base) == 0
    out = capsys.readouterr().out
    assert f"skip (already published: {results['mean_reward']:.2f} +/- {results['std_reward']:.2f})" in out
    assert "Mean reward" not in out and "pushed 0, skipped 1, failed 0" in out
    assert len(hub.commits[REPO]) == 1

    # A changed run (its config.yml differs) is another agent: pushed again.
    with open(latest / "Pendulum-v1" / "config.yml", "a") as file:
        file.write("# retrained\n")
    assert publish_all.main(base) == 0
    assert "another agent is published" in capsys.readouterr().out
    assert len(hub.commits[REPO]) == 2
    assert json.loads(hub.repos[REPO]["results.json"])["agent_sha256"] != fingerprint

    # The published agent loads back (trusted) into the zoo's layout.
    from zoo import load_from_hub

    folder = load_from_hub.download_from_hub("mbpo", "Pendulum-v1", "tester", "loaded", trust_pickle=True)
    assert (folder / "Pendulum-v1.zip").read_bytes() == (latest / "Pendulum-v1.zip").read_bytes()


def test_publish_all_errors(debug_logs, tmp_path, capsys):
    assert publish_all.main(["--log-dir", str(tmp_path / "missing"), "-orga", "tester"]) == 1
    assert f"no log folder {str(tmp_path / 'missing')!r}" in capsys.readouterr().err
    # A run without its final model is named and not published.
    run = tmp_path / "logs" / "mbpo" / "Pendulum-v1_1"
    shutil.copytree(debug_logs / "mbpo" / "Pendulum-v1_1" / "Pendulum-v1", run / "Pendulum-v1")
    args = [
        "--log-dir",
        str(tmp_path / "logs"),
        "-orga",
        "tester",
        "--dry-run",
        "--dry-run-dir",
        str(tmp_path),
    ]
    assert publish_all.main(args) == 1
    err = capsys.readouterr().err
    assert f"{run} has no final model, not published" in err and "no agent to publish" in err
