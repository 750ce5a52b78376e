"""PlaNet (Hafner et al. 2019): RSSM world model and latent-space CEM planning (spec ``planet.md``)."""

from sb3_mb.planet.planet import PlaNet
from sb3_mb.planet.policies import CnnPolicy, MlpPolicy, PlaNetPolicy
from sb3_mb.planet.rssm import RSSM, RSSMState

__all__ = ["RSSM", "CnnPolicy", "MlpPolicy", "PlaNet", "PlaNetPolicy", "RSSMState"]
