"""γ-MVE's policy: SB3's SAC policy (actor and twin critics), in its own module so that a saved γ-MVE agent
and a plain SAC agent tell each other apart on load (:func:`sb3_mb.common.save_util.check_saved_algorithm`
judges unmarked files by their policy's module). The γ-model and the reward model belong to the algorithm
(:class:`~sb3_mb.gammamodels.gamma_mve.GammaMVE`), which saves them beside the policy."""

from __future__ import annotations

from stable_baselines3.sac.policies import SACPolicy

__all__ = ["GammaMVEPolicy", "MlpPolicy"]


class GammaMVEPolicy(SACPolicy):
    """:class:`~stable_baselines3.sac.policies.SACPolicy` unchanged (same arguments: ``net_arch``,
    ``activation_fn``, ``log_std_init``, ``n_critics``, ...)."""


MlpPolicy = GammaMVEPolicy
