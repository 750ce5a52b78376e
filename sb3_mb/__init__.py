"""sb3-mb: model-based reinforcement learning (world models) for Stable-Baselines3.

Importing this package registers the Gymnasium environments of :mod:`sb3_mb.envs` and exports every
algorithm class listed in :mod:`sb3_mb.registry`.
"""

import os

from sb3_mb import envs  # noqa: F401  (registers the environments)
from sb3_mb.mbpo import MBPO
from sb3_mb.planet import PlaNet
from sb3_mb.registry import ALGOS, AlgoSpec, get_algorithm, list_algorithms
from sb3_mb.steve import STEVE
from sb3_mb.worldmodels import WorldModels, WorldModelsPPO


def __getattr__(name: str):
    """``sb3_mb.GammaModel`` on first use: it needs ``zuko`` (the ``gamma`` extra), which ``import sb3_mb``
    does not."""
    if name == "GammaModel":
        from sb3_mb.gammamodels import GammaModel

        return GammaModel
    raise AttributeError(f"module 'sb3_mb' has no attribute {name!r}")


with open(os.path.join(os.path.dirname(__file__), "version.txt")) as _file_handler:
    __version__ = _file_handler.read().strip()

__all__ = [
    "ALGOS",
    "MBPO",
    "GammaModel",
    "STEVE",
    "PlaNet",
    "WorldModels",
    "WorldModelsPPO",
    "AlgoSpec",
    "get_algorithm",
    "list_algorithms",
    "__version__",
]
