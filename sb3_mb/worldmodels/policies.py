"""World Models' policy: V (VAE), M (MDN-RNN) and C (controller), and the stateful ``predict``.

Ha & Schmidhuber 2018, "World Models", arXiv:1803.10122, Sec. 2 and Fig. 8 (the agent's loop, as the original
``model.py``): at every step

1. ``z_t`` from V's posterior of ``o_t`` (its mean with ``deterministic=True``, a sample otherwise: the
   original samples ``z`` when it acts);
2. ``a_t = C([z_t, h_t])``;
3. ``(h_{t+1}, c_{t+1}) = LSTM([z_t, a_t], (h_t, c_t))``.

``predict`` carries the LSTM state as a :class:`WorldModelsState` (numpy arrays, env dimension first;
sb3-contrib RecurrentPPO's contract, so ``evaluate_policy`` and ``EvalCallback`` pass it along unchanged);
``episode_start[i]`` zeroes env ``i``'s row. The previous action is not a field of its own: it enters the LSTM
state in step 3 of the step it is taken (the original's order), so ``(h, c)`` already holds it.

C (Sec. 2.3): ``a = W [z, h] + b`` (CarRacing: (32 + 256) * 3 + 3 = 867 parameters), or with hidden tanh
layers (``controller_hidden_sizes``; the paper's hidden-layer variant has 40 units). Its output becomes an
action: ``Box``: ``tanh`` of it mapped linearly onto the bounds (the original maps CarRacing's gas from
``[-1, 1]`` to ``[0, 1]`` this way, and clips the brake instead: wrap CarRacing in
:class:`~sb3_mb.worldmodels.carracing.CarRacingActions` for its map); ``Discrete(n)``: the argmax of ``n``
outputs. C is trained by CMA-ES (:mod:`sb3_mb.worldmodels.cmaes`), never by gradients.

Every network size is an argument of :class:`WorldModelsPolicy` (the algorithm's ``policy_kwargs``).
"""

from __future__ import annotations

import inspect
from typing import Any, NamedTuple

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.type_aliases import Schedule
from torch import nn

from sb3_mb.common.checks import describe_non_finite
from sb3_mb.common.states import StateSpec
from sb3_mb.worldmodels.dream import model_action
from sb3_mb.worldmodels.mdn_rnn import MDNRNN
from sb3_mb.worldmodels.vae import ConvVAE, MlpVAE

__all__ = ["CnnPolicy", "Controller", "MlpPolicy", "WorldModelsPolicy", "WorldModelsState", "check_spaces"]


class WorldModelsState(NamedTuple):
    """What :meth:`WorldModelsPolicy.predict` carries between steps: float32 arrays, env dimension first.

    :ivar hidden: the LSTM's hidden state ``h_t`` (C's input beside ``z_t``), ``(n_envs, hidden_size)``.
    :ivar cell: the LSTM's cell state ``c_t``, ``(n_envs, hidden_size)``.
    """

    hidden: np.ndarray
    cell: np.ndarray


def check_action_space(action_space: spaces.Space) -> None:
    """Raise a clear error unless ``action_space`` is a bounded ``Box`` or a ``Discrete``.

    :raises ValueError: naming the space and what is expected.
    """
    if not isinstance(action_space, spaces.Box | spaces.Discrete):
        raise ValueError(
            "World Models supports Box (bounded) or Discrete action spaces, got the action space "
            f"{action_space}"
        )
    if isinstance(action_space, spaces.Box) and not (
        np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))
    ):
        raise ValueError(
            f"World Models needs a bounded Box action space (C's tanh is mapped onto it), got {action_space}"
        )


def check_spaces(observation_space: spaces.Space, action_space: spaces.Space, use_conv: bool) -> None:
    """Raise a clear error for spaces World Models does not support.

    Supported: bounded ``Box`` or ``Discrete`` actions; uint8 image observations ``(C, H, W)`` (channel-first,
    as after SB3's ``VecTransposeImage``; resized to 64x64) for ``CnnPolicy``, flat ``Box`` vectors for
    ``MlpPolicy``.

    :raises ValueError: naming the space and what is expected.
    """
    check_action_space(action_space)
    if not isinstance(observation_space, spaces.Box):
        raise ValueError(
            "World Models supports Box observation spaces (images or vectors), got the observation space "
            f"{observation_space}"
        )
    if use_conv:
        if not (
            is_image_space(observation_space, check_channels=False) and len(observation_space.shape) == 3
        ):
            raise ValueError(
                "CnnPolicy needs a uint8 image observation space (C, H, W) (channel-first, as after "
                f"VecTransposeImage), got {observation_space}"
            )
    elif len(observation_space.shape) != 1:
        raise ValueError(
            f"MlpPolicy needs a 1-D Box observation space; use CnnPolicy for images. Got {observation_space}"
        )


class Controller(nn.Module):
    """C: ``[z, h] -> outputs``, linear (the paper) or with tanh hidden layers (module docstring).

    :param feature_dim: ``z_dim + hidden_size``. :param n_outputs: ``action_dim`` (``Box``) or ``n``
        (``Discrete``). :param hidden_sizes: hidden layers (``()``: linear, the paper's 867-parameter C).
    """

    def __init__(self, feature_dim: int, n_outputs: int, hidden_sizes: tuple[int, ...] = ()):
        super().__init__()
        layers: list[nn.Module] = []
        size = feature_dim
        for hidden in hidden_sizes:
            layers += [nn.Linear(size, hidden), nn.Tanh()]
            size = hidden
        self.net = nn.Sequential(*layers, nn.Linear(size, n_outputs))
        # CMA-ES starts from zeros (the original's x0); the module starts there too.
        for parameter in self.parameters():
            nn.init.zeros_(parameter)

    @property
    def n_parameters(self) -> int:
        """Number of weights CMA-ES searches over."""
        return sum(p.numel() for p in self.parameters())

    def forward(self, features: th.Tensor) -> th.Tensor:
        """``(..., feature_dim) -> (..., n_outputs)`` raw outputs."""
        return self.net(features)

    def batched(self, vectors: th.Tensor, features: th.Tensor) -> th.Tensor:
        """The outputs of ``K`` controllers at once, controller ``k`` with the weights ``vectors[k]`` (in
        :meth:`get_vector`'s order) on ``features[k]``: ``vectors (K, n_parameters)``, ``features (K,
        feature_dim)`` -> ``(K, n_outputs)``, row ``k`` what :meth:`forward` gives after
        ``set_vector(vectors[k])`` (one batched matmul per layer; equal up to float32 rounding)."""
        linears = [m for m in self.net if isinstance(m, nn.Linear)]
        h, offset = features, 0
        for i, linear in enumerate(linears):
            n_out, n_in = linear.weight.shape
            weight = vectors[:, offset : offset + n_out * n_in].reshape(-1, n_out, n_in)
            bias = vectors[:, offset + n_out * n_in : offset + n_out * (n_in + 1)]
            offset += n_out * (n_in + 1)
            h = th.baddbmm(bias.unsqueeze(-1), weight, h.unsqueeze(-1)).squeeze(-1)
            if i < len(linears) - 1:
                h = th.tanh(h)
        return h

    def get_vector(self) -> np.ndarray:
        """All weights as one float64 vector ``(n_parameters,)`` (CMA-ES's search space)."""
        return nn.utils.parameters_to_vector(self.parameters()).detach().cpu().double().numpy()

    @th.no_grad()
    def set_vector(self, vector: np.ndarray) -> None:
        """Set all weights from a vector ``(n_parameters,)``.

        :raises ValueError: for a vector of another size.
        """
        vector = np.asarray(vector, dtype=np.float64).reshape(-1)
        if vector.size != self.n_parameters:
            raise ValueError(
                f"the controller has {self.n_parameters} parameters, got a vector of {vector.size}"
            )
        device = next(self.parameters()).device
        nn.utils.vector_to_parameters(
            th.as_tensor(vector, dtype=th.float32, device=device), self.parameters()
        )


class WorldModelsPolicy(BasePolicy):
    """V, M and C of World Models; the defaults are the paper's CarRacing sizes (App. A).

    :param observation_space: uint8 image ``(C, H, W)`` (``use_conv=True``) or ``Box`` vector.
    :param action_space: bounded ``Box`` or ``Discrete``.
    :param lr_schedule: M's learning rate (SB3's schedule; the algorithm sets V's rate).
    :param z_dim: latent size N_z (32). :param hidden_size: LSTM units (256).
    :param n_mixtures: Gaussians per latent dimension (5).
    :param predict_reward: M's reward head (needed for the dream). :param predict_done: M's done head.
    :param controller_hidden_sizes: C's hidden tanh layers (``()``: linear; the paper's variant: ``(40,)``).
    :param controller_input: what C reads: ``"zh"``, ``[z_t, h_t]`` (the paper's agent), or ``"z"``, ``z_t``
        alone (the paper's "V model only" ablation, 632 +- 251 on CarRacing, Sec. 3.4; M still runs).
    :param use_conv: the 64x64 conv VAE (``CnnPolicy``) or an MLP VAE (``MlpPolicy``).
    :param cnn_depth: conv channel multiplier (32: 32/64/128/256 channels).
    :param mlp_hidden_sizes: hidden layers of the MLP VAE (``(64, 64)``).
    :param kl_tolerance: the VAE's KL floor per latent dimension, nats (0.5, the original code).
    :param fast_conv: the conv VAE's fast convolutions (:class:`~sb3_mb.worldmodels.vae.ConvVAE`); False: the
        plain NCHW reference path.
    :param optimizer_class: for V and M (Adam). :param optimizer_kwargs: its extra arguments.
    :raises ValueError: see :func:`check_spaces`; for another ``controller_input``.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        z_dim: int = 32,
        hidden_size: int = 256,
        n_mixtures: int = 5,
        predict_reward: bool = True,
        predict_done: bool = True,
        controller_hidden_sizes: tuple[int, ...] = (),
        controller_input: str = "zh",
        use_conv: bool = False,
        cnn_depth: int = 32,
        mlp_hidden_sizes: tuple[int, ...] = (64, 64),
        kl_tolerance: float = 0.5,
        fast_conv: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
    ):
        check_spaces(observation_space, action_space, use_conv)
        if controller_input not in ("zh", "z"):
            raise ValueError(
                f"controller_input must be 'zh' ([z, h], the paper) or 'z' (V only), got {controller_input!r}"
            )
        super().__init__(
            observation_space,
            action_space,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
            normalize_images=False,
            squash_output=isinstance(action_space, spaces.Box),
        )
        self.discrete = isinstance(action_space, spaces.Discrete)
        self.action_dim = int(action_space.n) if self.discrete else int(np.prod(action_space.shape))
        self.z_dim, self.hidden_size, self.n_mixtures = z_dim, hidden_size, n_mixtures
        self.predict_reward, self.predict_done = predict_reward, predict_done
        self.controller_hidden_sizes = tuple(controller_hidden_sizes)
        self.controller_input = controller_input
        self.use_conv, self.cnn_depth = use_conv, cnn_depth
        self.mlp_hidden_sizes, self.kl_tolerance = tuple(mlp_hidden_sizes), kl_tolerance
        self.fast_conv = fast_conv

        if use_conv:
            self.vae: ConvVAE | MlpVAE = ConvVAE(
                observation_space.shape[0], z_dim, cnn_depth, kl_tolerance, fast_conv=fast_conv
            )
        else:
            self.vae = MlpVAE(observation_space.shape[0], z_dim, self.mlp_hidden_sizes, kl_tolerance)
        self.mdn_rnn = MDNRNN(z_dim, self.action_dim, hidden_size, n_mixtures, predict_reward, predict_done)
        feature_dim = z_dim + hidden_size if controller_input == "zh" else z_dim
        self.controller = Controller(feature_dim, self.action_dim, self.controller_hidden_sizes)
        self.state_spec = StateSpec(
            WorldModelsState, {"hidden": (hidden_size,), "cell": (hidden_size,)}, owner="WorldModels"
        )
        # M's optimizer is SB3's ``policy.optimizer`` (the learning-rate schedule updates it); V has its own.
        self.optimizer = self.optimizer_class(
            self.mdn_rnn.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs
        )
        self.vae_optimizer = self.optimizer_class(
            self.vae.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs
        )

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        del data["normalize_images"]
        settings = list(inspect.signature(WorldModelsPolicy.__init__).parameters)[4:]
        data.update({name: getattr(self, name) for name in settings}, lr_schedule=self._dummy_schedule)
        return data

    # ------------------------------------------------------------------------------------ acting
    def controller_action(self, features: th.Tensor) -> tuple[np.ndarray, th.Tensor]:
        """C's action from features ``[z, h]`` ``(batch, z_dim + hidden_size)`` (with ``controller_input="z"``
        C reads the first ``z_dim`` of them).

        :return: ``(env action, model action)``: ``(batch, *action_shape)`` within the ``Box`` bounds (or
            ``(batch,)`` int64 indices) and M's input form ``(batch, action_dim)`` (``[-1, 1]`` or one-hot).
        """
        return self.outputs_to_action(self.controller(self.controller_features(features)))

    def controller_features(self, features: th.Tensor) -> th.Tensor:
        """What C reads of ``[z, h]`` ``(..., z_dim + hidden_size)``: all of it, or ``z`` with
        ``controller_input="z"``."""
        return features if self.controller_input == "zh" else features[..., : self.z_dim]

    def outputs_to_action(self, outputs: th.Tensor) -> tuple[np.ndarray, th.Tensor]:
        """C's raw outputs ``(batch, n_outputs)`` as ``(env action, model action)``, as
        :meth:`controller_action` returns them."""
        if self.discrete:
            index = outputs.argmax(dim=-1)
            start = int(self.action_space.start)
            action = (index.cpu().numpy() + start).astype(np.int64)
            return action, model_action(action, self.action_space).to(outputs.device)
        squashed = th.tanh(outputs)
        space = self.action_space
        action = self.unscale_action(squashed.cpu().numpy()).reshape((-1, *space.shape))
        action = np.clip(action, space.low, space.high).astype(space.dtype)
        return action, squashed

    @th.no_grad()
    def act(
        self,
        observation: th.Tensor,
        state: WorldModelsState | tuple[np.ndarray, ...] | None,
        episode_start: np.ndarray | None,
        deterministic: bool,
    ) -> tuple[np.ndarray, WorldModelsState]:
        """One step of the agent's loop (module docstring) for ``n_envs`` envs.

        :param observation: ``(n_envs, *obs_shape)`` tensor on the policy's device (images raw uint8).
        :param state: the previous :class:`WorldModelsState` (or a tuple in its field order), None for zeros.
        :param episode_start: ``(n_envs,)`` booleans resetting the state's rows; None: no reset.
        :param deterministic: ``z_t`` is the posterior mean (True) or a sample from torch's global RNG.
        :return: the env action ``(n_envs, *action_shape)`` (or ``(n_envs,)`` indices) and the next state.
        :raises ValueError: for a state of the wrong fields / shapes, or ``episode_start`` of the wrong
            length.
        """
        n_envs, device = observation.shape[0], self.device
        state = self.state_spec.prepare(state, episode_start, n_envs)
        h, c = (th.as_tensor(part, dtype=th.float32, device=device) for part in state)
        mu, log_var = self.vae.encode(observation)
        z = mu if deterministic else self.vae.sample(mu, log_var)
        action, m_action = self.controller_action(th.cat([z, h], dim=-1))
        h, c = self.mdn_rnn.step(z, m_action, (h, c))
        return action, WorldModelsState(h.cpu().numpy(), c.cpu().numpy())

    def _channel_first(self, observation: np.ndarray) -> np.ndarray:
        """Channel-last images (a gym env without SB3's ``VecTransposeImage``) as the channel-first images the
        policy's space holds; anything else unchanged."""
        shape = self.observation_space.shape
        if (
            self.use_conv
            and observation.shape[-3:] != shape
            and observation.shape[-3:] == (shape[1], shape[2], shape[0])
        ):
            return np.moveaxis(observation, -1, -3)
        return observation

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: WorldModelsState | tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, WorldModelsState]:
        """Action(s) and the next state, sb3-contrib RecurrentPPO's contract.

        :param observation: one observation ``obs_shape`` or a batch ``(n_envs, *obs_shape)``; images may be
            channel-last.
        :param state: the :class:`WorldModelsState` of the previous call, or None for zeros.
        :param episode_start: ``(n_envs,)`` booleans resetting the state's rows; None: no reset.
        :param deterministic: the posterior mean of ``z`` (no random draw at all) or a sample.
        :return: ``(action, state)``; the action is unbatched when the observation was.
        :raises ValueError: for ``Dict`` observations; see :meth:`act`.
        :raises FloatingPointError: for an observation holding NaN or inf (naming the envs).
        """
        self.set_training_mode(False)
        if isinstance(observation, dict):
            raise ValueError(
                "World Models does not support Dict observation spaces; it needs a Box observation"
            )
        # Contiguous: dm_control's pixel frames come flipped (negative strides), which torch refuses.
        observation = np.ascontiguousarray(self._channel_first(np.asarray(observation)))
        if np.issubdtype(observation.dtype, np.floating) and not np.all(np.isfinite(observation)):
            batch = observation if observation.ndim > len(self.observation_space.shape) else observation[None]
            bad = np.flatnonzero(~np.isfinite(batch.reshape(len(batch), -1)).all(axis=1))
            raise FloatingPointError(
                f"WorldModels: predict got an observation with NaN or inf (env {', '.join(map(str, bad))}): "
                f"{describe_non_finite(observation)}"
            )
        obs_tensor, vectorized_env = self.obs_to_tensor(observation)
        action, new_state = self.act(obs_tensor, state, episode_start, deterministic)
        return (action if vectorized_env else action.squeeze(axis=0)), new_state

    def _predict(self, observation: th.Tensor, deterministic: bool = False) -> th.Tensor:
        """Stateless action from a zero state; :meth:`predict` is the stateful entry point."""
        action, _ = self.act(observation, None, None, deterministic)
        return th.as_tensor(action)


class CnnPolicy(WorldModelsPolicy):
    """World Models with the paper's 64x64 conv VAE (image observations)."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs["use_conv"] = True
        super().__init__(*args, **kwargs)


MlpPolicy = WorldModelsPolicy
