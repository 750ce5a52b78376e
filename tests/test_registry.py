"""The algorithm registry: built-ins, exports and third-party entry points."""

import pytest

import sb3_mb
from sb3_mb import registry
from sb3_mb.registry import AlgoSpec


def test_every_exported_algorithm_is_registered():
    exported = {
        name: obj
        for name, obj in vars(sb3_mb).items()
        if isinstance(obj, type) and hasattr(obj, "policy_aliases")
    }
    assert exported, "sb3_mb exports no algorithm class"
    registered = {registry.get_algorithm(name) for name in sb3_mb.list_algorithms()}
    for name, cls in exported.items():
        assert cls in registered, f"{name} is exported but not registered in sb3_mb.registry"


def test_unknown_algorithm_names_the_known_ones():
    with pytest.raises(KeyError, match="registered algorithms"):
        registry.get_algorithm("no-such-algo")


class _FakeEntryPoint:
    def __init__(self, name, obj):
        self.name = name
        self._obj = obj

    def load(self):
        return self._obj


def test_entry_point_adds_an_algorithm(monkeypatch):
    spec = AlgoSpec("thirdparty", "stable_baselines3:SAC", off_policy=True)
    monkeypatch.setattr(registry, "entry_points", lambda group: [_FakeEntryPoint("thirdparty", spec)])
    monkeypatch.setattr(registry, "ALGOS", dict(registry.ALGOS))
    assert "thirdparty" in registry.list_algorithms()
    from stable_baselines3 import SAC

    assert registry.get_algorithm("ThirdParty") is SAC


def test_entry_point_of_wrong_type_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(registry, "entry_points", lambda group: [_FakeEntryPoint("bad", 42)])
    monkeypatch.setattr(registry, "ALGOS", dict(registry.ALGOS))
    with pytest.raises(TypeError, match="AlgoSpec"):
        registry.list_algorithms()


def test_test_variants_merge_into_the_spec_and_are_not_algorithms():
    spec = AlgoSpec(
        "algo",
        "stable_baselines3:SAC",
        test_kwargs=dict(batch_size=4, policy_kwargs=dict(a=1, b=2)),
        test_timesteps=300,
        test_variants=dict(small=dict(test_timesteps=50, gamma=0.5, policy_kwargs=dict(b=3))),
    )
    small = spec.variant("small")
    assert small.name == "algo[small]" and small.test_timesteps == 50 and small.test_variants == {}
    assert small.test_kwargs == dict(batch_size=4, gamma=0.5, policy_kwargs=dict(a=1, b=3))
    assert spec.test_kwargs == dict(batch_size=4, policy_kwargs=dict(a=1, b=2))  # the base is unchanged
    with pytest.raises(KeyError, match="variants: \\['small'\\]"):
        spec.variant("large")

    variants = registry.list_test_variants()
    assert {"planet[ssm]", "planet[mean_only]", "planet[rssm_ma]", "planet[clockwork]", "planet[tap]"} <= set(
        variants
    )
    assert "planet[cell_as_prior]" in variants
    assert not set(variants) & set(registry.list_algorithms())
    tap = registry.get_test_spec("planet[tap]")
    assert tap.test_kwargs["policy_kwargs"]["tap_cell"] == "rssm"
    assert (
        tap.test_kwargs["policy_kwargs"]["belief_size"]
        == registry.ALGOS["planet"].test_kwargs["policy_kwargs"]["belief_size"]
    )
    assert registry.get_test_spec("planet") is registry.ALGOS["planet"]
