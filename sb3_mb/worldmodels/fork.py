"""The world model of wassname's Sonic World Models: VAE5, the MDN-RNN, an inverse model and their joint loss.

Source: ``wassname/world-models-sonic-pytorch`` (code without a paper; a World Models agent, after Ha &
Schmidhuber 2018, arXiv:1803.10122, for the Retro contest, Nichol et al. 2018, arXiv:1804.03720), files
``world_models_sonic/models/{vae,rnn,inverse_model,world_model}.py``; spec section 4.2. Its controller is PPO
on the world model's features (:mod:`sb3_mb.worldmodels.fork_ppo`).

- V, :class:`VAE5`: 128x128 RGB -> ``z`` of 512 (conv 3x3 to 64, four stride-2 4x4 convs to 128/192/256/320
  channels, a 1x1 conv to 128 channels at 8x8 = 8192 features, linear to ``mu`` and ``log_var``); the
  decoder mirrors it and ends in a sigmoid. BatchNorm and LeakyReLU in every block, Xavier init.
- M, :class:`~sb3_mb.worldmodels.mdn_rnn.MDNRNN` with 1024 hidden units (``2 z_dim``), 5 mixtures, no reward
  or done head (PPO's critic values the states).
- The inverse model, :class:`InverseModel` (the fork's ``InverseModel2``): ``[z_t, z^_{t+1}] -> 64 -> ReLU ->
  action logits``, where ``z^_{t+1}`` is M's sample, so its loss trains M as well.

Joint loss per transition (the fork's ``WorldModel.forward_train``; :func:`joint_loss`)::

    L = lambda_vae (L_recon + lambda_kld |L_KLD|) + L_mdn + lambda_finv L_inv
    L_recon = 1000 * (squared error summed over the image) / (C H W)
    L_KLD   = 1000 * KL(q(z | o_t) || N(0, I)) / (C H W)
    L_mdn   = 1000 * (mixture NLL of z_{t+1}, averaged over the z dims) / z_dim
    L_inv   = 1000 * (NLL of the taken action a_t) / n_actions

``lambda_loss = 1000`` and the divisions are the fork's way of putting the terms on one scale. Presets of
``(lambda_kld, lambda_finv, lambda_vae)`` from the fork's runs are in :data:`LOSS_WEIGHTS`.

Where this departs from the fork (spec 4.2 QUIRKs, each fixed as recommended):

- **std QUIRK.** The fork samples ``z = mu + exp(log_var) eps``; here ``std = exp(0.5 log_var)``
  (:meth:`VAE5.sample`), the std the KL term assumes.
- **pixel-count QUIRK.** The fork divides the VAE terms by ``X.size(1) X.size(2) X.size(3)`` of a ``(batch,
  seq, C, H, W)`` tensor, i.e. ``seq C H``; here by the pixel count ``C H W`` of one image.
- **MDN sample QUIRK.** The fork's ``z^_{t+1}`` is ``sum_k pi_k N(mu_k, sigma_k)`` (a blend of per-component
  samples, not a mixture sample); here it is :meth:`MDNRNN.sample` (a component, then its Gaussian,
  reparameterised through the mean and std), as in the rest of the package.
- The fork's MDN loss adds the constant ``-log(1e-8)`` so that it stays positive; dropped (no effect on
  gradients nor on the loss reductions the curiosity reward measures).

Kept from the fork: ``z_t`` is **detached** where it enters M and the inverse model (no gradient from M into V
through the input), the target ``z_{t+1}`` is the VAE's sample, **not** detached (spec 4.2); the inverse
loss is the NLL of the taken action; ``log_var`` is clamped to ``[log 1e-8, -log 1e-8]``.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch as th
from torch import nn
from torch.nn import functional as F

from sb3_mb.common.distributions import standard_normal_kl
from sb3_mb.worldmodels.mdn_rnn import MDNRNN

__all__ = [
    "LOSS_WEIGHTS",
    "ForkWorldModel",
    "InverseModel",
    "LossWeights",
    "VAE5",
    "WorldModelLosses",
    "joint_loss",
]

#: ``lambda_loss`` of the fork: every term is multiplied by it before its size normalisation.
LAMBDA_LOSS = 1000.0
#: ``log_var`` clamp of the fork's VAE5: ``[log 1e-8, -log 1e-8]``.
LOG_VAR_BOUND = -math.log(1e-8)


class LossWeights(NamedTuple):
    """The joint loss's weights (spec 4.2 table).

    :ivar kld: ``lambda_kld``, weight of ``|L_KLD|`` inside the VAE term.
    :ivar finv: ``lambda_finv``, weight of the inverse model's loss.
    :ivar vae: ``lambda_vae``, weight of the VAE term.
    """

    kld: float
    finv: float
    vae: float


#: The fork's weight presets (spec 4.2): the curiosity notebook, the no-curiosity notebook (world model
#: frozen), ``05_test.py`` and the ``WorldModel`` class defaults.
LOSS_WEIGHTS: dict[str, LossWeights] = {
    "curiosity": LossWeights(kld=1 / 10, finv=1 / 50, vae=1 / 8),
    "no_curiosity": LossWeights(kld=1 / 12, finv=1 / 200, vae=1 / 8),
    "test": LossWeights(kld=1 / 1024, finv=1 / 100, vae=1 / 16),
    "default": LossWeights(kld=1 / 4, finv=0.01, vae=1.0),
}


def resolve_loss_weights(weights: str | LossWeights | tuple[float, float, float]) -> LossWeights:
    """A preset name of :data:`LOSS_WEIGHTS` or ``(kld, finv, vae)`` -> :class:`LossWeights`.

    :raises ValueError: for an unknown preset or a negative weight.
    """
    if isinstance(weights, str):
        if weights not in LOSS_WEIGHTS:
            raise ValueError(f"Unknown loss_weights {weights!r}; presets: {sorted(LOSS_WEIGHTS)}")
        return LOSS_WEIGHTS[weights]
    result = LossWeights(*(float(w) for w in weights))
    if min(result) < 0:
        raise ValueError(f"loss weights must be >= 0, got {result}")
    return result


def _block(conv: nn.Module, channels: int) -> nn.Sequential:
    return nn.Sequential(conv, nn.BatchNorm2d(channels), nn.LeakyReLU(0.2))


class VAE5(nn.Module):
    """The fork's ``VAE5`` (module docstring): images ``(..., C, H, W)`` uint8 -> ``z (..., z_dim)``.

    :param in_channels: image channels (3, RGB).
    :param image_size: side of the square input the network reads (128); other sizes are resized to it.
    :param z_dim: latent size (512).
    :param channels: channels of the stride-2 blocks (128, 192, 256, 320); their number sets the
        downsampling: ``image_size / 2**len(channels)`` is the bottleneck's side (8).
    :param stem_channels: channels of the first 3x3 conv (64).
    :param bottleneck_channels: channels of the 1x1 conv at the bottleneck (128: 128 x 8 x 8 = 8192 features).
    :raises ValueError: if ``image_size`` is not divisible by ``2**len(channels)``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        image_size: int = 128,
        z_dim: int = 512,
        channels: tuple[int, ...] = (128, 192, 256, 320),
        stem_channels: int = 64,
        bottleneck_channels: int = 128,
    ):
        super().__init__()
        side = image_size // 2 ** len(channels)
        if side < 1 or side * 2 ** len(channels) != image_size:
            raise ValueError(f"image_size {image_size} is not divisible by 2**{len(channels)} (channels)")
        self.in_channels, self.image_size, self.z_dim = in_channels, image_size, z_dim
        self.bottleneck_shape = (bottleneck_channels, side, side)
        flat = bottleneck_channels * side * side
        widths = [stem_channels, *channels]
        encoder = [_block(nn.Conv2d(in_channels, stem_channels, 3, padding=1), stem_channels)]
        encoder += [_block(nn.Conv2d(a, b, 4, 2, 1), b) for a, b in zip(widths[:-1], widths[1:], strict=True)]
        encoder += [_block(nn.Conv2d(widths[-1], bottleneck_channels, 1), bottleneck_channels), nn.Flatten()]
        self.encoder = nn.Sequential(*encoder)
        self.mu = nn.Linear(flat, z_dim)
        self.log_var = nn.Linear(flat, z_dim)
        self.decoder_input = nn.Linear(z_dim, flat)
        decoder = [_block(nn.ConvTranspose2d(bottleneck_channels, widths[-1], 1), widths[-1])]
        decoder += [
            _block(nn.ConvTranspose2d(a, b, 4, 2, 1), b)
            for a, b in zip(widths[::-1][:-1], widths[::-1][1:], strict=True)
        ]
        decoder += [nn.Conv2d(stem_channels, in_channels, 3, padding=1)]
        self.decoder = nn.Sequential(*decoder)
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.ConvTranspose2d | nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)

    def preprocess(self, images: th.Tensor) -> th.Tensor:
        """uint8 (or 0..255 float) ``(..., C, H, W)`` -> float ``(N, C, image_size, image_size)`` in
        ``[0, 1]`` (the fork's ``ScaledFloatFrame``; antialiased bilinear resize if the size differs).

        :raises ValueError: for fewer than 3 dims or another channel count.
        """
        if images.dim() < 3 or images.shape[-3] != self.in_channels:
            raise ValueError(f"Expected images (..., {self.in_channels}, H, W), got {tuple(images.shape)}")
        x = images.reshape(-1, *images.shape[-3:]).to(th.float32) / 255.0
        if tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            size = (self.image_size, self.image_size)
            x = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
        return x

    def encode(self, images: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """Posterior ``(mu, log_var)``, each ``(N, z_dim)``, of images ``(..., C, H, W)`` (flattened to N)."""
        h = self.encoder(self.preprocess(images))
        return self.mu(h), th.clamp(self.log_var(h), -LOG_VAR_BOUND, LOG_VAR_BOUND)

    @staticmethod
    def sample(mu: th.Tensor, log_var: th.Tensor) -> th.Tensor:
        """``z = mu + exp(0.5 log_var) eps``: the std QUIRK of the fork (``exp(log_var)``) is fixed."""
        return mu + th.exp(0.5 * log_var) * th.randn_like(mu)

    def decode(self, z: th.Tensor) -> th.Tensor:
        """Images ``(N, C, image_size, image_size)`` in ``[0, 1]`` from ``z (N, z_dim)``."""
        h = self.decoder_input(z).reshape(-1, *self.bottleneck_shape)
        return th.sigmoid(self.decoder(h))

    def losses(self, images: th.Tensor, sample: bool = True) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
        """Per image: ``(squared error summed over the image, KL in nats, z)``, each with leading dim N.

        :param sample: decode a posterior sample (training); False decodes ``mu`` (the fork's eval mode).
        """
        x = self.preprocess(images)
        h = self.encoder(x)
        mu, log_var = self.mu(h), th.clamp(self.log_var(h), -LOG_VAR_BOUND, LOG_VAR_BOUND)
        z = self.sample(mu, log_var) if sample else mu
        error = ((self.decode(z) - x) ** 2).reshape(x.shape[0], -1).sum(dim=1)
        return error, standard_normal_kl(mu, th.exp(0.5 * log_var)), z


class InverseModel(nn.Module):
    """``[z_t, z_{t+1}] -> hidden -> ReLU -> action logits`` (the fork's ``InverseModel2``).

    :param z_dim: latent size. :param n_actions: discrete actions (10, the fork's Sonic combos).
    :param hidden_size: hidden units (64).
    """

    def __init__(self, z_dim: int, n_actions: int, hidden_size: int = 64):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(2 * z_dim, hidden_size), nn.ReLU(), nn.Linear(hidden_size, n_actions)
        )

    def forward(self, z: th.Tensor, z_next: th.Tensor) -> th.Tensor:
        """Logits ``(..., n_actions)`` of the action taken between ``z (..., z_dim)`` and ``z_next``."""
        return self.net(th.cat([z, z_next], dim=-1))


class WorldModelLosses(NamedTuple):
    """The joint loss and its normalised terms, per transition ``(N,)`` (module docstring).

    :ivar loss: ``lambda_vae (recon + lambda_kld |kld|) + mdn + lambda_finv inverse``.
    :ivar reconstruction: ``L_recon``. :ivar kld: ``L_KLD``. :ivar mdn: ``L_mdn``. :ivar inverse: ``L_inv``.
    """

    loss: th.Tensor
    reconstruction: th.Tensor
    kld: th.Tensor
    mdn: th.Tensor
    inverse: th.Tensor


def joint_loss(
    squared_error: th.Tensor,
    kl: th.Tensor,
    mdn_nll: th.Tensor,
    inverse_nll: th.Tensor,
    weights: LossWeights,
    n_pixels: int,
    z_dim: int,
    n_actions: int,
) -> WorldModelLosses:
    """The fork's normalised joint loss from raw per-transition terms ``(N,)`` (module docstring).

    :param squared_error: squared error summed over the image. :param kl: the VAE's KL, nats.
    :param mdn_nll: M's NLL of ``z_{t+1}``, nats averaged over the latent dims.
    :param inverse_nll: the inverse model's NLL of the taken action, nats.
    :param weights: ``(kld, finv, vae)``. :param n_pixels: ``C H W`` of one image (the pixel-count QUIRK
        fixed). :param z_dim: latent size. :param n_actions: discrete actions.
    """
    reconstruction = LAMBDA_LOSS * squared_error / n_pixels
    kld = LAMBDA_LOSS * kl / n_pixels
    mdn = LAMBDA_LOSS * mdn_nll / z_dim
    inverse = LAMBDA_LOSS * inverse_nll / n_actions
    loss = weights.vae * (reconstruction + weights.kld * kld.abs()) + mdn + weights.finv * inverse
    return WorldModelLosses(loss, reconstruction, kld, mdn, inverse)


class ForkWorldModel(nn.Module):
    """V, M and the inverse model of the fork in one module; its verbs are what PPO's loop needs.

    :meth:`encode` (V's mean, the fork's eval mode) and :meth:`step` (M's recurrence) run online while acting;
    :meth:`losses` scores transitions; :meth:`features` builds the controller's input.

    :param in_channels: image channels. :param n_actions: discrete actions.
    :param image_size: V's input side (128). :param z_dim: latent size (512).
    :param hidden_size: M's LSTM units (1024 = ``2 z_dim``). :param n_mixtures: M's Gaussians (5).
    :param vae_channels: V's stride-2 channels. :param stem_channels: V's first conv's channels.
    :param bottleneck_channels: V's 1x1 bottleneck channels. :param inverse_hidden_size: (64).
    :param controller_input: ``"cell"`` (the fork: ``[z, c]``, c the LSTM cell state) or ``"hidden"``
        (the paper's ``[z, h]``).
    :raises ValueError: for an unknown ``controller_input``.
    """

    CONTROLLER_INPUTS = ("cell", "hidden")

    def __init__(
        self,
        in_channels: int,
        n_actions: int,
        image_size: int = 128,
        z_dim: int = 512,
        hidden_size: int = 1024,
        n_mixtures: int = 5,
        vae_channels: tuple[int, ...] = (128, 192, 256, 320),
        stem_channels: int = 64,
        bottleneck_channels: int = 128,
        inverse_hidden_size: int = 64,
        controller_input: str = "cell",
    ):
        super().__init__()
        if controller_input not in self.CONTROLLER_INPUTS:
            raise ValueError(
                f"controller_input must be one of {self.CONTROLLER_INPUTS}, got {controller_input!r}"
            )
        self.n_actions, self.controller_input = n_actions, controller_input
        self.vae = VAE5(
            in_channels, image_size, z_dim, tuple(vae_channels), stem_channels, bottleneck_channels
        )
        self.mdn_rnn = MDNRNN(
            z_dim, n_actions, hidden_size, n_mixtures, predict_reward=False, predict_done=False
        )
        self.inverse = InverseModel(z_dim, n_actions, inverse_hidden_size)

    @property
    def z_dim(self) -> int:
        return self.vae.z_dim

    @property
    def hidden_size(self) -> int:
        return self.mdn_rnn.hidden_size

    @property
    def features_dim(self) -> int:
        """Size of the controller's input ``[z, c]`` (or ``[z, h]``)."""
        return self.z_dim + self.hidden_size

    def initial_state(self, n: int) -> tuple[th.Tensor, th.Tensor]:
        """Zero LSTM state ``(h, c)``, each ``(n, hidden_size)``."""
        zeros = th.zeros(n, self.hidden_size, device=self.vae.mu.weight.device)
        return zeros, zeros.clone()

    @th.no_grad()
    def encode(self, images: th.Tensor) -> th.Tensor:
        """``mu (N, z_dim)`` of images ``(N, C, H, W)``, with BatchNorm's running statistics (eval mode)."""
        was_training = self.vae.training
        self.vae.eval()
        mu, _ = self.vae.encode(images)
        self.vae.train(was_training)
        return mu

    @th.no_grad()
    def step(
        self, z: th.Tensor, actions: th.Tensor, state: tuple[th.Tensor, th.Tensor]
    ) -> tuple[th.Tensor, ...]:
        """M's next state ``(h, c)`` from ``z (N, z_dim)``, integer actions ``(N,)`` and ``state``."""
        one_hot = F.one_hot(actions.long().reshape(-1), self.n_actions).to(z.dtype)
        return self.mdn_rnn.step(z, one_hot, state)

    def features(self, z: th.Tensor, state: tuple[th.Tensor, th.Tensor]) -> th.Tensor:
        """The controller's input ``[z, c]`` (or ``[z, h]``) ``(N, z_dim + hidden_size)``, detached."""
        memory = state[1] if self.controller_input == "cell" else state[0]
        return th.cat([z, memory], dim=-1).detach()

    def losses(
        self,
        images: th.Tensor,
        actions: th.Tensor,
        next_images: th.Tensor,
        state: tuple[th.Tensor, th.Tensor],
        weights: LossWeights = LOSS_WEIGHTS["default"],
        sample: bool = True,
    ) -> WorldModelLosses:
        """The joint loss of ``N`` transitions, one step of M each from its stored state (the fork's
        ``forward_train`` with ``seq_len = 1``).

        :param images: ``(N, C, H, W)`` uint8 frames ``o_t``. :param actions: ``(N,)`` integer actions.
        :param next_images: ``(N, C, H, W)`` frames ``o_{t+1}`` (the terminal frame at an episode's end).
        :param state: M's ``(h_t, c_t)``, each ``(N, hidden_size)``, as they were when ``a_t`` was chosen.
        :param weights: the loss weights (:data:`LOSS_WEIGHTS`).
        :param sample: sample ``z`` and ``z^_{t+1}`` (training); False uses the means (the curiosity
            reward's before/after measurement, free of sampling noise).
        :return: :class:`WorldModelLosses`, each ``(N,)``.
        """
        n = images.shape[0]
        both = th.cat([images, next_images], dim=0)
        squared_error, kl, z_both = self.vae.losses(both, sample=sample)
        squared_error, kl = squared_error[:n], kl[:n]
        z, z_next = z_both[:n].detach(), z_both[n:]
        one_hot = F.one_hot(actions.long().reshape(-1), self.n_actions).to(z.dtype)
        h, c = self.mdn_rnn.step(z, one_hot, (state[0].detach(), state[1].detach()))
        params = self.mdn_rnn.mixture(h)
        mdn_nll = self.mdn_rnn.nll(params, z_next)
        if sample:
            z_predicted = self.mdn_rnn.sample(params)
        else:
            z_predicted = (params.log_pi.exp() * params.mean).sum(dim=-1)
        inverse_nll = F.cross_entropy(
            self.inverse(z, z_predicted), actions.long().reshape(-1), reduction="none"
        )
        n_pixels = self.vae.in_channels * self.vae.image_size**2  # the frame V reads, C H W
        return joint_loss(
            squared_error, kl, mdn_nll, inverse_nll, weights, n_pixels, self.z_dim, self.n_actions
        )
