"""MBPO (Janner et al. 2019) with MLE, MSE, VaGraM and IterVAML model losses (Voelcker et al. 2022)."""

from sb3_mb.mbpo.mbpo import MBPO
from sb3_mb.mbpo.model_losses import MODEL_LOSSES
from sb3_mb.mbpo.policies import MlpPolicy

__all__ = ["MBPO", "MODEL_LOSSES", "MlpPolicy"]
