"""STEVE's progress bar of the world-model pretraining: drawn with ``learn(..., progress_bar=True)``, silent
otherwise."""

from __future__ import annotations

import pytest
from progress_bars import RecordingBar

from sb3_mb.common import utils as common_utils
from sb3_mb.registry import ALGOS
from sb3_mb.steve import steve as steve_module

TINY = dict(ALGOS["steve"].test_kwargs, model_pretrain_steps=30)


@pytest.mark.parametrize("progress_bar", [True, False])
def test_pretraining_bar(progress_bar, monkeypatch, capsys):
    monkeypatch.setattr(common_utils, "tqdm", RecordingBar)
    RecordingBar.bars = []
    model = steve_module.STEVE("MlpPolicy", "Pendulum-v1", seed=0, **TINY)
    model.learn(60, progress_bar=progress_bar)
    out = capsys.readouterr()
    pretraining = [bar for bar in RecordingBar.bars if bar.kwargs["total"] == 30]
    assert len(pretraining) == 1, "the pretraining made no bar object"
    assert pretraining[0].updates == 30 and pretraining[0].kwargs["disable"] is (not progress_bar)
    assert ("STEVE world-model updates" in out.out + out.err) is progress_bar
