"""A progress bar that records itself, for the tests of ``sb3_mb.common.utils.make_progress_bar``'s users."""

from __future__ import annotations

from sb3_mb.common import utils as common_utils


class RecordingBar(common_utils.tqdm):
    """The real bar, remembering every instance's arguments and updates in ``RecordingBar.bars``.

    Use: ``RecordingBar.bars = []`` and ``monkeypatch.setattr(common_utils, "tqdm", RecordingBar)``.
    """

    bars: list = []

    def __init__(self, *args, **kwargs):
        self.kwargs, self.updates = kwargs, 0
        super().__init__(*args, **kwargs)
        RecordingBar.bars.append(self)

    def update(self, n=1):
        self.updates += n
        return super().update(n)
