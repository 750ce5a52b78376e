"""Optuna samplers of sb3-mb's algorithms for the zoo's ``--optimize`` (rl-zoo3's tuning).

A sampler has rl_zoo3's signature ``sample_<algo>_params(trial, n_actions, n_envs, additional_args) -> dict``:
it suggests the *raw* trial parameters (the names stored in the Optuna study, e.g. ``one_minus_gamma``) and
returns the constructor arguments they stand for. rl_zoo3 keeps its samplers in a hard-coded dict
(``rl_zoo3.hyperparams_opt.HYPERPARAMS_SAMPLER``, read by ``ExperimentManager.objective``) and its converters
from stored trial parameters back to constructor arguments in another (``HYPERPARAMS_CONVERTER``, read by
``--trial-id``); :func:`register_samplers` (called by ``zoo.train``) adds ours to both.

Every sampler is a pure function of what it suggests, so the converter of stored parameters is the sampler
replayed on ``optuna.trial.FixedTrial(params)`` (:func:`convert_params`): an algorithm joins by one line in
:data:`SAMPLERS`.

What is sampled is each method's learning rule (rates, horizons, ratios, model and network sizes); the
compute knobs (``n_rollouts_per_step``, ``updates_per_episode``, ``model_train_freq``, ``epoch_length``,
buffer sizes) and the user's choices (``model_loss``, ``model_data_mixing``, the policy) stay as the YAML
entry sets them. Every range is valid for the constructors in every combination (PlaNet's ``n_elites`` is a
fraction of ``n_candidates``), so no trial fails on a bad combination. Note that rl_zoo3 *replaces* the
entry's ``policy_kwargs`` with the sampled one (``kwargs.update``), so only MBPO, PlaNet, STEVE and γ-MVE
sample it.
"""

from __future__ import annotations

from typing import Any, Callable

import optuna
from optuna.trial import FixedTrial

Sampler = Callable[[optuna.Trial, int, int, dict], dict[str, Any]]

#: SAC actor / critic sizes (rl_zoo3's names for the off-policy samplers).
NET_ARCH = {"small": [64, 64], "medium": [256, 256], "big": [400, 300]}

#: PlaNet RSSM sizes: (belief_size, state_size, hidden_size); "paper" is the camera-ready 200 / 30 / 200.
RSSM_SIZE = {"small": (64, 16, 64), "medium": (128, 30, 128), "paper": (200, 30, 200)}


def _sample_discount_rate_batch(trial: optuna.Trial, max_learning_rate: float) -> dict[str, Any]:
    """``gamma`` (as ``one_minus_gamma``, log scale), ``learning_rate`` and a power-of-two ``batch_size``, the
    off-policy learner's basics (rl-zoo3's SAC/TD3 samplers draw them alike)."""
    one_minus_gamma = trial.suggest_float("one_minus_gamma", 1e-4, 0.03, log=True)
    learning_rate = trial.suggest_float("learning_rate", 1e-5, max_learning_rate, log=True)
    batch_size_pow = trial.suggest_int("batch_size_pow", 5, 9)  # 32 .. 512
    trial.set_user_attr("gamma", 1 - one_minus_gamma)
    trial.set_user_attr("batch_size", 2**batch_size_pow)
    return {"gamma": 1 - one_minus_gamma, "learning_rate": learning_rate, "batch_size": 2**batch_size_pow}


def sample_mbpo_params(
    trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict
) -> dict[str, Any]:
    """MBPO (Janner et al. 2019): SAC's rates and sizes, the rollout-length and model-data-ratio schedules
    (paper Sec. 6 / App. C: length ramps 1 -> k over some epochs), updates per step G (``gradient_steps``),
    the width and depth of the ensemble's members (``model_net_arch``, with SAC's ``net_arch`` in
    ``policy_kwargs``).

    ``rollout_schedule = (0, ramp, 1, k)`` reaches length ``k`` at epoch ``ramp - 1`` (``ramp = 0``: ``k``
    from the start); ``model_data_ratio_schedule = (0, ramp, 0, p)`` likewise for the ratio ``p``.
    The model loss is the user's choice (``-params model_loss:'"vagram"'``), never sampled.
    """
    basics = _sample_discount_rate_batch(trial, max_learning_rate=2e-3)
    tau = trial.suggest_float("tau", 1e-3, 0.08, log=True)
    net_arch = trial.suggest_categorical("net_arch", list(NET_ARCH))
    gradient_steps = trial.suggest_categorical("gradient_steps", [1, 5, 10, 20])
    rollout_length = trial.suggest_categorical("rollout_length", [1, 2, 3, 5, 10])
    rollout_ramp_epochs = trial.suggest_categorical("rollout_ramp_epochs", [0, 10, 50, 130])
    model_data_ratio = trial.suggest_float("model_data_ratio", 0.5, 0.95)
    model_data_ratio_ramp_epochs = trial.suggest_categorical("model_data_ratio_ramp_epochs", [0, 5, 20, 50])
    model_hidden_size = trial.suggest_categorical("model_hidden_size", [64, 128, 200])
    model_n_layers = trial.suggest_int("model_n_layers", 2, 4)
    model_learning_rate = trial.suggest_float("model_learning_rate", 1e-4, 3e-3, log=True)

    return {
        **basics,
        "tau": tau,
        "policy_kwargs": {
            "net_arch": NET_ARCH[net_arch],
            "model_net_arch": [model_hidden_size] * model_n_layers,
        },
        "gradient_steps": gradient_steps,
        "rollout_schedule": (0, rollout_ramp_epochs, 1, rollout_length),
        "model_data_ratio_schedule": (0, model_data_ratio_ramp_epochs, 0.0, model_data_ratio),
        "model_learning_rate": model_learning_rate,
    }


def sample_planet_params(
    trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict
) -> dict[str, Any]:
    """PlaNet (Hafner et al. 2019, arXiv:1811.04551): the objective without latent overshooting
    (``free_nats``, ``kl_scale``, ``reward_loss_scale``) and the learning rate; in ``policy_kwargs`` the CEM
    planner (horizon H, candidates J, elites K, iterations I; Sec. 2, App. A), the RSSM size, the exploration
    and the warm start. They replace the entry's ``policy_kwargs``: the encoder, decoder and reward head take
    the policy's (the paper's) sizes.

    ``exploration`` is the Gaussian noise std for ``Box`` actions and epsilon for ``Discrete`` actions
    (PlaNet reads the one its action space uses), so the sampler does not depend on the action space.
    Action repeat belongs to the environment (an ``--env-kwargs`` of the cartpole ids), not sampled here.
    """
    planning_horizon = trial.suggest_categorical("planning_horizon", [6, 12, 20, 30])
    n_candidates = trial.suggest_categorical("n_candidates", [100, 300, 1000])
    elite_fraction = trial.suggest_categorical("elite_fraction", [0.05, 0.1, 0.2])
    n_iterations = trial.suggest_int("n_iterations", 3, 10)
    free_nats = trial.suggest_float("free_nats", 0.0, 4.0)
    kl_scale = trial.suggest_float("kl_scale", 0.1, 3.0, log=True)
    reward_loss_scale = trial.suggest_float("reward_loss_scale", 1.0, 100.0, log=True)
    learning_rate = trial.suggest_float("learning_rate", 1e-4, 3e-3, log=True)
    rssm_size = trial.suggest_categorical("rssm_size", list(RSSM_SIZE))
    exploration = trial.suggest_float("exploration", 0.05, 0.5)
    warm_start = trial.suggest_categorical("warm_start", [False, True])

    belief_size, state_size, hidden_size = RSSM_SIZE[rssm_size]
    n_elites = max(1, round(elite_fraction * n_candidates))
    trial.set_user_attr("n_elites", n_elites)
    return {
        "free_nats": free_nats,
        "kl_scale": kl_scale,
        "reward_loss_scale": reward_loss_scale,
        "learning_rate": learning_rate,
        "policy_kwargs": {
            "planning_horizon": planning_horizon,
            "n_candidates": n_candidates,
            "n_elites": n_elites,
            "n_iterations": n_iterations,
            "belief_size": belief_size,
            "state_size": state_size,
            "hidden_size": hidden_size,
            "exploration_noise": exploration,
            "exploration_epsilon": exploration,
            "warm_start": warm_start,
        },
    }


#: One line per algorithm: ``--optimize`` works for every algorithm named here.
def sample_steve_params(
    trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict
) -> dict[str, Any]:
    """STEVE (Buckman et al. 2018): the value-expansion horizon H (the paper tries 2, 3, 5), the
    transition model's size and rate, DDPG's rates, updates per step and exploration.

    ``target_mode`` is the user's choice (``-params target_mode:'"mve"'``), never sampled; the target Q stays
    a hard copy (every ``target_update_interval`` updates). The transition size is a ``policy_kwargs``
    (``model_net_arch``), which replaces the entry's: the other networks take the paper's sizes.
    """
    basics = _sample_discount_rate_batch(trial, max_learning_rate=1e-3)
    value_expansion_horizon = trial.suggest_int("value_expansion_horizon", 1, 5)
    gradient_steps = trial.suggest_categorical("gradient_steps", [1, 2, 4])
    target_update_interval = trial.suggest_categorical("target_update_interval", [100, 250, 500, 1000])
    explore_chance = trial.suggest_float("explore_chance", 0.0, 0.2)
    transition_n_layers = trial.suggest_int("transition_n_layers", 2, 7)
    transition_hidden_size = trial.suggest_categorical("transition_hidden_size", [64, 128, 256, 512])
    model_learning_rate = trial.suggest_float("model_learning_rate", 1e-4, 1e-3, log=True)

    return {
        **basics,
        "value_expansion_horizon": value_expansion_horizon,
        "gradient_steps": gradient_steps,
        "target_update_interval": target_update_interval,
        "explore_chance": explore_chance,
        "policy_kwargs": {"model_net_arch": {"transition": [transition_hidden_size] * transition_n_layers}},
        "model_learning_rate": model_learning_rate,
    }


def sample_worldmodels_params(
    trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict
) -> dict[str, Any]:
    """World Models (Ha and Schmidhuber 2018, arXiv:1803.10122): M's and V's learning rates, CMA-ES's initial
    step size and the dream's temperature τ (the paper uses 1.0 to 1.3); the stage sizes stay the entry's."""
    return {
        "learning_rate": trial.suggest_float("learning_rate", 1e-4, 3e-3, log=True),
        "vae_learning_rate": trial.suggest_float("vae_learning_rate", 1e-5, 3e-3, log=True),
        "sigma0": trial.suggest_float("sigma0", 0.03, 1.0, log=True),
        "temperature": trial.suggest_float("temperature", 0.5, 1.5),
    }


def sample_gamma_mve_params(
    trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict
) -> dict[str, Any]:
    """γ-MVE (Janner et al. 2020, Sec. 5; spec 1.6): SAC's basics and sizes, the model discount γ̃ as a
    fraction of γ (``model_gamma <= gamma`` always holds), the expansion horizon H and the γ-model's one-step
    width σ."""
    basics = _sample_discount_rate_batch(trial, max_learning_rate=1e-3)
    model_gamma = basics["gamma"] * trial.suggest_float("model_gamma_fraction", 0.0, 1.0)
    net_arch = trial.suggest_categorical("net_arch", sorted(NET_ARCH))
    return {
        **basics,
        "model_gamma": model_gamma,
        "value_expansion_horizon": trial.suggest_int("value_expansion_horizon", 1, 5),
        "gamma_model_kwargs": {"sigma": trial.suggest_float("sigma", 0.01, 0.3, log=True)},
        "policy_kwargs": {"net_arch": NET_ARCH[net_arch]},
    }


def sample_worldmodels_ppo_params(
    trial: optuna.Trial, n_actions: int, n_envs: int, additional_args: dict
) -> dict[str, Any]:
    """WorldModelsPPO (the Sonic fork's PPO on a jointly trained world model, spec 4.2): PPO's learning rate,
    entropy coefficient and clip range (policy and value alike, as the fork), the world model's learning rate
    and the curiosity reward (off, or on with a weight). The fork's values lie inside: Adam 1e-4, entropy
    0.02 (its README: 0.04 worked, 0.01 too low), clip 0.1, world-model rate 5e-6 / 4e-5 (the controller
    learns only with a rate well below 1e-5), curiosity weight 5e-6. With curiosity the world model trains
    (``train_world_model=True``, which the curiosity reward needs), else it stays as the entry sets it. The
    rollout and minibatch sizes, the loss weights and the network sizes stay the entry's."""
    learning_rate = trial.suggest_float("learning_rate", 1e-5, 1e-3, log=True)
    ent_coef = trial.suggest_float("ent_coef", 1e-3, 0.1, log=True)
    clip_range = trial.suggest_categorical("clip_range", [0.05, 0.1, 0.2, 0.3])
    world_model_learning_rate = trial.suggest_float("world_model_learning_rate", 1e-6, 1e-3, log=True)
    curiosity = trial.suggest_categorical("curiosity", [False, True])
    curiosity_weight = trial.suggest_float("curiosity_weight", 1e-6, 1.0, log=True) if curiosity else 0.0
    sampled = {
        "learning_rate": learning_rate,
        "ent_coef": ent_coef,
        "clip_range": clip_range,
        "clip_range_vf": clip_range,
        "world_model_learning_rate": world_model_learning_rate,
        "curiosity_weight": curiosity_weight,
    }
    if curiosity:  # the curiosity reward measures the world model's learning: an entry's frozen model trains
        sampled["train_world_model"] = True
    return sampled


SAMPLERS: dict[str, Sampler] = {
    "gammamve": sample_gamma_mve_params,
    "mbpo": sample_mbpo_params,
    "planet": sample_planet_params,
    "steve": sample_steve_params,
    "worldmodels": sample_worldmodels_params,
    "worldmodelsppo": sample_worldmodels_ppo_params,
}


def convert_params(algo: str) -> Callable[[dict[str, Any]], dict[str, Any]]:
    """rl_zoo3's converter for ``algo``: stored trial parameters -> constructor arguments (``--trial-id``)."""
    sampler = SAMPLERS[algo]

    def convert(params: dict[str, Any]) -> dict[str, Any]:
        return sampler(FixedTrial(params), 0, 1, {})

    return convert


def register_samplers(names: list[str]) -> None:
    """Add the samplers (and converters) of the algorithms ``names`` that have one to rl_zoo3's tables."""
    from rl_zoo3.hyperparams_opt import HYPERPARAMS_CONVERTER, HYPERPARAMS_SAMPLER

    for name in names:
        if name in SAMPLERS:
            HYPERPARAMS_SAMPLER[name] = SAMPLERS[name]
            HYPERPARAMS_CONVERTER[name] = convert_params(name)
