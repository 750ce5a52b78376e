"""PlaNet's other transition models: the paper's purely stochastic ablation and the variants of Rose's fork.

Each is a :class:`~sb3_mb.planet.rssm.TransitionModel` (the RSSM's verbs on
:class:`~sb3_mb.planet.rssm.RSSMState`), picked by :class:`~sb3_mb.planet.policies.PlaNetPolicy`'s
``transition_model`` (:func:`make_transition_model`), so the learning rule and the planner are the same for
all:

- ``"rssm"``: the paper's RSSM (:class:`~sb3_mb.planet.rssm.RSSM`, Hafner et al. 2019, arXiv:1811.04551,
  Sec. 3, Fig. 2c); with ``mean_only=True`` the purely deterministic "RNN" ablation (Sec. 5, Fig. 2a);
- ``"ssm"``: the purely stochastic state-space model, :class:`SSM` (Sec. 5, Fig. 2b);
- ``"rssm_ma"``: the moving-average RSSM of Rose's fork (github.com/rosea-tf/planet, ``rssm_movavg.py``),
  :class:`MovingAverageRSSM`;
- any of them as the cells of the fork's clockwork RSSM, :class:`ClockworkRSSM` (``cw_tau`` with more than
  one period).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch as th
from torch import nn

from sb3_mb.planet.rssm import (
    RSSM,
    RSSMState,
    TransitionModel,
    cat_states,
    gaussian_head,
    split_state,
)

TRANSITION_MODELS = ("rssm", "ssm", "rssm_ma")


class SSM(TransitionModel):
    """The purely stochastic state-space model, the paper's "SSM" ablation (Sec. 5, Fig. 2b; the original
    code's ``models/ssm.py``, which Rose's fork keeps). There is no deterministic path: the state is ``s``
    alone (``belief_size = 0``, features ``[s_t]``), so everything the model remembers passes through the
    sampled ``s``.

    - prior ``p(s_t | s_{t-1}, a_{t-1})``: ``relu(dense([s_{t-1}, a_{t-1}]))`` and the two heads ``mean`` and
      ``std = softplus(.) + min_std``;
    - posterior ``q(s_t | s_{t-1}, a_{t-1}, o_t)``: ``relu(dense([prior mean, prior std, e_t]))`` and the
      same two heads.

    :param action_dim: size of the action input (one-hot for ``Discrete``).
    :param embedding_dim: size of the observation embedding ``e_t``.
    :param state_size: size of ``s``. :param hidden_size: size of the dense layers.
    :param min_std: added to the softplus of the std heads.
    :param activation_fn: activation of the dense layers.
    :param mean_only: every "sample" is the mean (the original code's flag).
    """

    def __init__(
        self,
        action_dim: int,
        embedding_dim: int,
        state_size: int,
        hidden_size: int,
        min_std: float,
        activation_fn: type[nn.Module] = nn.ReLU,
        mean_only: bool = False,
    ):
        super().__init__()
        self.action_dim, self.embedding_dim = action_dim, embedding_dim
        self.belief_size, self.state_size = 0, state_size
        self.hidden_size, self.min_std, self.mean_only = hidden_size, min_std, mean_only
        self.act = activation_fn()
        self.fc_prior_hidden = nn.Linear(state_size + action_dim, hidden_size)
        self.fc_prior = nn.Linear(hidden_size, 2 * state_size)
        self.fc_posterior_hidden = nn.Linear(2 * state_size + embedding_dim, hidden_size)
        self.fc_posterior = nn.Linear(hidden_size, 2 * state_size)

    def img_step(
        self,
        prev: RSSMState,
        action: th.Tensor,
        generator: th.Generator | None = None,
        sample: bool = True,
        time: th.Tensor | None = None,
    ) -> RSSMState:
        """Prior from ``prev.sample`` ``(batch, state_size)`` and the action alone; the returned belief is
        ``(batch, 0)`` (see :meth:`TransitionModel.img_step`)."""
        hidden = self.act(self.fc_prior_hidden(th.cat([prev.sample, action], dim=-1)))
        mean, std, state = gaussian_head(
            self.fc_prior, hidden, self.min_std, generator, sample, self.mean_only
        )
        return RSSMState(prev.belief[..., :0], mean, std, state)

    def obs_step(
        self,
        prev: RSSMState,
        action: th.Tensor,
        embedding: th.Tensor,
        generator: th.Generator | None = None,
        sample: bool = True,
        time: th.Tensor | None = None,
    ) -> tuple[RSSMState, RSSMState]:
        """The prior, then the posterior from its mean, its std and ``e_t`` (see
        :meth:`TransitionModel.obs_step`)."""
        prior = self.img_step(prev, action, generator, sample)
        hidden = self.act(self.fc_posterior_hidden(th.cat([prior.mean, prior.std, embedding], dim=-1)))
        mean, std, state = gaussian_head(
            self.fc_posterior, hidden, self.min_std, generator, sample, self.mean_only
        )
        return prior, RSSMState(prior.belief, mean, std, state)


class MovingAverageRSSM(TransitionModel):
    """The moving-average RSSM of Rose's fork (``model: rssm_ma``, ``rssm_movavg.py``): two RSSMs on the same
    inputs, a slow one whose new state is an exponential moving average of its previous state and its own
    update, and a fast one updated as usual; their states are concatenated (slow first) for the heads, the
    KL and the planner.

    With ``n_b = floor(ma_ppn * belief_size)`` and ``n_s = floor(ma_ppn * state_size)``, the slow RSSM has
    belief ``n_b`` and state ``n_s``, the fast one the remainders. At every step, prior and posterior alike,
    every field of the slow part (belief, mean, std, sample) becomes ``(1 - ma_alpha) * previous +
    ma_alpha * new``, ``new`` being the slow RSSM's step from its part of the previous state (the previous
    posterior when filtering, the previous prior when imagining). The slow RSSM's posterior reads its own
    (un-averaged) belief, as in the fork.

    :param ma_ppn: share of the belief and the state given to the slow part (fork default 0.25).
    :param ma_alpha: weight of the new value in the moving average (fork default 0.25; 1 is two plain RSSMs).
    :param action_dim, embedding_dim, belief_size, state_size, hidden_size, min_std, activation_fn,
        future_rnn, mean_only: as :class:`~sb3_mb.planet.rssm.RSSM`; the sizes are those of the whole,
        concatenated state.
    :raises ValueError: unless ``0 < ma_alpha <= 1`` and ``ma_ppn`` leaves both parts at least one unit of
        belief and of state.
    """

    def __init__(
        self,
        action_dim: int,
        embedding_dim: int,
        belief_size: int,
        state_size: int,
        hidden_size: int,
        min_std: float,
        activation_fn: type[nn.Module] = nn.ReLU,
        future_rnn: bool = True,
        mean_only: bool = False,
        ma_ppn: float = 0.25,
        ma_alpha: float = 0.25,
    ):
        super().__init__()
        if not 0.0 < ma_alpha <= 1.0:
            raise ValueError(f"ma_alpha must be in (0, 1] (the new value's weight), got {ma_alpha}")
        slow_belief, slow_state = math.floor(ma_ppn * belief_size), math.floor(ma_ppn * state_size)
        fast_belief, fast_state = belief_size - slow_belief, state_size - slow_state
        if min(slow_belief, slow_state, fast_belief, fast_state) < 1:
            raise ValueError(
                f"ma_ppn={ma_ppn} splits belief_size={belief_size} into {slow_belief} slow + {fast_belief} "
                f"fast and state_size={state_size} into {slow_state} + {fast_state}; both parts need "
                "at least one unit of each (0 < floor(ma_ppn * size) < size)"
            )
        self.action_dim, self.embedding_dim = action_dim, embedding_dim
        self.belief_size, self.state_size = belief_size, state_size
        self.mean_only, self.ma_ppn, self.ma_alpha = mean_only, ma_ppn, ma_alpha
        self.belief_sizes, self.state_sizes = (slow_belief, fast_belief), (slow_state, fast_state)
        args = (hidden_size, min_std, activation_fn, future_rnn, mean_only)
        self.slow = RSSM(action_dim, embedding_dim, slow_belief, slow_state, *args)
        self.fast = RSSM(action_dim, embedding_dim, fast_belief, fast_state, *args)

    def split(self, state: RSSMState) -> tuple[RSSMState, RSSMState]:
        """The slow and the fast part of a whole state."""
        slow, fast = split_state(state, self.belief_sizes, self.state_sizes)
        return slow, fast

    def average(self, previous: RSSMState, new: RSSMState) -> RSSMState:
        """``(1 - ma_alpha) * previous + ma_alpha * new``, field by field (the slow part's update)."""
        alpha = self.ma_alpha
        return RSSMState(*((1.0 - alpha) * old + alpha * x for old, x in zip(previous, new, strict=True)))

    def img_step(
        self,
        prev: RSSMState,
        action: th.Tensor,
        generator: th.Generator | None = None,
        sample: bool = True,
        time: th.Tensor | None = None,
    ) -> RSSMState:
        """The slow part's averaged prior step beside the fast part's (see
        :meth:`TransitionModel.img_step`)."""
        slow_prev, fast_prev = self.split(prev)
        slow = self.slow.img_step(slow_prev, action, generator, sample)
        fast = self.fast.img_step(fast_prev, action, generator, sample)
        return cat_states([self.average(slow_prev, slow), fast])

    def obs_step(
        self,
        prev: RSSMState,
        action: th.Tensor,
        embedding: th.Tensor,
        generator: th.Generator | None = None,
        sample: bool = True,
        time: th.Tensor | None = None,
    ) -> tuple[RSSMState, RSSMState]:
        """Prior and posterior of both parts, the slow ones averaged with the previous slow state (see
        :meth:`TransitionModel.obs_step`)."""
        slow_prev, fast_prev = self.split(prev)
        slow_prior, slow_posterior = self.slow.obs_step(slow_prev, action, embedding, generator, sample)
        fast_prior, fast_posterior = self.fast.obs_step(fast_prev, action, embedding, generator, sample)
        prior = cat_states([self.average(slow_prev, slow_prior), fast_prior])
        posterior = cat_states([self.average(slow_prev, slow_posterior), fast_posterior])
        return prior, posterior


def _hold(due: th.Tensor, new: RSSMState, held: RSSMState) -> RSSMState:
    """``new`` in the rows where ``due`` ``(batch, 1)`` is true, ``held`` elsewhere."""
    return RSSMState(*(th.where(due, x, old) for x, old in zip(new, held, strict=True)))


class ClockworkRSSM(TransitionModel):
    """The clockwork RSSM of Rose's fork (``model_size: [100, 100], state_size: [15, 15], cw_tau: [1, 4]``;
    ``training/define_model.py`` and ``control/planning.py``): a list of cells, fastest first, cell ``i``
    stepping once every ``periods[i]`` agent steps; the cells' states are concatenated on the feature axis
    (fastest first) for the heads, the KL and the planner.

    - Learning (:meth:`observe`): cell ``i`` reads only every ``tau_i``-th embedding and action of the
      sequence, from index 0 (strided, not aggregated: at index ``m * tau_i`` it reads ``e_{m tau_i}`` and
      ``a_{m tau_i - 1}``, the action just before); its priors and posteriors are repeated ``tau_i`` times
      along time and cut to the sequence length, as in the fork.
    - Acting and planning (:meth:`obs_step`, :meth:`img_step`, :meth:`imagine` with ``time``): the same
      clock. Cell ``i`` steps at the times that are multiples of ``tau_i`` (counted from the episode start
      when acting, from the sequence start when learning), reading the action just before, and holds its
      state in between; so a planned rollout moves each cell over its strided horizon, and latent
      overshooting over ``D`` steps moves cell ``i`` about ``D / tau_i`` of its own steps (the fork:
      ``ceil((D + 1) / tau_i)`` strided steps). The fork's planner fed a slow cell the *first* action of
      each block of ``tau_i`` and its acting filter stepped every cell at every frame, neither of which its
      training shows the cell; here one clock serves learning, filtering and planning.

    :param cells: the cells, fastest first (any :class:`~sb3_mb.planet.rssm.TransitionModel` without a
        clock, with the same action and embedding sizes).
    :param periods: ``tau_i`` per cell, positive integers, ``periods[0] == 1``, non-decreasing.
    :raises ValueError: for periods that do not fit this (the message says which rule).
    """

    def __init__(self, cells: Sequence[TransitionModel], periods: Sequence[int]):
        super().__init__()
        periods = tuple(int(tau) for tau in periods)
        if len(periods) != len(cells) or len(cells) < 2:
            raise ValueError(f"a clockwork RSSM needs one period per cell and 2 or more cells, got {periods}")
        if periods[0] != 1 or any(tau < 1 for tau in periods) or list(periods) != sorted(periods):
            raise ValueError(
                f"cw_tau must be positive, non-decreasing and start at 1 (the first cell runs every step), "
                f"got {periods}"
            )
        self.cells, self.periods = nn.ModuleList(cells), periods
        self.action_dim, self.embedding_dim = cells[0].action_dim, cells[0].embedding_dim
        self.belief_sizes = tuple(cell.belief_size for cell in cells)
        self.state_sizes = tuple(cell.state_size for cell in cells)
        self.belief_size, self.state_size = sum(self.belief_sizes), sum(self.state_sizes)
        self.mean_only = cells[0].mean_only

    def split(self, state: RSSMState) -> list[RSSMState]:
        """The cells' parts of a whole state, fastest first."""
        return split_state(state, self.belief_sizes, self.state_sizes)

    @staticmethod
    def _due(time: th.Tensor | None, period: int, like: th.Tensor) -> th.Tensor:
        """``(batch, 1)``: whether a cell of this period steps at ``time`` (every row when None)."""
        if time is None:
            return th.ones(like.shape[0], 1, dtype=th.bool, device=like.device)
        return (time % period == 0)[:, None]

    def img_step(
        self,
        prev: RSSMState,
        action: th.Tensor,
        generator: th.Generator | None = None,
        sample: bool = True,
        time: th.Tensor | None = None,
    ) -> RSSMState:
        """Every cell's prior step where ``time`` is a multiple of its period, its held state elsewhere (see
        :meth:`TransitionModel.img_step`)."""
        parts = []
        for cell, period, held in zip(self.cells, self.periods, self.split(prev), strict=True):
            new = cell.img_step(held, action, generator, sample)
            parts.append(_hold(self._due(time, period, action), new, held))
        return cat_states(parts)

    def obs_step(
        self,
        prev: RSSMState,
        action: th.Tensor,
        embedding: th.Tensor,
        generator: th.Generator | None = None,
        sample: bool = True,
        time: th.Tensor | None = None,
    ) -> tuple[RSSMState, RSSMState]:
        """Every cell's filtering step where ``time`` is a multiple of its period, its held state (as prior
        and posterior) elsewhere (see :meth:`TransitionModel.obs_step`)."""
        priors, posteriors = [], []
        for cell, period, held in zip(self.cells, self.periods, self.split(prev), strict=True):
            prior, posterior = cell.obs_step(held, action, embedding, generator, sample)
            due = self._due(time, period, action)
            priors.append(_hold(due, prior, held))
            posteriors.append(_hold(due, posterior, held))
        return cat_states(priors), cat_states(posteriors)

    def observe(
        self,
        embeddings: th.Tensor,
        actions: th.Tensor,
        is_first: th.Tensor | None = None,
        generator: th.Generator | None = None,
    ) -> tuple[RSSMState, RSSMState]:
        """Each cell observes its strided sequence (every ``tau_i``-th index from 0); its states are repeated
        ``tau_i`` times along time, cut to ``seq_len`` and concatenated (see
        :meth:`TransitionModel.observe` for the shapes). A cell resets at its index ``m tau_i`` when
        ``is_first`` is true anywhere in ``((m - 1) tau_i, m tau_i]``; the clock counts from the sequence
        start (the replay buffer's windows start episodes at index 0 only)."""
        seq_len = embeddings.shape[1]
        priors, posteriors = [], []
        for cell, period in zip(self.cells, self.periods, strict=True):
            first = None
            if is_first is not None:
                count = is_first.long().cumsum(dim=1)[:, ::period]
                first = th.cat([count[:, :1] > 0, count[:, 1:] > count[:, :-1]], dim=1)
            prior, posterior = cell.observe(embeddings[:, ::period], actions[:, ::period], first, generator)
            priors.append(RSSMState(*(x.repeat_interleave(period, dim=1)[:, :seq_len] for x in prior)))
            posteriors.append(
                RSSMState(*(x.repeat_interleave(period, dim=1)[:, :seq_len] for x in posterior))
            )
        return cat_states(priors), cat_states(posteriors)


def make_transition_model(
    transition_model: str,
    action_dim: int,
    embedding_dim: int,
    belief_size: int | Sequence[int],
    state_size: int | Sequence[int],
    hidden_size: int,
    min_std: float,
    activation_fn: type[nn.Module] = nn.ReLU,
    future_rnn: bool = True,
    mean_only: bool = False,
    ma_ppn: float = 0.25,
    ma_alpha: float = 0.25,
    cw_tau: int | Sequence[int] = 1,
) -> TransitionModel:
    """The transition model named ``transition_model`` (one of :data:`TRANSITION_MODELS`) with these sizes;
    with several periods ``cw_tau``, a :class:`ClockworkRSSM` of such cells.

    ``belief_size`` is ignored by ``"ssm"`` (no deterministic state); ``future_rnn`` likewise; ``ma_ppn`` and
    ``ma_alpha`` are read by ``"rssm_ma"`` only. ``belief_size`` and ``state_size`` may be one size per
    clockwork cell (fastest first) or one size for every cell.

    :raises ValueError: for an unknown name (the message lists the choices), sizes that are not one per cell,
        or the errors of the models.
    """
    if transition_model not in TRANSITION_MODELS:
        raise ValueError(
            f"PlaNet: unknown transition_model {transition_model!r}; the choices are 'rssm' (the paper's "
            "RSSM; with mean_only=True the deterministic RNN ablation), 'ssm' (the purely stochastic "
            "ablation) and 'rssm_ma' (the moving-average RSSM of Rose's fork)"
        )
    periods = (cw_tau,) if isinstance(cw_tau, int) else tuple(cw_tau)
    sizes = {}
    for name, size in (("belief_size", belief_size), ("state_size", state_size)):
        sizes[name] = (size,) * len(periods) if isinstance(size, int) else tuple(size)
        if len(sizes[name]) != len(periods):
            raise ValueError(
                f"{name}={size} needs one size per clockwork period cw_tau={cw_tau} (or one int)"
            )

    def cell(belief: int, state: int) -> TransitionModel:
        if transition_model == "ssm":
            return SSM(action_dim, embedding_dim, state, hidden_size, min_std, activation_fn, mean_only)
        args = (hidden_size, min_std, activation_fn, future_rnn, mean_only)
        if transition_model == "rssm_ma":
            return MovingAverageRSSM(action_dim, embedding_dim, belief, state, *args, ma_ppn, ma_alpha)
        return RSSM(action_dim, embedding_dim, belief, state, *args)

    cells = [cell(b, s) for b, s in zip(sizes["belief_size"], sizes["state_size"], strict=True)]
    if len(cells) == 1:
        if periods != (1,):
            raise ValueError(f"cw_tau must start at 1 (the first cell runs every step), got {cw_tau}")
        return cells[0]
    return ClockworkRSSM(cells, periods)
