"""STEVE (Buckman et al. 2018, arXiv:1807.01675): DDPG with stochastic ensemble value expansion; MVE and DDPG
targets."""

from sb3_mb.steve.callbacks import GreedyCSVCallback, greedy_csv_line
from sb3_mb.steve.policies import MlpPolicy, STEVEPolicy, STEVEWorldModel
from sb3_mb.steve.steve import (
    STEVE,
    TARGET_MODES,
    candidate_samples,
    candidate_weights,
    inverse_variance_weights,
)

__all__ = [
    "GreedyCSVCallback",
    "STEVE",
    "TARGET_MODES",
    "MlpPolicy",
    "STEVEPolicy",
    "STEVEWorldModel",
    "candidate_samples",
    "candidate_weights",
    "greedy_csv_line",
    "inverse_variance_weights",
]
