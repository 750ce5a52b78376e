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
