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
and :meth:`RSSM.imagine` (a prior rollout under given actions, for the open-loop predictions).

Time alignment is the replay buffer's (:mod:`sb3_mb.common.buffers`): index ``t`` of a sequence holds ``o_t``
and ``a_{t-1}``, so ``h_t`` is computed from ``a_{t-1} = actions[:, t]``.
"""

from __future__ import annotations

from typing import NamedTuple

import torch as th
from torch import nn
from torch.nn import functional as F


class RSSMState(NamedTuple):
    """A (batch of) RSSM latent state(s); every field has the same leading dims ``(...)``.

    :ivar belief: deterministic GRU state ``h``, ``(..., belief_size)``.
    :ivar mean: mean of the Gaussian over ``s``, ``(..., state_size)``.
    :ivar std: its standard deviation (``>= min_std``), ``(..., state_size)``.
    :ivar sample: a sample ``s ~ N(mean, std^2)``, ``(..., state_size)``.
    """

    belief: th.Tensor
    mean: th.Tensor
    std: th.Tensor
    sample: th.Tensor

    def detach(self) -> RSSMState:
        return RSSMState(*(x.detach() for x in self))


def stack_states(states: list[RSSMState], dim: int = 1) -> RSSMState:
    """Stack a list of states with leading dims ``(batch,)`` into ``(batch, T)`` (``dim=1``)."""
    return RSSMState(*(th.stack(fields, dim=dim) for fields in zip(*states, strict=True)))


class RSSM(nn.Module):
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
    ):
        super().__init__()
        self.action_dim = action_dim
        self.embedding_dim = embedding_dim
        self.belief_size = belief_size
        self.state_size = state_size
        self.hidden_size = hidden_size
        self.min_std = min_std
        self.future_rnn = future_rnn
        self.feature_dim = belief_size + state_size
        self.act = activation_fn()
        self.fc_state_action = nn.Linear(state_size + action_dim, hidden_size)
        self.rnn = nn.GRUCell(hidden_size, belief_size)
        self.fc_prior_hidden = nn.Linear(belief_size if future_rnn else hidden_size, hidden_size)
        self.fc_prior = nn.Linear(hidden_size, 2 * state_size)
        self.fc_posterior_hidden = nn.Linear(belief_size + embedding_dim, hidden_size)
        self.fc_posterior = nn.Linear(hidden_size, 2 * state_size)

    # ----------------------------------------------------------------------------------------------
    # Helpers
    # ----------------------------------------------------------------------------------------------
    def initial_state(
        self, batch_size: int, device: th.device | str | None = None
    ) -> tuple[th.Tensor, th.Tensor]:
        """Zero belief ``(batch, belief_size)`` and zero state sample ``(batch, state_size)``."""
        return (
            th.zeros(batch_size, self.belief_size, device=device),
            th.zeros(batch_size, self.state_size, device=device),
        )

    @staticmethod
    def features(state: RSSMState) -> th.Tensor:
        """Decoder / reward-head input ``[s, h]``, ``(..., state_size + belief_size)``."""
        return th.cat([state.sample, state.belief], dim=-1)

    def _gaussian(self, head: nn.Linear, hidden: th.Tensor, generator: th.Generator | None, sample: bool):
        mean, std = head(hidden).chunk(2, dim=-1)
        std = F.softplus(std) + self.min_std
        if sample:
            noise = th.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            return mean, std, mean + std * noise
        return mean, std, mean

    # ----------------------------------------------------------------------------------------------
    # Verbs
    # ----------------------------------------------------------------------------------------------
    def img_step(
        self,
        belief: th.Tensor,
        state_sample: th.Tensor,
        action: th.Tensor,
        generator: th.Generator | None = None,
        sample: bool = True,
    ) -> RSSMState:
        """One prior (transition) step ``p(s_t | h_t)``, ``h_t = f(h_{t-1}, s_{t-1}, a_{t-1})``.

        :param belief: ``h_{t-1}``, ``(batch, belief_size)``.
        :param state_sample: ``s_{t-1}``, ``(batch, state_size)``.
        :param action: ``a_{t-1}``, ``(batch, action_dim)`` (one-hot for discrete actions).
        :param generator: ``torch.Generator`` for the sample (None: global RNG).
        :param sample: draw ``s_t`` (True) or return the mean as ``sample`` (False).
        :return: the prior :class:`RSSMState` at ``t``, leading dims ``(batch,)``.
        """
        embedded = self.act(self.fc_state_action(th.cat([state_sample, action], dim=-1)))
        belief = self.rnn(embedded, belief)
        hidden = self.act(self.fc_prior_hidden(belief if self.future_rnn else embedded))
        mean, std, state = self._gaussian(self.fc_prior, hidden, generator, sample)
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
        mean, std, state = self._gaussian(self.fc_posterior, hidden, generator, sample)
        return RSSMState(prior.belief, mean, std, state)

    def obs_step(
        self,
        belief: th.Tensor,
        state_sample: th.Tensor,
        action: th.Tensor,
        embedding: th.Tensor,
        generator: th.Generator | None = None,
        sample: bool = True,
    ) -> tuple[RSSMState, RSSMState]:
        """One filtering step: :meth:`img_step` then the posterior given ``e_t`` (``(batch, embedding_dim)``).

        :return: ``(prior, posterior)`` at ``t``, both with leading dims ``(batch,)`` and the same belief.
        """
        prior = self.img_step(belief, state_sample, action, generator, sample)
        return prior, self.posterior_step(prior, embedding, generator, sample)

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
        :param is_first: ``(batch, seq_len)`` booleans; where true the previous belief, state and action are
            reset to zeros before the step (a new episode starts at ``t``). None: no resets.
        :param generator: ``torch.Generator`` for the samples (None: global RNG).
        :return: ``(priors, posteriors)`` with fields of shape ``(batch, seq_len, ...)``.
        """
        batch, seq_len = embeddings.shape[:2]
        belief, state = self.initial_state(batch, embeddings.device)
        priors, posteriors = [], []
        for t in range(seq_len):
            action = actions[:, t]
            if is_first is not None:
                keep = (~is_first[:, t].bool()).to(belief.dtype)[:, None]
                belief, state, action = belief * keep, state * keep, action * keep
            prior, posterior = self.obs_step(belief, state, action, embeddings[:, t], generator)
            priors.append(prior)
            posteriors.append(posterior)
            belief, state = posterior.belief, posterior.sample
        return stack_states(priors), stack_states(posteriors)

    def imagine(
        self,
        belief: th.Tensor,
        state_sample: th.Tensor,
        actions: th.Tensor,
        generator: th.Generator | None = None,
        sample: bool = True,
    ) -> RSSMState:
        """Prior rollout of action sequences from ``(h_t, s_t)``: ``s_{t+1..t+H}`` under ``a_{t..t+H-1}``.

        The planner's objective (:meth:`~sb3_mb.planet.policies.PlaNetPolicy.planning_objective`) runs the
        same loop over every candidate of every env as one batch, summing rewards instead of keeping states.

        :param belief: ``(batch, belief_size)``.
        :param state_sample: ``(batch, state_size)``.
        :param actions: ``(batch, horizon, action_dim)``.
        :param generator: ``torch.Generator`` for the prior samples (None: global RNG).
        :param sample: sample the prior (as the planner does) or follow its mean (the open-loop video).
        :return: prior states with fields ``(batch, horizon, ...)``.
        """
        states = []
        for t in range(actions.shape[1]):
            prior = self.img_step(belief, state_sample, actions[:, t], generator, sample)
            states.append(prior)
            belief, state_sample = prior.belief, prior.sample
        return stack_states(states)
