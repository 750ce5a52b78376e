"""One debug-sized zoo run shared by the tests of scripts/ (about 15 s on one CPU thread)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from script_loader import REPO_ROOT


@pytest.fixture(scope="session")
def debug_logs(tmp_path_factory):
    """``<tmp>/logs`` after ``python -m zoo.train --algo mbpo --env Pendulum-v1 --debug --seed 0``: the run
    ``logs/mbpo/Pendulum-v1_1/`` (600 env steps, 3 episodes, two evaluations)."""
    logs = tmp_path_factory.mktemp("zoo") / "logs"
    command = [sys.executable, "-m", "zoo.train", "--algo", "mbpo", "--env", "Pendulum-v1", "--debug"]
    env = {**os.environ, "MPLBACKEND": "Agg"}
    done = subprocess.run(
        [*command, "-f", str(logs), "--seed", "0"], cwd=REPO_ROOT, env=env, capture_output=True
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    return logs
