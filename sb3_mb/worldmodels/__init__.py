"""World Models (Ha & Schmidhuber 2018, arXiv:1803.10122): a VAE (V), an MDN-RNN (M) and a controller (C)
trained by CMA-ES in the real environment or in the dream."""

from sb3_mb.worldmodels.cmaes import ControllerES, RolloutEvaluator, evaluate_population
from sb3_mb.worldmodels.dream import DreamEnv
from sb3_mb.worldmodels.mdn_rnn import MDNRNN, MixtureParams
from sb3_mb.worldmodels.policies import CnnPolicy, Controller, MlpPolicy, WorldModelsPolicy, WorldModelsState
from sb3_mb.worldmodels.vae import ConvVAE, MlpVAE, VAELosses
from sb3_mb.worldmodels.worldmodels import WorldModels

__all__ = [
    "MDNRNN",
    "CnnPolicy",
    "Controller",
    "ControllerES",
    "ConvVAE",
    "DreamEnv",
    "MixtureParams",
    "MlpPolicy",
    "MlpVAE",
    "RolloutEvaluator",
    "VAELosses",
    "WorldModels",
    "WorldModelsPolicy",
    "WorldModelsState",
    "evaluate_population",
]
