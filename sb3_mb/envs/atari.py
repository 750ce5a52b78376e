"""Atari with the preprocessing of the discrete-action adaptation of Alex Rose's PlaNet fork.

The games run on the Arcade Learning Environment (Bellemare et al. 2013, arXiv:1207.4708) through ale-py.
PlaNet itself (Hafner et al. 2019, arXiv:1811.04551) has no Atari experiments: the tasks, crops, frame
skips and episode caps below are those of the fork's Breakout, Qbert and Freeway tasks, a code release
without a paper.

Chain built by :func:`make_planet_atari` (inner to outer)::

    ale_py.env.AtariEnv(game, frameskip, repeat_action_probability, minimal action set, RGB observations)
    -> PlaNetAtariFrame: crop, optional greyscale (skimage rgb2gray weights), bilinear resize, uint8
    -> TimeLimit(max_episode_steps)

No reward clipping, no life-loss termination, no no-op starts, no frame max-pooling: the fork has none.
The fork's minimum episode duration (``done`` ignored before step 50, the training sequence length)
concerns how episodes are stored, not the environment, and is not reproduced here.

ale-py 0.12 has no ``BreakoutDeterministic-v4`` / ``Qbert-v0`` ids any more; the presets rebuild them
from ``AtariEnv`` arguments: v4 "Deterministic" is ``frameskip=4, repeat_action_probability=0``; v0 has
sticky actions ``repeat_action_probability=0.25`` (Machado et al. 2018, arXiv:1709.06009); the fork
replaced v0's random frameskip by 3.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np
from gymnasium import spaces
from gymnasium.wrappers import TimeLimit

#: skimage ``rgb2gray`` weights (ITU-R BT.709 luma), used by the fork for Breakout.
RGB2GRAY_WEIGHTS = (0.2125, 0.7154, 0.0721)

#: Per-game presets of Rose's PlaNet fork. ``crop`` is ``(row_start, row_stop, col_start, col_stop)``.
PRESETS: dict[str, dict[str, Any]] = {
    "breakout": dict(
        frameskip=4,
        repeat_action_probability=0.0,
        crop=(17, 210, 0, 160),
        grayscale=True,
        max_episode_steps=250,
    ),
    "qbert": dict(
        frameskip=3, repeat_action_probability=0.25, crop=None, grayscale=False, max_episode_steps=333
    ),
    "freeway": dict(
        frameskip=3, repeat_action_probability=0.25, crop=None, grayscale=False, max_episode_steps=333
    ),
}


class PlaNetAtariFrame(gymnasium.ObservationWrapper, gymnasium.utils.RecordConstructorArgs):
    """Crop, optionally convert to greyscale, and bilinearly resize an RGB frame (the fork's Atari frames).

    Gymnasium's ``GrayscaleObservation`` + ``ResizeObservation`` round to uint8 between the two steps and
    resize with ``INTER_AREA``; the fork converts to float greyscale (skimage ``rgb2gray``) and resizes that
    bilinearly, so the steps are done here in float32 and rounded once.

    Observation: ``Box(0, 255, (height, width, 1 if grayscale else 3), uint8)``.

    :param env: environment with ``(rows, cols, 3)`` uint8 RGB observations.
    :param crop: ``(row_start, row_stop, col_start, col_stop)`` in pixels of the original frame, or ``None``.
    :param grayscale: weighted sum of R, G, B with :data:`RGB2GRAY_WEIGHTS`, keeping a channel axis of 1.
    :param size: ``(height, width)`` after resizing (``cv2.INTER_LINEAR``).
    :raises ValueError: if the observation is not an RGB image or the crop is empty / out of the frame.
    """

    def __init__(
        self,
        env: gymnasium.Env,
        crop: tuple[int, int, int, int] | None = None,
        grayscale: bool = False,
        size: tuple[int, int] = (64, 64),
    ):
        gymnasium.utils.RecordConstructorArgs.__init__(self, crop=crop, grayscale=grayscale, size=size)
        gymnasium.ObservationWrapper.__init__(self, env)
        shape = env.observation_space.shape
        if shape is None or len(shape) != 3 or shape[2] != 3:
            raise ValueError(f"PlaNetAtariFrame expects (rows, cols, 3) RGB observations, got shape {shape}")
        if crop is not None:
            r0, r1, c0, c1 = crop
            if not (0 <= r0 < r1 <= shape[0] and 0 <= c0 < c1 <= shape[1]):
                raise ValueError(f"crop {crop} is empty or outside the {shape[:2]} frame")
        self.crop = None if crop is None else tuple(int(v) for v in crop)
        self.grayscale = bool(grayscale)
        self.size = (int(size[0]), int(size[1]))
        self._weights = np.asarray(RGB2GRAY_WEIGHTS, dtype=np.float32)
        self.observation_space = spaces.Box(0, 255, (*self.size, 1 if grayscale else 3), np.uint8)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        import cv2

        frame = observation
        if self.crop is not None:
            r0, r1, c0, c1 = self.crop
            frame = frame[r0:r1, c0:c1]
        frame = frame.astype(np.float32)
        if self.grayscale:
            frame = frame @ self._weights
        frame = cv2.resize(frame, (self.size[1], self.size[0]), interpolation=cv2.INTER_LINEAR)
        frame = np.clip(np.rint(frame), 0, 255).astype(np.uint8)
        return frame.reshape(self.observation_space.shape)


def make_planet_atari(
    game: str = "breakout",
    frameskip: int | None = None,
    repeat_action_probability: float | None = None,
    crop: tuple[int, int, int, int] | None | str = "preset",
    grayscale: bool | None = None,
    size: tuple[int, int] = (64, 64),
    max_episode_steps: int | None = None,
    render_mode: str | None = None,
    **ale_kwargs: Any,
) -> gymnasium.Env:
    """An ALE game preprocessed as in the discrete-action adaptation of Rose's PlaNet fork.

    Arguments left at ``None`` (``crop``: ``"preset"``) take the game's value in :data:`PRESETS`.

    Presets: ``breakout`` frameskip 4, no sticky actions, crop rows 17-210 / cols 0-160, greyscale,
    ``(64, 64, 1)``, 250 agent steps; ``qbert`` and ``freeway`` frameskip 3, sticky 0.25, RGB ``(64, 64, 3)``,
    333 agent steps. Actions: ``Discrete(n)`` over the game's minimal action set (Breakout 4, Qbert 6,
    Freeway 3). Rewards are the raw game score differences summed over the skipped frames (no clipping).

    :param game: ALE ROM name (``"breakout"``, ``"qbert"``, ``"freeway"``; other games need every argument).
    :param frameskip: emulator frames per agent step (the fork's action repeat).
    :param repeat_action_probability: ALE sticky-action probability.
    :param crop: ``(row_start, row_stop, col_start, col_stop)`` or ``None`` for the whole 210x160 frame.
    :param grayscale: one channel with skimage ``rgb2gray`` weights instead of RGB.
    :param size: ``(height, width)`` of the observation.
    :param max_episode_steps: episode cap in agent steps (``truncated=True``).
    :param render_mode: ``None`` or ``"rgb_array"`` (``render()`` gives the full ``(210, 160, 3)`` frame).
    :param ale_kwargs: passed to ``ale_py.env.AtariEnv`` (e.g. ``mode``, ``difficulty``).
    :raises ValueError: a game without preset and a missing argument.
    :raises ImportError: ``ale-py`` or ``opencv-python-headless`` missing (``pip install sb3-mb[atari]``).
    """
    preset = PRESETS.get(game, {})
    params = dict(
        frameskip=frameskip,
        repeat_action_probability=repeat_action_probability,
        crop=crop,
        grayscale=grayscale,
        max_episode_steps=max_episode_steps,
    )
    for key, value in params.items():
        # ``crop=None`` means "no crop"; the preset crop is asked for with the default "preset".
        if (key == "crop" and isinstance(value, str)) or (key != "crop" and value is None):
            if key not in preset:
                if key == "crop":
                    params[key] = None
                    continue
                raise ValueError(
                    f"Game {game!r} has no preset (known: {sorted(PRESETS)}); pass {key}= explicitly"
                )
            params[key] = preset[key]
    try:
        import cv2  # noqa: F401
        from ale_py.env import AtariEnv
    except ImportError as error:
        raise ImportError(
            "The PlaNet Atari environments need ale-py and opencv: pip install 'sb3-mb[atari]'"
        ) from error

    env: gymnasium.Env = AtariEnv(
        game=game,
        obs_type="rgb",
        frameskip=int(params["frameskip"]),
        repeat_action_probability=float(params["repeat_action_probability"]),
        full_action_space=False,
        render_mode=render_mode,
        **ale_kwargs,
    )
    env = PlaNetAtariFrame(env, crop=params["crop"], grayscale=bool(params["grayscale"]), size=size)
    return TimeLimit(env, max_episode_steps=int(params["max_episode_steps"]))
