"""64x64 conv encoder / decoder shapes and learning; image quantisation pre/post-processing."""

import numpy as np
import pytest
import torch as th
from torch import nn

from sb3_mb.common.conv import ConvDecoder, ConvEncoder, postprocess_observation, preprocess_observation


@pytest.mark.parametrize("channels", [1, 3, 12])
def test_shapes_and_leading_dims(channels):
    encoder, decoder = ConvEncoder(channels), ConvDecoder(230, out_channels=channels)
    assert encoder.features_dim == 1024
    x = th.randn(2, 3, channels, 64, 64)
    features = encoder(x)
    assert features.shape == (2, 3, 1024)
    th.testing.assert_close(features[1, 2], encoder(x[1, 2]))  # no mixing across leading dims
    assert encoder(x[0, 0]).shape == (1024,)
    out = decoder(th.randn(2, 3, 230))
    assert out.shape == (2, 3, channels, 64, 64)
    assert decoder(th.randn(230)).shape == (channels, 64, 64)


def test_depth_and_activation_options():
    encoder = ConvEncoder(3, depth=8, activation_fn=nn.ELU)
    assert encoder.features_dim == 256 and isinstance(encoder.net[1], nn.ELU)
    assert [m.out_channels for m in encoder.net if isinstance(m, nn.Conv2d)] == [8, 16, 32, 64]
    decoder = ConvDecoder(10, out_channels=1, depth=8, activation_fn=nn.ELU)
    assert [m.out_channels for m in decoder.net if isinstance(m, nn.ConvTranspose2d)] == [32, 16, 8, 1]
    assert decoder(th.randn(4, 10)).shape == (4, 1, 64, 64)
    # PlaNet sizes: 32 -> 64 -> 128 -> 256 convs, 128 -> 64 -> 32 -> C deconvs
    paper = ConvEncoder(3)
    assert [m.out_channels for m in paper.net if isinstance(m, nn.Conv2d)] == [32, 64, 128, 256]
    assert [m.kernel_size for m in ConvDecoder(230).net if isinstance(m, nn.ConvTranspose2d)] == [
        (5, 5),
        (5, 5),
        (6, 6),
        (6, 6),
    ]


def test_bad_shapes_raise():
    with pytest.raises(ValueError):
        ConvEncoder(3)(th.randn(2, 1, 64, 64))
    with pytest.raises(ValueError):
        ConvEncoder(3)(th.randn(2, 3, 32, 32))
    with pytest.raises(ValueError):
        ConvDecoder(230)(th.randn(2, 200))


def test_quantisation_levels_and_noise_bounds():
    values = np.arange(256, dtype=np.uint8).reshape(1, 16, 16, 1)  # every uint8 value
    bare = preprocess_observation(values, noise=False)
    assert bare.shape == (1, 1, 16, 16) and bare.dtype == th.float32
    levels = th.unique(bare)
    assert len(levels) == 32
    th.testing.assert_close(levels, th.arange(32) / 32 - 0.5)
    big = np.random.default_rng(0).integers(0, 256, (50, 64, 64, 3), dtype=np.uint8)
    noisy = preprocess_observation(big, generator=th.Generator().manual_seed(0))
    base = preprocess_observation(big, noise=False)
    assert noisy.shape == (50, 3, 64, 64)
    diff = noisy - base
    assert diff.min() >= 0 and diff.max() <= 1 / 32 and diff.max() > 0.99 / 32
    assert noisy.min() >= -0.5 and noisy.max() <= 0.5
    assert abs(diff.mean().item() - 1 / 64) < 1e-4  # uniform noise of width 1/32


def test_channel_layouts_and_generator():
    img = np.random.default_rng(1).integers(0, 256, (2, 5, 64, 64, 3), dtype=np.uint8)
    last = preprocess_observation(img, noise=False)
    first = preprocess_observation(np.moveaxis(img, -1, -3), noise=False, channels_last=False)
    assert last.shape == (2, 5, 3, 64, 64)
    th.testing.assert_close(last, first)
    a = preprocess_observation(th.as_tensor(img), generator=th.Generator().manual_seed(3))
    b = preprocess_observation(img, generator=th.Generator().manual_seed(3))
    th.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError):
        preprocess_observation(img, bit_depth=9)


def test_postprocess_inverts_preprocess():
    img = np.random.default_rng(2).integers(0, 256, (20, 64, 64, 3), dtype=np.uint8)
    quantised = (img // 8) * 8
    np.testing.assert_array_equal(
        postprocess_observation(preprocess_observation(img, noise=False)), quantised
    )
    back = postprocess_observation(preprocess_observation(img, generator=th.Generator().manual_seed(4)))
    assert back.dtype == np.uint8 and back.shape == img.shape
    # with noise: exact up to float rounding at the very top of a bin (one level, vanishingly rare)
    error = np.abs(back.astype(int) - quantised)
    assert error.max() <= 8 and (error > 0).mean() < 1e-4
    chw = postprocess_observation(preprocess_observation(img, noise=False), channels_last=False)
    assert chw.shape == (20, 3, 64, 64)


def test_autoencoder_reduces_reconstruction_loss():
    th.manual_seed(0)
    rng = np.random.default_rng(5)
    # simple images: one bright square per image on a dark background, greyscale
    imgs = np.zeros((8, 64, 64, 1), np.uint8)
    for i in range(8):
        r, c = rng.integers(0, 48, 2)
        imgs[i, r : r + 16, c : c + 16] = 255
    x = preprocess_observation(imgs, noise=False)
    encoder = ConvEncoder(1, depth=8)
    decoder = ConvDecoder(encoder.features_dim, out_channels=1, depth=8)
    optimizer = th.optim.Adam([*encoder.parameters(), *decoder.parameters()], lr=1e-3)
    losses = []
    for _ in range(60):
        loss = ((decoder(encoder(x)) - x) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
