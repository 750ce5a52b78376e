"""Milliseconds per PlaNet model update at the paper's sizes, beside a plain conv/GRU forward-backward of the
same size (issue 15).

The real update is :class:`~sb3_mb.planet.planet.PlaNet`'s (Hafner et al. 2019, arXiv:1811.04551, Sec. 3 and
App. A): preprocessing of ``batch x length`` 64x64 RGB frames (5 bits, dequantisation noise), the conv
encoder, the RSSM's posteriors over the sequences (``RSSM.observe``: prior and posterior at every step,
sampled), the conv decoder and the reward head on every ``[s_t, h_t]``, the KL with free nats, backward,
the global-norm clip and Adam: ``PlaNet._compute_losses`` plus the steps of ``PlaNet.train``, on one batch
made here (no replay sampling).

The stand-in does the same conv and dense work without the RSSM's sampling, heads and KL: the same conv
encoder (1024 features), an ``nn.GRU`` of the belief's width (200) over the embeddings, one linear layer to
the feature size (230), the same conv decoder and 3 x 300 reward MLP, squared-error losses, backward, the
clip and Adam.

Both use the shared conv code's fast paths (``sb3_mb/common/conv.py``: channels-last activations, the
decoder's first transposed conv as a matrix product); with ``--conv both`` (default) each also runs with the
reference conv path (``channels_last=False``, ``dense_first_layer=False``: ``*_reference_conv``), so the
speedup of the fast paths is measured in the same process.

All run in one process, interleaved, after one untimed first update each (its time is reported). Peak RSS
comes from one child process per model (``--only``, two updates), its own peak (``measure.peak_rss_mb``,
``VmHWM`` on Linux). ``peak_rss_mb_both`` is the whole process's.

Usage::

    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 python benchmarks/planet_update_speed.py [--batch 50] [--length 50] \
        [--repeats 3] [--device cpu] [--conv both|fast]

Writes ``benchmarks/results/planet_update_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys

import gymnasium as gym
import numpy as np
import torch as th
from measure import peak_rss_mb, timed  # benchmarks/ is the script's directory
from stable_baselines3.common.torch_layers import create_mlp
from torch import nn
from torch.nn import functional as F

from sb3_mb import PlaNet
from sb3_mb.common.buffers import SequenceSamples
from sb3_mb.common.conv import ConvDecoder, ConvEncoder

CHANNELS, ACTION_DIM = 3, 6
BELIEF, STATE, REWARD_HIDDEN = 200, 30, 300


class ImageEnv(gym.Env):
    """Only the spaces matter: 64x64 RGB frames and a 6-D action (cheetah-run's)."""

    observation_space = gym.spaces.Box(0, 255, (CHANNELS, 64, 64), np.uint8)
    action_space = gym.spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


class ConvGRUStandIn(nn.Module):
    """Encoder -> GRU (belief width) -> linear to ``[s, h]`` width -> decoder and reward MLP."""

    def __init__(self):
        super().__init__()
        self.encoder = ConvEncoder(CHANNELS, 32)
        self.gru = nn.GRU(self.encoder.features_dim, BELIEF, batch_first=True)
        self.to_features = nn.Linear(BELIEF, BELIEF + STATE)
        self.decoder = ConvDecoder(BELIEF + STATE, CHANNELS, 32)
        self.reward = nn.Sequential(*create_mlp(BELIEF + STATE, 1, [REWARD_HIDDEN] * 3))  # 3 x 300, ReLU

    def loss(self, images: th.Tensor, rewards: th.Tensor) -> th.Tensor:
        beliefs, _ = self.gru(self.encoder(images))
        features = self.to_features(beliefs)
        reconstruction = F.mse_loss(self.decoder(features), images, reduction="none").sum(dim=(-3, -2, -1))
        return reconstruction.mean() + F.mse_loss(self.reward(features)[..., 0], rewards)


def make_samples(batch: int, length: int, device: th.device, seed: int = 0) -> SequenceSamples:
    g = th.Generator().manual_seed(seed)
    observations = th.randint(0, 256, (batch, length, CHANNELS, 64, 64), generator=g, dtype=th.uint8)
    actions = th.rand(batch, length, ACTION_DIM, generator=g) * 2 - 1
    rewards = th.rand(batch, length, generator=g)
    is_first = th.zeros(batch, length, dtype=th.bool)
    is_first[:, 0] = True
    no = th.zeros(batch, length, dtype=th.bool)
    return SequenceSamples(*(x.to(device) for x in (observations, actions, rewards, is_first, no, no)))


def use_reference_conv(module: nn.Module) -> None:
    """Switch every conv encoder / decoder inside ``module`` to the plain NCHW reference path."""
    for part in module.modules():
        if isinstance(part, (ConvEncoder, ConvDecoder)):
            part.channels_last = False
        if isinstance(part, ConvDecoder):
            part.dense_first_layer = False


def build(name: str, args: argparse.Namespace, device: th.device):
    """A function running one update of model ``name`` ("planet" or "standin", optionally with the suffix
    "_reference_conv") on a fixed batch."""
    reference_conv = name.endswith("_reference_conv")
    name = name.removesuffix("_reference_conv")
    samples = make_samples(args.batch, args.length, device)
    max_grad_norm = 1000.0
    if name == "planet":
        model = PlaNet(
            "CnnPolicy", ImageEnv(), buffer_size=1, seed=0, device=device, max_grad_norm=max_grad_norm
        )
        policy = model.policy
        if reference_conv:
            use_reference_conv(policy)
        policy.set_training_mode(True)
        policy.set_reward_scale(np.ones(1, np.float32))

        def update() -> None:
            loss = model._compute_losses(samples)["loss"]
            policy.optimizer.zero_grad()
            loss.backward()
            th.nn.utils.clip_grad_norm_(policy.parameters(), max_grad_norm)
            policy.optimizer.step()

        return update
    th.manual_seed(0)
    standin = ConvGRUStandIn().to(device)
    if reference_conv:
        use_reference_conv(standin)
    optimizer = th.optim.Adam(standin.parameters(), lr=1e-3, eps=1e-4)
    images = samples.observations.float() / 255.0 - 0.5

    def standin_update() -> None:
        loss = standin.loss(images, samples.rewards)
        optimizer.zero_grad()
        loss.backward()
        th.nn.utils.clip_grad_norm_(standin.parameters(), max_grad_norm)
        optimizer.step()

    return standin_update


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch", type=int, default=50, help="sequences per update (paper: 50)")
    parser.add_argument("--length", type=int, default=50, help="steps per sequence (paper: 50)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--conv", choices=("both", "fast"), default="both", help="also time the reference conv path (both)"
    )
    parser.add_argument("--only", choices=("planet", "standin"), default=None, help="child: peak RSS of one")
    parser.add_argument(
        "--output", default=os.path.join(os.path.dirname(__file__), "results", "planet_update_speed.json")
    )
    args = parser.parse_args()
    if "OMP_NUM_THREADS" in os.environ:
        th.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    device = th.device(args.device)

    if args.only is not None:  # a child: two updates of one model, then its own peak RSS
        update = build(args.only, args, device)
        update()
        update()
        print(json.dumps({"self": peak_rss_mb()["self"]}))
        return

    peak = {}  # the children first, while this process is small
    for name in ("planet", "standin"):
        command = [sys.executable, __file__, "--only", name, "--batch", str(args.batch)]
        command += ["--length", str(args.length), "--device", args.device]
        child = subprocess.run(command, check=True, capture_output=True, text=True)
        peak[name] = json.loads(child.stdout.strip().splitlines()[-1])["self"]

    names = ["planet", "standin"]
    if args.conv == "both":
        names += ["planet_reference_conv", "standin_reference_conv"]
    updates = {name: build(name, args, device) for name in names}
    first_call = {name: timed(update, device)[0] for name, update in updates.items()}
    times = {name: [] for name in updates}
    for _ in range(args.repeats):
        for name, update in updates.items():
            times[name].append(timed(update, device)[0])
    ms = {name: 1000 * float(np.median(values)) for name, values in times.items()}

    results = {
        "device": str(device),
        "threads": th.get_num_threads(),
        "torch": th.__version__,
        "machine": platform.processor() or platform.machine(),
        "batch": args.batch,
        "length": args.length,
        "repeats": args.repeats,
        "ms_per_update": ms,
        "ms_per_update_all": {name: [1000 * t for t in values] for name, values in times.items()},
        "first_call_ms": {name: 1000 * t for name, t in first_call.items()},
        "ratio_planet_over_standin": ms["planet"] / ms["standin"],
        "conv": args.conv,
        "peak_rss_mb": peak,
        "peak_rss_mb_both": peak_rss_mb(),
    }
    if args.conv == "both":
        reference = {name: ms[f"{name}_reference_conv"] for name in ("planet", "standin")}
        results["ratio_planet_over_standin_reference_conv"] = reference["planet"] / reference["standin"]
        results["speedup_fast_conv"] = {name: reference[name] / ms[name] for name in reference}
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as file:
        json.dump(results, file, indent=2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
