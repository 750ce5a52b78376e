"""Registry of the algorithms sb3-mb provides: name -> class and the metadata the zoo and tests need.

Third-party packages add an algorithm without forking by declaring an entry point in the group
``sb3_mb.algorithms`` whose object is an :class:`AlgoSpec` (or a callable returning one)::

    [options.entry_points]
    sb3_mb.algorithms =
        myalgo = my_package.registry:MYALGO_SPEC
"""

from __future__ import annotations

import dataclasses
import importlib
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

ENTRY_POINT_GROUP = "sb3_mb.algorithms"


@dataclass(frozen=True)
class AlgoSpec:
    """What the zoo and the shared tests need to know about an algorithm.

    :param name: lower-case name used on the command line (``--algo name``).
    :param class_path: ``"module:ClassName"``, imported lazily by :meth:`load_class`.
    :param off_policy: keeps a replay buffer (enjoy loads it without allocating the buffer); ``False``: an
        on-policy algorithm (a rollout buffer), whose shared tests skip the replay-buffer checks.
    :param stateful: ``predict`` carries a recurrent ``state`` (belief, LSTM state, warm-start plan).
    :param test_env: environment id the shared algorithm tests train on (``Pendulum-v1`` for vector
        observations and ``Box`` actions; ``sb3_mb/MovingBar-v0`` for image-only, discrete-action methods).
    :param test_policy: policy alias the shared tests build with (``"CnnPolicy"`` for image-only methods).
    :param test_kwargs: constructor arguments that make a test run take seconds, not minutes.
    :param test_timesteps: ``learn`` budget of the shared tests (env steps), past any warm-up.
    :param test_variants: settings of the same class that also go through the shared save/load and
        seeded-determinism tests (e.g. PlaNet's transition models): ``{variant: overrides}``, the overrides
        merged into ``test_kwargs`` (``policy_kwargs`` key by key) by :meth:`variant`; an override
        ``test_timesteps`` replaces the budget. Variants are not algorithms: ``list_algorithms`` and the zoo
        do not see them.
    """

    name: str
    class_path: str
    off_policy: bool = True
    stateful: bool = False
    test_env: str = "Pendulum-v1"
    test_policy: str = "MlpPolicy"
    test_kwargs: dict[str, Any] = field(default_factory=dict)
    test_timesteps: int = 200
    test_variants: dict[str, dict[str, Any]] = field(default_factory=dict)

    def load_class(self) -> type:
        module_name, _, class_name = self.class_path.partition(":")
        return getattr(importlib.import_module(module_name), class_name)

    def variant(self, name: str) -> AlgoSpec:
        """This spec with the test variant ``name`` applied, named ``"<algo>[<name>]"``, without variants.

        :raises KeyError: no test variant of that name (the message lists them).
        """
        if name not in self.test_variants:
            raise KeyError(
                f"{self.name} has no test variant {name!r}; variants: {sorted(self.test_variants)}"
            )
        overrides = dict(self.test_variants[name])
        timesteps = overrides.pop("test_timesteps", self.test_timesteps)
        kwargs = {**self.test_kwargs, **overrides}
        if "policy_kwargs" in overrides:
            kwargs["policy_kwargs"] = {
                **self.test_kwargs.get("policy_kwargs", {}),
                **overrides["policy_kwargs"],
            }
        return dataclasses.replace(
            self, name=f"{self.name}[{name}]", test_kwargs=kwargs, test_timesteps=timesteps, test_variants={}
        )


# Built-in algorithms. A method joins the shared tests by adding one line here.
_BUILTIN: list[AlgoSpec] = [
    AlgoSpec(
        "mbpo",
        "sb3_mb.mbpo:MBPO",
        off_policy=True,
        stateful=False,
        test_env="Pendulum-v1",
        test_kwargs=dict(
            learning_starts=50,
            model_train_freq=50,
            epoch_length=50,
            n_rollouts_per_step=4,
            rollout_schedule=(0, 2, 1, 2),
            model_batch_size=32,
            model_max_epochs=3,
            gradient_steps=2,
            batch_size=32,
            buffer_size=1000,
            policy_kwargs=dict(
                net_arch=[32, 32], model_net_arch=[32, 32], model_ensemble_size=3, model_n_elites=2
            ),
        ),
    ),
    AlgoSpec(
        "planet",
        "sb3_mb.planet:PlaNet",
        off_policy=True,
        stateful=True,
        test_env="Pendulum-v1",
        test_kwargs=dict(
            buffer_size=2000,
            batch_size=4,
            sequence_length=8,
            seed_episodes=1,
            updates_per_episode=2,
            policy_kwargs=dict(
                belief_size=16,
                state_size=4,
                hidden_size=16,
                planning_horizon=3,
                n_candidates=16,
                n_elites=4,
                n_iterations=2,
                mlp_hidden_sizes=(16,),
                reward_hidden_sizes=(16,),
            ),
        ),
        test_timesteps=300,
        # The transition models of the paper's ablations and of Rose's fork (sb3_mb.planet.transition), each
        # trained for one seed episode (200 steps), its model updates and a few planned steps.
        test_variants={
            name: dict(test_timesteps=204, **overrides)
            for name, overrides in dict(
                ssm=dict(policy_kwargs=dict(transition_model="ssm")),
                mean_only=dict(policy_kwargs=dict(mean_only=True)),
                rssm_ma=dict(policy_kwargs=dict(transition_model="rssm_ma")),
                clockwork=dict(policy_kwargs=dict(belief_size=(8, 8), state_size=(4, 4), cw_tau=(1, 3))),
                cell_as_prior=dict(
                    cell_as_prior=0.1,
                    overshooting_distance=4,
                    policy_kwargs=dict(belief_size=(8, 8), state_size=(4, 4), cw_tau=(1, 3)),
                ),
                tap=dict(policy_kwargs=dict(tap_cell="rssm")),
            ).items()
        },
    ),
    AlgoSpec(
        "steve",
        "sb3_mb.steve:STEVE",
        off_policy=True,
        stateful=False,
        test_env="Pendulum-v1",
        test_kwargs=dict(
            learning_starts=50,
            batch_size=32,
            buffer_size=1000,
            gradient_steps=1,
            target_update_interval=20,
            model_batch_size=32,
            model_gradient_steps=1,
            model_pretrain_steps=10,
            policy_kwargs=dict(
                net_arch=[16, 16],
                n_critics=2,
                model_net_arch=dict(transition=[16, 16], reward=[16], done=[16]),
                model_ensemble_size=2,
            ),
        ),
    ),
    AlgoSpec(
        "gammamve",
        "sb3_mb.gammamodels:GammaMVE",
        off_policy=True,
        stateful=False,
        test_env="Pendulum-v1",
        test_kwargs=dict(
            learning_starts=50,
            batch_size=32,
            buffer_size=1000,
            model_learning_starts=20,
            model_batch_size=32,
            value_expansion_horizon=2,
            gamma_model_kwargs=dict(hidden_sizes=(16,), bins=4, n_blocks=1),
            reward_net_arch=(16,),
            policy_kwargs=dict(net_arch=[16, 16]),
        ),
        test_timesteps=100,
    ),
    AlgoSpec(
        "worldmodels",
        "sb3_mb.worldmodels:WorldModels",
        off_policy=True,
        stateful=True,
        test_env="Pendulum-v1",
        test_kwargs=dict(
            buffer_size=2000,
            batch_size=4,
            sequence_length=16,
            vae_batch_size=32,
            n_random_rollouts=1,
            vae_epochs=1,
            mdn_epochs=1,
            population_size=4,
            rollouts_per_candidate=1,
            n_generations=1,
            max_episode_steps=50,
            policy_kwargs=dict(z_dim=4, hidden_size=16, n_mixtures=2, mlp_hidden_sizes=(16,)),
        ),
        test_timesteps=300,
    ),
    # The name is the class name lower-cased: rl-zoo3 reads ``--algo`` back from a model card's name.
    AlgoSpec(
        "worldmodelsppo",
        "sb3_mb.worldmodels:WorldModelsPPO",
        off_policy=False,
        stateful=True,
        test_env="sb3_mb/MovingBar-v0",
        test_policy="CnnPolicy",
        test_kwargs=dict(
            n_steps=32,
            batch_size=16,
            n_epochs=1,
            world_model_learning_rate=1e-3,
            policy_kwargs=dict(
                image_size=16,
                z_dim=8,
                hidden_size=16,
                n_mixtures=2,
                vae_channels=(8, 16),
                stem_channels=8,
                bottleneck_channels=4,
                inverse_hidden_size=16,
            ),
        ),
        test_timesteps=64,
    ),
]

ALGOS: dict[str, AlgoSpec] = {spec.name: spec for spec in _BUILTIN}


def _load_entry_points() -> None:
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        spec = entry_point.load()
        if callable(spec) and not isinstance(spec, AlgoSpec):
            spec = spec()
        if not isinstance(spec, AlgoSpec):
            raise TypeError(
                f"Entry point {entry_point.name!r} in group {ENTRY_POINT_GROUP!r} must give an "
                f"sb3_mb.AlgoSpec, got {type(spec).__name__}"
            )
        ALGOS.setdefault(spec.name, spec)


def list_test_variants() -> list[str]:
    """``"<algo>[<variant>]"`` for every test variant of every registered algorithm
    (:meth:`AlgoSpec.variant`)."""
    return [
        f"{name}[{variant}]" for name in list_algorithms() for variant in sorted(ALGOS[name].test_variants)
    ]


def get_test_spec(name: str) -> AlgoSpec:
    """The spec of ``"<algo>"`` or of its test variant ``"<algo>[<variant>]"``.

    :raises KeyError: an unknown algorithm or variant.
    """
    _load_entry_points()
    algo, _, variant = name.partition("[")
    if algo.lower() not in ALGOS:
        raise KeyError(f"Unknown algorithm {algo!r}; registered algorithms: {', '.join(sorted(ALGOS))}")
    spec = ALGOS[algo.lower()]
    return spec.variant(variant.rstrip("]")) if variant else spec


def list_algorithms() -> list[str]:
    """Names of every registered algorithm, built-in and from entry points."""
    _load_entry_points()
    return sorted(ALGOS)


def get_algorithm(name: str) -> type:
    """The algorithm class registered under ``name`` (case-insensitive).

    :raises KeyError: if no algorithm of that name is registered; the message lists the known names.
    """
    _load_entry_points()
    key = name.lower()
    if key not in ALGOS:
        raise KeyError(
            f"Unknown algorithm {name!r}; registered algorithms: {', '.join(sorted(ALGOS)) or 'none'}"
        )
    return ALGOS[key].load_class()
