"""M: the MDN-RNN of World Models (Ha & Schmidhuber 2018, arXiv:1803.10122, Sec. 2.2, App. A.2).

An LSTM (256 units on CarRacing, 512 on Doom) reads ``[z_t, a_t]`` and its hidden state ``h_{t+1}`` gives a
mixture of ``n_mixtures`` (5) Gaussians for each dimension of ``z_{t+1}`` (factorised over dimensions, as
the original ``rnn/rnn.py``), trained by the negative log-likelihood. Optional heads read the same
``h_{t+1}``: the reward ``r_t`` (squared error) and the termination ``done_t`` (logistic; Doom's M predicts
it), which the dream (:class:`~sb3_mb.worldmodels.dream.DreamEnv`) needs.

Sampling at temperature ``tau`` (Sec. 4.3): the mixture logits are divided by ``tau`` and every std multiplied
by ``sqrt(tau)``; ``tau -> 0`` approaches the most likely component's mean.

Shapes: ``z (..., z_dim)``, model actions ``(..., action_dim)`` (``Box`` actions scaled to ``[-1, 1]``,
``Discrete`` one-hot), LSTM state ``(h, c)`` each ``(batch, hidden_size)``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch as th
from torch import nn
from torch.nn import functional as F

__all__ = ["MDNRNN", "MixtureParams"]

LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


class MixtureParams(NamedTuple):
    """The MDN head's output for ``z_{t+1}`` and the optional heads.

    :ivar log_pi: mixture log-weights ``(..., z_dim, n_mixtures)``, log-softmax over the last dim.
    :ivar mean: ``(..., z_dim, n_mixtures)``. :ivar log_std: ``(..., z_dim, n_mixtures)``.
    :ivar reward: predicted ``r_t`` ``(...)`` (zeros without the reward head).
    :ivar done_logit: logit of ``done_t`` ``(...)`` (zeros without the done head).
    """

    log_pi: th.Tensor
    mean: th.Tensor
    log_std: th.Tensor
    reward: th.Tensor
    done_logit: th.Tensor


class MDNRNN(nn.Module):
    """LSTM + mixture density head (module docstring).

    :param z_dim: latent size N_z. :param action_dim: model action size.
    :param hidden_size: LSTM units (256 CarRacing, 512 Doom). :param n_mixtures: Gaussians per dimension (5).
    :param predict_reward: with the reward head. :param predict_done: with the termination head.
    """

    #: lower bound of a component's log-std (numerical guard, not in the paper: a std of 9e-4 in latent units)
    MIN_LOG_STD = -7.0

    def __init__(
        self,
        z_dim: int,
        action_dim: int,
        hidden_size: int = 256,
        n_mixtures: int = 5,
        predict_reward: bool = True,
        predict_done: bool = True,
    ):
        super().__init__()
        self.z_dim, self.action_dim, self.hidden_size = z_dim, action_dim, hidden_size
        self.n_mixtures, self.predict_reward, self.predict_done = n_mixtures, predict_reward, predict_done
        self.lstm = nn.LSTM(z_dim + action_dim, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, 3 * z_dim * n_mixtures + int(predict_reward) + int(predict_done))

    # ------------------------------------------------------------------------------------ recurrence
    def step(
        self, z: th.Tensor, action: th.Tensor, hidden: tuple[th.Tensor, th.Tensor]
    ) -> tuple[th.Tensor, th.Tensor]:
        """One LSTM step: ``(h_{t+1}, c_{t+1})`` from ``z_t (batch, z_dim)``, ``a_t (batch, action_dim)`` and
        ``(h_t, c_t)`` each ``(batch, hidden_size)``.

        ``torch.lstm_cell`` on the LSTM's own weights (what ``nn.LSTMCell`` runs): the same gates as
        ``self.lstm`` over a sequence of one step, which costs 3-4 ms per call on one CPU thread against
        0.6 ms (issue 15; tests/worldmodels/test_worldmodels_speed.py checks the two agree)."""
        lstm = self.lstm
        return th.lstm_cell(
            th.cat([z, action], dim=-1),
            hidden,
            lstm.weight_ih_l0,
            lstm.weight_hh_l0,
            lstm.bias_ih_l0,
            lstm.bias_hh_l0,
        )

    def forward(
        self, z: th.Tensor, actions: th.Tensor, hidden: tuple[th.Tensor, th.Tensor] | None = None
    ) -> tuple[MixtureParams, th.Tensor]:
        """Run over sequences from ``hidden`` (zeros if None), as in training.

        :param z: ``(batch, seq_len, z_dim)`` latents ``z_0..z_{T-1}``.
        :param actions: ``(batch, seq_len, action_dim)``, ``a_t`` taken at ``z_t``.
        :return: the :class:`MixtureParams` for ``z_1..z_T`` (leading dims ``(batch, seq_len)``) and the
            hidden states ``h_1..h_T`` ``(batch, seq_len, hidden_size)``.
        """
        outputs, _ = self.lstm(th.cat([z, actions], dim=-1), hidden)
        return self.mixture(outputs), outputs

    def mixture(self, h: th.Tensor) -> MixtureParams:
        """The head on hidden states ``h (..., hidden_size)``."""
        out = self.head(h)
        k, d = self.n_mixtures, self.z_dim
        params = out[..., : 3 * d * k].reshape(*h.shape[:-1], d, 3, k)
        log_pi = F.log_softmax(params[..., 0, :], dim=-1)
        mean = params[..., 1, :]
        log_std = th.clamp(params[..., 2, :], min=self.MIN_LOG_STD)
        extra = out[..., 3 * d * k :]
        zeros = th.zeros(h.shape[:-1], device=h.device, dtype=h.dtype)
        reward = extra[..., 0] if self.predict_reward else zeros
        done_logit = extra[..., int(self.predict_reward)] if self.predict_done else zeros
        return MixtureParams(log_pi, mean, log_std, reward, done_logit)

    # ------------------------------------------------------------------------------------ likelihood
    @staticmethod
    def nll(params: MixtureParams, z_next: th.Tensor) -> th.Tensor:
        """Negative log-likelihood of ``z_next (..., z_dim)`` under the mixture, nats per latent dimension:
        ``-logsumexp_k(log pi_k + log N(z; mean_k, std_k))``, averaged over the dimensions (the original's
        mean) -> ``(...)``."""
        x = z_next[..., None]
        log_normal = -0.5 * ((x - params.mean) * th.exp(-params.log_std)) ** 2 - params.log_std - LOG_SQRT_2PI
        return -th.logsumexp(params.log_pi + log_normal, dim=-1).mean(dim=-1)

    @staticmethod
    def sample(
        params: MixtureParams, temperature: float = 1.0, generator: th.Generator | None = None
    ) -> th.Tensor:
        """Sample ``z_{t+1} (..., z_dim)`` at temperature ``tau`` (module docstring): per dimension a
        component from ``softmax(log_pi / tau)``, then its Gaussian with std ``std * sqrt(tau)`` (the paper's
        and the original code's mixture sample; the Sonic fork's ``sum_k pi_k N(mu_k, sigma_k)`` sample and
        its ``log_pi - log tau``, which the softmax cancels, spec 4.2, are not reproduced).

        :raises ValueError: for ``temperature <= 0``.
        """
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        logits = params.log_pi / temperature
        flat = F.softmax(logits, dim=-1).reshape(-1, logits.shape[-1])
        index = th.multinomial(flat, 1, generator=generator).reshape(*logits.shape[:-1], 1)
        mean = params.mean.gather(-1, index)[..., 0]
        std = th.exp(params.log_std.gather(-1, index)[..., 0]) * math.sqrt(temperature)
        eps = th.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + std * eps
