"""PlaNet (Hafner et al. 2019, arXiv:1811.04551): an RSSM world model and CEM planning in its latent space."""

from sb3_mb.planet.latents import LatentProbeCallback, collect_latents, linear_probe_r2
from sb3_mb.planet.planet import PlaNet
from sb3_mb.planet.policies import CnnPolicy, MlpPolicy, PlaNetPolicy, PlaNetState
from sb3_mb.planet.rssm import RSSM, RSSMState, TransitionModel
from sb3_mb.planet.transition import SSM, MovingAverageRSSM

__all__ = [
    "RSSM",
    "SSM",
    "CnnPolicy",
    "LatentProbeCallback",
    "MlpPolicy",
    "MovingAverageRSSM",
    "PlaNet",
    "PlaNetPolicy",
    "PlaNetState",
    "RSSMState",
    "TransitionModel",
    "collect_latents",
    "linear_probe_r2",
]
