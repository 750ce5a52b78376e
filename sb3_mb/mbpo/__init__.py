"""MBPO (Janner et al. 2019, arXiv:1906.08253) with MLE, MSE, VaGraM and IterVAML model losses (Voelcker et
al. 2022, arXiv:2204.01464)."""

from sb3_mb.mbpo.buffers import MBPOReplayBuffer
from sb3_mb.mbpo.mbpo import MBPO
from sb3_mb.mbpo.model_losses import MODEL_LOSSES
from sb3_mb.mbpo.policies import MBPOPolicy, MlpPolicy

__all__ = ["MBPO", "MODEL_LOSSES", "MBPOPolicy", "MBPOReplayBuffer", "MlpPolicy"]
