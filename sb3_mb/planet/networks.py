"""The tiny encoder and decoder of Rose's PlaNet fork for ablations (``dumbnet: true``;
github.com/rosea-tf/planet, ``networks/conv_ha.py`` and ``networks/basic.py``): how much of PlaNet's result
needs the observation networks' capacity.

- images: one conv of 256 channels, kernel 4, stride 32, giving the same 2x2x256 = 1024-D embedding as the
  paper's four convs; the decoder keeps the dense layer to 1024 and the four transposed convs' kernels and
  strides, with 2 channels instead of 128 / 64 / 32;
- vectors (not in the fork, whose observations are images): MLPs with one hidden layer of
  :data:`DUMBNET_UNITS` units, the width the fork's dumbnet gives its feed-forward heads (10 instead of 100).
"""

from __future__ import annotations

import torch as th
from stable_baselines3.common.torch_layers import create_mlp
from torch import nn

from sb3_mb.common.conv import IMAGE_SIZE

DUMBNET_UNITS = 10
DUMBNET_CHANNELS = 2


class DumbConvEncoder(nn.Module):
    """``(..., in_channels, 64, 64) -> (..., 1024)``: one conv, 256 channels, kernel 4, stride 32.

    :raises ValueError: in ``forward``, if the trailing dims are not ``(in_channels, 64, 64)``.
    """

    features_dim = 1024

    def __init__(self, in_channels: int = 3, activation_fn: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.in_channels = in_channels
        self.net = nn.Sequential(
            nn.Conv2d(in_channels, 256, kernel_size=4, stride=32), activation_fn(), nn.Flatten()
        )

    def forward(self, images: th.Tensor) -> th.Tensor:
        expected = (self.in_channels, IMAGE_SIZE, IMAGE_SIZE)
        if images.dim() < 3 or tuple(images.shape[-3:]) != expected:
            raise ValueError(f"DumbConvEncoder expects (..., {expected}), got {tuple(images.shape)}")
        lead = images.shape[:-3]
        return self.net(images.reshape(-1, *expected)).reshape(*lead, self.features_dim)


class DumbConvDecoder(nn.Module):
    """``(..., feature_dim) -> (..., out_channels, 64, 64)`` means: dense to 1024, then transposed convs
    2 (k5, s2), 2 (k5, s2), 2 (k6, s2), ``out_channels`` (k6, s2)."""

    def __init__(self, feature_dim: int, out_channels: int = 3, activation_fn: type[nn.Module] = nn.ReLU):
        super().__init__()
        self.feature_dim, self.out_channels = feature_dim, out_channels
        self.linear = nn.Linear(feature_dim, 1024)
        c = DUMBNET_CHANNELS
        self.net = nn.Sequential(
            nn.ConvTranspose2d(1024, c, kernel_size=5, stride=2),
            activation_fn(),
            nn.ConvTranspose2d(c, c, kernel_size=5, stride=2),
            activation_fn(),
            nn.ConvTranspose2d(c, c, kernel_size=6, stride=2),
            activation_fn(),
            nn.ConvTranspose2d(c, out_channels, kernel_size=6, stride=2),
        )

    def forward(self, features: th.Tensor) -> th.Tensor:
        lead = features.shape[:-1]
        hidden = self.linear(features.reshape(-1, self.feature_dim)).reshape(-1, 1024, 1, 1)
        return self.net(hidden).reshape(*lead, self.out_channels, IMAGE_SIZE, IMAGE_SIZE)


def dumb_mlp_encoder(obs_dim: int, activation_fn: type[nn.Module] = nn.ReLU) -> nn.Module:
    """``(..., obs_dim) -> (..., DUMBNET_UNITS)``: one dense layer and the activation."""
    return nn.Sequential(*create_mlp(obs_dim, -1, [DUMBNET_UNITS], activation_fn))


def dumb_mlp_decoder(feature_dim: int, obs_dim: int, activation_fn: type[nn.Module] = nn.ReLU) -> nn.Module:
    """``(..., feature_dim) -> (..., obs_dim)``: one hidden layer of ``DUMBNET_UNITS`` units."""
    return nn.Sequential(*create_mlp(feature_dim, obs_dim, [DUMBNET_UNITS], activation_fn))
