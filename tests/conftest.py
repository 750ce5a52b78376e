"""Test-wide settings.

Two torch processes on two cores, each with the default thread count, run ~50x slower than one, so every
test process (pytest-xdist workers included) uses one thread. Rendering is software (EGL) on CI.
"""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")
os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
os.environ.setdefault("SDL_VIDEODRIVER", "dummy")

import torch  # noqa: E402

torch.set_num_threads(1)
