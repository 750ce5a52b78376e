"""V: the variational autoencoder of World Models (Ha & Schmidhuber 2018, arXiv:1803.10122, Sec. 2.1,
App. A.1).

:class:`ConvVAE` is the paper's 64x64 model: the encoder's 4 convs (kernel 4, stride 2, 32/64/128/256
channels, :class:`~sb3_mb.common.conv.ConvEncoder`) give 1024 features, a dense layer gives the mean ``mu``
and the log-variance ``log_var`` of the latent ``z`` (32 on CarRacing); the decoder
(:class:`~sb3_mb.common.conv.ConvDecoder`: dense to 1024, deconvs 128 k5, 64 k5, 32 k6, C k6, stride 2) ends
in a sigmoid, so it reconstructs images in ``[0, 1]``. :class:`MlpVAE` is the same model for vector
observations (``MlpPolicy``), with MLPs and a linear output.

Loss (the original code, ``vae/vae.py``): the squared error summed over the observation's entries, plus the KL
to ``N(0, I)`` (:func:`~sb3_mb.common.distributions.standard_normal_kl`) floored at ``kl_tolerance * z_dim``
nats per example ("KL tolerance": the original floors it at 0.5 per latent dimension, so the encoder is not
pushed to collapse the latents below half a nat each), both averaged over the batch.
"""

from __future__ import annotations

from typing import NamedTuple

import torch as th
from stable_baselines3.common.torch_layers import create_mlp
from torch import nn
from torch.nn import functional as F

from sb3_mb.common.conv import IMAGE_SIZE, ConvDecoder, ConvEncoder
from sb3_mb.common.distributions import standard_normal_kl

__all__ = ["ConvVAE", "MlpVAE", "VAELosses", "preprocess_images"]


class VAELosses(NamedTuple):
    """The VAE's loss and its terms, averaged over the batch (nats / squared error per example).

    :ivar loss: ``reconstruction + max(kl, kl_tolerance * z_dim)``, the quantity minimised.
    :ivar reconstruction: squared error summed over the observation's entries.
    :ivar kl: ``KL(q(z | o) || N(0, I))`` before the floor.
    """

    loss: th.Tensor
    reconstruction: th.Tensor
    kl: th.Tensor


def preprocess_images(images: th.Tensor) -> th.Tensor:
    """uint8 (or float 0..255) images ``(..., C, H, W)`` to float ``(..., C, 64, 64)`` in ``[0, 1]``.

    Images of another size (CarRacing's 96x96) are resized with antialiased bilinear interpolation. The
    original code first crops CarRacing's status bar off, then resizes to 64x64; cropping is a wrapper's job
    here.

    :raises ValueError: for an input with fewer than 3 dims.
    """
    if images.dim() < 3:
        raise ValueError(f"Expected images (..., C, H, W), got shape {tuple(images.shape)}")
    lead = images.shape[:-3]
    x = images.reshape(-1, *images.shape[-3:]).to(th.float32) / 255.0
    if tuple(x.shape[-2:]) != (IMAGE_SIZE, IMAGE_SIZE):
        x = F.interpolate(
            x, size=(IMAGE_SIZE, IMAGE_SIZE), mode="bilinear", antialias=True, align_corners=False
        )
    return x.reshape(*lead, x.shape[-3], IMAGE_SIZE, IMAGE_SIZE)


class _VAE(nn.Module):
    """Shared part of the VAEs: Gaussian posterior, reparameterised sample, loss."""

    z_dim: int
    kl_tolerance: float

    def features(self, x: th.Tensor) -> th.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def preprocess(self, observations: th.Tensor) -> th.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def decode(self, z: th.Tensor) -> th.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def encode(self, observations: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """Posterior ``q(z | o)`` of raw observations ``(..., *obs_shape)``: ``(mu, log_var)``, each
        ``(..., z_dim)``."""
        x = self.preprocess(observations)
        h = self.features(x)
        return self.mu(h), self.log_var(h)

    @staticmethod
    def sample(mu: th.Tensor, log_var: th.Tensor, generator: th.Generator | None = None) -> th.Tensor:
        """``z = mu + exp(log_var / 2) * eps`` (the reparameterisation; the std is ``exp(0.5 log_var)``: the
        Sonic fork's ``exp(log_var)`` QUIRK, spec 4.2, is not reproduced)."""
        eps = th.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
        return mu + th.exp(0.5 * log_var) * eps

    def losses(self, observations: th.Tensor, generator: th.Generator | None = None) -> VAELosses:
        """The VAE loss on a batch of raw observations ``(batch, *obs_shape)`` (module docstring)."""
        x = self.preprocess(observations)
        h = self.features(x)
        mu, log_var = self.mu(h), self.log_var(h)
        reconstruction = self.decode(self.sample(mu, log_var, generator))
        error = ((reconstruction - x) ** 2).reshape(x.shape[0], -1).sum(dim=1).mean()
        kl = standard_normal_kl(mu, th.exp(0.5 * log_var))
        kl_loss = th.clamp(kl, min=self.kl_tolerance * self.z_dim).mean()
        return VAELosses(error + kl_loss, error, kl.mean())


class ConvVAE(_VAE):
    """The paper's 64x64 convolutional VAE (module docstring): ``(..., C, H, W)`` uint8 -> ``z (..., z_dim)``.

    :param in_channels: image channels C (3 RGB; 1 greyscale).
    :param z_dim: latent size N_z (32 CarRacing, 64 Doom).
    :param depth: conv channel multiplier (32: 32/64/128/256 channels, 1024 features).
    :param kl_tolerance: the KL floor per latent dimension, nats (0.5, the original code).
    :param fast_conv: the conv encoder's and decoder's fast paths (:mod:`sb3_mb.common.conv`: channels-last
        activations for batches of 64 frames or more, the decoder's first transposed conv as one matrix
        product; same parameters and math to float32 rounding). False: the plain NCHW reference convolutions.
    """

    def __init__(
        self,
        in_channels: int = 3,
        z_dim: int = 32,
        depth: int = 32,
        kl_tolerance: float = 0.5,
        fast_conv: bool = True,
    ):
        super().__init__()
        self.in_channels, self.z_dim, self.depth, self.kl_tolerance = in_channels, z_dim, depth, kl_tolerance
        self.encoder = ConvEncoder(in_channels, depth, nn.ReLU, channels_last=fast_conv)
        self.mu = nn.Linear(self.encoder.features_dim, z_dim)
        self.log_var = nn.Linear(self.encoder.features_dim, z_dim)
        self.decoder = ConvDecoder(
            z_dim, in_channels, depth, nn.ReLU, channels_last=fast_conv, dense_first_layer=fast_conv
        )

    def preprocess(self, observations: th.Tensor) -> th.Tensor:
        """:func:`preprocess_images`: ``[0, 1]`` floats at 64x64."""
        return preprocess_images(observations)

    def features(self, x: th.Tensor) -> th.Tensor:
        return self.encoder(x)

    def decode(self, z: th.Tensor) -> th.Tensor:
        """Reconstructed images ``(..., C, 64, 64)`` in ``[0, 1]`` (sigmoid) from ``z (..., z_dim)``."""
        return th.sigmoid(self.decoder(z))


class MlpVAE(_VAE):
    """The VAE for vector observations ``(..., obs_dim)``: MLP encoder and decoder, linear output.

    :param obs_dim: observation size. :param z_dim: latent size.
    :param hidden_sizes: hidden layers of the encoder (the decoder mirrors them).
    :param kl_tolerance: the KL floor per latent dimension, nats (0.5).
    """

    def __init__(
        self,
        obs_dim: int,
        z_dim: int = 32,
        hidden_sizes: tuple[int, ...] = (64, 64),
        kl_tolerance: float = 0.5,
    ):
        super().__init__()
        self.obs_dim, self.z_dim, self.kl_tolerance = obs_dim, z_dim, kl_tolerance
        hidden = list(hidden_sizes)
        self.encoder = nn.Sequential(*create_mlp(obs_dim, -1, hidden, nn.ReLU))
        features_dim = hidden[-1] if hidden else obs_dim
        self.mu = nn.Linear(features_dim, z_dim)
        self.log_var = nn.Linear(features_dim, z_dim)
        self.decoder = nn.Sequential(*create_mlp(z_dim, obs_dim, hidden[::-1], nn.ReLU))

    def preprocess(self, observations: th.Tensor) -> th.Tensor:
        return observations.to(th.float32)

    def features(self, x: th.Tensor) -> th.Tensor:
        return self.encoder(x)

    def decode(self, z: th.Tensor) -> th.Tensor:
        """Reconstructed observations ``(..., obs_dim)`` from ``z (..., z_dim)``."""
        return self.decoder(z)
