"""PlaNet / World Models 64x64 convolutional encoder and decoder, and image pre/post-processing.

Architecture: the VAE networks of World Models (Ha & Schmidhuber 2018, arXiv:1803.10122, App. A.1), which
PlaNet uses too (Hafner et al. 2019, arXiv:1811.04551, App. A):

- encoder: 4 convs, kernel 4, stride 2, channels ``depth * (1, 2, 4, 8)`` (32 -> 64 -> 128 -> 256),
  64x64 -> 31 -> 14 -> 6 -> 2, flattened to ``32 * depth`` (1024) features;
- decoder: linear ``feature_dim -> 32 * depth`` (no activation), viewed as ``(32 * depth, 1, 1)``, then
  transposed convs ``4*depth`` k5, ``2*depth`` k5, ``depth`` k6, ``out_channels`` k6, all stride 2,
  1 -> 5 -> 13 -> 30 -> 64; the last has no activation (the decoder returns means).

Images are channel-first floats ``(..., C, 64, 64)``; any leading dims (e.g. ``(batch, seq_len)``) are
flattened for the convs and restored.

Speed (issue 15): with ``channels_last=True`` (default) the convs run on channels-last (NHWC) activations for
batches of at least ``CHANNELS_LAST_MIN_BATCH`` (64) frames, and with ``dense_first_layer=True`` (default) the
decoder's first transposed conv, whose input is 1x1, runs as one matrix product
``(N, 32 * depth) @ (32 * depth, 4 * depth * 25)`` plus bias. Both are the same math as the plain modules
(same parameters and ``state_dict``), differing only in float32 rounding; both off give the reference path.
Measured on one CPU thread (AVX-512, torch 2.13, oneDNN), forward + backward of encoder and decoder on 500
frames: 3018 ms plain, 2274 ms with the dense first layer (oneDNN's transposed conv from a 1x1 input reached
~11 GFLOP/s, the matrix product ~130), 2032 ms with channels-last as well. The encoder alone on channels-last
lost below 64 frames (1 frame, forward: 3.1 vs 1.5 ms; 32: 14.1 vs 11.9 ms) and won from 64 (forward +
backward 87 vs 101 ms), hence the threshold. Not measured on GPU.
"""

from __future__ import annotations

import numpy as np
import torch as th
from torch import nn

IMAGE_SIZE = 64
CHANNELS_LAST_MIN_BATCH = 64  # frames; below it channels-last was slower on CPU (see the module docstring)


def _flatten_leading(x: th.Tensor, trailing: int) -> tuple[th.Tensor, tuple[int, ...]]:
    lead = tuple(x.shape[: x.dim() - trailing])
    return x.reshape(-1, *x.shape[x.dim() - trailing :]), lead


class ConvEncoder(nn.Module):
    """64x64 conv encoder: ``(..., in_channels, 64, 64) -> (..., 32 * depth)``.

    :param in_channels: image channels (1 greyscale Atari, 3 RGB, or k stacked frames times either).
    :param depth: channel multiplier; 32 gives 32 -> 64 -> 128 -> 256 and 1024 features (PlaNet).
    :param activation_fn: activation class after every conv (PlaNet: ReLU).
    :param channels_last: run the convs on channels-last (NHWC) activations for batches of at least
        ``CHANNELS_LAST_MIN_BATCH`` frames (faster with oneDNN on CPU; same math, float32 rounding may
        differ). False: the plain NCHW reference path.
    """

    def __init__(
        self,
        in_channels: int = 3,
        depth: int = 32,
        activation_fn: type[nn.Module] = nn.ReLU,
        channels_last: bool = True,
    ):
        super().__init__()
        self.in_channels = in_channels
        self.channels_last = channels_last
        self.depth = depth
        self.features_dim = 32 * depth
        layers: list[nn.Module] = []
        channels = in_channels
        for multiplier in (1, 2, 4, 8):
            layers += [nn.Conv2d(channels, multiplier * depth, kernel_size=4, stride=2), activation_fn()]
            channels = multiplier * depth
        self.net = nn.Sequential(*layers, nn.Flatten())

    def forward(self, images: th.Tensor) -> th.Tensor:
        """Encode images.

        :param images: float ``(..., in_channels, 64, 64)`` (e.g. from :func:`preprocess_observation`).
        :return: ``(..., 32 * depth)``.
        :raises ValueError: if the trailing dims are not ``(in_channels, 64, 64)``.
        """
        expected = (self.in_channels, IMAGE_SIZE, IMAGE_SIZE)
        if images.dim() < 3 or tuple(images.shape[-3:]) != expected:
            raise ValueError(f"ConvEncoder expects (..., {expected}), got {tuple(images.shape)}")
        flat, lead = _flatten_leading(images, 3)
        if self.channels_last and flat.shape[0] >= CHANNELS_LAST_MIN_BATCH:
            flat = flat.contiguous(memory_format=th.channels_last)
        return self.net(flat).reshape(*lead, self.features_dim)


class ConvDecoder(nn.Module):
    """64x64 transposed-conv decoder: ``(..., feature_dim) -> (..., out_channels, 64, 64)`` means.

    :param feature_dim: input features (PlaNet: belief 200 + state 30 = 230; World Models: z).
    :param out_channels: image channels, following the data (1 greyscale, 3 RGB, stacked frames).
    :param depth: channel multiplier (PlaNet: 32, so a 1024-D bottleneck).
    :param activation_fn: activation class after every transposed conv but the last (PlaNet: ReLU).
    :param channels_last: run the transposed convs on channels-last (NHWC) activations for batches of at least
        ``CHANNELS_LAST_MIN_BATCH`` frames (faster with oneDNN on CPU; same math, float32 rounding may
        differ). The output is contiguous NCHW either way.
    :param dense_first_layer: compute the first transposed conv (1x1 input) as a matrix product with its
        weight viewed as ``(32 * depth, 4 * depth * 5 * 5)``, plus bias (same math and parameters; ~10 x
        faster than oneDNN's transposed conv on CPU). False, with ``channels_last=False``: the reference path.
    """

    def __init__(
        self,
        feature_dim: int,
        out_channels: int = 3,
        depth: int = 32,
        activation_fn: type[nn.Module] = nn.ReLU,
        channels_last: bool = True,
        dense_first_layer: bool = True,
    ):
        super().__init__()
        self.feature_dim = feature_dim
        self.channels_last = channels_last
        self.dense_first_layer = dense_first_layer
        self.out_channels = out_channels
        self.depth = depth
        self.linear = nn.Linear(feature_dim, 32 * depth)
        self.net = nn.Sequential(
            nn.ConvTranspose2d(32 * depth, 4 * depth, kernel_size=5, stride=2),
            activation_fn(),
            nn.ConvTranspose2d(4 * depth, 2 * depth, kernel_size=5, stride=2),
            activation_fn(),
            nn.ConvTranspose2d(2 * depth, depth, kernel_size=6, stride=2),
            activation_fn(),
            nn.ConvTranspose2d(depth, out_channels, kernel_size=6, stride=2),
        )

    def forward(self, features: th.Tensor) -> th.Tensor:
        """Decode features to image means.

        :param features: ``(..., feature_dim)``.
        :return: ``(..., out_channels, 64, 64)``, in the preprocessed scale (no output activation).
        :raises ValueError: if the last dim is not ``feature_dim``.
        """
        if features.dim() < 1 or features.shape[-1] != self.feature_dim:
            raise ValueError(f"ConvDecoder expects (..., {self.feature_dim}), got {tuple(features.shape)}")
        flat, lead = _flatten_leading(features, 1)
        hidden = self.linear(flat)
        if self.dense_first_layer:
            # A transposed conv of a 1x1 input: out[n, o, i, j] = b[o] + sum_c x[n, c] w[c, o, i, j].
            first = self.net[0]
            in_channels, channels, height, width = first.weight.shape
            hidden = th.addmm(
                first.bias.repeat_interleave(height * width),
                hidden,
                first.weight.reshape(in_channels, channels * height * width),
            ).reshape(-1, channels, height, width)
            layers = self.net[1:]
        else:
            hidden = hidden.reshape(-1, 32 * self.depth, 1, 1)
            layers = self.net
        if self.channels_last and hidden.shape[0] >= CHANNELS_LAST_MIN_BATCH:
            hidden = hidden.contiguous(memory_format=th.channels_last)
        images = layers(hidden).contiguous()
        return images.reshape(*lead, self.out_channels, IMAGE_SIZE, IMAGE_SIZE)


def preprocess_observation(
    observation: th.Tensor | np.ndarray,
    bit_depth: int = 5,
    noise: bool = True,
    channels_last: bool = True,
    generator: th.Generator | None = None,
    device: th.device | str | None = None,
) -> th.Tensor:
    """Quantise uint8 images to ``bit_depth`` bits, dequantise with uniform noise, centre on 0.

    ``x -> floor(x / 2^(8 - bits)) / 2^bits + U[0, 2^-bits) - 0.5``: with ``bit_depth=5`` there are 32
    levels ``k / 32 - 0.5`` and noise of width 1/32, so values lie in ``[-0.5, 0.5)`` (PlaNet's 5-bit
    images, Hafner et al. 2019, App. A).

    :param observation: uint8 images ``(..., H, W, C)`` if ``channels_last`` else ``(..., C, H, W)``
        (SB3's ``VecTransposeImage`` gives channel-first).
    :param bit_depth: bits kept, 1..8.
    :param noise: add the uniform dequantisation noise (False: the bare quantisation levels).
    :param channels_last: layout of the input; the output is always channel-first.
    :param generator: ``torch.Generator`` for the noise (None: global RNG).
    :param device: device of the output for numpy input (tensors keep theirs unless given).
    :return: float32 ``(..., C, H, W)``.
    :raises ValueError: for a ``bit_depth`` outside 1..8 or an input with fewer than 3 dims.
    """
    if not 1 <= bit_depth <= 8:
        raise ValueError(f"bit_depth must be in 1..8, got {bit_depth}")
    x = th.as_tensor(observation, device=device)
    if x.dim() < 3:
        raise ValueError(f"Expected images with at least 3 dims, got shape {tuple(x.shape)}")
    if channels_last:
        x = x.movedim(-1, -3)
    bins = 2**bit_depth
    x = th.floor(x.to(th.float32) / 2 ** (8 - bit_depth)) / bins
    if noise:
        x = x + th.rand(x.shape, generator=generator, device=x.device) / bins
    return x - 0.5


def postprocess_observation(image: th.Tensor, bit_depth: int = 5, channels_last: bool = True) -> np.ndarray:
    """Inverse of :func:`preprocess_observation`, to uint8 for videos.

    ``x -> clip(floor(2^bits (x + 0.5)) * 2^(8 - bits), 0, 255)``, so a quantised image comes back
    exactly (``floor(x / 8) * 8`` for 5 bits).

    :param image: float ``(..., C, H, W)`` in the preprocessed scale (e.g. decoder means).
    :param bit_depth: bits of the quantisation, 1..8.
    :param channels_last: return ``(..., H, W, C)`` (True, for video writers) or ``(..., C, H, W)``.
    :return: uint8 numpy array.
    :raises ValueError: for a ``bit_depth`` outside 1..8.
    """
    if not 1 <= bit_depth <= 8:
        raise ValueError(f"bit_depth must be in 1..8, got {bit_depth}")
    bins = 2**bit_depth
    x = th.as_tensor(image).detach().to("cpu", th.float32)
    x = th.clamp(th.floor(bins * (x + 0.5)) * (256 // bins), 0, 255).to(th.uint8)
    if channels_last:
        x = x.movedim(-3, -1)
    return x.numpy()
