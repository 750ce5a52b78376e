"""The density / value map as a video over training through SB3's logger (sb3_mb.gammamodels.maps)."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.logger import Logger, Video

from sb3_mb.gammamodels import GammaMVE
from sb3_mb.gammamodels.maps import MapVideoCallback
from sb3_mb.registry import ALGOS


class _Recorder(Logger):
    """Keeps every recorded value with the step of the next dump."""

    def __init__(self):
        super().__init__(None, [])
        self.records, self.pending = [], {}

    def record(self, key, value, exclude=None):
        self.pending[key] = value

    def dump(self, step=0):
        self.records += [(step, key, value) for key, value in self.pending.items()]
        self.pending = {}


def test_map_video_grows_one_frame_per_interval_and_follows_training():
    """GammaMVE on Pendulum-v1, 60 steps, a frame every 20: three videos of 1, 2, 3 frames
    ``(1, T, 3, H, W)`` uint8, each holding the earlier frames unchanged, dumped at steps 20 / 40 / 60; the
    γ-model trains between frames (learning starts at 10), so its density panels, and the frames, change."""
    model = GammaMVE("Pendulum-v1", seed=0, **{**ALGOS["gammamve"].test_kwargs, "learning_starts": 10})
    recorder = _Recorder()
    model.set_logger(recorder)
    callback = MapVideoCallback(every=20, n=11, dpi=20)
    model.learn(60, callback=callback)
    videos = [(step, value) for step, key, value in recorder.records if key == "gamma_model/density_video"]
    assert [step for step, _ in videos] == [20, 40, 60] and callback.frame_steps == [20, 40, 60]
    for t, (_, video) in enumerate(videos, start=1):
        assert isinstance(video, Video) and video.frames.dtype == th.uint8
        assert video.frames.shape[:3] == (1, t, 3) and video.frames.shape[3:] == videos[0][1].frames.shape[3:]
        if t > 1:
            th.testing.assert_close(video.frames[0, : t - 1], videos[t - 2][1].frames[0])
    frames = videos[-1][1].frames[0].permute(0, 2, 3, 1).numpy()
    np.testing.assert_array_equal(frames, np.stack(callback.frames))
    panels = frames[:, frames.shape[1] // 5 :]  # below the "step N" title
    assert (panels[0] != panels[-1]).any(), "the density panels did not change while the γ-model trained"
    callback.add_frame(), callback.add_frame()  # the same model drawn twice: the same frame
    np.testing.assert_array_equal(callback.frames[-1], callback.frames[-2])


def test_map_video_value_kind_and_errors():
    from stable_baselines3 import SAC

    with pytest.raises(ValueError, match="every >= 1"):
        MapVideoCallback(every=0)
    with pytest.raises(ValueError, match="'density' or 'value'"):
        MapVideoCallback(kind="return")
    sac = SAC("MlpPolicy", "Pendulum-v1", learning_starts=10, batch_size=8, policy_kwargs={"net_arch": [8]})
    with pytest.raises(ValueError, match="needs a GammaModel"):
        sac.learn(5, callback=MapVideoCallback(every=5))
    model = GammaMVE("Pendulum-v1", seed=0, **ALGOS["gammamve"].test_kwargs)
    recorder = _Recorder()
    model.set_logger(recorder)
    callback = MapVideoCallback(every=1000, kind="value", n=6, dpi=20)
    model.learn(30, callback=callback)  # fewer steps than every: one frame at the end
    assert callback.frame_steps == [30]
    assert [key for _, key, _ in recorder.records].count("gamma_model/value_video") == 1
