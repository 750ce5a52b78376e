"""Recurrent state-space model (RSSM) of PlaNet: a deterministic GRU belief and a diagonal-Gaussian state.

Hafner et al. 2019, "Learning Latent Dynamics for Planning from Pixels", Sec. 3 and ``planet/models/rssm.py``
(spec ``planet.md`` 3.1). With ``h`` the belief and ``s`` the stochastic state:

- transition (prior): ``h_t = GRU(relu(W [s_{t-1}, a_{t-1}]), h_{t-1})``, then ``relu(dense(h_t))`` (the
  ``future_rnn=True`` camera-ready variant; ``False`` uses the pre-GRU embedding as in arXiv v1) and two
  heads ``mean``, ``std = softplus(.) + min_std``; ``s_t ~ N(mean, std^2)``;
- posterior: ``relu(dense([h_t, e_t]))`` with ``e_t`` the observation embedding, and the same two heads;
- features for the decoder and reward heads: ``[s_t, h_t]`` (``state_size + belief_size``).

The verbs follow DreamerV3 (``dreamerv3/rssm.py``): :meth:`RSSM.img_step` (one prior step),
:meth:`RSSM.obs_step` (prior then posterior), :meth:`RSSM.observe` (posterior over a sequence, used by
learning and by the filter in ``predict``) and :meth:`RSSM.imagine` (prior rollout of action sequences,
every candidate of every env as one batch row, used by the planner).

Time alignment is the replay buffer's (``sb3_mb.common.buffers``): index ``t`` of a sequence holds ``o_t``
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


def gaussian_kl(posterior: RSSMState, prior: RSSMState) -> th.Tensor:
    """``KL(N(post.mean, post.std) || N(prior.mean, prior.std))`` summed over the state dims, in nats.

    :return: ``(...)``, the leading dims of the states.
    """
    var_ratio = (posterior.std / prior.std) ** 2
    t1 = ((posterior.mean - prior.mean) / prior.std) ** 2
    return 0.5 * (var_ratio + t1 - 1.0 - th.log(var_ratio)).sum(dim=-1)


def standard_normal_kl(state: RSSMState) -> th.Tensor:
    """``KL(N(mean, std) || N(0, I))`` summed over state dims, ``(...)`` (PlaNet v1 global divergence)."""
    var = state.std**2
    return 0.5 * (var + state.mean**2 - 1.0 - th.log(var)).sum(dim=-1)


class RSSM(nn.Module):
    """PlaNet's recurrent state-space model (spec ``planet.md`` 3.1).

    :param action_dim: A; discrete actions enter as one-hot vectors of size ``n`` (spec 3.2).
    :param embedding_dim: size of the observation embedding ``e_t`` (1024 for the conv encoder).
    :param belief_size: GRU belief size (PlaNet: 200).
    :param state_size: stochastic state size (PlaNet: 30).
    :param hidden_size: size of the dense layers around the GRU (PlaNet: 200).
    :param min_std: added to ``softplus`` of the std heads (PlaNet: 0.1).
    :param activation_fn: activation of the dense layers (PlaNet configs: ReLU).
    :param future_rnn: the prior's hidden layer reads the new belief (camera-ready, True) or the pre-GRU
        embedding of ``[s_{t-1}, a_{t-1}]`` (arXiv v1, False).
    """

    def __init__(
        self,
        action_dim: int,
        embedding_dim: int,
        belief_size: int = 200,
        state_size: int = 30,
        hidden_size: int = 200,
        min_std: float = 0.1,
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
        initial: tuple[th.Tensor, th.Tensor] | None = None,
        generator: th.Generator | None = None,
    ) -> tuple[RSSMState, RSSMState]:
        """Posterior (and prior) over a batch of sequences.

        :param embeddings: ``e_t``, ``(batch, seq_len, embedding_dim)``.
        :param actions: ``a_{t-1}`` at index ``t``, ``(batch, seq_len, action_dim)``.
        :param is_first: ``(batch, seq_len)`` booleans; where true the previous belief, state and action are
            reset to zeros before the step (a new episode starts at ``t``). None: no resets.
        :param initial: ``(belief, state_sample)`` before ``t = 0``, ``(batch, belief_size)`` and
            ``(batch, state_size)``; None: zeros.
        :param generator: ``torch.Generator`` for the samples (None: global RNG).
        :return: ``(priors, posteriors)`` with fields of shape ``(batch, seq_len, ...)``.
        """
        batch, seq_len = embeddings.shape[:2]
        belief, state = initial if initial is not None else self.initial_state(batch, embeddings.device)
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

        The planner calls it with every candidate of every env as one row: ``batch = n_envs * n_candidates``.

        :param belief: ``(batch, belief_size)``.
        :param state_sample: ``(batch, state_size)``.
        :param actions: ``(batch, horizon, action_dim)``.
        :param generator: ``torch.Generator`` for the prior samples (None: global RNG).
        :param sample: sample the prior (PlaNet) or follow its mean.
        :return: prior states with fields ``(batch, horizon, ...)``.
        """
        states = []
        for t in range(actions.shape[1]):
            prior = self.img_step(belief, state_sample, actions[:, t], generator, sample)
            states.append(prior)
            belief, state_sample = prior.belief, prior.sample
        return stack_states(states)
