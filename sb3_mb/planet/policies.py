"""PlaNet's policy: the world model (encoder, RSSM, decoder, reward head) and planning in its latent space.

``predict`` is a filter plus a planner (Hafner et al. 2019, Alg. 1; spec ``planet.md`` 3.1-3.2):

1. filter: ``(h_t, s_t) = posterior(h_{t-1}, s_{t-1}, a_{t-1}, o_t)`` (:meth:`RSSM.obs_step`);
2. plan: CEM over action sequences ``a_{t..t+H-1}`` scored by the summed predicted rewards of a prior
   rollout (:meth:`RSSM.imagine`), every candidate of every env in one batched tensor;
3. act: the first action of the plan, plus exploration noise when ``deterministic=False`` (Gaussian
   ``exploration_noise`` for ``Box`` actions; ε-greedy with ``exploration_epsilon`` for ``Discrete``).

The filter state travels in ``predict``'s ``state`` as numpy arrays with the env dimension first, as in
sb3-contrib's RecurrentPPO: ``(belief (n_envs, belief_size), posterior_sample (n_envs, state_size),
prev_action (n_envs, action_dim)[, plan (n_envs, planning_horizon, action_dim)])``; the plan is present
with ``warm_start=True``. ``episode_start[i]`` resets env ``i``'s entries to zeros.

Actions inside the model: ``Box`` actions are scaled to ``[-1, 1]`` (SB3's ``scale_action``; the CEM works
there and the env gets ``unscale_action``); ``Discrete(n)`` actions are one-hot vectors of size ``n``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.type_aliases import Schedule
from torch import nn
from torch.nn import functional as F

from sb3_mb.common.conv import IMAGE_SIZE, ConvDecoder, ConvEncoder, preprocess_observation
from sb3_mb.common.planners import CategoricalCEM, GaussianCEM, PlanResult, reset_plan
from sb3_mb.planet.rssm import RSSM

LOG_2PI = math.log(2.0 * math.pi)


def _mlp(sizes: list[int], activation_fn: type[nn.Module], last_activation: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (n_in, n_out) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(n_in, n_out))
        if last_activation or i < len(sizes) - 2:
            layers.append(activation_fn())
    return nn.Sequential(*layers)


def check_action_space(action_space: spaces.Space) -> None:
    """Raise a clear error unless ``action_space`` is a bounded ``Box`` or a ``Discrete``.

    :raises TypeError: for other action space types. :raises ValueError: for an unbounded ``Box``.
    """
    if not isinstance(action_space, spaces.Box | spaces.Discrete):
        raise TypeError(f"PlaNet supports Box or Discrete action spaces, got the action space {action_space}")
    if isinstance(action_space, spaces.Box) and not (
        np.all(np.isfinite(action_space.low)) and np.all(np.isfinite(action_space.high))
    ):
        raise ValueError(f"PlaNet needs a bounded Box action space (the CEM clips to it), got {action_space}")


def check_spaces(observation_space: spaces.Space, action_space: spaces.Space, use_conv: bool) -> None:
    """Raise a clear error for spaces PlaNet does not support.

    Supported: ``Box`` (bounded) or ``Discrete`` actions; ``Box`` vector observations (``MlpPolicy``) or
    ``(C, 64, 64)`` uint8 images, channel-first after SB3's ``VecTransposeImage`` (``CnnPolicy``).

    :raises TypeError: for any other observation or action space type.
    :raises ValueError: for unbounded ``Box`` actions, or observations of the wrong shape for the policy.
    """
    check_action_space(action_space)
    if not isinstance(observation_space, spaces.Box):
        raise TypeError(
            f"PlaNet supports Box observation spaces (vectors or 64x64 images), got the observation space "
            f"{observation_space}"
        )
    if use_conv:
        shape = observation_space.shape
        if not (
            is_image_space(observation_space, check_channels=False)
            and len(shape) == 3
            and shape[1:] == (IMAGE_SIZE, IMAGE_SIZE)
        ):
            raise ValueError(
                f"CnnPolicy needs a uint8 image observation space of shape (C, {IMAGE_SIZE}, {IMAGE_SIZE}) "
                f"(channel-first, as after VecTransposeImage), got {observation_space}"
            )
    elif len(observation_space.shape) != 1:
        raise ValueError(
            "MlpPolicy needs a 1-D Box observation space; use CnnPolicy for 64x64 images. "
            f"Got {observation_space}"
        )


class MlpEncoder(nn.Module):
    """Vector observations ``(..., obs_dim) -> (..., hidden_sizes[-1])``, ReLU MLP."""

    def __init__(self, obs_dim: int, hidden_sizes: tuple[int, ...], activation_fn: type[nn.Module]):
        super().__init__()
        self.features_dim = hidden_sizes[-1]
        self.net = _mlp([obs_dim, *hidden_sizes], activation_fn, last_activation=True)

    def forward(self, observations: th.Tensor) -> th.Tensor:
        return self.net(observations)


class PlaNetPolicy(BasePolicy):
    """World model and latent-space planner of PlaNet (spec ``planet.md`` 3.1; discrete fork 3.2).

    :param observation_space: ``Box`` vector (``use_conv=False``) or ``(C, 64, 64)`` uint8 image.
    :param action_space: bounded ``Box`` or ``Discrete``.
    :param lr_schedule: learning-rate schedule; Adam uses ``lr_schedule(1)``.
    :param belief_size: GRU belief (200). :param state_size: stochastic state (30).
    :param hidden_size: RSSM dense layers (200). :param min_std: std floor (0.1).
    :param future_rnn: camera-ready prior (True) or arXiv v1 (False), see :class:`RSSM`.
    :param use_conv: 64x64 conv encoder / decoder (``CnnPolicy``) or MLPs (``MlpPolicy``).
    :param cnn_depth: conv channel multiplier (PlaNet: 32, giving a 1024-D embedding).
    :param mlp_hidden_sizes: hidden layers of the vector encoder and decoder (default ``(200, 200)``).
    :param reward_hidden_sizes: reward head hidden layers (PlaNet: 3 x 300; fork: 2 x 100).
    :param activation_fn: activation everywhere (PlaNet configs: ReLU).
    :param bit_depth: image quantisation bits (PlaNet: 5).
    :param planning_horizon: H (PlaNet: 12). :param n_candidates: (1000). :param n_elites: top-k (100).
    :param n_iterations: CEM iterations (10).
    :param warm_start: initialise each CEM from the previous plan shifted by one step (fork option).
    :param discount: per-step discount of the planning objective (original 1.0; fork 0.99).
    :param exploration_noise: std of the Gaussian noise added to ``Box`` actions when not deterministic,
        in the ``[-1, 1]`` scale (PlaNet: 0.3).
    :param exploration_epsilon: ε of the ε-greedy exploration for ``Discrete`` actions (fork: 0.1).
    :param optimizer_class: (Adam). :param optimizer_kwargs: (``eps=1e-4``, PlaNet).
    :raises TypeError, ValueError: see :func:`check_spaces`.
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Space,
        lr_schedule: Schedule,
        belief_size: int = 200,
        state_size: int = 30,
        hidden_size: int = 200,
        min_std: float = 0.1,
        future_rnn: bool = True,
        use_conv: bool = False,
        cnn_depth: int = 32,
        mlp_hidden_sizes: tuple[int, ...] = (200, 200),
        reward_hidden_sizes: tuple[int, ...] = (300, 300, 300),
        activation_fn: type[nn.Module] = nn.ReLU,
        bit_depth: int = 5,
        planning_horizon: int = 12,
        n_candidates: int = 1000,
        n_elites: int = 100,
        n_iterations: int = 10,
        warm_start: bool = False,
        discount: float = 1.0,
        exploration_noise: float = 0.3,
        exploration_epsilon: float = 0.1,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
    ):
        check_spaces(observation_space, action_space, use_conv)
        if optimizer_kwargs is None:
            optimizer_kwargs = {"eps": 1e-4}
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
        self.belief_size, self.state_size, self.hidden_size = belief_size, state_size, hidden_size
        self.min_std, self.future_rnn, self.use_conv = min_std, future_rnn, use_conv
        self.cnn_depth = cnn_depth
        self.mlp_hidden_sizes = tuple(mlp_hidden_sizes)
        self.reward_hidden_sizes = tuple(reward_hidden_sizes)
        self.activation_fn = activation_fn
        self.bit_depth = bit_depth
        self.planning_horizon, self.n_candidates = planning_horizon, n_candidates
        self.n_elites, self.n_iterations = n_elites, n_iterations
        self.warm_start, self.discount = warm_start, discount
        self.exploration_noise, self.exploration_epsilon = exploration_noise, exploration_epsilon

        if use_conv:
            channels = observation_space.shape[0]
            self.encoder: nn.Module = ConvEncoder(channels, cnn_depth, activation_fn)
        else:
            self.encoder = MlpEncoder(observation_space.shape[0], self.mlp_hidden_sizes, activation_fn)
        self.rssm = RSSM(
            self.action_dim,
            self.encoder.features_dim,
            belief_size,
            state_size,
            hidden_size,
            min_std,
            activation_fn,
            future_rnn,
        )
        feature_dim = self.rssm.feature_dim
        if use_conv:
            self.decoder: nn.Module = ConvDecoder(feature_dim, channels, cnn_depth, activation_fn)
        else:
            self.decoder = _mlp(
                [feature_dim, *self.mlp_hidden_sizes, observation_space.shape[0]], activation_fn, False
            )
        self.reward_model = _mlp([feature_dim, *self.reward_hidden_sizes, 1], activation_fn, False)

        if self.discrete:
            self.planner: GaussianCEM | CategoricalCEM = CategoricalCEM(
                planning_horizon, self.action_dim, n_candidates, n_elites, n_iterations
            )
        else:
            self.planner = GaussianCEM(
                planning_horizon, self.action_dim, n_candidates, n_elites, n_iterations
            )
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1), **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            belief_size=self.belief_size,
            state_size=self.state_size,
            hidden_size=self.hidden_size,
            min_std=self.min_std,
            future_rnn=self.future_rnn,
            use_conv=self.use_conv,
            cnn_depth=self.cnn_depth,
            mlp_hidden_sizes=self.mlp_hidden_sizes,
            reward_hidden_sizes=self.reward_hidden_sizes,
            activation_fn=self.activation_fn,
            bit_depth=self.bit_depth,
            planning_horizon=self.planning_horizon,
            n_candidates=self.n_candidates,
            n_elites=self.n_elites,
            n_iterations=self.n_iterations,
            warm_start=self.warm_start,
            discount=self.discount,
            exploration_noise=self.exploration_noise,
            exploration_epsilon=self.exploration_epsilon,
        )
        return data

    # ----------------------------------------------------------------------------------------------
    # World model pieces
    # ----------------------------------------------------------------------------------------------
    def preprocess(
        self, observations: th.Tensor, noise: bool = True, generator: th.Generator | None = None
    ) -> th.Tensor:
        """Observations as the model sees them.

        Images ``(..., C, 64, 64)`` uint8: 5-bit quantisation, dequantisation noise (if ``noise``),
        centred on 0 (:func:`~sb3_mb.common.conv.preprocess_observation`). Vectors: float32 unchanged.
        """
        if self.use_conv:
            return preprocess_observation(
                observations, self.bit_depth, noise=noise, channels_last=False, generator=generator
            )
        return observations.float()

    def model_actions(self, actions: th.Tensor) -> th.Tensor:
        """Buffer actions -> RSSM inputs ``(..., A)``.

        ``Discrete``: stored indices ``(..., 1)`` become one-hot; ``Box``: ``(..., A)`` in ``[-1, 1]``.
        """
        if self.discrete:
            return F.one_hot(actions[..., 0].long(), self.action_dim).float()
        return actions.float()

    def reward(self, features: th.Tensor) -> th.Tensor:
        """Predicted mean reward ``(...)`` from features ``(..., belief_size + state_size)``."""
        return self.reward_model(features)[..., 0]

    def observation_nll(self, features: th.Tensor, target: th.Tensor) -> th.Tensor:
        """NLL (nats) of ``target`` under the unit-variance Gaussian decoder, summed over observation dims.

        :param features: ``(..., feature_dim)``.
        :param target: preprocessed observations ``(..., *obs_shape)``.
        :return: ``(...)``.
        """
        mean = self.decoder(features)
        dims = tuple(range(features.dim() - 1, mean.dim()))
        return 0.5 * ((mean - target) ** 2 + LOG_2PI).sum(dim=dims)

    # ----------------------------------------------------------------------------------------------
    # Acting
    # ----------------------------------------------------------------------------------------------
    def initial_state(self, n_envs: int) -> tuple[np.ndarray, ...]:
        """Zero filter state for ``n_envs`` envs (see the module docstring for the layout)."""
        state = (
            np.zeros((n_envs, self.belief_size), dtype=np.float32),
            np.zeros((n_envs, self.state_size), dtype=np.float32),
            np.zeros((n_envs, self.action_dim), dtype=np.float32),
        )
        if self.warm_start:
            state += (self.planner.initial_plan(n_envs),)
        return state

    def _check_state(self, state: tuple[np.ndarray, ...], n_envs: int) -> None:
        expected = [(n_envs, self.belief_size), (n_envs, self.state_size), (n_envs, self.action_dim)]
        if self.warm_start:
            expected.append((n_envs, self.planning_horizon, self.action_dim))
        shapes = [tuple(np.shape(part)) for part in state]
        if shapes != expected:
            raise ValueError(f"PlaNet state must have shapes {expected} (env dimension first), got {shapes}")

    def planning_objective(
        self, belief: th.Tensor, state_sample: th.Tensor, generator: th.Generator | None
    ) -> Callable[[th.Tensor], th.Tensor]:
        """The CEM objective from ``(h_t, s_t)``: discounted sum of predicted rewards of a prior rollout.

        :param belief: ``(n_envs, belief_size)``. :param state_sample: ``(n_envs, state_size)``.
        :param generator: ``torch.Generator`` for the prior samples.
        :return: a function mapping ``(n_envs, n_candidates, planning_horizon, action_dim)`` action
            sequences to ``(n_envs, n_candidates)`` returns; all candidates are one batch of
            ``n_envs * n_candidates`` rows stepped with :meth:`RSSM.img_step` (the loop of
            :meth:`RSSM.imagine`, summing rewards instead of stacking the states).
        """
        horizon = self.planning_horizon
        weights = self.discount ** th.arange(horizon, device=belief.device, dtype=th.float32)

        def objective(actions: th.Tensor) -> th.Tensor:
            n_envs, n_candidates = actions.shape[:2]
            rows = n_envs * n_candidates
            h = belief[:, None].expand(n_envs, n_candidates, -1).reshape(rows, -1)
            s = state_sample[:, None].expand(n_envs, n_candidates, -1).reshape(rows, -1)
            actions = actions.reshape(rows, horizon, -1)
            total = th.zeros(rows, device=actions.device)
            for t in range(
                horizon
            ):  # RSSM.imagine without keeping the states: the reward is summed on the go
                prior = self.rssm.img_step(h, s, actions[:, t], generator)
                h, s = prior.belief, prior.sample
                total += weights[t] * self.reward(RSSM.features(prior))
            return total.reshape(n_envs, n_candidates)

        return objective

    def plan(
        self,
        belief: th.Tensor,
        state_sample: th.Tensor,
        initial_plan: th.Tensor,
        generator: th.Generator | None,
    ) -> PlanResult:
        """CEM in latent space from ``(h_t, s_t)`` of ``n_envs`` envs, all candidates in one batch.

        :param belief: ``(n_envs, belief_size)``. :param state_sample: ``(n_envs, state_size)``.
        :param initial_plan: ``(n_envs, planning_horizon, action_dim)`` mean (Box) or logits (Discrete).
        :param generator: ``torch.Generator`` for the candidates and the prior samples.
        :return: the planner's :class:`~sb3_mb.common.planners.PlanResult`.
        """
        objective = self.planning_objective(belief, state_sample, generator)
        return self.planner.plan(objective, initial_plan, generator=generator, device=belief.device)

    @th.no_grad()
    def act(
        self,
        observation: th.Tensor,
        state: tuple[np.ndarray, ...] | None,
        episode_start: np.ndarray | None,
        deterministic: bool,
        generator: th.Generator | None,
    ) -> tuple[np.ndarray, np.ndarray, tuple[np.ndarray, ...], PlanResult]:
        """Filter ``o_t`` and plan, for ``n_envs`` envs at once.

        :param observation: ``(n_envs, *obs_shape)`` tensor on the policy's device (raw: uint8 images).
        :param state: the previous filter state (module docstring) or None (zeros).
        :param episode_start: ``(n_envs,)`` booleans; true entries reset the state to zeros. None: no reset.
        :param deterministic: no exploration noise (True) or Gaussian / ε-greedy exploration (False).
        :param generator: ``torch.Generator`` on the policy's device for every random draw here.
        :return: ``(env_action, buffer_action, new_state, plan_result)``: the action for ``env.step``
            (``(n_envs, *action_shape)``, unscaled Box or int indices), the action as stored in the replay
            buffer (``(n_envs, A)`` scaled to ``[-1, 1]`` or ``(n_envs,)`` indices), the new state.
        :raises ValueError: if the state has the wrong shapes.
        """
        n_envs = observation.shape[0]
        if state is None:
            state = self.initial_state(n_envs)
        self._check_state(state, n_envs)
        device = self.device
        if episode_start is None:
            episode_start = np.zeros(n_envs, dtype=bool)
        episode_start = np.asarray(episode_start, dtype=bool).reshape(n_envs)
        keep = th.as_tensor(~episode_start, dtype=th.float32, device=device)[:, None]
        belief = th.as_tensor(state[0], dtype=th.float32, device=device) * keep
        state_sample = th.as_tensor(state[1], dtype=th.float32, device=device) * keep
        prev_action = th.as_tensor(state[2], dtype=th.float32, device=device) * keep

        embedding = self.encoder(self.preprocess(observation, noise=True, generator=generator))
        _, posterior = self.rssm.obs_step(belief, state_sample, prev_action, embedding, generator)
        if self.warm_start:
            initial_plan = th.as_tensor(reset_plan(state[3], episode_start), device=device)
        else:
            initial_plan = th.as_tensor(self.planner.initial_plan(n_envs), device=device)
        result = self.plan(posterior.belief, posterior.sample, initial_plan, generator)

        if self.discrete:
            index = result.action_index
            if not deterministic and self.exploration_epsilon > 0:
                explore = th.rand(n_envs, generator=generator, device=device) < self.exploration_epsilon
                random_index = th.randint(0, self.action_dim, (n_envs,), generator=generator, device=device)
                index = th.where(explore, random_index, index)
            model_action = F.one_hot(index, self.action_dim).float()
            env_action = index.cpu().numpy().astype(np.int64)
            buffer_action = env_action.copy()
        else:
            model_action = result.action
            if not deterministic and self.exploration_noise > 0:
                noise = th.randn(model_action.shape, generator=generator, device=device)
                model_action = th.clamp(model_action + self.exploration_noise * noise, -1.0, 1.0)
            buffer_action = model_action.cpu().numpy().astype(np.float32)
            env_action = self.unscale_action(buffer_action).reshape((n_envs, *self.action_space.shape))
            env_action = np.clip(env_action, self.action_space.low, self.action_space.high)
            env_action = env_action.astype(self.action_space.dtype)

        new_state = (
            posterior.belief.cpu().numpy(),
            posterior.sample.cpu().numpy(),
            model_action.cpu().numpy(),
        )
        if self.warm_start:
            new_state += (result.warm_start.cpu().numpy(),)
        return env_action, buffer_action, new_state, result

    def make_generator(self) -> th.Generator:
        """A ``torch.Generator`` on the policy's device seeded from torch's global RNG.

        So ``model.set_random_seed(s)`` (which seeds torch) makes every later ``predict`` reproducible.
        """
        seed = int(th.randint(0, 2**62, (1,)).item())
        return th.Generator(device=self.device).manual_seed(seed)

    def predict(
        self,
        observation: np.ndarray | dict[str, np.ndarray],
        state: tuple[np.ndarray, ...] | None = None,
        episode_start: np.ndarray | None = None,
        deterministic: bool = False,
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        """Action(s) and the next filter state, RecurrentPPO's contract (spec ``planet.md`` 3.1 planning).

        :param observation: one observation ``obs_shape`` or a batch ``(n_envs, *obs_shape)``.
        :param state: previous state (module docstring) or None for zeros.
        :param episode_start: ``(n_envs,)`` booleans resetting the state; None: no reset.
        :param deterministic: without exploration noise.
        :return: ``(action, state)``; the action is unbatched when the observation was.
        """
        self.set_training_mode(False)
        if isinstance(observation, dict):
            raise TypeError("PlaNet does not support Dict observation spaces")
        obs_tensor, vectorized_env = self.obs_to_tensor(observation)
        env_action, _, new_state, _ = self.act(
            obs_tensor, state, episode_start, deterministic, self.make_generator()
        )
        if not vectorized_env:
            env_action = env_action.squeeze(axis=0)
        return env_action, new_state

    def _predict(self, observation: th.Tensor, deterministic: bool = False) -> th.Tensor:
        """Stateless action from a fresh (zero) filter state; ``predict`` is the stateful entry point."""
        env_action, _, _, _ = self.act(observation, None, None, deterministic, self.make_generator())
        return th.as_tensor(env_action)


class CnnPolicy(PlaNetPolicy):
    """PlaNet with the 64x64 conv encoder / decoder (image observations)."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs["use_conv"] = True
        super().__init__(*args, **kwargs)


MlpPolicy = PlaNetPolicy
