"""World Models' progress bars of the work between env steps (random rollouts, V and M updates, CMA-ES
generations): drawn with ``learn(..., progress_bar=True)``, silent otherwise."""

from __future__ import annotations

import pytest
from progress_bars import RecordingBar

from sb3_mb.common import utils as common_utils
from sb3_mb.registry import ALGOS
from sb3_mb.worldmodels import worldmodels as wm_module

TINY = dict(ALGOS["worldmodels"].test_kwargs, n_random_rollouts=2, n_generations=2)
STAGES = {
    "World Models random rollouts": 2,
    "World Models V updates": None,
    "World Models M updates": None,
    "World Models CMA-ES generations": 2,
}


@pytest.mark.parametrize("progress_bar", [True, False])
def test_stage_bars(progress_bar, monkeypatch, capsys):
    monkeypatch.setattr(common_utils, "tqdm", RecordingBar)
    RecordingBar.bars = []
    model = wm_module.WorldModels("MlpPolicy", "Pendulum-v1", seed=0, **TINY)
    model.learn(450, progress_bar=progress_bar)  # 2 random episodes of 50 steps, one round, C collects
    out = capsys.readouterr()
    drawn = {bar.kwargs["desc"]: bar for bar in RecordingBar.bars if not bar.kwargs["disable"]}
    if progress_bar:
        assert set(drawn) == set(STAGES)
        for desc, total in STAGES.items():
            bar = drawn[desc]
            assert bar.updates == bar.kwargs["total"] and (total is None or bar.kwargs["total"] == total), (
                desc
            )
        assert "World Models CMA-ES generations" in out.out + out.err
    else:
        assert drawn == {}
        assert "World Models" not in out.out + out.err
