"""Every environment registered by sb3_mb.envs: checkers, seeding, rendering, spaces, fresh-process make,
and the family-specific preprocessing (dm_control action tables, Atari frames, distractors, Retro chain)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from sb3_mb.envs import DiscreteActionTable, list_env_ids

ALL_IDS = list_env_ids()
SONIC_IDS = [env_id for env_id in ALL_IDS if env_id.startswith("sb3_mb/Sonic")]
RUNNABLE_IDS = [env_id for env_id in ALL_IDS if env_id not in SONIC_IDS]
RETRO_IDS = ["sb3_mb/AirstrikerContest-v0"]

DMC_VALUES = {
    "Discrete5": (-1.0, -0.25, 0.0, 0.25, 1.0),
    "Discrete9": (-1.0, -0.25, -0.05, -0.01, 0.0, 0.01, 0.05, 0.25, 1.0),
}
# Deterministic given the actions, whatever the seed: no sticky actions and a fixed start.
DETERMINISTIC_IDS = {"sb3_mb/BreakoutPlaNet-v0", "sb3_mb/DoubleIntegrator-v0"}
# Stochastic (sticky actions 0.25) but Q*bert ignores input while jumping: two seeds gave identical frames
# for 330 of 333 agent steps, so a short rollout cannot tell the seeds apart.
SEED_INSENSITIVE_IDS = {"sb3_mb/QbertPlaNet-v0"}

DMC_RENDER_MODE_CHECK_IDS = {
    "sb3_mb/CartpoleSwingup-v0",
    "sb3_mb/CartpoleBalancePixelsDiscrete9-v0",
    "sb3_mb/WalkerWalkPixels-v0",
}
# PlaNet's other five tasks: name -> (state dim, action dim, PlaNet's action repeat).
DMC_TASKS = {
    "ReacherEasy": (6, 2, 4),
    "CheetahRun": (17, 6, 4),
    "FingerSpin": (9, 2, 2),
    "CupCatch": (8, 2, 4),
    "WalkerWalk": (24, 6, 2),
}
DMC_IDS = [f"sb3_mb/{name}{pixels}-v0" for name in DMC_TASKS for pixels in ("", "Pixels")]

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def expected_spaces(env_id: str) -> tuple[spaces.Space, spaces.Space, int]:
    """(observation space, action space, max_episode_steps) promised for ``env_id``."""
    name = env_id.split("/")[1][: -len("-v0")]
    if name.startswith("Cartpole"):
        action_set = next((key for key in DMC_VALUES if name.endswith(key)), None)
        action_space = (
            spaces.Box(-1.0, 1.0, (1,), np.float32)
            if action_set is None
            else spaces.Discrete(len(DMC_VALUES[action_set]))
        )
        if "Pixels" in name:
            obs_space = spaces.Box(0, 255, (64, 64, 3), np.uint8)
        else:
            obs_space = spaces.Box(-np.inf, np.inf, (5,), np.float32)
        return obs_space, action_space, 125 if action_set is None else 250
    if name.removesuffix("Pixels") in DMC_TASKS:
        obs_dim, action_dim, action_repeat = DMC_TASKS[name.removesuffix("Pixels")]
        if name.endswith("Pixels"):
            obs_space = spaces.Box(0, 255, (64, 64, 3), np.uint8)
        else:
            obs_space = spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
        return obs_space, spaces.Box(-1.0, 1.0, (action_dim,), np.float32), 1000 // action_repeat
    if name.endswith("PlaNet"):
        game = name[: -len("PlaNet")]
        channels = 1 if game == "Breakout" else 3
        n_actions = {"Breakout": 4, "Qbert": 6, "Freeway": 3}[game]
        return (
            spaces.Box(0, 255, (64, 64, channels), np.uint8),
            spaces.Discrete(n_actions),
            {"Breakout": 250}.get(game, 333),
        )
    if name == "DoubleIntegrator":  # truncates itself at its ``horizon`` kwarg: no TimeLimit
        return spaces.Box(-np.inf, np.inf, (2,), np.float32), spaces.Box(-1.0, 1.0, (1,), np.float32), None
    if name == "MovingBar":
        return spaces.Box(0, 255, (16, 16, 3), np.uint8), spaces.Discrete(3), 20
    if name.startswith("HopperDistracted"):
        dims = int(name[len("HopperDistracted") :] or 10)
        return (
            spaces.Box(-np.inf, np.inf, (11 + dims,), np.float64),
            spaces.Box(-1.0, 1.0, (3,), np.float32),
            1000,
        )
    return spaces.Box(0, 255, (128, 128, 3), np.uint8), spaces.Discrete(10), 4500


def fixed_actions(env: gymnasium.Env, n_steps: int) -> list:
    rng = np.random.default_rng(0)
    space = env.action_space
    if isinstance(space, spaces.Discrete):
        return [int(a) for a in rng.integers(space.n, size=n_steps)]
    return [rng.uniform(space.low, space.high).astype(space.dtype) for _ in range(n_steps)]


def rollout(env_id: str, seed: int, n_steps: int) -> tuple[np.ndarray, np.ndarray]:
    env = gymnasium.make(env_id)
    try:
        obs, _ = env.reset(seed=seed)
        observations, rewards = [obs], []
        for action in fixed_actions(env, n_steps):
            obs, reward, terminated, truncated, _ = env.step(action)
            observations.append(obs)
            rewards.append(reward)
            if terminated or truncated:
                break
    finally:
        env.close()  # stable-retro allows one emulator per process
    return np.stack(observations), np.asarray(rewards)


def test_list_env_ids():
    # 18 cartpole, 10 other DMC (5 tasks, state and pixels), 3 Atari, 4 Hopper, 4 retro (3 Sonic +
    # Airstriker), 1 double integrator, 1 moving bar
    assert len(ALL_IDS) == len(set(ALL_IDS)) == 18 + 10 + 3 + 4 + 4 + 1 + 1
    assert "sb3_mb/DoubleIntegrator-v0" in ALL_IDS and "sb3_mb/MovingBar-v0" in ALL_IDS
    assert all(env_id in gymnasium.registry for env_id in ALL_IDS)
    for task in ("Balance", "Swingup", "SwingupSparse"):
        for pixels in ("", "Pixels"):
            for action_set in ("", "Discrete5", "Discrete9"):
                assert f"sb3_mb/Cartpole{task}{pixels}{action_set}-v0" in ALL_IDS
    assert set(DMC_IDS) <= set(ALL_IDS)
    for name in ("HopperDistracted", "HopperDistracted5", "HopperDistracted10", "HopperDistracted15"):
        assert f"sb3_mb/{name}-v0" in ALL_IDS
    assert sorted(SONIC_IDS) == [
        f"sb3_mb/{g}-v0" for g in ("SonicAndKnuckles3", "SonicTheHedgehog", "SonicTheHedgehog2")
    ]


@pytest.mark.parametrize("env_id", RUNNABLE_IDS)
def test_checkers_spaces_render(env_id):
    obs_space, action_space, max_steps = expected_spaces(env_id)
    env = gymnasium.make(env_id, render_mode="rgb_array")
    try:
        assert env.observation_space == obs_space
        assert env.action_space == action_space
        assert env.spec.max_episode_steps == max_steps
        # gymnasium's check re-makes the env in every declared render mode and checks close on a second env:
        # stable-retro cannot open a second emulator, and Hopper's "human" mode needs a display (GLFW).
        # The 28 DeepMind Control ids share one render path, and each re-make costs a GL context (~0.5 s):
        # three do it.
        retro = env_id in RETRO_IDS
        skip_render = retro or env_id.startswith("sb3_mb/Hopper")
        dmc = env_id.startswith("sb3_mb/Cartpole") or env_id in DMC_IDS
        skip_render |= dmc and env_id not in DMC_RENDER_MODE_CHECK_IDS
        gym_check_env(env, skip_render_check=skip_render, skip_close_check=retro)
        sb3_check_env(env, warn=False)
        env.reset(seed=0)
        frame = env.render()
        assert isinstance(frame, np.ndarray) and frame.dtype == np.uint8
        assert frame.ndim == 3 and frame.shape[2] == 3 and frame.shape[0] >= 64 and frame.shape[1] >= 64
    finally:
        env.close()


@pytest.mark.parametrize("env_id", RUNNABLE_IDS)
def test_seeding(env_id):
    n_steps = 20
    obs_a, rew_a = rollout(env_id, 0, n_steps)
    obs_b, rew_b = rollout(env_id, 0, n_steps)
    np.testing.assert_array_equal(obs_a, obs_b)
    np.testing.assert_array_equal(rew_a, rew_b)
    if env_id in SEED_INSENSITIVE_IDS:
        return
    obs_c, rew_c = rollout(env_id, 1, n_steps)
    differs = obs_a.shape != obs_c.shape or not (
        np.array_equal(obs_a, obs_c) and np.array_equal(rew_a, rew_c)
    )
    assert differs == (env_id not in DETERMINISTIC_IDS)


@pytest.mark.parametrize("env_id", SONIC_IDS)
def test_sonic_missing_rom(env_id):
    import stable_retro

    game = gymnasium.registry[env_id].kwargs["game"]
    try:
        stable_retro.data.get_romfile_path(game)
    except FileNotFoundError:
        pass
    else:
        pytest.skip(f"the ROM of {game} is imported here")
    with pytest.raises(FileNotFoundError, match=game) as error:
        gymnasium.make(env_id)
    assert "python -m stable_retro.import" in str(error.value)


FRESH_PROCESS_SCRIPT = """
import json, sys
import gymnasium
assert "sb3_mb" not in sys.modules
result = {}
for env_id in json.loads(sys.argv[1]):
    try:
        env = gymnasium.make("sb3_mb:" + env_id)
        env.reset(seed=0)
        env.step(env.action_space.sample())
        env.close()
        result[env_id] = "ok"
    except FileNotFoundError as error:
        result[env_id] = "FileNotFoundError: " + str(error)
print(json.dumps(result))
"""


def test_make_in_fresh_process():
    """``gymnasium.make("sb3_mb:sb3_mb/<Id>")`` imports sb3_mb itself; one process for all ids (speed)."""
    out = subprocess.run(
        [sys.executable, "-c", FRESH_PROCESS_SCRIPT, json.dumps(ALL_IDS)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "OMP_NUM_THREADS": "1", "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")},
    )
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    for env_id in RUNNABLE_IDS:
        assert result[env_id] == "ok", (env_id, result[env_id])
    for env_id in SONIC_IDS:
        assert result[env_id] == "ok" or result[env_id].startswith("FileNotFoundError"), (
            env_id,
            result[env_id],
        )


def test_registration_is_light():
    """Registering imports none of the optional simulators (torch/cv2 may come from the algorithm exports)."""
    code = (
        "import sys, sb3_mb, sb3_mb.envs; "
        "heavy = [m for m in ('ale_py', 'stable_retro', 'dm_control', 'shimmy', 'mujoco') "
        "if m in sys.modules]; "
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_envs_import_no_algorithm():
    """``sb3_mb.envs`` imports nothing of the algorithm subpackages (arrows point down, STYLE.md)."""
    import ast
    from pathlib import Path

    import sb3_mb.envs

    for path in Path(sb3_mb.envs.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                assert not name.startswith("sb3_mb") or name.startswith("sb3_mb.envs"), (path.name, name)


# ---------------------------------------------------------------------------------------------------------
# DeepMind Control cartpole


def test_discrete_action_table_wrapper():
    env = gymnasium.make("Pendulum-v1")
    wrapped = DiscreteActionTable(env, [[-2.0], [0.5]])
    assert wrapped.action_space == spaces.Discrete(2)
    np.testing.assert_array_equal(wrapped.action(1), np.array([0.5], np.float32))
    with pytest.raises(ValueError, match="not in the wrapped action space"):
        DiscreteActionTable(env, [[3.0]])
    with pytest.raises(ValueError, match="index"):
        wrapped.action(-1)


@pytest.mark.parametrize("action_set", ["Discrete5", "Discrete9"])
def test_dmc_discrete_actions_are_the_continuous_values(action_set):
    """Each index moves the cart exactly as the continuous env does with the table's value."""
    discrete = gymnasium.make(f"sb3_mb/CartpoleSwingup{action_set}-v0", action_repeat=2)
    continuous = gymnasium.make("sb3_mb/CartpoleSwingup-v0", action_repeat=2)
    wrapper = discrete
    while not isinstance(wrapper, DiscreteActionTable):
        wrapper = wrapper.env
    np.testing.assert_array_equal(wrapper.table[:, 0], np.asarray(DMC_VALUES[action_set]))
    discrete.reset(seed=3)
    continuous.reset(seed=3)
    for index, value in enumerate(DMC_VALUES[action_set]):
        obs_d, rew_d, *_ = discrete.step(index)
        # float64, as the table: float32(-0.05) is not -0.05
        obs_c, rew_c, *_ = continuous.step(np.array([value], np.float64))
        np.testing.assert_array_equal(obs_d, obs_c)
        assert rew_d == rew_c


def test_dmc_episode_length_and_action_repeat():
    env = gymnasium.make("sb3_mb/CartpoleBalance-v0")
    env.reset(seed=0)
    steps, truncated, terminated = 0, False, False
    while not (terminated or truncated):
        _, _, terminated, truncated, _ = env.step(np.zeros(1, np.float32))
        steps += 1
    assert (steps, terminated, truncated) == (125, False, True)
    # the dm_control limit itself (1000 env steps) ends it, not only the TimeLimit
    assert env.unwrapped._env._step_count == 1000
    assert gymnasium.make("sb3_mb/CartpoleBalance-v0", action_repeat=3).spec.max_episode_steps == 334
    assert gymnasium.make("sb3_mb/CartpoleBalanceDiscrete5-v0").spec.max_episode_steps == 250
    # reward summed over repeats: balance gives at most 1 per env step
    env = gymnasium.make("sb3_mb/CartpoleBalance-v0", action_repeat=4)
    env.reset(seed=0)
    _, reward, *_ = env.step(np.zeros(1, np.float32))
    assert 1.0 < reward <= 4.0


def test_dmc_pixels_are_camera0_fast_render():
    env = gymnasium.make("sb3_mb/CartpoleSwingupPixels-v0")
    obs, _ = env.reset(seed=0)
    physics = env.unwrapped.physics
    assert physics.model.vis.quality.shadowsize == 0 and physics.model.vis.quality.offsamples == 0
    np.testing.assert_array_equal(obs, physics.render(height=64, width=64, camera_id=0))
    assert obs.std() > 0


def test_dmc_bad_arguments():
    from sb3_mb.envs.dmc import make_cartpole

    with pytest.raises(ValueError, match="action_set"):
        make_cartpole(action_set="discrete7")
    with pytest.raises(ValueError, match="task"):
        make_cartpole(task="walk")
    with pytest.raises(ValueError, match="action_repeat"):
        make_cartpole(action_repeat=0)


@pytest.mark.parametrize("name", list(DMC_TASKS))
def test_dmc_planet_task_episode_length_and_action_repeat(name):
    """A whole episode of the state id is 1000 env steps = 1000 / PlaNet's action repeat agent steps, ended by
    truncation; each agent step is ``action_repeat`` physics control steps with the rewards summed."""
    _, action_dim, action_repeat = DMC_TASKS[name]
    env = gymnasium.make(f"sb3_mb/{name}-v0")
    env.reset(seed=0)
    dm_env = env.unwrapped._env
    steps, truncated, terminated, rewards = 0, False, False, []
    while not (terminated or truncated):
        _, reward, terminated, truncated, _ = env.step(np.full(action_dim, 0.5, np.float32))
        rewards.append(reward)
        steps += 1
        assert dm_env._step_count == steps * action_repeat
    assert (steps, terminated, truncated) == (1000 // action_repeat, False, True)
    assert dm_env._step_count == 1000  # dm_control's own limit ends it, not only the TimeLimit
    # dm_control rewards are in [0, 1] per control step, summed over the repeat
    assert 0.0 <= min(rewards) and max(rewards) <= action_repeat


def test_dmc_planet_pixels_and_fork_action_repeat():
    """Pixel ids: a 64x64 frame of camera 0 with the fast render settings, a few steps (rendering is the
    cost); cup-catch with the fork's action repeat 6 is 167 agent steps."""
    for name in DMC_TASKS:
        env = gymnasium.make(f"sb3_mb/{name}Pixels-v0")
        obs, _ = env.reset(seed=0)
        physics = env.unwrapped.physics
        assert physics.model.vis.quality.shadowsize == 0 and physics.model.vis.quality.offsamples == 0
        np.testing.assert_array_equal(obs, physics.render(height=64, width=64, camera_id=0))
        assert obs.std() > 0
        for _ in range(3):
            next_obs, *_ = env.step(env.action_space.sample())
        assert next_obs.shape == (64, 64, 3) and not np.array_equal(next_obs, obs)
        env.close()
    env = gymnasium.make("sb3_mb/CupCatch-v0", action_repeat=6)
    assert env.spec.max_episode_steps == 167
    env.reset(seed=0)
    env.step(np.zeros(2, np.float32))
    assert env.unwrapped._env._step_count == 6


def test_dmc_make_bad_arguments():
    from sb3_mb.envs.dmc import make_dmc

    with pytest.raises(ValueError, match="Unknown DeepMind Control task"):
        make_dmc("cheetah", "walk")
    with pytest.raises(ValueError, match="action_repeat"):
        make_dmc("walker", "walk", action_repeat=0)
    with pytest.raises(ValueError, match=r"one-dimensional actions \(cartpole\); cheetah-run has actions"):
        make_dmc("cheetah", "run", action_set="discrete5")
    with pytest.raises(ValueError, match="action_set"):
        make_dmc("cheetah", "run", action_set="discrete7")


# ---------------------------------------------------------------------------------------------------------
# Atari


def test_planet_atari_frame_crop_grey_resize():
    from sb3_mb.envs.atari import RGB2GRAY_WEIGHTS, PlaNetAtariFrame

    class Frames(gymnasium.Env):
        observation_space = spaces.Box(0, 255, (210, 160, 3), np.uint8)
        action_space = spaces.Discrete(1)
        frame = np.zeros((210, 160, 3), np.uint8)

        def reset(self, *, seed=None, options=None):
            return self.frame, {}

    env = Frames()
    wrapper = PlaNetAtariFrame(env, crop=(17, 210, 0, 160), grayscale=True, size=(64, 64))
    assert wrapper.observation_space == spaces.Box(0, 255, (64, 64, 1), np.uint8)
    # the score bar (rows < 17) is cropped away
    frame = np.zeros((210, 160, 3), np.uint8)
    frame[:17] = 255
    np.testing.assert_array_equal(wrapper.observation(frame), 0)
    # greyscale uses skimage's weights
    frame = np.empty((210, 160, 3), np.uint8)
    frame[:] = (200, 100, 50)
    expected = round(float(np.dot((200, 100, 50), RGB2GRAY_WEIGHTS)))
    np.testing.assert_array_equal(wrapper.observation(frame), expected)
    # bilinear resize of a left/right split keeps the halves
    frame = np.zeros((210, 160, 3), np.uint8)
    frame[:, 80:] = 255
    out = PlaNetAtariFrame(env, size=(64, 64)).observation(frame)
    assert out.shape == (64, 64, 3) and (out[:, :30] == 0).all() and (out[:, 34:] == 255).all()
    with pytest.raises(ValueError, match="crop"):
        PlaNetAtariFrame(env, crop=(17, 300, 0, 160))


@pytest.mark.parametrize("env_id", ["sb3_mb/BreakoutPlaNet-v0", "sb3_mb/QbertPlaNet-v0"])
def test_planet_atari_obs_is_processed_screen(env_id):
    from sb3_mb.envs.atari import PlaNetAtariFrame

    env = gymnasium.make(env_id, render_mode="rgb_array")
    env.reset(seed=0)
    obs, *_ = env.step(1)
    wrapper = env
    while not isinstance(wrapper, PlaNetAtariFrame):
        wrapper = wrapper.env
    screen = env.render()
    assert screen.shape == (210, 160, 3)
    np.testing.assert_array_equal(obs, wrapper.observation(screen))
    ale = env.unwrapped
    expected = {"sb3_mb/BreakoutPlaNet-v0": (4, 0.0), "sb3_mb/QbertPlaNet-v0": (3, 0.25)}[env_id]
    assert (ale._frameskip, ale.ale.getFloat("repeat_action_probability")) == pytest.approx(expected)


# ---------------------------------------------------------------------------------------------------------
# Distracted Hopper


def _distractor_wrapper(env):
    from sb3_mb.envs.distractors import DistractionDimensions

    while not isinstance(env, DistractionDimensions):
        env = env.env
    return env


def test_distractors_follow_the_formula():
    env = gymnasium.make("sb3_mb/HopperDistracted-v0")
    wrapper = _distractor_wrapper(env)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (21,)
    assert wrapper.W.shape == (10, 21) and (wrapper.W[:, :11] == 0).all()
    assert wrapper.P.shape == (10, 10) and (wrapper.P >= 0).all()
    x = obs[11:].copy()
    rng = np.random.default_rng(1)
    for _ in range(30):
        obs, *_ = env.step(rng.uniform(-1, 1, 3).astype(np.float32))
        w_dd = wrapper.W[:, 11:]
        by_hand = w_dd @ x
        by_hand = by_hand + 0.1 * np.sin(wrapper.P @ by_hand)
        by_hand = np.where(np.abs(by_hand) > 20, wrapper.c, by_hand)
        np.testing.assert_allclose(obs[11:], by_hand, rtol=1e-12, atol=1e-12)
        assert ((np.abs(obs[11:]) <= 20) | (obs[11:] == wrapper.c)).all()
        x = obs[11:].copy()


def test_distractors_reset_is_one_update_of_small_noise():
    from sb3_mb.envs.distractors import DistractionDimensions

    env = gymnasium.make("Hopper-v5")
    wrapper = DistractionDimensions(env.unwrapped, distraction_dims=5, seed=7)
    obs, _ = wrapper.reset(seed=7)
    rng = np.random.default_rng(7)
    w = rng.normal(0, 1, (5, 16))
    p = rng.normal(0, 10, (5, 5)) ** 2
    c = rng.normal(0, 1, 5)
    x0 = rng.normal(0, 0.1, 5)
    np.testing.assert_array_equal(wrapper.W[:, 11:], w[:, 11:])
    np.testing.assert_array_equal(wrapper.P, p)
    np.testing.assert_array_equal(wrapper.c, c)
    x1 = w[:, 11:] @ x0
    x1 = x1 + 0.1 * np.sin(p @ x1)
    np.testing.assert_allclose(obs[11:], np.where(np.abs(x1) > 20, c, x1), rtol=1e-12, atol=1e-12)


def test_distractors_seeding():
    env = gymnasium.make("sb3_mb/HopperDistracted5-v0")
    wrapper = _distractor_wrapper(env)
    env.reset(seed=1)
    w1 = wrapper.W.copy()
    env.reset()
    np.testing.assert_array_equal(wrapper.W, w1)  # unseeded reset keeps the dynamics
    env.reset(seed=2)
    assert not np.array_equal(wrapper.W, w1)
    env.reset(seed=1)
    np.testing.assert_array_equal(wrapper.W, w1)
    # the constructor seed gives the same dynamics as reset(seed=...)
    constructed = _distractor_wrapper(gymnasium.make("sb3_mb/HopperDistracted5-v0", seed=1))
    np.testing.assert_array_equal(constructed.W, w1)


def test_distractors_zero_dims_is_plain_hopper():
    plain = gymnasium.make("Hopper-v5")
    distracted = gymnasium.make("sb3_mb/HopperDistracted-v0", distraction_dims=0)
    assert distracted.observation_space.shape == plain.observation_space.shape == (11,)
    obs_p, _ = plain.reset(seed=4)
    obs_d, _ = distracted.reset(seed=4)
    np.testing.assert_array_equal(obs_p, obs_d)
    rng = np.random.default_rng(0)
    for _ in range(20):
        action = rng.uniform(-1, 1, 3).astype(np.float32)
        step_p, step_d = plain.step(action), distracted.step(action)
        np.testing.assert_array_equal(step_p[0], step_d[0])
        assert step_p[1:4] == step_d[1:4]


def test_distractors_pure_noise_and_reward_unchanged():
    plain = gymnasium.make("Hopper-v5")
    noisy = gymnasium.make("sb3_mb/HopperDistracted15-v0", pure_noise=True)
    obs_p, _ = plain.reset(seed=5)
    obs_n, _ = noisy.reset(seed=5)
    np.testing.assert_array_equal(obs_n[:11], obs_p)
    draws = [obs_n[11:]]
    for _ in range(50):
        step_p, step_n = plain.step(np.ones(3, np.float32)), noisy.step(np.ones(3, np.float32))
        np.testing.assert_array_equal(step_n[0][:11], step_p[0])
        assert step_n[1:4] == step_p[1:4]
        draws.append(step_n[0][11:])
        if step_p[2]:
            break
    draws = np.stack(draws)
    assert abs(draws.mean()) < 0.5 and 0.7 < draws.std() < 1.3
    assert not np.array_equal(draws[0], draws[1])


def test_distractors_bad_dims():
    from sb3_mb.envs.distractors import make_hopper_distracted

    with pytest.raises(ValueError, match="distraction_dims"):
        make_hopper_distracted(distraction_dims=-1)


# ---------------------------------------------------------------------------------------------------------
# Retro chain (Sonic ROMs are not distributable; the chain is exercised on Airstriker and on stub envs)


def test_button_tables():
    from sb3_mb.envs.retro import GENESIS_BUTTONS, button_table

    def combos(table):
        return [tuple(GENESIS_BUTTONS[i] for i in np.flatnonzero(row)) for row in table]

    assert combos(button_table("retro_baselines")) == [
        ("LEFT",),
        ("RIGHT",),
        ("DOWN", "LEFT"),
        ("DOWN", "RIGHT"),
        ("DOWN",),
        ("B", "DOWN"),
        ("B",),
    ]
    assert combos(button_table("wassname")) == [
        (),
        ("LEFT",),
        ("RIGHT",),
        ("DOWN", "LEFT"),
        ("DOWN", "RIGHT"),
        ("DOWN",),
        ("B", "DOWN"),
        ("B", "LEFT"),
        ("B", "RIGHT"),
        ("B",),
    ]
    with pytest.raises(ValueError, match="action_set"):
        button_table("sonic11")


class _Recorder(gymnasium.Env):
    """Stub env that records the actions it receives and which state was loaded."""

    observation_space = spaces.Box(0, 255, (8, 8, 3), np.uint8)
    action_space = spaces.Discrete(10)

    def __init__(self):
        self.actions, self.loaded = [], []

    def load_state(self, name):
        self.loaded.append(name)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros((8, 8, 3), np.uint8), {}

    def step(self, action):
        self.actions.append(int(action))
        return np.zeros((8, 8, 3), np.uint8), 1.0, False, False, {}


@pytest.mark.parametrize("stickprob", [0.0, 1.0])
def test_stochastic_frame_skip(stickprob):
    from sb3_mb.envs.retro import StochasticFrameSkip

    stub = _Recorder()
    env = StochasticFrameSkip(stub, n=4, stickprob=stickprob)
    env.reset(seed=0)
    _, reward, *_ = env.step(1)
    assert reward == 4.0
    env.step(2)
    first = 1 if stickprob == 1.0 else 2  # the previous action sticks on the first frame only
    assert stub.actions == [1, 1, 1, 1, first, 2, 2, 2]


def test_stochastic_frame_skip_is_seeded():
    from sb3_mb.envs.retro import StochasticFrameSkip

    def actions(seed):
        stub = _Recorder()
        env = StochasticFrameSkip(stub, n=4, stickprob=0.5)
        env.reset(seed=seed)
        for action in range(10):
            env.step(action)
        return stub.actions

    assert actions(0) == actions(0)
    assert actions(0) != actions(1)


def test_random_state_reset():
    from sb3_mb.envs.retro import RandomStateReset

    stub = _Recorder()
    env = RandomStateReset(stub, ["A", "B", "C"])
    picks = [env.reset(seed=seed)[1]["state"] for seed in range(20)]
    assert set(picks) == {"A", "B", "C"} and stub.loaded == picks
    assert [env.reset(seed=seed)[1]["state"] for seed in range(20)] == picks
    with pytest.raises(ValueError, match="states"):
        RandomStateReset(stub, [])


def test_retro_chain_on_airstriker():
    env = gymnasium.make("sb3_mb/AirstrikerContest-v0", action_set="retro_baselines", reward_scale=1.0)
    try:
        assert env.action_space == spaces.Discrete(7)
        _, info = env.reset(seed=0)
        assert info["state"] == "Level1"
        names, wrapper = [], env
        while wrapper is not env.unwrapped:
            # rl_zoo3 (imported by the zoo tests in the same worker) swaps gymnasium's TimeLimit for its
            # subclass PatchedTimeLimit: name each wrapper by the first class of ours or gymnasium's.
            names.append(next(c.__name__ for c in type(wrapper).__mro__ if c.__name__ != "PatchedTimeLimit"))
            wrapper = wrapper.env
        assert names[-5:] == [
            "RewardScaler",
            "TimeLimit",
            "StochasticFrameSkip",
            "DiscreteActionTable",
            "RandomStateReset",
        ]
        assert env.render().shape == (224, 320, 3)
    finally:
        env.close()
    with pytest.raises(ValueError, match="Unknown states"):
        gymnasium.make("sb3_mb/AirstrikerContest-v0", states=["Level9"])
