"""γ-models (Janner, Mordatch and Levine 2020, arXiv:2010.14496): a conditional normalizing flow over
discounted future states trained by temporal difference, and its values."""

from sb3_mb.gammamodels.flows import conditional_spline_flow
from sb3_mb.gammamodels.gamma_model import OBJECTIVES, GammaModel, gamma_mve_weights, policy_function
from sb3_mb.gammamodels.gamma_mve import GammaMVE, GammaMVEReplayBuffer

__all__ = [
    "OBJECTIVES",
    "GammaMVE",
    "GammaMVEReplayBuffer",
    "GammaModel",
    "conditional_spline_flow",
    "gamma_mve_weights",
    "policy_function",
]
