"""World Models (Ha & Schmidhuber 2018, arXiv:1803.10122): a VAE (V), an MDN-RNN (M) and a controller (C)
trained by CMA-ES in the real environment or in the dream; and the Sonic fork's variant (wassname's Sonic
World Models): VAE5, an inverse model and a joint loss, with PPO as the controller
(:class:`WorldModelsPPO`)."""

from sb3_mb.worldmodels.carracing import CarRacingActions, make_carracing
from sb3_mb.worldmodels.cmaes import ControllerES, RolloutEvaluator, evaluate_population
from sb3_mb.worldmodels.dream import DreamEnv
from sb3_mb.worldmodels.fork import (
    LOSS_WEIGHTS,
    VAE5,
    ForkWorldModel,
    InverseModel,
    LossWeights,
    WorldModelLosses,
    joint_loss,
)
from sb3_mb.worldmodels.fork_ppo import (
    WorldModelFeatureVecEnv,
    WorldModelsPPO,
    WorldModelsPPOPolicy,
    curiosity_reward,
)
from sb3_mb.worldmodels.mdn_rnn import MDNRNN, MixtureParams
from sb3_mb.worldmodels.policies import CnnPolicy, Controller, MlpPolicy, WorldModelsPolicy, WorldModelsState
from sb3_mb.worldmodels.storage import DiskEpisodeReplayBuffer
from sb3_mb.worldmodels.vae import ConvVAE, MlpVAE, VAELosses
from sb3_mb.worldmodels.worldmodels import WorldModels

__all__ = [
    "DiskEpisodeReplayBuffer",
    "LOSS_WEIGHTS",
    "MDNRNN",
    "VAE5",
    "CarRacingActions",
    "CnnPolicy",
    "Controller",
    "ControllerES",
    "ConvVAE",
    "DreamEnv",
    "ForkWorldModel",
    "InverseModel",
    "LossWeights",
    "MixtureParams",
    "MlpPolicy",
    "MlpVAE",
    "RolloutEvaluator",
    "VAELosses",
    "WorldModelFeatureVecEnv",
    "WorldModelLosses",
    "WorldModels",
    "WorldModelsPPO",
    "WorldModelsPPOPolicy",
    "WorldModelsPolicy",
    "WorldModelsState",
    "curiosity_reward",
    "evaluate_population",
    "joint_loss",
    "make_carracing",
]
