"""The fast conv paths (channels-last activations, the decoder's first transposed conv as a matrix product)
against the plain NCHW reference modules: same parameters and state_dict, same outputs and gradients to
float32 rounding (issue 15)."""

from __future__ import annotations

import numpy as np
import pytest
import torch as th
from gymnasium import spaces

from sb3_mb.common.conv import CHANNELS_LAST_MIN_BATCH, ConvDecoder, ConvEncoder
from sb3_mb.planet import CnnPolicy
from sb3_mb.worldmodels.policies import WorldModelsPolicy

FEATURES = 230
LEAD = (4, CHANNELS_LAST_MIN_BATCH // 4)  # (batch, seq_len): enough frames for the channels-last path


def _close(actual: th.Tensor, expected: th.Tensor) -> None:
    scale = expected.abs().max().item()
    th.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-5 * scale)


def _pair(make, **fast):
    th.manual_seed(0)
    reference = make(**{name: False for name in fast})
    candidate = make(**fast)
    candidate.load_state_dict(reference.state_dict())
    return reference, candidate


def _outputs_and_grads(module: th.nn.Module, inputs: th.Tensor, target: th.Tensor):
    inputs = inputs.clone().requires_grad_()
    output = module(inputs)
    loss = (output - target).square().sum()
    grads = th.autograd.grad(loss, [inputs, *module.parameters()])
    return output.detach(), grads


@pytest.mark.parametrize("fast", [{"channels_last": True}])
def test_encoder_fast_matches_reference(fast):
    reference, candidate = _pair(lambda **kw: ConvEncoder(3, 32, **kw), **fast)
    g = th.Generator().manual_seed(1)
    images = th.rand(*LEAD, 3, 64, 64, generator=g) - 0.5
    target = th.randn(*LEAD, 1024, generator=g)
    expected, expected_grads = _outputs_and_grads(reference, images, target)
    actual, actual_grads = _outputs_and_grads(candidate, images, target)
    assert actual.shape == (*LEAD, 1024)
    _close(actual, expected)
    for a, e in zip(actual_grads, expected_grads, strict=True):
        _close(a, e)


@pytest.mark.parametrize(
    "fast",
    [
        {"channels_last": True, "dense_first_layer": True},
        {"channels_last": True, "dense_first_layer": False},
        {"channels_last": False, "dense_first_layer": True},
    ],
)
@pytest.mark.parametrize("out_channels", [3, 1])
def test_decoder_fast_matches_reference(fast, out_channels):
    reference, candidate = _pair(lambda **kw: ConvDecoder(FEATURES, out_channels, 32, **kw), **fast)
    g = th.Generator().manual_seed(2)
    features = th.randn(*LEAD, FEATURES, generator=g)
    target = th.rand(*LEAD, out_channels, 64, 64, generator=g) - 0.5
    expected, expected_grads = _outputs_and_grads(reference, features, target)
    actual, actual_grads = _outputs_and_grads(candidate, features, target)
    assert actual.shape == (*LEAD, out_channels, 64, 64)
    assert actual.is_contiguous()
    _close(actual, expected)
    for a, e in zip(actual_grads, expected_grads, strict=True):
        _close(a, e)


def test_fast_paths_keep_the_state_dict():
    """Saved models load either way: the switches change no parameter's name or shape."""
    for make in (lambda **kw: ConvEncoder(3, 32, **kw), lambda **kw: ConvDecoder(FEATURES, 3, 32, **kw)):
        fast, plain = make(), make(**{"channels_last": False})
        assert fast.channels_last and not plain.channels_last
        shapes = {name: tuple(p.shape) for name, p in fast.state_dict().items()}
        assert shapes == {name: tuple(p.shape) for name, p in plain.state_dict().items()}
        for p in fast.parameters():
            assert p.is_contiguous()  # the parameters stay NCHW; only activations are channels-last
    assert ConvDecoder(FEATURES).dense_first_layer


def test_fast_paths_are_deterministic():
    th.manual_seed(0)
    decoder, encoder = ConvDecoder(FEATURES), ConvEncoder()
    features, images = th.randn(4, FEATURES), th.rand(4, 3, 64, 64)
    assert th.equal(decoder(features), decoder(features))
    assert th.equal(encoder(images), encoder(images))


def test_small_batches_take_the_reference_layout():
    """Below ``CHANNELS_LAST_MIN_BATCH`` frames (acting: one or a few frames) channels-last was slower, so the
    encoder runs the plain NCHW path there: bit-identical to the reference."""
    reference, candidate = _pair(lambda **kw: ConvEncoder(3, 32, **kw), channels_last=True)
    images = th.rand(CHANNELS_LAST_MIN_BATCH - 1, 3, 64, 64, generator=th.Generator().manual_seed(3))
    with th.no_grad():
        assert th.equal(candidate(images), reference(images))


@pytest.mark.parametrize("fast_conv", [True, False])
def test_policies_pass_fast_conv_to_their_convs_and_save_it(fast_conv):
    """PlaNet's and World Models' ``fast_conv`` policy argument reaches the conv encoder and decoder (False:
    the reference path) and is one of the constructor parameters a save stores."""
    obs_space = spaces.Box(0, 255, (3, 64, 64), np.uint8)
    act_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
    planet = CnnPolicy(obs_space, act_space, lambda _: 1e-3, cnn_depth=4, fast_conv=fast_conv)
    world_models = WorldModelsPolicy(
        obs_space, act_space, lambda _: 1e-3, use_conv=True, cnn_depth=4, fast_conv=fast_conv
    )
    for policy, encoder, decoder in (
        (planet, planet.encoder, planet.decoder),
        (world_models, world_models.vae.encoder, world_models.vae.decoder),
    ):
        assert encoder.channels_last is fast_conv
        assert decoder.channels_last is fast_conv and decoder.dense_first_layer is fast_conv
        assert policy._get_constructor_parameters()["fast_conv"] is fast_conv
