"""Typed recurrent state of stateful agents (PlaNet's belief, World Models' LSTM state, a warm-start plan).

``predict(obs, state, episode_start)`` follows sb3-contrib's RecurrentPPO: the state is a tuple of numpy
arrays with the env dimension first, handed back by the caller at the next step, and ``episode_start[i]``
resets env ``i``'s entries. Here that tuple is a :class:`~typing.NamedTuple` of the method (e.g.
:class:`~sb3_mb.planet.policies.PlaNetState`: ``belief``, the posterior's mean, std and sample,
``prev_action``, ``plan``, ...), so fields are read by name and ``evaluate_policy``, ``EvalCallback`` and the
zoo's enjoy loop, which only pass it along, work unchanged.

:class:`StateSpec` holds a state's layout (field names, per-env shapes) and does the bookkeeping every
stateful method needs: zero initialisation, shape checks with a clear error, and the ``episode_start`` reset.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Generic, NamedTuple, TypeVar

import numpy as np

__all__ = ["StateSpec"]

StateT = TypeVar("StateT", bound=NamedTuple)


class StateSpec(Generic[StateT]):
    """Layout of a stateful agent's state: one float32 array ``(n_envs, *shape)`` per field.

    :param state_class: the :class:`~typing.NamedTuple` whose fields are the state's parts, in order.
    :param shapes: the per-env shape of every field (the array is ``(n_envs, *shapes[field])``).
    :param owner: the algorithm's name, used in error messages.
    :raises ValueError: if ``shapes`` does not name exactly the fields of ``state_class``.
    """

    def __init__(self, state_class: type[StateT], shapes: Mapping[str, Sequence[int]], owner: str):
        fields = tuple(state_class._fields)
        if tuple(shapes) != fields:
            raise ValueError(
                f"shapes must name the fields {fields} of {state_class.__name__}, got {tuple(shapes)}"
            )
        self.state_class, self.owner = state_class, owner
        self.shapes = {name: tuple(int(size) for size in shape) for name, shape in shapes.items()}

    def zeros(self, n_envs: int) -> StateT:
        """The state at an episode start: every field zeros ``(n_envs, *shape)`` float32."""
        return self.state_class(
            *(np.zeros((n_envs, *shape), dtype=np.float32) for shape in self.shapes.values())
        )

    def check(self, state: Sequence[Any], n_envs: int) -> StateT:
        """``state`` as ``state_class`` (a plain tuple in field order is accepted), its shapes checked.

        :raises ValueError: naming the field, the expected and the given shape, if the number of fields or
            a shape is wrong (for example a state carried over from a different number of envs).
        """
        expected = {name: (n_envs, *shape) for name, shape in self.shapes.items()}
        if len(state) != len(expected):
            raise ValueError(
                f"{self.owner}'s state has the {len(expected)} fields {tuple(expected)}, "
                f"got {len(state)} parts"
            )
        for (name, shape), part in zip(expected.items(), state, strict=True):
            if tuple(np.shape(part)) != shape:
                raise ValueError(
                    f"{self.owner}'s state field {name!r} must have shape {shape} (n_envs={n_envs} first), "
                    f"got {tuple(np.shape(part))}"
                )
        return state if isinstance(state, self.state_class) else self.state_class(*state)

    def reset(self, state: StateT, episode_start: np.ndarray | Sequence[bool] | None) -> StateT:
        """A copy of ``state`` with the entries of the envs whose episode starts set to zero.

        :param episode_start: ``(n_envs,)`` booleans (``predict``'s ``episode_start``) or None (no reset).
        :raises ValueError: if ``episode_start`` does not have one entry per env.
        """
        n_envs = np.shape(state[0])[0]
        if episode_start is None:
            return state
        starts = np.asarray(episode_start, dtype=bool).reshape(-1)
        if starts.shape[0] != n_envs:
            raise ValueError(
                f"{self.owner}: episode_start has {starts.shape[0]} entries, expected one per env ({n_envs})"
            )
        if not starts.any():
            return state
        keep = (~starts).astype(np.float32)
        return self.state_class(
            *(
                np.asarray(part, dtype=np.float32) * keep.reshape(-1, *([1] * (np.ndim(part) - 1)))
                for part in state
            )
        )

    def prepare(
        self, state: Sequence[Any] | None, episode_start: np.ndarray | Sequence[bool] | None, n_envs: int
    ) -> StateT:
        """What ``predict`` starts from: zeros for ``state=None``, else the checked state; then the reset.

        :raises ValueError: see :meth:`check` and :meth:`reset`.
        """
        state = self.zeros(n_envs) if state is None else self.check(state, n_envs)
        return self.reset(state, episode_start)
