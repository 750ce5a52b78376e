"""PlaNet's recurrent state-space model (RSSM): a deterministic GRU state and a diagonal-Gaussian state.

Hafner et al. 2019, "Learning Latent Dynamics for Planning from Pixels", arXiv:1811.04551, Sec. 3, Eq. 4
(Fig. 2c). With ``h`` the deterministic state (the belief) and ``s`` the stochastic state:

- deterministic state model: ``h_t = GRU(relu(W [s_{t-1}, a_{t-1}]), h_{t-1})``;
- stochastic state model (the prior) ``p(s_t | h_t)``: ``relu(dense(h_t))`` and two heads, ``mean`` and
  ``std = softplus(.) + min_std``. That is the camera-ready model (``future_rnn=True``); arXiv v1 read the
  pre-GRU embedding ``relu(W [s_{t-1}, a_{t-1}])`` instead (``future_rnn=False``);
- posterior (the encoder) ``q(s_t | h_t, o_t)``: ``relu(dense([h_t, e_t]))``, ``e_t`` the observation's
  embedding, and the same two heads;
- features of the observation and reward models ``p(o_t | h_t, s_t)``, ``p(r_t | h_t, s_t)``: ``[s_t, h_t]``
  (``state_size + belief_size``).

The verbs are DreamerV3's (Hafner et al. 2023, arXiv:2301.04104): :meth:`RSSM.img_step` (one prior step),
:meth:`RSSM.obs_step` (prior, then posterior), :meth:`RSSM.observe` (posteriors over sequences, for learning)
and :meth:`RSSM.imagine` (a prior rollout under given actions, for the open-loop predictions and the planner).
Each step takes the previous :class:`RSSMState` whole (the moving-average RSSM of
:mod:`sb3_mb.planet.transition` averages every field of it); the RSSM itself reads its ``belief`` and
``sample``.

Every transition model of PlaNet (this RSSM, and the ablations and variants of
:mod:`sb3_mb.planet.transition`) is a :class:`TransitionModel`: the same verbs on :class:`RSSMState`, so the
learning rule and the planner do not depend on which one is used.

Time alignment is the replay buffer's (:mod:`sb3_mb.common.buffers`): index ``t`` of a sequence holds ``o_t``
and ``a_{t-1}``, so ``h_t`` is computed from ``a_{t-1} = actions[:, t]``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import torch as th
from torch import nn
from torch.nn import functional as F


class RSSMState(NamedTuple):
    """A (batch of) latent state(s); every field has the same leading dims ``(...)``.

    :ivar belief: deterministic state ``h``, ``(..., belief_size)`` (``belief_size`` 0 for the purely
        stochastic SSM).
    :ivar mean: mean of the Gaussian over ``s``, ``(..., state_size)``.
    :ivar std: its standard deviation (``>= min_std``), ``(..., state_size)``.
    :ivar sample: a sample ``s ~ N(mean, std^2)`` (the mean itself with ``mean_only``), ``(..., state_size)``.
    """

    belief: th.Tensor
    mean: th.Tensor
    std: th.Tensor
    sample: th.Tensor

    def detach(self) -> RSSMState:
        return RSSMState(*(x.detach() for x in self))

    def map(self, fn: Callable[[th.Tensor], th.Tensor]) -> RSSMState:
        """``fn`` applied to every field (e.g. a reshape or a slice of the leading dims)."""
        return RSSMState(*(fn(x) for x in self))


def stack_states(states: Sequence[RSSMState], dim: int = 1) -> RSSMState:
    """Stack a list of states with leading dims ``(batch,)`` into ``(batch, T)`` (``dim=1``)."""
    return RSSMState(*(th.stack(fields, dim=dim) for fields in zip(*states, strict=True)))


def cat_states(states: Sequence[RSSMState]) -> RSSMState:
    """Concatenate states field by field on the feature axis (the parts of a moving-average or clockwork
    model): beliefs ``(..., sum belief_size_i)``, means, stds and samples ``(..., sum state_size_i)``."""
    return RSSMState(*(th.cat(fields, dim=-1) for fields in zip(*states, strict=True)))


def split_state(state: RSSMState, belief_sizes: Sequence[int], state_sizes: Sequence[int]) -> list[RSSMState]:
    """Inverse of :func:`cat_states`: the parts of ``state`` with the given belief and state sizes."""
    beliefs = state.belief.split(list(belief_sizes), dim=-1)
    means, stds, samples = (x.split(list(state_sizes), dim=-1) for x in state[1:])
    return [RSSMState(*fields) for fields in zip(beliefs, means, stds, samples, strict=True)]


def sequence_times(
    batch: int, seq_len: int, is_first: th.Tensor | None, device: th.device | str | None = None
) -> th.Tensor:
    """The time of every index of a batch of sequences, ``(batch, seq_len)`` int64: the steps since the
    sequence start or since the last index where ``is_first`` ``(batch, seq_len)`` is true."""
    index = th.arange(seq_len, device=device).expand(batch, seq_len)
    if is_first is None:
        return index.clone()
    last_start = th.where(is_first.bool(), index, th.zeros_like(index)).cummax(dim=1).values
    return index - last_start


def gaussian_head(
    head: nn.Linear,
    hidden: th.Tensor,
    min_std: float,
    generator: th.Generator | None,
    sample: bool,
    mean_only: bool,
) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    """``mean, std = softplus(.) + min_std`` from one linear head ``(..., 2 * state_size)``, and a sample
    (the mean when ``sample`` is False or ``mean_only`` is True: then no random number is drawn)."""
    mean, std = head(hidden).chunk(2, dim=-1)
    std = F.softplus(std) + min_std
    if sample and not mean_only:
        noise = th.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean, std, mean + std * noise
    return mean, std, mean


class TransitionModel(nn.Module):
    """What PlaNet's learning rule and planner need of a transition model: the verbs below on
    :class:`RSSMState`, and its sizes.

    Subclasses set ``action_dim``, ``embedding_dim``, ``belief_size``, ``state_size`` (the sizes of the
    concatenated state for composite models) and ``mean_only``, and implement :meth:`img_step` and
    :meth:`obs_step`. Features for the observation and reward models are ``[sample, belief]``
    (``feature_dim = state_size + belief_size``).
    """

    action_dim: int
    embedding_dim: int
    belief_size: int
    state_size: int
    mean_only: bool = False

    @property
    def feature_dim(self) -> int:
        return self.state_size + self.belief_size

    def initial_state(self, batch_size: int, device: th.device | str | None = None) -> RSSMState:
        """The state before ``t = 0``: every field zeros, leading dims ``(batch,)`` (as the original code's
        ``zero_state``)."""
        belief = th.zeros(batch_size, self.belief_size, device=device)
        return RSSMState(belief, *(th.zeros(batch_size, self.state_size, device=device) for _ in range(3)))

    @staticmethod
    def features(state: RSSMState) -> th.Tensor:
        """Decoder / reward-head input ``[s, h]``, ``(..., state_size + belief_size)``."""
        return th.cat([state.sample, state.belief], dim=-1)

    def img_step(
        self,
        prev: RSSMState,
        action: th.Tensor,
        generator: th.Generator | None = None,
        sample: bool = True,
        time: th.Tensor | None = None,
    ) -> RSSMState:
        """One prior (transition) step from the state at ``t - 1`` under ``a_{t-1}`` ``(batch, action_dim)``.

        :param prev: the state at ``t - 1`` (a posterior when filtering, a prior when imagining), leading
            dims ``(batch,)``.
        :param generator: ``torch.Generator`` for the sample (None: global RNG).
        :param sample: draw ``s_t`` (True) or return the mean as ``sample`` (False).
        :param time: ``t``, ``(batch,)`` int64: steps since the start of the episode (acting) or of the
            sequence (learning). Read by clocked models only
            (:class:`~sb3_mb.planet.transition.ClockworkRSSM`: a cell steps when ``t`` is a multiple of its
            period and holds its state otherwise); None: every part steps.
        :return: the prior :class:`RSSMState` at ``t``.
        """
        raise NotImplementedError

    def obs_step(
        self,
        prev: RSSMState,
        action: th.Tensor,
        embedding: th.Tensor,
        generator: th.Generator | None = None,
        sample: bool = True,
        time: th.Tensor | None = None,
    ) -> tuple[RSSMState, RSSMState]:
        """One filtering step: the prior at ``t``, then the posterior given ``e_t``
        ``(batch, embedding_dim)``; ``time`` as in :meth:`img_step`.

        :return: ``(prior, posterior)`` at ``t``, leading dims ``(batch,)``.
        """
        raise NotImplementedError

    def observe(
        self,
        embeddings: th.Tensor,
        actions: th.Tensor,
        is_first: th.Tensor | None = None,
        generator: th.Generator | None = None,
    ) -> tuple[RSSMState, RSSMState]:
        """Posteriors (and priors) over a batch of sequences, from zeros before ``t = 0``.

        :param embeddings: ``e_t``, ``(batch, seq_len, embedding_dim)``.
        :param actions: ``a_{t-1}`` at index ``t``, ``(batch, seq_len, action_dim)``.
        :param is_first: ``(batch, seq_len)`` booleans; where true the previous state and action are reset to
            zeros before the step (a new episode starts at ``t``). None: no resets.
        :param generator: ``torch.Generator`` for the samples (None: global RNG).
        :return: ``(priors, posteriors)`` with fields of shape ``(batch, seq_len, ...)``. The time of index
            ``t`` (:meth:`img_step`) counts from the sequence start or the last ``is_first``
            (:func:`sequence_times`).
        """
        batch, seq_len = embeddings.shape[:2]
        prev = self.initial_state(batch, embeddings.device)
        times = sequence_times(batch, seq_len, is_first, embeddings.device)
        priors, posteriors = [], []
        for t in range(seq_len):
            action = actions[:, t]
            if is_first is not None:
                keep = (~is_first[:, t].bool()).to(embeddings.dtype)[:, None]
                prev, action = RSSMState(*(x * keep for x in prev)), action * keep
            prior, posterior = self.obs_step(prev, action, embeddings[:, t], generator, time=times[:, t])
            priors.append(prior)
            posteriors.append(posterior)
            prev = posterior
        return stack_states(priors), stack_states(posteriors)

    def imagine(
        self,
        start: RSSMState,
        actions: th.Tensor,
        generator: th.Generator | None = None,
        sample: bool = True,
        time: th.Tensor | None = None,
    ) -> RSSMState:
        """Prior rollout of action sequences from the state at ``t``: states ``t+1..t+H`` under
        ``a_{t..t+H-1}``. The planner scores every candidate of every env as one batch of rows of it.

        :param start: leading dims ``(batch,)``.
        :param actions: ``(batch, horizon, action_dim)``.
        :param generator: ``torch.Generator`` for the prior samples (None: global RNG).
        :param sample: sample the prior (as the planner does) or follow its mean (the open-loop video).
        :param time: the time of ``start``, ``(batch,)`` int64 (see :meth:`img_step`); the rollout's states
            are at ``time + 1 .. time + horizon``. None: 0.
        :return: prior states with fields ``(batch, horizon, ...)``.
        """
        if time is None:
            time = th.zeros(actions.shape[0], dtype=th.long, device=actions.device)
        states, prev = [], start
        for t in range(actions.shape[1]):
            prev = self.img_step(prev, actions[:, t], generator, sample, time=time + 1 + t)
            states.append(prev)
        return stack_states(states)


class RSSM(TransitionModel):
    """PlaNet's recurrent state-space model (Sec. 3, Eq. 4). The paper's sizes are the defaults of
    :class:`~sb3_mb.planet.policies.PlaNetPolicy`, which builds it.

    :param action_dim: size of the action input; ``Discrete(n)`` actions enter one-hot, ``action_dim = n``.
    :param embedding_dim: size of the observation embedding ``e_t`` (1024 for the conv encoder).
    :param belief_size: size of the deterministic state ``h``. :param state_size: size of ``s``.
    :param hidden_size: size of the dense layers around the GRU.
    :param min_std: added to the softplus of the std heads.
    :param activation_fn: activation of the dense layers.
    :param future_rnn: the prior's hidden layer reads the new belief (camera-ready) or the pre-GRU embedding
        of ``[s_{t-1}, a_{t-1}]`` (arXiv v1).
    :param mean_only: every "sample" is the mean, prior and posterior alike: no random number is drawn and
        the model is a purely deterministic recurrent network (the paper's deterministic "RNN" ablation,
        Sec. 5 and Fig. 2a, as the original code's ``mean_only`` flag builds it; Rose's fork keeps the flag).
        The mean and std heads stay, so ``KL(posterior || prior)`` still ties the posterior's mean to the
        prior's, as in the original code.
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
    ):
        super().__init__()
        self.action_dim = action_dim
        self.embedding_dim = embedding_dim
        self.belief_size = belief_size
        self.state_size = state_size
        self.hidden_size = hidden_size
        self.min_std = min_std
        self.future_rnn = future_rnn
        self.mean_only = mean_only
        self.act = activation_fn()
        self.fc_state_action = nn.Linear(state_size + action_dim, hidden_size)
        self.rnn = nn.GRUCell(hidden_size, belief_size)
        self.fc_prior_hidden = nn.Linear(belief_size if future_rnn else hidden_size, hidden_size)
        self.fc_prior = nn.Linear(hidden_size, 2 * state_size)
        self.fc_posterior_hidden = nn.Linear(belief_size + embedding_dim, hidden_size)
        self.fc_posterior = nn.Linear(hidden_size, 2 * state_size)

    def img_step(
        self,
        prev: RSSMState,
        action: th.Tensor,
        generator: th.Generator | None = None,
        sample: bool = True,
        time: th.Tensor | None = None,
    ) -> RSSMState:
        """One prior step ``p(s_t | h_t)``, ``h_t = f(h_{t-1}, s_{t-1}, a_{t-1})``; reads ``prev.belief``
        ``(batch, belief_size)`` and ``prev.sample`` ``(batch, state_size)`` (see
        :meth:`TransitionModel.img_step`)."""
        embedded = self.act(self.fc_state_action(th.cat([prev.sample, action], dim=-1)))
        belief = self.rnn(embedded, prev.belief)
        hidden = self.act(self.fc_prior_hidden(belief if self.future_rnn else embedded))
        mean, std, state = gaussian_head(
            self.fc_prior, hidden, self.min_std, generator, sample, self.mean_only
        )
        return RSSMState(belief, mean, std, state)

    def posterior_step(
        self,
        prior: RSSMState,
        embedding: th.Tensor,
        generator: th.Generator | None = None,
        sample: bool = True,
    ) -> RSSMState:
        """Posterior ``q(s_t | h_t, e_t)`` from the prior belief and an embedding ``(batch, embedding_dim)``.

        :return: the posterior :class:`RSSMState` (same belief as ``prior``).
        """
        hidden = self.act(self.fc_posterior_hidden(th.cat([prior.belief, embedding], dim=-1)))
        mean, std, state = gaussian_head(
            self.fc_posterior, hidden, self.min_std, generator, sample, self.mean_only
        )
        return RSSMState(prior.belief, mean, std, state)

    def obs_step(
        self,
        prev: RSSMState,
        action: th.Tensor,
        embedding: th.Tensor,
        generator: th.Generator | None = None,
        sample: bool = True,
        time: th.Tensor | None = None,
    ) -> tuple[RSSMState, RSSMState]:
        """:meth:`img_step` then :meth:`posterior_step`; both states share the belief."""
        prior = self.img_step(prev, action, generator, sample)
        return prior, self.posterior_step(prior, embedding, generator, sample)
