"""`sb3-mb-zoo record-video`, `push-to-hub` and `load-from-hub`: train -> record -> push (dry run, then to a
Hub on 127.0.0.1) -> load (refused untrusted, then trusted, then offline from the cache) -> enjoy."""

import importlib.util
import json
import os
import re
import subprocess
import sys
import zipfile
from datetime import datetime
from pathlib import Path

import gymnasium
import imageio_ffmpeg
import numpy as np
import pytest
import yaml
from hub_server import FakeHub, point_huggingface_hub_at
from huggingface_hub import ModelCard

import sb3_mb
from zoo import cli
from zoo.record_video import record_video

REPO_ROOT = Path(__file__).resolve().parents[2]
TOKEN = "hf_fake_token_for_tests"
ORGANIZATION = "tester"

# env id, env steps of training, env steps of one episode (enjoy's -n)
# Every registered algorithm: (env id, training steps, enjoy steps).
CASES = {
    "mbpo": ("Pendulum-v1", 300, 200),
    "planet": ("sb3_mb/CartpoleBalance-v0", 300, 125),
    "gammamve": ("Pendulum-v1", 300, 200),
    "steve": ("Pendulum-v1", 300, 200),
    "worldmodels": ("Pendulum-v1", 300, 200),
    # The algo name is the class name lower-cased: the model card's name (WorldModelsPPO) gives --algo back.
    "worldmodelsppo": ("sb3_mb/MovingBar-v0", 300, 20),
}


# A phrase of the title of each algorithm's paper, which its model card cites.
PAPERS = {
    "mbpo": "When to Trust Your Model: Model-Based Policy Optimization",
    "planet": "Learning Latent Dynamics for Planning from Pixels",
    "gammamve": "Generative Temporal Difference Learning for Infinite-Horizon Prediction",
    "steve": "Sample-Efficient Reinforcement Learning with Stochastic Ensemble Value Expansion",
    "worldmodels": "title   = {World Models}",
    "worldmodelsppo": "title   = {World Models}",
}


def test_every_registered_algorithm_goes_through_the_hub_chain():
    assert set(CASES) == set(sb3_mb.list_algorithms()) == set(PAPERS)


def _params(algo: str) -> list[str]:
    """The registry's test-sized constructor arguments as rl-zoo3 `-params key:value` items."""
    return [f"{key}:{value!r}" for key, value in sb3_mb.ALGOS[algo].test_kwargs.items()]


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A Hub on 127.0.0.1 that huggingface_hub talks to (its endpoint, token and cache are the test's own)."""
    with FakeHub(TOKEN) as server:
        point_huggingface_hub_at(server, tmp_path / "hf_home", monkeypatch)
        yield server


def _files(folder: Path) -> dict[str, bytes]:
    return {
        path.relative_to(folder).as_posix(): path.read_bytes() for path in folder.rglob("*") if path.is_file()
    }


def _renders(env_id: str):
    """Classic-control environments render with pygame (gymnasium[classic_control]); no extra installs it."""
    missing = env_id == "Pendulum-v1" and importlib.util.find_spec("pygame") is None
    return pytest.mark.skipif(missing, reason=f"{env_id} renders with pygame, which is not installed")


@pytest.mark.parametrize(
    "algo", [pytest.param(algo, marks=_renders(CASES[algo][0])) for algo in sorted(CASES)]
)
def test_record_push_load_enjoy(algo, tmp_path, monkeypatch, capsys, hub):
    env_id, n_steps, episode_steps = CASES[algo]
    env_name = env_id.replace("/", "-")  # rl-zoo3's EnvironmentName: folder, file and repository names
    name = f"{algo}-{env_name}"
    monkeypatch.chdir(tmp_path)
    cli.main(
        ["train", "--algo", algo, "--env", env_id, "-n", str(n_steps), "--eval-freq", str(n_steps)]
        + ["--eval-episodes", "1", "--seed", "0", "-f", "logs", "-params", *_params(algo)]
    )
    run = tmp_path / "logs" / algo / f"{env_name}_1"
    model_zip = (run / f"{env_name}.zip").read_bytes()

    # record-video: rl-zoo3's name and folder; the reset frame and one per step (moviepy may drop the last).
    cli.main(["record-video", "--algo", algo, "--env", env_id, "-f", "logs", "-n", "20"])
    video = run / "videos" / f"final-model-{name}-step-0-to-step-20.mp4"
    assert video.stat().st_size > 1000
    assert imageio_ffmpeg.count_frames_and_secs(str(video))[0] in (20, 21)

    # push-to-hub --dry-run: rl-zoo3's repository layout, written locally.
    push = ["push-to-hub", "--algo", algo, "--env", env_id, "-f", "logs", "-orga", ORGANIZATION, "-n", "10"]
    push += ["--n-eval-episodes", "2"]
    requests_before = len(hub.requests)
    cli.main([*push, "--dry-run", "--local-dir", "dry"])
    assert len(hub.requests) == requests_before  # a dry run sends nothing
    dry = _files(tmp_path / "dry")
    assert {
        f"{name}.zip",
        "config.yml",
        "args.yml",
        "env_kwargs.yml",
        "results.json",
        "replay.mp4",
        "README.md",
        "train_eval_metrics.zip",
        f"{name}/data",
        f"{name}/policy.pth",
    } <= set(dry)
    assert dry[f"{name}.zip"] == model_zip  # the run's zip itself, not a re-save of the agent loaded to watch
    assert dry["config.yml"] == (run / env_name / "config.yml").read_bytes()
    assert json.loads(dry[f"{name}/data"])["policy_class"]  # the zip, unpacked
    assert len(dry["replay.mp4"]) > 1000
    with zipfile.ZipFile(tmp_path / "dry" / "train_eval_metrics.zip") as archive:
        assert {"evaluations.npz", "0.monitor.csv"} <= set(archive.namelist())
    results = json.loads(dry["results.json"])
    assert set(results) == {
        "mean_reward",
        "std_reward",
        "is_deterministic",
        "n_eval_episodes",
        "eval_datetime",
        "seed",
        "agent_sha256",
    }
    assert results["n_eval_episodes"] == 2 and results["is_deterministic"] is True
    assert np.isfinite(results["mean_reward"]) and results["std_reward"] >= 0
    assert datetime.fromisoformat(results["eval_datetime"]).tzinfo is not None
    card = ModelCard.load(tmp_path / "dry" / "README.md")
    metadata = card.data.to_dict()
    assert metadata["library_name"] == "stable-baselines3"
    assert {"sb3-mb", "reinforcement-learning", algo, env_id} <= set(metadata["tags"])
    (model_index,) = metadata["model-index"]
    assert model_index["name"].lower() == algo  # rl-zoo3 reads --algo back from it
    (result,) = model_index["results"]
    assert result["dataset"]["name"] == env_id
    assert result["metrics"][0]["type"] == "mean_reward"
    assert result["metrics"][0]["value"] == f"{results['mean_reward']:.2f} +/- {results['std_reward']:.2f}"
    load_command = (
        f"zoo.load_from_hub --algo {algo} --env {env_id} -orga {ORGANIZATION} -f logs/ --trust-pickle"
    )
    assert load_command in card.text and f"python -m zoo.enjoy --algo {algo} --env {env_id}" in card.text
    assert dry["evaluation_curve.png"][:8] == b"\x89PNG\r\n\x1a\n"
    _check_card(dry["README.md"], results, algo, env_id, run)

    # push-to-hub: create_repo + upload_folder, every file a regular (base64) one in one commit.
    cli.main([*push, "-m", "Upload the agent"])
    repo = f"{ORGANIZATION}/{name}"
    assert [summary for _, summary in hub.commits[repo]] == ["Upload the agent"]
    assert set(hub.repos[repo]) == set(dry)
    # The card pushed to the Hub shows each part (the second push evaluated the agent again).
    assert hub.repos[repo]["evaluation_curve.png"] == dry["evaluation_curve.png"]
    pushed_results = json.loads(hub.repos[repo]["results.json"])
    _check_card(hub.repos[repo]["README.md"], pushed_results, algo, env_id, run)
    assert hub.repos[repo][f"{name}.zip"] == model_zip and hub.repos[repo]["config.yml"] == dry["config.yml"]
    assert ("POST", f"/api/models/{repo}/preupload/main") in hub.requests

    # load-from-hub without --trust-pickle: refused before any request or write.
    requests_before = len(hub.requests)
    load = ["load-from-hub", "--algo", algo, "--env", env_id, "-orga", ORGANIZATION, "-f", "logs"]
    with pytest.raises(SystemExit, match=rf"Refusing to load {repo} .*cloudpickle.*--trust-pickle"):
        cli.main(load)
    assert len(hub.requests) == requests_before
    assert not (tmp_path / "logs" / algo / f"{env_name}_2").exists()

    # load-from-hub --trust-pickle: the next run folder, in the zoo's layout.
    cli.main([*load, "--trust-pickle"])
    loaded = tmp_path / "logs" / algo / f"{env_name}_2"
    assert (loaded / f"{env_name}.zip").read_bytes() == model_zip
    for file in ("config.yml", "args.yml", "env_kwargs.yml"):
        assert (loaded / env_name / file).read_bytes() == dry[file]
    assert (loaded / "evaluations.npz").read_bytes() == (run / "evaluations.npz").read_bytes()

    # Offline (HF_HUB_OFFLINE=1 read by a fresh process, Hub stopped): installed again from the cache.
    hub.stop()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO_ROOT)}
    offline = subprocess.run(
        [sys.executable, "-m", "zoo.load_from_hub", *load[1:], "--trust-pickle", "--exp-id", "3"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert offline.returncode == 0, offline.stderr
    assert (tmp_path / "logs" / algo / f"{env_name}_3" / f"{env_name}.zip").read_bytes() == model_zip

    # enjoy runs on the agent loaded from the Hub.
    capsys.readouterr()
    cli.main(
        ["enjoy", "--algo", algo, "--env", env_id, "-f", "logs", "--no-render", "-n", str(episode_steps)]
    )
    out = capsys.readouterr().out
    assert f"Loading logs/{algo}/{env_name}_3/{env_name}.zip" in out
    assert "1 Episodes" in out and "Mean reward:" in out


def _check_card(readme: bytes, results: dict, algo: str, env_id: str, run: Path) -> None:
    """The model card shows the evaluation curve beside it, the results table (the pushed evaluation and the
    last one of training), the hyperparameters, the env's spaces and the paper's BibTeX; its model-index
    carries the pushed evaluation."""
    card = ModelCard(readme.decode())
    (model_index,) = card.data.to_dict()["model-index"]
    assert model_index["results"][0]["metrics"][0]["value"] == (
        f"{results['mean_reward']:.2f} +/- {results['std_reward']:.2f}"
    )
    class_name = model_index["name"]
    assert f"![Evaluation curve of {class_name} on {env_id}](evaluation_curve.png)" in card.text
    env_name = env_id.replace("/", "-")
    with zipfile.ZipFile(run / f"{env_name}.zip") as archive:
        n_steps = json.loads(archive.read("data"))["num_timesteps"]  # the model's own count
    with np.load(run / "evaluations.npz") as evaluations:
        last, evaluated_at = evaluations["results"][-1], int(evaluations["timesteps"][-1])
    assert (
        f"| `evaluate_policy` at upload (seed 0) | {n_steps} | 2 | deterministic "
        f"| {results['mean_reward']:.2f} | {results['std_reward']:.2f} |"
    ) in card.text
    assert (
        f"| last `EvalCallback` evaluation of training | {evaluated_at} | {len(last)} | deterministic "
        f"| {np.mean(last):.2f} | {np.std(last):.2f} |"
    ) in card.text
    hyperparameters = card.text.split("## Hyperparameters")[1].split("##")[0]
    with open(run / env_name / "config.yml") as file:
        config = yaml.load(file, Loader=yaml.UnsafeLoader)
    shown = set(re.findall(r"^[{ ]'(\w+)': ", hyperparameters, re.MULTILINE))
    # Every entry of config.yml (env_kwargs have their own section); rl-zoo3 adds "normalize" when loading.
    assert shown - {"normalize"} == set(config) - {"normalize_kwargs", "env_kwargs", "normalize"}
    probe = gymnasium.make(env_id)
    assert f"- Observation space: `{probe.observation_space}`" in card.text
    assert f"- Action space: `{probe.action_space}`" in card.text
    probe.close()
    assert "```bibtex\n@" in card.text and PAPERS[algo] in card.text


def test_load_from_hub_names_what_a_foreign_repository_lacks(tmp_path, monkeypatch, hub):
    monkeypatch.chdir(tmp_path)
    hub.add_repo(
        f"{ORGANIZATION}/mbpo-Pendulum-v1", {"README.md": b"# not a zoo agent\n", "config.yml": b"{}\n"}
    )
    load = ["load-from-hub", "--algo", "mbpo", "--env", "Pendulum-v1", "-orga", ORGANIZATION, "-f", "logs"]
    with pytest.raises(SystemExit) as error:
        cli.main([*load, "--trust-pickle"])
    message = str(error.value)
    assert f"{ORGANIZATION}/mbpo-Pendulum-v1 is not a zoo repository" in message
    assert "lacks mbpo-Pendulum-v1.zip, args.yml, env_kwargs.yml." in message
    assert "Expected files: mbpo-Pendulum-v1.zip, config.yml, args.yml, env_kwargs.yml" in message
    assert not (tmp_path / "logs").exists()

    with pytest.raises(SystemExit, match=f"The repository {ORGANIZATION}/missing was not found"):
        cli.main([*load, "--trust-pickle", "--repo-name", "missing"])


class _CountingAgent:
    """Stands for a stateful agent: its state counts the steps since the last episode start."""

    def __init__(self, action_space):
        self.action_space = action_space
        self.calls = []

    def predict(self, obs, state=None, episode_start=None, deterministic=False):
        self.calls.append((state, episode_start.copy(), deterministic))
        counter = (
            np.where(episode_start, 0, state[0] + 1) if state is not None else np.zeros(len(obs), dtype=int)
        )
        return np.stack([self.action_space.sample() for _ in obs]), (counter,)


def test_record_video_carries_state_and_episode_start(tmp_path):
    import gymnasium as gym
    from stable_baselines3.common.vec_env import DummyVecEnv

    env = DummyVecEnv(
        [lambda: gym.make("sb3_mb/CartpoleBalance-v0", render_mode="rgb_array", max_episode_steps=4)]
    )
    agent = _CountingAgent(env.action_space)
    path = record_video(agent, env, tmp_path, n_timesteps=10, deterministic=True, name_prefix="stub")
    assert path == tmp_path / "stub-step-0-to-step-10.mp4" and path.stat().st_size > 0
    starts = [bool(start[0]) for _, start, _ in agent.calls]
    assert starts == [
        True,
        False,
        False,
        False,
        True,
        False,
        False,
        False,
        True,
        False,
    ]  # resets after 4 steps
    assert agent.calls[0][0] is None and [int(state[0][0]) for state, _, _ in agent.calls[1:4]] == [0, 1, 2]
    assert all(deterministic for _, _, deterministic in agent.calls)
