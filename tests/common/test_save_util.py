"""Atomic saves (a process killed mid-save leaves the old or the new file, never a broken one), what a saved
file holds, and the non-finite checks shared by every algorithm."""

from __future__ import annotations

import os
import random
import signal
import time

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import VecNormalize

from sb3_mb import STEVE
from sb3_mb.common.checks import check_finite, check_finite_gradients, check_finite_parameters
from sb3_mb.common.save_util import atomic_write, resolve_save_path

TINY_STEVE = dict(
    learning_starts=10,
    buffer_size=30_000,
    policy_kwargs=dict(net_arch=[64, 64], model_net_arch=dict(transition=[64], reward=[16], done=[16])),
)


fork_only = pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork and SIGKILL (POSIX)")


# ------------------------------------------------------------------------------------------ atomic_write
def test_atomic_write_replaces_the_target_or_leaves_it(tmp_path):
    target = tmp_path / "file.bin"
    target.write_bytes(b"old")
    with atomic_write(target) as temporary:
        assert temporary.parent == tmp_path and temporary.name.startswith(".file.bin.")
        temporary.write_bytes(b"new")
        assert target.read_bytes() == b"old"  # untouched until the block ends
    assert target.read_bytes() == b"new"

    with pytest.raises(RuntimeError), atomic_write(target) as temporary:
        temporary.write_bytes(b"half")
        raise RuntimeError("interrupted")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.bin"], "a temporary file was left behind"


def test_atomic_write_keeps_sb3_suffix_rule_and_permissions(tmp_path):
    assert resolve_save_path(tmp_path / "model", "zip") == tmp_path / "model.zip"
    assert resolve_save_path(tmp_path / "model.v1", "zip") == tmp_path / "model.v1"
    with atomic_write(tmp_path / "sub" / "model", suffix="zip") as temporary:
        temporary.write_bytes(b"x")
    written = tmp_path / "sub" / "model.zip"
    umask = os.umask(0)
    os.umask(umask)
    assert written.stat().st_mode & 0o777 == 0o666 & ~umask  # as open("wb") would create it
    (tmp_path / "folder").mkdir()
    with pytest.raises(IsADirectoryError, match="is a folder"), atomic_write(tmp_path / "folder"):
        pass


@fork_only
def test_leftovers_of_dead_processes_are_removed_by_the_next_save(tmp_path):
    target = tmp_path / "model.zip"
    with atomic_write(target) as temporary:
        temporary.write_bytes(b"a")
    prefix = temporary.name.rsplit(".", 3)[0]  # ".model.zip.<host>"
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    dead = tmp_path / f"{prefix}.{pid}.deadbeef.tmp"
    alive = tmp_path / f"{prefix}.{os.getppid()}.cafebabe.tmp"  # a running process: may be mid-save
    other = tmp_path / ".other.zip.host.1.0.tmp"
    for leftover in (dead, alive, other):
        leftover.write_bytes(b"partial")
    with atomic_write(target) as temporary:
        temporary.write_bytes(b"b")
    assert not dead.exists() and alive.exists() and other.exists()


# ------------------------------------------------------------------------------------------ kill during save
def _params(model) -> dict[str, th.Tensor]:
    return {key: value.detach().clone() for key, value in model.policy.state_dict().items()}


def _same(a: dict[str, th.Tensor], b: dict[str, th.Tensor]) -> bool:
    return a.keys() == b.keys() and all(th.equal(a[key], b[key]) for key in a)


def _assert_kills_leave_the_old_or_the_new_file(save_first, save_second, path, read, n_kills=20):
    """Fork a child that saves ``first`` and ``second`` alternately over ``path`` without pause and kill it
    with SIGKILL at a random moment, ``n_kills`` times; after each kill ``read(path)`` must give "first" or
    "second". A last save then removes the temporary files the killed children left."""
    save_first(path)
    start = time.perf_counter()
    save_second(path)
    save_first(path)
    one_save = (time.perf_counter() - start) / 2
    outcomes = []
    for _ in range(n_kills):
        pid = os.fork()
        if pid == 0:  # the child never returns into pytest
            try:
                while True:
                    save_second(path)
                    save_first(path)
            finally:
                os._exit(1)
        time.sleep(random.uniform(0.2, 3.0) * one_save)
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        outcomes.append(read(path))
    assert "other" not in outcomes, outcomes
    save_first(path)
    assert [p.name for p in path.parent.iterdir()] == [path.name], "temporary files were left behind"


def _which(values: np.ndarray) -> str:
    """``"first"`` / ``"second"`` for an array filled with 1 / 2, else ``"other"``."""
    unique = np.unique(values)
    return {1.0: "first", 2.0: "second"}.get(float(unique[0]), "other") if len(unique) == 1 else "other"


@fork_only
@pytest.mark.timeout(60)
def test_model_save_killed_at_random_moments_leaves_the_old_or_the_new_model(tmp_path):
    random.seed(0)
    first, second = (STEVE("MlpPolicy", "Pendulum-v1", seed=seed, **TINY_STEVE) for seed in (0, 1))
    p_first, p_second = _params(first), _params(second)
    assert not _same(p_first, p_second)

    def read(path):
        loaded = _params(STEVE.load(path, buffer_size=1))
        return "first" if _same(loaded, p_first) else "second" if _same(loaded, p_second) else "other"

    _assert_kills_leave_the_old_or_the_new_file(first.save, second.save, tmp_path / "model.zip", read)


@fork_only
@pytest.mark.timeout(60)
def test_replay_buffer_save_killed_at_random_moments_leaves_the_old_or_the_new_buffer(tmp_path):
    random.seed(1)
    first, second, reader = (STEVE("MlpPolicy", "Pendulum-v1", seed=0, **TINY_STEVE) for _ in range(3))
    first.replay_buffer.observations[:], second.replay_buffer.observations[:] = 1.0, 2.0

    def read(path):
        reader.load_replay_buffer(path)
        return _which(reader.replay_buffer.observations)

    path = tmp_path / "replay_buffer.pkl"
    _assert_kills_leave_the_old_or_the_new_file(
        first.save_replay_buffer, second.save_replay_buffer, path, read
    )


@fork_only
@pytest.mark.timeout(60)
def test_zoo_vecnormalize_save_killed_at_random_moments_leaves_the_old_or_the_new_file(tmp_path):
    from zoo.train import make_checkpoints_atomic

    make_checkpoints_atomic()
    make_checkpoints_atomic()  # idempotent
    random.seed(2)
    first, second = (VecNormalize(make_vec_env("Pendulum-v1", n_envs=1)) for _ in range(2))
    # Large statistics make each save long enough to be killed in the middle.
    first.obs_rms.mean, second.obs_rms.mean = np.full(400_000, 1.0), np.full(400_000, 2.0)
    venv = make_vec_env("Pendulum-v1", n_envs=1)

    def read(path):
        return _which(VecNormalize.load(str(path), venv).obs_rms.mean)

    _assert_kills_leave_the_old_or_the_new_file(
        lambda p: first.save(str(p)), lambda p: second.save(str(p)), tmp_path / "vecnormalize.pkl", read
    )


# ------------------------------------------------------------------------------------------ non-finite checks
def test_check_finite_names_the_algorithm_the_value_and_the_step():
    check_finite(th.tensor([1.0, 2.0]), "X", "loss", 3)
    check_finite({"a": 1.0, "b": th.tensor(2.0)}, "X", "loss", 3)
    with pytest.raises(FloatingPointError, match=r"^STEVE: critic loss is not finite at update 12: nan\."):
        check_finite(th.tensor(float("nan")), "STEVE", "critic loss", 12)
    with pytest.raises(FloatingPointError, match=r"PlaNet: loss is not finite at update 4: kl=1, nll=inf"):
        check_finite({"kl": th.tensor(1.0), "nll": th.tensor(float("inf"))}, "PlaNet", "loss", 4)
    with pytest.raises(FloatingPointError, match=r"1 NaN and 1 inf of 100 values"):
        values = th.zeros(100)
        values[3], values[7] = float("nan"), float("inf")
        check_finite(values, "E", "holdout score", 2, unit="epoch")


def test_gradient_and_parameter_checks_name_the_network():
    net = th.nn.Linear(2, 1)
    optimizer = th.optim.SGD(net.parameters(), lr=0.1)
    net(th.ones(1, 2)).sum().backward()
    check_finite_gradients(optimizer, "MBPO", "SAC critic loss", 1)
    net.weight.grad[0, 0] = float("nan")
    with pytest.raises(
        FloatingPointError, match="MBPO: the gradient of the SAC critic loss is not finite at update 5"
    ):
        check_finite_gradients(optimizer, "MBPO", "SAC critic loss", 5)
    check_finite_parameters({"critic": net, "log_ent_coef": None}, "MBPO", 1)
    with th.no_grad():
        net.bias.fill_(float("inf"))
    with pytest.raises(
        FloatingPointError, match=r"MBPO: the critic parameters are not finite at update 2 \(critic\.bias"
    ):
        check_finite_parameters({"critic": net}, "MBPO", 2)
